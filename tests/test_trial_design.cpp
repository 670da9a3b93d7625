// Trial designs in the scenario language (issue 11): assessments relative to each session.

#include <catch2/catch.hpp>
#include <cmath>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "engine_fixtures.hpp"
#include "ketasim/analysis/reproduction.hpp"
#include "ketasim/base/errors.hpp"
#include "ketasim/input/scenario_loader.hpp"

using namespace ketasim;
using ketasim::testing::same_values;

namespace {

const std::string kHeader = R"(
name: trial_design
model: {name: ketamine_venous}
cohort:
  size: 100
  seed: 1101
  weight: {distribution: normal, mean: 80 kg, sd: 15 kg, min: 45 kg, max: 150 kg}
arms:
  - name: twice_weekly
    regimen: {route: iv_infusion, dose: 0.5 mg/kg, infusion_duration: 40 min, schedule: [Mon 09:00, Thu 09:00],
              for: 3 weeks}
  - name: weekly
    regimen: {route: iv_infusion, dose: 0.5 mg/kg, infusion_duration: 40 min, schedule: [Mon 09:00], for: 3 weeks}
)";

Scenario with_output(const std::string& output) {
  return parse_scenario(kHeader + "output:\n" + output, "trial_design.yaml");
}

// Element j of subject i of a [subject x width] metric.
double at(const ArmResults& arm, const std::string& name, std::size_t i, std::size_t j) {
  return arm.metrics.at(name)[i * arm.metric_width.at(name) + j];
}

// The MADRS trajectory of subject i at a time of the grid.
double trajectory_at(const ArmResults& arm, std::size_t i, double hours) {
  const std::size_t t = static_cast<std::size_t>(std::llround(hours / (arm.time_h[1] - arm.time_h[0])));
  REQUIRE(arm.time_h[t] == Approx(hours));
  return static_cast<double>(arm.trajectories.at("madrs")[i * arm.time_h.size() + t]);
}

}  // namespace

TEST_CASE("assessments: the list form means after the first session, and the map form reads every part",
          "[scenario][assessments]") {
  const Scenario list = with_output("  assessments: [1 d, 7 d]\n");
  CHECK(list.output.assessments == std::vector<Ticks>{kTicksPerDay, 7 * kTicksPerDay});
  CHECK(list.output.assessments_after_each_session.empty());
  CHECK_FALSE(list.output.assessment_before_each_session);

  const Scenario map =
      with_output("  assessments: {after_first: [2 h], after_each_session: [24 h, 3 d], before_each_session: true}\n");
  CHECK(map.output.assessments == std::vector<Ticks>{2 * kTicksPerHour});
  CHECK(map.output.assessments_after_each_session == std::vector<Ticks>{kTicksPerDay, 3 * kTicksPerDay});
  CHECK(map.output.assessment_before_each_session);
  // after_first keeps its default when the map leaves it out.
  CHECK(with_output("  assessments: {before_each_session: true}\n").output.assessments ==
        Scenario().output.assessments);
}

TEST_CASE("assessments relative to sessions: bad values name the file, line and key", "[scenario][assessments]") {
  const auto message = [](const std::string& output) {
    try {
      with_output(output);
    } catch (const ScenarioError& error) {
      return std::string(error.what());
    }
    return std::string("accepted");
  };
  CHECK_THAT(message("  assessments: {after_each_session: [2 d, 1 d]}\n"),
             Catch::Contains("trial_design.yaml:15:43:") &&
                 Catch::Contains("output.assessments.after_each_session[1]") && Catch::Contains("ascending order"));
  CHECK_THAT(message("  assessments: {after_each_session: [0 h]}\n"),
             Catch::Contains("output.assessments.after_each_session[0]"));
  CHECK_THAT(message("  assessments: {before_each_sesion: true}\n"),
             Catch::Contains("did you mean 'before_each_session'"));
  CHECK_THAT(message("  assessments: {before_each_session: often}\n"),
             Catch::Contains("output.assessments.before_each_session"));
  CHECK_THAT(message("  assessments: {}\n"), Catch::Contains("empty assessments map"));
  CHECK_THAT(message("  assessments: {after_each_session: []}\n"), Catch::Contains("lists no times"));
}

