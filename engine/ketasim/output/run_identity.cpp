#include "ketasim/output/run_identity.hpp"

#include <algorithm>
#include <cstring>

namespace ketasim {
namespace {

template <class Column>  // ColumnSpec or MetricColumn
bool same_columns(const std::vector<Column>& a, const std::vector<Column>& b) {
  return std::equal(a.begin(), a.end(), b.begin(), b.end(), [](const ColumnSpec& x, const ColumnSpec& y) {
    return x.name == y.name && x.unit == y.unit && x.width == y.width && x.description == y.description;
  });
}

}  // namespace

bool same_numbers(const std::vector<double>& a, const std::vector<double>& b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(double)) == 0);
}

// What differs between two layouts of one arm, in words; "" when nothing does.
std::string layout_difference(const ArmLayout& a, const ArmLayout& b) {
  const auto same_parameters = [&] {
    return std::equal(a.model_parameters.begin(), a.model_parameters.end(), b.model_parameters.begin(),
                      b.model_parameters.end(), [](const ParameterValue& x, const ParameterValue& y) {
                        return x.name == y.name && x.unit == y.unit && same_numbers({x.value}, {y.value});
                      });
  };
  if (a.description != b.description) return "its regimen (attribute description)";
  if (a.model != b.model || !same_parameters()) return "its model (attributes model, model_parameter*)";
  if (!same_numbers({a.price_per_session_usd[0], a.price_per_session_usd[1]},
                    {b.price_per_session_usd[0], b.price_per_session_usd[1]}))
    return "its prices (attribute price_per_session_usd)";
  if (a.observed_outputs != b.observed_outputs) return "its observed outputs (attribute observed_outputs)";
  if (!same_numbers(a.time_h, b.time_h)) return "its time grid (time_h)";
  if (!same_numbers(a.dose_time_h, b.dose_time_h) || !same_numbers(a.dose_duration_h, b.dose_duration_h))
    return "its nominal doses (doses/)";
  if (!same_numbers(a.assessment_time_h, b.assessment_time_h)) return "its assessments (assessments_h)";
  if (!same_numbers(a.observation_time_h, b.observation_time_h)) return "its sampling times (observation_times_h)";
  if (!same_numbers(a.relapse_visit_time_h, b.relapse_visit_time_h)) return "its relapse visits (relapse_visits_h)";
  if (!same_columns(a.subject_columns, b.subject_columns)) return "its subject columns (subjects/)";
  if (!same_columns(a.metrics, b.metrics)) return "its metrics (metrics/)";
  if (!same_columns(a.trajectories, b.trajectories)) return "its trajectories (trajectories/)";
  return "";
}

std::string build_of(const std::string& version, const std::string& revision) {
  return "ketasim " + version + " (" + revision + ")";
}

}  // namespace ketasim
