#pragma once
// The typed, validated scenario: what a YAML scenario file means once it has been checked.
// Every value is in base units (mg, kg, L, h; times as Ticks). Nothing downstream re-validates.

#include <Eigen/Core>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "ketasim/base/errors.hpp"
#include "ketasim/base/time.hpp"
#include "ketasim/model/model_card.hpp"

namespace ketasim {

enum class Route { iv_infusion, iv_bolus, intranasal };

// What a dose gives: the model's drug, an inert placebo (saline), or an active placebo
// (midazolam). Placebo doses put no drug into the model; they are treatment sessions.
enum class DoseDrug { model_drug, placebo, active_placebo };
enum class DoseBasis { flat, per_body_weight };  // mg, or mg per kg of body weight

struct DoseAmount {
  double value = 0.0;  // mg (flat) or mg/kg (per_body_weight)
  DoseBasis basis = DoseBasis::flat;
};

struct WeeklySlot {
  int weekday = 0;        // 0 = Monday ... 6 = Sunday
  Ticks time_of_day = 0;  // from midnight

  Ticks time_in_week() const { return weekday * kTicksPerDay + time_of_day; }
};

enum class ScheduleKind {
  weekly,          // weekday + clock-time slots, repeated every week
  interval,        // every `interval` from `start`
  explicit_times,  // a list of times from the simulation start
  as_needed,       // when the subject's MADRS crosses a relapse threshold (decided during the solve)
  table,           // per-subject doses read from a NONMEM-style dosing table
};

// As-needed dosing: a session is given at the first time t in [from, until) at which the subject's
// model MADRS is above the threshold, at least `min_interval` after the subject's previous session
// (of any rule), while fewer than `max_doses` have been triggered. A subject already above the
// threshold when dosing becomes allowed is dosed at that moment.
struct AsNeeded {
  enum class Threshold {
    madrs_above,        // MADRS above `value` points
    improvement_below,  // improvement from baseline below the fraction `value` (MADRS > (1 - value) * baseline)
  };
  Threshold threshold = Threshold::madrs_above;
  double value = 0.0;
  Ticks from = 0;
  std::optional<Ticks> until;  // unset: to the end of the output grid
  Ticks min_interval = 0;
  std::optional<int> max_doses;
  Ticks delay = 0;  // from the crossing to the dose (e.g. the time to get an appointment)
  // Clinic slots: the dose is given at the first slot at or after the crossing plus the delay;
  // empty: at the crossing plus the delay. Sorted by time in the week.
  std::vector<WeeklySlot> slots;

  // When a dose triggered at `crossing` is given.
  Ticks dose_time(Ticks crossing) const;
};

// A stop rule of a scheduled series (a dosing rule's `stop`): treat until response or remission is
// assessed just before a session (from the second session of the series on); the series' remaining
// sessions are then not given. `at_most` caps the sessions of the series given.
struct StopRule {
  enum class When { response, remission };
  When when = When::response;
  bool observed = true;  // on the observed MADRS (with residual error), else on the model's
  std::optional<int> at_most;
};

// A titration of a scheduled series (a dosing rule's `titrate`): before each session from
// `from_session` on (1-based, of the series' sessions given), a subject not titrated yet whose
// assessed improvement from baseline is below `improvement_below` gets `to` at this session and
// every later one of the series (one step, never back), unless the peak dissociation score of the
// series' previous session exceeded `peak_dissociation_above`.
struct Titration {
  DoseAmount to;  // the same basis as the rule's dose; the rule's max_dose caps it too
  double improvement_below = 0.5;
  bool observed = true;  // on the observed MADRS (with residual error), else on the model's
  int from_session = 2;
  std::optional<double> peak_dissociation_above;  // score points of the model's dissociation link
};

// Responder-only continuation (a dosing rule's `given_if`): the rule's sessions are given only to
// subjects in response (remission) at one assessment, `assessed_at` after the arm's first
// scheduled session (the nominal schedule's, whether or not the subject attended it). Every
// session of the rule starts after the assessment (checked at load).
struct ContinuationCondition {
  StopRule::When when = StopRule::When::response;
  bool observed = true;       // on the observed MADRS (its own residual draw), else on the model's
  Ticks assessed_at = 0;      // as written: after the arm's first scheduled session
  Ticks assessment_time = 0;  // from the simulation start (the first scheduled session + assessed_at)
};

// One dose of a NONMEM-style dosing table (EVID 1 rows).
struct TableDose {
  Ticks time = 0;
  double amount_mg = 0.0;
  Ticks duration = 0;  // from RATE (AMT / RATE) or DUR; 0 for a bolus
};

// Doses per subject, keyed by NONMEM ID (subject id + 1), each list ordered by time.
struct DosingTable {
  std::string file;
  std::map<std::int64_t, std::vector<TableDose>> doses;
  std::size_t most_doses() const;
};

// One dosing rule: a route, a dose, and when. An arm's regimen is one or more rules; their doses
// are merged (overlapping infusions add their rates).
struct DosingRule {
  Route route = Route::iv_infusion;
  DoseDrug drug = DoseDrug::model_drug;
  DoseAmount dose;              // 0 for a placebo given without an amount
  Ticks infusion_duration = 0;  // > 0 for infusions, 0 for boluses
  ScheduleKind schedule = ScheduleKind::weekly;
  std::vector<WeeklySlot> weekly_slots;  // ScheduleKind::weekly, sorted by time in the week
  Ticks interval = 0;                    // ScheduleKind::interval
  std::vector<Ticks> explicit_times;     // ScheduleKind::explicit_times, sorted
  Ticks start = 0;                       // offset of the schedule from the simulation start
  // For weekly and interval schedules exactly one of these bounds the doses: doses whose start
  // lies in [start, start + repeat_for), or the first `count` doses.
  std::optional<Ticks> repeat_for;
  std::optional<int> count;
  std::optional<double> max_dose_mg;         // cap of weight-based doses (e.g. 0.5 mg/kg, at most 60 mg)
  std::optional<AsNeeded> as_needed;         // ScheduleKind::as_needed
  std::shared_ptr<const DosingTable> table;  // ScheduleKind::table
  std::optional<StopRule> stop;              // the series this rule gives stops by this rule (all phases of a rule)
  std::optional<Titration> titrate;          // the series' dose changes by this rule (weekly, interval, explicit)
  std::optional<ContinuationCondition> given_if;  // the series is given only if this holds (all phases of a rule)
  SourceLocation where;                           // the rule's YAML node, for messages raised after loading