TEST_CASE("the MADRS after and before each session is the model's score there, with the subject's residual error",
          "[assessments][response]") {
  const Scenario scenario = with_output(
      "  grid: {every: 30 min, for: 3 weeks}\n  variables: [madrs]\n"
      "  assessments: {after_first: [1 d, 7 d], after_each_session: [24 h, 7 d], before_each_session: true}\n");
  const ScenarioResults results = run_in_memory(scenario, 2);
  const ArmResults& twice = results.arm("twice_weekly");
  const ArmResults& weekly = results.arm("weekly");
  REQUIRE(twice.metric_width.at("madrs_24h_after_session") == 6);
  REQUIRE(weekly.metric_width.at("madrs_168h_after_session") == 3);
  double sum2 = 0.0;
  double draws = 0.0;
  for (std::size_t i = 0; i < 100; ++i) {
    const double baseline = at(twice, "madrs_baseline", i, 0);
    for (std::size_t k = 0; k < 6; ++k) {
      const double start = twice.subject_columns.at("dose_time_h")[i * 6 + k];
      const double after = at(twice, "madrs_24h_after_session", i, k);
      CHECK(after == Approx(trajectory_at(twice, i, start + 24.0)).epsilon(1e-6));
      CHECK(at(twice, "madrs_before_session", i, k) == Approx(trajectory_at(twice, i, start)).epsilon(1e-6));
      const double observed = at(twice, "madrs_observed_24h_after_session", i, k);
      CHECK(at(twice, "response_24h_after_session", i, k) == (observed <= 0.5 * baseline ? 1.0 : 0.0));
      CHECK(at(twice, "remission_24h_after_session", i, k) == (observed <= 10.0 ? 1.0 : 0.0));
      if (observed > 0.0 && observed < 60.0) {
        const double sd = twice.subject_columns.at("madrs_residual_sd")[i];
        sum2 += std::pow((observed - after) / sd, 2);
        draws += 1.0;
      }
    }
    // 24 h after the first session is the first after-first assessment.
    CHECK(at(twice, "madrs_24h_after_session", i, 0) == at(twice, "madrs_at", i, 0));
    CHECK(at(twice, "madrs_observed_24h_after_session", i, 0) != at(twice, "madrs_observed_at", i, 0));
    // Session 0 of both arms is the same patient at the same time: the same score and residual draw.
    CHECK(at(weekly, "madrs_observed_before_session", i, 0) == at(twice, "madrs_observed_before_session", i, 0));
    CHECK(at(weekly, "madrs_observed_24h_after_session", i, 0) == at(twice, "madrs_observed_24h_after_session", i, 0));
    // Before the first session the score is the baseline; 7 d after the last weekly one is past the grid.
    CHECK(at(twice, "madrs_before_session", i, 0) == Approx(baseline).epsilon(1e-12));
    CHECK(std::isnan(at(weekly, "madrs_168h_after_session", i, 2)));
    CHECK(std::isfinite(at(weekly, "madrs_168h_after_session", i, 1)));
  }
  REQUIRE(draws > 300.0);
  CHECK(std::sqrt(sum2 / draws) == Approx(1.0).epsilon(0.1));  // residual errors of SD madrs_residual_sd
}

TEST_CASE("without assessments relative to sessions no per-session assessment is written", "[assessments]") {
  const ScenarioResults results = run_in_memory(with_output("  grid: {every: 1 h, for: 1 week}\n"), 1);
  for (const auto& [name, values] : results.arms[0].metrics) CHECK_FALSE(name.ends_with("_session"));
}

TEST_CASE("tests/scenarios/session_assessments.yaml runs and writes one column per session", "[assessments]") {
  Scenario scenario = load_scenario_file(std::string(KETASIM_SOURCE_DIR) + "/tests/scenarios/session_assessments.yaml");
  scenario.cohort.set_subjects_per_replicate(10);
  const ScenarioResults results = run_in_memory(scenario, 1);
  CHECK(results.arm("twice_weekly").metric_width.at("response_before_session") == 6);
  CHECK(results.arm("weekly").metric_width.at("remission_168h_after_session") == 3);
}

