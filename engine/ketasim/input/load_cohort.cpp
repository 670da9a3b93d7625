// The scenario's `cohort`: size and seed, covariates (fixed, distributed, or read from a CSV
// table) and their correlations, inter-individual and occasion variability.

#include <Eigen/Cholesky>
#include <algorithm>
#include <array>
#include <cmath>
#include <memory>

#include "ketasim/base/input_file.hpp"
#include "ketasim/input/covariate_table.hpp"
#include "ketasim/input/load_common.hpp"
#include "ketasim/model/model.hpp"
#include "ketasim/model/model_card.hpp"

namespace ketasim::loader {

namespace {

constexpr double kMaxCv = 5.0;  // 500%

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
  return read_quantity(node, QuantityKind::age, Sign::non_negative) / kHoursPerYear;
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

// correlation.parameters: the positions of the correlated parameters in variability.cv.
std::vector<std::size_t> read_correlated_parameters(const NodeRef& names_node, const Variability& variability) {
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
  return cv_index;
}

// The correlation block of `variability`; fills variability.correlation in cv order.
void read_correlation(const NodeRef& node, Variability& variability) {
  node.expect_map("a map {parameters: [V1, k10], matrix: [[1, 0.5], [0.5, 1]]}");
  node.check_keys({"parameters", "matrix"});
  const std::vector<std::size_t> cv_index = read_correlated_parameters(
      node.require("parameters", "the correlated parameters, e.g. parameters: [V1, k10]"), variability);
  const std::size_t n = cv_index.size();
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

// cohort.screening: true, or {madrs_at_least: 22, madrs_at_most: 52}
Screening read_screening(const NodeRef& node, const Cohort& cohort, const ModelCard& card) {
  require_depression(node, card, "measure a screening MADRS by");
  Screening screening;
  if (!node.is_map()) {
    if (!node.as_boolean())
      node.fail("screening: false is the default; remove the key, or give true or inclusion bounds");
    return screening;
  }
  node.check_keys({"madrs_at_least", "madrs_at_most"});
  if (const auto least = node.find("madrs_at_least")) screening.at_least = read_score(*least);
  if (const auto most = node.find("madrs_at_most")) {
    screening.at_most = read_score(*most);
    if (screening.at_least && *screening.at_most < *screening.at_least)
      most->fail("the inclusion bounds are empty: at most " + yaml::format_number(*screening.at_most) +
                 " but at least " + yaml::format_number(*screening.at_least));
  }
  if (!screening.at_least && !screening.at_most)
    node.fail("give madrs_at_least, madrs_at_most or both (or screening: true for no inclusion bounds)");
  // Screening again redraws the baseline from its own distribution: not from a table column, nor
  // jointly with weight and age.
  if (cohort.table && cohort.table->has_baseline_madrs())
    node.fail("inclusion bounds redraw the baseline MADRS of a subject screened out, but it comes from " +
              cohort.table->file + "; select the patients in the file instead");
  if (cohort.covariate_correlation.size() > 0)
    node.fail(
        "inclusion bounds redraw the baseline MADRS of a subject screened out, which cohort.correlations draws "
        "jointly with weight and age; bound the baseline with baseline_madrs: {min, max} instead");
  return screening;
}

}  // namespace

Cohort read_cohort(const NodeRef& node, const ModelCard& card, const fs::path& scenario_directory) {
  node.expect_map(
      "a map of cohort settings (size, seed, weight, age, female_fraction, baseline_madrs, variability, "
      "correlations, from_csv, replicates, occasion_variability)");
  node.check_keys({"size", "seed", "weight", "age", "female_fraction", "baseline_madrs", "variability", "correlations",
                   "from_csv", "replicates", "occasion_variability", "screening"});
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
  if (const auto screening = node.find("screening")) cohort.screening = read_screening(*screening, cohort, card);
  return cohort;
}

}  // namespace ketasim::loader
