// An observed screening score (cohort.screening; issue 11): response is measured from the MADRS
// observed at screening, and inclusion bounds on it select subjects whose model baseline regresses
// towards the mean.

#include <catch2/catch.hpp>
#include <cmath>
#include <string>

#include "engine_fixtures.hpp"
#include "ketasim/analysis/reproduction.hpp"
#include "ketasim/base/errors.hpp"
#include "ketasim/input/scenario_loader.hpp"

using namespace ketasim;

namespace {

constexpr std::size_t kSubjects = 400;

Scenario screening_scenario(const std::string& cohort_extra) {
  return parse_scenario(R"(
name: screening
model: {name: ketamine_venous}
cohort:
  size: 400
  seed: 3907
  weight: {distribution: normal, mean: 80 kg, sd: 15 kg, min: 45 kg, max: 150 kg}
  baseline_madrs: {distribution: normal, mean: 30, sd: 6, min: 15, max: 50}
)" + cohort_extra + R"(
arms:
  - name: twice_weekly
    regimen: {route: iv_infusion, dose: 0.5 mg/kg, infusion_duration: 40 min, schedule: [Mon 09:00, Thu 09:00],
              for: 2 weeks}
output:
  grid: {every: 1 h, for: 3 weeks}
  variables: []
  assessments: [1 d, 7 d, 14 d]
)",
                        "screening.yaml");
}

double column(const ArmResults& arm, const std::string& name, std::size_t i) {
  return arm.subject_columns.at(name)[i];
}

double metric(const ArmResults& arm, const std::string& name, std::size_t i, std::size_t j = 0) {
  return arm.metrics.at(name)[i * arm.metric_width.at(name) + j];
}

}  // namespace

TEST_CASE("screening: response is measured from the observed screening score", "[screening][response]") {
  const ScenarioResults screened = run_in_memory(screening_scenario("  screening: true"), 2);
  const ScenarioResults plain = run_in_memory(screening_scenario(""), 2);
  const ArmResults& arm = screened.arms[0];
  const ArmResults& reference = plain.arms[0];
  CHECK_FALSE(reference.subject_columns.contains("screening_madrs"));
  double sum2 = 0.0;
  double draws = 0.0;
  std::size_t differs = 0;
  for (std::size_t i = 0; i < kSubjects; ++i) {
    INFO("subject " << i);
    // Without bounds nobody is screened again: the same patient, model baseline and course.
    CHECK(column(arm, "baseline_madrs", i) == column(reference, "baseline_madrs", i));
    CHECK(metric(arm, "madrs_at", i, 2) == metric(reference, "madrs_at", i, 2));
    const double screening = column(arm, "screening_madrs", i);
    for (std::size_t k = 0; k < 3; ++k) {
      const double observed = metric(arm, "madrs_observed_at", i, k);
      CHECK(metric(arm, "response_at", i, k) == (observed <= 0.5 * screening ? 1.0 : 0.0));
      differs += metric(arm, "response_at", i, k) != metric(reference, "response_at", i, k);
    }
    sum2 += std::pow((screening - column(arm, "baseline_madrs", i)) / column(arm, "madrs_residual_sd", i), 2);
    draws += 1.0;
  }
  // The screening error has the card's residual SD, and changes some subjects' response.
  CHECK(std::sqrt(sum2 / draws) == Approx(1.0).epsilon(0.12));
  CHECK(differs > 10);
}

TEST_CASE("screening: inclusion bounds on the observed score make the model baselines regress to the mean",
          "[screening]") {
  const ScenarioResults screened = run_in_memory(screening_scenario("  screening: {madrs_at_least: 30}"), 2);
  const ArmResults& arm = screened.arms[0];
  double screening_sum = 0.0;
  double baseline_sum = 0.0;
  for (std::size_t i = 0; i < kSubjects; ++i) {
    const double screening = column(arm, "screening_madrs", i);
    CHECK(screening >= 30.0);
    CHECK(column(arm, "baseline_madrs", i) == metric(arm, "madrs_baseline", i));
    screening_sum += screening;
    baseline_sum += column(arm, "baseline_madrs", i);
  }
  // Selected on a score with error, the enrolled subjects' model baselines lie below their
  // screening scores on average (by about 1 point here: residual SD 3, baseline SD 6, bar at the mean).
  const double regression = (screening_sum - baseline_sum) / kSubjects;
  CHECK(regression > 0.5);
  CHECK(regression < 2.0);
}

TEST_CASE("screening: bad values name the file, line and key", "[scenario][screening]") {
  const auto message = [](const std::string& extra) {
    try {
      screening_scenario(extra);
    } catch (const ScenarioError& error) {
      return std::string(error.what());
    }
    return std::string("accepted");
  };
  CHECK_THAT(message("  screening: {madrs_at_least: 30, madrs_at_most: 20}"),
             Catch::Contains("screening.yaml:9:") && Catch::Contains("cohort.screening.madrs_at_most") &&
                 Catch::Contains("bounds are empty"));
  CHECK_THAT(message("  screening: {}"), Catch::Contains("give madrs_at_least"));
  CHECK_THAT(message("  screening: false"), Catch::Contains("default"));
  CHECK_THAT(message("  screening: {madrs_at_least: 70}"), Catch::Contains("cohort.screening.madrs_at_least"));
  CHECK_THAT(message("  screening: {madrs_above: 20}"), Catch::Contains("unknown key 'madrs_above'"));
  CHECK_THAT(message("  correlations: {weight~baseline_madrs: 0.3}\n  screening: {madrs_at_least: 20}"),
             Catch::Contains("cohort.screening") && Catch::Contains("jointly"));
  CHECK(message("  correlations: {weight~baseline_madrs: 0.3}\n  screening: true") == "accepted");
}

