#include "ketasim/input/scenario_loader.hpp"

#include <Eigen/Cholesky>
#include <algorithm>
#include <array>
#include <cctype>
#include <cmath>
#include <filesystem>
#include <memory>

#include "ketasim/base/input_file.hpp"
#include "ketasim/base/units.hpp"
#include "ketasim/base/yaml_reader.hpp"
#include "ketasim/input/covariate_table.hpp"
#include "ketasim/input/dosing_table.hpp"
#include "ketasim/model/model.hpp"
#include "ketasim/model/model_card.hpp"

namespace ketasim {

namespace {

namespace fs = std::filesystem;
using yaml::in_quotes;
using yaml::MapEntry;
using yaml::NodeRef;
using yaml::trim;

// Limits that keep every later computation in range (Ticks are int64 milliseconds): the shared
// ones are in scenario.hpp (kMaxDoseCount) and time.hpp (kMaxTimeHours), the accepted ranges of
// quantities in units.cpp.
constexpr std::int64_t kMaxGridPoints = 10'000'000;  // per subject and variable
constexpr double kMaxCv = 5.0;                       // 500%
// The ODE path's tolerances (docs/model.md, "ODE path"): a relative tolerance below 1e-14 (45
// times the double's precision) asks for more than rounding lets a solution keep over its steps;
// an absolute one below 1e-20 (mg: a fraction of one molecule) means nothing.
constexpr double kMinRelativeTolerance = 1e-14;
constexpr double kMaxRelativeTolerance = 0.1;
constexpr double kMinAbsoluteTolerance = 1e-20;

std::string format_hours(Ticks ticks) {
  return yaml::format_number(ticks_to_hours(ticks)) + " h";
}

bool equals_ignoring_case(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) == std::tolower(static_cast<unsigned char>(y));
         });
}

// ---------------------------------------------------------------------------------------------
// Numbers and times

enum class Sign { positive, non_negative };

// Fails unless `value` (read from `node`) has the required sign.
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

// A time in hours from a quantity text, as Ticks. All scenario times pass through here.
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

// ---------------------------------------------------------------------------------------------
// model

std::vector<std::string> parameter_names(const ModelCard& card) {
  std::vector<std::string> names;
  for (const auto& spec : card.parameters) names.push_back(spec.name);
  return names;
}

// The card parameter a map key names; fails at the key, with a suggestion, when there is none.
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

// ---------------------------------------------------------------------------------------------
// cohort

void forbid_keys(const NodeRef& node, const std::vector<std::string>& keys, const std::string& reason) {
  for (const auto& entry : node.entries()) {
    if (std::find(keys.begin(), keys.end(), entry.key) != keys.end())
      throw ScenarioError(entry.key_where, entry.value.path, in_quotes(entry.key) + " " + reason);
  }
}

// A covariate: a fixed value ("70 kg") or a truncated normal distribution. `read` turns a node
// into a value in the covariate's unit (kg, years, points); `example` shows the expected form.
struct CovariateKind {
  const char* what;                      // "a body weight"
  const char* example;                   // "80 kg"
  double (*read)(const NodeRef&, Sign);  // a value (positive where the covariate must be) or a spread (non-negative)
};

double read_body_weight(const NodeRef& node, Sign sign) {
  return read_quantity(node, QuantityKind::body_weight, sign);
}
double read_age(const NodeRef& node, Sign) {
  // An age is a time, but "expected a duration (e.g. 40 min)" would mislead: say what is meant.
  const std::string text = node.scalar("an age (e.g. 45 y)");
  const auto written = parse_written_quantity(text);
  if (!written || !(written->unit.dimension == dim::time))
    node.fail("cannot read " + in_quotes(text) + " as an age; expected years with their unit (e.g. 45 y)");
  return read_quantity(node, QuantityKind::age, Sign::non_negative) / 8766.0;
}
double read_score(const NodeRef& node, Sign = Sign::non_negative) {
  const double value = node.as_number();
  check_sign(node, value, Sign::non_negative);
  if (value > 60.0) node.fail(node.kind() + " exceeds the MADRS maximum of 60");
  return value;
}

CovariateDistribution read_covariate(const NodeRef& node, const CovariateKind& covariate) {
  const std::string example = covariate.example;
  CovariateDistribution distribution;
  if (node.is_scalar()) return CovariateDistribution::constant(covariate.read(node, Sign::positive));
  node.expect_map(std::string(covariate.what) + " (e.g. " + example +
                  ") or a distribution (e.g. {distribution: normal, mean: " + example +
                  ", sd: ..., min: ..., max: ...})");
  node.check_keys({"distribution", "value", "mean", "sd", "min", "max"});
  const NodeRef kind_node = node.require("distribution", "normal or fixed");
  const std::string kind = kind_node.scalar("a distribution name");
  if (kind == "fixed") {
    forbid_keys(node, {"mean", "sd", "min", "max"},
                "does not apply to distribution 'fixed' (give value: " + example + ")");
    return CovariateDistribution::constant(
        covariate.read(node.require("value", "e.g. value: " + example), Sign::positive));
  }
  if (kind != "normal") {
    const std::vector<std::string> kinds{"normal", "fixed"};
    kind_node.fail("unknown distribution " + in_quotes(kind) + yaml::did_you_mean(kind, kinds) +
                   "; expected normal or fixed");
  }
  forbid_keys(node, {"value"}, "does not apply to distribution 'normal' (give mean, sd, min and max)");
  distribution.kind = CovariateDistribution::Kind::truncated_normal;
  const NodeRef mean = node.require("mean", "e.g. mean: " + example);
  const NodeRef sd = node.require("sd", "the standard deviation");
  const NodeRef min = node.require("min", "the lower truncation bound");
  const NodeRef max = node.require("max", "the upper truncation bound");
  distribution.sd = covariate.read(sd, Sign::non_negative);
  distribution.min = covariate.read(min, Sign::positive);
  distribution.max = covariate.read(max, Sign::positive);
  distribution.mean = covariate.read(mean, Sign::positive);
  if (!(distribution.min < distribution.max)) min.fail("min " + min.kind() + " must be less than max " + max.kind());
  if (distribution.mean < distribution.min || distribution.mean > distribution.max)
    mean.fail("mean " + mean.kind() + " lies outside [min, max] = [" + min.kind() + ", " + max.kind() + "]");
  distribution.fixed = distribution.mean;
  return distribution;
}

constexpr CovariateKind kWeight{"a body weight", "80 kg", read_body_weight};
constexpr CovariateKind kAge{"an age", "45 y", read_age};
constexpr CovariateKind kBaselineMadrs{"a MADRS score", "33", read_score};

