#pragma once
// One subject's solve on one path (the propagator): the loop that steps along the output grid and
// the breakpoints of its plan, and shows each point and step to the observers (observers.hpp).
//
// The loop: at t = 0 and at every breakpoint, apply the plan's events at t in the order of the
// same-time rule (an occasion opens at a session start, then the jumps), then show the point to
// the observers; between two points, take one step at the constant input of the segment. One
// `step` serves the grid and the breakpoints alike: a whole grid step reuses the grid's step
// factors. The as-needed rule may interrupt a step: the step is undone, the dose added, the plan
// rebuilt, and the loop steps to the dose next.

#include <deque>
#include <functional>
#include <optional>
#include <tuple>

#include "ketasim/solve/as_needed_trigger.hpp"
#include "ketasim/solve/effect_peaks.hpp"
#include "ketasim/solve/observers.hpp"
#include "ketasim/solve/ode_propagator.hpp"

namespace ketasim {

// Builds the propagator of an occasion's system; nullopt when the exact path cannot step it.
template <class Propagator>
using PropagatorFactory = std::function<std::optional<Propagator>(const SubjectModel&)>;

// An occasion's system cannot be stepped exactly: the subject is solved again on the ODE path.
class ExactStepUnavailable : public SolverError {
 public:
  using SolverError::SolverError;
};

template <class Propagator>
class SubjectSolve {
 public:
  using State = typename Propagator::State;
  using Input = typename Propagator::Input;
  using Point = SolvePoint<Propagator>;
  using Step = SolveStep<Propagator>;

  // `doses` are the doses known before the solve, ordered by start; the doses the as-needed rule
  // gives are inserted in order. The references must outlive the solve.
  SubjectSolve(const Propagator& propagator, const Model& model, const SubjectModel& subject,
               const SimulationPlan& plan, std::vector<Dose>& doses, const SubjectContext& context,
               const TrajectoryRows& rows, SubjectMetrics& metrics, PropagatorFactory<Propagator> make_propagator);
  SubjectSolve(const SubjectSolve&) = delete;
  SubjectSolve& operator=(const SubjectSolve&) = delete;

  void run();
  // The plan the solve runs (after run(): the last, with every as-needed dose).
  const BreakpointPlan& plan() const { return plan_; }

 private:
  // In the order they see each point: that order fixes which failure a subject reports first.
  using Observers = std::tuple<std::optional<SolutionCheck>, std::optional<Exposure>, std::optional<Metabolites>,
                               std::optional<Response>, std::optional<SessionResponse>,
                               std::optional<DissociationBurden>, std::optional<Sampler>, std::optional<EffectPeaks>,
                               std::optional<GridWriter>, std::optional<MassBalance>>;

  template <class Tuple>
  struct Checked;
  template <class... Observer>
  struct Checked<std::tuple<std::optional<Observer>...>> {
    static constexpr bool value = (SolveObserver<Observer, Propagator> && ...);
  };
  static_assert(Checked<Observers>::value, "every observer has the SolveObserver interface");

  // Calls `function` on every observer present, in order; forced inline (with the callers'
  // lambdas), since it runs at every grid point and a call per observer would cost as much as the
  // step itself.
  template <class Function>
  [[gnu::always_inline]] void each_observer(Function&& function) {
    each_observer(function, std::make_index_sequence<std::tuple_size_v<Observers>>());
  }
  template <class Function, std::size_t... Index>
  [[gnu::always_inline]] void each_observer(Function& function, std::index_sequence<Index...>) {
    ((std::get<Index>(observers_) ? function(*std::get<Index>(observers_)) : void()), ...);
  }