namespace {

Scenario antidepressant_scenario() {
  return parse_scenario(R"(
name: background_antidepressant
model: {name: ketamine_venous}
cohort:
  size: 50
  seed: 3911
  weight: 75 kg
arms:
  - name: none
    regimen: {route: iv_infusion, dose: 0.5 mg/kg, infusion_duration: 40 min, schedule: [Mon 09:00], for: 2 weeks}
  - name: stable
    regimen: {route: iv_infusion, dose: 0.5 mg/kg, infusion_duration: 40 min, schedule: [Mon 09:00], for: 2 weeks}
    oral_antidepressant: stable
  - name: stable_then_stopped
    regimen: {route: iv_infusion, dose: 0.5 mg/kg, infusion_duration: 40 min, schedule: [Mon 09:00], for: 2 weeks}
    oral_antidepressant: {started: stable, stopped: 14 d}
  - name: started
    regimen: {route: iv_infusion, dose: 0.5 mg/kg, infusion_duration: 40 min, schedule: [Mon 09:00], for: 2 weeks}
    oral_antidepressant: true
  - name: lead_in
    regimen: {route: iv_infusion, dose: 0.5 mg/kg, infusion_duration: 40 min, schedule: [Mon 09:00], for: 2 weeks}
    oral_antidepressant: {started: -6 weeks}
output:
  grid: {every: 1 h, for: 6 weeks}
  variables: [madrs]
  assessments: [1 d, 14 d]
)",
                        "background.yaml");
}

}  // namespace

TEST_CASE("a stable antidepressant is in the baseline, stopping it raises the score, started ones improve it",
          "[antidepressant][response]") {
  const ScenarioResults results = run_in_memory(antidepressant_scenario(), 2);
  const auto& none = results.arm("none").trajectories.at("madrs");
  const auto& stable = results.arm("stable").trajectories.at("madrs");
  const auto& stopped = results.arm("stable_then_stopped").trajectories.at("madrs");
  const auto& started = results.arm("started").trajectories.at("madrs");
  const auto& lead_in = results.arm("lead_in").trajectories.at("madrs");
  const std::size_t points = results.arm("none").time_h.size();
  const auto hour = [&](std::size_t i, double h) { return i * points + static_cast<std::size_t>(h); };
  const double first = 9.0;  // Mon 09:00
  for (std::size_t i = 0; i < 50; ++i) {
    INFO("subject " << i);
    for (std::size_t t = 0; t < points; ++t) CHECK(stable[i * points + t] == none[i * points + t]);
    // Until the stop (14 d after the first session) the same; 3 weeks after it, higher.
    CHECK(stopped[hour(i, first + 24 * 14)] == none[hour(i, first + 24 * 14)]);
    CHECK(stopped[hour(i, first + 24 * 35)] > none[hour(i, first + 24 * 35)]);
    // A new antidepressant improves the score; one started 6 weeks earlier is mostly in the baseline.
    const double late = first + 24 * 35;
    CHECK(started[hour(i, late)] < none[hour(i, late)]);
    CHECK(lead_in[hour(i, late)] < none[hour(i, late)]);
    CHECK(lead_in[hour(i, late)] > started[hour(i, late)]);
    CHECK(lead_in[hour(i, 0)] == none[hour(i, 0)]);
  }
}

TEST_CASE("oral_antidepressant: bad values name the file, line and key", "[scenario][antidepressant]") {
  const auto message = [](const std::string& value) {
    std::string text = R"(
name: background_antidepressant
model: {name: ketamine_venous}
cohort: {size: 5, seed: 1, weight: 75 kg}
arms:
  - name: a
    regimen: {route: iv_infusion, dose: 0.5 mg/kg, infusion_duration: 40 min, schedule: [Mon 09:00], for: 2 weeks}
    oral_antidepressant: )" +
                       value + "\n";
    try {
      parse_scenario(text, "background.yaml");
    } catch (const ScenarioError& error) {
      return std::string(error.what());
    }
    return std::string("accepted");
  };
  CHECK(message("{started: -6 weeks, stopped: 2 weeks}") == "accepted");
  CHECK_THAT(message("stabel"), Catch::Contains("background.yaml:8:") &&
                                    Catch::Contains("arms[0].oral_antidepressant") && Catch::Contains("stable"));
  CHECK_THAT(message("{started: 2 weeks, stopped: 1 week}"),
             Catch::Contains("arms[0].oral_antidepressant.stopped") && Catch::Contains("before it is started"));
  CHECK_THAT(message("{stopped: 1 week}"), Catch::Contains("missing required key 'started'"));
  CHECK_THAT(message("{started: soon}"), Catch::Contains("arms[0].oral_antidepressant.started"));
  CHECK_THAT(message("{started: 0 d, dose: 20 mg}"), Catch::Contains("unknown key 'dose'"));
}
