#include "ketasim/analysis/reproduction.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <limits>

#include "ketasim/analysis/statistics.hpp"
#include "ketasim/base/errors.hpp"
#include "ketasim/base/format.hpp"
#include "ketasim/base/input_file.hpp"
#include "ketasim/base/quantiles.hpp"
#include "ketasim/base/yaml_reader.hpp"
#include "ketasim/input/scenario_loader.hpp"
#include "ketasim/model/model_card.hpp"
#include "ketasim/run/run.hpp"

namespace ketasim {

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

using yaml::in_quotes;
using yaml::NodeRef;

}  // namespace

const ArmResults& ScenarioResults::arm(const std::string& name) const {
  for (const ArmResults& candidate : arms)
    if (candidate.name == name) return candidate;
  std::string names;
  for (const ArmResults& candidate : arms) names += (names.empty() ? "" : ", ") + candidate.name;
  throw ModelParameterError("no arm '" + name + "' in the scenario (arms: " + names + ")");
}

namespace {

// An arm's results, sized for the cohort, NaN (trajectories 0) until its blocks are copied in.
ArmResults empty_results(const ArmLayout& layout, std::int64_t subjects) {
  const auto n = static_cast<std::size_t>(subjects);
  ArmResults arm;
  arm.name = layout.name;
  arm.subjects = subjects;
  arm.time_h = layout.time_h;
  arm.assessment_time_h = layout.assessment_time_h;
  for (const ColumnSpec& column : layout.metrics) {
    arm.metric_width[column.name] = column.width;
    arm.metrics[column.name].assign(n * column.width, kNaN);
  }
  for (const ColumnSpec& column : layout.subject_columns) {
    arm.subject_width[column.name] = column.width;
    arm.subject_columns[column.name].assign(n * column.width, kNaN);
  }
  for (const ColumnSpec& column : layout.trajectories)
    arm.trajectories[column.name].assign(n * layout.time_h.size(), 0.0f);
  arm.status.assign(n, 0);
  return arm;
}

}  // namespace

ScenarioResults run_in_memory(const Scenario& scenario, unsigned threads, std::int64_t block_size) {
  ScenarioResults results;
  std::vector<ArmLayout> layouts;  // the run's own (RunOptions::on_start), built once
  RunOptions options;
  options.threads = threads;
  options.block_size = block_size;
  options.on_start = [&](const std::vector<ArmLayout>& run_layouts) {
    layouts = run_layouts;
    for (const ArmLayout& layout : layouts) results.arms.push_back(empty_results(layout, scenario.cohort.size));
  };
  options.on_block = [&](const SubjectBlock& block) {
    ArmResults& arm = results.arms[block.arm];
    const ArmLayout& layout = layouts[block.arm];
    const auto first = static_cast<std::size_t>(block.first_subject);
    const auto rows = static_cast<std::size_t>(block.count);
    const auto copy_columns = [&](const auto& columns, const std::vector<std::vector<double>>& data,
                                  std::map<std::string, std::vector<double>>& into) {
      for (std::size_t c = 0; c < columns.size(); ++c) {
        const std::size_t width = columns[c].width;
        std::copy_n(data[c].begin(), rows * width,
                    into[columns[c].name].begin() + static_cast<std::ptrdiff_t>(first * width));
      }
    };
    copy_columns(layout.metrics, block.metrics, arm.metrics);
    copy_columns(layout.subject_columns, block.subject_columns, arm.subject_columns);
    const std::size_t points = layout.time_h.size();
    for (std::size_t v = 0; v < layout.trajectories.size(); ++v)
      std::copy_n(block.trajectories[v].begin(), rows * points,
                  arm.trajectories[layout.trajectories[v].name].begin() + static_cast<std::ptrdiff_t>(first * points));
    std::copy_n(block.status.begin(), rows, arm.status.begin() + static_cast<std::ptrdiff_t>(first));
  };
  run_scenario(scenario, options);
  return results;
}

