#include "ketasim/solve/simulate.hpp"

#include <algorithm>
#include <cmath>
#include <deque>
#include <functional>
#include <limits>

#include "ketasim/base/errors.hpp"
#include "ketasim/base/format.hpp"
#include "ketasim/solve/exact_propagator.hpp"
#include "ketasim/solve/ode_propagator.hpp"

namespace ketasim {

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kNgPerMlPerMgPerL = 1000.0;
// Dissociation scores below this count as 0 in the burden integral (score points).
constexpr double kBurdenFloorScore = 1e-4;

// A value of the solution that is not finite, or too large for the file's float32 trajectories,
// fails the subject: it is recorded with this message instead of being written as a result.
[[noreturn]] void fail_not_finite(const std::string& what, double value, double hours) {
  const std::string where = " at t = " + format_significant(hours, 10) + " h";
  if (std::isfinite(value)) {
    throw SolverError(what + " is " + format_significant(value) + where +
                      ", beyond the range of the float32 trajectories (3.4e+38)");
  }
  throw SolverError(what + " is not finite" + where + " (" + format_value(value) + ")");
}
[[noreturn]] void fail_not_finite(const std::string& what, double value, Ticks t) {
  fail_not_finite(what, value, ticks_to_hours(t));
}

}  // namespace

SimulationPlan SimulationPlan::from(const OutputSpec& output) {
  SimulationPlan plan;
  // The grid is whole steps: an end that is not a multiple of the step is cut back to one.
  plan.grid_step = output.grid_step;
  plan.grid_end = output.grid_end - output.grid_end % output.grid_step;
  plan.dissociation_threshold = output.dissociation_threshold;
  plan.assessments = output.assessments;
  plan.response_fraction = output.response_fraction;
  plan.remission_threshold = output.remission_threshold;
  plan.metabolites =
      std::find(output.metrics.begin(), output.metrics.end(), Metric::metabolites) != output.metrics.end();
  plan.response = std::find(output.metrics.begin(), output.metrics.end(), Metric::response) != output.metrics.end();
  plan.dissociation_burden =
      std::find(output.metrics.begin(), output.metrics.end(), Metric::dissociation_burden) != output.metrics.end();
  plan.peak_links =
      std::find(output.metrics.begin(), output.metrics.end(), Metric::peak_dissociation) != output.metrics.end();
  return plan;
}

SimulationPlan SimulationPlan::from(const OutputSpec& output, const Model& model) {
  SimulationPlan plan = from(output);
  plan.observation_times = output.observations.times;
  for (const ObservedVariable& variable : output.observations.variables) {
    const ModelOutput* found = model.find_output(variable.name);
    if (!found) throw ModelParameterError("model " + model.card().name + " has no output '" + variable.name + "'");
    plan.observed.push_back({found, variable.proportional, variable.additive});
  }
  return plan;
}

SubjectMetrics sized_metrics(const Model& model, const SimulationPlan& plan, std::size_t doses) {
  SubjectMetrics m;
  m.cmax_ng_per_ml = m.tmax_h = m.auc_ng_h_per_ml = m.time_above_dissociation_h = m.dosed_mg = kNaN;
  m.dissociation_burden_score_h = m.sessions_given = m.sessions_missed = m.sessions_triggered = kNaN;
  m.auc_per_week_ng_h_per_ml.assign(plan.weeks(), kNaN);
  m.peak_effect_ng_per_ml.assign(doses, kNaN);
  m.peak_effect_time_h.assign(doses, kNaN);
  m.peak_link.assign(model.links().size(), std::vector<double>(doses, kNaN));
  const std::size_t drugs = model.drugs().size();
  m.metabolite_cmax_ng_per_ml.assign(drugs - 1, kNaN);
  m.metabolite_tmax_h.assign(drugs - 1, kNaN);
  m.baseline_madrs = m.first_response_day = m.days_in_response = kNaN;
  m.responder_end_of_treatment = m.relapse_day = m.relapse_observed = kNaN;
  const std::size_t assessments = plan.assessments.size();
  m.madrs_at.assign(assessments, kNaN);
  m.madrs_observed_at.assign(assessments, kNaN);
  m.response_at.assign(assessments, kNaN);
  m.remission_at.assign(assessments, kNaN);
  m.amount_in_body_end_mg.assign(drugs, kNaN);
  m.eliminated_mg.assign(drugs, kNaN);
  m.formed_mg.assign(drugs, kNaN);
  m.given_mg.assign(drugs, kNaN);
  m.observed_ipred.assign(plan.observed.size(), std::vector<double>(plan.observation_times.size(), kNaN));
  m.observed_dv = m.observed_ipred;
  return m;
}

namespace {

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

// Metrics of the dissociation effect site that need more than the grid: the exact maximum per
// dose (where every effect-site link peaks too, the links being increasing) and the exact time
// above the dissociation threshold. The effect site rises while its driving plasma
// concentration exceeds it, so a sign change of (plasma - effect) brackets an extremum.
template <class Propagator>
class EffectTracker {
 public:
  using State = typename Propagator::State;
  using Input = typename Propagator::Input;

  // `propagator` is the caller's pointer to the current occasion's propagator (it may change).
  EffectTracker(const Propagator* const& propagator, const Model& model, const SubjectModel& subject,
                const std::vector<Dose>& doses, double threshold_score, SubjectMetrics& metrics)
      : propagator_(propagator),
        doses_(doses),
        metrics_(metrics),
        driver_(model.dissociation_driver()),
        effect_(model.dissociation_effect_site()),
        threshold_score_(threshold_score) {
    const LinkValues& link = subject.links[static_cast<std::size_t>(model.dissociation_link())];
    link_ = &link;
    tolerance_signal_ = link.tolerance_signal;
    threshold_ = link.input_for(threshold_score, 0.0);
    // Sized for the most doses: as-needed doses are inserted during the solve.
    peak_tolerance_.assign(metrics.peak_effect_ng_per_ml.size(), 0.0);
  }

