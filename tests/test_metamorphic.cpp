// Metamorphic tests of the scheduler and solver: two ways of saying the same thing must give
// the same answer, and linear PK must obey its conservation laws.

#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>

#include "engine_fixtures.hpp"

using namespace ketasim;
using namespace ketasim::testing;

namespace {
DosingRule weekly_infusion_rule(std::vector<WeeklySlot> slots, Ticks repeat_for) {
  DosingRule rule;
  rule.route = Route::iv_infusion;
  rule.dose = {0.5, DoseBasis::per_body_weight};
  rule.infusion_duration = 40 * kTicksPerMinute;
  rule.schedule = ScheduleKind::weekly;
  rule.weekly_slots = std::move(slots);
  rule.repeat_for = repeat_for;
  return rule;
}
}  // namespace

TEST_CASE("schedule shorthand equals the same doses listed explicitly", "[metamorphic]") {
  Arm shorthand;
  shorthand.regimen = {weekly_infusion_rule({{0, 9 * kTicksPerHour}, {3, 9 * kTicksPerHour}}, 3 * kTicksPerWeek)};
  Arm explicit_list;
  DosingRule rule = shorthand.regimen.front();
  rule.schedule = ScheduleKind::explicit_times;
  rule.weekly_slots.clear();
  rule.repeat_for.reset();
  for (const double hours : {9.0, 81.0, 177.0, 249.0, 345.0, 417.0})
    rule.explicit_times.push_back(static_cast<Ticks>(hours * kTicksPerHour));
  explicit_list.regimen = {rule};

  const auto short_doses = expand_doses(shorthand, 80.0);
  const auto long_doses = expand_doses(explicit_list, 80.0);
  REQUIRE(short_doses.size() == 6);
  REQUIRE(long_doses.size() == 6);
  const auto a = run_subject(two_compartment(), short_doses, 5 * kTicksPerMinute, 21 * kTicksPerDay);
  const auto b = run_subject(two_compartment(), long_doses, 5 * kTicksPerMinute, 21 * kTicksPerDay);
  CHECK(a.plasma == b.plasma);
  CHECK(a.effect == b.effect);
  CHECK(a.metrics.peak_link == b.metrics.peak_link);
  CHECK(a.metrics.auc_ng_h_per_ml == b.metrics.auc_ng_h_per_ml);
}

TEST_CASE("two back-to-back 20-min infusions equal one 40-min infusion", "[metamorphic]") {
  const Ticks start = 9 * kTicksPerHour;
  const std::vector<Dose> one{infusion(start, 40 * kTicksPerMinute, 35.0)};
  const std::vector<Dose> two{infusion(start, 20 * kTicksPerMinute, 17.5),
                              infusion(start + 20 * kTicksPerMinute, 20 * kTicksPerMinute, 17.5)};
  for (const SolverMethod method : {SolverMethod::exact, SolverMethod::ode}) {
    // A 3-minute grid puts the junction at 20 min inside a grid step.
    const auto a = run_subject(three_compartment(), one, 3 * kTicksPerMinute, kTicksPerDay, method);
    const auto b = run_subject(three_compartment(), two, 3 * kTicksPerMinute, kTicksPerDay, method);
    for (std::size_t k = 0; k < a.plasma.size(); ++k) {
      INFO("grid point " << k);
      REQUIRE(b.plasma[k] == Approx(a.plasma[k]).epsilon(1e-6).margin(1e-9));
    }
    CHECK(b.metrics.cmax_ng_per_ml == Approx(a.metrics.cmax_ng_per_ml).epsilon(1e-9));
    CHECK(b.metrics.auc_ng_h_per_ml == Approx(a.metrics.auc_ng_h_per_ml).epsilon(1e-9));
  }
}

TEST_CASE("the plasma peak lands at the end of the infusion", "[metamorphic]") {
  const Ticks start = 9 * kTicksPerHour;
  for (const auto& parameters : {one_compartment(), two_compartment(), three_compartment()}) {
    // A 7-minute grid does not contain the end of infusion (09:40): the peak must still be found there.
    const auto run =
        run_subject(parameters, {infusion(start, 40 * kTicksPerMinute, 35.0)}, 7 * kTicksPerMinute, kTicksPerDay);
    CHECK(run.metrics.tmax_h == Approx(ticks_to_hours(start + 40 * kTicksPerMinute)).margin(1e-12));
    const float grid_max = *std::max_element(run.plasma.begin(), run.plasma.end());
    CHECK(run.metrics.cmax_ng_per_ml > grid_max);
  }
}

TEST_CASE("linear PK: weekly AUC at steady state is weekly dose / CL, once or twice a week", "[metamorphic]") {
  const auto p = two_compartment();
  const double clearance = p.k10_per_h * p.V1_L;
  const int weeks = 6;
  std::vector<Dose> once, twice;
  for (int w = 0; w < weeks; ++w) {
    once.push_back(infusion(w * kTicksPerWeek + 9 * kTicksPerHour, 40 * kTicksPerMinute, 70.0));
    for (const int day : {0, 3})
      twice.push_back(infusion(w * kTicksPerWeek + day * kTicksPerDay + 9 * kTicksPerHour, 40 * kTicksPerMinute, 35.0));
  }
  const auto a = run_subject(p, once, 5 * kTicksPerMinute, weeks * kTicksPerWeek);
  const auto b = run_subject(p, twice, 5 * kTicksPerMinute, weeks * kTicksPerWeek);
  const double expected_ng_h_per_ml = 70.0 / clearance * 1000.0;
  for (std::size_t w = 2; w < static_cast<std::size_t>(weeks); ++w) {
    INFO("week " << w + 1);
    CHECK(a.metrics.auc_per_week_ng_h_per_ml[w] == Approx(expected_ng_h_per_ml).epsilon(1e-6));
    CHECK(b.metrics.auc_per_week_ng_h_per_ml[w] == Approx(expected_ng_h_per_ml).epsilon(1e-6));
  }
  // The same weekly exposure, but a lower peak when the dose is split.
  CHECK(b.metrics.cmax_ng_per_ml < a.metrics.cmax_ng_per_ml);
}

TEST_CASE("mass balance: dosed = in the body + eliminated", "[metamorphic]") {
  std::vector<Dose> doses = twice_weekly(2);
  doses.insert(doses.begin() + 1, bolus(30 * kTicksPerHour, 10.0));
  // The run ends during an infusion, so the pro-rata dose is exercised too.
  const Ticks end = doses.back().start + 15 * kTicksPerMinute;
  for (const auto& parameters : {one_compartment(), two_compartment(), three_compartment()}) {
    for (const SolverMethod method : {SolverMethod::exact, SolverMethod::ode}) {
      const auto run = run_subject(parameters, doses, 5 * kTicksPerMinute, end, method);
      const auto& m = run.metrics;
      INFO("peripheral compartments " << parameters.peripheral_compartments << ", method " << static_cast<int>(method));
      CHECK(m.dosed_mg == Approx(4 * 35.0 + 10.0 - 35.0 * 25.0 / 40.0).epsilon(1e-12));
      CHECK(m.given_mg[0] == m.dosed_mg);
      CHECK(m.amount_in_body_end_mg[0] + m.eliminated_mg[0] == Approx(m.dosed_mg).epsilon(1e-8));
      // Independently of the integral: CL times the plasma AUC is what was eliminated.
      CHECK(m.eliminated_mg[0] ==
            Approx(parameters.k10_per_h * parameters.V1_L * m.auc_ng_h_per_ml / 1000.0).epsilon(1e-8));
    }
  }
}
