// Trial designs in the scenario language (issue 11): titration by response and tolerability, and
// responder-only continuation (given_if). Every expected decision is computed from what the
// result records of the subject (its assessments before each session, its peaks, its trajectory).

#include <catch2/catch.hpp>
#include <cmath>
#include <optional>
#include <string>

#include "engine_fixtures.hpp"
#include "ketasim/analysis/reproduction.hpp"
#include "ketasim/base/errors.hpp"
#include "ketasim/input/scenario_loader.hpp"

using namespace ketasim;

namespace {

constexpr std::size_t kSubjects = 200;

// Element j of subject i of a [subject x width] metric or subject column.
double at(const ArmResults& arm, const std::string& name, std::size_t i, std::size_t j = 0) {
  if (const auto metric = arm.metrics.find(name); metric != arm.metrics.end())
    return metric->second[i * arm.metric_width.at(name) + j];
  const std::vector<double>& column = arm.subject_columns.at(name);
  return column[i * (column.size() / kSubjects) + j];
}

// Both decisions were taken often enough for the checks on each to mean something.
void check_both_decisions(std::size_t taken) {
  CHECK(taken > 20);
  CHECK(taken < kSubjects - 20);
}

Scenario titration_scenario(const std::string& titrate) {
  return parse_scenario(R"(
name: titration
model: {name: ketamine_venous}
cohort:
  size: 200
  seed: 1111
  weight: {distribution: normal, mean: 80 kg, sd: 15 kg, min: 45 kg, max: 150 kg}
arms:
  - name: titrated
    regimen: {route: iv_infusion, dose: 0.5 mg/kg, max_dose: 90 mg, infusion_duration: 40 min,
              schedule: [Mon 09:00, Thu 09:00], for: 4 weeks, titrate: )" +
                            titrate + R"(}
  - name: fixed
    regimen: {route: iv_infusion, dose: 0.5 mg/kg, max_dose: 90 mg, infusion_duration: 40 min,
              schedule: [Mon 09:00, Thu 09:00], for: 4 weeks}
output:
  grid: {every: 30 min, for: 5 weeks}
  variables: [madrs]
  assessments: {after_first: [1 d], before_each_session: true}
)",
                        "titration.yaml");
}

struct TitrationBar {
  std::string assessment;              // madrs_observed_before_session or madrs_before_session
  std::size_t from_session = 3;        // 1-based
  std::optional<double> dissociation;  // peak_dissociation_above
};

// Checks every subject of the titrated arm against its own assessments before each session: the
// dose changes at the first session k >= from_session whose assessment shows an improvement below
// 50% and whose previous session's peak dissociation is not above the bar. Returns how many
// subjects the bar alone kept from a titration at some session.
std::size_t check_titrations(const ArmResults& arm, const TitrationBar& bar) {
  const std::size_t sessions = 8;
  std::size_t titrated = 0;
  std::size_t barred = 0;
  for (std::size_t i = 0; i < kSubjects; ++i) {
    const double baseline = at(arm, "madrs_baseline", i);
    const double weight = at(arm, "weight_kg", i);
    std::optional<std::size_t> expected;  // 0-based session of the change
    for (std::size_t k = bar.from_session - 1; k < sessions && !expected; ++k) {
      const bool non_response = at(arm, bar.assessment, i, k) > 0.5 * baseline;
      const bool tolerated = !bar.dissociation || at(arm, "peak_dissociation", i, k - 1) <= *bar.dissociation;
      if (non_response && !tolerated) ++barred;
      if (non_response && tolerated) expected = k;
    }
    INFO("subject " << i << ", weight " << weight << " kg, titrated from session "
                    << (expected ? std::to_string(*expected + 1) : "never"));
    CHECK(at(arm, "sessions_given", i) == static_cast<double>(sessions));
    const double old_mg = std::min(0.5 * weight, 90.0);
    const double new_mg = std::min(0.75 * weight, 90.0);
    for (std::size_t k = 0; k < sessions; ++k) {
      const bool raised = expected && k >= *expected;
      CHECK(at(arm, "dose_amount_mg", i, k) == Approx(raised ? new_mg : old_mg).epsilon(1e-12));
    }
    if (expected) {
      ++titrated;
      CHECK(at(arm, "titrated", i) == 1.0);
      CHECK(at(arm, "titration_session", i) == static_cast<double>(*expected + 1));
    } else {
      CHECK(at(arm, "titrated", i) == 0.0);
      CHECK(std::isnan(at(arm, "titration_session", i)));
    }
  }
  check_both_decisions(titrated);
  return barred;
}

}  // namespace