  void add_observers(const TrajectoryRows& rows);
  void visit_breakpoint();
  // At a breakpoint where sessions start, before its events: shows the point to the observers.
  void before_sessions();
  // The plan's events at t not applied yet (the span changes with the plan).
  std::span<const TimelineEvent> events_now() const;
  // The arm's stop rule, before the sessions starting at t: when the subject is in response (or
  // remission) now, the series' sessions from t on are removed and the plan rebuilt.
  void check_stop(std::span<const TimelineEvent> events);
  // The arm's titration, before the sessions starting at t: when the subject's improvement is
  // below the bar now (and the previous session's dissociation not above its own), the series'
  // sessions from t on get the new dose and the plan is rebuilt.
  void check_titration(std::span<const TimelineEvent> events);
  // The arm's given_if rule at its assessment: when the subject is not in response (remission),
  // the rule's sessions are removed, the treatment ends with the sessions left, the plan is rebuilt.
  void decide_continuation();
  // The session of a series starting now (its index in the dose list), or -1; and how many
  // sessions of the series were given before now.
  template <class Rule>
  int series_session(const SeriesRule<Rule>& rule, std::span<const TimelineEvent> events) const;
  template <class Rule>
  std::ptrdiff_t given_before(const SeriesRule<Rule>& rule) const;
  // The MADRS now, with the residual error `normal` when observed; in response or remission by it.
  double assessed_madrs(bool observed, double normal) const;
  bool meets(StopRule::When when, double assessed) const;
  // A rule ended the treatment early: its last session is the last one left.
  void treatment_ended();
  // The hot path: whole grid steps up to the last grid point before `before`, where nothing but
  // the grid happens (no event, no segment change, no mark, no as-needed rule).
  void grid_steps(Ticks before);
  [[gnu::always_inline]] void visit(bool edge, std::span<const TimelineEvent> events);
  [[gnu::always_inline]] bool step(Ticks next);
  void begin_occasion(int dose);
  void add_triggered_dose(Ticks at);
  // Rebuilds the plan for the current doses and system; the events at t up to `applied` (of that
  // kind and before) count as applied.
  void replan(std::optional<EventKind> applied);
  void finish();

  const Model& model_;
  const SubjectModel& subject_;
  const SimulationPlan& simulation_;
  std::vector<Dose>& doses_;
  const SubjectContext& context_;
  SubjectMetrics& metrics_;
  PropagatorFactory<Propagator> make_propagator_;
  std::size_t most_doses_;

  // The current occasion's propagator and system: the subject's own until a session opens an
  // occasion with parameters of its own (inter-occasion variability).
  const Propagator* propagator_;
  const SubjectModel* system_;
  std::deque<SubjectModel> occasion_models_;  // kept alive: an ODE propagator refers to its model
  std::deque<Propagator> occasion_propagators_;
  typename Propagator::StepFactors grid_factors_;

  BreakpointPlan plan_;
  std::vector<Input> segment_input_;  // per segment of the plan, for the current propagator
  std::size_t segment_ = 0;           // the segment of the step from t
  std::size_t breakpoint_ = 0;        // the first breakpoint after t
  std::size_t event_ = 0;             // the first event of the plan not applied yet

  Ticks t_ = 0;
  bool started_ = false;  // the first point was visited
  State state_;
  std::size_t grid_points_;
  std::size_t grid_index_ = 0;  // of the next grid point after t
  Ticks next_grid_ = 0;         // grid_index_ * grid_step, never accumulated