  // When the link attenuates, the effect-site threshold follows the tolerance, which changes over
  // days: it is updated once per step from the state at the step's start.
  void start_step(const State& state) {
    if (tolerance_signal_ >= 0 && link_->attenuation > 0.0)
      threshold_ = link_->input_for(threshold_score_, propagator_->signal(state, tolerance_signal_));
  }

  // The dose windows [start of dose k, start of dose k+1): the point t closes the old window and
  // opens the new one.
  void at_point(Ticks t, const State& state, double effect) {
    record(effect, t, state);
    if (next_dose_ >= doses_.size() || doses_[next_dose_].start > t) return;
    while (next_dose_ < doses_.size() && doses_[next_dose_].start <= t) {
      window_ = static_cast<int>(next_dose_++);
      peak_ = -1.0;
      record(effect, t, state);
    }
  }

  // A step from t0 of length h at a constant input, with the concentrations (mg/L) at both ends.
  void over_step(const State& start, Ticks t0_ticks, Ticks h_ticks, const Input& input, double plasma0, double effect0,
                 double plasma1, double effect1) {
    // Most steps are monotone and below the threshold: nothing to do (the hot path, inlined).
    if ((plasma0 > effect0) == (plasma1 > effect1) && effect0 < threshold_ && effect1 < threshold_) return;
    eventful_step(start, t0_ticks, h_ticks, input, plasma0, effect0, plasma1, effect1);
  }

 private:
  [[gnu::noinline]] void eventful_step(const State& start, Ticks t0_ticks, Ticks h_ticks, const Input& input,
                                       double plasma0, double effect0, double plasma1, double effect1) {
    const double t0 = ticks_to_hours(t0_ticks);
    const double h = ticks_to_hours(h_ticks);
    const double slope0 = plasma0 - effect0;
    const double slope1 = plasma1 - effect1;
    const bool tracks_threshold = threshold_ != std::numeric_limits<double>::infinity();
    const bool extremum_inside = slope0 != 0.0 && slope1 != 0.0 && (slope0 > 0.0) != (slope1 > 0.0);
    if (!extremum_inside) {
      if (tracks_threshold) add_time_above(start, 0.0, effect0, h, effect1, input);
      return;
    }
    const bool maximum = slope0 > 0.0;
    if (!maximum && !tracks_threshold) return;  // a minimum matters only for the threshold
    const auto slope_at = [&](double tau) {
      const auto state = propagator_->peek(start, tau, input);
      return propagator_->signal(state, driver_) - propagator_->signal(state, effect_);
    };
    const double tau = bracketed_root(slope_at, 0.0, slope0, h, slope1);
    const State at_peak = propagator_->peek(start, tau, input);
    const double effect_tau = propagator_->signal(at_peak, effect_);
    if (maximum) record_interior(effect_tau, t0 + tau, start);
    if (tracks_threshold) {
      add_time_above(start, 0.0, effect0, tau, effect_tau, input);
      add_time_above(start, tau, effect_tau, h, effect1, input);
    }
  }

 public:
  // The tolerance signal at each dose's peak (0 without attenuation).
  const std::vector<double>& peak_tolerance() const { return peak_tolerance_; }

 private:
  void record(double effect, Ticks t, const State& state) {
    if (effect > peak_ && window_ >= 0) record_interior(effect, ticks_to_hours(t), state);
  }

  void record_interior(double effect, double time_h, const State& state) {
    if (!(effect > peak_) || window_ < 0) return;
    peak_ = effect;
    const auto k = static_cast<std::size_t>(window_);
    metrics_.peak_effect_ng_per_ml[k] = effect * kNgPerMlPerMgPerL;
    metrics_.peak_effect_time_h[k] = time_h;
    if (tolerance_signal_ >= 0) peak_tolerance_[k] = propagator_->signal(state, tolerance_signal_);
  }

  // The effect site is monotone on [a, b]: at most one threshold crossing.
  void add_time_above(const State& start, double a, double effect_a, double b, double effect_b, const Input& input) {
    const bool above_a = effect_a >= threshold_;
    const bool above_b = effect_b >= threshold_;
    if (above_a && above_b) {
      metrics_.time_above_dissociation_h += b - a;
    } else if (above_a != above_b) {
      const auto excess = [&](double tau) {
        return propagator_->signal(propagator_->peek(start, tau, input), effect_) - threshold_;
      };
      const double crossing = bracketed_root(excess, a, effect_a - threshold_, b, effect_b - threshold_);
      metrics_.time_above_dissociation_h += above_a ? crossing - a : b - crossing;
    }
  }

