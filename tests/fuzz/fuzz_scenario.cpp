// Fuzz target: scenario YAML text -> parse_scenario, the whole loader (YAML, keys, units, schedules,
// cohort, output) without a file. Every refusal must be a ketasim::Error (a message and an exit
// code); anything else escaping (std::bad_alloc, std::out_of_range, a YAML::Exception, a crash) is
// a finding. docs/testing.md says how to run it.

#include <cstddef>
#include <cstdint>
#include <string>

#include "ketasim/base/errors.hpp"
#include "ketasim/input/scenario_loader.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    ketasim::parse_scenario(text, "fuzz.yaml");
  } catch (const ketasim::Error&) {
    // Refused with a typed error: what the loader is for.
  }
  return 0;
}
