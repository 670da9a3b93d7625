// The scenario's `model` (and an arm's own `model`): a built-in card and parameter overrides.

#include <string>
#include <vector>

#include "ketasim/input/load_common.hpp"
#include "ketasim/model/model_card.hpp"

namespace ketasim::loader {

namespace {

double read_parameter_value(const NodeRef& node, const ParameterSpec& spec) {
  const double value = read_quantity(node, spec.dimension, spec.positive ? Sign::positive : Sign::non_negative);
  if (spec.upper_bound > 0.0 && value > spec.upper_bound) {
    const std::string unit = spec.unit.empty() ? "" : " " + spec.unit;
    node.fail(node.kind() + " exceeds the upper bound of " + spec.name + " (" +
              yaml::format_number(to_display_unit(spec, spec.upper_bound)) + unit + ")");
  }
  if (const std::string implausible = implausible_parameter_value(spec, value); !implausible.empty())
    node.fail(node.kind() + " " + implausible);
  return value;
}

}  // namespace

ModelChoice read_model(const NodeRef& node) {
  node.expect_map("a map of model settings (name, parameters)");
  node.check_keys({"name", "parameters"});
  const NodeRef name_node = node.require("name", "a built-in model, e.g. name: ketamine_venous");
  ModelChoice model;
  model.name = name_node.as_string();
  const ModelCard* card = find_builtin_model(model.name);
  if (!card) {
    std::vector<std::string> names;
    for (const auto& known : builtin_models()) names.push_back(known.name);
    name_node.fail("unknown model " + in_quotes(model.name) + yaml::did_you_mean(model.name, names) +
                   "; the built-in models are " + yaml::join_alternatives(names, "and"));
  }
  if (const auto parameters = node.find("parameters")) {
    parameters->expect_map("a map of parameter overrides (e.g. {V1: 120 L, k10: 0.7 1/h})");
    for (const auto& entry : parameters->entries()) {
      const ParameterSpec& spec = card_parameter(*card, entry);
      model.overrides.push_back(ParameterOverride{spec.name, read_parameter_value(entry.value, spec)});
    }
  }
  return model;
}

}  // namespace ketasim::loader
