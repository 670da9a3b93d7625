// The breakpoint plan a subject's solve runs (the one `ketasim timeline` prints), its same-time
// rule, and observers of the solve in isolation.

#include <algorithm>
#include <catch2/catch.hpp>

#include "engine_fixtures.hpp"
#include "ketasim/input/scenario_loader.hpp"
#include "ketasim/run/run.hpp"
#include "ketasim/solve/observers.hpp"

using namespace ketasim;
using namespace ketasim::testing;

namespace {

std::vector<TimelineEvent> events_at(const BreakpointPlan& plan, Ticks time) {
  std::vector<TimelineEvent> events;
  for (const TimelineEvent& event : plan.events)
    if (event.time == time) events.push_back(event);
  return events;
}

// A propagator whose state is the plasma concentration and its integral, set by hand.
struct HandPropagator {
  struct State {
    double plasma = 0.0;
    double integral = 0.0;
  };
  using Input = double;
  double signal(const State& state, int) const { return state.plasma; }
  double signal_integral(const State& state, int) const { return state.integral; }
};

}  // namespace

TEST_CASE("jumps of one dose at one time keep the order the dose gives them", "[plan]") {
  // A dose's session jump comes before its drug jump (model_inputs' order), whatever the channel
  // numbers: the order of the additions fixes the rounding of the state.
  const std::vector<ModelInput> inputs{{100, 0, 1.0, 3, 0}, {100, 0, 5.0, 0, 0}, {100, 0, 2.0, 1, 1}};
  const std::vector<TimelineEvent> events = input_events(inputs);
  REQUIRE(events.size() == 3);
  CHECK(events[0].channel == 3);
  CHECK(events[1].channel == 0);
  CHECK(events[2].dose == 1);
  CHECK(events[0].input == 0);
}

TEST_CASE("the plan orders stop, start, session start, bolus, observation at one time", "[plan]") {
  const TestModel test(two_compartment());
  const std::vector<Dose> doses{infusion(0, 100, 10.0), infusion(100, 100, 10.0), bolus(100, 5.0)};
  const BreakpointPlan plan =
      breakpoint_plan(doses, *test.model, test.subject, 30, 2 * kTicksPerWeek + 45, {{100, Mark::sample}});
  const std::vector<TimelineEvent> at = events_at(plan, 100);
  REQUIRE(at.size() == 6);
  CHECK(at[0].kind == EventKind::infusion_stop);
  CHECK(at[1].kind == EventKind::infusion_start);
  CHECK(at[2].kind == EventKind::session_start);
  CHECK(at[2].dose == 1);
  CHECK(at[3].kind == EventKind::session_start);
  CHECK(at[3].dose == 2);
  CHECK(at[4].kind == EventKind::bolus);
  CHECK(at[5].kind == EventKind::observation);
  CHECK(at[5].mark == Mark::sample);
  // Back-to-back infusions at one rate make one segment: their edge is a breakpoint through the
  // session start only. Week ends and the end of the grid are breakpoints; the grid points are not.
  CHECK(plan.breakpoints == std::vector<Ticks>{0, 100, 200, kTicksPerWeek, 2 * kTicksPerWeek, 2 * kTicksPerWeek + 45});
  CHECK(std::is_sorted(plan.events.begin(), plan.events.end(), happens_before));
}

TEST_CASE("the solve runs the plan breakpoint_plan builds", "[plan]") {
  const TestModel test(two_compartment());
  const std::vector<Dose> doses = twice_weekly(2);
  SimulationPlan simulation;
  simulation.grid_step = 5 * kTicksPerMinute;
  simulation.grid_end = 10 * kTicksPerDay;
  BreakpointPlan ran;
  SubjectContext context;
  context.ran_plan = &ran;
  SubjectMetrics metrics = sized_metrics(*test.model, simulation, doses.size());
  std::vector<Dose> given = doses;
  SolverSpec solver;
  simulate_subject(*test.model, test.subject, solver, simulation, given, context, {}, metrics);
  const BreakpointPlan built =
      breakpoint_plan(doses, *test.model, test.subject, simulation.grid_step, simulation.grid_end, {});
  CHECK(ran.breakpoints == built.breakpoints);
  REQUIRE(ran.events.size() == built.events.size());
  for (std::size_t e = 0; e < ran.events.size(); ++e) {
    CHECK(ran.events[e].time == built.events[e].time);
    CHECK(ran.events[e].kind == built.events[e].kind);
  }
}

