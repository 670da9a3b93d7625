#include "ketasim/input/load_common.hpp"

#include <algorithm>
#include <cctype>
#include <cmath>

#include "ketasim/base/format.hpp"
#include "ketasim/model/model_card.hpp"

namespace ketasim::loader {

namespace {

std::vector<std::string> parameter_names(const ModelCard& card) {
  std::vector<std::string> names;
  for (const auto& spec : card.parameters) names.push_back(spec.name);
  return names;
}

}  // namespace

std::string format_hours(Ticks ticks) {
  return yaml::format_number(ticks_to_hours(ticks)) + " h";
}

bool equals_ignoring_case(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) == std::tolower(static_cast<unsigned char>(y));
         });
}

void check_sign(const NodeRef& node, double value, Sign sign) {
  if (sign == Sign::positive && !(value > 0.0)) node.fail(node.kind() + " must be greater than 0");
  if (sign == Sign::non_negative && !(value >= 0.0)) node.fail(node.kind() + " must not be negative");
}

double read_quantity(const NodeRef& node, const Dimension& dimension, Sign sign) {
  const double value = node.as_quantity(dimension).value;
  check_sign(node, value, sign);
  return value;
}

double read_quantity(const NodeRef& node, QuantityKind kind, Sign sign) {
  const double value = node.as_quantity(kind).value;
  check_sign(node, value, sign);
  return value;
}

Ticks to_ticks(const NodeRef& node, const std::string& text, Sign sign) {
  const double hours = node.quantity_from(text, QuantityKind::time).value;
  if (sign == Sign::positive && !(hours > 0.0)) node.fail(in_quotes(text) + " must be greater than 0");
  if (sign == Sign::non_negative && !(hours >= 0.0)) node.fail(in_quotes(text) + " must not be negative");
  const Ticks ticks = std::llround(hours * static_cast<double>(kTicksPerHour));
  if (hours > 0.0 && ticks == 0) node.fail(in_quotes(text) + " is shorter than the time resolution of 1 ms");
  return ticks;
}

Ticks read_duration(const NodeRef& node) {
  return to_ticks(node, node.scalar(describe(dim::time)), Sign::positive);
}
Ticks read_time_point(const NodeRef& node) {
  return to_ticks(node, node.scalar(describe(dim::time)), Sign::non_negative);
}

// The Sign parameter lets it serve as a covariate reader (load_cohort.cpp); a score is never negative.
double read_score(const NodeRef& node, Sign) {
  const double value = node.as_number();
  check_sign(node, value, Sign::non_negative);
  if (value > kMadrsMaximum)
    node.fail(node.kind() + " exceeds the MADRS maximum of " + format_significant(kMadrsMaximum));
  return value;
}

void require_depression(const NodeRef& node, const ModelCard& card, const std::string& purpose) {
  if (card.blocks_of<DepressionBlock>().empty())
    node.fail("model " + in_quotes(card.name) + " has no depression score to " + purpose);
}

const ParameterSpec& card_parameter(const ModelCard& card, const MapEntry& entry) {
  const int index = card.index_of(entry.key);
  if (index < 0) {
    const auto names = parameter_names(card);
    throw ScenarioError(entry.key_where, entry.value.path,
                        in_quotes(entry.key) + " is not a parameter of model " + in_quotes(card.name) +
                            yaml::did_you_mean(entry.key, names) + "; expected " + yaml::join_alternatives(names));
  }
  return card.parameters[static_cast<std::size_t>(index)];
}

}  // namespace ketasim::loader
