#pragma once
// Fitting model parameters to published results: `ketasim calibrate SPEC`.
//
// The spec (models/calibration/NAME.yaml) lists the parameters to fit (start, bounds), the
// reproduction targets to fit them to, the cohorts to simulate (seed and size, the same for
// every evaluation, so the objective is a deterministic function of the parameters) and the
// optimiser (NLopt, derivative-free). The objective is the sum over targets of
// ((simulated - published) / tolerance)^2, the tolerance being each target's (usually the
// published 95% CI half-width); a target given as a range costs nothing inside it
// and (distance / (width / 10))^2 outside. Parameters
// are searched on a log scale within their bounds.
//
// The result is written next to the spec as NAME.fit.yaml (the fitted values, which the model
// cards then use: docs/model-cards.md) and NAME.report.md.

#include <functional>
#include <string>
#include <vector>

#include "ketasim/analysis/reproduction.hpp"

namespace ketasim {

struct CalibratedParameter {
  std::string name;    // a card parameter, or "P.iiv" for the size of P's variability
  std::string unit;    // display unit of start/min/max/fitted ("" for .iiv)
  double start = 0.0;  // base units
  double lower = 0.0;
  double upper = 0.0;
};

struct CalibrationSpec {
  std::string name;
  std::string description;
  std::string file;
  std::string model;  // the card whose module parameters are fitted (for units)
  std::uint64_t seed = 0;
  std::int64_t subjects = 0;
  std::string algorithm = "bobyqa";  // bobyqa, sbplx or neldermead
  int max_evaluations = 300;
  double relative_tolerance = 1e-4;  // on the parameters (log scale), stopping criterion
  std::vector<CalibratedParameter> parameters;
  std::vector<ReproductionTarget> targets;     // fitted
  std::vector<ReproductionTarget> validation;  // the rest of the suite: no fit sees them
};

CalibrationSpec load_calibration(const std::string& path);

struct CalibrationResult {
  std::vector<double> fitted;  // base units, in spec order
  double objective = 0.0;
  double start_objective = 0.0;
  int evaluations = 0;
  std::string stop_reason;
  std::vector<TargetOutcome> outcomes;  // at the fitted values
};

// `on_evaluation(k, objective)` is called after every evaluation (progress).
CalibrationResult calibrate(const CalibrationSpec& spec, unsigned threads,
                            const std::function<void(int, double)>& on_evaluation = {});

// The fit file (YAML) and the report (Markdown) of a result.
std::string fit_yaml(const CalibrationSpec& spec, const CalibrationResult& result, const std::string& command);
std::string calibration_report(const CalibrationSpec& spec, const CalibrationResult& result,
                               const std::string& command);

// The fitted values recorded in a fit file, by name (base units), for comparison.
std::vector<std::pair<std::string, double>> read_fit_values(const std::string& fit_yaml_text,
                                                            const CalibrationSpec& spec,
                                                            const std::string& source_name);

// The objective recorded in a fit file.
double read_fit_objective(const std::string& fit_yaml_text, const std::string& source_name);

// The targets and the objective at given values (base units, in spec order): what a fit
// evaluates at each step, once.
struct FitEvaluation {
  std::vector<TargetOutcome> outcomes;
  double objective = 0.0;
};
FitEvaluation evaluate_fit(const CalibrationSpec& spec, const std::vector<double>& values, unsigned threads);

}  // namespace ketasim
