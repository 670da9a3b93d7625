#pragma once
// Internal to the scenario loader (not part of the library's interface). scenario_loader.cpp reads
// the top level and checks what spans sections; one file reads each section (load_model.cpp,
// load_cohort.cpp, load_regimen.cpp, load_output.cpp); the readers they share are here
// (load_common.cpp). Limits that keep every later computation in range (Ticks are int64
// milliseconds): the shared ones are in scenario.hpp (kMaxDoseCount) and time.hpp
// (kMaxTimeHours), a section's own ones in its file, the accepted ranges of quantities in units.cpp.

#include <algorithm>
#include <array>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "ketasim/base/time.hpp"
#include "ketasim/base/units.hpp"
#include "ketasim/base/yaml_reader.hpp"
#include "ketasim/input/scenario.hpp"

namespace ketasim {
struct ModelCard;
struct ParameterSpec;
}  // namespace ketasim

namespace ketasim::loader {

namespace fs = std::filesystem;
using yaml::in_quotes;
using yaml::MapEntry;
using yaml::NodeRef;
using yaml::trim;

// ---- The sections ---------------------------------------------------------------------------

ModelChoice read_model(const NodeRef& node);
Cohort read_cohort(const NodeRef& node, const ModelCard& card, const fs::path& scenario_directory);
std::vector<Arm> read_arms(const NodeRef& node, const ModelCard& card, const std::string& scenario_dir);
OutputSpec read_output(const NodeRef& node, const ModelCard& card);
SolverSpec read_solver(const NodeRef& node);

// ---- Shared readers -------------------------------------------------------------------------

std::string format_hours(Ticks ticks);  // "1.5 h"
bool equals_ignoring_case(std::string_view a, std::string_view b);

enum class Sign { positive, non_negative };

// Fails unless `value` (read from `node`) has the required sign.
void check_sign(const NodeRef& node, double value, Sign sign);
double read_quantity(const NodeRef& node, const Dimension& dimension, Sign sign);
double read_quantity(const NodeRef& node, QuantityKind kind, Sign sign);

// A time in hours from a quantity text, as Ticks. All scenario times pass through here.
Ticks to_ticks(const NodeRef& node, const std::string& text, Sign sign);
Ticks read_duration(const NodeRef& node);    // > 0
Ticks read_time_point(const NodeRef& node);  // >= 0

// A MADRS score (cohort.baseline_madrs, output.response.remission_at_or_below): 0 to kMadrsMaximum points.
double read_score(const NodeRef& node, Sign = Sign::non_negative);

// Fails at `node` unless the card has a depression score, which `purpose` needs ("trigger
// as-needed dosing", "define relapse at visits by", ...).
void require_depression(const NodeRef& node, const ModelCard& card, const std::string& purpose);

// The card parameter a map key names; fails at the key, with a suggestion, when there is none.
const ParameterSpec& card_parameter(const ModelCard& card, const MapEntry& entry);

// One of the names `to_string` gives the values of an enum.
template <typename Enum, std::size_t N>
Enum read_choice(const NodeRef& node, const std::array<Enum, N>& choices, std::string_view what) {
  const std::string text = node.scalar(what);
  std::vector<std::string> names;
  for (const Enum choice : choices) {
    if (to_string(choice) == text) return choice;
    names.push_back(to_string(choice));
  }
  node.fail("unknown " + std::string(what) + " " + in_quotes(text) + yaml::did_you_mean(text, names) + "; expected " +
            yaml::join_alternatives(names));
}

// A list of choices in which each may appear once; a repeat names where it first appeared.
template <class Enum, std::size_t N>
std::vector<Enum> read_unique_choices(const NodeRef& node, const std::array<Enum, N>& choices,
                                      std::string_view list_what, std::string_view item_what) {
  const auto items = node.items(std::string(list_what));
  std::vector<Enum> chosen;
  for (std::size_t i = 0; i < items.size(); ++i) {
    const Enum choice = read_choice(items[i], choices, item_what);
    const auto earlier = std::find(chosen.begin(), chosen.end(), choice);
    if (earlier != chosen.end()) {
      items[i].fail(items[i].kind() + " is listed twice (also at " +
                    items[static_cast<std::size_t>(earlier - chosen.begin())].path + ")");
    }
    chosen.push_back(choice);
  }
  return chosen;
}

}  // namespace ketasim::loader
