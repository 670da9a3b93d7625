#pragma once
// What one subject's solve computes along the way, one observer per output or group of metrics.
// The solve (subject_solve.hpp) only steps; it shows every observer each point it reaches (a grid
// point or a breakpoint of the plan, after the events there) and each step it took, and asks each
// to finish at the end of the grid. An observer has this small interface (SolveObserver):
//
//   at_point(point)  a point of the solution: its time, the state, and the plan's events there;
//   over_step(step)  the step that led to the next point, at a constant input (for metrics that
//                    need more than the points, like the exact maximum between two of them);
//   finish(point)    the end of the grid;
//   add_marks(marks) times the observer must see as breakpoints (assessments, sampling times);
//   before_events(point)  a breakpoint where sessions start, before its events are applied (the
//                    state just before the sessions: assessments before each session).
//
// Observers get the propagator with every point and step, so an occasion that changes the
// propagator midway (inter-occasion variability) needs nothing from them. A new metric is a new
// observer, listed in SubjectSolve::Observers.
//
// Templates on the propagator (the exact and the ODE path), so that the hot path inlines.

#include <algorithm>
#include <cmath>
#include <concepts>
#include <limits>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "ketasim/base/errors.hpp"
#include "ketasim/base/format.hpp"
#include "ketasim/solve/simulate.hpp"
#include "ketasim/solve/timeline.hpp"

namespace ketasim {

namespace solve_units {
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kNgPerMlPerMgPerL = 1000.0;
}  // namespace solve_units

// A value of the solution that is not finite, or too large for the file's float32 trajectories,
// fails the subject: it is recorded with this message instead of being written as a result.
[[noreturn]] void fail_not_finite(const std::string& what, double value, double hours);
[[noreturn]] inline void fail_not_finite(const std::string& what, double value, Ticks t) {
  fail_not_finite(what, value, ticks_to_hours(t));
}

// SolvePoint::grid_index of a point that is not on the output grid.
inline constexpr std::size_t kOffGrid = std::numeric_limits<std::size_t>::max();

// A point of the solution, shown to the observers once the plan's events at t are applied.
template <class Propagator>
struct SolvePoint {
  Ticks t = 0;
  const Propagator& propagator;
  const typename Propagator::State& state;
  // A breakpoint, or a grid point reached by less than a whole grid step: where the solution is
  // checked and where times other than the grid's can fall. Off an edge, a point is a grid point
  // reached by a whole grid step with nothing else there (the hot path).
  bool edge = false;
  std::span<const TimelineEvent> events;  // the plan's events at t (empty off an edge)
  // Which point of the output grid t is (0, 1, ...), or kOffGrid: the solve keeps the one count.
  std::size_t grid_index = kOffGrid;

  double signal(int k) const { return propagator.signal(state, k); }
};

// A step [t0, t0 + h] at a constant input, from `start` to `end`.
template <class Propagator>
struct SolveStep {
  Ticks t0 = 0;
  Ticks h = 0;
  const Propagator& propagator;
  const typename Propagator::State& start;
  const typename Propagator::State& end;
  const typename Propagator::Input& input;
};

// The observer interface, for one propagator.
template <class Observer, class Propagator>
concept SolveObserver = requires(Observer& observer, const SolvePoint<Propagator>& point,
                                 const SolveStep<Propagator>& step, std::vector<PlanMark>& marks) {
  observer.at_point(point);
  observer.over_step(step);
  observer.finish(point);
  observer.add_marks(marks);
  observer.before_events(point);
};

// The parts of the interface most observers do not need.
struct ObserverDefaults {
  template <class Step>
  void over_step(const Step&) {}
  template <class Point>
  void finish(const Point&) {}
  void add_marks(std::vector<PlanMark>&) const {}
  template <class Point>
  void before_events(const Point&) {}
};

// A link's value (display units aside) in a state.
template <class Propagator>
[[gnu::always_inline]] inline double link_value(const LinkValues& link, const Propagator& propagator,
                                                const typename Propagator::State& state) {
  const double tolerance = link.tolerance_signal >= 0 ? propagator.signal(state, link.tolerance_signal) : 0.0;
  return link(propagator.signal(state, link.input_signal), tolerance);
}

// The model's MADRS score, for models with a depression score. The treatment course it refers to
// is the doses known before the solve (as-needed sessions are maintenance, given because of a
// relapse).
class MadrsScore {
 public:
  MadrsScore(const DepressionValues& depression, const SubjectContext& context, bool has_sessions, Ticks first_session)
      : depression_(depression), context_(context), has_sessions_(has_sessions), first_session_(first_session) {}