TEST_CASE("a titration raises the dose from the first session before which the observed improvement is below the bar",
          "[titration][response]") {
  const ScenarioResults results =
      run_in_memory(titration_scenario("{to: 0.75 mg/kg, when: {improvement_below: 50%}, observed: true, "
                                       "assessed: before_each_session, from_session: 3}"),
                    2);
  const ArmResults& arm = results.arm("titrated");
  check_titrations(arm, {"madrs_observed_before_session", 3, std::nullopt});
  // The arm without a titration writes the columns too: NaN.
  const ArmResults& fixed = results.arm("fixed");
  for (std::size_t i = 0; i < kSubjects; ++i) {
    CHECK(std::isnan(at(fixed, "titrated", i)));
    CHECK(std::isnan(at(fixed, "titration_session", i)));
    // The same patient: the same scores up to the third session, whatever happens after.
    for (std::size_t k = 0; k < 3; ++k)
      CHECK(at(fixed, "madrs_observed_before_session", i, k) == at(arm, "madrs_observed_before_session", i, k));
  }
}

TEST_CASE("a titration on the model's score, from the second session", "[titration][response]") {
  const ScenarioResults results =
      run_in_memory(titration_scenario("{to: 0.75 mg/kg, when: {improvement_below: 50%}, observed: false}"), 2);
  check_titrations(results.arm("titrated"), {"madrs_before_session", 2, std::nullopt});
}

TEST_CASE("a tolerability bar keeps the dose after a session whose peak dissociation exceeded it",
          "[titration][dissociation]") {
  const ScenarioResults results =
      run_in_memory(titration_scenario("{to: 0.75 mg/kg, when: {improvement_below: 50%}, from_session: 3, "
                                       "unless: {peak_dissociation_above: 9}}"),
                    2);
  const std::size_t barred =
      check_titrations(results.arm("titrated"), {"madrs_observed_before_session", 3, std::optional<double>(9.0)});
  CHECK(barred > 10);  // the bar decided for some subjects
}

TEST_CASE("tests/scenarios/titration.yaml runs, titrates some subjects and records the new amounts", "[titration]") {
  Scenario scenario = load_scenario_file(std::string(KETASIM_SOURCE_DIR) + "/tests/scenarios/titration.yaml");
  scenario.cohort.set_subjects_per_replicate(20);
  const ScenarioResults results = run_in_memory(scenario, 1);
  const ArmResults& arm = results.arm("titrated");
  double titrated = 0.0;
  for (std::size_t i = 0; i < 20; ++i) titrated += arm.metrics.at("titrated")[i];
  CHECK(titrated > 0.0);
  CHECK(titrated < 20.0);
}

TEST_CASE("titrations: bad values name the file, line and key", "[scenario][titration]") {
  const auto message = [](const std::string& titrate) {
    try {
      titration_scenario(titrate);
    } catch (const ScenarioError& error) {
      return std::string(error.what());
    }
    return std::string("accepted");
  };
  CHECK_THAT(message("{to: 60 mg, when: {improvement_below: 50%}}"),
             Catch::Contains("titration.yaml:11:") && Catch::Contains("arms[0].regimen.titrate.to") &&
                 Catch::Contains("must be in mg/kg like the rule's dose"));
  CHECK_THAT(message("{to: 0.5 mg/kg, when: {improvement_below: 50%}}"),
             Catch::Contains("arms[0].regimen.titrate.to") && Catch::Contains("is the rule's dose"));
  CHECK_THAT(message("{to: 0.75 mg/kg, when: {improvement_below: 50%}, from_session: 1}"),
             Catch::Contains("arms[0].regimen.titrate.from_session") && Catch::Contains("2 or later"));
  CHECK_THAT(message("{to: 0.75 mg/kg, when: {improvement_below: 50%}, form_session: 3}"),
             Catch::Contains("unknown key 'form_session'") && Catch::Contains("did you mean 'from_session'"));
  CHECK_THAT(message("{to: 0.75 mg/kg}"), Catch::Contains("missing required key 'when'"));
  CHECK_THAT(message("{to: 0.75 mg/kg, when: {madrs_above: 20}}"),
             Catch::Contains("arms[0].regimen.titrate.when") && Catch::Contains("unknown key 'madrs_above'"));
  CHECK_THAT(message("{to: 0.75 mg/kg, when: {improvement_below: 150%}}"),
             Catch::Contains("arms[0].regimen.titrate.when.improvement_below"));
  CHECK_THAT(message("{to: 0.75 mg/kg, when: {improvement_below: 50%}, assessed: after_each_session}"),
             Catch::Contains("arms[0].regimen.titrate.assessed") && Catch::Contains("expected before_each_session"));
  CHECK_THAT(message("{to: 0.75 mg/kg, when: {improvement_below: 50%}, unless: {peak_dissociation_above: -1}}"),
             Catch::Contains("arms[0].regimen.titrate.unless.peak_dissociation_above"));
  CHECK(message("{to: 0.75 mg/kg, when: {improvement_below: 50%}}") == "accepted");
}

