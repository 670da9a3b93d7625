#include "ketasim/scenario.hpp"

namespace ketasim {

// These spellings are the scenario-file vocabulary; the loader matches input against them.

std::string to_string(Route route) {
  switch (route) {
    case Route::iv_infusion: return "iv_infusion";
    case Route::iv_bolus: return "iv_bolus";
    case Route::intranasal: return "intranasal";
  }
  return "unknown_route";
}

std::string to_string(DoseDrug drug) {
  switch (drug) {
    case DoseDrug::model_drug: return "model_drug";
    case DoseDrug::placebo: return "placebo";
    case DoseDrug::active_placebo: return "midazolam";
  }
  return "unknown_drug";
}

std::string to_string(SolverMethod method) {
  switch (method) {
    case SolverMethod::automatic: return "auto";
    case SolverMethod::exact: return "exact";
    case SolverMethod::ode: return "ode";
  }
  return "unknown_method";
}

std::string to_string(Metric metric) {
  switch (metric) {
    case Metric::cmax: return "cmax";
    case Metric::auc: return "auc";
    case Metric::auc_per_week: return "auc_per_week";
    case Metric::peak_dissociation: return "peak_dissociation";
    case Metric::time_above_dissociation: return "time_above_dissociation";
    case Metric::dosed: return "dosed";
    case Metric::metabolites: return "metabolites";
    case Metric::response: return "response";
    case Metric::mass_balance: return "mass_balance";
  }
  return "unknown";
}

}  // namespace ketasim