  template <class Propagator>
  double at_hours(const Propagator& propagator, double hours, const typename Propagator::State& state) const {
    const double session = depression_.session_signal >= 0 ? propagator.signal(state, depression_.session_signal) : 0.0;
    const double first = ticks_to_hours(first_session_);
    const double since_first = has_sessions_ && hours >= first ? hours - first : -1.0;
    const double sustained =
        depression_.sustained_signal >= 0 ? propagator.signal(state, depression_.sustained_signal) : 0.0;
    return depression_.score(context_.baseline_madrs, since_first, propagator.signal(state, depression_.drug_signal),
                             sustained, session,
                             context_.oral_antidepressant ? &*context_.oral_antidepressant : nullptr);
  }
  template <class Propagator>
  double at(const Propagator& propagator, Ticks t, const typename Propagator::State& state) const {
    return at_hours(propagator, ticks_to_hours(t), state);
  }
  const DepressionValues& depression() const { return depression_; }

 private:
  const DepressionValues& depression_;
  const SubjectContext& context_;
  bool has_sessions_;
  Ticks first_session_;
};

// A model output at a point, in its display unit (the grid writer's and the sampler's values).
class OutputReader {
 public:
  // Linear signals that cannot be negative: the system is positive (A has no negative
  // off-diagonal entry, every input is >= 0) and the signal's row has no negative weight. Exact
  // stepping in modal coordinates leaves rounding noise (about 1e-18) around zero in them once the
  // drug is gone; such values are written as 0. Only trajectories and observations read outputs:
  // without them (`reads_outputs` false) the check is skipped.
  OutputReader(const SubjectModel& subject, const MadrsScore* madrs, bool reads_outputs);

  template <class Propagator>
  [[gnu::always_inline]] double value(const ModelOutput& output, const SolvePoint<Propagator>& at) const {
    double value = 0.0;
    switch (output.kind) {
      case OutputKind::linear:
        value = at.signal(output.index);
        if (value < 0.0 && nonnegative_[static_cast<std::size_t>(output.index)]) value = 0.0;
        break;
      case OutputKind::link:
        value = link_value(subject_.links[static_cast<std::size_t>(output.index)], at.propagator, at.state);
        break;
      case OutputKind::depression:
        value = madrs_->at(at.propagator, at.t, at.state);
        break;
    }
    return value * output.display_per_base;
  }

 private:
  const SubjectModel& subject_;
  const MadrsScore* madrs_;
  std::vector<char> nonnegative_;
};

// The plasma and effect-site concentrations are finite at every edge; a non-finite value inside a
// run of grid steps propagates to the next edge.
class SolutionCheck : public ObserverDefaults {
 public:
  SolutionCheck(int plasma_signal, int effect_signal) : plasma_(plasma_signal), effect_(effect_signal) {}

  template <class Propagator>
  [[gnu::always_inline]] void at_point(const SolvePoint<Propagator>& at) const {
    if (!at.edge) return;
    const double plasma = at.signal(plasma_);
    const double effect = effect_ >= 0 ? at.signal(effect_) : 0.0;
    if (!std::isfinite(plasma)) fail_not_finite("the plasma concentration", plasma, at.t);
    if (!std::isfinite(effect)) fail_not_finite("the effect-site concentration", effect, at.t);
  }

