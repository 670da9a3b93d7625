// Faults (issue 9): a solve whose numbers are not finite fails its subject instead of being
// written as solved; the ODE path stops at its step cap and when the run is cancelled.
//
// The absurd parameter values used here are refused when a scenario is loaded (lies outside the
// plausible range, tests/invalid_scenarios): they are set on the loaded Scenario directly, as a
// stand-in for whatever still makes a solve overflow (extreme random effects, say).

#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "engine_fixtures.hpp"
#include "ketasim/analysis/reproduction.hpp"
#include "ketasim/base/errors.hpp"
#include "ketasim/input/scenario_loader.hpp"
#include "ketasim/run/run.hpp"
#include "ketasim/solve/ode_propagator.hpp"

using namespace ketasim;

namespace {

// One subject-free template: the model, its overrides and the output selection vary.
std::string scenario_text(const std::string& model, const std::string& output) {
  return R"(
name: fault
model: {name: )" +
         model + R"(}
cohort: {size: 4, seed: 7, weight: 70 kg}
arms:
  - name: single
    regimen: {route: iv_infusion, dose: 35 mg, infusion_duration: 40 min, schedule: {at: [1 h]}}
output:
  grid: {every: 30 min, for: 3 d}
)" + output;
}

Scenario with_override(const std::string& text, const std::string& parameter, double value_in_base_units) {
  Scenario scenario = parse_scenario(text, "fault.yaml");
  scenario.model.overrides.push_back({parameter, value_in_base_units});
  return scenario;
}

struct Outcome {
  std::vector<int> status;
  std::vector<std::string> messages;
};

Outcome run(const Scenario& scenario) {
  Outcome outcome;
  RunOptions options;
  options.threads = 1;
  options.on_block = [&](const SubjectBlock& block) {
    for (std::size_t row = 0; row < block.status.size(); ++row) {
      outcome.status.push_back(block.status[row]);
      outcome.messages.push_back(block.message[row]);
    }
  };
  run_scenario(scenario, options);
  return outcome;
}

void check_every_subject_failed(const Outcome& outcome, const std::string& message) {
  REQUIRE(outcome.status.size() == 4);
  for (std::size_t s = 0; s < outcome.status.size(); ++s) {
    INFO("subject " << s);
    CHECK(outcome.status[s] == 1);
    CHECK_THAT(outcome.messages[s], Catch::Contains(message));
  }
}

}  // namespace

TEST_CASE("a MADRS that is not finite fails the subject, saying what and when", "[faults][non_finite]") {
  // resp_ec50 1e-200 ng*h/mL: every MADRS from the first session on was NaN, with status 0.
  const Scenario scenario =
      with_override(scenario_text("ketamine_venous", "  assessments: [1 d]\n"), "resp_ec50", 1e-203);
  check_every_subject_failed(run(scenario), "madrs is not finite at t = 1");
}

TEST_CASE("a trajectory value beyond float32 fails the subject", "[faults][non_finite]") {
  // V1 1e-36 L: plasma concentrations around 1e40 ng/mL, finite in double, infinite in the file.
  const Scenario scenario = with_override(
      scenario_text("ketamine_clements_2cmt", "  variables: [plasma_ketamine]\n  metrics: [cmax]\n"), "V1", 1e-36);
  check_every_subject_failed(run(scenario), "beyond the range of the float32 trajectories");
}