// The correlation block of `variability`; fills variability.correlation in cv order.
void read_correlation(const NodeRef& node, Variability& variability) {
  node.expect_map("a map {parameters: [V1, k10], matrix: [[1, 0.5], [0.5, 1]]}");
  node.check_keys({"parameters", "matrix"});
  const NodeRef names_node = node.require("parameters", "the correlated parameters, e.g. parameters: [V1, k10]");
  const auto names = names_node.items("the names of the correlated parameters");
  if (names.size() < 2)
    names_node.fail("a correlation needs at least two parameters, found " + std::to_string(names.size()));
  std::vector<std::size_t> cv_index;
  for (const auto& name_node : names) {
    const std::string name = name_node.scalar("a parameter name");
    const auto found = std::find(variability.parameters.begin(), variability.parameters.end(), name);
    if (found == variability.parameters.end()) {
      name_node.fail(in_quotes(name) + " has no entry in variability.cv; correlated parameters must have a cv" +
                     yaml::did_you_mean(name, variability.parameters));
    }
    const auto index = static_cast<std::size_t>(found - variability.parameters.begin());
    if (std::find(cv_index.begin(), cv_index.end(), index) != cv_index.end())
      name_node.fail(in_quotes(name) + " is listed twice");
    cv_index.push_back(index);
  }

  const std::size_t n = names.size();
  const std::string shape = std::to_string(n) + " x " + std::to_string(n);
  const NodeRef matrix_node = node.require("matrix", "a " + shape + " correlation matrix, one list per row");
  const auto rows = matrix_node.items("the correlation matrix (one list per row)");
  if (rows.size() != n) {
    matrix_node.fail("expected a " + shape + " matrix (one row per entry of correlation.parameters), found " +
                     std::to_string(rows.size()) + " rows");
  }
  std::vector<std::vector<NodeRef>> cells;
  Eigen::MatrixXd matrix(static_cast<Eigen::Index>(n), static_cast<Eigen::Index>(n));
  for (std::size_t r = 0; r < n; ++r) {
    cells.push_back(rows[r].items("a matrix row"));
    if (cells[r].size() != n) {
      rows[r].fail("expected " + std::to_string(n) + " entries in this row of the " + shape + " matrix, found " +
                   std::to_string(cells[r].size()));
    }
    for (std::size_t c = 0; c < n; ++c)
      matrix(static_cast<Eigen::Index>(r), static_cast<Eigen::Index>(c)) = cells[r][c].as_number();
  }
  constexpr double kTolerance = 1e-12;
  const auto at = [&matrix](std::size_t r, std::size_t c) {
    return matrix(static_cast<Eigen::Index>(r), static_cast<Eigen::Index>(c));
  };
  for (std::size_t r = 0; r < n; ++r) {
    for (std::size_t c = 0; c < n; ++c) {
      const NodeRef& cell = cells[r][c];
      if (r == c && std::fabs(at(r, c) - 1.0) > kTolerance)
        cell.fail("a correlation matrix has 1 on its diagonal, found " + cell.kind());
      if (r != c && std::fabs(at(r, c)) > 1.0) cell.fail("correlation " + cell.kind() + " lies outside [-1, 1]");
      if (c < r && std::fabs(at(r, c) - at(c, r)) > kTolerance) {
        cell.fail("the correlation matrix is not symmetric: " + cell.kind() + " here but " + cells[c][r].kind() +
                  " at " + cells[c][r].path);
      }
    }
  }
  const Eigen::LLT<Eigen::MatrixXd> cholesky(matrix);
  if (cholesky.info() != Eigen::Success) {
    matrix_node.fail(
        "the correlation matrix is not positive definite (its correlations are inconsistent, or "
        "some are +-1)");
  }
  for (std::size_t r = 0; r < n; ++r) {
    for (std::size_t c = 0; c < n; ++c) {
      variability.correlation(static_cast<Eigen::Index>(cv_index[r]), static_cast<Eigen::Index>(cv_index[c])) =
          at(r, c);
    }
  }
}

// occasion_variability: {CL: 15%}: a log-normal factor per session on parameters of the dynamics.
OccasionVariability read_occasion_variability(const NodeRef& node, const ModelCard& card) {
  node.expect_map("a map of coefficients of variation from one session to the next by parameter (e.g. {CL: 15%})");
  const Model model(card);
  std::vector<double> typical;
  for (const ParameterSpec& spec : card.parameters) typical.push_back(spec.value);
  OccasionVariability occasions;
  for (const auto& entry : node.entries()) {
    const ParameterSpec& spec = card_parameter(card, entry);
    const double cv = entry.value.as_percentage();
    if (cv < 0.0 || cv > kMaxCv) entry.value.fail(entry.value.kind() + " lies outside the accepted range 0% to 500%");
    const std::string problem = occasion_variability_problem(model, typical, card.index_of(spec.name), nullptr);
    if (!problem.empty())
      entry.value.fail(
          "occasion variability on " + spec.name + " is not supported: " + problem +
          "; it is supported on parameters of the dynamics only (clearances, rate constants, e.g. CL, Q, ke0)");
    occasions.parameters.push_back(spec.name);
    occasions.cv.push_back(cv);
  }
  if (occasions.parameters.empty()) node.fail("occasion_variability lists no parameters");
  return occasions;
}

Variability read_variability(const NodeRef& node, const ModelCard& card) {
  node.expect_map("a map of variability settings (cv, correlation, from_card)");
  node.check_keys({"cv", "correlation", "from_card"});
  Variability variability;
  if (const auto from_card = node.find("from_card")) variability.from_card = from_card->as_boolean();
  const auto cv_found = node.find("cv");
  if (!cv_found) {
    if (node.find("correlation")) node.require("cv", "the correlated parameters need a cv");
    variability.correlation = Eigen::MatrixXd(0, 0);
    return variability;
  }
  const NodeRef cv_node = *cv_found;
  cv_node.expect_map("a map of coefficients of variation by parameter (e.g. {V1: 25%, k10: 30%})");
  for (const auto& entry : cv_node.entries()) {
    const ParameterSpec& spec = card_parameter(card, entry);
    const double cv = entry.value.as_percentage();
    if (cv < 0.0 || cv > kMaxCv) entry.value.fail(entry.value.kind() + " lies outside the accepted range 0% to 500%");
    variability.parameters.push_back(spec.name);
    variability.cv.push_back(cv);
  }
  const auto n = static_cast<Eigen::Index>(variability.parameters.size());
  variability.correlation = Eigen::MatrixXd::Identity(n, n);
  if (const auto correlation = node.find("correlation")) read_correlation(*correlation, variability);
  return variability;
}

// cohort.from_csv: the patients' file, relative to the scenario file's directory, read and
// checked once here.
std::shared_ptr<const CovariateTable> read_cohort_table(const NodeRef& node, const fs::path& scenario_directory) {
  const std::string name = node.scalar("a CSV file name, e.g. from_csv: patients.csv");
  fs::path path(name);
  if (path.is_relative()) path = (scenario_directory / path).lexically_normal();
  std::string text;
  try {
    text = read_text_file(path.string(), "cohort file", kMaxTableFileBytes);
  } catch (const IoError& error) {
    node.fail(std::string(error.what()) + " (a relative path is taken from the scenario file's directory)");
  }
  return std::make_shared<const CovariateTable>(parse_covariate_table(text, path.string()));
}

// The covariates cohort.correlations can pair, in the order of Cohort::covariate_correlation.
struct CorrelatableCovariate {
  const char* name;   // the cohort key
  const char* alias;  // the subject column's name in the output
  CovariateDistribution Cohort::*distribution;
  bool (CovariateTable::*in_table)() const;
  std::string CovariateTable::*table_column;
};
const std::array<CorrelatableCovariate, 3> kCorrelatable{{
    {"weight", "weight_kg", &Cohort::weight, &CovariateTable::has_weight, &CovariateTable::weight_column},
    {"age", "age_y", &Cohort::age, &CovariateTable::has_age, &CovariateTable::age_column},
    {"baseline_madrs", "baseline_madrs", &Cohort::baseline_madrs, &CovariateTable::has_baseline_madrs,
     &CovariateTable::baseline_madrs_column},
}};