  const Propagator* const& propagator_;
  const std::vector<Dose>& doses_;
  SubjectMetrics& metrics_;
  int driver_;
  int effect_;
  const LinkValues* link_ = nullptr;
  int tolerance_signal_ = -1;
  double threshold_score_;
  double threshold_;  // effect-site concentration (mg/L) of the threshold score
  std::vector<double> peak_tolerance_;
  std::size_t next_dose_ = 0;
  int window_ = -1;
  double peak_ = -1.0;  // of the current window, mg/L
};

// The MADRS-based metrics, from the model's score at every point (grid and breakpoints) and at
// the assessments. Crossings of the response threshold between two points are placed by linear
// interpolation of the score.
class ResponseTracker {
 public:
  ResponseTracker(const DepressionValues& depression, const SimulationPlan& plan, const SubjectContext& context,
                  Ticks first_session, Ticks last_session, bool has_sessions, SubjectMetrics& metrics)
      : depression_(depression),
        plan_(plan),
        context_(context),
        metrics_(metrics),
        first_session_(first_session),
        last_session_(last_session),
        threshold_((1.0 - plan.response_fraction) * context.baseline_madrs) {
    metrics_.baseline_madrs = context.baseline_madrs;
    metrics_.days_in_response = 0.0;
    end_of_treatment_ = has_sessions ? last_session + kTicksPerDay : -1;
  }

  // The times that must be breakpoints: the assessments and the end of treatment.
  std::vector<Ticks> marks() const {
    std::vector<Ticks> times;
    for (const Ticks a : plan_.assessments) times.push_back(first_session_ + a);
    if (end_of_treatment_ >= 0) times.push_back(end_of_treatment_);
    return times;
  }

  void at_point(Ticks t, double score) {
    if (!std::isfinite(score)) [[unlikely]]
      fail_not_finite("madrs", score, t);
    const bool responding = score <= threshold_;
    if (previous_time_ >= 0) {
      const double t0 = ticks_to_hours(previous_time_);
      const double t1 = ticks_to_hours(t);
      double crossing = t1;
      if (responding != previous_responding_) {
        const double d0 = previous_score_ - threshold_;
        const double d1 = score - threshold_;
        crossing = d0 == d1 ? t1 : t0 + (t1 - t0) * d0 / (d0 - d1);
        if (responding && std::isnan(metrics_.first_response_day) && previous_time_ >= first_session_)
          metrics_.first_response_day = (crossing - ticks_to_hours(first_session_)) / kHoursPerDay;
        if (!responding && relapse_watch_ && previous_time_ >= end_of_treatment_) {
          metrics_.relapse_day = (crossing - ticks_to_hours(last_session_)) / kHoursPerDay;
          metrics_.relapse_observed = 1.0;
          relapse_watch_ = false;
        }
      }
      if (responding && previous_responding_)
        metrics_.days_in_response += (t1 - t0) / kHoursPerDay;
      else if (responding)
        metrics_.days_in_response += (t1 - crossing) / kHoursPerDay;
      else if (previous_responding_)
        metrics_.days_in_response += (crossing - t0) / kHoursPerDay;
    } else if (responding && t >= first_session_) {
      metrics_.first_response_day = ticks_to_hours(t - first_session_) / kHoursPerDay;
    }
    if (t == end_of_treatment_) {
      metrics_.responder_end_of_treatment = responding ? 1.0 : 0.0;
      relapse_watch_ = responding;
    }
    for (std::size_t k = 0; k < plan_.assessments.size(); ++k) {
      if (first_session_ + plan_.assessments[k] != t) continue;
      const double observed = std::clamp(score + depression_.residual_sd * context_.residual_normals[k], 0.0, 60.0);
      metrics_.madrs_at[k] = score;
      metrics_.madrs_observed_at[k] = observed;
      metrics_.response_at[k] = observed <= threshold_ ? 1.0 : 0.0;
      metrics_.remission_at[k] = observed <= plan_.remission_threshold ? 1.0 : 0.0;
    }
    previous_time_ = t;
    previous_score_ = score;
    previous_responding_ = responding;
  }

  void finish(Ticks grid_end) {
    if (relapse_watch_) {  // still in response at the end: censored
      metrics_.relapse_day = ticks_to_hours(grid_end - last_session_) / kHoursPerDay;
      metrics_.relapse_observed = 0.0;
    }
  }

 private:
  const DepressionValues& depression_;
  const SimulationPlan& plan_;
  const SubjectContext& context_;
  SubjectMetrics& metrics_;
  Ticks first_session_;
  Ticks last_session_;
  double threshold_;
  Ticks end_of_treatment_ = -1;
  Ticks previous_time_ = -1;
  double previous_score_ = 0.0;
  bool previous_responding_ = false;
  bool relapse_watch_ = false;
};

// Drug entering each drug by the end of the grid (constant-rate inputs pro rata).
std::vector<double> given_by(const Model& model, const std::vector<ModelInput>& inputs, const SubjectModel& subject,
                             Ticks end) {
  std::vector<double> given(model.drugs().size(), 0.0);
  for (const ModelInput& input : inputs) {
    if (input.start > end) continue;
    const double fraction =
        input.duration == 0
            ? 1.0
            : std::min(1.0, static_cast<double>(end - input.start) / static_cast<double>(input.duration));
    for (std::size_t d = 0; d < given.size(); ++d)
      given[d] += input.amount * fraction *
                  subject.drug_amount[d].dot(subject.channels[static_cast<std::size_t>(input.channel)].transpose());
  }
  return given;
}

// Builds the propagator of an occasion's system; nullopt when the exact path cannot step it.
template <class Propagator>
using PropagatorFactory = std::function<std::optional<Propagator>(const SubjectModel&)>;

// An occasion's system cannot be stepped exactly: the subject is solved again on the ODE path.
class ExactStepUnavailable : public SolverError {
 public:
  using SolverError::SolverError;
};

// The inputs of the doses, as the integration loop consumes them: constant-input segments, jumps,
// and the breakpoints that are neither (dose starts, assessments, ...). Rebuilt whole when an
// as-needed rule adds a dose.
template <class Propagator>
struct InputPlan {
  std::vector<ModelInput> inputs;
  std::vector<InputSegment> segments;
  std::vector<typename Propagator::Input> segment_input;
  std::vector<std::size_t> jumps;  // indices into inputs of the jumps, by start
  std::vector<Ticks> marks;        // sorted, unique