  std::optional<MadrsScore> madrs_;
  std::optional<OutputReader> reader_;
  std::optional<AsNeededTrigger> trigger_;
  bool stopped_ = false;               // the stop rule ended the series
  bool titrated_ = false;              // the titration changed the dose
  bool continuation_pending_ = false;  // the given_if rule's assessment lies ahead
  Observers observers_;
};

template <class Propagator>
SubjectSolve<Propagator>::SubjectSolve(const Propagator& propagator, const Model& model, const SubjectModel& subject,
                                       const SimulationPlan& plan, std::vector<Dose>& doses,
                                       const SubjectContext& context, const TrajectoryRows& rows,
                                       SubjectMetrics& metrics, PropagatorFactory<Propagator> make_propagator)
    : model_(model),
      subject_(subject),
      simulation_(plan),
      doses_(doses),
      context_(context),
      metrics_(metrics),
      make_propagator_(std::move(make_propagator)),
      most_doses_(metrics.peak_effect_ng_per_ml.size()),
      propagator_(&propagator),
      system_(&subject),
      grid_factors_(propagator.factors(ticks_to_hours(plan.grid_step))),
      state_(propagator.initial_state()),
      grid_points_(plan.time_points()) {
  const bool has_sessions = !doses.empty();
  const Ticks first_session = has_sessions ? doses.front().start : 0;
  if (subject.depression) madrs_.emplace(*subject.depression, context, has_sessions, first_session);
  reader_.emplace(subject, madrs_ ? &*madrs_ : nullptr, !rows.empty() || !plan.observed.empty());
  if (context.as_needed && madrs_)
    trigger_.emplace(*context.as_needed, *madrs_, context.reference_madrs(), plan.grid_end);
  if ((context.stop || context.titration || context.continuation) && !madrs_)
    throw SolverError("a stop rule, a titration or a given_if rule needs a model with a depression score");
  if (simulation_.stop_metrics) metrics_.stopped_early = 0.0;
  if (context.titration) metrics_.titrated = 0.0;
  continuation_pending_ = static_cast<bool>(context.continuation);
  add_observers(rows);
  replan(std::nullopt);
}

template <class Propagator>
void SubjectSolve<Propagator>::add_observers(const TrajectoryRows& rows) {
  const SimulationPlan& plan = simulation_;
  auto& [check, exposure, metabolites, response, sessions, burden, sampler, effect, grid, balance] = observers_;
  const int plasma = model_.drugs()[static_cast<std::size_t>(model_.dosed_drug())].plasma_signal;
  check.emplace(plasma, model_.dissociation_effect_site());
  exposure.emplace(plasma, plan.grid_end, plan.weeks(), metrics_);
  if (plan.metabolites) metabolites.emplace(model_, metrics_);
  if (plan.response && madrs_) {
    const bool has_sessions = !doses_.empty();
    response.emplace(*madrs_,
                     ResponseScores(madrs_->depression(), plan, context_, has_sessions ? doses_.front().start : 0,
                                    has_sessions ? doses_.back().start : 0, has_sessions, metrics_));
  }
  if (plan.response && madrs_ && plan.assesses_sessions())
    sessions.emplace(*madrs_, SessionScores(madrs_->depression(), plan, context_, doses_, metrics_));
  // Metrics without their observer are NaN.
  metrics_.time_above_dissociation_h = solve_units::kNaN;
  metrics_.dissociation_burden_score_h = solve_units::kNaN;
  const int link = model_.dissociation_link();
  if (link >= 0 && plan.dissociation_burden) burden.emplace(subject_.links[static_cast<std::size_t>(link)], metrics_);
  if (!plan.observation_times.empty()) sampler.emplace(plan, context_, *reader_, metrics_);
  if (link >= 0) effect.emplace(model_, subject_, plan.dissociation_threshold, plan.peak_links, metrics_);
  if (!rows.empty()) grid.emplace(rows, *reader_);
  balance.emplace(model_, subject_, plan_, doses_, metrics_);
}

template <class Propagator>
void SubjectSolve<Propagator>::replan(std::optional<EventKind> applied) {
  std::vector<PlanMark> marks;
  each_observer([&](const auto& observer) { observer.add_marks(marks); });
  if (trigger_) trigger_->add_marks(marks, doses_);
  if (continuation_pending_) marks.push_back({context_.continuation->assessment_time, Mark::assessment});
  plan_ = breakpoint_plan(doses_, model_, *system_, simulation_.grid_step, simulation_.grid_end, marks);
  segment_input_.clear();
  for (const InputSegment& segment : plan_.segments) {
    StateVector rates = StateVector::Zero(system_->states);
    for (std::size_t c = 0; c < segment.rates.size(); ++c)
      if (segment.rates[c] != 0.0) rates += segment.rates[c] * system_->channels[c];
    segment_input_.push_back(propagator_->input(rates));
  }
  const auto done = [&](const TimelineEvent& event) {
    return event.time < t_ || (applied && event.time == t_ && event.kind <= *applied);
  };
  event_ = static_cast<std::size_t>(std::partition_point(plan_.events.begin(), plan_.events.end(), done) -
                                    plan_.events.begin());
  breakpoint_ = static_cast<std::size_t>(std::upper_bound(plan_.breakpoints.begin(), plan_.breakpoints.end(), t_) -
                                         plan_.breakpoints.begin());
  segment_ = 0;
  while (segment_ + 1 < plan_.segments.size() && plan_.segments[segment_].end <= t_) ++segment_;
}

template <class Propagator>
void SubjectSolve<Propagator>::run() {
  try {
    if (trigger_) {
      trigger_->update_allowed(0, doses_);
      if (trigger_->fires_at_start(*propagator_, state_)) add_triggered_dose(0);
    }
    visit_breakpoint();
    while (t_ < plan_.grid_end) {
      const Ticks breakpoint = plan_.breakpoints[breakpoint_];
      if (!trigger_ && next_grid_ - t_ == plan_.grid_step) grid_steps(breakpoint);  // ends before the breakpoint
      const Ticks next = std::min(next_grid_, breakpoint);
      const Ticks from = t_;
      if (!step(next)) continue;  // interrupted by the as-needed rule: the plan changed
      t_ = next;
      if (next == breakpoint)
        visit_breakpoint();
      else
        visit(next - from != plan_.grid_step, {});
    }
  } catch (const OdeStepCapReached& cap) {
    const double from_h = ticks_to_hours(t_);
    throw SolverError("the ODE solver reached its cap of " + std::to_string(cap.cap) +
                      " steps at t = " + format_significant(from_h + cap.reached_h, 10) + " h, in the step from " +
                      format_significant(from_h, 10) + " h to " + format_significant(from_h + cap.duration_h, 10) +
                      " h: " + cap.reason);
  }
  finish();
}

// The plan's events at t, in order: an occasion opens at the last session starting now (the state
// carries over to its system), then the jumps; input edges act through the segments. Then the point.
template <class Propagator>
void SubjectSolve<Propagator>::visit_breakpoint() {
  if (context_.cancel != nullptr && context_.cancel->load(std::memory_order_relaxed))
    throw InterruptedError("interrupted");
  const std::vector<TimelineEvent>& events = plan_.events;
  while (event_ < events.size() && events[event_].time < t_) ++event_;  // edges that change no rate
  if (continuation_pending_ && t_ == context_.continuation->assessment_time) decide_continuation();
  before_sessions();
  if (context_.occasion_model) {
    int opening = -1;
    for (std::size_t e = event_; e < events.size() && events[e].time == t_; ++e)
      if (events[e].kind == EventKind::session_start) opening = events[e].dose;
    if (opening >= 0) begin_occasion(opening);
  }
  const std::size_t first = static_cast<std::size_t>(
      std::lower_bound(events.begin(), events.end(), t_,
                       [](const TimelineEvent& event, Ticks time) { return event.time < time; }) -
      events.begin());
  for (; event_ < events.size() && events[event_].time == t_; ++event_) {
    const TimelineEvent& event = events[event_];
    if (event.kind == EventKind::bolus) propagator_->bolus(state_, event.channel, event.amount);
  }
  visit(true, std::span<const TimelineEvent>(events.data() + first, event_ - first));
  if (t_ >= plan_.grid_end) return;
  while (plan_.breakpoints[breakpoint_] <= t_) ++breakpoint_;
  while (plan_.segments[segment_].end <= t_) ++segment_;
  if (trigger_) trigger_->update_allowed(t_, doses_);
}

template <class Propagator>
std::span<const TimelineEvent> SubjectSolve<Propagator>::events_now() const {
  const std::vector<TimelineEvent>& events = plan_.events;
  std::size_t end = event_;
  while (end < events.size() && events[end].time == t_) ++end;
  return {events.data() + event_, end - event_};
}

template <class Propagator>
void SubjectSolve<Propagator>::before_sessions() {
  const std::span<const TimelineEvent> at_t = events_now();
  if (std::none_of(at_t.begin(), at_t.end(),
                   [](const TimelineEvent& event) { return event.kind == EventKind::session_start; }))
    return;
  const Point point{t_, *propagator_, state_, true, at_t};
  each_observer([&](auto& observer) { observer.before_events(point); });
  // Each check may rebuild the plan: the events at t are read again for the next.
  if (context_.stop && !stopped_) check_stop(events_now());
  if (context_.titration && !titrated_) check_titration(events_now());
}

template <class Propagator>
template <class Rule>
int SubjectSolve<Propagator>::series_session(const SeriesRule<Rule>& rule,
                                             std::span<const TimelineEvent> events) const {
  for (const TimelineEvent& event : events)
    if (event.kind == EventKind::session_start && rule.holds(doses_[static_cast<std::size_t>(event.dose)]))
      return event.dose;
  return -1;
}

template <class Propagator>
template <class Rule>
std::ptrdiff_t SubjectSolve<Propagator>::given_before(const SeriesRule<Rule>& rule) const {
  return std::count_if(doses_.begin(), doses_.end(),
                       [&](const Dose& dose) { return dose.start < t_ && rule.holds(dose); });
}

template <class Propagator>
double SubjectSolve<Propagator>::assessed_madrs(bool observed, double normal) const {
  const double score = madrs_->at(*propagator_, t_, state_);
  return observed ? observed_madrs(score, madrs_->depression().residual_sd, normal) : score;
}

template <class Propagator>
bool SubjectSolve<Propagator>::meets(StopRule::When when, double assessed) const {
  return when == StopRule::When::response ? assessed <= context_.improvement_bar(simulation_.response_fraction)
                                          : assessed <= simulation_.remission_threshold;
}

template <class Propagator>
void SubjectSolve<Propagator>::treatment_ended() {
  if (doses_.empty()) return;
  Ticks last = 0;
  for (const Dose& dose : doses_) last = std::max(last, dose.start);
  if (auto& response = std::get<std::optional<Response>>(observers_)) response->treatment_stopped(t_, last);
}

template <class Propagator>
void SubjectSolve<Propagator>::check_stop(std::span<const TimelineEvent> events) {
  const int session = series_session(context_.stop, events);
  if (session < 0) return;
  const std::ptrdiff_t given = given_before(context_.stop);
  if (given == 0) return;  // the series starts with a session whatever the score
  const double assessed =
      assessed_madrs(context_.stop->observed, context_.before_session_normals[static_cast<std::size_t>(session)]);
  if (!meets(context_.stop->when, assessed)) return;
  std::erase_if(doses_, [&](const Dose& dose) { return dose.start >= t_ && context_.stop.holds(dose); });
  stopped_ = true;
  metrics_.stopped_early = 1.0;
  metrics_.sessions_to_response = static_cast<double>(given);
  treatment_ended();
  replan(std::nullopt);
}

template <class Propagator>
void SubjectSolve<Propagator>::check_titration(std::span<const TimelineEvent> events) {
  const SeriesRule<Titration>& titration = context_.titration;
  const int session = series_session(titration, events);
  if (session < 0) return;
  const std::ptrdiff_t given = given_before(titration);
  if (given + 1 < titration->from_session) return;
  const double assessed =
      assessed_madrs(titration->observed, context_.before_session_normals[static_cast<std::size_t>(session)]);
  // An improvement below the bar: (baseline - assessed) / baseline < improvement_below.
  if (!(assessed > context_.improvement_bar(titration->improvement_below))) return;
  if (titration->peak_dissociation_above) {
    std::optional<std::size_t> previous;  // the series' session before this one
    for (std::size_t d = 0; d < doses_.size(); ++d)
      if (doses_[d].start < t_ && titration.holds(doses_[d])) previous = d;
    const auto& peaks = std::get<std::optional<EffectPeaks>>(observers_);
    if (previous && peaks &&
        peaks->peak_score(static_cast<std::size_t>(model_.dissociation_link()), *previous) >
            *titration->peak_dissociation_above)
      return;
  }
  for (Dose& dose : doses_)
    if (dose.start >= t_ && titration.holds(dose)) dose.amount_mg = context_.titrated_dose_mg;
  titrated_ = true;
  metrics_.titrated = 1.0;
  metrics_.titration_session = static_cast<double>(given + 1);
  replan(std::nullopt);
}

template <class Propagator>
void SubjectSolve<Propagator>::decide_continuation() {
  continuation_pending_ = false;
  const ContinuationCondition& condition = *context_.continuation.rule;
  const bool continued = meets(condition.when, assessed_madrs(condition.observed, context_.continuation_normal));
  metrics_.continued = continued ? 1.0 : 0.0;
  if (!continued) {
    std::erase_if(doses_, [&](const Dose& dose) { return context_.continuation.holds(dose); });
    treatment_ended();
  }
  replan(std::nullopt);  // without the assessment's mark
}

template <class Propagator>
void SubjectSolve<Propagator>::grid_steps(Ticks before) {
  const Ticks grid_step = plan_.grid_step;
  const Input& input = segment_input_[segment_];
  const Propagator& propagator = *propagator_;
  // next_grid_ < before <= grid_end: the grid index stays in range.
  while (next_grid_ < before) {
    const State start = state_;
    propagator.advance(state_, grid_factors_, input);
    const Step step{t_, grid_step, propagator, start, state_, input};
    each_observer([&](auto& observer) __attribute__((always_inline)) { observer.over_step(step); });
    t_ = next_grid_;
    const Point point{t_, propagator, state_, false, {}, grid_index_};
    each_observer([&](auto& observer) __attribute__((always_inline)) { observer.at_point(point); });
    ++grid_index_;
    next_grid_ = static_cast<Ticks>(grid_index_) * grid_step;
  }
  started_ = true;
}

template <class Propagator>
inline void SubjectSolve<Propagator>::visit(bool edge, std::span<const TimelineEvent> events) {
  started_ = true;
  const bool on_grid = t_ == next_grid_;
  const Point point{t_, *propagator_, state_, edge, events, on_grid ? grid_index_ : kOffGrid};
  each_observer([&](auto& observer) __attribute__((always_inline)) { observer.at_point(point); });
  if (on_grid) {
    ++grid_index_;
    next_grid_ = grid_index_ < grid_points_ ? static_cast<Ticks>(grid_index_) * simulation_.grid_step
                                            : std::numeric_limits<Ticks>::max();
  }
}

template <class Propagator>
inline bool SubjectSolve<Propagator>::step(Ticks next) {
  const Ticks h = next - t_;
  const Input& input = segment_input_[segment_];
  const State start = state_;
  if (h == simulation_.grid_step)
    propagator_->advance(state_, grid_factors_, input);
  else
    propagator_->advance(state_, propagator_->factors(ticks_to_hours(h)), input);
  const Step step{t_, h, *propagator_, start, state_, input};
  if (trigger_) {
    const Ticks at = trigger_->fires_within(step);
    if (at >= 0) {
      state_ = start;
      add_triggered_dose(at);
      return false;
    }
  }
  each_observer([&](auto& observer) __attribute__((always_inline)) { observer.over_step(step); });
  return true;
}

template <class Propagator>
void SubjectSolve<Propagator>::add_triggered_dose(Ticks at) {
  const Dose dose = trigger_->fire(at, doses_, most_doses_);
  // Before the first point nothing at t is applied yet; during a step, everything at t is.
  replan(started_ ? std::optional(EventKind::observation) : std::nullopt);
  trigger_->update_allowed(dose.start, doses_);
}

template <class Propagator>
void SubjectSolve<Propagator>::begin_occasion(int dose) {
  system_ = &occasion_models_.emplace_back(context_.occasion_model(dose));
  std::optional<Propagator> next = make_propagator_(*system_);
  if (!next) throw ExactStepUnavailable("occasion " + std::to_string(dose) + ": exact stepping is not possible");
  const State carried = next->from_physical(propagator_->physical(state_), propagator_->physical_integral(state_));
  propagator_ = &occasion_propagators_.emplace_back(std::move(*next));
  state_ = carried;
  grid_factors_ = propagator_->factors(ticks_to_hours(simulation_.grid_step));
  replan(EventKind::session_start);  // the jumps at t come next, in the new coordinates
}

template <class Propagator>
void SubjectSolve<Propagator>::finish() {
  const Point end{t_, *propagator_, state_, true, {}};
  each_observer([&](auto& observer) { observer.finish(end); });
  metrics_.sessions_triggered = trigger_ ? trigger_->fired() : 0.0;
}

}  // namespace ketasim
