#pragma once
// Shared helpers for the engine tests: models with known parameters, dose lists, and a run of
// one subject that returns its trajectories in double precision.

#include <cmath>
#include <vector>

#include "ketasim/model.hpp"
#include "ketasim/simulate.hpp"
#include "ketasim/timeline.hpp"

namespace ketasim::testing {

inline MammillaryEffectParameters one_compartment() {
  MammillaryEffectParameters p;
  p.peripheral_compartments = 0;
  p.V1_L = 250.0;
  p.k10_per_h = 80.0 / 250.0;
  p.ke0_per_h = 5.0;
  p.s_fraction = 0.5;
  p.ec50_s_mg_per_L = 0.121;
  p.emax = 24.0;
  p.hill = 1.5;
  return p;
}

// Clements & Nimmo at 70 kg (micro constants per hour).
inline MammillaryEffectParameters two_compartment() {
  MammillaryEffectParameters p = one_compartment();
  p.peripheral_compartments = 1;
  p.V1_L = 1.7522 * 70.0;
  p.k10_per_h = 0.0109 * 60.0;
  p.k12_per_h = 0.0186 * 60.0;
  p.k21_per_h = 0.0137 * 60.0;
  p.ke0_per_h = std::log(2.0) / (8.3 / 60.0);
  return p;
}

// Domino at 70 kg.
inline MammillaryEffectParameters three_compartment() {
  MammillaryEffectParameters p = two_compartment();
  p.peripheral_compartments = 2;
  p.V1_L = 0.063 * 70.0;
  p.k10_per_h = 0.4381 * 60.0;
  p.k12_per_h = 0.5921 * 60.0;
  p.k21_per_h = 0.2470 * 60.0;
  p.k13_per_h = 0.5900 * 60.0;
  p.k31_per_h = 0.0146 * 60.0;
  return p;
}

inline Dose infusion(Ticks start, Ticks duration, double amount_mg) {
  Dose dose;
  dose.start = start;
  dose.duration = duration;
  dose.amount_mg = amount_mg;
  dose.route = Route::iv_infusion;
  return dose;
}

inline Dose bolus(Ticks start, double amount_mg) {
  Dose dose;
  dose.start = start;
  dose.amount_mg = amount_mg;
  dose.route = Route::iv_bolus;
  return dose;
}

// 35 mg over 40 min on Mon and Thu 09:00 for `weeks` weeks.
inline std::vector<Dose> twice_weekly(int weeks, double amount_mg = 35.0) {
  std::vector<Dose> doses;
  for (int w = 0; w < weeks; ++w)
    for (const Ticks day : {Ticks{0}, Ticks{3}})
      doses.push_back(infusion(w * kTicksPerWeek + day * kTicksPerDay + 9 * kTicksPerHour, 40 * kTicksPerMinute, amount_mg));
  return doses;
}

struct SubjectRun {
  std::vector<float> plasma, effect, dissociation;
  SubjectMetrics metrics;
  SolveOutcome outcome;
};

inline SubjectRun run_subject(const MammillaryEffectParameters& parameters, const std::vector<Dose>& doses,
                              Ticks grid_step, Ticks grid_end, SolverMethod method = SolverMethod::exact,
                              double threshold = 5.0, double rtol = 1e-10, double atol = 1e-14) {
  SimulationPlan plan;
  plan.grid_step = grid_step;
  plan.grid_end = grid_end;
  plan.dissociation_threshold = threshold;
  SubjectRun run;
  const std::size_t n = plan.time_points();
  run.plasma.resize(n);
  run.effect.resize(n);
  run.dissociation.resize(n);
  SolverSpec solver;
  solver.method = method;
  solver.rtol = rtol;
  solver.atol = atol;
  const MammillaryEffectModel model(parameters);
  run.outcome = simulate_subject(model, solver, plan, doses,
                                 {run.plasma.data(), run.effect.data(), run.dissociation.data()}, run.metrics);
  return run;
}

}  // namespace ketasim::testing
