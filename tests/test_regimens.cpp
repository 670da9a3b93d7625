// Regimens beyond fixed schedules: phases, dose caps, adherence, as-needed (state-triggered)
// dosing, NONMEM-style dosing tables, and simulated observations with residual error.

#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "engine_fixtures.hpp"
#include "ketasim/analysis/reproduction.hpp"
#include "ketasim/base/errors.hpp"
#include "ketasim/input/dosing_table.hpp"
#include "ketasim/input/scenario_loader.hpp"
#include "ketasim/model/model_card.hpp"
#include "ketasim/output/nonmem_export.hpp"
#include "ketasim/run/cohort.hpp"
#include "ketasim/run/run.hpp"
#include "ketasim/solve/timeline.hpp"

using namespace ketasim;
using ketasim::testing::same_values;
namespace fs = std::filesystem;

namespace {

// Every subject column and metric of every arm, by name, [subject * width + j].
struct Columns {
  std::map<std::string, std::vector<double>> values;
  std::map<std::string, std::size_t> width;
  const std::vector<double>& operator[](const std::string& name) const { return values.at(name); }
};

std::vector<Columns> run_columns(const Scenario& scenario, unsigned threads = 2, std::int64_t block_size = 16) {
  std::vector<Columns> arms;
  for (ArmResults& arm : ketasim::run_in_memory(scenario, threads, block_size).arms) {
    Columns columns{std::move(arm.subject_columns), std::move(arm.subject_width)};
    columns.values.merge(arm.metrics);
    columns.width.merge(arm.metric_width);
    arms.push_back(std::move(columns));
  }
  return arms;
}

const std::string kHeader = R"(
name: regimens
model: {name: ketamine_venous}
cohort:
  size: 60
  seed: 4242
  weight: {distribution: normal, mean: 80 kg, sd: 20 kg, min: 45 kg, max: 150 kg}
)";

std::string dose_rule(const std::string& timing) {
  return "{route: iv_infusion, dose: 0.5 mg/kg, infusion_duration: 40 min, " + timing + "}";
}

}  // namespace

TEST_CASE("phases follow one another: twice weekly for 3 weeks, weekly for 2 weeks, then every 2 weeks", "[regimen]") {
  const Scenario scenario = parse_scenario(kHeader + R"(
arms:
  - name: taper
    regimen:
      route: iv_infusion
      dose: 0.5 mg/kg
      infusion_duration: 40 min
      phases:
        - {schedule: [Mon 09:00, Thu 09:00], for: 3 weeks}
        - {schedule: [Mon 09:00], for: 2 weeks}
        - {schedule: every 2 weeks, count: 3}
)",
                                           "phases.yaml");
  const std::vector<Dose> doses = expand_doses(scenario.arms[0], 70.0);
  std::vector<double> days;
  for (const Dose& dose : doses) days.push_back(ticks_to_hours(dose.start) / 24.0);
  const double nine = 9.0 / 24.0;
  // Mon = day 0 + 9 h, Thu = day 3 + 9 h; weeks 4-5 Mondays; then day 35, 49, 63 at 00:00 (interval from the phase
  // start).
  const std::vector<double> expected{nine,      3 + nine,  7 + nine, 10 + nine, 14 + nine, 17 + nine,
                                     21 + nine, 28 + nine, 35,       49,        63};
  REQUIRE(days.size() == expected.size());
  for (std::size_t k = 0; k < days.size(); ++k) CHECK(days[k] == Approx(expected[k]).margin(1e-12));
}