namespace {

// The per-subject value of an operand (NaN for a failed subject or a missing value).
class OperandReader {
 public:
  OperandReader(const ArmResults& arm, const Operand& operand) : arm_(arm), operand_(operand) {
    if (operand.kind == Operand::Kind::metric) {
      const auto found = arm.metrics.find(operand.name);
      if (found == arm.metrics.end())
        throw ModelParameterError("the arm '" + arm.name + "' has no metric '" + operand.name + "'");
      values_ = &found->second;
      width_ = arm.metric_width.at(operand.name);
      if (operand.element >= width_)
        throw ModelParameterError("metric '" + operand.name + "' has " + std::to_string(width_) + " elements, not " +
                                  std::to_string(operand.element + 1));
    } else if (operand.kind == Operand::Kind::trajectory) {
      const auto found = arm.trajectories.find(operand.name);
      if (found == arm.trajectories.end())
        throw ModelParameterError("the arm '" + arm.name + "' has no trajectory '" + operand.name +
                                  "' (add it to output.variables)");
      trajectory_ = &found->second;
      const auto at = std::find_if(arm.time_h.begin(), arm.time_h.end(),
                                   [&](double t) { return std::abs(t - operand.at_h) < 1e-9; });
      if (at == arm.time_h.end())
        throw ModelParameterError("trajectory time " + yaml::format_number(operand.at_h) +
                                  " h is not on the output grid");
      column_ = static_cast<std::size_t>(at - arm.time_h.begin());
    }
  }

  double operator()(std::size_t subject) const {
    double value = operand_.constant;
    if (operand_.kind == Operand::Kind::metric) value = (*values_)[subject * width_ + operand_.element];
    if (operand_.kind == Operand::Kind::trajectory) value = (*trajectory_)[subject * arm_.time_h.size() + column_];
    return value * operand_.scale;
  }

 private:
  const ArmResults& arm_;
  const Operand& operand_;
  const std::vector<double>* values_ = nullptr;
  std::size_t width_ = 1;
  const std::vector<float>* trajectory_ = nullptr;
  std::size_t column_ = 0;
};

// The per-subject values of a statistic in one arm (filtered, failed subjects dropped).
struct Sample {
  std::vector<double> values;
  std::vector<bool> events;
};

Sample sample(const Statistic& statistic, const ArmResults& arm) {
  const OperandReader value(arm, statistic.value);
  std::optional<OperandReader> minus, divide_by, event, among;
  if (statistic.minus) minus.emplace(arm, *statistic.minus);
  if (statistic.divide_by) divide_by.emplace(arm, *statistic.divide_by);
  if (statistic.event) event.emplace(arm, *statistic.event);
  if (statistic.among) among.emplace(arm, *statistic.among);
  Sample sample;
  for (std::size_t i = 0; i < static_cast<std::size_t>(arm.subjects); ++i) {
    if (arm.status[i] != 0) continue;
    if (among && (*among)(i) != statistic.among_equals) continue;
    double x = value(i);
    if (minus) x -= (*minus)(i);
    if (divide_by) x /= (*divide_by)(i);
    if (!std::isfinite(x)) continue;
    sample.values.push_back(x);
    if (event) sample.events.push_back((*event)(i) == 1.0);
  }
  return sample;
}

double mean(const std::vector<double>& values) {
  if (values.empty()) return kNaN;
  double sum = 0.0;
  for (const double v : values) sum += v;
  return sum / static_cast<double>(values.size());
}

double arm_statistic(const Statistic& statistic, const ArmResults& arm) {
  const Sample s = sample(statistic, arm);
  switch (statistic.kind) {
    case Statistic::Kind::mean:
    case Statistic::Kind::fraction:
      return mean(s.values);
    case Statistic::Kind::median:
      return quantile(s.values, 0.5);
    case Statistic::Kind::km_median:
      return kaplan_meier(s.values, s.events).median;
    case Statistic::Kind::time_of_largest_effect:
      break;
  }
  return kNaN;
}

}  // namespace

double evaluate(const Statistic& statistic, const ScenarioResults& results) {
  const ArmResults& arm = results.arm(statistic.arm);
  if (statistic.kind == Statistic::Kind::time_of_largest_effect) {
    const ArmResults& versus = results.arm(statistic.versus.value_or(statistic.arm));
    double best = std::numeric_limits<double>::infinity();
    double best_time = kNaN;
    for (std::size_t k = 0; k < arm.assessment_time_h.size(); ++k) {
      Statistic at = statistic;
      at.kind = Statistic::Kind::mean;
      at.value = Operand{Operand::Kind::metric, statistic.metric_over_assessments, k};
      at.minus = Operand{Operand::Kind::metric, "madrs_baseline"};
      const double effect = arm_statistic(at, arm) - arm_statistic(at, versus);
      if (effect < best) {
        best = effect;
        best_time = arm.assessment_time_h[k] / kHoursPerDay;
      }
    }
    return best_time;
  }
  double value = arm_statistic(statistic, arm);
  if (statistic.versus) value -= arm_statistic(statistic, results.arm(*statistic.versus));
  return value;
}

bool Tolerance::accepts(double expected, double value) const {
  if (!std::isfinite(value)) return false;
  if (range) return value >= range->first && value <= range->second;
  return std::abs(value - expected) <= scale(expected) + 1e-12;
}

