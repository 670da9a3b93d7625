#pragma once
// Regimen -> the doses of one subject -> the model inputs they become -> the ordered event
// timeline and the constant-input segments the solver integrates over.
//
// A dose is what the clinic gives (an infusion, a bolus, an intranasal session of n devices, or a
// placebo session); a model input is what enters one input channel of the model (a jump, or a
// constant rate over a time). An intranasal device becomes a jump into the nasal depot and a
// constant-rate input of the swallowed part into the gut depot; every dose is also a treatment
// session, a unit jump into the session memories of its kind.
//
// The same-time rule: events at the same instant happen in the order of EventKind below:
// input stops, then input starts, then session starts (where an occasion opens), then jumps
// (boluses), then observations. An observation at the time of a bolus therefore sees the bolus,
// an infusion that stops when another starts leaves no gap, and a bolus given when an occasion
// opens enters the occasion's system. Ties within a kind keep the dose order, and within a dose the
// order in which the dose gives its inputs (its session first). The solver runs the plan
// breakpoint_plan() orders by this rule; `ketasim timeline` prints the same plan.

#include <string>
#include <vector>

#include "ketasim/input/scenario.hpp"
#include "ketasim/model/model.hpp"

namespace ketasim {

enum class EventKind : int { infusion_stop, infusion_start, session_start, bolus, observation };

std::string to_string(EventKind kind);

// Why an observation is a breakpoint of the plan (a time where a solve step must end although no
// input changes there).
enum class Mark : int {
  none,
  sample,            // a sampling time of output.observations
  assessment,        // a MADRS assessment
  end_of_treatment,  // 1 d after the last session (responder_end_of_treatment)
  as_needed_window,  // an as-needed rule starts to allow a dose, or min_interval after a session
  week_end,          // the end of a week of auc_per_week
  grid_end,
};

std::string to_string(Mark mark);

struct Dose {
  Ticks start = 0;
  Ticks duration = 0;  // infusions; 0 for a bolus or an intranasal session
  double amount_mg = 0.0;
  Route route = Route::iv_infusion;
  DoseDrug drug = DoseDrug::model_drug;
  int rule = 0;            // index of the dosing rule in the arm's regimen
  bool triggered = false;  // given by an as-needed rule during the solve

  double rate_mg_per_h() const { return duration > 0 ? amount_mg / ticks_to_hours(duration) : 0.0; }
  SessionKind session() const;
};

// What a dose gives, as the result file records it per dose (subjects/dose_route): no drug (a
// placebo or midazolam session), or the card's drug by a route.
enum class DoseRouteCode : int { no_drug = 0, iv_infusion = 1, iv_bolus = 2, intranasal = 3 };
DoseRouteCode route_code(const Dose& dose);

// The start of each device of an intranasal dose of the card's drug: amount / device_mg devices,
// device_interval apart from the dose start.
std::vector<Ticks> device_times(const Dose& dose, const IntranasalEntry& entry);

// What enters one channel of the model: a jump (duration 0) or `amount` spread evenly over
// `duration`.
struct ModelInput {
  Ticks start = 0;
  Ticks duration = 0;
  double amount = 0.0;  // mg for drug channels, sessions for session channels
  int channel = 0;
  int dose = 0;  // the dose it comes from