namespace {

// The maintenance: four sessions from week 2 (Tuesdays), given if `given_if`; `timing` replaces
// its schedule keys.
Scenario continuation_scenario(const std::string& given_if,
                               const std::string& timing = "schedule: [Tue 09:00], start: 2 weeks, count: 4") {
  return parse_scenario(R"(
name: continuation
model: {name: ketamine_venous}
cohort:
  size: 200
  seed: 1112
  weight: {distribution: normal, mean: 80 kg, sd: 15 kg, min: 45 kg, max: 150 kg}
arms:
  - name: responders_only
    regimen:
      - {route: iv_infusion, dose: 0.5 mg/kg, infusion_duration: 40 min,
         schedule: [Mon 09:00, Wed 09:00, Fri 09:00], count: 6}
      - {route: iv_infusion, dose: 0.5 mg/kg, infusion_duration: 40 min,
         )" + timing + R"(, given_if: )" +
                            given_if + R"(}
  - name: everyone
    regimen:
      - {route: iv_infusion, dose: 0.5 mg/kg, infusion_duration: 40 min,
         schedule: [Mon 09:00, Wed 09:00, Fri 09:00], count: 6}
      - {route: iv_infusion, dose: 0.5 mg/kg, infusion_duration: 40 min,
         schedule: [Tue 09:00], start: 2 weeks, count: 4}
output:
  grid: {every: 1 h, for: 8 weeks}
  variables: [madrs]
  assessments: [1 d, 14 d]
)",
                        "continuation.yaml");
}

// The model's MADRS of subject i at a time of the grid.
double madrs_at_hour(const ArmResults& arm, std::size_t i, double hours) {
  const auto t = static_cast<std::size_t>(std::llround(hours / (arm.time_h[1] - arm.time_h[0])));
  REQUIRE(arm.time_h[t] == Approx(hours));
  return static_cast<double>(arm.trajectories.at("madrs")[i * arm.time_h.size() + t]);
}

// Checks that exactly the continued subjects got the maintenance sessions; returns how many.
std::size_t check_sessions_follow_decision(const ArmResults& arm) {
  std::size_t continued = 0;
  for (std::size_t i = 0; i < kSubjects; ++i) {
    INFO("subject " << i);
    const double decision = at(arm, "continued", i);
    REQUIRE((decision == 0.0 || decision == 1.0));
    const double sessions = decision == 1.0 ? 10.0 : 6.0;
    CHECK(at(arm, "sessions_given", i) == sessions);
    CHECK(std::isfinite(at(arm, "dose_time_h", i, 5)));
    CHECK(std::isfinite(at(arm, "dose_time_h", i, 6)) == (decision == 1.0));
    if (decision == 1.0) ++continued;
  }
  check_both_decisions(continued);
  return continued;
}

constexpr double kAssessmentH = 14 * 24 + 9;  // 14 d after the first session, Mon 09:00

// Subject i in response by the model's score at the assessment.
bool model_responder(const ArmResults& arm, std::size_t i) {
  return madrs_at_hour(arm, i, kAssessmentH) <= 0.5 * at(arm, "madrs_baseline", i);
}

}  // namespace

TEST_CASE("given_if on the model's score: exactly the responders at the assessment get the maintenance",
          "[continuation][response]") {
  const ScenarioResults results =
      run_in_memory(continuation_scenario("{when: response, observed: false, assessed_at: 14 d}"), 2);
  const ArmResults& arm = results.arm("responders_only");
  check_sessions_follow_decision(arm);
  for (std::size_t i = 0; i < kSubjects; ++i) {
    INFO("subject " << i);
    const bool responder = model_responder(arm, i);
    CHECK(at(arm, "continued", i) == (responder ? 1.0 : 0.0));
    // A subject not continued ends the treatment at the assessment: not in response there.
    if (!responder) {
      CHECK(at(arm, "responder_end_of_treatment", i) == 0.0);
      CHECK(std::isnan(at(arm, "relapse_day", i)));
    }
    // Until the maintenance the arms are the same patient under the same doses.
    CHECK(madrs_at_hour(arm, i, kAssessmentH) == madrs_at_hour(results.arm("everyone"), i, kAssessmentH));
  }
  for (std::size_t i = 0; i < kSubjects; ++i) CHECK(std::isnan(at(results.arm("everyone"), "continued", i)));
}