TEST_CASE("max_dose caps weight-based doses and only those", "[regimen]") {
  const Scenario scenario = parse_scenario(kHeader + "arms:\n  - name: a\n    regimen: " +
                                               "{route: iv_infusion, dose: 0.5 mg/kg, max_dose: 60 mg, "
                                               "infusion_duration: 40 min, schedule: [Mon 09:00], for: 1 week}\n",
                                           "cap.yaml");
  CHECK(expand_doses(scenario.arms[0], 80.0).front().amount_mg == Approx(40.0));
  CHECK(expand_doses(scenario.arms[0], 150.0).front().amount_mg == Approx(60.0));
  // A phase with a flat dose is not capped by its rule's weight-based cap.
  const Scenario phases = parse_scenario(kHeader + R"(arms:
  - name: a
    regimen:
      route: iv_infusion
      dose: 0.5 mg/kg
      max_dose: 60 mg
      infusion_duration: 40 min
      phases:
        - {schedule: [Mon 09:00], for: 1 week}
        - {schedule: [Mon 09:00], for: 1 week, dose: 84 mg}
)",
                                         "cap_phases.yaml");
  const auto doses = expand_doses(phases.arms[0], 150.0);
  REQUIRE(doses.size() == 2);
  CHECK(doses[0].amount_mg == Approx(60.0));
  CHECK(doses[1].amount_mg == Approx(84.0));
  CHECK_THROWS_WITH(parse_scenario(kHeader + "arms:\n  - name: a\n    regimen: " +
                                       "{route: iv_infusion, dose: 35 mg, max_dose: 60 mg, infusion_duration: 40 min, "
                                       "schedule: [Mon 09:00], for: 1 week}\n",
                                   "cap.yaml"),
                    Catch::Contains("max_dose caps a weight-based dose"));
}

TEST_CASE(
    "a missed-session probability of 0 gives exactly the arm without it, 50% misses about half, the same sessions in "
    "twin arms",
    "[regimen][adherence]") {
  const std::string rule = dose_rule("schedule: [Mon 09:00, Thu 09:00], for: 3 weeks");
  const Scenario scenario =
      parse_scenario(kHeader + "arms:\n" + "  - {name: plain, regimen: " + rule + "}\n" +
                         "  - {name: zero, missed_session_probability: 0%, regimen: " + rule + "}\n" +
                         "  - {name: half, missed_session_probability: 50%, regimen: " + rule + "}\n" +
                         "  - {name: half_twin, missed_session_probability: 50%, regimen: " + rule + "}\n" +
                         "output: {grid: {every: 30 min, for: 4 weeks}}\n",
                     "adherence.yaml");
  const auto arms = run_columns(scenario);
  for (const auto& [name, values] : arms[0].values) {
    INFO(name);
    CHECK(same_values(values, arms[1][name]));
  }
  const auto& missed = arms[2]["sessions_missed"];
  double total = 0.0;
  for (const double m : missed) total += m;
  const double sessions = 6.0 * static_cast<double>(missed.size());
  // Binomial(360, 0.5): mean 180, SD 9.5; 4 SD either side.
  CHECK(total == Approx(sessions / 2).margin(4 * std::sqrt(sessions * 0.25)));
  CHECK(same_values(arms[2]["dose_time_h"], arms[3]["dose_time_h"]));
  for (std::size_t i = 0; i < missed.size(); ++i) CHECK(arms[2]["sessions_given"][i] + missed[i] == 6.0);
}