  // Upper bound of the doses this rule gives a subject over a grid ending at grid_end.
  std::size_t most_doses(Ticks grid_end) const;
};

struct ParameterOverride {
  std::string name;
  double value = 0.0;  // base units
};

struct ModelChoice {
  std::string name;  // a built-in model (see model_card.hpp)
  std::vector<ParameterOverride> overrides;
};

struct OralAntidepressant {
  bool stable = false;           // on it long before, at its full effect
  Ticks started = 0;             // when not stable: from the first session (negative: before it)
  std::optional<Ticks> stopped;  // from the first session

  bool operator==(const OralAntidepressant&) const = default;
};

// The price of a session (USD, low and high) when a scenario gives none; `compare` assumes it for
// result files written before prices were.
inline constexpr double kDefaultPricePerSessionUsd[2] = {400.0, 800.0};

struct Arm {
  std::string name;
  // A model of the arm's own (e.g. intranasal esketamine against IV racemic ketamine, or the
  // scenario's card with another clearance); unset: the scenario's. model_of() resolves what the
  // arm simulates. Its subjects are the same patients (covariates, residual draws, random effects
  // of the parameters its card shares with the scenario's).
  std::optional<ModelChoice> model;
  std::vector<DosingRule> regimen;
  // An oral antidepressant (the model's background improvement): started at a time relative to
  // the first session (0: with the treatment; negative: a lead-in), or stable (long before, at
  // its full effect, which the baseline includes); optionally stopped at a time after the first
  // session. Unset: none.
  std::optional<OralAntidepressant> oral_antidepressant;
  // Adherence: each scheduled session is missed with this probability, drawn from the subject's
  // own stream (draw k for the arm's k-th scheduled session), so arms stay paired.
  double missed_session_probability = 0.0;
  // Price of one session in USD, low and high (for cost and cost per responder in `compare`).
  double price_low_usd = kDefaultPricePerSessionUsd[0];
  double price_high_usd = kDefaultPricePerSessionUsd[1];
};

// A covariate's distribution: a fixed value, or a normal truncated to [min, max]. Values are in
// the covariate's unit (kg, years, MADRS points).
struct CovariateDistribution {
  enum class Kind { fixed, truncated_normal };
  Kind kind = Kind::fixed;
  double fixed = 70.0;
  double mean = 70.0;
  double sd = 0.0;
  double min = 0.0;
  double max = 0.0;