  void build(const Propagator& propagator, const Model& model, const SubjectModel& subject, const SimulationPlan& plan,
             const std::vector<Dose>& doses, std::vector<Ticks> extra_marks) {
    inputs = model_inputs(doses, model, subject);
    segments = input_segments(inputs, plan.grid_end, model.channel_count());
    segment_input.clear();
    for (const InputSegment& segment : segments) {
      StateVector rates = StateVector::Zero(subject.states);
      for (std::size_t c = 0; c < segment.rates.size(); ++c)
        if (segment.rates[c] != 0.0) rates += segment.rates[c] * subject.channels[c];
      segment_input.push_back(propagator.input(rates));
    }
    jumps.clear();
    for (std::size_t i = 0; i < inputs.size(); ++i)
      if (inputs[i].duration == 0) jumps.push_back(i);
    marks = std::move(extra_marks);
    for (const Dose& dose : doses) marks.push_back(dose.start);
    std::sort(marks.begin(), marks.end());
    marks.erase(std::unique(marks.begin(), marks.end()), marks.end());
  }
};

// State-triggered dosing (an arm's as-needed rule): decides, step by step, whether the subject's
// MADRS rose above the threshold while a dose was allowed, and when exactly.
class DoseTrigger {
 public:
  DoseTrigger(const TriggeredDosing& dosing, double baseline_madrs, Ticks grid_end)
      : dosing_(dosing),
        threshold_(dosing.rule.threshold == AsNeeded::Threshold::madrs_above
                       ? dosing.rule.value
                       : (1.0 - dosing.rule.value) * baseline_madrs),
        until_(std::min(grid_end + 1, dosing.rule.until.value_or(grid_end + 1))) {}

  double threshold() const { return threshold_; }
  const TriggeredDosing& dosing() const { return dosing_; }
  int fired() const { return fired_; }
  void fire() { ++fired_; }

  // The first time a dose is allowed after `t`, given the doses so far: `from`, and min_interval
  // after the last session started at or before t. Past `until` or the limit, or while a triggered
  // dose waits for its delay: never (the pending dose's start is a breakpoint, where this is asked
  // again).
  Ticks allowed_from(Ticks t, const std::vector<Dose>& doses) const {
    if (dosing_.rule.max_doses && fired_ >= *dosing_.rule.max_doses) return kNever;
    Ticks allowed = dosing_.rule.from;
    for (const Dose& dose : doses) {
      if (dose.start <= t)
        allowed = std::max(allowed, dose.start + dosing_.rule.min_interval);
      else if (dose.triggered)
        return kNever;
    }
    return allowed < until_ ? allowed : kNever;
  }

  // Times that must be breakpoints so that no step straddles a change of allowed_from: `from`,
  // and min_interval after every dose.
  std::vector<Ticks> marks(const std::vector<Dose>& doses) const {
    std::vector<Ticks> times{dosing_.rule.from};
    for (const Dose& dose : doses) times.push_back(dose.start + dosing_.rule.min_interval);
    return times;
  }

  Ticks until() const { return until_; }

  static constexpr Ticks kNever = std::numeric_limits<Ticks>::max();

