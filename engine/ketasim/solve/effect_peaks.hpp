#pragma once
// The observer of the dissociation effect site: metrics that need more than the points of the
// solution. The exact maximum per dose (where every effect-site link peaks too, the links being
// increasing) and the exact time above the dissociation threshold. The effect site rises while
// its driving plasma concentration exceeds it, so a sign change of (plasma - effect) over a step
// brackets an extremum.

#include "ketasim/solve/observers.hpp"

namespace ketasim {

class EffectPeaks : public ObserverDefaults {
 public:
  // The per-dose metrics must be sized for the most doses: as-needed doses are added during the
  // solve.
  EffectPeaks(const Model& model, const SubjectModel& subject, double threshold_score, bool peak_links,
              SubjectMetrics& metrics);

  // The dose windows [start of dose k, start of dose k+1): a point where sessions start closes the
  // old window and opens the new one.
  template <class Propagator>
  [[gnu::always_inline]] void at_point(const SolvePoint<Propagator>& at) {
    if (at.edge) {  // off an edge, over_step left the values of this point
      driver_ = at.signal(driver_signal_);
      effect_ = at.signal(effect_signal_);
    }
    record(effect_, ticks_to_hours(at.t), at);
    for (const TimelineEvent& event : at.events) {
      if (event.kind != EventKind::session_start) continue;
      window_ = event.dose;
      peak_ = -1.0;
      record(effect_, ticks_to_hours(at.t), at);
    }
  }

  template <class Propagator>
  [[gnu::always_inline]] void over_step(const SolveStep<Propagator>& step) {
    // When the link attenuates, the effect-site threshold follows the tolerance, which changes over
    // days: it is updated once per step from the state at the step's start.
    if (tolerance_signal_ >= 0 && link_.attenuation > 0.0)
      threshold_ = link_.input_for(threshold_score_, step.propagator.signal(step.start, tolerance_signal_));
    const double driver_end = step.propagator.signal(step.end, driver_signal_);
    const double effect_end = step.propagator.signal(step.end, effect_signal_);
    // Most steps are monotone and below the threshold: nothing more to do (the hot path, inlined).
    const bool quiet =
        (driver_ > effect_) == (driver_end > effect_end) && effect_ < threshold_ && effect_end < threshold_;
    if (!quiet) eventful_step(step, driver_end, effect_end);
    driver_ = driver_end;
    effect_ = effect_end;
  }

  // Link `link` of the effect site (display units) at dose k's peak so far; NaN before the dose.
  double peak_score(std::size_t link, std::size_t dose) const;

  // The links of the effect site at each dose's peak (peak_dissociation and its kin).
  template <class Propagator>
  void finish(const SolvePoint<Propagator>&) {
    if (peak_links_) record_peak_links();
  }

 private:
  template <class Propagator>
  [[gnu::noinline]] void eventful_step(const SolveStep<Propagator>& step, double driver_end, double effect_end);

  template <class Propagator, class State>
  void record(double effect, double time_h, const Propagator& propagator, const State& state) {
    if (!(effect > peak_) || window_ < 0) return;
    peak_ = effect;
    const auto k = static_cast<std::size_t>(window_);
    metrics_.peak_effect_ng_per_ml[k] = effect * solve_units::kNgPerMlPerMgPerL;
    metrics_.peak_effect_time_h[k] = time_h;
    if (tolerance_signal_ >= 0) peak_tolerance_[k] = propagator.signal(state, tolerance_signal_);
  }
  template <class Propagator>
  void record(double effect, double time_h, const SolvePoint<Propagator>& at) {
    record(effect, time_h, at.propagator, at.state);
  }

  // The effect site is monotone on [a, b] of the step: at most one threshold crossing.
  template <class Propagator>
  void add_time_above(const SolveStep<Propagator>& step, double a, double effect_a, double b, double effect_b);

  void record_peak_links();

  const Model& model_;
  const SubjectModel& subject_;
  SubjectMetrics& metrics_;
  const LinkValues& link_;
  int driver_signal_;
  int effect_signal_;
  int tolerance_signal_;
  double threshold_score_;
  double threshold_;  // effect-site concentration (mg/L) of the threshold score
  bool peak_links_;
  std::vector<double> peak_tolerance_;  // the tolerance signal at each dose's peak (0 without attenuation)
  int window_ = -1;
  double peak_ = -1.0;   // of the current window, mg/L
  double driver_ = 0.0;  // at the last point, mg/L
  double effect_ = 0.0;
};

template <class Propagator>
void EffectPeaks::eventful_step(const SolveStep<Propagator>& step, double driver_end, double effect_end) {
  const double t0 = ticks_to_hours(step.t0);
  const double h = ticks_to_hours(step.h);
  const double slope0 = driver_ - effect_;
  const double slope1 = driver_end - effect_end;
  const bool tracks_threshold = threshold_ != std::numeric_limits<double>::infinity();
  const bool extremum_inside = slope0 != 0.0 && slope1 != 0.0 && (slope0 > 0.0) != (slope1 > 0.0);
  if (!extremum_inside) {
    if (tracks_threshold) add_time_above(step, 0.0, effect_, h, effect_end);
    return;
  }
  const bool maximum = slope0 > 0.0;
  if (!maximum && !tracks_threshold) return;  // a minimum matters only for the threshold
  const Propagator& p = step.propagator;
  const auto slope_at = [&](double tau) {
    const auto state = p.peek(step.start, tau, step.input);
    return p.signal(state, driver_signal_) - p.signal(state, effect_signal_);
  };
  const double tau = bracketed_root(slope_at, 0.0, slope0, h, slope1);
  const auto at_peak = p.peek(step.start, tau, step.input);
  const double effect_tau = p.signal(at_peak, effect_signal_);
  // The tolerance at an interior peak is read at the step's start (it changes over days).
  if (maximum) record(effect_tau, t0 + tau, p, step.start);
  if (tracks_threshold) {
    add_time_above(step, 0.0, effect_, tau, effect_tau);
    add_time_above(step, tau, effect_tau, h, effect_end);
  }
}

template <class Propagator>
void EffectPeaks::add_time_above(const SolveStep<Propagator>& step, double a, double effect_a, double b,
                                 double effect_b) {
  const bool above_a = effect_a >= threshold_;
  const bool above_b = effect_b >= threshold_;
  if (above_a && above_b) {
    metrics_.time_above_dissociation_h += b - a;
  } else if (above_a != above_b) {
    const Propagator& p = step.propagator;
    const auto excess = [&](double tau) {
      return p.signal(p.peek(step.start, tau, step.input), effect_signal_) - threshold_;
    };
    const double crossing = bracketed_root(excess, a, effect_a - threshold_, b, effect_b - threshold_);
    metrics_.time_above_dissociation_h += above_a ? crossing - a : b - crossing;
  }
}

}  // namespace ketasim