TEST_CASE(
    "an as-needed dose lands where the MADRS crosses the threshold (or a delay after it, or at the next clinic slot)",
    "[regimen][as_needed]") {
  // Induction (last session Thu of week 3, day 17 + 9 h), then as needed when MADRS > 20 from day
  // 21, at least 7 d after the previous session: allowed from day 24 + 9 h. The oracle: the same
  // subject given the induction alone, on a 1-minute grid: the first grid time from then on with
  // MADRS > 20 must be the first triggered dose (to the minute), or `delay` after it.
  const std::string induction = dose_rule("schedule: [Mon 09:00, Thu 09:00], for: 3 weeks");
  const std::string head = kHeader + "arms:\n  - name: arm\n    regimen:\n      - " + induction + "\n";
  const Scenario induction_only =
      parse_scenario(head + "output: {grid: {every: 1 min, for: 8 weeks}, variables: [madrs]}\n", "induction.yaml");
  std::vector<float> madrs(static_cast<std::size_t>(8 * 7 * 24 * 60 + 1));
  const std::size_t allowed = (24 * 24 + 9) * 60;
  for (const std::string timing : {"delay: 0 min", "delay: 1470 min", "slots: [Mon 09:00, Thu 09:00]"}) {
    const Scenario as_needed = parse_scenario(head +
                                                  "      - {route: iv_infusion, dose: 0.5 mg/kg, infusion_duration: 40 "
                                                  "min, as_needed: {madrs_above: 20, from: 21 d, " +
                                                  "min_interval: 7 d, max_doses: 3, " + timing + "}}\n" +
                                                  "output: {grid: {every: 1 min, for: 8 weeks}, variables: [madrs]}\n",
                                              "as_needed.yaml");
    const AsNeeded& rule = *as_needed.arms[0].regimen.back().as_needed;
    int checked = 0, crossed = 0;
    for (std::int64_t subject = 0; subject < 24; ++subject) {
      const SubjectSchedule schedule = subject_schedule(as_needed, 0, subject);
      REQUIRE(schedule.failure.empty());
      const auto triggered =
          std::find_if(schedule.doses.begin(), schedule.doses.end(), [](const Dose& d) { return d.triggered; });
      // The MADRS of the induction alone, on the 1-minute grid.
      RunOptions options;
      options.threads = 1;
      options.on_block = [&](const SubjectBlock& block) {
        for (std::int64_t r = 0; r < block.count; ++r)
          if (block.first_subject + r == subject)
            std::copy_n(block.trajectories[0].begin() + r * static_cast<std::ptrdiff_t>(madrs.size()), madrs.size(),
                        madrs.begin());
      };
      Scenario one = induction_only;
      one.cohort.size = one.cohort.subjects_per_replicate = subject + 1;
      run_scenario(one, options);
      std::size_t first_above = 0;
      for (std::size_t k = allowed; k < madrs.size(); ++k)
        if (madrs[k] > 20.0f) {
          first_above = k;
          break;
        }
      INFO(timing << ", subject " << subject << ", first minute above 20: " << first_above);
      if (first_above == 0) {
        CHECK(triggered == schedule.doses.end());
        continue;
      }
      REQUIRE(triggered != schedule.doses.end());
      // The crossing lies in (first_above - 1, first_above] minutes; the dose at rule.dose_time of it.
      const Ticks minute = kTicksPerMinute;
      const auto at = [&](std::size_t k) { return static_cast<Ticks>(k) * minute; };
      CHECK(triggered->start >= rule.dose_time(at(first_above - 1)));  // dose_time is non-decreasing
      CHECK(triggered->start <= rule.dose_time(at(first_above)));
      ++checked;
      if (first_above > allowed) ++crossed;
      // Later triggers respect the minimum interval and the limit.
      int count = 0;
      Ticks previous = -1;
      for (const Dose& dose : schedule.doses) {
        if (!dose.triggered) continue;
        if (previous >= 0) CHECK(dose.start - previous >= 7 * kTicksPerDay);
        previous = dose.start;
        ++count;
      }
      CHECK(count <= 3);
    }
    CHECK(checked >= 3);  // the case must exercise triggers:
    CHECK(crossed >= 2);  // crossings after the dose became allowed, not only subjects above from the start
  }
}

TEST_CASE("a subject already above the threshold when dosing is allowed is dosed then", "[regimen][as_needed]") {
  // MADRS above 5 at baseline for everyone: the first dose comes at `from`, then every min_interval.
  const Scenario scenario =
      parse_scenario(kHeader + "arms:\n  - name: arm\n    regimen: " +
                         "{route: iv_infusion, dose: 0.5 mg/kg, infusion_duration: 40 min, as_needed: {madrs_above: 5, "
                         "from: 2 d, min_interval: 3 d, max_doses: 4}}\n" +
                         "output: {grid: {every: 10 min, for: 3 weeks}}\n",
                     "always.yaml");
  const SubjectSchedule schedule = subject_schedule(scenario, 0, 0);
  REQUIRE(schedule.doses.size() == 4);
  for (std::size_t k = 0; k < 4; ++k) CHECK(schedule.doses[k].start == (2 + 3 * static_cast<Ticks>(k)) * kTicksPerDay);
}

