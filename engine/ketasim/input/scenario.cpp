#include "ketasim/input/scenario.hpp"

#include <algorithm>

#include "ketasim/input/covariate_table.hpp"

namespace ketasim {

Ticks AsNeeded::dose_time(Ticks crossing) const {
  const Ticks earliest = crossing + delay;
  if (slots.empty()) return earliest;
  // The first slot at or after `earliest`: in its week, else the first slot of the next week.
  const Ticks week = earliest / kTicksPerWeek;
  for (const WeeklySlot& slot : slots) {
    const Ticks time = week * kTicksPerWeek + slot.time_in_week();
    if (time >= earliest) return time;
  }
  return (week + 1) * kTicksPerWeek + slots.front().time_in_week();
}

void Cohort::set_subjects_per_replicate(std::int64_t n) {
  if (n < 1 || n > kMaxCohortSize / replicates) {
    throw Error(ExitCode::usage, std::to_string(replicates) + " replicates of " + std::to_string(n) +
                                     " subjects: expected 1 to " + std::to_string(kMaxCohortSize / replicates) +
                                     " subjects per replicate");
  }
  if (table && table_rows == TableRows::in_order && static_cast<std::size_t>(n) > table->rows) {
    throw Error(ExitCode::usage, "the cohort is the " + std::to_string(table->rows) + " patients of " + table->file +
                                     " in order: at most " + std::to_string(table->rows) +
                                     " subjects per replicate (give cohort.size to draw rows with replacement)");
  }
  subjects_per_replicate = n;
  size = n * replicates;
}

// These spellings are the scenario-file vocabulary; the loader matches input against them.

ModelChoice model_of(const Scenario& scenario, const Arm& arm) {
  if (!arm.model) return scenario.model;
  if (arm.model->name != scenario.model.name) return *arm.model;
  ModelChoice model = scenario.model;
  for (const ParameterOverride& own : arm.model->overrides) {
    const auto same_name = [&](const ParameterOverride& o) { return o.name == own.name; };
    const auto inherited = std::find_if(model.overrides.begin(), model.overrides.end(), same_name);
    if (inherited != model.overrides.end())
      inherited->value = own.value;
    else
      model.overrides.push_back(own);
  }
  return model;
}

bool same_model(const ModelChoice& a, const ModelChoice& b) {
  if (a.name != b.name || a.overrides.size() != b.overrides.size()) return false;
  // Names are unique within a model (YAML map keys), so equal sizes and inclusion mean equal sets.
  return std::all_of(a.overrides.begin(), a.overrides.end(), [&](const ParameterOverride& o) {
    return std::any_of(b.overrides.begin(), b.overrides.end(),
                       [&](const ParameterOverride& p) { return p.name == o.name && p.value == o.value; });
  });
}

std::string to_string(Route route) {
  switch (route) {
    case Route::iv_infusion:
      return "iv_infusion";
    case Route::iv_bolus:
      return "iv_bolus";
    case Route::intranasal:
      return "intranasal";
  }
  return "unknown_route";
}

std::string to_string(DoseDrug drug) {
  switch (drug) {
    case DoseDrug::model_drug:
      return "model_drug";
    case DoseDrug::placebo:
      return "placebo";
    case DoseDrug::active_placebo:
      return "midazolam";
  }
  return "unknown_drug";
}

std::string to_string(SolverMethod method) {
  switch (method) {
    case SolverMethod::automatic:
      return "auto";
    case SolverMethod::exact:
      return "exact";
    case SolverMethod::ode:
      return "ode";
  }
  return "unknown_method";
}

std::string to_string(Metric metric) {
  switch (metric) {
    case Metric::cmax:
      return "cmax";
    case Metric::auc:
      return "auc";
    case Metric::auc_per_week:
      return "auc_per_week";
    case Metric::peak_dissociation:
      return "peak_dissociation";
    case Metric::time_above_dissociation:
      return "time_above_dissociation";
    case Metric::dissociation_burden:
      return "dissociation_burden";
    case Metric::dosed:
      return "dosed";
    case Metric::metabolites:
      return "metabolites";
    case Metric::response:
      return "response";
    case Metric::mass_balance:
      return "mass_balance";
  }
  return "unknown";
}

}  // namespace ketasim