double Tolerance::scale(double expected) const {
  if (range) return 0.5 * (range->second - range->first);
  if (absolute) return *absolute;
  if (relative) return *relative * std::abs(expected);
  return 0.0;
}

std::string Tolerance::describe(double expected) const {
  char text[96];
  if (range)
    std::snprintf(text, sizeof text, "[%g, %g]", range->first, range->second);
  else if (absolute)
    std::snprintf(text, sizeof text, "%g +- %g", expected, *absolute);
  else
    std::snprintf(text, sizeof text, "%g +- %g%%", expected, *relative * 100.0);
  return text;
}

namespace {

// `equals`, when given, also reads the value the operand must equal (a filter).
Operand read_operand(const NodeRef& node, double* equals = nullptr) {
  node.expect_map("a per-subject value: {metric: NAME, element: K}, {trajectory: NAME, at: 9.67 h} or {constant: X}");
  if (equals) {
    node.check_keys({"metric", "element", "trajectory", "at", "constant", "scale", "equals"});
    *equals = node.require("equals", "the value kept, e.g. equals: 1").as_number();
  } else {
    node.check_keys({"metric", "element", "trajectory", "at", "constant", "scale"});
  }
  Operand operand;
  if (const auto metric = node.find("metric")) {
    operand.kind = Operand::Kind::metric;
    operand.name = metric->as_string();
    if (const auto element = node.find("element"))
      operand.element = static_cast<std::size_t>(element->as_integer(0, 1'000'000));
  } else if (const auto trajectory = node.find("trajectory")) {
    operand.kind = Operand::Kind::trajectory;
    operand.name = trajectory->as_string();
    operand.at_h = node.require("at", "the grid time, e.g. at: 9.67 h").as_quantity(dim::time).value;
  } else if (const auto constant = node.find("constant")) {
    operand.constant = constant->as_number();
  } else {
    node.fail("give metric, trajectory or constant");
  }
  if (const auto scale = node.find("scale")) operand.scale = scale->as_number();
  return operand;
}

Statistic read_statistic(const NodeRef& node) {
  node.expect_map("a statistic {kind, arm, value, ...}");
  node.check_keys({"kind", "arm", "value", "minus", "divide_by", "event", "among", "versus", "metric"});
  Statistic statistic;
  const NodeRef kind = node.require("kind", "mean, median, fraction, km_median or time_of_largest_effect");
  const std::string name = kind.as_string();
  const std::vector<std::string> kinds{"mean", "median", "fraction", "km_median", "time_of_largest_effect"};
  const auto found = std::find(kinds.begin(), kinds.end(), name);
  if (found == kinds.end())
    kind.fail("unknown statistic " + in_quotes(name) + yaml::did_you_mean(name, kinds) + "; expected " +
              yaml::join_alternatives(kinds));
  statistic.kind = static_cast<Statistic::Kind>(found - kinds.begin());
  statistic.arm = node.require("arm", "the arm it is computed in").as_string();
  if (statistic.kind == Statistic::Kind::time_of_largest_effect) {
    statistic.metric_over_assessments = node.require("metric", "a per-assessment metric, e.g. madrs_at").as_string();
    statistic.versus = node.require("versus", "the comparator arm").as_string();
    return statistic;
  }
  statistic.value = read_operand(node.require("value", "the per-subject value"));
  if (const auto minus = node.find("minus")) statistic.minus = read_operand(*minus);
  if (const auto divide_by = node.find("divide_by")) statistic.divide_by = read_operand(*divide_by);
  if (const auto event = node.find("event")) statistic.event = read_operand(*event);
  if (statistic.kind == Statistic::Kind::km_median && !statistic.event)
    node.require("event", "the event flag (1 event, 0 censored)");
  if (const auto among = node.find("among")) statistic.among = read_operand(*among, &statistic.among_equals);
  if (const auto versus = node.find("versus")) statistic.versus = versus->as_string();
  return statistic;
}

Tolerance read_tolerance(const NodeRef& node) {
  node.expect_map("{absolute: 5.5, why: ...}, {relative: 10%, why: ...} or {range: [a, b], why: ...}");
  node.check_keys({"absolute", "relative", "range", "why"});
  Tolerance tolerance;
  int forms = 0;
  for (const char* key : {"absolute", "relative", "range"}) forms += node.find(key) ? 1 : 0;
  if (forms > 1) node.fail("give one of absolute, relative or range, not several");
  if (const auto absolute = node.find("absolute")) {
    tolerance.absolute = absolute->as_number();
    if (!(*tolerance.absolute >= 0.0)) absolute->fail("a tolerance must not be negative");
  } else if (const auto relative = node.find("relative")) {
    tolerance.relative = relative->as_percentage();
    if (!(*tolerance.relative >= 0.0)) relative->fail("a tolerance must not be negative");
  } else if (const auto range = node.find("range")) {
    const auto bounds = range->items("[low, high]");
    if (bounds.size() != 2) range->fail("expected [low, high]");
    tolerance.range = std::pair(bounds[0].as_number(), bounds[1].as_number());
    if (!(tolerance.range->first <= tolerance.range->second)) range->fail("low must not exceed high");
  } else {
    node.fail("give absolute, relative or range");
  }
  tolerance.why = node.require("why", "where the tolerance comes from (e.g. the published 95% CI)").as_string();
  return tolerance;
}

}  // namespace

