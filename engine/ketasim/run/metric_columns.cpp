#include "ketasim/run/metric_columns.hpp"

#include <cmath>

#include "ketasim/base/format.hpp"

namespace ketasim {

MetricColumn metric_column(MetricId id, std::string unit, std::size_t width, std::string description,
                           std::string_view about, LinkRole role) {
  MetricColumn column;
  column.name = metric_dataset(id, about);
  column.unit = std::move(unit);
  column.width = width;
  column.description = std::move(description);
  column.id = id;
  column.link_role = role;
  return column;
}

std::string per_assessment(const SimulationPlan& plan) {
  std::string at = "per assessment (";
  for (std::size_t k = 0; k < plan.assessments.size(); ++k)
    at += (k ? ", " : "") + format_duration_h(ticks_to_hours(plan.assessments[k]));
  return at + " after the first session)";
}

std::string session_time_label(Ticks after) {
  if (after % kTicksPerHour == 0) return std::to_string(after / kTicksPerHour) + "h";
  if (after % kTicksPerMinute == 0) return std::to_string(after / kTicksPerMinute) + "min";
  return std::to_string(after) + "ms";
}

std::string first_non_finite_metric(const std::vector<Metric>& selected, const Model& model, const SimulationPlan& plan,
                                    const SubjectMetrics& m) {
  std::string problem;
  for_each_selected_metric(selected, model, plan, m, 0.0, [&](const ColumnSpec& spec, const MetricValues& metric) {
    for (std::size_t i = 0; i < metric.values.size() && problem.empty(); ++i) {
      const double value = metric.values[i];
      if (std::isfinite(value) || (std::isnan(value) && metric.nan == NanMeaning::undefined)) continue;
      problem = "metric " + spec.name + (spec.width == 1 ? "" : "[" + std::to_string(i) + "]") + " is not finite (" +
                format_value(value) + ")";
    }
  });
  return problem;
}

}  // namespace ketasim