// One side of a pair such as "weight~age": the covariate's index, or a failure at the key.
std::size_t correlated_covariate(const MapEntry& entry, std::string_view name, const Cohort& cohort,
                                 const std::vector<std::string>& given_keys) {
  const auto fail = [&entry](const std::string& message) {
    throw ScenarioError(entry.key_where, entry.value.path, message);
  };
  const std::string text(trim(name));
  if (equals_ignoring_case(text, "sex") || equals_ignoring_case(text, "female") ||
      equals_ignoring_case(text, "female_fraction"))
    fail(in_quotes(text) +
         " cannot be correlated: sex is drawn on its own (female_fraction); expected weight, age or baseline_madrs");
  for (std::size_t k = 0; k < kCorrelatable.size(); ++k) {
    const CorrelatableCovariate& covariate = kCorrelatable[k];
    if (text != covariate.name && text != covariate.alias) continue;
    if (cohort.table && ((*cohort.table).*covariate.in_table)()) {
      fail(in_quotes(text) + " is read from " + cohort.table->file + " (column " +
           (*cohort.table).*covariate.table_column + "); only covariates drawn from a distribution can be correlated");
    }
    const CovariateDistribution& distribution = cohort.*covariate.distribution;
    if (distribution.kind == CovariateDistribution::Kind::fixed || distribution.sd == 0.0) {
      const bool given = std::find(given_keys.begin(), given_keys.end(), covariate.name) != given_keys.end();
      const std::string why = given
                                  ? "cohort." + std::string(covariate.name) + " has no spread"
                                  : "cohort." + std::string(covariate.name) + " is not given, and its default is fixed";
      fail(in_quotes(text) + " is the same for every subject (" + why +
           ") and cannot be correlated; give it a distribution {distribution: normal, mean, sd > 0, min, max}");
    }
    return k;
  }
  const std::vector<std::string> names{"weight", "age", "baseline_madrs", "weight_kg", "age_y"};
  if (text.empty()) fail(in_quotes(entry.key) + " is not a pair of two covariates; expected e.g. weight~age");
  throw ScenarioError(entry.key_where, entry.value.path,
                      "unknown covariate " + in_quotes(text) + yaml::did_you_mean(text, names) +
                          "; expected weight, age or baseline_madrs");
}

// cohort.correlations: {weight~age: 0.2, age~baseline_madrs: -0.1} -> the 3 x 3 correlation of
// weight, age and baseline MADRS, 0 for pairs not given.
Eigen::MatrixXd read_covariate_correlations(const NodeRef& node, const Cohort& cohort,
                                            const std::vector<std::string>& given_keys) {
  const std::string example = "e.g. {weight~age: 0.2, age~baseline_madrs: -0.1}";
  node.expect_map("a map of covariate pairs and their correlations, " + example);
  const auto entries = node.entries();
  if (entries.empty()) node.fail("expected at least one pair of covariates and its correlation, " + example);
  Eigen::MatrixXd correlation = Eigen::MatrixXd::Identity(3, 3);
  // The key path that set each pair. Default-initialised: clang 14's frontend crashes on `{}` here.
  std::array<std::array<std::string, 3>, 3> given_at;
  for (const MapEntry& entry : entries) {
    const std::size_t tilde = entry.key.find('~');
    if (tilde == std::string::npos || entry.key.find('~', tilde + 1) != std::string::npos) {
      throw ScenarioError(
          entry.key_where, entry.value.path,
          in_quotes(entry.key) + " is not a pair of two covariates joined by '~'; expected e.g. weight~age");
    }
    const std::string_view key(entry.key);
    const std::size_t a = correlated_covariate(entry, key.substr(0, tilde), cohort, given_keys);
    const std::size_t b = correlated_covariate(entry, key.substr(tilde + 1), cohort, given_keys);
    if (a == b)
      throw ScenarioError(entry.key_where, entry.value.path, in_quotes(entry.key) + " pairs a covariate with itself");
    if (!given_at[a][b].empty()) {
      throw ScenarioError(entry.key_where, entry.value.path,
                          "the pair " + in_quotes(entry.key) + " is given twice (also at " + given_at[a][b] + ")");
    }
    const double r = entry.value.as_number();
    if (!(std::fabs(r) < 1.0))
      entry.value.fail("correlation " + entry.value.kind() + " must lie strictly between -1 and 1");
    const auto row = static_cast<Eigen::Index>(a), column = static_cast<Eigen::Index>(b);
    correlation(row, column) = correlation(column, row) = r;
    given_at[a][b] = given_at[b][a] = entry.value.path;
  }
  const Eigen::LLT<Eigen::MatrixXd> cholesky(correlation);
  if (cholesky.info() != Eigen::Success) {
    node.fail(
        "these correlations cannot occur together: the correlation matrix of weight, age and baseline_madrs is "
        "not positive definite (pairs not given count as 0)");
  }
  return correlation;
}

Cohort read_cohort(const NodeRef& node, const ModelCard& card, const fs::path& scenario_directory) {
  node.expect_map(
      "a map of cohort settings (size, seed, weight, age, female_fraction, baseline_madrs, variability, "
      "correlations, from_csv, replicates, occasion_variability)");
  node.check_keys({"size", "seed", "weight", "age", "female_fraction", "baseline_madrs", "variability", "correlations",
                   "from_csv", "replicates", "occasion_variability"});
  std::vector<std::string> given_keys;
  for (const MapEntry& entry : node.entries()) given_keys.push_back(entry.key);
  Cohort cohort;
  if (const auto from_csv = node.find("from_csv")) cohort.table = read_cohort_table(*from_csv, scenario_directory);
  std::int64_t per_replicate = 0;
  if (node.find("size") || !cohort.table) {
    per_replicate =
        node.require("size", "the number of subjects per arm, e.g. size: 1000").as_integer(1, kMaxCohortSize);
    cohort.table_rows = Cohort::TableRows::resample;  // matters only with a table
  } else {
    if (cohort.table->rows > static_cast<std::size_t>(kMaxCohortSize))
      node.find("from_csv")->fail("the file has more rows than the limit of 2^40 subjects");
    per_replicate = static_cast<std::int64_t>(cohort.table->rows);
    cohort.table_rows = Cohort::TableRows::in_order;
  }
  if (const auto replicates = node.find("replicates")) {
    cohort.replicates = replicates->as_integer(1, kMaxCohortSize);
    if (per_replicate > kMaxCohortSize / cohort.replicates) {
      replicates->fail(std::to_string(cohort.replicates) + " replicates of " + std::to_string(per_replicate) +
                       " subjects exceed the limit of 2^40 subjects per arm");
    }
  }
  cohort.subjects_per_replicate = per_replicate;
  cohort.size = per_replicate * cohort.replicates;
  cohort.seed = node.require("seed", "a non-negative integer that fixes the random draws, e.g. seed: 42").as_unsigned();
  const std::string weight_example =
      "e.g. weight: 70 kg, or weight: {distribution: normal, mean: 80 kg, sd: 15 kg, min: 45 kg, max: 150 kg}";
  if (const auto weight = node.find("weight")) {
    cohort.weight = read_covariate(*weight, kWeight);
  } else if (!cohort.table || !cohort.table->has_weight()) {
    node.require("weight", cohort.table
                               ? weight_example + "; " + cohort.table->file + " has no weight column (weight_kg or WT)"
                               : weight_example);
  }
  if (const auto age = node.find("age")) cohort.age = read_covariate(*age, kAge);
  if (const auto baseline = node.find("baseline_madrs"))
    cohort.baseline_madrs = read_covariate(*baseline, kBaselineMadrs);
  if (const auto female = node.find("female_fraction")) {
    cohort.female_fraction = female->as_percentage();
    if (cohort.female_fraction < 0.0 || cohort.female_fraction > 1.0)
      female->fail(female->kind() + " lies outside 0% to 100%");
  }
  if (const auto occasions = node.find("occasion_variability"))
    cohort.occasion_variability = read_occasion_variability(*occasions, card);
  if (const auto variability = node.find("variability")) {
    cohort.variability = read_variability(*variability, card);
  } else {
    cohort.variability.correlation = Eigen::MatrixXd(0, 0);
  }
  if (const auto correlations = node.find("correlations"))
    cohort.covariate_correlation = read_covariate_correlations(*correlations, cohort, given_keys);
  return cohort;
}

