#pragma once
// State-triggered dosing (an arm's as-needed rule): a rule of the solve rather than an observer,
// since it can interrupt a step. It decides, step by step, whether the subject's MADRS rose above
// the threshold while a dose was allowed, and when exactly; the solve then undoes the step, adds
// the dose and rebuilds its plan.

#include "ketasim/solve/observers.hpp"

namespace ketasim {

class AsNeededTrigger {
 public:
  static constexpr Ticks kNever = std::numeric_limits<Ticks>::max();

  AsNeededTrigger(const TriggeredDosing& dosing, const MadrsScore& madrs, double baseline_madrs, Ticks grid_end);

  int fired() const { return fired_; }

  // Times that must be breakpoints so that no step straddles a change of the allowed time:
  // `from`, and min_interval after every dose.
  void add_marks(std::vector<PlanMark>& marks, const std::vector<Dose>& doses) const;

  // At a breakpoint t, or when a dose was added: the first time a dose is allowed from now on,
  // given the doses so far.
  void update_allowed(Ticks t, const std::vector<Dose>& doses) { allowed_ = allowed_from(t, doses); }

  // Before the first point: is a dose due at once?
  template <class Propagator>
  bool fires_at_start(const Propagator& propagator, const typename Propagator::State& state) const {
    return allowed_ == 0 && madrs_.at(propagator, 0, state) > threshold_;
  }

  // When in the step the rule fires (the crossing, rounded up to a tick), or -1. Steps never
  // straddle a change of the allowed time (it is a breakpoint), so within a step a dose is either
  // allowed from some point on or not at all.
  template <class Propagator>
  Ticks fires_within(const SolveStep<Propagator>& step) const;

  // The rule fired at `at`: the dose it gives, inserted into `doses` in order (throws when the
  // arm's bound on the doses, `most_doses`, would be exceeded).
  Dose fire(Ticks at, std::vector<Dose>& doses, std::size_t most_doses);

 private:
  // The first time a dose is allowed after `t`, given the doses so far: `from`, and min_interval
  // after the last session started at or before t. Past `until` or the limit, or while a triggered
  // dose waits for its delay: never (the pending dose's start is a breakpoint, where this is asked
  // again).
  Ticks allowed_from(Ticks t, const std::vector<Dose>& doses) const;

  const TriggeredDosing& dosing_;
  const MadrsScore& madrs_;
  double threshold_;
  Ticks until_;  // exclusive
  int fired_ = 0;
  Ticks allowed_ = kNever;
};

template <class Propagator>
Ticks AsNeededTrigger::fires_within(const SolveStep<Propagator>& step) const {
  const Ticks t0 = step.t0;
  const Ticks t1 = step.t0 + step.h;
  if (t1 < allowed_) return -1;
  const Propagator& p = step.propagator;
  const double excess_end = madrs_.at(p, t1, step.end) - threshold_;
  if (std::isnan(excess_end)) [[unlikely]]
    fail_not_finite("madrs", excess_end, t1);
  if (!(excess_end > 0.0)) return -1;
  const Ticks low = std::max(t0, allowed_);
  const double tau_low = ticks_to_hours(low - t0);
  const auto excess = [&](double tau) {
    return madrs_.at_hours(p, ticks_to_hours(t0) + tau, p.peek(step.start, tau, step.input)) - threshold_;
  };
  const double excess_low = low == t1 ? excess_end : excess(tau_low);
  const double tau =
      excess_low > 0.0 ? tau_low : bracketed_root(excess, tau_low, excess_low, ticks_to_hours(t1 - t0), excess_end);
  const Ticks at =
      std::clamp<Ticks>(t0 + static_cast<Ticks>(std::ceil(tau * static_cast<double>(kTicksPerHour))), low, t1);
  return at < until_ ? std::max(at, t0 + 1) : -1;
}

}  // namespace ketasim