ReproductionTarget load_target(const std::string& path) {
  const std::string text = read_text_file(path, "reproduction target", kMaxYamlFileBytes);
  const NodeRef root = yaml::load_document(text, path);
  root.expect_map("a reproduction target (target, title, source, scenario, statistic, expected, tolerance)");
  root.check_keys({"target", "title", "source", "study", "evidence", "fitted_by", "scenario", "statistic", "expected",
                   "tolerance", "known_miss"});
  ReproductionTarget target;
  target.file = path;
  target.name = root.require("target", "a name").as_string();
  target.title = root.require("title", "what is compared").as_string();
  target.source = root.require("source", "the publication").as_string();
  target.study = root.require("study", "the study the figure comes from, e.g. \"Murrough 2013\"").as_string();
  const NodeRef evidence = root.require("evidence", "verified or recalled");
  if (evidence.as_string() == "verified")
    target.evidence = Evidence::verified;
  else if (evidence.as_string() == "recalled")
    target.evidence = Evidence::recalled;
  else
    evidence.fail(
        "expected verified (read in the publication or its abstract) or recalled (from a secondary "
        "text or memory), not " +
        in_quotes(evidence.as_string()));
  if (const auto fitted = root.find("fitted_by")) target.fitted_by = fitted->as_string();
  const NodeRef scenario = root.require("scenario", "the scenario file, relative to this one");
  target.scenario_file = (std::filesystem::path(path).parent_path() / scenario.as_string()).string();
  target.statistic = read_statistic(root.require("statistic", "what is computed from the simulated cohort"));
  target.expected = root.require("expected", "the published value").as_number();
  target.tolerance = read_tolerance(root.require("tolerance", "how close the simulation must be"));
  if (const auto miss = root.find("known_miss")) target.known_miss = miss->as_string();
  return target;
}

std::vector<std::string> suite_files(const std::filesystem::path& folder) {
  std::vector<std::string> files;
  for (const auto& entry : std::filesystem::directory_iterator(folder))
    if (entry.is_regular_file() && entry.path().extension() == ".yaml") files.push_back(entry.path().string());
  std::sort(files.begin(), files.end());
  return files;
}

std::vector<ReproductionTarget> load_suite(const std::filesystem::path& folder) {
  std::vector<ReproductionTarget> targets;
  for (const std::string& file : suite_files(folder)) targets.push_back(load_target(file));
  return targets;
}