// ---------------------------------------------------------------------------------------------
// arms

constexpr std::array<const char*, 7> kWeekdays{"Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"};

// "Fri 09:00".
std::string format_slot(const WeeklySlot& slot) {
  const auto minutes = slot.time_of_day / kTicksPerMinute;
  const auto two_digits = [](std::int64_t value) { return (value < 10 ? "0" : "") + std::to_string(value); };
  return std::string(kWeekdays[static_cast<std::size_t>(slot.weekday)]) + " " + two_digits(minutes / 60) + ":" +
         two_digits(minutes % 60);
}

// "Mon 09:00" -> weekday 0, 9 h. Fails at `node` with what is wrong.
WeeklySlot parse_weekly_slot(const NodeRef& node) {
  const std::string text = node.scalar("a weekly slot such as 'Mon 09:00'");
  const std::string_view trimmed = trim(text);
  const std::string expected = "expected a weekday and a 24-hour time such as 'Mon 09:00'";
  const std::size_t space = trimmed.find_first_of(" \t");
  if (space == std::string_view::npos) {
    node.fail(in_quotes(text) + " is not a weekly slot; " + expected +
              " (for times from the start, write schedule: {at: [9 h, 81 h]})");
  }
  const std::string_view day = trimmed.substr(0, space);
  const std::string_view clock = trim(trimmed.substr(space));
  WeeklySlot slot;
  const auto found = std::find_if(kWeekdays.begin(), kWeekdays.end(),
                                  [day](const char* name) { return equals_ignoring_case(day, name); });
  if (found == kWeekdays.end()) {
    node.fail("unknown weekday " + in_quotes(day) + " in " + in_quotes(text) +
              "; expected Mon, Tue, Wed, Thu, Fri, Sat or Sun");
  }
  slot.weekday = static_cast<int>(found - kWeekdays.begin());
  const std::size_t colon = clock.find(':');
  const auto all_digits = [](std::string_view part) {
    return !part.empty() && std::all_of(part.begin(), part.end(), [](char c) { return c >= '0' && c <= '9'; });
  };
  const std::string_view hour_text = colon == std::string_view::npos ? clock : clock.substr(0, colon);
  const std::string_view minute_text = colon == std::string_view::npos ? std::string_view() : clock.substr(colon + 1);
  if (colon == std::string_view::npos || hour_text.size() > 2 || minute_text.size() != 2 || !all_digits(hour_text) ||
      !all_digits(minute_text)) {
    node.fail(in_quotes(text) + " is not a weekly slot; " + expected + " (time as HH:MM)");
  }
  const int hour = std::stoi(std::string(hour_text));
  const int minute = std::stoi(std::string(minute_text));
  if (hour > 23 || minute > 59)
    node.fail(in_quotes(text) + " is not a valid 24-hour time; expected 00:00 to 23:59, e.g. 'Mon 09:00'");
  slot.time_of_day = hour * kTicksPerHour + minute * kTicksPerMinute;
  return slot;
}

void read_weekly_schedule(const std::vector<NodeRef>& items, DosingRule& rule) {
  for (const auto& item : items) {
    const WeeklySlot slot = parse_weekly_slot(item);
    for (std::size_t i = 0; i < rule.weekly_slots.size(); ++i) {
      if (rule.weekly_slots[i].time_in_week() == slot.time_in_week())
        item.fail("slot " + item.kind() + " is listed twice (also at " + items[i].path + ")");
    }
    rule.weekly_slots.push_back(slot);
  }
  std::sort(rule.weekly_slots.begin(), rule.weekly_slots.end(),
            [](const WeeklySlot& a, const WeeklySlot& b) { return a.time_in_week() < b.time_in_week(); });
}

void read_schedule(const NodeRef& node, DosingRule& rule) {
  const std::string expected =
      "expected weekly slots (e.g. [Mon 09:00, Thu 09:00]), an interval (e.g. 'every 3.5 d') or "
      "explicit times (e.g. {at: [9 h, 81 h]})";
  if (node.is_sequence()) {
    const auto items = node.items("weekly slots");
    if (items.empty()) node.fail("the schedule lists no weekly slots; " + expected);
    rule.schedule = ScheduleKind::weekly;
    read_weekly_schedule(items, rule);
  } else if (node.is_scalar()) {
    const std::string text = node.scalar("a schedule");
    const std::string_view trimmed = trim(text);
    const std::string_view keyword = "every";
    const bool is_interval = trimmed.size() > keyword.size() &&
                             equals_ignoring_case(trimmed.substr(0, keyword.size()), keyword) &&
                             std::isspace(static_cast<unsigned char>(trimmed[keyword.size()]));
    if (!is_interval) node.fail(in_quotes(text) + " is not a schedule; " + expected);
    rule.schedule = ScheduleKind::interval;
    rule.interval = to_ticks(node, std::string(trim(trimmed.substr(keyword.size()))), Sign::positive);
  } else if (node.is_map()) {
    node.check_keys({"at"});
    const NodeRef at = node.require("at", "the dose times from the simulation start, e.g. at: [9 h, 81 h]");
    const auto items = at.items("dose times (e.g. [9 h, 81 h])");
    if (items.empty()) at.fail("the schedule lists no dose times");
    rule.schedule = ScheduleKind::explicit_times;
    for (std::size_t i = 0; i < items.size(); ++i) {
      const Ticks t = read_time_point(items[i]);
      if (i > 0 && t == rule.explicit_times.back())
        items[i].fail("time " + items[i].kind() + " is listed twice (also at " + items[i - 1].path + ")");
      if (i > 0 && t < rule.explicit_times.back()) {
        items[i].fail("dose times must be in ascending order: " + items[i].kind() + " comes after " +
                      items[i - 1].kind());
      }
      rule.explicit_times.push_back(t);
    }
  } else {
    node.fail(expected + ", found " + node.kind());
  }
}

DoseAmount read_dose(const NodeRef& node) {
  const std::string expected = "a drug amount (e.g. 35 mg) or a weight-based dose (e.g. 0.5 mg/kg)";
  const std::string text = node.scalar(expected);
  std::string problem;
  const auto written = parse_written_quantity(text, &problem);
  if (!written) node.fail("cannot read " + in_quotes(text) + " as a dose: " + problem);
  const Dimension& dimension = written->unit.dimension;
  DoseAmount dose;
  if (dimension == dim::drug_mass) {
    dose.basis = DoseBasis::flat;
  } else if (dimension == dim::dose_per_weight) {
    dose.basis = DoseBasis::per_body_weight;
  } else if (dimension == dim::dimensionless) {
    node.fail(in_quotes(text) + " has no unit, expected " + expected);
  } else {
    node.fail(in_quotes(text) + " is " + describe(dimension) + ", expected " + expected);
  }
  const QuantityKind kind = dose.basis == DoseBasis::flat ? QuantityKind::drug_amount : QuantityKind::dose_per_weight;
  dose.value = read_quantity(node, kind, Sign::positive);
  return dose;
}

std::string schedule_name(ScheduleKind kind) {
  switch (kind) {
    case ScheduleKind::weekly:
      return "weekly";
    case ScheduleKind::interval:
      return "interval";
    case ScheduleKind::explicit_times:
      return "explicit";
    case ScheduleKind::as_needed:
      return "as-needed";
    case ScheduleKind::table:
      return "table";
  }
  return "unknown";
}

