#include "ketasim/analysis/calibration.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <nlopt.hpp>

#include "ketasim/base/errors.hpp"
#include "ketasim/base/format.hpp"
#include "ketasim/base/input_file.hpp"
#include "ketasim/base/yaml_reader.hpp"
#include "ketasim/input/scenario_loader.hpp"
#include "ketasim/model/model_card.hpp"

namespace ketasim {

namespace {

using yaml::in_quotes;
using yaml::NodeRef;

constexpr double kFailedTargetPenalty = 1e6;  // a target whose statistic is NaN (e.g. nobody responded)

bool is_iiv(const std::string& name) {
  return name.size() > 4 && name.ends_with(".iiv");
}

// A value in the parameter's display unit, and back.
double to_display(const ModelCard& card, const CalibratedParameter& parameter, double base) {
  if (is_iiv(parameter.name)) return base;
  return to_display_unit(card.parameters[static_cast<std::size_t>(card.index_of(parameter.name))], base);
}

// The fitted targets and the rest of the suite. The split is by whole studies: a study with a
// fitted target has every target fitted, so that the validation set holds only studies the fit
// never saw; each fitted target says which calibration fits it (`fitted_by`), so that the suite's
// validation table can tell them apart. Another calibration's targets are neither fitted nor
// validation here.
void read_targets(const NodeRef& root, CalibrationSpec& spec) {
  const std::filesystem::path folder = std::filesystem::path(spec.file).parent_path();
  const NodeRef list = root.require("targets", "reproduction target files, relative to this file");
  std::vector<std::string> fitted_files;
  for (const NodeRef& target : list.items("target files")) {
    spec.targets.push_back(load_target((folder / target.as_string()).string()));
    if (spec.targets.back().fitted_by != spec.name)
      target.fail("target " + in_quotes(spec.targets.back().name) + " is fitted here but its file does not say " +
                  "`fitted_by: " + spec.name + "`");
    fitted_files.push_back(std::filesystem::weakly_canonical(spec.targets.back().file).string());
  }
  if (spec.targets.empty()) root.fail("a calibration needs at least one target");
  const NodeRef suite = root.require("suite", "the folder of the whole reproduction suite, relative to this file");
  std::error_code error;
  if (!std::filesystem::is_directory(folder / suite.as_string(), error)) suite.fail("not a folder");
  for (ReproductionTarget& target : load_suite(folder / suite.as_string())) {
    const bool listed = std::find(fitted_files.begin(), fitted_files.end(),
                                  std::filesystem::weakly_canonical(target.file).string()) != fitted_files.end();
    if (listed) continue;
    if (target.fitted_by == spec.name)
      list.fail("target " + in_quotes(target.name) + " (" + target.file + ") says `fitted_by: " + spec.name +
                "` but is not listed here");
    if (!target.fitted_by.empty()) continue;  // another calibration's (e.g. another card's) target
    for (const ReproductionTarget& fitted : spec.targets)
      if (fitted.study == target.study)
        list.fail("study " + in_quotes(target.study) + " is split: " + in_quotes(fitted.name) + " is fitted but " +
                  in_quotes(target.name) + " is not; fit a study whole or leave it out whole");
    spec.validation.push_back(std::move(target));
  }
}

}  // namespace

CalibrationSpec load_calibration(const std::string& path) {
  const std::string text = read_text_file(path, "calibration spec", kMaxYamlFileBytes);
  const NodeRef root = yaml::load_document(text, path);
  root.expect_map("a calibration spec (calibration, model, seed, subjects, parameters, suite, targets)");
  root.check_keys({"calibration", "description", "model", "seed", "subjects", "algorithm", "max_evaluations",
                   "relative_tolerance", "parameters", "suite", "targets"});
  CalibrationSpec spec;
  spec.file = path;
  spec.name = root.require("calibration", "its name").as_string();
  if (const auto description = root.find("description")) spec.description = description->as_string();
  const NodeRef model = root.require("model", "the card whose parameters are fitted");
  spec.model = model.as_string();
  const ModelCard* card = find_builtin_model(spec.model);
  if (!card) model.fail("unknown model " + model.kind());
  spec.seed = root.require("seed", "the seed of the calibration cohorts").as_unsigned();
  spec.subjects = root.require("subjects", "subjects per arm in every target scenario").as_integer(1, 1'000'000);
  if (const auto algorithm = root.find("algorithm")) {
    spec.algorithm = algorithm->as_string();
    if (spec.algorithm != "bobyqa" && spec.algorithm != "sbplx" && spec.algorithm != "neldermead")
      algorithm->fail("unknown algorithm " + algorithm->kind() + "; expected bobyqa, sbplx or neldermead");
  }
  if (const auto evaluations = root.find("max_evaluations"))
    spec.max_evaluations = static_cast<int>(evaluations->as_integer(1, 100000));
  if (const auto tolerance = root.find("relative_tolerance")) spec.relative_tolerance = tolerance->as_number();

  const NodeRef parameters = root.require("parameters", "the parameters to fit, each {start, min, max}");
  parameters.expect_map("a map of parameters to fit");
  for (const yaml::MapEntry& entry : parameters.entries()) {
    const NodeRef& node = entry.value;
    node.expect_map("{start: 4 d, min: 1 d, max: 20 d}");
    node.check_keys({"start", "min", "max"});
    CalibratedParameter parameter;
    parameter.name = entry.key;
    const std::string base_name = is_iiv(entry.key) ? entry.key.substr(0, entry.key.size() - 4) : entry.key;
    const int index = card->index_of(base_name);
    if (index < 0)
      throw ScenarioError(entry.key_where, node.path,
                          "model " + in_quotes(spec.model) + " has no parameter " + in_quotes(base_name));
    const ParameterSpec& known = card->parameters[static_cast<std::size_t>(index)];
    const Dimension dimension = is_iiv(entry.key) ? dim::dimensionless : known.dimension;
    parameter.unit = is_iiv(entry.key) ? "" : known.unit;
    const auto read = [&](const char* key) {
      const NodeRef value = node.require(key, "a positive value");
      const double v = value.as_quantity(dimension).value;
      if (!(v > 0.0)) value.fail("calibrated values are searched on a log scale: must be greater than 0");
      return v;
    };
    parameter.start = read("start");
    parameter.lower = read("min");
    parameter.upper = read("max");
    if (!(parameter.lower < parameter.upper) || parameter.start < parameter.lower || parameter.start > parameter.upper)
      node.fail("expected min < max and start within [min, max]");
    spec.parameters.push_back(parameter);
  }
  read_targets(root, spec);
  return spec;
}

namespace {

EvaluationOptions options_for(const CalibrationSpec& spec, const std::vector<double>& values, unsigned threads) {
  EvaluationOptions options;
  options.seed = spec.seed;
  options.subjects = spec.subjects;
  options.threads = threads;
  for (std::size_t i = 0; i < spec.parameters.size(); ++i) {
    const std::string& name = spec.parameters[i].name;
    if (is_iiv(name))
      options.iiv_overrides.emplace_back(name.substr(0, name.size() - 4), values[i]);
    else
      options.overrides.push_back({name, values[i]});
  }
  return options;
}

// A target's residual in tolerance units; NaN when its statistic could not be computed.
double residual(const TargetOutcome& outcome) {
  const ReproductionTarget& target = *outcome.target;
  if (!std::isfinite(outcome.simulated)) return std::numeric_limits<double>::quiet_NaN();
  if (const auto& range = target.tolerance.range) {
    // A range is a constraint: no cost inside it; outside, the distance in tenths of its width
    // (being outside by a tenth of the range costs as much as a point target off by its tolerance).
    const double unit = std::max(0.1 * (range->second - range->first), 1e-9 * (1.0 + std::abs(target.expected)));
    if (outcome.simulated < range->first) return (range->first - outcome.simulated) / unit;
    if (outcome.simulated > range->second) return (outcome.simulated - range->second) / unit;
    return 0.0;
  }
  return (outcome.simulated - target.expected) / target.tolerance.scale(target.expected);
}

double objective_of(const std::vector<TargetOutcome>& outcomes) {
  double sum = 0.0;
  for (const TargetOutcome& outcome : outcomes) {
    const double z = residual(outcome);
    sum += std::isnan(z) ? kFailedTargetPenalty : z * z;
  }
  return sum;
}

}  // namespace

CalibrationResult calibrate(const CalibrationSpec& spec, unsigned threads,
                            const std::function<void(int, double)>& on_evaluation) {
  const std::size_t n = spec.parameters.size();
  CalibrationResult result;
  std::vector<double> start(n), lower(n), upper(n), x(n);
  for (std::size_t i = 0; i < n; ++i) {
    start[i] = spec.parameters[i].start;
    lower[i] = std::log(spec.parameters[i].lower);
    upper[i] = std::log(spec.parameters[i].upper);
    x[i] = std::log(start[i]);
  }
  result.start_objective = evaluate_fit(spec, start, threads).objective;

  const nlopt::algorithm algorithm = spec.algorithm == "sbplx"        ? nlopt::LN_SBPLX
                                     : spec.algorithm == "neldermead" ? nlopt::LN_NELDERMEAD
                                                                      : nlopt::LN_BOBYQA;
  nlopt::opt optimiser(algorithm, static_cast<unsigned>(n));
  optimiser.set_lower_bounds(lower);
  optimiser.set_upper_bounds(upper);
  optimiser.set_maxeval(spec.max_evaluations);
  optimiser.set_xtol_abs(spec.relative_tolerance);  // on log values: a relative change of the parameter
  std::vector<double> step(n);
  for (std::size_t i = 0; i < n; ++i) step[i] = std::min(0.5, 0.25 * (upper[i] - lower[i]));
  optimiser.set_initial_step(step);

  struct Context {
    const CalibrationSpec* spec;
    unsigned threads;
    const std::function<void(int, double)>* on_evaluation;
    int evaluations = 0;
  };
  Context context{&spec, threads, &on_evaluation};
  const auto objective = [](const std::vector<double>& log_values, std::vector<double>& gradient,
                            void* data) -> double {
    (void)gradient;  // derivative-free algorithms only
    auto& ctx = *static_cast<Context*>(data);
    std::vector<double> values(log_values.size());
    for (std::size_t i = 0; i < values.size(); ++i) values[i] = std::exp(log_values[i]);
    const double value = evaluate_fit(*ctx.spec, values, ctx.threads).objective;
    ++ctx.evaluations;
    if (*ctx.on_evaluation) (*ctx.on_evaluation)(ctx.evaluations, value);
    return value;
  };
  optimiser.set_min_objective(objective, &context);
  double minimum = std::numeric_limits<double>::infinity();
  try {
    const nlopt::result status = optimiser.optimize(x, minimum);
    switch (status) {
      case nlopt::MAXEVAL_REACHED:
        result.stop_reason = "the evaluation limit was reached";
        break;
      case nlopt::XTOL_REACHED:
        result.stop_reason = "the parameters converged (xtol)";
        break;
      case nlopt::FTOL_REACHED:
        result.stop_reason = "the objective converged (ftol)";
        break;
      default:
        result.stop_reason = "NLopt status " + std::to_string(static_cast<int>(status));
        break;
    }
  } catch (const nlopt::roundoff_limited&) {
    result.stop_reason = "round-off limited (the best point found is kept)";
    minimum = optimiser.last_optimum_value();
  } catch (const std::exception& error) {
    throw SolverError(std::string("the calibration optimiser failed: ") + error.what());
  }
  result.fitted.resize(n);
  for (std::size_t i = 0; i < n; ++i) result.fitted[i] = std::exp(x[i]);
  result.evaluations = context.evaluations;
  FitEvaluation at_fit = evaluate_fit(spec, result.fitted, threads);
  result.outcomes = std::move(at_fit.outcomes);
  result.objective = at_fit.objective;
  return result;
}

std::string fit_yaml(const CalibrationSpec& spec, const CalibrationResult& result, const std::string& command) {
  const ModelCard& card = *find_builtin_model(spec.model);
  std::string text =
      "# Fitted by `" + command + "` (" + spec.file +
      "): do not edit by hand.\n# The model cards that include the calibrated module use these values; the report is " +
      spec.name + ".report.md.\ncalibration: " + spec.name +
      "\nobjective: " + format_significant(result.objective, 17) +
      "\nevaluations: " + std::to_string(result.evaluations) + "\nfitted:\n";
  for (std::size_t i = 0; i < spec.parameters.size(); ++i) {
    const CalibratedParameter& parameter = spec.parameters[i];
    text += "  " + parameter.name + ": " + format_significant(to_display(card, parameter, result.fitted[i]), 17) +
            (parameter.unit.empty() ? "" : " " + parameter.unit) + "\n";
  }
  return text;
}

std::string calibration_report(const CalibrationSpec& spec, const CalibrationResult& result,
                               const std::string& command) {
  const ModelCard& card = *find_builtin_model(spec.model);
  std::string text =
      "# Calibration `" + spec.name + "`\n\nWritten by `" + command + "`; do not edit by hand.\n\n" + spec.description +
      "\n\n" + "Cohorts: " + std::to_string(spec.subjects) + " subjects per arm, seed " + std::to_string(spec.seed) +
      " (not the targets' own seeds). Optimiser: NLopt " + spec.algorithm + " on log-scaled parameters, " +
      std::to_string(result.evaluations) + " evaluations; " + result.stop_reason +
      ". Objective (sum of squared residuals in tolerance units): " + format_significant(result.start_objective, 4) +
      " at the start, " + format_significant(result.objective, 4) + " fitted.\n\n" +
      "| parameter | start | min | max | fitted | unit |\n|---|---|---|---|---|---|\n";
  for (std::size_t i = 0; i < spec.parameters.size(); ++i) {
    const CalibratedParameter& p = spec.parameters[i];
    text += "| `" + p.name + "` | " + format_significant(to_display(card, p, p.start), 4) + " | " +
            format_significant(to_display(card, p, p.lower), 4) + " | " +
            format_significant(to_display(card, p, p.upper), 4) + " | " +
            format_significant(to_display(card, p, result.fitted[i]), 4) + " | " +
            (p.unit.empty() ? (is_iiv(p.name) ? "CV or SD" : "") : p.unit) + " |\n";
  }
  text +=
      "\n| target | published | tolerance | simulated (calibration cohorts) | residual / tolerance "
      "|\n|---|---|---|---|---|\n";
  for (const TargetOutcome& outcome : result.outcomes) {
    const ReproductionTarget& target = *outcome.target;
    text += "| `" + target.name + "` | " + format_significant(target.expected, 4) + " | " +
            target.tolerance.describe(target.expected) + " | " + format_significant(outcome.simulated, 4) + " | " +
            format_significant(residual(outcome), 4) + " |\n";
  }
  return text;
}

std::vector<std::pair<std::string, double>> read_fit_values(const std::string& fit_yaml_text,
                                                            const CalibrationSpec& spec,
                                                            const std::string& source_name) {
  const ModelCard& card = *find_builtin_model(spec.model);
  const NodeRef root = yaml::load_document(fit_yaml_text, source_name);
  std::vector<std::pair<std::string, double>> values;
  for (const yaml::MapEntry& entry : root.require("fitted", "the fitted values").entries()) {
    const std::string base = is_iiv(entry.key) ? entry.key.substr(0, entry.key.size() - 4) : entry.key;
    const int index = card.index_of(base);
    if (index < 0) throw ScenarioError(entry.key_where, entry.value.path, "unknown parameter " + in_quotes(base));
    const Dimension dimension =
        is_iiv(entry.key) ? dim::dimensionless : card.parameters[static_cast<std::size_t>(index)].dimension;
    values.emplace_back(entry.key, entry.value.as_quantity(dimension).value);
  }
  return values;
}

double read_fit_objective(const std::string& fit_yaml_text, const std::string& source_name) {
  const NodeRef root = yaml::load_document(fit_yaml_text, source_name);
  return root.require("objective", "the objective at the fitted values").as_number();
}

FitEvaluation evaluate_fit(const CalibrationSpec& spec, const std::vector<double>& values, unsigned threads) {
  FitEvaluation evaluation;
  evaluation.outcomes = evaluate_targets(spec.targets, options_for(spec, values, threads));
  evaluation.objective = objective_of(evaluation.outcomes);
  return evaluation;
}

}  // namespace ketasim
