#include "ketasim/run/run_report.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>

#include "ketasim/base/time.hpp"

namespace ketasim {

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// The end-of-run report's values per subject and arm: the kQuantiledPerSubject values of
// ReportCollector::ArmValues (Cmax, dose-1 dissociation, weekly AUC, hours above the threshold
// per week, sessions given) and the MADRS change at each assessment.
constexpr std::size_t kQuantiledPerSubject = 5;

std::size_t report_series(const std::vector<ArmLayout>& layouts) {
  std::size_t series = 0;
  for (const ArmLayout& layout : layouts) series += kQuantiledPerSubject + layout.assessment_time_h.size();
  return series;
}

// How many values each of them keeps in memory: the budget shared out equally.
std::size_t report_memory_values(const std::vector<ArmLayout>& layouts, std::size_t memory_bytes) {
  return memory_bytes / sizeof(double) / std::max<std::size_t>(report_series(layouts), 1);
}

}  // namespace

ReportCollector::ReportCollector(const Scenario& scenario, const std::vector<ArmPlan>& arms, const SimulationPlan& plan,
                                 std::int64_t subjects, std::size_t memory_bytes,
                                 const std::filesystem::path& spill_directory)
    : weeks_(ticks_to_hours(plan.grid_end) / kHoursPerWeek),
      method_auto_(scenario.solver.method == SolverMethod::automatic) {
  std::vector<ArmLayout> layouts;
  for (const ArmPlan& arm : arms) layouts.push_back(arm.layout);
  const std::size_t in_memory = report_memory_values(layouts, memory_bytes);
  for (const ArmPlan& arm : arms) {
    ArmReport& report = reports_.emplace_back();
    report.name = arm.arm->name;
    report.description = arm.layout.description;
    report.subjects = subjects;
    report.doses = arm.doses;
    report.assessment_h = arm.layout.assessment_time_h;
    values_.emplace_back(in_memory, spill_directory, report.assessment_h.size());
    columns_.emplace_back(arm.layout);
  }
}

void ReportCollector::add(const SubjectBlock& block) {
  ArmReport& report = reports_[block.arm];
  for (std::int64_t r = 0; r < block.count; ++r) {
    const auto row = static_cast<std::size_t>(r);
    if (block.status[row] != 0) {
      ++report.failed;
      continue;
    }
    add_row(block, row);
  }
}

std::vector<ArmReport> ReportCollector::finish() {
  constexpr std::array<double, 1> kMedian{0.5};
  for (std::size_t a = 0; a < reports_.size(); ++a) {
    ArmReport& report = reports_[a];
    ArmValues& values = values_[a];
    report.cmax_ng_per_ml = spread_of(values.cmax);
    report.first_dose_peak_dissociation = spread_of(values.first_dose_peak_dissociation);
    report.weekly_auc_ng_h_per_ml = spread_of(values.weekly_auc);
    report.dissociation_hours_per_week = spread_of(values.hours_above_per_week);
    report.sessions_given = spread_of(values.sessions_given);
    for (std::size_t k = 0; k < report.assessment_h.size(); ++k) {
      report.madrs_change_median.push_back(values.madrs_change[k].quantiles(kMedian)[0]);
      report.response_fraction.push_back(values.responding[k].mean());
      report.remission_fraction.push_back(values.remitting[k].mean());
    }
  }
  return reports_;
}

Quantiles ReportCollector::spread_of(QuantileAccumulator& values) {
  constexpr std::array<double, 3> kProbabilities{0.05, 0.5, 0.95};
  const std::vector<double> q = values.quantiles(kProbabilities);
  return {q[0], q[1], q[2]};
}

void ReportCollector::add_row(const SubjectBlock& block, std::size_t row) {
  ArmReport& report = reports_[block.arm];
  ArmValues& values = values_[block.arm];
  const ReportColumns& columns = columns_[block.arm];
  const auto value = [&](std::optional<std::size_t> column, std::size_t position) {
    return column ? block.metrics[*column][position] : kNaN;
  };
  if (method_auto_ && value(columns.solver_path, row) == 1.0) ++report.ode_fallbacks;
  values.cmax.add(value(columns.cmax, row));
  values.first_dose_peak_dissociation.add(report.doses > 0 ? value(columns.peak_dissociation, row * report.doses)
                                                           : kNaN);
  values.weekly_auc.add(value(columns.auc, row) / weeks_);
  values.hours_above_per_week.add(value(columns.time_above, row) / weeks_);
  values.sessions_given.add(value(columns.sessions_given, row));
  const std::size_t assessments = report.assessment_h.size();
  for (std::size_t k = 0; k < assessments; ++k) {
    const std::size_t at = row * assessments + k;
    values.madrs_change[k].add(value(columns.madrs_observed_at, at) - value(columns.madrs_baseline, row));
    values.responding[k].add(value(columns.response_at, at));
    values.remitting[k].add(value(columns.remission_at, at));
  }
}

std::uint64_t report_temporary_bytes(const std::vector<ArmLayout>& layouts, std::int64_t subjects_per_arm,
                                     std::size_t report_memory_bytes) {
  if (static_cast<std::uint64_t>(subjects_per_arm) <= report_memory_values(layouts, report_memory_bytes)) return 0;
  return static_cast<std::uint64_t>(subjects_per_arm) * report_series(layouts) * sizeof(double);
}

}  // namespace ketasim
