#include "ketasim/simulate.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

#include "ketasim/errors.hpp"
#include "ketasim/exact_propagator.hpp"
#include "ketasim/ode_propagator.hpp"

namespace ketasim {

SimulationPlan SimulationPlan::from(const OutputSpec& output) {
  SimulationPlan plan;
  // The grid is whole steps: an end that is not a multiple of the step is cut back to one.
  plan.grid_step = output.grid_step;
  plan.grid_end = output.grid_end - output.grid_end % output.grid_step;
  plan.dissociation_threshold = output.dissociation_threshold;
  return plan;
}

namespace {

constexpr double kNgPerMlPerMgPerL = 1000.0;

// A root of f in (a, b) where f(a) and f(b) differ in sign, by the Illinois variant of regula
// falsi: superlinear, and it never leaves the bracket.
template <class Function>
double bracketed_root(const Function& f, double a, double fa, double b, double fb) {
  int side = 0;
  for (int iteration = 0; iteration < 100; ++iteration) {
    const double c = (a * fb - b * fa) / (fb - fa);
    if (!(c > a && c < b) || b - a <= 1e-12 * (1.0 + std::abs(b))) return 0.5 * (a + b);
    const double fc = f(c);
    if (fc == 0.0) return c;
    if ((fc > 0.0) == (fb > 0.0)) {
      b = c;
      fb = fc;
      if (side == -1) fa *= 0.5;
      side = -1;
    } else {
      a = c;
      fa = fc;
      if (side == +1) fb *= 0.5;
      side = +1;
    }
  }
  return 0.5 * (a + b);
}

// Metrics of the effect-site concentration that need more than the grid: the exact maximum
// per dose and the exact time above the dissociation threshold.
class EffectTracker {
 public:
  EffectTracker(const std::vector<Dose>& doses, double threshold_mg_per_L, SubjectMetrics& metrics)
      : doses_(doses), threshold_(threshold_mg_per_L), metrics_(metrics) {
    metrics_.peak_effect_ng_per_ml.assign(doses.size(), std::numeric_limits<double>::quiet_NaN());
    metrics_.peak_dissociation_time_h.assign(doses.size(), std::numeric_limits<double>::quiet_NaN());
  }

  // The dose windows [start of dose k, start of dose k+1): the point t closes the old window and
  // opens the new one.
  void at_point(Ticks t, double effect) {
    record(effect, t);
    if (next_dose_ >= doses_.size() || doses_[next_dose_].start > t) return;
    while (next_dose_ < doses_.size() && doses_[next_dose_].start <= t) {
      window_ = static_cast<int>(next_dose_++);
      peak_ = -1.0;
      record(effect, t);
    }
  }

  // A step from t0 (hours) of length h, with the concentrations (mg/L) at both ends. The effect
  // site rises while plasma exceeds it, so a sign change of (plasma - effect) brackets an extremum.
  template <class Propagator>
  void over_step(const Propagator& propagator, const typename Propagator::State& start, Ticks t0_ticks, Ticks h_ticks,
                 double rate, double plasma0, double effect0, double plasma1, double effect1) {
    // Most steps are monotone and below the threshold: nothing to do (the hot path).
    if ((plasma0 > effect0) == (plasma1 > effect1) && effect0 < threshold_ && effect1 < threshold_) return;
    const double t0 = ticks_to_hours(t0_ticks);
    const double h = ticks_to_hours(h_ticks);
    const double slope0 = plasma0 - effect0;
    const double slope1 = plasma1 - effect1;
    const bool tracks_threshold = threshold_ != std::numeric_limits<double>::infinity();
    const bool extremum_inside = slope0 != 0.0 && slope1 != 0.0 && (slope0 > 0.0) != (slope1 > 0.0);
    if (!extremum_inside) {
      if (tracks_threshold) add_time_above(propagator, start, 0.0, effect0, h, effect1, rate);
      return;
    }
    const bool maximum = slope0 > 0.0;
    if (!maximum && !tracks_threshold) return;  // a minimum matters only for the threshold
    const auto slope_at = [&](double tau) {
      const auto state = propagator.peek(start, tau, rate);
      return propagator.plasma(state) - propagator.effect(state);
    };
    const double tau = bracketed_root(slope_at, 0.0, slope0, h, slope1);
    const double effect_tau = propagator.effect(propagator.peek(start, tau, rate));
    if (maximum) record_interior(effect_tau, t0 + tau);
    if (tracks_threshold) {
      add_time_above(propagator, start, 0.0, effect0, tau, effect_tau, rate);
      add_time_above(propagator, start, tau, effect_tau, h, effect1, rate);
    }
  }