 private:
  const TriggeredDosing& dosing_;
  double threshold_;
  Ticks until_;  // exclusive
  int fired_ = 0;
};

// The integration loop shared by both paths. Breakpoints are the union of the output grid,
// input edges, jumps, dose starts, week boundaries, assessments and the end of treatment;
// between two breakpoints the input is constant and the propagator takes one step. Each point's
// values are computed once and handed to the outputs and metrics.
template <class Propagator>
void integrate(const Propagator& propagator, const Model& model, const SubjectModel& subject,
               const SimulationPlan& plan, std::vector<Dose>& doses, const SubjectContext& context,
               const TrajectoryRows& rows, SubjectMetrics& metrics,
               const PropagatorFactory<Propagator>& make_propagator) {
  using State = typename Propagator::State;
  using Input = typename Propagator::Input;
  // The propagator of the current occasion: the subject's own until a session opens an occasion
  // with parameters of its own (inter-occasion variability).
  const Propagator* p = &propagator;
  const SubjectModel* system = &subject;     // the current occasion's system
  std::deque<SubjectModel> occasion_models;  // kept alive: an ODE propagator refers to its model
  std::deque<Propagator> occasion_propagators;

  // The treatment course the response metrics refer to is the doses known before the solve
  // (as-needed sessions are maintenance, given because of a relapse).
  const bool has_sessions = !doses.empty();
  const Ticks first_session = has_sessions ? doses.front().start : 0;
  const Ticks last_session = has_sessions ? doses.back().start : 0;
  std::optional<ResponseTracker> response;
  if (plan.response && subject.depression)
    response.emplace(*subject.depression, plan, context, first_session, last_session, has_sessions, metrics);
  std::optional<DoseTrigger> trigger;
  if (context.as_needed && subject.depression)
    trigger.emplace(*context.as_needed, context.baseline_madrs, plan.grid_end);
  const auto extra_marks = [&] {
    std::vector<Ticks> marks = plan.observation_times;
    if (response)
      for (const Ticks mark : response->marks()) marks.push_back(mark);
    if (trigger)
      for (const Ticks mark : trigger->marks(doses)) marks.push_back(mark);
    return marks;
  };
  InputPlan<Propagator> inputs;
  inputs.build(*p, model, subject, plan, doses, extra_marks());

  std::optional<EffectTracker<Propagator>> effect_tracker;
  metrics.time_above_dissociation_h = 0.0;
  metrics.dissociation_burden_score_h = 0.0;
  if (model.dissociation_link() >= 0)
    effect_tracker.emplace(p, model, subject, doses, plan.dissociation_threshold, metrics);
  const LinkValues* dissociation_link = model.dissociation_link() >= 0 && plan.dissociation_burden
                                            ? &subject.links[static_cast<std::size_t>(model.dissociation_link())]
                                            : nullptr;
  // Below the input at which the score is kBurdenFloorScore (without tolerance, the highest score
  // for a given input), the score counts as 0 in the burden integral: this spares the link's pow()
  // at most points between doses, for an error under kBurdenFloorScore times the time below it.
  const double burden_floor = dissociation_link ? dissociation_link->input_for(kBurdenFloorScore, 0.0) : 0.0;
  metrics.auc_per_week_ng_h_per_ml.assign(plan.weeks(), 0.0);

  const int plasma_signal = model.drugs()[static_cast<std::size_t>(model.dosed_drug())].plasma_signal;
  const int driver = model.dissociation_driver();
  const int effect_site = model.dissociation_effect_site();
  std::vector<std::pair<std::size_t, int>> metabolites;  // metric slot, plasma signal
  if (plan.metabolites) {
    std::size_t slot = 0;
    for (std::size_t d = 0; d < model.drugs().size(); ++d)
      if (static_cast<int>(d) != model.dosed_drug()) metabolites.emplace_back(slot++, model.drugs()[d].plasma_signal);
    for (const auto& [slot_index, signal] : metabolites) metrics.metabolite_cmax_ng_per_ml[slot_index] = -1.0;
  }

  auto grid_factors = p->factors(ticks_to_hours(plan.grid_step));
  const std::size_t n_time = plan.time_points();
  State state = p->initial_state();
  double cmax = -1.0;
  double auc_at_week_start = 0.0;
  std::size_t week = 0, grid = 0, segment = 0, jump = 0, mark = 0;
  Ticks t = 0;
  Ticks observed_at = -1;    // the last point observed (a point is observed once, also after a re-plan)
  Ticks next_grid_time = 0;  // grid * grid_step, kept by multiplication, never accumulated
  Ticks week_end = kTicksPerWeek;
  Ticks next_edge = 0;  // the next breakpoint that is not a grid point
  Ticks trigger_allowed = trigger ? trigger->allowed_from(0, doses) : DoseTrigger::kNever;
  double burden_time_h = 0.0, burden_score = 0.0;  // the previous point of the dissociation integral

  const auto link_value = [&](const LinkValues& link, const State& at) {
    const double tolerance = link.tolerance_signal >= 0 ? p->signal(at, link.tolerance_signal) : 0.0;
    return link(p->signal(at, link.input_signal), tolerance);
  };
  // The model's MADRS at `hours` from the simulation start in state `at`.
  const auto madrs_at_hours = [&](double hours, const State& at) {
    const DepressionValues& depression = *subject.depression;
    const double session = depression.session_signal >= 0 ? p->signal(at, depression.session_signal) : 0.0;
    const double since_first =
        has_sessions && hours >= ticks_to_hours(first_session) ? hours - ticks_to_hours(first_session) : -1.0;
    return depression.score(context.baseline_madrs, since_first, p->signal(at, depression.drug_signal), session,
                            context.oral_antidepressant);
  };
  const auto madrs = [&](Ticks when, const State& at) { return madrs_at_hours(ticks_to_hours(when), at); };
  // Linear signals that cannot be negative: the system is positive (A has no negative
  // off-diagonal entry, every input is >= 0) and the signal's row has no negative weight. Exact
  // stepping in modal coordinates leaves rounding noise (about 1e-18) around zero in them once the
  // drug is gone; such values are written as 0.
  // Only trajectories and observations read it: a metrics-only run skips the check.
  std::vector<char> nonnegative(static_cast<std::size_t>(subject.signals.rows()), 0);
  if (!rows.empty() || !plan.observed.empty()) {
    bool positive_system = true;
    for (Eigen::Index i = 0; i < subject.A.rows(); ++i)
      for (Eigen::Index j = 0; j < subject.A.cols(); ++j) positive_system &= i == j || subject.A(i, j) >= 0.0;
    for (Eigen::Index k = 0; k < subject.signals.rows(); ++k)
      nonnegative[static_cast<std::size_t>(k)] = positive_system && subject.signals.row(k).minCoeff() >= 0.0;
  }
  // A model output at the current time t, in its display unit.
  const auto output_value = [&](const ModelOutput& output, const State& at) {
    double value = 0.0;
    switch (output.kind) {
      case OutputKind::linear:
        value = p->signal(at, output.index);
        if (value < 0.0 && nonnegative[static_cast<std::size_t>(output.index)]) value = 0.0;
        break;
      case OutputKind::link:
        value = link_value(subject.links[static_cast<std::size_t>(output.index)], at);
        break;
      case OutputKind::depression:
        value = madrs(t, at);
        break;
    }
    return value * output.display_per_base;
  };
  const auto write_grid_row = [&](const State& at) {
    for (const TrajectoryRow& row : rows) {
      const double value = output_value(*row.output, at);
      const auto stored = static_cast<float>(value);
      if (!std::isfinite(stored)) [[unlikely]]
        fail_not_finite(row.output->name, value, t);
      row.values[grid] = stored;
    }
  };
  std::size_t next_sample = 0;  // the next sampling time of plan.observation_times
  const std::size_t samples = plan.observation_times.size();
  const auto sample = [&](const State& at) {
    for (; next_sample < samples && plan.observation_times[next_sample] <= t; ++next_sample) {
      for (std::size_t v = 0; v < plan.observed.size(); ++v) {
        const ObservedOutput& observed = plan.observed[v];
        const double ipred = output_value(*observed.output, at);
        const double sd = std::hypot(observed.additive, observed.proportional * ipred);
        metrics.observed_ipred[v][next_sample] = ipred;
        metrics.observed_dv[v][next_sample] = ipred + sd * context.observation_normals[v * samples + next_sample];
      }
    }
  };
  // Everything observed at a point (a grid point or a breakpoint) except the trajectories. The
  // maximum is checked inline at every grid point; the rest, which many runs do not ask for, is
  // one call.
  const auto observe_more = [&](const State& at) {
    for (const auto& [slot, signal] : metabolites) {
      const double concentration = p->signal(at, signal) * kNgPerMlPerMgPerL;
      if (concentration > metrics.metabolite_cmax_ng_per_ml[slot]) {
        metrics.metabolite_cmax_ng_per_ml[slot] = concentration;
        metrics.metabolite_tmax_h[slot] = ticks_to_hours(t);
      }
    }
    if (response) response->at_point(t, madrs(t, at));
    if (dissociation_link) {
      const double hours = ticks_to_hours(t);
      const double input = p->signal(at, dissociation_link->input_signal);
      const double score = input < burden_floor ? 0.0 : link_value(*dissociation_link, at);
      metrics.dissociation_burden_score_h += 0.5 * (score + burden_score) * (hours - burden_time_h);
      burden_time_h = hours;
      burden_score = score;
    }
  };
  const bool observes_more = !metabolites.empty() || response || dissociation_link;
  const auto observe = [&](const State& at, double plasma) __attribute__((always_inline)) {
    if (plasma > cmax) {
      cmax = plasma;
      metrics.tmax_h = ticks_to_hours(t);
    }
    if (observes_more) observe_more(at);
  };
  // The next breakpoint after t that is not a grid point.
  const auto find_next_edge = [&] {
    while (inputs.segments[segment].end <= t) ++segment;
    while (mark < inputs.marks.size() && inputs.marks[mark] <= t) ++mark;
    next_edge = std::min({inputs.segments[segment].end, week_end, plan.grid_end});
    if (jump < inputs.jumps.size()) next_edge = std::min(next_edge, inputs.inputs[inputs.jumps[jump]].start);
    if (mark < inputs.marks.size()) next_edge = std::min(next_edge, inputs.marks[mark]);
  };
  // The step [t0, t1] took the state from `start` to `end`: did the MADRS rise above the trigger's
  // threshold while a dose was allowed? Returns when (the crossing, rounded up to a tick), or -1.
  // Steps never straddle a change of the allowed time (it is a breakpoint), so within a step a dose
  // is either allowed from some point on or not at all.
  const auto trigger_time = [&](const State& start, Ticks t0, Ticks t1, const State& end, const Input& input) -> Ticks {
    if (t1 < trigger_allowed) return -1;
    const double threshold = trigger->threshold();
    const double excess_end = madrs(t1, end) - threshold;
    if (std::isnan(excess_end)) [[unlikely]]
      fail_not_finite("madrs", excess_end, t1);
    if (!(excess_end > 0.0)) return -1;
    const Ticks low = std::max(t0, trigger_allowed);
    const double tau_low = ticks_to_hours(low - t0);
    const auto excess = [&](double tau) {
      return madrs_at_hours(ticks_to_hours(t0) + tau, p->peek(start, tau, input)) - threshold;
    };
    const double excess_low = low == t1 ? excess_end : excess(tau_low);
    const double tau =
        excess_low > 0.0 ? tau_low : bracketed_root(excess, tau_low, excess_low, ticks_to_hours(t1 - t0), excess_end);
    const Ticks at =
        std::clamp<Ticks>(t0 + static_cast<Ticks>(std::ceil(tau * static_cast<double>(kTicksPerHour))), low, t1);
    return at < trigger->until() ? std::max(at, t0 + 1) : -1;
  };
  // Rebuilds the inputs of `doses` for the current system and propagator (after a dose was added,
  // or an occasion began) and finds the place of t in them again; the jumps at t count as applied
  // when `jumps_at_t_applied`.
  const auto replan = [&](bool jumps_at_t_applied) {
    inputs.build(*p, model, *system, plan, doses, extra_marks());
    const auto applied = [&](std::size_t i) {
      return inputs.inputs[i].start < t || (jumps_at_t_applied && inputs.inputs[i].start == t);
    };
    jump = static_cast<std::size_t>(std::partition_point(inputs.jumps.begin(), inputs.jumps.end(), applied) -
                                    inputs.jumps.begin());
    segment = mark = 0;
    find_next_edge();
  };
  // The trigger fired at `at` (> t, or 0 before the start): insert the dose it gives, in order.
  const auto add_triggered_dose = [&](Ticks at) {
    Dose dose = trigger->dosing().dose;
    dose.start = trigger->dosing().rule.dose_time(at);
    dose.triggered = true;
    if (doses.size() >= metrics.peak_effect_ng_per_ml.size())
      throw SolverError("as-needed dosing gave more doses than the arm's bound (" + std::to_string(doses.size()) + ")");
    const auto position = std::upper_bound(doses.begin(), doses.end(), dose.start,
                                           [](Ticks time, const Dose& d) { return time < d.start; });
    doses.insert(position, dose);
    trigger->fire();
    replan(observed_at == t);  // the jumps at t have been applied once t was observed
    trigger_allowed = trigger->allowed_from(dose.start, doses);
  };

  if (trigger && trigger_allowed == 0 && madrs(0, state) > trigger->threshold()) add_triggered_dose(0);

  double plasma = p->signal(state, plasma_signal);
  double driver_value = driver >= 0 ? p->signal(state, driver) : 0.0;
  double effect = effect_site >= 0 ? p->signal(state, effect_site) : 0.0;
  // The ODE path may stop in a step: the step started at t.
  try {
    while (true) {
      if (context.cancel != nullptr && context.cancel->load(std::memory_order_relaxed))
        throw InterruptedError("interrupted");
      if (t != observed_at) {
        observed_at = t;
        if (context.occasion_model) {
          // A session starting now opens an occasion (the last of several at the same time): the
          // state carries over in state-space coordinates to the occasion's system.
          const auto opening = std::find_if(doses.rbegin(), doses.rend(), [&](const Dose& d) { return d.start == t; });
          if (opening != doses.rend()) {
            const int k = static_cast<int>(doses.rend() - opening) - 1;
            system = &occasion_models.emplace_back(context.occasion_model(k));
            std::optional<Propagator> next = make_propagator(*system);
            if (!next) throw ExactStepUnavailable("occasion " + std::to_string(k) + ": exact stepping is not possible");
            const State carried = next->from_physical(p->physical(state), p->physical_integral(state));
            p = &occasion_propagators.emplace_back(std::move(*next));
            state = carried;
            grid_factors = p->factors(ticks_to_hours(plan.grid_step));
            replan(false);  // the jumps at t come next, in the new coordinates
          }
        }
        // Same-time rule: input edges are segment boundaries (the next segment's rates already hold
        // both the stop and the start), then jumps, then the observation.
        if (jump < inputs.jumps.size() && inputs.inputs[inputs.jumps[jump]].start == t) {
          for (; jump < inputs.jumps.size() && inputs.inputs[inputs.jumps[jump]].start == t; ++jump) {
            const ModelInput& input = inputs.inputs[inputs.jumps[jump]];
            p->bolus(state, input.channel, input.amount);
          }
          plasma = p->signal(state, plasma_signal);
          if (driver >= 0) driver_value = p->signal(state, driver);
          if (effect_site >= 0) effect = p->signal(state, effect_site);
        }
        // Checked at every edge; a non-finite value inside a run of grid steps propagates to the next.
        if (!std::isfinite(plasma)) fail_not_finite("the plasma concentration", plasma, t);
        if (!std::isfinite(effect)) fail_not_finite("the effect-site concentration", effect, t);
        observe(state, plasma);
        if (next_sample < samples && plan.observation_times[next_sample] == t) sample(state);
        if (effect_tracker) effect_tracker->at_point(t, state, effect);
        if (t == next_grid_time) {
          write_grid_row(state);
          ++grid;
          next_grid_time =
              grid < n_time ? static_cast<Ticks>(grid) * plan.grid_step : std::numeric_limits<Ticks>::max();
        }
        if (t == week_end || t == plan.grid_end) {
          const double auc = p->signal_integral(state, plasma_signal);
          metrics.auc_per_week_ng_h_per_ml[week] = (auc - auc_at_week_start) * kNgPerMlPerMgPerL;
          auc_at_week_start = auc;
          ++week;
          week_end = static_cast<Ticks>(week + 1) * kTicksPerWeek;
        }
        if (t >= plan.grid_end) break;
        if (t >= next_edge) find_next_edge();
        if (trigger) trigger_allowed = trigger->allowed_from(t, doses);
      }

      const Input* input = &inputs.segment_input[segment];
      // The hot path: whole grid steps strictly before the next edge, where nothing but the grid
      // happens (no dose, no segment change, no week boundary, no assessment).
      bool replanned = false;
      if (t + plan.grid_step == next_grid_time) {
        while (next_grid_time < next_edge) {
          if (effect_tracker) effect_tracker->start_step(state);
          const State start = state;
          p->advance(state, grid_factors, *input);
          if (trigger) {
            const Ticks at = trigger_time(start, t, next_grid_time, state, *input);
            if (at >= 0) {  // back to the start of the step; the loop steps to the dose next
              state = start;
              add_triggered_dose(at);
              replanned = true;
              break;
            }
          }
          const double plasma_next = p->signal(state, plasma_signal);
          if (effect_tracker) {
            const double driver_next = p->signal(state, driver);
            const double effect_next = p->signal(state, effect_site);
            effect_tracker->over_step(start, t, plan.grid_step, *input, driver_value, effect, driver_next, effect_next);
            driver_value = driver_next;
            effect = effect_next;
          }
          plasma = plasma_next;
          t = next_grid_time;
          observed_at = t;
          observe(state, plasma);
          if (effect_tracker) effect_tracker->at_point(t, state, effect);
          write_grid_row(state);
          // next_grid_time < next_edge <= grid_end, so the grid index stays in range here.
          next_grid_time = static_cast<Ticks>(++grid) * plan.grid_step;
        }
      }
      if (replanned) continue;
      const Ticks next = std::min(next_edge, next_grid_time);
      const Ticks step = next - t;
      if (effect_tracker) effect_tracker->start_step(state);
      const State start = state;
      if (step == plan.grid_step)
        p->advance(state, grid_factors, *input);
      else
        p->advance(state, p->factors(ticks_to_hours(step)), *input);
      if (trigger) {
        const Ticks at = trigger_time(start, t, next, state, *input);
        if (at >= 0) {
          state = start;
          add_triggered_dose(at);
          continue;
        }
      }
      plasma = p->signal(state, plasma_signal);
      if (effect_tracker) {
        const double driver_next = p->signal(state, driver);
        const double effect_next = p->signal(state, effect_site);
        effect_tracker->over_step(start, t, step, *input, driver_value, effect, driver_next, effect_next);
        driver_value = driver_next;
        effect = effect_next;
      }
      t = next;
    }
  } catch (const OdeStepCapReached& cap) {
    const double from_h = ticks_to_hours(t);
    throw SolverError("the ODE solver reached its cap of " + std::to_string(cap.cap) +
                      " steps at t = " + format_significant(from_h + cap.reached_h, 10) + " h, in the step from " +
                      format_significant(from_h, 10) + " h to " + format_significant(from_h + cap.duration_h, 10) +
                      " h: " + cap.reason);
  }

  metrics.cmax_ng_per_ml = cmax * kNgPerMlPerMgPerL;
  metrics.auc_ng_h_per_ml = p->signal_integral(state, plasma_signal) * kNgPerMlPerMgPerL;
  if (effect_tracker && plan.peak_links) {
    for (std::size_t l = 0; l < subject.links.size(); ++l) {
      const LinkValues& link = subject.links[l];
      // Only links of the dissociation effect site peak where it peaks.
      if (link.input_signal != effect_site) continue;
      const double display = model.link_output(l).display_per_base;
      for (std::size_t k = 0; k < doses.size(); ++k) {
        const double peak = metrics.peak_effect_ng_per_ml[k] / kNgPerMlPerMgPerL;
        if (std::isnan(peak)) continue;  // the dose was not given within the grid
        const double value = link(peak, effect_tracker->peak_tolerance()[k]) * display;
        if (!std::isfinite(value))
          fail_not_finite("peak_" + model.links()[l]->name, value, metrics.peak_effect_time_h[k]);
        metrics.peak_link[l][k] = value;
      }
    }
  }
  if (!effect_tracker) metrics.time_above_dissociation_h = kNaN;
  if (!dissociation_link) metrics.dissociation_burden_score_h = kNaN;
  for (auto& value : metrics.metabolite_cmax_ng_per_ml)
    if (value < 0.0) value = kNaN;
  if (response) response->finish(plan.grid_end);
  metrics.sessions_given = static_cast<double>(
      std::count_if(doses.begin(), doses.end(), [&](const Dose& dose) { return dose.start <= plan.grid_end; }));
  metrics.sessions_triggered = trigger ? trigger->fired() : 0.0;
  const std::vector<double> given = given_by(model, inputs.inputs, subject, plan.grid_end);
  metrics.dosed_mg = given[static_cast<std::size_t>(model.dosed_drug())];
  for (std::size_t d = 0; d < model.drugs().size(); ++d) {
    metrics.amount_in_body_end_mg[d] = p->apply(state, subject.drug_amount[d]);
    metrics.eliminated_mg[d] = p->apply_integral(state, subject.drug_loss[d]);
    metrics.formed_mg[d] = p->apply_integral(state, subject.drug_formed[d]);
    metrics.given_mg[d] = given[d];
  }
}

template <int N>
bool try_exact(const Model& model, const SubjectModel& subject, const SimulationPlan& plan, std::vector<Dose>& doses,
               const SubjectContext& context, const TrajectoryRows& rows, SubjectMetrics& metrics, std::string& why) {
  const auto exact = ExactPropagator<N>::create(subject, &why);
  if (!exact) return false;
  const PropagatorFactory<ExactPropagator<N>> make = [](const SubjectModel& occasion) {
    return ExactPropagator<N>::create(occasion);
  };
  integrate(*exact, model, subject, plan, doses, context, rows, metrics, make);
  return true;
}

}  // namespace