TEST_CASE("the timeline's plan is the one the solver ran, with the doses an as-needed rule gave", "[plan]") {
  const Scenario scenario =
      load_scenario_file(std::string(KETASIM_SOURCE_DIR) + "/scenarios/as_needed_maintenance.yaml");
  std::size_t arm = 0;
  while (scenario.arms[arm].name != "as_needed") ++arm;
  const SubjectSchedule schedule = subject_schedule(scenario, arm, 3);
  REQUIRE(std::any_of(schedule.doses.begin(), schedule.doses.end(), [](const Dose& dose) { return dose.triggered; }));
  std::vector<Ticks> session_starts;
  for (const TimelineEvent& event : schedule.plan.events)
    if (event.kind == EventKind::session_start) session_starts.push_back(event.time);
  REQUIRE(session_starts.size() == schedule.doses.size());
  for (std::size_t d = 0; d < schedule.doses.size(); ++d) CHECK(session_starts[d] == schedule.doses[d].start);
  // The as-needed windows are breakpoints of the same plan.
  CHECK(std::any_of(schedule.plan.events.begin(), schedule.plan.events.end(),
                    [](const TimelineEvent& event) { return event.mark == Mark::as_needed_window; }));
}

TEST_CASE("the exposure observer: Cmax, Tmax and the AUC of each week from the points alone", "[plan][observer]") {
  SubjectMetrics metrics;
  const Ticks end = kTicksPerWeek + kTicksPerDay;
  Exposure exposure(0, end, 2, metrics);
  const HandPropagator propagator;
  const auto show = [&](Ticks t, double plasma, double integral) {
    const HandPropagator::State state{plasma, integral};
    exposure.at_point(SolvePoint<HandPropagator>{t, propagator, state, true, {}});
  };
  show(0, 0.0, 0.0);
  show(kTicksPerHour, 0.002, 0.001);
  show(2 * kTicksPerHour, 0.001, 0.0025);
  show(kTicksPerWeek, 0.0005, 0.010);
  const HandPropagator::State last{0.0, 0.011};
  const SolvePoint<HandPropagator> final_point{end, propagator, last, true, {}};
  exposure.at_point(final_point);
  exposure.finish(final_point);
  CHECK(metrics.cmax_ng_per_ml == Approx(2.0));
  CHECK(metrics.tmax_h == 1.0);
  REQUIRE(metrics.auc_per_week_ng_h_per_ml.size() == 2);
  CHECK(metrics.auc_per_week_ng_h_per_ml[0] == Approx(10.0));
  CHECK(metrics.auc_per_week_ng_h_per_ml[1] == Approx(1.0));
  CHECK(metrics.auc_ng_h_per_ml == Approx(11.0));
}

TEST_CASE("the response observer places threshold crossings between points linearly", "[plan][observer]") {
  DepressionValues depression;
  SimulationPlan plan;
  plan.response_fraction = 0.5;
  SubjectContext context;
  context.baseline_madrs = 30.0;  // response at a score of 15 or less
  SubjectMetrics metrics;
  metrics.first_response_day = std::numeric_limits<double>::quiet_NaN();
  ResponseScores scores(depression, plan, context, 0, 0, true, metrics);
  scores.at_point(0, 30.0);
  scores.at_point(kTicksPerDay, 20.0);
  scores.at_point(2 * kTicksPerDay, 10.0);  // crossed at 1.5 d
  scores.at_point(3 * kTicksPerDay, 10.0);
  scores.at_point(4 * kTicksPerDay, 20.0);  // lost at 3.5 d
  scores.finish(5 * kTicksPerDay);
  CHECK(metrics.first_response_day == Approx(1.5));
  CHECK(metrics.days_in_response == Approx(2.0));
  CHECK(metrics.responder_end_of_treatment == 0.0);  // 1 d after the last session: not yet responding
}