  // A point inside a dose window (no dose starts there).
  void record(double effect, Ticks t) {
    if (effect > peak_ && window_ >= 0) record_interior(effect, ticks_to_hours(t));
  }

 private:
  void record_interior(double effect, double time_h) {
    if (!(effect > peak_) || window_ < 0) return;
    peak_ = effect;
    const auto k = static_cast<std::size_t>(window_);
    metrics_.peak_effect_ng_per_ml[k] = effect * kNgPerMlPerMgPerL;
    metrics_.peak_dissociation_time_h[k] = time_h;
  }

  // The effect site is monotone on [a, b]: at most one threshold crossing.
  template <class Propagator>
  void add_time_above(const Propagator& propagator, const typename Propagator::State& start, double a,
                      double effect_a, double b, double effect_b, double rate) {
    const bool above_a = effect_a >= threshold_;
    const bool above_b = effect_b >= threshold_;
    if (above_a && above_b) {
      metrics_.time_above_dissociation_h += b - a;
    } else if (above_a != above_b) {
      const auto excess = [&](double tau) { return propagator.effect(propagator.peek(start, tau, rate)) - threshold_; };
      const double crossing = bracketed_root(excess, a, effect_a - threshold_, b, effect_b - threshold_);
      metrics_.time_above_dissociation_h += above_a ? crossing - a : b - crossing;
    }
  }