TEST_CASE("a NONMEM-style export imported as a dosing table gives the same doses", "[regimen][nonmem]") {
  const fs::path dir = fs::temp_directory_path() / ("ketasim_nonmem_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  // Weight-based and capped doses, missed sessions and as-needed doses: every kind of per-subject dose.
  const Scenario original =
      parse_scenario(kHeader + "arms:\n  - name: arm\n    missed_session_probability: 20%\n    regimen:\n" +
                         "      - {route: iv_infusion, dose: 0.5 mg/kg, max_dose: 50 mg, infusion_duration: 40 min, "
                         "schedule: [Mon 09:00, Thu 09:00], for: 3 weeks}\n" +
                         "      - {route: iv_infusion, dose: 0.5 mg/kg, infusion_duration: 40 min, as_needed: "
                         "{madrs_above: 22, from: 21 d, min_interval: 7 d}}\n" +
                         "output:\n  grid: {every: 30 min, for: 8 weeks}\n  variables: []\n" +
                         "  observations: {times: [9.667 h, 24 h], variables: [{name: plasma_ketamine, error: "
                         "{proportional: 20%, additive: 0.5}}]}\n",
                     (dir / "original.yaml").string());
  RunOptions options;
  options.threads = 2;
  options.output_path = (dir / "original.h5").string();
  run_scenario(original, options);
  {
    std::ofstream csv(dir / "data.csv");
    write_nonmem_data(options.output_path, "arm", csv);
  }
  const Scenario imported = parse_scenario(kHeader +
                                               "arms:\n  - name: arm\n    regimen: {route: iv_infusion, doses_from: "
                                               "{file: data.csv, ignore_columns: [WT, AGE, FEMALE, MADRS0]}}\n" +
                                               "output: {grid: {every: 30 min, for: 8 weeks}, variables: []}\n",
                                           (dir / "imported.yaml").string());
  const auto a = run_columns(original);
  const auto b = run_columns(imported);
  for (const char* name :
       {"dose_time_h", "dose_duration_h", "dose_amount_mg", "dosed_mg", "auc_ng_h_per_ml", "cmax_ng_per_ml"}) {
    INFO(name);
    const std::size_t wa = a[0].width.at(name), wb = b[0].width.at(name);
    for (std::size_t i = 0; i < 60; ++i)
      for (std::size_t j = 0; j < std::max(wa, wb); ++j) {
        const double x = j < wa ? a[0][name][i * wa + j] : NAN;
        const double y = j < wb ? b[0][name][i * wb + j] : NAN;
        const bool dose_column = std::string(name).rfind("dose_", 0) == 0;
        if (std::isnan(x) || std::isnan(y))
          CHECK((std::isnan(x) && std::isnan(y)));
        else if (dose_column)
          CHECK(y == x);  // the export's numbers read back to the same doubles
        else
          CHECK(y == Approx(x).epsilon(1e-12));
      }
  }
  // The observations are in the export: 2 per subject (EVID 0, the 6th column), DV = IPRED (1 + 0.2 eps) + 0.5 eps'.
  std::ifstream csv(dir / "data.csv");
  std::string line;
  int observations = 0;
  while (std::getline(csv, line)) {
    std::stringstream fields(line);
    std::string field;
    for (int column = 0; column < 6; ++column) std::getline(fields, field, ',');
    if (field == "0") ++observations;
  }
  CHECK(observations == 2 * 60);
  fs::remove_all(dir);
}

TEST_CASE("dosing tables are checked row by row with file and line", "[regimen][nonmem]") {
  const fs::path dir = fs::temp_directory_path() / ("ketasim_table_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const auto target = [](Route route) {
    TableDoseTarget entry;
    entry.route = route;
    entry.compartment = 1;
    entry.compartment_name = "ketamine.central";
    return entry;
  };
  const auto table_error = [&](const std::string& text, Route route) {
    std::ofstream(dir / "t.csv") << text;
    try {
      read_dosing_table((dir / "t.csv").string(), target(route));
    } catch (const ScenarioError& error) {
      return std::string(error.what());
    }
    return std::string("no error");
  };
  CHECK_THAT(table_error("ID,TIME,AMT,RATE\n1,0,40,60\n1,x,40,60\n", Route::iv_infusion),
             Catch::Contains("t.csv:3") && Catch::Contains("TIME"));
  CHECK_THAT(table_error("ID,TIME,AMT\n1,0,40\n", Route::iv_infusion), Catch::Contains("RATE"));
  CHECK_THAT(table_error("ID,TIME,AMT,RATE\n0,0,40,60\n", Route::iv_infusion), Catch::Contains("ID"));
  CHECK_THAT(table_error("ID,TIME,AMT,RATE\n1,0,-4,60\n", Route::iv_infusion), Catch::Contains("AMT"));
  CHECK_THAT(table_error("ID,TIME,AMT,RATE\n1,0,40\n", Route::iv_infusion), Catch::Contains("fields"));
  CHECK_THAT(table_error("", Route::iv_infusion), Catch::Contains("empty"));
  CHECK_THAT(table_error("ID,TIME,AMT,RATE,EVID\n1,0,0,0,0\n", Route::iv_bolus), Catch::Contains("no dose rows"));
  CHECK_THAT(table_error("ID,TIME,AMT,RATE,EVID\n2,81,40,-2,1\n", Route::iv_infusion), Catch::Contains("DUR"));
  std::ofstream(dir / "t.csv")
      << "# comment\nID,TIME,AMT,RATE,DUR,EVID\n2,9,40,60,.,1\n2,10,.,.,.,0\n2,81,40,-2,0.5,1\n";
  const DosingTable read = read_dosing_table((dir / "t.csv").string(), target(Route::iv_infusion));
  REQUIRE(read.doses.at(2).size() == 2);
  CHECK(read.doses.at(2)[0].time == 9 * kTicksPerHour);
  CHECK(read.doses.at(2)[0].duration == 2 * kTicksPerHour / 3);  // 40 mg at 60 mg/h
  CHECK(read.doses.at(2)[1].duration == kTicksPerHour / 2);      // RATE -2: DUR
  fs::remove_all(dir);
}

TEST_CASE("observations carry residual error of the requested size, the same draws in every arm", "[observations]") {
  const std::string rule = dose_rule("schedule: [Mon 09:00], for: 1 week");
  const Scenario scenario =
      parse_scenario(kHeader + "arms:\n  - {name: a, regimen: " + rule + "}\n  - {name: b, regimen: " + rule + "}\n" +
                         "output:\n  grid: {every: 10 min, for: 2 d}\n  variables: []\n" +
                         "  observations: {times: [9.667 h, 10 h], variables: [{name: plasma_ketamine, error: "
                         "{proportional: 10%}}, {name: madrs, error: {additive: 2}}]}\n",
                     "observations.yaml");
  Scenario big = scenario;
  big.cohort.size = 2000;
  const auto arms = run_columns(big);
  CHECK(same_values(arms[0]["dv_plasma_ketamine_ng_per_ml"], arms[1]["dv_plasma_ketamine_ng_per_ml"]));
  // log-free check of the proportional error: (DV - IPRED) / IPRED has SD 0.1; additive: SD 2.
  const auto sd_of = [](const std::vector<double>& dv, const std::vector<double>& ipred, bool relative) {
    double sum = 0.0, sum2 = 0.0;
    for (std::size_t i = 0; i < dv.size(); ++i) {
      const double e = relative ? (dv[i] - ipred[i]) / ipred[i] : dv[i] - ipred[i];
      sum += e;
      sum2 += e * e;
    }
    const double n = static_cast<double>(dv.size());
    return std::sqrt((sum2 - sum * sum / n) / (n - 1));
  };
  // 4000 draws each: the SD's relative standard error is about 1.1%.
  CHECK(sd_of(arms[0]["dv_plasma_ketamine_ng_per_ml"], arms[0]["ipred_plasma_ketamine_ng_per_ml"], true) ==
        Approx(0.1).epsilon(0.05));
  CHECK(sd_of(arms[0]["dv_madrs"], arms[0]["ipred_madrs"], false) == Approx(2.0).epsilon(0.05));
}

TEST_CASE(
    "inter-occasion variability: 0% changes nothing, exact and ODE paths agree, per occasion, CL_k x AUC_k adds up to "
    "the dose",
    "[occasions]") {
  const std::string head = kHeader;
  const std::string arms = R"(arms:
  - name: weekly
    regimen: {route: iv_infusion, dose: 0.5 mg/kg, infusion_duration: 40 min, schedule: every 1 week, count: 3}
output:
  grid: {every: 10 min, for: 5 weeks}
  variables: []
)";
  const auto with_iov = [&](const std::string& cv, const std::string& method) {
    std::string text = head + "  occasion_variability: {CL: " + cv + ", Q: " + cv + "}\n" + arms;
    if (!method.empty()) text += "solver: {method: " + method + ", rtol: 1e-10, atol: 1e-14}\n";
    return parse_scenario(text, "occasions.yaml");
  };
  const auto none = run_columns(parse_scenario(head + arms, "none.yaml"));
  const auto zero = run_columns(with_iov("0%", ""));
  for (const char* name : {"cmax_ng_per_ml", "auc_ng_h_per_ml", "time_above_dissociation_h", "days_in_response"})
    for (std::size_t i = 0; i < 60; ++i)
      CHECK(zero[0][name][i] == Approx(none[0][name][i]).epsilon(1e-9).margin(1e-12));

  const Scenario exact = with_iov("30%", "exact");
  const auto by_exact = run_columns(exact);
  const auto by_ode = run_columns(with_iov("30%", "ode"));
  bool differs_from_none = false;
  for (std::size_t i = 0; i < 60; ++i) {
    CHECK(by_ode[0]["auc_ng_h_per_ml"][i] == Approx(by_exact[0]["auc_ng_h_per_ml"][i]).epsilon(1e-6));
    CHECK(by_ode[0]["cmax_ng_per_ml"][i] == Approx(by_exact[0]["cmax_ng_per_ml"][i]).epsilon(1e-6));
    differs_from_none |= std::abs(by_exact[0]["auc_ng_h_per_ml"][i] / none[0]["auc_ng_h_per_ml"][i] - 1.0) > 0.01;
  }
  CHECK(differs_from_none);

  // Occasion k is week k (doses Mon 00:00), the last runs to the end, when the drug is long gone:
  // everything given is eliminated, sum_k CL_k * AUC_k = dose, with CL_k the subject's clearance in
  // occasion k (AUC in ng*h/mL = ug*h/L).
  const ModelCard& card = *find_builtin_model("ketamine_venous");
  const CohortSampler sampler(exact, card);
  const auto cl = static_cast<std::size_t>(card.index_of("CL"));
  const std::size_t weeks = by_exact[0].width.at("auc_per_week_ng_h_per_ml");
  for (std::int64_t id = 0; id < 60; ++id) {
    const Subject subject = sampler.draw(id);
    double eliminated_mg = 0.0;
    for (std::size_t w = 0; w < weeks; ++w) {
      const int occasion = static_cast<int>(std::min<std::size_t>(w, 2));
      const double clearance = sampler.occasion_parameters(subject, occasion)[cl];
      eliminated_mg +=
          clearance * by_exact[0]["auc_per_week_ng_h_per_ml"][static_cast<std::size_t>(id) * weeks + w] * 1e-3;
    }
    CHECK(eliminated_mg == Approx(3 * 0.5 * subject.weight_kg).epsilon(1e-9));
  }
}

