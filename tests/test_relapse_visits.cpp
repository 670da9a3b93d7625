// Relapse on observed scores at visits (output.relapse; issue 11): who is at risk at the first
// visit, and a relapse as consecutive visits over a threshold, checked subject by subject against
// the visit scores the run writes.

#include <catch2/catch.hpp>
#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "engine_fixtures.hpp"
#include "ketasim/analysis/reproduction.hpp"
#include "ketasim/base/errors.hpp"
#include "ketasim/input/scenario_loader.hpp"

using namespace ketasim;

namespace {

Scenario relapse_scenario(const std::string& relapse) {
  return parse_scenario(R"(
name: relapse_visits
model: {name: ketamine_venous}
cohort:
  size: 200
  seed: 2611
  weight: {distribution: normal, mean: 80 kg, sd: 15 kg, min: 45 kg, max: 150 kg}
arms:
  - name: maintenance
    regimen:
      - {route: iv_infusion, dose: 0.5 mg/kg, infusion_duration: 40 min, schedule: [Mon 09:00, Thu 09:00], for: 3 weeks}
      - {route: iv_infusion, dose: 0.5 mg/kg, infusion_duration: 40 min, schedule: [Mon 09:00], start: 3 weeks,
         for: 6 weeks}
  - name: saline
    regimen:
      - {route: iv_infusion, dose: 0.5 mg/kg, infusion_duration: 40 min, schedule: [Mon 09:00, Thu 09:00], for: 3 weeks}
      - {route: iv_infusion, drug: placebo, infusion_duration: 40 min, schedule: [Mon 09:00], start: 3 weeks,
         for: 6 weeks}
output:
  grid: {every: 1 h, for: 10 weeks}
  variables: [madrs]
  assessments: [1 d, 21 d]
  relapse: )" + relapse + "\n",
                        "relapse.yaml");
}

double at(const ArmResults& arm, const std::string& name, std::size_t i, std::size_t j = 0) {
  return arm.metrics.at(name)[i * arm.metric_width.at(name) + j];
}

struct Definition {
  std::function<bool(double observed, double baseline)> at_risk;
  std::function<bool(double observed, double baseline)> relapsing;
  std::size_t consecutive = 1;
  bool dated_first = true;
};

// Recomputes every subject's relapse from its observed visit scores; returns the relapses. Visits
// are days after the first session: those past the end of the grid are not made (NaN).
std::size_t check_relapses(const ArmResults& arm, const std::vector<double>& visit_days, const Definition& rule) {
  REQUIRE(arm.metric_width.at("madrs_observed_at_visit") == visit_days.size());
  std::size_t visits = visit_days.size();
  while (visits > 0 && std::isnan(at(arm, "madrs_observed_at_visit", 0, visits - 1))) --visits;
  std::size_t relapses = 0;
  for (std::size_t i = 0; i < 200; ++i) {
    INFO("subject " << i);
    const double baseline = at(arm, "madrs_baseline", i);
    if (!rule.at_risk(at(arm, "madrs_observed_at_visit", i, 0), baseline)) {
      CHECK(at(arm, "relapse_visits_at_risk", i) == 0.0);
      CHECK(std::isnan(at(arm, "relapse_visits_day", i)));
      CHECK(std::isnan(at(arm, "relapse_visits_observed", i)));
      continue;
    }
    CHECK(at(arm, "relapse_visits_at_risk", i) == 1.0);
    std::size_t run = 0;
    std::size_t k = 1;
    for (; k < visits; ++k) {
      run = rule.relapsing(at(arm, "madrs_observed_at_visit", i, k), baseline) ? run + 1 : 0;
      if (run == rule.consecutive) break;
    }
    if (k < visits) {
      ++relapses;
      const std::size_t dated = rule.dated_first ? k + 1 - rule.consecutive : k;
      CHECK(at(arm, "relapse_visits_observed", i) == 1.0);
      CHECK(at(arm, "relapse_visits_day", i) == Approx(visit_days[dated] - visit_days[0]));
    } else {
      CHECK(at(arm, "relapse_visits_observed", i) == 0.0);
      CHECK(at(arm, "relapse_visits_day", i) == Approx(visit_days[visits - 1] - visit_days[0]));
    }
  }
  return relapses;
}

}  // namespace