  const std::vector<Dose>& doses_;
  double threshold_;
  SubjectMetrics& metrics_;
  std::size_t next_dose_ = 0;
  int window_ = -1;
  double peak_ = -1.0;  // of the current window, mg/L
};

double dosed_by(const std::vector<Dose>& doses, Ticks end) {
  double dosed = 0.0;
  for (const Dose& dose : doses) {
    if (dose.start > end) continue;
    if (dose.duration == 0) {
      dosed += dose.amount_mg;
    } else {
      const double fraction = std::min(1.0, static_cast<double>(end - dose.start) / static_cast<double>(dose.duration));
      dosed += dose.amount_mg * fraction;
    }
  }
  return dosed;
}

// The integration loop shared by both paths. Breakpoints are the union of the output grid,
// infusion edges, bolus times, dose starts and week boundaries; between two breakpoints the
// input is constant and the propagator takes one step. Each point's concentrations are computed
// once and handed to the metrics.
template <class Propagator>
void integrate(const Propagator& propagator, const MammillaryEffectModel& model, const SimulationPlan& plan,
               const std::vector<Dose>& doses, const TrajectoryRows& rows, SubjectMetrics& metrics) {
  const std::vector<InputSegment> segments = input_segments(doses, plan.grid_end);
  std::vector<std::pair<Ticks, double>> boluses;
  std::vector<Ticks> dose_starts;
  for (const Dose& dose : doses) {
    if (dose.duration == 0) boluses.emplace_back(dose.start, dose.amount_mg);
    dose_starts.push_back(dose.start);
  }

  metrics.time_above_dissociation_h = 0.0;
  metrics.auc_per_week_ng_h_per_ml.assign(plan.weeks(), 0.0);
  EffectTracker effect_tracker(doses, model.effect_concentration_for_score(plan.dissociation_threshold), metrics);

  const auto grid_factors = propagator.factors(ticks_to_hours(plan.grid_step));
  const std::size_t n_time = plan.time_points();
  auto state = propagator.initial_state();
  double auc = 0.0, auc_at_week_start = 0.0, cmax = -1.0;
  std::size_t week = 0, grid = 0, segment = 0, bolus = 0, dose_start = 0;
  Ticks t = 0;
  Ticks next_grid_time = 0;  // grid * grid_step, kept by multiplication, never accumulated
  Ticks week_end = kTicksPerWeek;
  Ticks next_edge = 0;  // the next breakpoint that is not a grid point
  double plasma = propagator.plasma(state), effect = propagator.effect(state);

  const auto write_grid_row = [&](double plasma_now, double effect_now) {
    if (rows.plasma_ng_per_ml) rows.plasma_ng_per_ml[grid] = static_cast<float>(plasma_now * kNgPerMlPerMgPerL);
    if (rows.effect_ng_per_ml) rows.effect_ng_per_ml[grid] = static_cast<float>(effect_now * kNgPerMlPerMgPerL);
    if (rows.dissociation) rows.dissociation[grid] = static_cast<float>(model.dissociation(effect_now));
  };
  const auto update_cmax = [&](double plasma_now, Ticks t_now) {
    if (plasma_now > cmax) {
      cmax = plasma_now;
      metrics.tmax_h = ticks_to_hours(t_now);
    }
  };

  while (true) {
    // Same-time rule: infusion edges are segment boundaries (the next segment's rate already
    // holds both the stop and the start), then boluses, then the observation.
    if (bolus < boluses.size() && boluses[bolus].first == t) {
      for (; bolus < boluses.size() && boluses[bolus].first == t; ++bolus) propagator.bolus(state, boluses[bolus].second);
      plasma = propagator.plasma(state);
      effect = propagator.effect(state);
    }
    // Checked at every edge; a non-finite value inside a run of grid steps propagates to the next.
    if (!std::isfinite(plasma) || !std::isfinite(effect)) throw SolverError("the solution became non-finite");
    update_cmax(plasma, t);
    effect_tracker.at_point(t, effect);
    if (t == next_grid_time) {
      write_grid_row(plasma, effect);
      ++grid;
      next_grid_time = grid < n_time ? static_cast<Ticks>(grid) * plan.grid_step : std::numeric_limits<Ticks>::max();
    }
    if (t == week_end || t == plan.grid_end) {
      metrics.auc_per_week_ng_h_per_ml[week] = (auc - auc_at_week_start) * kNgPerMlPerMgPerL;
      auc_at_week_start = auc;
      ++week;
      week_end = static_cast<Ticks>(week + 1) * kTicksPerWeek;
    }
    if (t >= plan.grid_end) break;

    if (t >= next_edge) {
      while (segments[segment].end <= t) ++segment;
      while (dose_start < dose_starts.size() && dose_starts[dose_start] <= t) ++dose_start;
      next_edge = std::min({segments[segment].end, week_end, plan.grid_end});
      if (bolus < boluses.size()) next_edge = std::min(next_edge, boluses[bolus].first);
      if (dose_start < dose_starts.size()) next_edge = std::min(next_edge, dose_starts[dose_start]);
    }
    const double rate = segments[segment].rate_mg_per_h;
    // The hot path: whole grid steps strictly before the next edge, where nothing but the grid
    // happens (no dose, no segment change, no week boundary).
    if (t + plan.grid_step == next_grid_time) {
      while (next_grid_time < next_edge) {
        const auto start = state;
        auc += propagator.advance(state, grid_factors, rate);
        const double plasma_next = propagator.plasma(state), effect_next = propagator.effect(state);
        effect_tracker.over_step(propagator, start, t, plan.grid_step, rate, plasma, effect, plasma_next, effect_next);
        plasma = plasma_next;
        effect = effect_next;
        t = next_grid_time;
        update_cmax(plasma, t);
        effect_tracker.record(effect, t);
        write_grid_row(plasma, effect);
        // next_grid_time < next_edge <= grid_end, so the grid index stays in range here.
        next_grid_time = static_cast<Ticks>(++grid) * plan.grid_step;
      }
    }
    const Ticks next = std::min(next_edge, next_grid_time);
    const Ticks step = next - t;
    const auto start = state;
    auc += step == plan.grid_step ? propagator.advance(state, grid_factors, rate)
                                  : propagator.advance(state, propagator.factors(ticks_to_hours(step)), rate);
    const double plasma_next = propagator.plasma(state), effect_next = propagator.effect(state);
    effect_tracker.over_step(propagator, start, t, step, rate, plasma, effect, plasma_next, effect_next);
    plasma = plasma_next;
    effect = effect_next;
    t = next;
  }

  metrics.cmax_ng_per_ml = cmax * kNgPerMlPerMgPerL;
  metrics.auc_ng_h_per_ml = auc * kNgPerMlPerMgPerL;
  metrics.peak_dissociation.resize(doses.size());
  for (std::size_t k = 0; k < doses.size(); ++k)
    metrics.peak_dissociation[k] = model.dissociation(metrics.peak_effect_ng_per_ml[k] / kNgPerMlPerMgPerL);
  metrics.dosed_mg = dosed_by(doses, plan.grid_end);
  metrics.amount_in_body_end_mg = propagator.amount_in_body_mg(state);
  metrics.eliminated_mg = model.clearance_L_per_h() * auc;
}

}  // namespace

SolveOutcome simulate_subject(const MammillaryEffectModel& model, const SolverSpec& solver, const SimulationPlan& plan,
                              const std::vector<Dose>& doses, const TrajectoryRows& rows, SubjectMetrics& metrics) {
  SolveOutcome outcome;
  if (solver.method != SolverMethod::ode) {
    std::string why;
    if (const auto exact = ExactPropagator::create(model.linear_system(), &why)) {
      integrate(*exact, model, plan, doses, rows, metrics);
      return outcome;
    }
    if (solver.method == SolverMethod::exact) throw SolverError("exact stepping is not possible: " + why);
    outcome.note = why;
  }
  outcome.path = SolverPath::ode;
  integrate(OdePropagator(model, solver.rtol, solver.atol), model, plan, doses, rows, metrics);
  return outcome;
}

}  // namespace ketasim