// `for` / `count`: exactly one for repeating schedules, neither for an explicit list.
void read_repeat_bounds(const NodeRef& node, DosingRule& rule) {
  const auto repeat_for = node.find("for");
  const auto count = node.find("count");
  if (rule.schedule == ScheduleKind::explicit_times) {
    for (const auto* bound : {&repeat_for, &count}) {
      if (*bound) {
        (*bound)->fail(
            "'for' and 'count' do not apply to an explicit {at: [...]} schedule, whose doses are "
            "listed; remove the key");
      }
    }
    return;
  }
  const std::string name = schedule_name(rule.schedule);
  if (repeat_for && count) count->fail("give either 'for' or 'count' for a " + name + " schedule, not both");
  if (!repeat_for && !count) {
    node.fail((name == "interval" ? "an " : "a ") + name +
              " schedule needs 'for' (e.g. for: 3 weeks) or 'count' (e.g. count: 6) to say when dosing stops");
  }
  if (count) rule.count = static_cast<int>(count->as_integer(1, kMaxDoseCount));
  if (repeat_for) {
    rule.repeat_for = read_duration(*repeat_for);
    // The same cap as for `count`, so a short interval over a long window cannot expand into
    // billions of events (for weekly slots this counts whole weeks, an upper bound).
    const Ticks period = rule.schedule == ScheduleKind::interval ? rule.interval : kTicksPerWeek;
    const std::int64_t per_period =
        rule.schedule == ScheduleKind::interval ? 1 : static_cast<std::int64_t>(rule.weekly_slots.size());
    const std::int64_t doses = (*rule.repeat_for + period - 1) / period * per_period;
    if (doses > kMaxDoseCount) {
      repeat_for->fail(repeat_for->kind() + " gives up to " + std::to_string(doses) + " doses; at most " +
                       std::to_string(kMaxDoseCount) + " per rule are supported");
    }
    // Weekly doses start at `start` plus their time in the week: the window must reach the first.
    if (rule.schedule == ScheduleKind::weekly && *rule.repeat_for <= rule.weekly_slots.front().time_in_week()) {
      const WeeklySlot& first = rule.weekly_slots.front();
      repeat_for->fail(repeat_for->kind() + " ends before the first weekly slot (" + format_slot(first) + ", " +
                       format_hours(first.time_in_week()) + " into the week): no dose would be given");
    }
  }
}

DoseDrug read_dose_drug(const NodeRef& node, const ModelCard& card) {
  const std::string text = node.scalar("a drug");
  if (text == card.drug) return DoseDrug::model_drug;
  if (text == "placebo" || text == "saline") return DoseDrug::placebo;
  if (text == "midazolam" || text == "active_placebo") return DoseDrug::active_placebo;
  const std::vector<std::string> names{card.drug, "placebo", "saline", "midazolam", "active_placebo"};
  node.fail("unknown drug " + in_quotes(text) + yaml::did_you_mean(text, names) + "; model " + in_quotes(card.name) +
            " doses " + in_quotes(card.drug) +
            ", and a session may give placebo (saline) or midazolam (active placebo)");
}

// max_dose: the cap of a weight-based dose.
double read_max_dose(const NodeRef& cap, const DoseAmount& dose) {
  if (dose.basis != DoseBasis::per_body_weight)
    cap.fail("max_dose caps a weight-based dose (e.g. dose: 0.5 mg/kg, max_dose: 60 mg); the dose here is flat");
  return read_quantity(cap, QuantityKind::drug_amount, Sign::positive);
}

// An intranasal dose of the card's drug is a whole number of the card's devices.
void check_intranasal_devices(const NodeRef& dose_node, const DoseAmount& dose, const ModelCard& card) {
  const double device = card.routes.intranasal->device_mg;
  const double devices = dose.value / device;
  if (dose.basis != DoseBasis::flat || std::abs(devices - std::round(devices)) > 1e-9 || devices < 1.0) {
    dose_node.fail("an intranasal dose is a whole number of " + yaml::format_number(device) + " mg devices (e.g. " +
                   yaml::format_number(2 * device) + " mg), found " + dose_node.kind());
  }
}

// What a rule gives at each session: route, drug, amount (capped), infusion duration.
void read_dose_part(const NodeRef& node, const ModelCard& card, DosingRule& rule, bool amount_from_table) {
  const NodeRef route = node.require("route", "iv_infusion, iv_bolus or intranasal");
  rule.route = read_choice(route, std::array{Route::iv_infusion, Route::iv_bolus, Route::intranasal}, "route");
  if (const auto drug = node.find("drug")) rule.drug = read_dose_drug(*drug, card);
  const bool gives_drug = rule.drug == DoseDrug::model_drug;
  if (gives_drug) {
    if (rule.route == Route::intranasal && !card.routes.intranasal)
      route.fail("model " + in_quotes(card.name) + " has no intranasal route (see `ketasim models show " + card.name +
                 "`)");
    if (rule.route != Route::intranasal && !card.routes.iv)
      route.fail("model " + in_quotes(card.name) + " has no intravenous route");
  }
  if (amount_from_table) {
    for (const char* key : {"dose", "max_dose", "infusion_duration"})
      if (const auto given = node.find(key))
        given->fail(
            std::string(
                "the amounts and durations of a dosing table come from its AMT and RATE (or DUR) columns; remove '") +
            key + "'");
    if (rule.route == Route::intranasal)
      route.fail("a dosing table gives intravenous doses; use route: iv_infusion or iv_bolus");
    return;
  }
  if (gives_drug) {
    rule.dose = read_dose(node.require("dose", "e.g. dose: 0.5 mg/kg or dose: 35 mg"));
  } else if (const auto dose = node.find("dose")) {
    rule.dose = read_dose(*dose);  // recorded (e.g. midazolam 0.045 mg/kg); no drug enters the model
  }
  if (const auto cap = node.find("max_dose")) rule.max_dose_mg = read_max_dose(*cap, rule.dose);
  if (gives_drug && rule.route == Route::intranasal) check_intranasal_devices(*node.find("dose"), rule.dose, card);
  if (rule.route == Route::iv_infusion) {
    rule.infusion_duration =
        read_duration(node.require("infusion_duration", "an iv_infusion needs its duration, e.g. 40 min"));
  } else if (const auto duration = node.find("infusion_duration")) {
    duration->fail("an " + to_string(rule.route) +
                   " dose has no infusion_duration; remove the key or use route: iv_infusion");
  }
}

// as_needed: {from, until, madrs_above | improvement_below, min_interval, max_doses}
AsNeeded read_as_needed(const NodeRef& node, const ModelCard& card) {
  node.expect_map("a map {madrs_above: 22, from: 3 weeks, min_interval: 7 d, max_doses: 6}");
  node.check_keys({"madrs_above", "improvement_below", "from", "until", "min_interval", "max_doses", "delay", "slots"});
  if (card.blocks_of<DepressionBlock>().empty())
    node.fail("model " + in_quotes(card.name) + " has no depression score to trigger as-needed dosing");
  AsNeeded rule;
  const auto above = node.find("madrs_above");
  const auto below = node.find("improvement_below");
  if (above && below) below->fail("give either madrs_above or improvement_below, not both");
  if (!above && !below)
    node.fail(
        "as-needed dosing needs a threshold: madrs_above (e.g. 22: MADRS points) or improvement_below (e.g. 50%: "
        "the improvement from baseline)");
  if (above) {
    rule.threshold = AsNeeded::Threshold::madrs_above;
    rule.value = above->as_number();
    if (!(rule.value >= 0.0 && rule.value < 60.0))
      above->fail("expected a MADRS score in [0, 60), found " + above->kind());
  } else {
    rule.threshold = AsNeeded::Threshold::improvement_below;
    rule.value = below->as_percentage();
    if (!(rule.value > 0.0 && rule.value <= 1.0))
      below->fail("expected an improvement in (0%, 100%], found " + below->kind());
  }
  if (const auto from = node.find("from")) rule.from = read_time_point(*from);
  if (const auto until = node.find("until")) {
    rule.until = read_time_point(*until);
    if (*rule.until <= rule.from) until->fail("until (" + until->kind() + ") must come after from");
  }
  rule.min_interval =
      read_duration(node.require("min_interval", "the shortest time between two sessions, e.g. min_interval: 7 d"));
  if (const auto most = node.find("max_doses")) rule.max_doses = static_cast<int>(most->as_integer(1, kMaxDoseCount));
  if (const auto delay = node.find("delay")) rule.delay = read_time_point(*delay);
  if (const auto slots = node.find("slots")) {
    const auto items = slots->items("clinic slots, e.g. [Mon 09:00, Thu 09:00]");
    if (items.empty()) slots->fail("slots lists no clinic slots; remove the key to dose at the crossing");
    DosingRule weekly;
    read_weekly_schedule(items, weekly);
    rule.slots = weekly.weekly_slots;
  }
  return rule;
}

