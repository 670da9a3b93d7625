#pragma once
// Stage 1 of the pipeline: scenario YAML -> typed, validated Scenario. Everything a scenario can
// get wrong is reported here, once, as a ScenarioError that names file:line:column, the key path
// (e.g. "arms[1].regimen.infusion_duration"), the value found and what was expected. Code after
// this stage trusts the Scenario. docs/scenario.md describes the schema.

#include <string>

#include "ketasim/input/scenario.hpp"

namespace ketasim {

// Reads (input_file.hpp: a regular file within the YAML size limit) and validates a scenario
// file. An unreadable file is an IoError naming the path; anything wrong inside it is a
// ScenarioError.
Scenario load_scenario_file(const std::string& path);

// Validates scenario text; `source_name` is used in messages and stored as Scenario::source_file.
Scenario parse_scenario(const std::string& yaml_text, const std::string& source_name);

}  // namespace ketasim