TEST_CASE("relapse at visits: two consecutive observed scores of 22 or more among responders", "[relapse][response]") {
  const Scenario scenario =
      relapse_scenario("{visits: {from: 21 d, every: 7 d}, threshold: {madrs_at_least: 22}, consecutive: 2}");
  const std::vector<double> days = {21, 28, 35, 42, 49, 56, 63, 70};
  REQUIRE(scenario.output.relapse->visits.size() == days.size());
  const ScenarioResults results = run_in_memory(scenario, 2);
  // The first session starts at 9 h: the visit 70 d after it lies past the 10-week grid.
  CHECK(std::isnan(at(results.arm("saline"), "madrs_observed_at_visit", 0, 7)));
  const Definition rule{[](double observed, double baseline) { return observed <= 0.5 * baseline; },
                        [](double observed, double) { return observed >= 22.0; }, 2, true};
  const ArmResults& maintenance = results.arm("maintenance");
  const ArmResults& saline = results.arm("saline");
  const std::size_t on_maintenance = check_relapses(maintenance, days, rule);
  const std::size_t on_saline = check_relapses(saline, days, rule);
  // The induction is the same: the same subjects are at risk in both arms; saline relapses more.
  for (std::size_t i = 0; i < 200; ++i)
    CHECK(at(maintenance, "relapse_visits_at_risk", i) == at(saline, "relapse_visits_at_risk", i));
  CHECK(on_saline > on_maintenance + 20);
  CHECK(on_maintenance > 0);

  // The observed visit score is the model's score at the visit plus the subject's residual error.
  double sum2 = 0.0;
  double draws = 0.0;
  for (std::size_t i = 0; i < 200; ++i) {
    const std::vector<double>& dose_times = saline.subject_columns.at("dose_time_h");
    const double first = dose_times[i * (dose_times.size() / 200)];
    for (std::size_t k = 0; k + 1 < days.size(); ++k) {
      const auto t = static_cast<std::size_t>(std::llround(first + 24.0 * days[k]));
      const double model = saline.trajectories.at("madrs")[i * saline.time_h.size() + t];
      const double observed = at(saline, "madrs_observed_at_visit", i, k);
      if (observed <= 0.0 || observed >= 60.0) continue;
      sum2 += std::pow((observed - model) / saline.subject_columns.at("madrs_residual_sd")[i], 2);
      draws += 1.0;
    }
  }
  REQUIRE(draws > 1000.0);
  CHECK(std::sqrt(sum2 / draws) == Approx(1.0).epsilon(0.1));
}

TEST_CASE("relapse at visits: remitters, a fall in improvement, one visit, dated at the last visit",
          "[relapse][response]") {
  const Scenario scenario = relapse_scenario(
      "{visits: [21 d, 25 d, 32 d, 46 d, 60 d], among: remitters, threshold: {improvement_below: 30%}, "
      "dated: last_visit}");
  const ScenarioResults results = run_in_memory(scenario, 2);
  const Definition rule{[](double observed, double) { return observed <= 10.0; },
                        [](double observed, double baseline) { return observed > 0.7 * baseline; }, 1, false};
  CHECK(check_relapses(results.arm("saline"), {21, 25, 32, 46, 60}, rule) > 5);
  // Without a threshold a relapse is the loss of response; three in a row, dated at the last.
  const ScenarioResults loss = run_in_memory(
      relapse_scenario("{visits: {from: 21 d, every: 7 d, until: 63 d}, consecutive: 3, dated: last_visit}"), 2);
  const Definition loss_rule{[](double observed, double baseline) { return observed <= 0.5 * baseline; },
                             [](double observed, double baseline) { return observed > 0.5 * baseline; }, 3, false};
  CHECK(check_relapses(loss.arm("saline"), {21, 28, 35, 42, 49, 56, 63}, loss_rule) > 5);
}

