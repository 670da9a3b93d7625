#pragma once
// One subject, one arm: integrate the model over the constant-input segments, write the output
// grid and compute the metrics during the solve (nothing is kept per time point beyond the
// output rows themselves).

#include <atomic>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "ketasim/input/scenario.hpp"
#include "ketasim/model/model.hpp"
#include "ketasim/solve/timeline.hpp"

namespace ketasim {

// A model output observed at the sampling times, with its residual error (ObservedVariable).
struct ObservedOutput {
  const ModelOutput* output = nullptr;
  double proportional = 0.0;
  double additive = 0.0;  // display unit
};

struct SimulationPlan {
  Ticks grid_step = 0;
  Ticks grid_end = 0;
  double dissociation_threshold = 0.0;     // score points
  std::vector<Ticks> assessments;          // after the start of the first session
  std::vector<Ticks> session_assessments;  // after the start of each session
  bool before_each_session = false;        // an assessment just before each session
  double response_fraction = 0.5;
  double remission_threshold = 10.0;
  bool metabolites = true;               // metabolite Cmax/Tmax
  bool response = true;                  // MADRS metrics (when the model has a depression score)
  bool dissociation_burden = true;       // the integral of the dissociation score (dissociation_burden metric)
  bool peak_links = true;                // the links at each dose's effect-site peak (peak_dissociation metric)
  std::vector<Ticks> observation_times;  // sampling times (output.observations), ascending
  std::vector<ObservedOutput> observed;  // resolved against the model by with_observations()
  std::optional<RelapseVisits> relapse;  // relapse at visits (output.relapse)

  std::size_t time_points() const { return static_cast<std::size_t>(grid_end / grid_step) + 1; }
  // Weeks for AUC per week; the last one is partial when grid_end is not a whole number of weeks.
  std::size_t weeks() const { return static_cast<std::size_t>((grid_end + kTicksPerWeek - 1) / kTicksPerWeek); }
  bool stop_metrics = false;          // sessions_to_response and stopped_early (some arm has a stop rule)
  bool titration_metrics = false;     // titrated and titration_session (some arm has a titration)
  bool continuation_metrics = false;  // continued (some arm has a given_if rule)
  bool assesses_sessions() const { return before_each_session || !session_assessments.empty(); }
  static SimulationPlan from(const OutputSpec& output);
  // The same plan with output.observations resolved against the model's outputs.
  static SimulationPlan from(const OutputSpec& output, const Model& model);
};

// Where one subject's trajectories go: one row (time_points() long) per requested output.
struct TrajectoryRow {
  const ModelOutput* output = nullptr;
  float* values = nullptr;
};
using TrajectoryRows = std::vector<TrajectoryRow>;

// MADRS assessments, one per session (in the order the sessions were given; NaN for a session not
// given or an assessment past the grid).
struct SessionAssessments {
  std::vector<double> madrs;      // the model's score
  std::vector<double> observed;   // with residual error, in [0, kMadrsMaximum]
  std::vector<double> response;   // observed: 1 if it fell by >= response_fraction from baseline
  std::vector<double> remission;  // observed: 1 if <= remission_threshold