SolveOutcome simulate_subject(const Model& model, const SubjectModel& subject, const SolverSpec& solver,
                              const SimulationPlan& plan, std::vector<Dose>& doses, const SubjectContext& context,
                              const TrajectoryRows& rows, SubjectMetrics& metrics) {
  SolveOutcome outcome;
  if (solver.method != SolverMethod::ode) {
    std::string why;
    // With occasion variability an occasion's system may refuse exact stepping midway: the ODE
    // path then starts again from what was known before the solve.
    std::optional<std::pair<std::vector<Dose>, SubjectMetrics>> before;
    if (context.occasion_model && solver.method == SolverMethod::automatic) before.emplace(doses, metrics);
    try {
      const bool solved = subject.states <= 4 ? try_exact<4>(model, subject, plan, doses, context, rows, metrics, why)
                          : subject.states <= 8
                              ? try_exact<8>(model, subject, plan, doses, context, rows, metrics, why)
                              : try_exact<16>(model, subject, plan, doses, context, rows, metrics, why);
      if (solved) return outcome;
    } catch (const ExactStepUnavailable& error) {
      if (!before) throw;
      why = error.what();
      doses = before->first;
      metrics = before->second;
    }
    if (solver.method == SolverMethod::exact) throw SolverError("exact stepping is not possible: " + why);
    outcome.note = why;
  }
  outcome.path = SolverPath::ode;
  const PropagatorFactory<OdePropagator> make = [&](const SubjectModel& occasion) {
    return std::optional<OdePropagator>(OdePropagator(occasion, solver.rtol, solver.atol, context.cancel));
  };
  integrate(OdePropagator(subject, solver.rtol, solver.atol, context.cancel), model, subject, plan, doses, context,
            rows, metrics, make);
  return outcome;
}

}  // namespace ketasim