 private:
  int plasma_;
  int effect_;
};

// Cmax and Tmax over the points, the AUC per week (week ends are breakpoints) and over the grid.
class Exposure : public ObserverDefaults {
 public:
  Exposure(int plasma_signal, Ticks grid_end, std::size_t weeks, SubjectMetrics& metrics)
      : plasma_(plasma_signal), grid_end_(grid_end), metrics_(metrics) {
    metrics_.auc_per_week_ng_h_per_ml.assign(weeks, 0.0);
  }

  template <class Propagator>
  [[gnu::always_inline]] void at_point(const SolvePoint<Propagator>& at) {
    const double plasma = at.signal(plasma_);
    if (plasma > cmax_) {
      cmax_ = plasma;
      metrics_.tmax_h = ticks_to_hours(at.t);
    }
    if (at.t == week_end_ || at.t == grid_end_) {
      const double auc = at.propagator.signal_integral(at.state, plasma_);
      metrics_.auc_per_week_ng_h_per_ml[week_] = (auc - auc_at_week_start_) * solve_units::kNgPerMlPerMgPerL;
      auc_at_week_start_ = auc;
      ++week_;
      week_end_ = static_cast<Ticks>(week_ + 1) * kTicksPerWeek;
    }
  }

  template <class Propagator>
  void finish(const SolvePoint<Propagator>& end) {
    metrics_.cmax_ng_per_ml = cmax_ * solve_units::kNgPerMlPerMgPerL;
    metrics_.auc_ng_h_per_ml = end.propagator.signal_integral(end.state, plasma_) * solve_units::kNgPerMlPerMgPerL;
  }

 private:
  int plasma_;
  Ticks grid_end_;
  SubjectMetrics& metrics_;
  double cmax_ = -1.0;
  double auc_at_week_start_ = 0.0;
  std::size_t week_ = 0;
  Ticks week_end_ = kTicksPerWeek;
};

// Cmax and Tmax of every drug but the dosed one, over the points.
class Metabolites : public ObserverDefaults {
 public:
  Metabolites(const Model& model, SubjectMetrics& metrics);

  template <class Propagator>
  [[gnu::always_inline]] void at_point(const SolvePoint<Propagator>& at) {
    for (std::size_t slot = 0; slot < signals_.size(); ++slot) {
      const double concentration = at.signal(signals_[slot]) * solve_units::kNgPerMlPerMgPerL;
      if (concentration > metrics_.metabolite_cmax_ng_per_ml[slot]) {
        metrics_.metabolite_cmax_ng_per_ml[slot] = concentration;
        metrics_.metabolite_tmax_h[slot] = ticks_to_hours(at.t);
      }
    }
  }
  template <class Propagator>
  void finish(const SolvePoint<Propagator>&) {
    for (double& value : metrics_.metabolite_cmax_ng_per_ml)
      if (value < 0.0) value = solve_units::kNaN;
  }

 private:
  std::vector<int> signals_;  // per metric slot: the drug's plasma signal
  SubjectMetrics& metrics_;
};

// The MADRS-based metrics, from the model's score at every point (grid and breakpoints) and at
// the assessments. Crossings of the response threshold between two points are placed by linear
// interpolation of the score. The score arithmetic is in ResponseScores, which knows no propagator.
class ResponseScores {
 public:
  ResponseScores(const DepressionValues& depression, const SimulationPlan& plan, const SubjectContext& context,
                 Ticks first_session, Ticks last_session, bool has_sessions, SubjectMetrics& metrics);
  void add_marks(std::vector<PlanMark>& marks) const;
  void at_point(Ticks t, double score);
  void finish(Ticks grid_end);
  // A stop rule ended the series at `at`: the treatment's last session is `last_given`, and its end
  // is 1 d after it or `at`, whichever is later.
  void treatment_stopped(Ticks at, Ticks last_given);