TEST_CASE("given_if on the observed score: its own residual draw, mostly agreeing with the model's score",
          "[continuation][response]") {
  const ScenarioResults results =
      run_in_memory(continuation_scenario("{when: response, observed: true, assessed_at: 14 d}"), 2);
  const ArmResults& arm = results.arm("responders_only");
  check_sessions_follow_decision(arm);
  std::size_t disagree = 0;
  for (std::size_t i = 0; i < kSubjects; ++i) {
    disagree += (at(arm, "continued", i) == 1.0) != model_responder(arm, i) ? 1 : 0;
    // The end of treatment: 1 d after the last session given or the assessment, whichever is later
    // (the assessment, for a subject not continued); 1 d after the last maintenance session else.
    const double end_h = at(arm, "continued", i) == 1.0 ? at(arm, "dose_time_h", i, 9) + 24.0 : kAssessmentH;
    const bool responding = madrs_at_hour(arm, i, end_h) <= 0.5 * at(arm, "madrs_baseline", i);
    INFO("subject " << i << ", end of treatment at " << end_h << " h");
    CHECK(at(arm, "responder_end_of_treatment", i) == (responding ? 1.0 : 0.0));
    if (responding) CHECK(std::isfinite(at(arm, "relapse_day", i)));
  }
  CHECK(disagree > 0);   // the residual error decides for some subjects
  CHECK(disagree < 60);  // but not for most
}

TEST_CASE("given_if on remission continues fewer subjects than on response", "[continuation][response]") {
  const ScenarioResults response =
      run_in_memory(continuation_scenario("{when: response, observed: false, assessed_at: 14 d}"), 2);
  const ScenarioResults remission =
      run_in_memory(continuation_scenario("{when: remission, observed: false, assessed_at: 14 d}"), 2);
  for (std::size_t i = 0; i < kSubjects; ++i) {
    const ArmResults& arm = remission.arm("responders_only");
    const bool remitted = madrs_at_hour(arm, i, kAssessmentH) <= 10.0;
    CHECK(at(arm, "continued", i) == (remitted ? 1.0 : 0.0));
    CHECK(at(arm, "continued", i) <= at(response.arm("responders_only"), "continued", i));
  }
}

TEST_CASE("given_if conditions every phase of its rule", "[continuation][response]") {
  // Two Tuesdays, then every 2 weeks twice: four sessions, as in the schedule above.
  const ScenarioResults results =
      run_in_memory(continuation_scenario("{when: response, observed: false, assessed_at: 14 d}",
                                          "start: 2 weeks, phases: [{schedule: [Tue 09:00], for: 2 weeks}, "
                                          "{schedule: every 2 weeks, count: 2}]"),
                    2);
  const ArmResults& arm = results.arm("responders_only");
  check_sessions_follow_decision(arm);
  for (std::size_t i = 0; i < kSubjects; ++i) CHECK(at(arm, "continued", i) == (model_responder(arm, i) ? 1.0 : 0.0));
}

TEST_CASE("tests/scenarios/responder_continuation.yaml runs and continues some subjects", "[continuation]") {
  Scenario scenario =
      load_scenario_file(std::string(KETASIM_SOURCE_DIR) + "/tests/scenarios/responder_continuation.yaml");
  scenario.cohort.set_subjects_per_replicate(20);
  const ScenarioResults results = run_in_memory(scenario, 1);
  double continued = 0.0;
  for (std::size_t i = 0; i < 20; ++i) continued += results.arm("responders_only").metrics.at("continued")[i];
  CHECK(continued > 0.0);
  CHECK(continued < 20.0);
}

TEST_CASE("given_if: bad values name the file, line and key", "[scenario][continuation]") {
  const auto message = [](const std::string& given_if,
                          const std::string& start = "schedule: [Tue 09:00], start: 2 weeks, count: 4") {
    try {
      continuation_scenario(given_if, start);
    } catch (const ScenarioError& error) {
      return std::string(error.what());
    }
    return std::string("accepted");
  };
  CHECK_THAT(message("{when: response, assessed_at: 14 d}", "schedule: [Tue 09:00], start: 1 week, count: 4"),
             Catch::Contains("continuation.yaml:14:") && Catch::Contains("arms[0].regimen[1].given_if") &&
                 Catch::Contains("must come after its assessment"));
  CHECK_THAT(message("{when: respons, assessed_at: 14 d}"),
             Catch::Contains("arms[0].regimen[1].given_if.when") && Catch::Contains("did you mean 'response'"));
  CHECK_THAT(message("{when: response}"), Catch::Contains("missing required key 'assessed_at'"));
  CHECK_THAT(message("{when: response, assessed_at: 14 d, at: 3}"), Catch::Contains("unknown key 'at'"));
  CHECK(message("{when: response, assessed_at: 14 d}") == "accepted");
}