  double rate_per_h() const { return duration > 0 ? amount / ticks_to_hours(duration) : 0.0; }
};

struct TimelineEvent {
  Ticks time = 0;
  EventKind kind = EventKind::observation;
  int dose = -1;  // index into the dose list; -1 for observations
  double amount = 0.0;
  double rate_per_h = 0.0;
  int channel = -1;
  int input = -1;          // index into the model inputs; -1 for session starts and observations
  Mark mark = Mark::none;  // observations: why the time is a breakpoint
};

// The strict order of the same-time rule: by time, then kind, then dose index, then input index
// (the order the dose gives its inputs), then mark. Jumps at one time are applied in this order,
// which fixes the rounding of the state they build.
bool happens_before(const TimelineEvent& a, const TimelineEvent& b);

// Nominal start times of one scheduled rule's doses (t_k = start + k * interval, never
// accumulated); empty for as-needed and table rules, whose doses depend on the subject.
std::vector<Ticks> dose_times(const DosingRule& rule);

// The amount of one dose of a rule for a subject of this weight: mg/kg times weight, capped.
double dose_amount_mg(const DosingRule& rule, double weight_kg);

// A dose of a rule at `start` for a subject of this weight.
Dose make_dose(const DosingRule& rule, int rule_index, Ticks start, double weight_kg);

// The doses of an arm's scheduled rules (weekly, interval, explicit) for a subject of this weight,
// ordered by start time (then rule order): the nominal schedule, the same for every subject.
std::vector<Dose> expand_doses(const Arm& arm, double weight_kg);

struct SubjectDoses {
  std::vector<Dose> doses;  // ordered by start time (then rule order)
  int missed = 0;           // scheduled sessions missed (adherence)
};

// The doses one subject is given before the solve: the scheduled rules and the subject's rows of
// any dosing table (NONMEM ID = subject id + 1), less the sessions missed. A scheduled session k
// (in time order) is missed when draw k of the subject's adherence stream is below the arm's
// missed_session_probability. As-needed doses are added during the solve.
SubjectDoses subject_doses(const Arm& arm, double weight_kg, std::int64_t subject_id, std::uint64_t seed);

// The most doses any subject of the arm can be given over a grid ending at grid_end.
std::size_t most_doses(const Arm& arm, Ticks grid_end);

// The model inputs of the doses, for one subject's model.
std::vector<ModelInput> model_inputs(const std::vector<Dose>& doses, const Model& model, const SubjectModel& subject);

// Input events (no observations) ordered by the same-time rule; `input` is the index in `inputs`.
std::vector<TimelineEvent> input_events(const std::vector<ModelInput>& inputs);

// A stretch of time with constant input rates, one per channel. Overlapping inputs add.
struct InputSegment {
  Ticks start = 0;
  Ticks end = 0;
  std::vector<double> rates;  // per channel
};

// Piecewise-constant input covering [0, end] exactly, split at every edge of a constant-rate
// input. Each segment's rates are summed afresh over the inputs covering it (no running counter).
std::vector<InputSegment> input_segments(const std::vector<ModelInput>& inputs, Ticks end, int channels);

// A time an observer of the solve must see as a breakpoint, and why.
struct PlanMark {
  Ticks time = 0;
  Mark mark = Mark::none;
};

// What one subject's solve runs: its model inputs, the constant-input segments between their
// edges, and every event (input edges, session starts, jumps, marked observations) ordered by the
// same-time rule. The solve steps from breakpoint to breakpoint and along the output grid; at a
// breakpoint it applies the events of that time in this order. Events after grid_end are listed
// (the timeline shows them) but never reached. Rebuilt whole when an as-needed dose is added or an
// occasion begins.
struct BreakpointPlan {
  Ticks grid_step = 0;
  Ticks grid_end = 0;
  std::vector<ModelInput> inputs;
  std::vector<InputSegment> segments;  // cover [0, grid_end]
  std::vector<TimelineEvent> events;   // ordered by happens_before
  // The distinct times in [0, grid_end] where a step must end: segment edges (where the summed
  // input rates change; an input edge that changes no rate is not one), jumps, session starts,
  // marked observations, and grid_end. Ascending.
  std::vector<Ticks> breakpoints;
};

// The plan of these doses for one subject's model, with the observers' marks and the week ends
// (k weeks, within the grid) and the grid end as marked observations.
BreakpointPlan breakpoint_plan(const std::vector<Dose>& doses, const Model& model, const SubjectModel& subject,
                               Ticks grid_step, Ticks grid_end, const std::vector<PlanMark>& marks);

// The channel names of a model, for the timeline ("ketamine.central", "session:placebo").
std::vector<std::string> channel_names(const Model& model);

// "Mon 09:00 (week 1)" style label of a time, for the timeline command.
std::string describe_time(Ticks time);

}  // namespace ketasim