 private:
  void crossing(Ticks t, double score, bool responding);
  void assessments(Ticks t, double score);
  // Relapse at visits (output.relapse): visit k at time t.
  void visit(std::size_t k, double score);
  bool relapsing_at_visit(double observed) const;

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
  std::size_t next_visit_ = 0;  // output.relapse: the next visit to assess
  bool visit_watch_ = false;    // at risk and not relapsed yet
  int visit_run_ = 0;           // consecutive visits meeting the relapse threshold
};

class Response : public ObserverDefaults {
 public:
  Response(const MadrsScore& madrs, ResponseScores scores) : madrs_(madrs), scores_(scores) {}
  void add_marks(std::vector<PlanMark>& marks) const { scores_.add_marks(marks); }
  void treatment_stopped(Ticks at, Ticks last_given) { scores_.treatment_stopped(at, last_given); }
  template <class Propagator>
  [[gnu::always_inline]] void at_point(const SolvePoint<Propagator>& at) {
    scores_.at_point(at.t, madrs_.at(at.propagator, at.t, at.state));
  }
  template <class Propagator>
  void finish(const SolvePoint<Propagator>& end) {
    scores_.finish(end.t);
  }

 private:
  const MadrsScore& madrs_;
  ResponseScores scores_;
};

// An assessed MADRS with residual error: score + residual_sd * normal, kept within the scale.
inline double observed_madrs(double score, double residual_sd, double normal) {
  return std::clamp(score + residual_sd * normal, 0.0, kMadrsMaximum);
}

// The MADRS assessed relative to each session (output.assessments after_each_session and
// before_each_session): the score arithmetic, which knows no propagator. Session k is the k-th
// dose of the subject's dose list, a place that never changes once the session starts (doses added
// or removed during the solve all lie after the current time).
class SessionScores {
 public:
  SessionScores(const DepressionValues& depression, const SimulationPlan& plan, const SubjectContext& context,
                const std::vector<Dose>& doses, SubjectMetrics& metrics);
  // Every session's start plus each time after it.
  void add_marks(std::vector<PlanMark>& marks) const;
  bool before_each_session() const { return plan_.before_each_session; }
  bool after_each_session() const { return !plan_.session_assessments.empty(); }
  void before_session(int session, double score);
  // At a breakpoint t: the sessions assessed now (session start + a time after it == t).
  void after_sessions(Ticks t, double score);

 private:
  void record(SessionAssessments& into, std::size_t session, double score, double normal) const;

  const DepressionValues& depression_;
  const SimulationPlan& plan_;
  const SubjectContext& context_;
  const std::vector<Dose>& doses_;
  SubjectMetrics& metrics_;
  double threshold_;
};

class SessionResponse : public ObserverDefaults {
 public:
  SessionResponse(const MadrsScore& madrs, SessionScores scores) : madrs_(madrs), scores_(scores) {}
  void add_marks(std::vector<PlanMark>& marks) const { scores_.add_marks(marks); }
  template <class Propagator>
  void before_events(const SolvePoint<Propagator>& at) {
    if (!scores_.before_each_session()) return;
    for (const TimelineEvent& event : at.events)
      if (event.kind == EventKind::session_start)
        scores_.before_session(event.dose, madrs_.at(at.propagator, at.t, at.state));
  }
  template <class Propagator>
  [[gnu::always_inline]] void at_point(const SolvePoint<Propagator>& at) {
    // Assessment times are breakpoints, so only edges can be one.
    if (at.edge && scores_.after_each_session()) scores_.after_sessions(at.t, madrs_.at(at.propagator, at.t, at.state));
  }

 private:
  const MadrsScore& madrs_;
  SessionScores scores_;
};

// The integral of the dissociation score over the points (trapezoid).
class DissociationBurden : public ObserverDefaults {
 public:
  DissociationBurden(const LinkValues& link, SubjectMetrics& metrics);

  template <class Propagator>
  [[gnu::always_inline]] void at_point(const SolvePoint<Propagator>& at) {
    const double hours = ticks_to_hours(at.t);
    const double input = at.signal(link_.input_signal);
    const double score = input < floor_ ? 0.0 : link_value(link_, at.propagator, at.state);
    metrics_.dissociation_burden_score_h += 0.5 * (score + previous_score_) * (hours - previous_hours_);
    previous_hours_ = hours;
    previous_score_ = score;
  }