TEST_CASE("triggered and missed doses do not depend on the thread count or block size",
          "[regimen][as_needed][adherence]") {
  const Scenario scenario =
      load_scenario_file(std::string(KETASIM_SOURCE_DIR) + "/scenarios/induction_then_taper.yaml");
  Scenario small = scenario;
  small.cohort.size = small.cohort.subjects_per_replicate = 40;
  Scenario as_needed = load_scenario_file(std::string(KETASIM_SOURCE_DIR) + "/scenarios/as_needed_maintenance.yaml");
  as_needed.cohort.size = as_needed.cohort.subjects_per_replicate = 40;
  for (const Scenario* one : {&small, &as_needed}) {
    const auto a = run_columns(*one, 1, 40);
    const auto b = run_columns(*one, 2, 7);
    for (std::size_t arm = 0; arm < a.size(); ++arm)
      for (const char* name :
           {"dose_time_h", "dose_amount_mg", "sessions_missed", "sessions_triggered", "days_in_response"}) {
        INFO(one->name << " arm " << arm << " " << name);
        CHECK(same_values(a[arm][name], b[arm][name]));
      }
  }
}

TEST_CASE("arms with models of their own are the same patients: covariates and residual draws", "[regimen][models]") {
  Scenario scenario = load_scenario_file(std::string(KETASIM_SOURCE_DIR) + "/scenarios/esketamine_vs_iv_ketamine.yaml");
  scenario.cohort.size = scenario.cohort.subjects_per_replicate = 30;
  const auto arms = run_columns(scenario);
  REQUIRE(arms.size() == 2);
  for (const char* name : {"weight_kg", "age_y", "female", "baseline_madrs", "madrs_baseline"}) {
    INFO(name);
    CHECK(same_values(arms[0][name], arms[1][name]));
  }
  // Each arm has its own card's parameters: the esketamine card has a nasal bioavailability, the
  // venous card does not.
  CHECK(arms[1].values.count("FRn") == 1);
  CHECK(arms[0].values.count("FRn") == 0);
  const auto layouts = arm_layouts(scenario);
  CHECK(layouts[0].model == "ketamine_venous");
  CHECK(layouts[1].model == "esketamine_intranasal");
}