  void assign(std::size_t sessions, double value);
};

// Per-subject metrics (docs/model.md defines each). Concentrations in ng/mL, times in h unless
// the name says days, link values in their display units.
struct SubjectMetrics {
  double cmax_ng_per_ml = 0.0;
  double tmax_h = 0.0;
  double auc_ng_h_per_ml = 0.0;                   // over [0, grid_end], exact
  std::vector<double> auc_per_week_ng_h_per_ml;   // weeks()
  std::vector<double> peak_effect_ng_per_ml;      // per dose: max effect-site concentration
  std::vector<double> peak_effect_time_h;         // per dose: when
  std::vector<std::vector<double>> peak_link;     // [link][dose]: the link at that maximum
  double time_above_dissociation_h = 0.0;         // total time with score >= threshold
  double dissociation_burden_score_h = 0.0;       // integral of the dissociation score over the grid (trapezoid)
  double dosed_mg = 0.0;                          // drug given within the grid (constant-rate parts pro rata)
  double sessions_given = 0.0;                    // sessions (any drug) started within the grid
  double sessions_missed = 0.0;                   // scheduled sessions missed (adherence), within the grid
  double sessions_triggered = 0.0;                // sessions given by an as-needed rule
  std::vector<double> metabolite_cmax_ng_per_ml;  // per metabolite (every drug but the dosed one)
  std::vector<double> metabolite_tmax_h;
  // Response (models with a depression score)
  double baseline_madrs = 0.0;
  std::vector<double> madrs_at;           // per assessment: the model's score
  std::vector<double> madrs_observed_at;  // with residual error, in [0, kMadrsMaximum]
  std::vector<double> response_at;        // observed: 1 if it fell by >= response_fraction from baseline
  std::vector<double> remission_at;       // observed: 1 if <= remission_threshold
  double first_response_day = 0.0;  // days from the first session to the first response (model score); NaN if none
  double days_in_response = 0.0;    // days with the model score in response
  double responder_end_of_treatment = 0.0;  // 1 if in response 1 d after the last session (NaN past the grid)
  double relapse_day = 0.0;  // responders: days from the last session to the loss of response (censored at the end)
  double relapse_observed = 0.0;  // 1 if the loss of response happened within the grid, 0 if censored
  // Relapse at visits (output.relapse): the observed MADRS at each visit; 1 if at risk (observed
  // response or remission at the first visit), else 0 (NaN if the first visit is past the grid);
  // for those at risk, days from the first visit to the relapse or to the last visit within the
  // grid (censored), and 1 for a relapse, 0 if censored.
  std::vector<double> madrs_observed_at_visit;
  double relapse_visits_at_risk = 0.0;
  double relapse_visits_day = 0.0;
  double relapse_visits_observed = 0.0;
  double sessions_to_response = 0.0;  // stop rule: sessions of the series given when it stopped; NaN if it did not
  double stopped_early = 0.0;         // 1 if a stop rule ended the series, else 0
  double titrated = 0.0;              // 1 if the titration changed the dose, 0 if not; NaN without one
  double titration_session = 0.0;     // the series' session (1-based) from which the new dose was given; NaN if none
  double continued = 0.0;             // given_if: 1 if the conditional sessions were given, 0 if not; NaN without
  SessionAssessments before_session;  // just before each session (output.assessments)
  std::vector<SessionAssessments> after_session;  // per time after each session (SimulationPlan::session_assessments)
  // Mass balance, per drug (model order), mg
  std::vector<double> amount_in_body_end_mg;
  std::vector<double> eliminated_mg;  // left the drug: eliminated, metabolised, or lost before absorption
  std::vector<double> formed_mg;      // formed from a parent (metabolites)
  std::vector<double> given_mg;       // entered by dosing
  // Simulated observations, per observed variable, per sampling time (display units)
  std::vector<std::vector<double>> observed_ipred;  // the model's value
  std::vector<std::vector<double>> observed_dv;     // with residual error
};

// Sizes every per-dose, per-week, per-assessment and per-drug vector, filled with NaN.
SubjectMetrics sized_metrics(const Model& model, const SimulationPlan& plan, std::size_t doses);

// An arm's as-needed rule for one subject: when it fires and the dose it gives.
struct TriggeredDosing {
  AsNeeded rule;
  Dose dose;  // the session a trigger gives (amount for this subject); its start is set when it fires
};

// A rule of an arm decided on its scheduled series during the solve (a stop rule, a titration, a
// given_if condition): the rule (null: the arm has none), and which rules of the regimen are its
// series, by Dose::rule (every phase of the rule that has it).
template <class Rule>
struct SeriesRule {
  const Rule* rule = nullptr;
  std::vector<char> series;