// When the last dose of a weekly, interval or explicit schedule ends (for a `for` bound, when its
// window ends, if later), from the simulation start. Computed, not expanded.
Ticks schedule_end(const DosingRule& rule) {
  Ticks last_start = rule.start;
  switch (rule.schedule) {
    case ScheduleKind::explicit_times:
      last_start += rule.explicit_times.back();
      break;
    case ScheduleKind::interval:
      last_start += rule.count ? (*rule.count - 1) * rule.interval : *rule.repeat_for;
      break;
    case ScheduleKind::weekly:
      if (rule.count) {
        const auto slots = static_cast<std::int64_t>(rule.weekly_slots.size());
        const std::int64_t last = *rule.count - 1;
        last_start +=
            last / slots * kTicksPerWeek + rule.weekly_slots[static_cast<std::size_t>(last % slots)].time_in_week();
      } else {
        last_start += *rule.repeat_for;
      }
      break;
    case ScheduleKind::as_needed:
    case ScheduleKind::table:
      break;
  }
  return last_start + rule.infusion_duration;
}

// Every time is limited to 100 years; a schedule's start plus its repeats must be too (count:
// 1000000 at every 1 h would end after 114 years). Blamed on count or for, else on schedule.
void check_schedule_end(const NodeRef& node, const DosingRule& rule) {
  const Ticks end = schedule_end(rule);
  const double limit_hours = accepted_range(QuantityKind::time).max;
  if (ticks_to_hours(end) <= limit_hours) return;
  const auto bound = rule.count ? node.find("count") : node.find("for");
  const NodeRef blame = bound ? *bound : node.require("schedule", "");
  blame.fail("this schedule's last dose ends " + yaml::format_number(ticks_to_hours(end) / 8766.0) +
             " years after the simulation start; every time must lie within 100 years of it");
}

// The schedule keys of a rule or a phase: schedule, start, for, count.
void read_schedule_part(const NodeRef& node, DosingRule& rule) {
  read_schedule(node.require("schedule", "e.g. schedule: [Mon 09:00, Thu 09:00], 'every 3.5 d' or {at: [9 h]}"), rule);
  if (const auto start = node.find("start")) rule.start = read_time_point(*start);
  read_repeat_bounds(node, rule);
  check_schedule_end(node, rule);
}

// phases: consecutive schedules of the same dose; phase k starts when phase k-1's `for` ends.
std::vector<DosingRule> read_phases(const NodeRef& node, const DosingRule& base, const ModelCard& card) {
  const auto items = node.items("the phases (a list of {schedule, for or count})");
  if (items.empty()) node.fail("phases lists no phases");
  std::vector<DosingRule> rules;
  Ticks start = base.start;
  for (std::size_t i = 0; i < items.size(); ++i) {
    const NodeRef& item = items[i];
    item.expect_map("a phase (a map with schedule and for, e.g. {schedule: [Mon 09:00, Thu 09:00], for: 3 weeks})");
    item.check_keys({"schedule", "for", "count", "dose", "max_dose"});
    DosingRule rule = base;
    rule.where = item.where;
    // A phase may change the amount (e.g. 56 mg then 84 mg); route and duration stay the rule's.
    if (const auto dose = item.find("dose")) {
      rule.dose = read_dose(*dose);
      if (rule.route == Route::intranasal && rule.drug == DoseDrug::model_drug)
        check_intranasal_devices(*dose, rule.dose, card);
    }
    if (const auto cap = item.find("max_dose")) rule.max_dose_mg = read_max_dose(*cap, rule.dose);
    rule.start = start;
    read_schedule(item.require("schedule", "e.g. schedule: [Mon 09:00, Thu 09:00] or 'every 2 weeks'"), rule);
    if (rule.schedule == ScheduleKind::explicit_times)
      item.fail("a phase repeats a weekly or interval schedule; list explicit times in a rule of their own");
    // Weekly slots are placed from the phase start: it must be a Monday 00:00 of the rule's weeks.
    if (rule.schedule == ScheduleKind::weekly && (start - base.start) % kTicksPerWeek != 0)
      item.fail("a phase with weekly slots must start at a whole week; the phases before it last " +
                format_hours(start - base.start) + " (give them 'for' in whole weeks)");
    read_repeat_bounds(item, rule);
    check_schedule_end(item, rule);
    const bool last = i + 1 == items.size();
    if (!last && !rule.repeat_for)
      item.fail("every phase but the last needs 'for' (e.g. for: 3 weeks): the next phase starts when it ends");
    if (rule.repeat_for) start += *rule.repeat_for;
    rules.push_back(std::move(rule));
  }
  return rules;
}

// Where the doses of a table rule go: for the card's drug, the compartment its route doses into
// (the card's IV entry; dosing tables give intravenous doses).
TableDoseTarget table_dose_target(const ModelCard& card, const DosingRule& rule) {
  TableDoseTarget target;
  target.route = rule.route;
  target.gives_drug = rule.drug == DoseDrug::model_drug;
  if (target.gives_drug) {
    const Model model(card);
    const int state = model.channel_state(model.iv_channel());
    target.compartment = compartment_number(state);
    target.compartment_name = model.state_names()[static_cast<std::size_t>(state)];
  }
  return target;
}

// doses_from: the path of a dosing table (relative to the scenario), or {file: PATH,
// ignore_columns: [NAMES]} to list columns the table has that ketasim does not read.
std::shared_ptr<const DosingTable> read_doses_from(const NodeRef& node, const ModelCard& card, const DosingRule& rule,
                                                   const std::string& scenario_dir) {
  const std::string expected = "the path of a NONMEM-style dosing table (CSV), relative to the scenario";
  std::string file;
  std::vector<std::string> ignored;
  if (node.is_map()) {
    node.check_keys({"file", "ignore_columns"});
    file = node.require("file", expected).scalar(expected);
    if (const auto list = node.find("ignore_columns"))
      for (const NodeRef& item : list->items("a list of column names, e.g. [WT, STUDY]"))
        ignored.push_back(item.scalar("a column name"));
  } else {
    file = node.scalar(expected + ", or {file: PATH, ignore_columns: [NAMES]}");
  }
  const fs::path path = fs::path(file).is_absolute() ? fs::path(file) : fs::path(scenario_dir) / file;
  try {
    return std::make_shared<const DosingTable>(
        read_dosing_table(path.string(), table_dose_target(card, rule), ignored));
  } catch (const Error& error) {  // unreadable or malformed: reported at the key that names it
    node.fail(error.what());
  }
}