  static CovariateDistribution constant(double value) { return {Kind::fixed, value, value, 0.0, value, value}; }
};

// Inter-individual variability the scenario adds to (or overrides in) the card's own, in every
// arm's card that has the parameter (cohort.hpp, CohortSampler): log-normal,
// P_i = P_typical * exp(eta_i), eta ~ N(0, Omega), Omega = diag(omega) * correlation *
// diag(omega), omega^2 = ln(1 + CV^2).
struct Variability {
  std::vector<std::string> parameters;  // model parameter names, in the order given
  std::vector<double> cv;               // as fractions (0.3 for 30%); the SD for a kind other than log-normal
  std::vector<IivKind> kinds;           // log-normal from a scenario file; calibration may set the card's kind
  Eigen::MatrixXd correlation;          // identity when not given; validated positive definite
  bool from_card = true;                // also apply the card's variability (for parameters not listed here)
};

// An observed screening score (cohort.screening): the MADRS at screening is the model's baseline
// plus the residual error of the card (madrs_residual_sd), and it is the baseline response,
// relapse and the improvement thresholds are measured from, as in trials. Optional inclusion
// bounds on it: a subject outside them is screened again, a new baseline and error drawn from its
// own stream, so the enrolled subjects' model baselines regress towards the mean.
struct Screening {
  std::optional<double> at_least;  // MADRS points
  std::optional<double> at_most;
};

// Patients' covariates read from a CSV file at load (cohort.from_csv); covariate_table.hpp.
struct CovariateTable;

// Inter-occasion variability: every session opens an occasion with its own log-normal factor per
// listed parameter, P_ik = P_i exp(kappa_ik), kappa ~ N(0, omega^2), omega^2 = ln(1 + CV^2),
// drawn from the subject's stream for occasion k (the same in every arm).
struct OccasionVariability {
  std::vector<std::string> parameters;
  std::vector<double> cv;  // fractions
};

struct Cohort {
  // N, the subjects simulated in every arm: `replicates` trials of `subjects_per_replicate`
  // subjects each; subject i belongs to replicate i / subjects_per_replicate. Change the number of
  // subjects with set_subjects_per_replicate, which keeps the three consistent. Code that sets
  // `size` alone is right only for one replicate (subjects_per_replicate is then ignored).
  std::int64_t size = 0;
  std::int64_t replicates = 1;
  std::int64_t subjects_per_replicate = 0;
  std::uint64_t seed = 0;
  CovariateDistribution weight;                                       // kg
  CovariateDistribution age = CovariateDistribution::constant(45.0);  // years
  double female_fraction = 0.5;
  // MADRS at baseline: TRD trials enrol at about 30-38 (e.g. Murrough 2013 and Singh 2016; an assumed
  // default, not fitted).
  CovariateDistribution baseline_madrs{CovariateDistribution::Kind::truncated_normal, 33.0, 33.0, 5.0, 20.0, 50.0};
  Variability variability;
  OccasionVariability occasion_variability;
  std::optional<Screening> screening;  // unset: response is measured from the model's baseline
  // Correlation matrix of weight, age and baseline MADRS (rows in that order), drawn together by
  // a Gaussian copula; 0 x 0 when cohort.correlations is not given, and each covariate is then
  // drawn by rejection from its own stream (the draws of scenarios written before correlations).
  Eigen::MatrixXd covariate_correlation;
  // cohort.from_csv: covariates of listed patients; null otherwise. Columns the file has replace
  // the distributions above. Without cohort.size subject i is row i mod subjects_per_replicate
  // (in_order); with it each subject draws a row from its own stream (resample).
  std::shared_ptr<const CovariateTable> table;
  enum class TableRows { in_order, resample };
  TableRows table_rows = TableRows::in_order;

