#pragma once
// The figures printed at the end of a run (RunReport, run.hpp), collected block by block in memory
// that does not depend on the cohort size. Internal to run/.

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <optional>
#include <vector>

#include "ketasim/base/quantiles.hpp"
#include "ketasim/input/scenario.hpp"
#include "ketasim/run/run.hpp"
#include "ketasim/run/scenario_runner.hpp"
#include "ketasim/solve/results.hpp"

namespace ketasim {

// The mean of the finite values added (NaN if none).
struct FiniteMean {
  double sum = 0.0;
  std::uint64_t count = 0;
  void add(double value) {
    if (!std::isfinite(value)) return;
    sum += value;
    ++count;
  }
  double mean() const { return count ? sum / static_cast<double>(count) : std::numeric_limits<double>::quiet_NaN(); }
};

// The metric columns of an arm that the report reads (nullopt: the arm does not write it).
struct ReportColumns {
  explicit ReportColumns(const ArmLayout& layout)
      : cmax(find_metric(layout.metrics, MetricId::cmax)),
        auc(find_metric(layout.metrics, MetricId::auc)),
        peak_dissociation(find_metric(layout.metrics, MetricId::peak_link, LinkRole::dissociation)),
        time_above(find_metric(layout.metrics, MetricId::time_above_dissociation)),
        sessions_given(find_metric(layout.metrics, MetricId::sessions_given)),
        solver_path(find_metric(layout.metrics, MetricId::solver_path)),
        madrs_baseline(find_metric(layout.metrics, MetricId::madrs_baseline)),
        madrs_observed_at(find_metric(layout.metrics, MetricId::madrs_observed_at)),
        response_at(find_metric(layout.metrics, MetricId::response_at)),
        remission_at(find_metric(layout.metrics, MetricId::remission_at)) {}
  std::optional<std::size_t> cmax, auc, peak_dissociation, time_above, sessions_given, solver_path;
  std::optional<std::size_t> madrs_baseline, madrs_observed_at, response_at, remission_at;
};

// Collects the per-arm figures printed at the end of a run, in memory that does not depend on the
// cohort size: the values whose quantiles it reports go to QuantileAccumulators (in memory up to
// `memory_bytes` in all, then to unlinked temporary files in `spill_directory`), the response and
// remission fractions to running counts (their values are 0 or 1, so the sums are exact in any
// order and the result does not depend on the order the blocks finish in).
class ReportCollector {
 public:
  // `subjects`: of each arm, those the run simulates (a shard's share, or the whole cohort).
  ReportCollector(const Scenario& scenario, const std::vector<ArmPlan>& arms, const SimulationPlan& plan,
                  std::int64_t subjects, std::size_t memory_bytes, const std::filesystem::path& spill_directory);

  void add(const SubjectBlock& block);

  std::vector<ArmReport> finish();

 private:
  // kQuantiledPerSubject accumulators, then one per assessment.
  struct ArmValues {
    ArmValues(std::size_t in_memory, const std::filesystem::path& spill, std::size_t assessments)
        : cmax(in_memory, spill),
          first_dose_peak_dissociation(in_memory, spill),
          weekly_auc(in_memory, spill),
          hours_above_per_week(in_memory, spill),
          sessions_given(in_memory, spill),
          responding(assessments),
          remitting(assessments) {
      for (std::size_t k = 0; k < assessments; ++k) madrs_change.emplace_back(in_memory, spill);
    }
    QuantileAccumulator cmax, first_dose_peak_dissociation, weekly_auc, hours_above_per_week, sessions_given;
    std::vector<QuantileAccumulator> madrs_change;  // per assessment: observed MADRS - baseline
    std::vector<FiniteMean> responding;             // per assessment
    std::vector<FiniteMean> remitting;
  };

  static Quantiles spread_of(QuantileAccumulator& values);

  void add_row(const SubjectBlock& block, std::size_t row);

  double weeks_;
  bool method_auto_;  // ODE fallbacks are counted under solver method auto only
  std::vector<ArmReport> reports_;
  std::vector<ArmValues> values_;
  std::vector<ReportColumns> columns_;
};

}  // namespace ketasim