// A dosing rule: what is given (route, drug, dose) and when: one schedule, consecutive phases, as
// needed, or per subject from a dosing table. Phases expand into one rule each.
std::vector<DosingRule> read_rule(const NodeRef& node, const ModelCard& card, const std::string& scenario_dir) {
  node.expect_map("a dosing rule (a map with route, dose, infusion_duration, schedule, ...)");
  node.check_keys({"route", "drug", "dose", "max_dose", "infusion_duration", "schedule", "start", "for", "count",
                   "phases", "as_needed", "doses_from"});
  DosingRule rule;
  rule.where = node.where;
  const std::vector<std::string> timings{"schedule", "phases", "as_needed", "doses_from"};
  std::vector<NodeRef> given;
  for (const std::string& key : timings)
    if (const auto found = node.find(key)) given.push_back(*found);
  if (given.empty())
    node.fail("a dosing rule needs one of schedule (e.g. [Mon 09:00, Thu 09:00]), phases, as_needed or doses_from");
  if (given.size() > 1)
    given[1].fail("a dosing rule takes one of schedule, phases, as_needed or doses_from; this one has several");
  const auto doses_from = node.find("doses_from");
  read_dose_part(node, card, rule, doses_from.has_value());
  if (node.find("schedule")) {
    read_schedule_part(node, rule);
    return {rule};
  }
  for (const char* key : {"for", "count"})
    if (const auto bound = node.find(key))
      bound->fail(std::string("'") + key + "' belongs to a schedule or to each of the phases; remove it here");
  if (const auto phases = node.find("phases")) {
    if (const auto start = node.find("start")) rule.start = read_time_point(*start);
    return read_phases(*phases, rule, card);
  }
  if (const auto start = node.find("start"))
    start->fail("an as-needed rule or a dosing table has no start; remove the key");
  if (const auto as_needed = node.find("as_needed")) {
    rule.schedule = ScheduleKind::as_needed;
    rule.as_needed = read_as_needed(*as_needed, card);
    return {rule};
  }
  rule.schedule = ScheduleKind::table;
  rule.table = read_doses_from(*doses_from, card, rule, scenario_dir);
  return {rule};
}

void check_arm_name(const NodeRef& node, const std::string& name) {
  if (name.empty()) node.fail("an arm name must not be empty");
  const bool safe = std::all_of(name.begin(), name.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-';
  });
  if (!safe) {
    node.fail("arm name " + in_quotes(name) +
              " may contain only letters, digits, '_' and '-' (it becomes an HDF5 group name)");
  }
}

// price_per_session: 600 (USD), or a range [400, 800].
void read_price(const NodeRef& node, Arm& arm) {
  const std::string expected = "a price per session in USD, e.g. 600, or a range [400, 800]";
  if (node.is_sequence()) {
    const auto items = node.items(expected);
    if (items.size() != 2)
      node.fail("expected two prices [low, high], found " + std::to_string(items.size()) + " values");
    arm.price_low_usd = items[0].as_number();
    arm.price_high_usd = items[1].as_number();
  } else {
    arm.price_low_usd = arm.price_high_usd = node.as_number();
  }
  if (!(arm.price_low_usd >= 0.0 && arm.price_high_usd >= arm.price_low_usd))
    node.fail("expected prices >= 0 with the low price first; found " + node.kind());
}

std::vector<Arm> read_arms(const NodeRef& node, const ModelCard& card, const std::string& scenario_dir) {
  const auto items = node.items("the arms (a list of {name, regimen})");
  if (items.empty()) node.fail("a scenario needs at least one arm");
  std::vector<Arm> arms;
  std::vector<std::string> name_paths;
  for (const auto& item : items) {
    item.expect_map("an arm (a map with name and regimen)");
    item.check_keys(
        {"name", "model", "regimen", "oral_antidepressant", "missed_session_probability", "price_per_session"});
    const NodeRef name_node = item.require("name", "e.g. name: twice_weekly");
    Arm arm;
    arm.name = name_node.scalar("an arm name");
    check_arm_name(name_node, arm.name);
    for (std::size_t i = 0; i < arms.size(); ++i) {
      if (arms[i].name == arm.name)
        name_node.fail("duplicate arm name " + in_quotes(arm.name) + " (also " + name_paths[i] + ")");
    }
    const NodeRef regimen = item.require("regimen", "a dosing rule, or a list of dosing rules");
    const ModelCard* arm_card = &card;
    if (const auto model = item.find("model")) {
      arm.model = read_model(*model);
      arm_card = find_builtin_model(arm.model->name);
    }
    std::vector<NodeRef> rules{regimen};
    if (regimen.is_sequence()) {
      rules = regimen.items("dosing rules");
      if (rules.empty()) regimen.fail("the regimen lists no dosing rules");
    }
    std::optional<NodeRef> as_needed;
    for (const auto& rule : rules) {
      for (DosingRule& read : read_rule(rule, *arm_card, scenario_dir)) arm.regimen.push_back(std::move(read));
      if (arm.regimen.back().as_needed) {
        if (as_needed) rule.fail("an arm has at most one as-needed rule (the other is at " + as_needed->path + ")");
        as_needed = rule;
      }
    }
    if (const auto background = item.find("oral_antidepressant")) arm.oral_antidepressant = background->as_boolean();
    if (const auto missed = item.find("missed_session_probability")) {
      arm.missed_session_probability = missed->as_percentage();
      if (!(arm.missed_session_probability >= 0.0 && arm.missed_session_probability < 1.0))
        missed->fail("expected a probability in [0%, 100%), found " + missed->kind());
    }
    if (const auto price = item.find("price_per_session")) read_price(*price, arm);
    name_paths.push_back(name_node.path);
    arms.push_back(std::move(arm));
  }
  return arms;
}

// ---------------------------------------------------------------------------------------------
// output and solver

void read_grid(const NodeRef& node, OutputSpec& output) {
  node.expect_map("a map {every: 5 min, for: 21 d}");
  node.check_keys({"every", "for"});
  const auto every = node.find("every");
  const auto end = node.find("for");
  if (every) output.grid_step = read_duration(*every);
  if (end) output.grid_end = read_duration(*end);
  const NodeRef& blame = end ? *end : every ? *every : node;
  if (output.grid_end < output.grid_step) {
    blame.fail("the grid ends (" + format_hours(output.grid_end) + ") before its first step (" +
               format_hours(output.grid_step) + ")");
  }
  if (output.grid_end / output.grid_step + 1 > kMaxGridPoints) {
    blame.fail("the grid has " + std::to_string(output.grid_end / output.grid_step + 1) + " points; at most " +
               std::to_string(kMaxGridPoints) + " are supported (use a coarser step)");
  }
}