TEST_CASE("a metric that is not finite fails the subject, also when the solution is finite", "[faults][non_finite]") {
  // ec50_s 1e-300 ng/mL: the dissociation score overflows into NaN; plasma and effect site do not.
  const Scenario burden = with_override(
      scenario_text("ketamine_clements_2cmt", "  variables: []\n  metrics: [dissociation_burden]\n"), "ec50_s", 1e-303);
  check_every_subject_failed(run(burden), "metric dissociation_burden_score_h is not finite (NaN)");
  // sbp_ec50 1e-300 ng/mL: the blood pressure at the effect-site peak, a per-dose column whose NaN
  // otherwise means "dose not given".
  const Scenario peak = with_override(
      scenario_text("ketamine_clements_2cmt", "  variables: []\n  metrics: [peak_dissociation]\n"), "sbp_ec50", 1e-303);
  check_every_subject_failed(run(peak), "peak_sbp_change is not finite at t = 1.79");
  // V1 1e-306 L: the AUC overflows to infinity. Without dissociation tolerance (its state, driven by
  // the overflowing effect site, would stop the solve first on the ODE path).
  Scenario auc =
      with_override(scenario_text("ketamine_clements_2cmt", "  variables: []\n  metrics: [auc]\n"), "V1", 1e-306);
  auc.model.overrides.push_back({"diss_attenuation", 0.0});
  check_every_subject_failed(run(auc), "metric auc_ng_h_per_ml is not finite (+inf)");
}

TEST_CASE("metrics that are NaN by definition do not fail the subject", "[faults][non_finite]") {
  // No response within a day, so first_response_day, responder_end_of_treatment and relapse_day are
  // NaN; the second dose column is padding (one dose given of two possible), so its peak is NaN.
  Scenario scenario = parse_scenario(R"(
name: undefined_values
model: {name: ketamine_clements_2cmt}
cohort: {size: 4, seed: 7, weight: 70 kg, baseline_madrs: 30}
arms:
  - name: single
    regimen: {route: iv_infusion, dose: 35 mg, infusion_duration: 40 min, schedule: {at: [1 h, 400 h]}}
output:
  grid: {every: 30 min, for: 1 d}
  assessments: [2 h, 20 d]
)",
                                     "undefined_values.yaml");
  const ArmResults results = run_in_memory(scenario, 1).arm("single");
  CHECK(results.status == std::vector<std::int8_t>(4, 0));
  const auto all_nan = [&](const std::string& metric, std::size_t width, std::size_t element) {
    INFO(metric);
    REQUIRE(results.metrics.count(metric) == 1);
    bool nan = true;
    for (std::size_t s = 0; s < 4; ++s) nan = nan && std::isnan(results.metrics.at(metric)[s * width + element]);
    return nan;
  };
  CHECK(all_nan("responder_end_of_treatment", 1, 0));  // 1 d after the last session is past the grid
  CHECK(all_nan("relapse_day", 1, 0));                 // hence no responder to follow
  CHECK(all_nan("madrs_at", 2, 1));                    // the assessment at 20 d is past the grid
  CHECK(all_nan("peak_effect_site_ng_per_ml", 2, 1));  // the dose at 400 h is past the grid
  CHECK(all_nan("peak_dissociation", 2, 1));
  CHECK_FALSE(all_nan("madrs_at", 2, 0));
}

// ---- The ODE path: step cap, tolerances, cancellation ---------------------------------------

namespace {

// Clements 2-compartment with an effect site that equilibrates in a quarter of a millisecond.
testing::MammillaryEffectParameters stiff() {
  testing::MammillaryEffectParameters p = testing::two_compartment();
  p.ke0_per_h = 1e7;
  return p;
}

}  // namespace

