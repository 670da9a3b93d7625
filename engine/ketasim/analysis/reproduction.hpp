#pragma once
// Published results as checks: a target names a scenario, a statistic of its simulated cohort,
// the published value, a tolerance and the source. `ketasim reproduce` evaluates targets (one
// ctest each, label "reproduction") and writes docs/validation.md; `ketasim calibrate` fits model
// parameters to a set of them.
//
// Target file (benchmarks/reproduction/NAME.yaml, docs/reproduction.md):
//   target: singh2016_twice_weekly_day15
//   title: ...
//   source: Singh JB et al. Am J Psychiatry 2016;173:816
//   scenario: singh2016.yaml           # relative to the target file
//   statistic: {kind: mean, arm: ketamine_2x, value: {metric: madrs_observed_at, element: 0},
//               minus: {metric: madrs_baseline}}
//   expected: -18.4
//   tolerance: {absolute: 5.5, why: 95% CI of the published mean (SD 12.0, n 18)}

#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "ketasim/input/scenario.hpp"

namespace ketasim {

// A cohort's results held in memory, by arm: every metric column and requested trajectory.
struct ArmResults {
  std::string name;
  std::int64_t subjects = 0;
  std::vector<double> time_h;
  std::vector<double> assessment_time_h;
  std::map<std::string, std::size_t> metric_width;
  std::map<std::string, std::vector<double>> metrics;      // [subject * width + j]
  std::map<std::string, std::vector<float>> trajectories;  // by dataset name, [subject * T + t]
  std::map<std::string, std::size_t> subject_width;
  std::map<std::string, std::vector<double>> subject_columns;  // covariates, parameters, doses: [subject * width + j]
  std::vector<std::int8_t> status;
};

struct ScenarioResults {
  std::vector<ArmResults> arms;
  const ArmResults& arm(const std::string& name) const;
};

// Runs a scenario without writing a file and keeps everything in memory (for small cohorts).
// block_size 0: the run's default.
ScenarioResults run_in_memory(const Scenario& scenario, unsigned threads = 0, std::int64_t block_size = 0);

// One per-subject number: a metric element, a trajectory value at a time, or a constant.
struct Operand {
  enum class Kind { metric, trajectory, constant };
  Kind kind = Kind::constant;
  std::string name;  // metric or trajectory (dataset) name
  std::size_t element = 0;
  double at_h = 0.0;  // trajectory time (must be a grid time)
  double constant = 0.0;
  double scale = 1.0;  // multiplies the value
};

struct Statistic {
  enum class Kind {
    mean,
    median,
    fraction,                // mean of a 0/1 value, as a fraction
    km_median,               // Kaplan-Meier median of `value` with `event` as the event flag (1 event, 0 censored)
    time_of_largest_effect,  // the assessment (days) where mean(arm) - mean(versus) is most negative
  };
  Kind kind = Kind::mean;
  std::string arm;
  Operand value;
  std::optional<Operand> minus;      // value - minus, per subject
  std::optional<Operand> divide_by;  // (value - minus) / divide_by, per subject
  std::optional<Operand> event;      // km_median
  std::optional<Operand> among;      // only subjects where this operand equals among_equals
  double among_equals = 1.0;
  std::optional<std::string> versus;    // the statistic of this arm is subtracted
  std::string metric_over_assessments;  // time_of_largest_effect: a [subject x assessment] metric
};

struct Tolerance {
  std::optional<double> absolute;
  std::optional<double> relative;  // fraction of |expected|
  std::optional<std::pair<double, double>> range;
  std::string why;
  bool accepts(double expected, double value) const;
  double scale(double expected) const;  // the half-width used to weigh a calibration residual
  std::string describe(double expected) const;
};

// How a target's published figure was checked (as in ../shared/science/ketamine.md): read in the
// publication or its abstract (verified), or taken from a secondary text or memory (recalled).
enum class Evidence { verified, recalled };

struct ReproductionTarget {
  std::string name;
  std::string title;
  std::string source;
  // The publication the figure comes from (e.g. "Murrough 2013"): a calibration fits whole studies
  // and leaves whole studies out, never part of one.
  std::string study;
  Evidence evidence = Evidence::recalled;
  // The calibration that fits this target (its `targets:` list names the file), or empty: a
  // validation target, which no fit sees.
  std::string fitted_by;
  std::string file;           // the target file
  std::string scenario_file;  // resolved path
  Statistic statistic;
  double expected = 0.0;
  Tolerance tolerance;
  // A published result the model is known not to reproduce, and why. It is still evaluated and
  // shown; it does not fail the suite, and passing it is reported (the mark should go).
  std::string known_miss;
};

// Reads a target file; errors name file:line:column like scenario errors.
ReproductionTarget load_target(const std::string& path);

double evaluate(const Statistic& statistic, const ScenarioResults& results);

struct TargetOutcome {
  const ReproductionTarget* target = nullptr;
  double simulated = 0.0;
  bool passed = false;  // within the tolerance
  // Fails the suite: outside the tolerance and not a known miss.
  bool failed() const { return !passed && target->known_miss.empty(); }
  std::string verdict() const;  // "pass", "FAIL", "known miss", "pass (marked known miss)"
};

// Evaluates targets, running each distinct scenario once. `seed` and `subjects`, when given,
// replace every scenario's cohort seed and size (calibration uses its own cohorts).
struct EvaluationOptions {
  std::optional<std::uint64_t> seed;
  std::optional<std::int64_t> subjects;
  std::vector<ParameterOverride> overrides;  // model parameters for every scenario
  // Variability magnitudes for every scenario, of the card's kind (a CV for log-normal, else an SD).
  std::vector<std::pair<std::string, double>> iiv_overrides;
  unsigned threads = 0;
};
std::vector<TargetOutcome> evaluate_targets(const std::vector<ReproductionTarget>& targets,
                                            const EvaluationOptions& options);

// The target files of a suite folder (every *.yaml in it), in file-name order; and the targets.
std::vector<std::string> suite_files(const std::filesystem::path& folder);
std::vector<ReproductionTarget> load_suite(const std::filesystem::path& folder);

// The Markdown table of docs/validation.md.
std::string validation_markdown(const std::vector<TargetOutcome>& outcomes, const std::string& command);

}  // namespace ketasim