  std::int64_t trial_size() const { return replicates > 1 ? subjects_per_replicate : size; }
  std::int64_t replicate_of(std::int64_t subject_id) const { return subject_id / trial_size(); }
  // Sets n (size = replicates x n); a usage Error when N would exceed the cohort limit, or when
  // n exceeds the rows of a table read in order.
  void set_subjects_per_replicate(std::int64_t n);
};

// The largest N (scenario_loader refuses more): subject ids and HDF5 extents stay far from
// int64 overflow.
inline constexpr std::int64_t kMaxCohortSize = std::int64_t{1} << 40;

// Doses per rule, per arm and per ID of a dosing table: every dose of a subject is kept in memory
// and written. (The longest time is kMaxTimeHours in time.hpp; the accepted dose amounts are
// units.cpp's ranges of QuantityKind::drug_amount and dose_per_weight.)
inline constexpr std::int64_t kMaxDoseCount = 1'000'000;

// Per-subject metrics that can be selected in output.metrics (docs/model.md defines them).
enum class Metric {
  cmax,                     // cmax_ng_per_ml and tmax_h (the dosed drug)
  auc,                      // auc_ng_h_per_ml
  auc_per_week,             // auc_per_week_ng_h_per_ml
  peak_dissociation,        // per dose: peak effect site, the links there (dissociation, blood pressure) and its time
  time_above_dissociation,  // time_above_dissociation_h
  dissociation_burden,      // dissociation_burden_score_h
  dosed,                    // dosed_mg
  metabolites,              // cmax and tmax of every metabolite
  response,                 // MADRS at the assessments, response, remission, relapse
  mass_balance,             // per drug: in the body at the end, eliminated, formed
};

// Simulated observations at sampling times, with residual error in the variable's display unit:
// DV = IPRED + sqrt(additive^2 + (proportional * IPRED)^2) * epsilon, epsilon ~ N(0, 1) from the
// subject's own stream (the same draws in every arm). Additive alone, proportional alone, or both
// (combined).
struct ObservedVariable {
  std::string name;           // a model output (e.g. plasma_ketamine)
  double proportional = 0.0;  // fraction (0.2 for 20%)
  double additive = 0.0;      // in the output's display unit (ng/mL for concentrations)
};

struct ObservationSpec {
  std::vector<Ticks> times;  // from the simulation start, ascending, within the grid
  std::vector<ObservedVariable> variables;
};

// Relapse on observed scores at scheduled visits (output.relapse), as relapse-prevention trials
// define it, besides the continuous loss of response (relapse_day). Visits are times after the
// first session; the first visit decides who is at risk (observed response or remission there);
// a relapse is `consecutive` visits in a row, after the first, whose observed MADRS meets the
// threshold, dated at the first (or last) visit of that run.
struct RelapseVisits {
  enum class Among { responders, remitters };
  enum class Threshold {
    loss_of_response,   // improvement from baseline below the response fraction (as relapse_day)
    madrs_at_least,     // observed MADRS >= value
    improvement_below,  // improvement from baseline below the fraction `value`
  };
  enum class Dated { first, last };
  std::vector<Ticks> visits;  // after the first session, ascending, at least two
  Among among = Among::responders;
  Threshold threshold = Threshold::loss_of_response;
  double value = 0.0;
  int consecutive = 1;
  Dated dated = Dated::first;
};

struct OutputSpec {
  Ticks grid_step = 5 * kTicksPerMinute;
  Ticks grid_end = 21 * kTicksPerDay;  // the grid is 0, step, 2*step, ... up to and including end
  // Trajectories written as [subject x time], by the model's output names (`ketasim models show
  // NAME` lists them); empty = metrics only (for very large cohorts). Unset: the model's
  // defaults (plasma of the dosed drug, effect site, dissociation, and the MADRS if it has one).
  std::optional<std::vector<std::string>> variables;
  std::vector<Metric> metrics{Metric::cmax,
                              Metric::auc,
                              Metric::auc_per_week,
                              Metric::peak_dissociation,
                              Metric::time_above_dissociation,
                              Metric::dissociation_burden,
                              Metric::dosed,
                              Metric::metabolites,
                              Metric::response};
  double dissociation_threshold = 5.0;  // score points, for time_above_dissociation_h
  // MADRS assessments, as times after the start of the first session (e.g. 2 h, 1 d, 15 d).
  std::vector<Ticks> assessments{kTicksPerDay, 7 * kTicksPerDay, 14 * kTicksPerDay};
  // MADRS assessments relative to every session (output.assessments.after_each_session and
  // before_each_session): times after each session's start, ascending; and an assessment just
  // before each session (its events not yet applied). None by default.
  std::vector<Ticks> assessments_after_each_session;
  bool assessment_before_each_session = false;
  double response_fraction = 0.5;        // response: a fall of at least this fraction from baseline
  double remission_threshold = 10;       // remission: MADRS at or below this
  ObservationSpec observations;          // none by default
  std::optional<RelapseVisits> relapse;  // relapse at visits; none by default
};

enum class SolverMethod {
  automatic,  // exact stepping where the model allows it, the ODE path otherwise
  exact,      // exact (matrix-exponential) stepping of the linear system
  ode,        // Boost.Odeint, adaptive Dormand-Prince 5(4), restarted at every boundary
};

struct SolverSpec {
  SolverMethod method = SolverMethod::automatic;
  double rtol = 1e-8;
  double atol = 1e-10;  // on amounts in mg and concentrations in mg/L
};

struct Scenario {
  std::string source_file;  // as given on the command line
  std::string yaml_text;    // verbatim, stored in the output for provenance
  std::string name;
  std::string description;
  ModelChoice model;
  Cohort cohort;
  std::vector<Arm> arms;
  OutputSpec output;
  SolverSpec solver;
};

// The model an arm simulates (docs/scenario.md, arms): the scenario's for an arm without one; for
// an arm naming the scenario's card, the scenario's parameters with the arm's replacing those of
// the same name; for an arm naming another card, that card with the arm's parameters only.
ModelChoice model_of(const Scenario& scenario, const Arm& arm);
// The same card with the same overrides (names and values, in any order).
bool same_model(const ModelChoice& a, const ModelChoice& b);

std::string to_string(Route route);
std::string to_string(DoseDrug drug);
std::string to_string(Metric metric);
std::string to_string(SolverMethod method);

}  // namespace ketasim