TEST_CASE("the ODE step cap grows with the length of the step", "[faults][ode]") {
  CHECK(OdePropagator::step_cap(0.0) == 10'000);
  CHECK(OdePropagator::step_cap(1.0) == 10'000);
  CHECK(OdePropagator::step_cap(2.5) == 25'000);
  CHECK(OdePropagator::step_cap(168.0) == 1'680'000);
}

TEST_CASE("the ODE path stops at its step cap on a stiff system and says why", "[faults][ode]") {
  // Regression: ke0 = 1e7 1/h with method ode ran for over 10 minutes per subject.
  const std::vector<Dose> doses{testing::infusion(9 * kTicksPerHour, 40 * kTicksPerMinute, 35.0)};
  CHECK_THROWS_WITH(testing::run_subject(stiff(), doses, 10 * kTicksPerMinute, 2 * kTicksPerDay, SolverMethod::ode),
                    Catch::Contains("the ODE solver reached its cap of 10000 steps at t = 9.0") &&
                        Catch::Contains("in the step from 9 h to 9.166666667 h") &&
                        Catch::Contains("too stiff for an explicit method (fastest rate 1e+07/h)") &&
                        Catch::Contains("use solver.method exact or auto"));
  // The exact path solves it; the effect site then follows the plasma concentration.
  const testing::SubjectRun exact =
      testing::run_subject(stiff(), doses, 10 * kTicksPerMinute, 2 * kTicksPerDay, SolverMethod::exact);
  CHECK(exact.outcome.path == SolverPath::exact);
  CHECK(exact.effect[60] == Approx(exact.plasma[60]).epsilon(1e-5));

  // In a run: the subject fails with that message, and the run goes on.
  const Scenario scenario = parse_scenario(R"(
name: stiff
model: {name: ketamine_clements_2cmt, parameters: {ke0: 1e7 1/h}}
cohort: {size: 2, seed: 1, weight: 70 kg}
arms:
  - name: single
    regimen: {route: iv_infusion, dose: 35 mg, infusion_duration: 40 min, schedule: {at: [1 h]}}
output:
  grid: {every: 10 min, for: 2 d}
solver: {method: ode}
)",
                                           "stiff.yaml");
  const Outcome outcome = run(scenario);
  REQUIRE(outcome.status.size() == 2);
  for (std::size_t s = 0; s < 2; ++s) {
    CHECK(outcome.status[s] == 1);
    CHECK_THAT(outcome.messages[s], Catch::Contains("reached its cap of 10000 steps") && Catch::Contains("too stiff"));
  }
}

TEST_CASE("tolerances the solver cannot meet end at the step cap and say so", "[faults][ode]") {
  // The loader refuses rtol below 1e-14; the solver still ends in bounded time if given one.
  const std::vector<Dose> doses{testing::infusion(9 * kTicksPerHour, 40 * kTicksPerMinute, 35.0)};
  CHECK_THROWS_WITH(testing::run_subject(testing::two_compartment(), doses, 10 * kTicksPerMinute, kTicksPerDay,
                                         SolverMethod::ode, 5.0, 1e-30, 1e-30),
                    Catch::Contains("its steps shrank to about") && Catch::Contains("without meeting rtol 1e-30"));
}

TEST_CASE("a cancelled solve stops with InterruptedError on either path", "[faults][ode][cancel]") {
  std::atomic<bool> cancel{true};
  SubjectContext context;
  context.cancel = &cancel;
  for (const SolverMethod method : {SolverMethod::exact, SolverMethod::ode}) {
    CHECK_THROWS_AS(testing::run_subject(testing::two_compartment(), testing::twice_weekly(3), 10 * kTicksPerMinute,
                                         3 * kTicksPerWeek, method, 5.0, 1e-10, 1e-14, context),
                    InterruptedError);
  }
  // Within one long ODE step: checked every 1024 steps, long before the cap.
  const testing::TestModel test(stiff());
  const OdePropagator propagator(test.subject, 1e-8, 1e-10, &cancel);
  OdePropagator::State state = propagator.initial_state();
  propagator.bolus(state, 0, 35.0);
  const OdePropagator::Input no_input = StateVector::Zero(test.subject.states);
  CHECK_THROWS_AS(propagator.advance(state, 10.0, no_input), InterruptedError);
  cancel = false;
  CHECK_THROWS_AS(propagator.advance(state, 10.0, no_input), OdeStepCapReached);
}

// ---- Memory that does not depend on the cohort size ------------------------------------------

TEST_CASE("the end-of-run report is the same when its values are spilled to disk", "[faults][memory]") {
  const Scenario scenario = parse_scenario(R"(
name: spill
model: {name: ketamine_venous}
cohort:
  size: 300
  seed: 11
  weight: {distribution: normal, mean: 80 kg, sd: 15 kg, min: 45 kg, max: 150 kg}
  baseline_madrs: {distribution: normal, mean: 33, sd: 5, min: 20, max: 50}
arms:
  - name: once
    regimen: {route: iv_infusion, dose: 0.5 mg/kg, infusion_duration: 40 min, schedule: [Mon 09:00], for: 2 weeks}
  - name: twice
    regimen: {route: iv_infusion, dose: 0.5 mg/kg, infusion_duration: 40 min, schedule: [Mon 09:00, Thu 09:00], for: 2 weeks}
output:
  grid: {every: 1 h, for: 3 weeks}
  variables: []
  assessments: [1 d, 15 d]
)",
                                           "spill.yaml");
  RunOptions in_memory;
  in_memory.threads = 2;
  in_memory.block_size = 64;
  RunOptions spilled = in_memory;
  spilled.report_memory_bytes = 1;  // every value goes to the temporary files
  spilled.threads = 1;
  spilled.block_size = 17;
  const RunReport a = run_scenario(scenario, in_memory);
  const RunReport b = run_scenario(scenario, spilled);
  REQUIRE(a.arms.size() == 2);
  const auto same = [](double x, double y) { return std::isnan(x) ? std::isnan(y) : x == y; };
  for (std::size_t arm = 0; arm < 2; ++arm) {
    const ArmReport& x = a.arms[arm];
    const ArmReport& y = b.arms[arm];
    for (const auto field :
         {&ArmReport::sessions_given, &ArmReport::cmax_ng_per_ml, &ArmReport::first_dose_peak_dissociation,
          &ArmReport::weekly_auc_ng_h_per_ml, &ArmReport::dissociation_hours_per_week}) {
      CHECK(same((x.*field).p05, (y.*field).p05));
      CHECK(same((x.*field).p50, (y.*field).p50));
      CHECK(same((x.*field).p95, (y.*field).p95));
    }
    CHECK(x.madrs_change_median == y.madrs_change_median);
    CHECK(x.response_fraction == y.response_fraction);
    CHECK(x.remission_fraction == y.remission_fraction);
    CHECK(x.cmax_ng_per_ml.p95 > x.cmax_ng_per_ml.p50);
  }
}

TEST_CASE("a cohort whose statistics cannot fit anywhere is refused before it runs", "[faults][memory]") {
  // Regression: size 1000000000000 (within the documented 2^40) validated, then died with
  // std::bad_alloc. Memory no longer grows with the cohort; the end-of-run statistics would need
  // 8 bytes per subject, arm and reported value of temporary files (here about 100 TB).
  const Scenario scenario = parse_scenario(R"(
name: huge
model: {name: ketamine_clements_2cmt}
cohort: {size: 1000000000000, seed: 1, weight: 70 kg}
arms:
  - name: single
    regimen: {route: iv_infusion, dose: 35 mg, infusion_duration: 40 min, schedule: {at: [1 h]}}
output:
  grid: {every: 1 h, for: 2 d}
  variables: []
)",
                                           "huge.yaml");
  const std::filesystem::path folder =
      std::filesystem::temp_directory_path() / ("ketasim_huge_" + std::to_string(::getpid()));
  std::filesystem::create_directories(folder);
  RunOptions options;
  options.output_path = (folder / "results.h5").string();
  try {
    run_scenario(scenario, options);
    FAIL("the run was accepted");
  } catch (const Error& error) {
    CHECK(error.code() == ExitCode::scenario);
    CHECK_THAT(error.what(),
               Catch::StartsWith("huge.yaml: cohort.size: 1000000000000 subjects per arm need") &&
                   Catch::Contains("TB of temporary files for the end-of-run statistics in " + folder.string()) &&
                   Catch::Contains("run fewer subjects"));
  }
  CHECK(std::filesystem::is_empty(folder));
  std::filesystem::remove_all(folder);
}