namespace {

Scenario stop_scenario(const std::string& stop) {
  return parse_scenario(R"(
name: stop_rules
model: {name: ketamine_venous}
cohort:
  size: 200
  seed: 1102
  weight: {distribution: normal, mean: 80 kg, sd: 15 kg, min: 45 kg, max: 150 kg}
arms:
  - name: until
    regimen: {route: iv_infusion, dose: 0.5 mg/kg, infusion_duration: 40 min,
              schedule: [Mon 09:00, Wed 09:00, Fri 09:00], for: 4 weeks, stop: )" +
                            stop + R"(}
  - name: full
    regimen: {route: iv_infusion, dose: 0.5 mg/kg, infusion_duration: 40 min,
              schedule: [Mon 09:00, Wed 09:00, Fri 09:00], count: 6}
output:
  grid: {every: 30 min, for: 5 weeks}
  variables: []
  assessments: {after_first: [1 d], before_each_session: true}
)",
                        "stop.yaml");
}

// Checks every subject of the stopped arm against its own assessments before each session: the
// series stops at the first session k >= 1 whose assessment meets the rule, else runs to the cap.
void check_stops(const ArmResults& arm, const std::string& assessment, const std::function<bool(double)>& met,
                 std::size_t cap) {
  const std::size_t width = arm.metric_width.at(assessment);
  std::size_t stopped = 0;
  for (std::size_t i = 0; i < 200; ++i) {
    std::size_t k = 1;
    while (k < cap && !met(at(arm, assessment, i, k))) ++k;
    INFO("subject " << i << " stops before session " << k);
    const double given = at(arm, "sessions_given", i, 0);
    if (k < cap) {
      ++stopped;
      CHECK(at(arm, "stopped_early", i, 0) == 1.0);
      CHECK(at(arm, "sessions_to_response", i, 0) == static_cast<double>(k));
      CHECK(given == static_cast<double>(k));
      // The assessment that stopped the series was made; no later one was.
      CHECK(std::isfinite(at(arm, assessment, i, k)));
      if (k + 1 < width) CHECK(std::isnan(at(arm, assessment, i, k + 1)));
    } else {
      CHECK(at(arm, "stopped_early", i, 0) == 0.0);
      CHECK(std::isnan(at(arm, "sessions_to_response", i, 0)));
      CHECK(given == static_cast<double>(cap));
    }
  }
  CHECK(stopped > 20);
  CHECK(stopped < 190);
}

}  // namespace

TEST_CASE("a stop rule ends the series at the first session before which response is observed", "[stop][response]") {
  const ScenarioResults results =
      run_in_memory(stop_scenario("{when: response, observed: true, assessed: before_each_session, "
                                  "at_most: 6 sessions}"),
                    2);
  check_stops(
      results.arm("until"), "response_before_session", [](double response) { return response == 1.0; }, 6);
  // An arm without a stop rule writes the columns too: never stopped.
  const ArmResults& full = results.arm("full");
  for (std::size_t i = 0; i < 200; ++i) {
    CHECK(at(full, "stopped_early", i, 0) == 0.0);
    CHECK(std::isnan(at(full, "sessions_to_response", i, 0)));
  }
}

TEST_CASE("a stop rule on remission of the model's score", "[stop][response]") {
  const ScenarioResults results = run_in_memory(stop_scenario("{when: remission, observed: false, at_most: 8}"), 2);
  check_stops(
      results.arm("until"), "madrs_before_session", [](double madrs) { return madrs <= 10.0; }, 8);
}

TEST_CASE("stop rules: bad values name the file, line and key", "[scenario][stop]") {
  const auto message = [](const std::string& stop) {
    try {
      stop_scenario(stop);
    } catch (const ScenarioError& error) {
      return std::string(error.what());
    }
    return std::string("accepted");
  };
  CHECK_THAT(message("{when: respons}"), Catch::Contains("stop.yaml:11:") &&
                                             Catch::Contains("arms[0].regimen.stop.when") &&
                                             Catch::Contains("did you mean 'response'"));
  CHECK_THAT(message("{when: response, assessed: after_each_session}"),
             Catch::Contains("arms[0].regimen.stop.assessed") && Catch::Contains("expected before_each_session"));
  CHECK_THAT(message("{when: response, at_most: 0 sessions}"), Catch::Contains("arms[0].regimen.stop.at_most"));
  CHECK_THAT(message("{when: response, at_most: six}"), Catch::Contains("arms[0].regimen.stop.at_most"));
  CHECK_THAT(message("{when: response, observed: maybe}"), Catch::Contains("arms[0].regimen.stop.observed"));
  CHECK_THAT(message("{when: response, until: 3}"), Catch::Contains("unknown key 'until'"));
  CHECK_THAT(message("{observed: true}"), Catch::Contains("missing required key 'when'"));
}