// observations: {times: [...], variables: [{name, error: {proportional, additive}}]}
ObservationSpec read_observations(const NodeRef& node, const ModelCard& card, const OutputSpec& output) {
  node.expect_map("a map {times: [0.5 h, 2 h], variables: [{name: plasma_ketamine, error: {proportional: 20%}}]}");
  node.check_keys({"times", "variables"});
  ObservationSpec spec;
  const auto times = node.require("times", "sampling times from the simulation start, e.g. times: [9.67 h, 12 h, 33 h]")
                         .items("sampling times (e.g. [9.67 h, 12 h])");
  if (times.empty()) node.fail("observations lists no sampling times");
  for (std::size_t i = 0; i < times.size(); ++i) {
    const Ticks t = read_time_point(times[i]);
    if (i > 0 && t <= spec.times.back())
      times[i].fail("sampling times must be in ascending order without repeats: " + times[i].kind() + " follows " +
                    times[i - 1].kind());
    if (t > output.grid_end - output.grid_end % output.grid_step)
      times[i].fail("sampling time " + times[i].kind() + " lies after the end of the output grid (" +
                    format_hours(output.grid_end) + ")");
    spec.times.push_back(t);
  }
  const Model model(card);
  std::vector<std::string> names;
  for (const ModelOutput& known : model.outputs()) names.push_back(known.name);
  const auto variables =
      node.require("variables", "e.g. variables: [{name: plasma_ketamine, error: {proportional: 20%}}]")
          .items("observed variables");
  if (variables.empty()) node.fail("observations lists no variables");
  for (const NodeRef& item : variables) {
    item.expect_map("{name: plasma_ketamine, error: {proportional: 20%, additive: 1}}");
    item.check_keys({"name", "error"});
    ObservedVariable variable;
    const NodeRef name = item.require("name", "a model output, e.g. plasma_ketamine");
    variable.name = name.scalar("a model output");
    const ModelOutput* known = model.find_output(variable.name);
    if (!known)
      name.fail("model " + in_quotes(card.name) + " has no output " + in_quotes(variable.name) +
                yaml::did_you_mean(variable.name, names));
    for (const ObservedVariable& earlier : spec.variables)
      if (earlier.name == variable.name) name.fail(name.kind() + " is listed twice");
    if (const auto error = item.find("error")) {
      error->expect_map("{proportional: 20%, additive: 1} (additive in " +
                        (known->unit.empty() ? std::string("score points") : known->unit) + ")");
      error->check_keys({"proportional", "additive"});
      if (const auto proportional = error->find("proportional")) {
        variable.proportional = proportional->as_percentage();
        if (!(variable.proportional >= 0.0)) proportional->fail("a proportional error must not be negative");
      }
      if (const auto additive = error->find("additive")) {
        variable.additive = additive->as_number();
        check_sign(*additive, variable.additive, Sign::non_negative);
      }
    }
    spec.variables.push_back(variable);
  }
  return spec;
}

OutputSpec read_output(const NodeRef& node, const ModelCard& card) {
  node.expect_map(
      "a map of output settings (grid, variables, metrics, dissociation_threshold, assessments, "
      "response); remove the key for defaults");
  node.check_keys(
      {"grid", "variables", "metrics", "dissociation_threshold", "assessments", "response", "observations"});
  OutputSpec output;
  if (const auto grid = node.find("grid")) read_grid(*grid, output);
  if (const auto variables = node.find("variables")) {
    // An empty list writes no trajectories: metrics only, for very large cohorts.
    const Model model(card);
    std::vector<std::string> names;
    for (const ModelOutput& known : model.outputs()) names.push_back(known.name);
    std::vector<std::string> chosen;
    const auto items = variables->items("output variables (e.g. [plasma_" + card.drug + ", dissociation])");
    for (std::size_t i = 0; i < items.size(); ++i) {
      const std::string name = items[i].scalar("an output variable");
      if (!model.find_output(name)) {
        items[i].fail("model " + in_quotes(card.name) + " has no output " + in_quotes(name) +
                      yaml::did_you_mean(name, names) + "; expected " + yaml::join_alternatives(names));
      }
      const auto earlier = std::find(chosen.begin(), chosen.end(), name);
      if (earlier != chosen.end())
        items[i].fail(items[i].kind() + " is listed twice (also at " +
                      items[static_cast<std::size_t>(earlier - chosen.begin())].path + ")");
      chosen.push_back(name);
    }
    output.variables = chosen;
  }
  if (const auto metrics = node.find("metrics")) {
    output.metrics =
        read_unique_choices(*metrics,
                            std::array{Metric::cmax, Metric::auc, Metric::auc_per_week, Metric::peak_dissociation,
                                       Metric::time_above_dissociation, Metric::dissociation_burden, Metric::dosed,
                                       Metric::metabolites, Metric::response, Metric::mass_balance},
                            "per-subject metrics (e.g. [cmax, auc, peak_dissociation])", "metric");
  }
  if (const auto threshold = node.find("dissociation_threshold")) {
    output.dissociation_threshold = threshold->as_number();
    check_sign(*threshold, output.dissociation_threshold, Sign::non_negative);
  }
  if (const auto assessments = node.find("assessments")) {
    output.assessments.clear();
    const auto items = assessments->items("assessment times after the first session (e.g. [2 h, 1 d, 15 d])");
    for (std::size_t i = 0; i < items.size(); ++i) {
      const Ticks t = read_time_point(items[i]);
      if (i > 0 && t <= output.assessments.back())
        items[i].fail("assessment times must be in ascending order without repeats: " + items[i].kind() + " follows " +
                      items[i - 1].kind());
      output.assessments.push_back(t);
    }
  }
  if (const auto response = node.find("response")) {
    response->expect_map("{fraction: 50%, remission_at_or_below: 10}");
    response->check_keys({"fraction", "remission_at_or_below"});
    if (const auto fraction = response->find("fraction")) {
      output.response_fraction = fraction->as_percentage();
      if (!(output.response_fraction > 0.0 && output.response_fraction < 1.0))
        fraction->fail(fraction->kind() + " must lie strictly between 0% and 100%");
    }
    if (const auto remission = response->find("remission_at_or_below"))
      output.remission_threshold = read_score(*remission);
  }
  if (const auto observations = node.find("observations"))
    output.observations = read_observations(*observations, card, output);
  return output;
}

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

SolverSpec read_solver(const NodeRef& node) {
  node.expect_map("a map of solver settings (method, rtol, atol); remove the key for defaults");
  node.check_keys({"method", "rtol", "atol"});
  SolverSpec solver;
  if (const auto method = node.find("method")) {
    solver.method =
        read_choice(*method, std::array{SolverMethod::automatic, SolverMethod::exact, SolverMethod::ode}, "method");
  }
  if (const auto rtol = node.find("rtol")) {
    solver.rtol = rtol->as_number();
    if (!(solver.rtol >= kMinRelativeTolerance && solver.rtol <= kMaxRelativeTolerance)) {
      rtol->fail("expected a relative tolerance from " + yaml::format_number(kMinRelativeTolerance) +
                 " (about the most that doubles can deliver) to " + yaml::format_number(kMaxRelativeTolerance) +
                 ", found " + rtol->kind());
    }
  }
  if (const auto atol = node.find("atol")) {
    solver.atol = atol->as_number();
    if (!(solver.atol >= kMinAbsoluteTolerance)) {
      atol->fail("expected an absolute tolerance of at least " + yaml::format_number(kMinAbsoluteTolerance) +
                 " (in base units: mg for amounts), found " + atol->kind());
    }
  }
  return solver;
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
  scenario.model = read_model(root.require("model", "e.g. model: {name: ketamine_clements_2cmt}"));
  const ModelCard& card = *find_builtin_model(scenario.model.name);  // read_model checked it exists
  const std::string scenario_dir = std::filesystem::path(source_name).parent_path().string();
  scenario.cohort = read_cohort(root.require("cohort", "size, seed and weight of the simulated subjects"), card,
                                fs::path(source_name).parent_path());
  scenario.arms = read_arms(root.require("arms", "a list of arms, each {name, regimen}"), card, scenario_dir);
  if (const auto output = root.find("output")) scenario.output = read_output(*output, card);
  check_arm_models(root, scenario);
  check_model_choices(root, scenario);
  check_doses_per_subject(root, scenario);
  check_occasion_variability(root, scenario, card);
  if (const auto solver = root.find("solver")) scenario.solver = read_solver(*solver);
  return scenario;
}

Scenario load_scenario_file(const std::string& path) {
  return parse_scenario(read_text_file(path, "scenario file", kMaxYamlFileBytes), path);
}

}  // namespace ketasim
