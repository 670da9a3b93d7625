// Trial designs in the scenario language (issue 11): assessments relative to each session.

#include <catch2/catch.hpp>
#include <cmath>
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
