#pragma once
// One subject, one arm: integrate the model over the constant-input segments, write the output
// grid and compute the metrics during the solve (nothing is kept per time point beyond the
// output rows themselves).

#include <span>
#include <string>
#include <vector>

#include "ketasim/model.hpp"
#include "ketasim/scenario.hpp"
#include "ketasim/timeline.hpp"

namespace ketasim {

struct SimulationPlan {
  Ticks grid_step = 0;
  Ticks grid_end = 0;
  double dissociation_threshold = 0.0;  // score points

  std::size_t time_points() const { return static_cast<std::size_t>(grid_end / grid_step) + 1; }
  // Weeks for AUC per week; the last one is partial when grid_end is not a whole number of weeks.
  std::size_t weeks() const { return static_cast<std::size_t>((grid_end + kTicksPerWeek - 1) / kTicksPerWeek); }
  static SimulationPlan from(const OutputSpec& output);
};

// Where one subject's trajectories go (one row each, time_points() long); null = not requested.
struct TrajectoryRows {
  float* plasma_ng_per_ml = nullptr;
  float* effect_ng_per_ml = nullptr;
  float* dissociation = nullptr;
};

struct SubjectMetrics {
  double cmax_ng_per_ml = 0.0;
  double tmax_h = 0.0;
  double auc_ng_h_per_ml = 0.0;                    // over [0, grid_end], exact
  std::vector<double> auc_per_week_ng_h_per_ml;    // weeks()
  std::vector<double> peak_effect_ng_per_ml;       // per dose: max effect-site concentration
  std::vector<double> peak_dissociation;           // per dose: score at that maximum
  std::vector<double> peak_dissociation_time_h;    // per dose: when
  double time_above_dissociation_h = 0.0;          // total time with score >= threshold
  double dosed_mg = 0.0;                           // doses started before grid_end (infusions pro rata)
  double amount_in_body_end_mg = 0.0;              // at grid_end
  double eliminated_mg = 0.0;                      // CL * AUC
};

enum class SolverPath { exact, ode };

struct SolveOutcome {
  SolverPath path = SolverPath::exact;
  std::string note;  // why the exact path was not used, when it was not
};

// Runs one subject. Throws SolverError when the requested path cannot solve it.
SolveOutcome simulate_subject(const MammillaryEffectModel& model, const SolverSpec& solver, const SimulationPlan& plan,
                              const std::vector<Dose>& doses, const TrajectoryRows& rows, SubjectMetrics& metrics);

}  // namespace ketasim