 private:
  const LinkValues& link_;
  // Below the input at which the score is kBurdenFloorScore (without tolerance, the highest score
  // for a given input), the score counts as 0: this spares the link's pow() at most points between
  // doses, for an error under kBurdenFloorScore times the time below it.
  double floor_;
  SubjectMetrics& metrics_;
  double previous_hours_ = 0.0;
  double previous_score_ = 0.0;
};

// Simulated observations (output.observations): the model's value at each sampling time (a
// breakpoint), with residual error from the subject's draws.
class Sampler : public ObserverDefaults {
 public:
  Sampler(const SimulationPlan& plan, const SubjectContext& context, const OutputReader& reader,
          SubjectMetrics& metrics)
      : plan_(plan), context_(context), reader_(reader), metrics_(metrics) {}

  void add_marks(std::vector<PlanMark>& marks) const {
    for (const Ticks time : plan_.observation_times) marks.push_back({time, Mark::sample});
  }

  template <class Propagator>
  [[gnu::always_inline]] void at_point(const SolvePoint<Propagator>& at) {
    const std::vector<Ticks>& times = plan_.observation_times;
    if (!at.edge || next_ >= times.size() || times[next_] != at.t) return;
    for (; next_ < times.size() && times[next_] <= at.t; ++next_) {
      for (std::size_t v = 0; v < plan_.observed.size(); ++v) {
        const ObservedOutput& observed = plan_.observed[v];
        const double ipred = reader_.value(*observed.output, at);
        const double sd = std::hypot(observed.additive, observed.proportional * ipred);
        metrics_.observed_ipred[v][next_] = ipred;
        metrics_.observed_dv[v][next_] = ipred + sd * context_.observation_normals[v * times.size() + next_];
      }
    }
  }

 private:
  const SimulationPlan& plan_;
  const SubjectContext& context_;
  const OutputReader& reader_;
  SubjectMetrics& metrics_;
  std::size_t next_ = 0;  // the next sampling time
};

// The trajectories: one row per requested output, written at each grid point.
class GridWriter : public ObserverDefaults {
 public:
  GridWriter(const TrajectoryRows& rows, const OutputReader& reader) : rows_(rows), reader_(reader) {}

  template <class Propagator>
  [[gnu::always_inline]] void at_point(const SolvePoint<Propagator>& at) {
    if (at.grid_index == kOffGrid) return;
    for (const TrajectoryRow& row : rows_) {
      const double value = reader_.value(*row.output, at);
      const auto stored = static_cast<float>(value);
      if (!std::isfinite(stored)) [[unlikely]]
        fail_not_finite(row.output->name, value, at.t);
      row.values[at.grid_index] = stored;
    }
  }

 private:
  const TrajectoryRows& rows_;
  const OutputReader& reader_;
};

// What went in and where it went, per drug, and the sessions given (mass balance, dosed_mg).
class MassBalance : public ObserverDefaults {
 public:
  MassBalance(const Model& model, const SubjectModel& subject, const BreakpointPlan& plan,
              const std::vector<Dose>& doses, SubjectMetrics& metrics)
      : model_(model), subject_(subject), plan_(plan), doses_(doses), metrics_(metrics) {}

  template <class Propagator>
  void at_point(const SolvePoint<Propagator>&) {}

  template <class Propagator>
  void finish(const SolvePoint<Propagator>& end) {
    count_sessions(end.t);
    for (std::size_t d = 0; d < model_.drugs().size(); ++d) {
      metrics_.amount_in_body_end_mg[d] = end.propagator.apply(end.state, subject_.drug_amount[d]);
      metrics_.eliminated_mg[d] = end.propagator.apply_integral(end.state, subject_.drug_loss[d]);
      metrics_.formed_mg[d] = end.propagator.apply_integral(end.state, subject_.drug_formed[d]);
    }
  }

 private:
  // Sessions started and drug given by `end` (constant-rate inputs pro rata).
  void count_sessions(Ticks end);

  const Model& model_;
  const SubjectModel& subject_;
  const BreakpointPlan& plan_;  // the plan the solve ran last (after any as-needed dose)
  const std::vector<Dose>& doses_;
  SubjectMetrics& metrics_;
};

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

}  // namespace ketasim