TEST_CASE("as-needed dose times: delay, then the first clinic slot at or after it", "[regimen][as_needed]") {
  AsNeeded rule;
  const auto at = [](int week, int day, int hour, int minute) {
    return week * kTicksPerWeek + day * kTicksPerDay + hour * kTicksPerHour + minute * kTicksPerMinute;
  };
  CHECK(rule.dose_time(at(1, 1, 10, 0)) == at(1, 1, 10, 0));  // no slots, no delay: at the crossing
  rule.delay = kTicksPerDay;
  CHECK(rule.dose_time(at(1, 1, 10, 0)) == at(1, 2, 10, 0));
  rule.delay = 0;
  rule.slots = {WeeklySlot{0, 9 * kTicksPerHour}, WeeklySlot{3, 9 * kTicksPerHour}};  // Mon, Thu 09:00
  CHECK(rule.dose_time(at(1, 1, 10, 0)) == at(1, 3, 9, 0));                           // Tue 10:00 -> Thu 09:00
  CHECK(rule.dose_time(at(1, 3, 9, 0)) == at(1, 3, 9, 0));                            // at a slot: that slot
  CHECK(rule.dose_time(at(1, 3, 9, 1)) == at(2, 0, 9, 0));   // just after Thu's slot -> next Monday
  CHECK(rule.dose_time(at(1, 6, 23, 0)) == at(2, 0, 9, 0));  // Sunday night -> Monday
  CHECK(rule.dose_time(at(0, 0, 8, 0)) == at(0, 0, 9, 0));   // week 1, before the first slot
  rule.delay = kTicksPerDay;
  CHECK(rule.dose_time(at(1, 2, 10, 0)) == at(2, 0, 9, 0));  // Wed 10:00 + 1 d = Thu 10:00 -> Monday
}
