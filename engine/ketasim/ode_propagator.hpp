#pragma once
// The general numerical path: Boost.Odeint's adaptive Dormand-Prince 5(4) with error control.
// The stepper is created afresh for every step between boundaries, so an adaptive step never
// straddles a dose edge and no stale FSAL derivative survives a jump: this is the one place
// where the stepper restarts. The plasma AUC is integrated as an extra state.

#include <array>

#include "ketasim/model.hpp"

namespace ketasim {

class OdePropagator {
 public:
  static constexpr std::size_t kAucIndex = MammillaryEffectModel::kMaxStates;
  struct State {
    std::array<double, MammillaryEffectModel::kMaxStates + 1> values{};
  };
  using StepFactors = double;  // the step length in hours: nothing to precompute

  OdePropagator(const MammillaryEffectModel& model, double rtol, double atol)
      : model_(model), rtol_(rtol), atol_(atol) {}

  State initial_state() const { return State{}; }
  void bolus(State& state, double amount_mg) const { state.values[MammillaryEffectModel::kCentral] += amount_mg; }

  StepFactors factors(double duration_h) const { return duration_h; }
  // Integrates over the step at a constant infusion rate; returns the plasma AUC over the step.
  double advance(State& state, StepFactors duration_h, double rate_mg_per_h) const;
  State peek(const State& state, double tau_h, double rate_mg_per_h) const;

  double plasma(const State& state) const;
  double effect(const State& state) const;
  double amount_in_body_mg(const State& state) const;

 private:
  const MammillaryEffectModel& model_;
  double rtol_;
  double atol_;
};

}  // namespace ketasim
