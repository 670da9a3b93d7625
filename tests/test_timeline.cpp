// The event timeline: dose expansion by multiplication, the same-time rule, and the
// constant-input segments.

#include <algorithm>
#include <catch2/catch.hpp>

#include "engine_fixtures.hpp"

using namespace ketasim;
using namespace ketasim::testing;

namespace {
DosingRule rule_every(Ticks interval, Ticks start) {
  DosingRule rule;
  rule.route = Route::iv_bolus;
  rule.dose = {10.0, DoseBasis::flat};
  rule.schedule = ScheduleKind::interval;
  rule.interval = interval;
  rule.start = start;
  return rule;
}
}  // namespace

TEST_CASE("weekly slots expand to exact times", "[timeline]") {
  DosingRule rule;
  rule.schedule = ScheduleKind::weekly;
  rule.weekly_slots = {{0, 9 * kTicksPerHour}, {3, 9 * kTicksPerHour}};
  rule.repeat_for = 3 * kTicksPerWeek;
  const auto times = dose_times(rule);
  const std::vector<Ticks> expected{9, 81, 177, 249, 345, 417};
  REQUIRE(times.size() == expected.size());
  for (std::size_t i = 0; i < times.size(); ++i) CHECK(times[i] == expected[i] * kTicksPerHour);

  rule.repeat_for.reset();
  rule.count = 5;
  CHECK(dose_times(rule).size() == 5);
  rule.count.reset();
  rule.start = 2 * kTicksPerDay;  // the whole weekly pattern shifts
  rule.repeat_for = kTicksPerWeek;
  CHECK(dose_times(rule) == std::vector<Ticks>{57 * kTicksPerHour, 129 * kTicksPerHour});
}

TEST_CASE("interval schedules multiply from the anchor and exclude the end of the span", "[timeline]") {
  // 1/3 h is not representable in binary; in ticks it is exact, so 3 doses per hour for 100 h
  // are exactly 300 doses with no drift.
  DosingRule rule = rule_every(20 * kTicksPerMinute, 9 * kTicksPerHour);
  rule.repeat_for = 100 * kTicksPerHour;
  const auto times = dose_times(rule);
  REQUIRE(times.size() == 300);
  CHECK(times.back() == 9 * kTicksPerHour + 299 * 20 * kTicksPerMinute);
  rule.repeat_for = 3 * kTicksPerWeek;
  rule.interval = 84 * kTicksPerHour;  // every 3.5 d
  CHECK(dose_times(rule).size() == 6);
}

TEST_CASE("the same-time rule orders stop, start, bolus, observation", "[timeline]") {
  std::vector<TimelineEvent> events{{100, EventKind::observation, -1, 0, 0},
                                    {100, EventKind::bolus, 2, 5, 0},
                                    {100, EventKind::infusion_start, 1, 35, 52.5},
                                    {100, EventKind::infusion_stop, 0, 35, 52.5},
                                    {50, EventKind::observation, -1, 0, 0}};
  std::sort(events.begin(), events.end(), happens_before);
  CHECK(events[0].time == 50);
  CHECK(events[1].kind == EventKind::infusion_stop);
  CHECK(events[2].kind == EventKind::infusion_start);
  CHECK(events[3].kind == EventKind::bolus);
  CHECK(events[4].kind == EventKind::observation);

  const auto from_doses = input_events(iv_inputs({infusion(0, 100, 1.0), infusion(100, 100, 1.0), bolus(100, 1.0)}));
  REQUIRE(from_doses.size() == 5);
  CHECK(from_doses[1].kind == EventKind::infusion_stop);
  CHECK(from_doses[2].kind == EventKind::infusion_start);
  CHECK(from_doses[3].kind == EventKind::bolus);
}

TEST_CASE("an observation at the time of a bolus sees the bolus", "[timeline]") {
  const auto p = one_compartment();
  const auto run = run_subject(p, {bolus(kTicksPerHour, 25.0)}, kTicksPerHour, 3 * kTicksPerHour);
  CHECK(run.plasma[0] == 0.0f);
  CHECK(run.plasma[1] == Approx(25.0 / p.V1_L * 1000.0).epsilon(1e-6));
  CHECK(run.metrics.tmax_h == 1.0);
}

TEST_CASE("overlapping infusions add their rates, back-to-back ones leave no gap", "[timeline]") {
  const auto segments = input_segments(
      iv_inputs({infusion(0, 60 * kTicksPerMinute, 60.0), infusion(30 * kTicksPerMinute, 60 * kTicksPerMinute, 30.0),
                 infusion(90 * kTicksPerMinute, 30 * kTicksPerMinute, 15.0)}),
      3 * kTicksPerHour, 1);
  REQUIRE(segments.size() == 4);
  CHECK(segments[0].rates[0] == 60.0);
  CHECK(segments[1].start == 30 * kTicksPerMinute);
  CHECK(segments[1].rates[0] == 90.0);
  // 60-90 min: only the second (30 mg/h); 90-120 min: the third, also 30 mg/h, so one segment.
  CHECK(segments[2].start == 60 * kTicksPerMinute);
  CHECK(segments[2].end == 120 * kTicksPerMinute);
  CHECK(segments[2].rates[0] == 30.0);
  CHECK(segments[3].rates[0] == 0.0);
  CHECK(segments[3].end == 3 * kTicksPerHour);
}

TEST_CASE("weight-based doses scale with the subject's weight", "[timeline]") {
  Arm arm;
  DosingRule rule = rule_every(kTicksPerDay, 0);
  rule.dose = {0.5, DoseBasis::per_body_weight};
  rule.count = 2;
  arm.regimen = {rule};
  const auto doses = expand_doses(arm, 84.0);
  REQUIRE(doses.size() == 2);
  CHECK(doses[0].amount_mg == Approx(42.0));
  CHECK(doses[1].start == kTicksPerDay);
}

TEST_CASE("describe_time names the weekday, clock time and week", "[timeline]") {
  CHECK(describe_time(81 * kTicksPerHour) == "Thu 09:00 (week 1)");
  CHECK(describe_time(kTicksPerWeek + 9 * kTicksPerHour + 40 * kTicksPerMinute) == "Mon 09:40 (week 2)");
}