std::vector<TargetOutcome> evaluate_targets(const std::vector<ReproductionTarget>& targets,
                                            const EvaluationOptions& options) {
  std::map<std::string, ScenarioResults> runs;  // one run per distinct scenario file
  std::vector<TargetOutcome> outcomes;
  for (const ReproductionTarget& target : targets) {
    auto run = runs.find(target.scenario_file);
    if (run == runs.end()) {
      Scenario scenario = load_scenario_file(target.scenario_file);
      if (options.seed) scenario.cohort.seed = *options.seed;
      if (options.subjects) scenario.cohort.set_subjects_per_replicate(*options.subjects);
      const ModelCard& card = *find_builtin_model(scenario.model.name);
      for (const ParameterOverride& override_value : options.overrides) {
        if (card.index_of(override_value.name) < 0) continue;  // not a parameter of this scenario's model
        std::erase_if(scenario.model.overrides,
                      [&](const ParameterOverride& o) { return o.name == override_value.name; });
        scenario.model.overrides.push_back(override_value);
      }
      for (const auto& [name, magnitude] : options.iiv_overrides) {
        const int index = card.index_of(name);
        if (index < 0) continue;
        const IivKind card_kind = card.parameters[static_cast<std::size_t>(index)].iiv.kind;
        const IivKind kind = card_kind == IivKind::none ? IivKind::log_normal : card_kind;
        Variability& variability = scenario.cohort.variability;
        variability.kinds.resize(variability.parameters.size(), IivKind::log_normal);
        const auto at = std::find(variability.parameters.begin(), variability.parameters.end(), name);
        if (at != variability.parameters.end()) {
          const auto i = static_cast<std::size_t>(at - variability.parameters.begin());
          variability.cv[i] = magnitude;
          variability.kinds[i] = kind;
          continue;
        }
        // Appended uncorrelated: the correlation matrix grows by an identity row and column.
        const auto n = static_cast<Eigen::Index>(variability.parameters.size());
        Eigen::MatrixXd correlation = Eigen::MatrixXd::Identity(n + 1, n + 1);
        if (variability.correlation.rows() == n) correlation.topLeftCorner(n, n) = variability.correlation;
        variability.correlation = correlation;
        variability.parameters.push_back(name);
        variability.cv.push_back(magnitude);
        variability.kinds.push_back(kind);
      }
      run = runs.emplace(target.scenario_file, run_in_memory(scenario, options.threads)).first;
    }
    TargetOutcome outcome;
    outcome.target = &target;
    outcome.simulated = evaluate(target.statistic, run->second);
    outcome.passed = target.tolerance.accepts(target.expected, outcome.simulated);
    outcomes.push_back(outcome);
  }
  return outcomes;
}

std::string TargetOutcome::verdict() const {
  if (passed) return target->known_miss.empty() ? "pass" : "pass (marked known miss)";
  return target->known_miss.empty() ? "FAIL" : "known miss";
}

namespace {

// One table of outcomes, with its pass count.
std::string outcome_table(const std::vector<const TargetOutcome*>& outcomes) {
  std::string text =
      "| target | what | source | evidence | published | tolerance | simulated | result |\n"
      "|---|---|---|---|---|---|---|---|\n";
  std::size_t passed = 0;
  for (const TargetOutcome* outcome : outcomes) {
    const ReproductionTarget& target = *outcome->target;
    text += "| `" + target.name + "` | " + target.title + " | " + target.source + " | " +
            (target.evidence == Evidence::verified ? "VERIFIED" : "RECALLED") + " | " +
            format_significant(target.expected) + " | " + target.tolerance.describe(target.expected) + " (" +
            target.tolerance.why + ") | " + format_significant(outcome->simulated, 4) + " | " +
            (outcome->failed() ? "**FAIL**" : outcome->verdict()) + " |\n";
    passed += outcome->passed ? 1 : 0;
  }
  return text + "\n" + std::to_string(passed) + " of " + std::to_string(outcomes.size()) + " pass.\n";
}

}  // namespace

std::string validation_markdown(const std::vector<TargetOutcome>& outcomes, const std::string& command) {
  std::string text =
      "# Validation: published results reproduced\n\n"
      "Written by `" +
      command +
      "`; do not edit by hand. Each row is a target file in\n"
      "[benchmarks/reproduction/](../benchmarks/reproduction/): a scenario, a statistic of its simulated\n"
      "cohort, the published value and the tolerance it must meet. `ctest -L reproduction` runs the same\n"
      "checks. Evidence: VERIFIED, the figure was read in the publication or its abstract; RECALLED, it\n"
      "comes from a secondary text or from memory and still needs checking in the source.\n";
  std::vector<const TargetOutcome*> fitted;
  std::vector<const TargetOutcome*> held_out;
  for (const TargetOutcome& outcome : outcomes)
    (outcome.target->fitted_by.empty() ? held_out : fitted).push_back(&outcome);
  if (!fitted.empty())
    text +=
        "\n## Calibration targets\n\n"
        "Fitted (models/calibration/): the calibration chose the model's parameters to meet these. They are\n"
        "checked here on cohorts drawn with each target's own seed, not the calibration's, so they show\n"
        "the fit, not the model's ability to predict.\n\n" +
        outcome_table(fitted);
  if (!held_out.empty())
    text +=
        "\n## Validation targets\n\n"
        "No fit saw these: whole studies left out of the calibration (a calibration refuses to fit part of\n"
        "a study). They are the test of the model.\n\n" +
        outcome_table(held_out);
  std::string misses;
  for (const TargetOutcome& outcome : outcomes)
    if (!outcome.passed && !outcome.target->known_miss.empty())
      misses += "- `" + outcome.target->name + "`: " + outcome.target->known_miss + "\n";
  if (!misses.empty()) text += "\nKnown misses (published results the model does not reproduce, and why):\n\n" + misses;
  return text;
}

}  // namespace ketasim