TEST_CASE("without output.relapse no relapse-at-visit metric is written", "[relapse]") {
  Scenario scenario = relapse_scenario("{visits: [21 d, 28 d]}");
  scenario.output.relapse.reset();
  const ScenarioResults results = run_in_memory(scenario, 1);
  for (const auto& [name, values] : results.arms[0].metrics) CHECK(name.find("visit") == std::string::npos);
}

TEST_CASE("relapse at visits: bad values name the file, line and key", "[scenario][relapse]") {
  const auto message = [](const std::string& relapse) {
    try {
      relapse_scenario(relapse);
    } catch (const ScenarioError& error) {
      return std::string(error.what());
    }
    return std::string("accepted");
  };
  CHECK_THAT(message("{visits: [21 d]}"),
             Catch::Contains("relapse.yaml:23:") && Catch::Contains("output.relapse") && Catch::Contains("two visits"));
  CHECK_THAT(message("{visits: [28 d, 21 d]}"),
             Catch::Contains("output.relapse.visits[1]") && Catch::Contains("ascending order"));
  CHECK_THAT(message("{visits: {from: 21 d, every: 7 d, until: 90 d}}"),
             Catch::Contains("after the end of the output grid"));
  CHECK_THAT(message("{visits: {from: 21 d}}"), Catch::Contains("missing required key 'every'"));
  CHECK_THAT(message("{visits: [21 d, 28 d], among: responder}"),
             Catch::Contains("output.relapse.among") && Catch::Contains("did you mean 'responders'"));
  CHECK_THAT(message("{visits: [21 d, 28 d], threshold: {madrs_at_least: 22, improvement_below: 50%}}"),
             Catch::Contains("output.relapse.threshold") && Catch::Contains("exactly one"));
  CHECK_THAT(message("{visits: [21 d, 28 d], threshold: {madrs_above: 22}}"), Catch::Contains("unknown key"));
  CHECK_THAT(message("{visits: [21 d, 28 d], threshold: {improvement_below: 0%}}"),
             Catch::Contains("output.relapse.threshold.improvement_below"));
  CHECK_THAT(message("{visits: [21 d, 28 d], consecutive: 2}"), Catch::Contains("output.relapse.consecutive"));
  CHECK_THAT(message("{visits: [21 d, 28 d], dated: first_vist}"), Catch::Contains("did you mean 'first_visit'"));
  CHECK_THAT(message("{visits: [21 d, 28 d], confirm: 2}"), Catch::Contains("unknown key 'confirm'"));
}

TEST_CASE("scenarios/relapse_prevention.yaml: responders continue, the same subjects are at risk in every arm",
          "[relapse][continuation]") {
  Scenario scenario = load_scenario_file(std::string(KETASIM_SOURCE_DIR) + "/scenarios/relapse_prevention.yaml");
  scenario.cohort.set_subjects_per_replicate(200);
  scenario.output.variables = std::vector<std::string>{};
  const ScenarioResults results = run_in_memory(scenario, 2);
  const ArmResults& weekly = results.arm("weekly_ketamine");
  std::size_t relapses[3] = {0, 0, 0};
  std::size_t continued = 0;
  for (std::size_t i = 0; i < 200; ++i) {
    INFO("subject " << i);
    std::size_t a = 0;
    for (const char* name : {"weekly_ketamine", "fortnightly_ketamine", "weekly_saline"}) {
      const ArmResults& arm = results.arm(name);
      // Induction is the same: the same decision to continue and the same population at risk.
      CHECK(at(arm, "continued", i) == at(weekly, "continued", i));
      CHECK(at(arm, "relapse_visits_at_risk", i) == at(weekly, "relapse_visits_at_risk", i));
      // Subjects not continued get the 8 induction infusions only.
      if (at(arm, "continued", i) == 0.0) CHECK(at(arm, "sessions_given", i) == 8.0);
      if (at(arm, "relapse_visits_observed", i) == 1.0) ++relapses[a];
      ++a;
    }
    continued += at(weekly, "continued", i) == 1.0;
  }
  CHECK(continued > 60);
  CHECK(continued < 180);
  // Saline maintenance loses more of the responders than weekly ketamine does.
  CHECK(relapses[2] > relapses[0]);
}