  explicit operator bool() const { return rule != nullptr; }
  const Rule* operator->() const { return rule; }
  bool holds(const Dose& dose) const { return !dose.triggered && series[static_cast<std::size_t>(dose.rule)] != 0; }
  // The arm's rule that has `member` (an arm has at most one of each).
  static SeriesRule of(const Arm& arm, const std::optional<Rule> DosingRule::*member) {
    SeriesRule found;
    for (const DosingRule& rule : arm.regimen) {
      found.series.push_back((rule.*member).has_value() ? 1 : 0);
      if ((rule.*member).has_value()) found.rule = &*(rule.*member);
    }
    return found;
  }
};

// What one subject brings besides its model.
struct SubjectContext {
  double baseline_madrs = 0.0;
  std::optional<double> screening_madrs;  // observed at screening (cohort.screening)
  // The baseline response, relapse and improvement thresholds are measured from: the observed
  // screening score with cohort.screening, else the model's baseline.
  double reference_madrs() const { return screening_madrs.value_or(baseline_madrs); }
  // The MADRS at or below which the improvement from the reference is at least `fraction`.
  double improvement_bar(double fraction) const { return (1.0 - fraction) * reference_madrs(); }
  std::optional<AntidepressantCourse> oral_antidepressant;  // the arm's, if any
  std::vector<double> residual_normals;                     // one standard normal draw per assessment
  std::vector<double> observation_normals;  // one per observed variable and sampling time (variable-major)
  // Residual errors of the assessments relative to sessions, per session k: before_session_normals[k],
  // after_session_normals[k * session_assessments + j] (empty without such assessments).
  std::vector<double> before_session_normals;
  std::vector<double> after_session_normals;
  std::vector<double> visit_normals;           // one per visit of output.relapse
  const TriggeredDosing* as_needed = nullptr;  // the arm's as-needed rule, if any
  // The arm's rules decided during the solve, each with the rules of the regimen its series is.
  SeriesRule<StopRule> stop;
  SeriesRule<Titration> titration;
  double titrated_dose_mg = 0.0;  // the titration's new dose for this subject (capped by max_dose)
  SeriesRule<ContinuationCondition> continuation;
  double continuation_normal = 0.0;  // the residual error of the continuation's assessment
  // Inter-occasion variability: the subject's system during occasion k (from its k-th session
  // on); empty without. Only parameters of the dynamics vary (occasion_variability_problem).
  std::function<SubjectModel(int)> occasion_model;
  // When set and it becomes true, the solve stops with InterruptedError: checked at every
  // breakpoint and, on the ODE path, every 1024 steps, so that a long solve ends promptly.
  const std::atomic<bool>* cancel = nullptr;
  // When set, receives the breakpoint plan the solve ran (the last one, with the doses an as-needed
  // rule added; also when the subject failed): what `ketasim timeline` prints.
  BreakpointPlan* ran_plan = nullptr;
};

// The path that solved a subject: exact stepping, the ODE path asked for, or the ODE path after
// exact stepping was refused (solver.method auto). The result file's solver_path is 0 for exact
// and 1 for either ODE path.
enum class SolverPath { exact, ode, fallback };

struct SolveOutcome {
  SolverPath path = SolverPath::exact;
  std::string note;  // fallback: why exact stepping was refused
};

// Runs one subject. `doses` are the doses known before the solve, ordered by start; doses an
// as-needed rule triggers during the solve are inserted in order (marked `triggered`), so on return
// it holds every dose given. The per-dose metrics must be sized for the most doses possible.
// Throws SolverError when the requested path cannot solve it or a value of the solution is not
// finite (docs/model.md, "Failed subjects"), InterruptedError when context.cancel is set.
SolveOutcome simulate_subject(const Model& model, const SubjectModel& subject, const SolverSpec& solver,
                              const SimulationPlan& plan, std::vector<Dose>& doses, const SubjectContext& context,
                              const TrajectoryRows& rows, SubjectMetrics& metrics);

}  // namespace ketasim
