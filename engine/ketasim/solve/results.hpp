#pragma once
// What the engine hands to an output writer: the fixed layout of each arm, and blocks of
// finished subjects. Columns are generic (name, unit, width) so the writer knows nothing about
// models; docs/hdf5-layout.md describes the file these become.

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace ketasim {

struct ColumnSpec {
  std::string name;       // dataset name, e.g. "cmax_ng_per_ml"
  std::string unit;       // e.g. "ng/mL"; "" for dimensionless
  std::size_t width = 1;  // values per subject (1 = a column; >1 = a [subject x width] matrix)
  std::string description;
};

// A model parameter value as the user reads it: in the parameter's display unit ("" = none).
struct ParameterValue {
  std::string name;
  double value = 0.0;
  std::string unit;
};

struct ArmLayout {
  std::string name;
  std::string model;  // the model card of the arm (the scenario's, or the arm's own)
  // The typical values the arm's model overrides in its card (model_of: the scenario's and the
  // arm's model.parameters), in the order given; empty = the card's own values.
  std::vector<ParameterValue> model_parameters;
  std::string description;                  // human-readable regimen
  std::vector<double> time_h;               // output grid, hours from the simulation start
  std::vector<ColumnSpec> trajectories;     // one [subject x time] matrix each (width unused)
  std::vector<ColumnSpec> subject_columns;  // covariates and individual parameters
  std::vector<ColumnSpec> metrics;          // per-subject metrics
  // The arm's nominal dose schedule: the doses of its scheduled rules, the same for every subject
  // (the doses each subject was given, after adherence, as-needed triggers and dosing tables, are
  // the subject columns dose_time_h, dose_amount_mg and dose_duration_h).
  std::vector<double> dose_time_h;
  std::vector<double> dose_duration_h;               // 0 for a bolus
  std::vector<double> assessment_time_h;             // MADRS assessments, hours after the first session
  std::vector<double> observation_time_h;            // sampling times of output.observations, hours from the start
  std::vector<std::string> observed_outputs;         // the outputs observed there, in the scenario's order
  double price_per_session_usd[2] = {400.0, 800.0};  // low, high
};

// Provenance written as root attributes.
struct RunInfo {
  std::string scenario_file;
  std::string scenario_yaml;  // verbatim
  std::string scenario_name;
  std::string model_name;
  std::uint64_t seed = 0;
  std::int64_t subjects_per_arm = 0;
  std::int64_t replicates = 1;              // trials of subjects_per_replicate subjects each
  std::int64_t subjects_per_replicate = 0;  // 0: subjects_per_arm (one replicate)
  std::string solver_method;
  double solver_rtol = 0.0;
  double solver_atol = 0.0;
};

// Consecutive subjects [first_subject, first_subject + count) of one arm. Row-major buffers.
struct SubjectBlock {
  std::size_t arm = 0;
  std::int64_t first_subject = 0;
  std::int64_t count = 0;
  std::vector<std::vector<float>> trajectories;      // [trajectory][row * n_time + t]
  std::vector<std::vector<double>> subject_columns;  // [column][row * width + j]
  std::vector<std::vector<double>> metrics;          // [metric][row * width + j]
  std::vector<std::int8_t> status;                   // [row]: 0 solved, 1 failed (values NaN)
  std::vector<std::string> message;                  // [row]: "" when solved, else why it failed
};

}  // namespace ketasim
