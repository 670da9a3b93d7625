#pragma once
// The general numerical path: Boost.Odeint's adaptive Dormand-Prince 5(4) with error control,
// integrating x' = A x + b and the running integral of x as written. The stepper is created
// afresh for every step between boundaries, so an adaptive step never straddles a dose edge and
// no stale FSAL derivative survives a jump: this is the one place where the stepper restarts.

#include <atomic>
#include <cstddef>
#include <string>

#include "ketasim/base/errors.hpp"
#include "ketasim/model/model.hpp"

namespace ketasim {

// A step between two breakpoints that needed more than its cap of steps (OdePropagator::step_cap).
// integrate() turns it into the subject's failure, with the time.
class OdeStepCapReached : public SolverError {
 public:
  OdeStepCapReached(std::size_t steps, double step_h, double reached, const std::string& why);
  std::size_t cap;
  double duration_h;   // of the step between breakpoints
  double reached_h;    // how far into it the solver got
  std::string reason;  // e.g. "the system is too stiff for an explicit method (fastest rate 1e+07/h)"
};

class OdePropagator {
 public:
  struct State {
    StateVector x;
    StateVector integral;
  };
  using Input = StateVector;   // rates per state
  using StepFactors = double;  // the step length in hours: nothing to precompute

  // `cancel`: when set and true, advance() stops with InterruptedError (checked every 1024 steps).
  OdePropagator(const SubjectModel& model, double rtol, double atol, const std::atomic<bool>* cancel = nullptr);

  // The most steps (tried, accepted or not) that advance() takes over `duration_h`: 10,000 per
  // hour, and at least 10,000. A non-stiff model of ketamine needs fewer than 100 per hour even
  // at the tightest tolerance; an explicit method on a stiff system (an effect site with ke0 =
  // 1e7 1/h) needs millions, and would otherwise run for hours.
  static std::size_t step_cap(double duration_h);

  State initial_state() const { return State{StateVector::Zero(model_.states), StateVector::Zero(model_.states)}; }
  Input input(const StateVector& rates) const { return rates; }
  const Input& channel(int c) const { return model_.channels[static_cast<std::size_t>(c)]; }
  void bolus(State& state, int c, double amount) const { state.x += amount * channel(c); }

  StepFactors factors(double duration_h) const { return duration_h; }
  void advance(State& state, StepFactors duration_h, const Input& input) const;
  State peek(const State& state, double tau_h, const Input& input) const;

  double signal(const State& state, int k) const { return model_.signals.row(k).dot(state.x); }
  double signal_integral(const State& state, int k) const { return model_.signals.row(k).dot(state.integral); }
  double apply(const State& state, const StateRow& row) const { return row.dot(state.x); }
  double apply_integral(const State& state, const StateRow& row) const { return row.dot(state.integral); }
  StateVector physical(const State& state) const { return state.x; }
  StateVector physical_integral(const State& state) const { return state.integral; }
  State from_physical(const StateVector& x, const StateVector& integral) const { return State{x, integral}; }

 private:
  const SubjectModel& model_;
  double rtol_;
  double atol_;
  const std::atomic<bool>* cancel_;
};

}  // namespace ketasim
