#include "ketasim/input/scenario_loader.hpp"

// The top level of a scenario and the checks that span its sections; each section is read by its
// own file (load_common.hpp lists them).

#include <algorithm>
#include <filesystem>

#include "ketasim/base/input_file.hpp"
#include "ketasim/input/load_common.hpp"
#include "ketasim/model/model.hpp"
#include "ketasim/model/model_card.hpp"

namespace ketasim {

namespace {

using loader::in_quotes;
using loader::MapEntry;
using loader::NodeRef;
using loader::trim;

// Occasion variability applies to the scenario's card (arms naming it with parameters of their own
// included): arms of another card would not know its parameters; and the mass-balance integrals
// assume fixed elimination rows.
void check_occasion_variability(const NodeRef& root, const Scenario& scenario, const ModelCard& card) {
  const OccasionVariability& occasions = scenario.cohort.occasion_variability;
  if (occasions.parameters.empty()) return;
  const NodeRef node = *root.require("cohort", "").find("occasion_variability");
  for (const Arm& arm : scenario.arms)
    if (arm.model && arm.model->name != card.name)
      node.fail("occasion variability names parameters of " + in_quotes(card.name) + ", but arm " +
                in_quotes(arm.name) + " uses model " + in_quotes(arm.model->name));
  const auto& metrics = scenario.output.metrics;
  if (std::find(metrics.begin(), metrics.end(), Metric::mass_balance) == metrics.end()) return;
  const Model model(card);
  std::vector<double> typical;
  for (const ParameterSpec& spec : card.parameters) typical.push_back(spec.value);
  for (const std::string& name : occasions.parameters) {
    bool mass_rows = false;
    occasion_variability_problem(model, typical, card.index_of(name), &mass_rows);
    if (mass_rows)
      node.fail("occasion variability on " + name +
                " changes the elimination rates that the mass_balance metric integrates; "
                "remove mass_balance from output.metrics or " +
                name + " from occasion_variability");
  }
}

// Outputs named in output.variables and output.observations must exist in the model of every arm.
void check_arm_models(const NodeRef& root, const Scenario& scenario) {
  std::vector<std::string> names;
  if (scenario.output.variables) names = *scenario.output.variables;
  for (const ObservedVariable& variable : scenario.output.observations.variables) names.push_back(variable.name);
  const auto arms = root.require("arms", "").items("arms");
  for (std::size_t a = 0; a < scenario.arms.size(); ++a) {
    if (!scenario.arms[a].model) continue;
    const ModelCard& arm_card = *find_builtin_model(scenario.arms[a].model->name);
    const Model model(arm_card);
    for (const std::string& name : names)
      if (!model.find_output(name))
        arms[a]
            .require("model", "")
            .fail("model " + in_quotes(arm_card.name) + " of this arm has no output " + in_quotes(name) +
                  " named in output; list only outputs every arm's model has (`ketasim models show " + arm_card.name +
                  "`)");
  }
}

// What an arm simulates is model_of(scenario, arm). An arm naming another card does not take the
// scenario's model.parameters; where that card has the same parameter, the scenario's value would
// be a silent choice either way, so the arm must set it. Values that reach no arm are refused.
void check_model_choices(const NodeRef& root, const Scenario& scenario) {
  const auto arms = root.require("arms", "").items("arms");
  const auto other_card = [&](const Arm& arm) { return arm.model && arm.model->name != scenario.model.name; };
  const bool scenario_card_used = !std::all_of(scenario.arms.begin(), scenario.arms.end(), other_card);
  const NodeRef model_node = root.require("model", "");
  if (!scenario_card_used && !scenario.model.overrides.empty())
    model_node.require("parameters", "")
        .fail("these parameters of model " + in_quotes(scenario.model.name) +
              " apply to no arm: every arm names a model of another card, which does not take the scenario's "
              "model.parameters; set them in the arms' model.parameters instead");
  for (std::size_t a = 0; a < scenario.arms.size(); ++a) {
    const Arm& arm = scenario.arms[a];
    if (!other_card(arm)) continue;
    const ModelCard& arm_card = *find_builtin_model(arm.model->name);
    for (const ParameterOverride& inherited : scenario.model.overrides) {
      const int index = arm_card.index_of(inherited.name);
      const auto same_name = [&](const ParameterOverride& own) { return own.name == inherited.name; };
      if (index < 0 || std::any_of(arm.model->overrides.begin(), arm.model->overrides.end(), same_name)) continue;
      const ParameterSpec& spec = arm_card.parameters[static_cast<std::size_t>(index)];
      const auto with_unit = [&](double value) {
        return yaml::format_number(to_display_unit(spec, value)) + (spec.unit.empty() ? "" : " " + spec.unit);
      };
      arms[a]
          .require("model", "")
          .fail("model " + in_quotes(arm_card.name) + " of this arm also has " + spec.name +
                ", which model.parameters sets to " + with_unit(inherited.value) + " for model " +
                in_quotes(scenario.model.name) +
                "; an arm's model of another card does not take the scenario's parameters, so set " + spec.name +
                " in this arm's model.parameters (" + with_unit(inherited.value) +
                " as in the scenario, or the card's " + with_unit(spec.value) + ")");
    }
  }
  if (scenario_card_used) return;
  // cohort.variability applies to every arm's card that has the parameter (cohort.cpp).
  const auto variability = root.require("cohort", "").find("variability");
  const auto cv = variability ? variability->find("cv") : std::nullopt;
  if (!cv) return;
  for (const MapEntry& entry : cv->entries()) {
    const auto has_it = [&](const Arm& arm) { return find_builtin_model(arm.model->name)->index_of(entry.key) >= 0; };
    if (std::none_of(scenario.arms.begin(), scenario.arms.end(), has_it))
      throw ScenarioError(
          entry.key_where, entry.value.path,
          in_quotes(entry.key) + " is a parameter of model " + in_quotes(scenario.model.name) +
              ", which no arm simulates, nor of any arm's own model: its variability would apply to nothing");
  }
}

// Every dose of a subject is kept in memory and written (dose_time_h and its companions have one
// column per dose an arm can give), so an arm gives each subject at most kMaxDoseCount doses, all
// its rules together. Stops counting at the first rule past the limit: rules are not expanded
// beyond it.
void check_doses_per_subject(const NodeRef& root, const Scenario& scenario) {
  const auto arm_nodes = root.require("arms", "").items("arms");
  for (std::size_t a = 0; a < scenario.arms.size(); ++a) {
    const Arm& arm = scenario.arms[a];
    std::size_t doses = 0;
    for (const DosingRule& rule : arm.regimen) {
      doses += rule.most_doses(scenario.output.grid_end);
      if (doses <= static_cast<std::size_t>(kMaxDoseCount)) continue;
      throw ScenarioError(rule.where, arm_nodes[a].child_path("regimen"),
                          "arm " + in_quotes(arm.name) + " can give a subject " + std::to_string(doses) +
                              " doses or more, counting the rules up to this one (an as-needed rule counts one session "
                              "per min_interval of its window unless max_doses is less); at most " +
                              std::to_string(kMaxDoseCount) + " doses per subject and arm are supported");
    }
  }
}

}  // namespace

Scenario parse_scenario(const std::string& yaml_text, const std::string& source_name) {
  const NodeRef root = yaml::load_document(yaml_text, source_name);
  const std::string top_level = "a map with the keys name, model, cohort and arms";
  if (root.is_null()) root.fail("the scenario is empty; expected " + top_level);
  if (!root.is_map()) root.fail("expected " + top_level + ", found " + root.kind());
  root.check_keys({"name", "description", "model", "cohort", "arms", "output", "solver"});

  Scenario scenario;
  scenario.source_file = source_name;
  scenario.yaml_text = yaml_text;
  const NodeRef name = root.require("name", "a name for the scenario, e.g. name: once_vs_twice_weekly");
  scenario.name = name.as_string();
  if (trim(scenario.name).empty()) name.fail("the scenario name must not be empty");
  if (const auto description = root.find("description")) scenario.description = description->as_string();
  scenario.model = loader::read_model(root.require("model", "e.g. model: {name: ketamine_clements_2cmt}"));
  const ModelCard& card = *find_builtin_model(scenario.model.name);  // read_model checked it exists
  const std::string scenario_dir = std::filesystem::path(source_name).parent_path().string();
  scenario.cohort = loader::read_cohort(root.require("cohort", "size, seed and weight of the simulated subjects"), card,
                                        std::filesystem::path(source_name).parent_path());
  scenario.arms = loader::read_arms(root.require("arms", "a list of arms, each {name, regimen}"), card, scenario_dir);
  if (const auto output = root.find("output")) scenario.output = loader::read_output(*output, card);
  check_arm_models(root, scenario);
  check_model_choices(root, scenario);
  check_doses_per_subject(root, scenario);
  check_occasion_variability(root, scenario, card);
  if (const auto solver = root.find("solver")) scenario.solver = loader::read_solver(*solver);
  return scenario;
}

Scenario load_scenario_file(const std::string& path) {
  return parse_scenario(read_text_file(path, "scenario file", kMaxYamlFileBytes), path);
}

}  // namespace ketasim
