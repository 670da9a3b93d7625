// The scenario loader: valid scenarios become the expected typed values (base units, Ticks);
// errors say file:line:column and the key path. Invalid inputs one by one are in the corpus
// (test_invalid_scenarios.cpp).

#include <unistd.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>

#include "ketasim/base/errors.hpp"
#include "ketasim/base/yaml_reader.hpp"
#include "ketasim/input/covariate_table.hpp"
#include "ketasim/input/scenario.hpp"
#include "ketasim/input/scenario_loader.hpp"

using namespace ketasim;
namespace fs = std::filesystem;

namespace {

const std::string kDefaultScenario = std::string(KETASIM_SOURCE_DIR) + "/scenarios/once_vs_twice_weekly.yaml";

// A valid scenario whose single arm's regimen is `regimen` (indented as a map under "regimen:").
std::string with_regimen(const std::string& regimen) {
  return "name: t\n"
         "model: {name: ketamine_clements_2cmt}\n"
         "cohort: {size: 3, seed: 7, weight: 70 kg}\n"
         "arms:\n"
         "  - name: a\n"
         "    regimen:\n" +
         regimen;
}

const DosingRule& only_rule(const Scenario& scenario) {
  REQUIRE(scenario.arms.size() == 1);
  REQUIRE(scenario.arms[0].regimen.size() == 1);
  return scenario.arms[0].regimen[0];
}

Ticks hours(double h) {
  return static_cast<Ticks>(h * static_cast<double>(kTicksPerHour));
}

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

}  // namespace

TEST_CASE("the default scenario loads with the values it states", "[scenario]") {
  const Scenario scenario = load_scenario_file(kDefaultScenario);
  CHECK(scenario.source_file == kDefaultScenario);
  CHECK(scenario.yaml_text == read_text(kDefaultScenario));
  CHECK(scenario.name == "once_vs_twice_weekly");
  CHECK_THAT(scenario.description, Catch::StartsWith("Racemic ketamine 0.5 mg/kg over 40 min"));
  CHECK(scenario.model.name == "ketamine_venous");
  CHECK(scenario.model.overrides.empty());

  const Cohort& cohort = scenario.cohort;
  CHECK(cohort.size == 2000);
  CHECK(cohort.seed == 20261122u);
  CHECK(cohort.weight.kind == CovariateDistribution::Kind::truncated_normal);
  CHECK(cohort.weight.mean == 80.0);
  CHECK(cohort.weight.sd == 15.0);
  CHECK(cohort.weight.min == 45.0);
  CHECK(cohort.weight.max == 150.0);
  CHECK(cohort.baseline_madrs.kind == CovariateDistribution::Kind::truncated_normal);
  CHECK(cohort.baseline_madrs.mean == 33.0);
  CHECK(cohort.baseline_madrs.sd == 5.0);
  CHECK(cohort.age.kind == CovariateDistribution::Kind::fixed);  // the default, 45 y
  CHECK(cohort.age.fixed == 45.0);
  // No scenario variability: the card's own applies.
  CHECK(cohort.variability.parameters.empty());
  CHECK(cohort.variability.from_card);

  REQUIRE(scenario.arms.size() == 2);
  CHECK(scenario.arms[0].name == "once_weekly");
  CHECK(scenario.arms[1].name == "twice_weekly");
  for (const Arm& arm : scenario.arms) {
    REQUIRE(arm.regimen.size() == 1);
    const DosingRule& rule = arm.regimen[0];
    CHECK(rule.route == Route::iv_infusion);
    CHECK(rule.dose.value == 0.5);
    CHECK(rule.dose.basis == DoseBasis::per_body_weight);
    CHECK(rule.infusion_duration == 40 * kTicksPerMinute);
    CHECK(rule.schedule == ScheduleKind::weekly);
    CHECK(rule.start == 0);
    REQUIRE(rule.repeat_for.has_value());
    CHECK(*rule.repeat_for == 3 * kTicksPerWeek);
    CHECK_FALSE(rule.count.has_value());
    CHECK(rule.where.file == kDefaultScenario);
  }
  const auto& once = scenario.arms[0].regimen[0];
  REQUIRE(once.weekly_slots.size() == 1);
  CHECK(once.weekly_slots[0].weekday == 0);
  CHECK(once.weekly_slots[0].time_of_day == 9 * kTicksPerHour);
  CHECK(once.where.line == 19);  // the rule's first key, "route:"
  CHECK(once.where.column == 7);

  // Week 1 starts Monday 00:00 at t = 0: Mon 09:00 is 9 h, Thu 09:00 is 81 h.
  const auto& twice = scenario.arms[1].regimen[0].weekly_slots;
  REQUIRE(twice.size() == 2);
  CHECK(twice[0].weekday == 0);
  CHECK(twice[0].time_of_day == 9 * kTicksPerHour);
  CHECK(twice[1].weekday == 3);
  CHECK(twice[1].time_of_day == 9 * kTicksPerHour);
  CHECK(twice[1].weekday * kTicksPerDay + twice[1].time_of_day == 81 * kTicksPerHour);

  CHECK(scenario.output.grid_step == 10 * kTicksPerMinute);
  CHECK(scenario.output.grid_end == 6 * kTicksPerWeek);
  CHECK_FALSE(scenario.output.variables.has_value());  // the model's defaults
  CHECK(scenario.output.assessments == std::vector<Ticks>{kTicksPerDay, 7 * kTicksPerDay, 15 * kTicksPerDay,
                                                          21 * kTicksPerDay, 28 * kTicksPerDay, 41 * kTicksPerDay});
  CHECK(scenario.output.dissociation_threshold == 5.0);
  CHECK(scenario.solver.method == SolverMethod::automatic);
  CHECK(scenario.solver.rtol == 1e-8);
  CHECK(scenario.solver.atol == 1e-10);
}

TEST_CASE("weekly slots are sorted by time in the week, weekday names in any case", "[scenario][schedule]") {
  const Scenario scenario = parse_scenario(with_regimen("      route: iv_infusion\n"
                                                        "      dose: 35 mg\n"
                                                        "      infusion_duration: 1 h\n"
                                                        "      schedule: [thu 09:00, SUN 23:59, Mon 8:30]\n"
                                                        "      count: 6\n"),
                                           "weekly.yaml");
  const DosingRule& rule = only_rule(scenario);
  CHECK(rule.schedule == ScheduleKind::weekly);
  CHECK(rule.dose.basis == DoseBasis::flat);
  CHECK(rule.dose.value == 35.0);
  REQUIRE(rule.weekly_slots.size() == 3);
  CHECK(rule.weekly_slots[0].weekday == 0);
  CHECK(rule.weekly_slots[0].time_of_day == 8 * kTicksPerHour + 30 * kTicksPerMinute);
  CHECK(rule.weekly_slots[1].weekday == 3);
  CHECK(rule.weekly_slots[2].weekday == 6);
  CHECK(rule.weekly_slots[2].time_of_day == 23 * kTicksPerHour + 59 * kTicksPerMinute);
  REQUIRE(rule.count.has_value());
  CHECK(*rule.count == 6);
  CHECK_FALSE(rule.repeat_for.has_value());
}

TEST_CASE("an interval schedule: 'every <duration>' with a start offset", "[scenario][schedule]") {
  const Scenario scenario = parse_scenario(with_regimen("      route: iv_bolus\n"
                                                        "      dose: 0.25 mg/kg\n"
                                                        "      schedule: every 3.5 d\n"
                                                        "      start: 90 min\n"
                                                        "      for: 2 weeks\n"),
                                           "interval.yaml");
  const DosingRule& rule = only_rule(scenario);
  CHECK(rule.route == Route::iv_bolus);
  CHECK(rule.infusion_duration == 0);
  CHECK(rule.schedule == ScheduleKind::interval);
  CHECK(rule.interval == 84 * kTicksPerHour);
  CHECK(rule.start == hours(1.5));
  REQUIRE(rule.repeat_for.has_value());
  CHECK(*rule.repeat_for == 2 * kTicksPerWeek);
  CHECK(rule.dose.basis == DoseBasis::per_body_weight);
}

TEST_CASE("an explicit schedule lists times from the simulation start", "[scenario][schedule]") {
  const Scenario scenario = parse_scenario(with_regimen("      route: iv_infusion\n"
                                                        "      dose: 35 mg\n"
                                                        "      infusion_duration: 40 min\n"
                                                        "      schedule: {at: [0 h, 9 h, 3.375 d]}\n"),
                                           "explicit.yaml");
  const DosingRule& rule = only_rule(scenario);
  CHECK(rule.schedule == ScheduleKind::explicit_times);
  CHECK(rule.explicit_times == std::vector<Ticks>{0, 9 * kTicksPerHour, 81 * kTicksPerHour});
  CHECK_FALSE(rule.repeat_for.has_value());
  CHECK_FALSE(rule.count.has_value());
}

TEST_CASE("a regimen may be a list of rules, each with its own location", "[scenario][schedule]") {
  const Scenario scenario = parse_scenario(with_regimen("      - {route: iv_bolus, dose: 10 mg, schedule: [Mon 09:00], "
                                                        "for: 1 week}\n"
                                                        "      - route: iv_infusion\n"
                                                        "        dose: 0.5 mg/kg\n"
                                                        "        infusion_duration: 40 min\n"
                                                        "        schedule: [Mon 09:00]\n"
                                                        "        for: 1 week\n"),
                                           "two_rules.yaml");
  REQUIRE(scenario.arms.size() == 1);
  const auto& regimen = scenario.arms[0].regimen;
  REQUIRE(regimen.size() == 2);
  CHECK(regimen[0].route == Route::iv_bolus);
  CHECK(regimen[0].where.line == 7);
  CHECK(regimen[0].where.column == 9);
  CHECK(regimen[1].route == Route::iv_infusion);
  CHECK(regimen[1].where.line == 8);
  CHECK(regimen[1].where.column == 9);
}

TEST_CASE("a fixed body weight, as a quantity or as a distribution", "[scenario][cohort]") {
  const Scenario plain =
      parse_scenario(with_regimen("      {route: iv_bolus, dose: 1 mg, schedule: {at: [0 h]}}\n"), "weight.yaml");
  CHECK(plain.cohort.weight.kind == CovariateDistribution::Kind::fixed);
  CHECK(plain.cohort.weight.fixed == 70.0);
  CHECK(plain.cohort.variability.parameters.empty());

  const std::string text =
      "name: t\n"
      "model: {name: ketamine_domino_3cmt}\n"
      "cohort: {size: 1099511627776, seed: 18446744073709551615, weight: {distribution: fixed, value: 65000 g}}\n"
      "arms: [{name: a, regimen: {route: iv_bolus, dose: 1 mg, schedule: {at: [0 h]}}}]\n";
  // "g" is drug mass, so 65000 g is not a body weight; the same value in kg is.
  CHECK_THROWS_AS(parse_scenario(text, "weight.yaml"), ScenarioError);
  std::string in_kg = text;
  in_kg.replace(in_kg.find("65000 g"), 7, "65 kg");
  const Scenario fixed = parse_scenario(in_kg, "weight.yaml");
  CHECK(fixed.cohort.weight.kind == CovariateDistribution::Kind::fixed);
  CHECK(fixed.cohort.weight.fixed == 65.0);
  CHECK(fixed.cohort.size == (std::int64_t{1} << 40));
  CHECK(fixed.cohort.seed == 18446744073709551615u);
}

TEST_CASE("a correlation is stored in the order of variability.parameters", "[scenario][cohort]") {
  const Scenario scenario = parse_scenario(
      "name: t\n"
      "model: {name: ketamine_clements_2cmt}\n"
      "cohort:\n"
      "  size: 3\n"
      "  seed: 0\n"
      "  weight: 70 kg\n"
      "  variability:\n"
      "    cv: {V1: 25%, k10: 30%, k12: 0%}\n"
      "    correlation: {parameters: [k12, V1], matrix: [[1, -0.3], [-0.3, 1]]}\n"
      "arms: [{name: a, regimen: {route: iv_bolus, dose: 1 mg, schedule: {at: [0 h]}}}]\n",
      "correlation.yaml");
  const Variability& variability = scenario.cohort.variability;
  CHECK(variability.parameters == std::vector<std::string>{"V1", "k10", "k12"});
  CHECK(variability.cv == std::vector<double>{0.25, 0.30, 0.0});
  Eigen::MatrixXd expected = Eigen::MatrixXd::Identity(3, 3);
  expected(0, 2) = expected(2, 0) = -0.3;
  CHECK(variability.correlation.isApprox(expected));
  CHECK(variability.correlation(1, 0) == 0.0);
}

TEST_CASE("model overrides are stored in base units", "[scenario][model]") {
  const Scenario scenario = parse_scenario(
      "name: t\n"
      "model:\n"
      "  name: ketamine_clements_2cmt\n"
      "  parameters: {V1: 120000 mL, k10: 0.0109 /min, ec50_s: 121 ng/mL, diss_hill: 2, s_fraction: 50%}\n"
      "cohort: {size: 3, seed: 0, weight: 70 kg}\n"
      "arms: [{name: a, regimen: {route: iv_bolus, dose: 1 mg, schedule: {at: [0 h]}}}]\n",
      "overrides.yaml");
  const auto& overrides = scenario.model.overrides;
  REQUIRE(overrides.size() == 5);
  CHECK(overrides[0].name == "V1");
  CHECK(overrides[0].value == Approx(120.0));
  CHECK(overrides[1].name == "k10");
  CHECK(overrides[1].value == Approx(0.654));
  CHECK(overrides[2].name == "ec50_s");
  CHECK(overrides[2].value == Approx(0.121));
  CHECK(overrides[3].name == "diss_hill");
  CHECK(overrides[3].value == 2.0);
  CHECK(overrides[4].name == "s_fraction");
  CHECK(overrides[4].value == Approx(0.5));
}

TEST_CASE("output and solver settings are read, omitted ones keep their defaults", "[scenario]") {
  const std::string base =
      "name: t\n"
      "model: {name: ketamine_clements_2cmt}\n"
      "cohort: {size: 3, seed: 0, weight: 70 kg}\n"
      "arms: [{name: a-1_B, regimen: {route: iv_bolus, dose: 1 mg, schedule: {at: [0 h]}}}]\n";
  const Scenario defaults = parse_scenario(base, "defaults.yaml");
  CHECK(defaults.arms[0].name == "a-1_B");
  CHECK(defaults.output.grid_step == OutputSpec{}.grid_step);
  CHECK(defaults.output.grid_end == OutputSpec{}.grid_end);
  CHECK_FALSE(defaults.output.variables.has_value());
  CHECK(defaults.solver.method == SolverMethod::automatic);

  const Scenario custom = parse_scenario(base +
                                             "output:\n"
                                             "  grid: {every: 10 min, for: 2 d}\n"
                                             "  variables: [dissociation, plasma_ketamine]\n"
                                             "  dissociation_threshold: 3.5\n"
                                             "solver: {method: ode, rtol: 1e-6, atol: 1e-9}\n",
                                         "custom.yaml");
  CHECK(custom.output.grid_step == 10 * kTicksPerMinute);
  CHECK(custom.output.grid_end == 2 * kTicksPerDay);
  CHECK(custom.output.variables == std::vector<std::string>{"dissociation", "plasma_ketamine"});
  CHECK(custom.output.dissociation_threshold == 3.5);
  CHECK(custom.solver.method == SolverMethod::ode);
  CHECK(custom.solver.rtol == 1e-6);
  CHECK(custom.solver.atol == 1e-9);
}

TEST_CASE("an error names file:line:column, the key path, the value and what was expected", "[scenario][errors]") {
  const std::string text =
      "name: t\n"
      "model: {name: ketamine_clements_2cmt}\n"
      "cohort: {size: 3, seed: 0, weight: 70 kg}\n"
      "arms:\n"
      "  - name: a\n"
      "    regimen: {route: iv_bolus, dose: 1 mg, schedule: {at: [0 h]}}\n"
      "  - name: b\n"
      "    regimen:\n"
      "      route: iv_infusion\n"
      "      dose: 0.5 mg/kg\n"
      "      infusion_duration: 40 mg/kg\n"
      "      schedule: [Mon 09:00]\n"
      "      for: 3 weeks\n";
  try {
    parse_scenario(text, "scenario.yaml");
    FAIL("a duration given as 40 mg/kg was accepted");
  } catch (const ScenarioError& error) {
    CHECK(error.where().file == "scenario.yaml");
    CHECK(error.where().line == 11);
    CHECK(error.where().column == 26);
    CHECK(error.key_path() == "arms[1].regimen.infusion_duration");
    CHECK(std::string(error.what()) ==
          "scenario.yaml:11:26: error: arms[1].regimen.infusion_duration: '40 mg/kg' is a weight-based dose "
          "(e.g. 0.5 mg/kg), expected a duration (e.g. 40 min)");
    CHECK(error.code() == ExitCode::scenario);
  }
}

TEST_CASE("a YAML syntax error is reported at the parser's 1-based location", "[scenario][errors]") {
  try {
    parse_scenario("name: t\nmodel: {name: x\n", "broken.yaml");
    FAIL("broken YAML was accepted");
  } catch (const ScenarioError& error) {
    CHECK_THAT(error.what(), Catch::StartsWith("broken.yaml:"));
    CHECK_THAT(error.what(), Catch::Contains("invalid YAML"));
    CHECK(error.where().line >= 2);
    CHECK(error.where().column >= 1);
  }
}

TEST_CASE("an unreadable scenario file is an I/O error naming the path", "[scenario][errors]") {
  const std::string path = std::string(KETASIM_SOURCE_DIR) + "/scenarios/no_such_scenario.yaml";
  try {
    load_scenario_file(path);
    FAIL("a missing file was loaded");
  } catch (const IoError& error) {
    CHECK_THAT(error.what(), Catch::Contains(path));
    CHECK(error.code() == ExitCode::io);
  }
}

TEST_CASE("enum names round-trip the scenario vocabulary", "[scenario]") {
  CHECK(to_string(Route::iv_infusion) == "iv_infusion");
  CHECK(to_string(Route::iv_bolus) == "iv_bolus");
  CHECK(to_string(Route::intranasal) == "intranasal");
  CHECK(to_string(DoseDrug::active_placebo) == "midazolam");
  CHECK(to_string(SolverMethod::automatic) == "auto");
  CHECK(to_string(SolverMethod::exact) == "exact");
  CHECK(to_string(SolverMethod::ode) == "ode");
}

TEST_CASE("did-you-mean: transpositions count as one edit, far-off words get no suggestion", "[scenario][errors]") {
  CHECK(yaml::edit_distance("cohrot", "cohort") == 1);
  CHECK(yaml::edit_distance("kitten", "sitting") == 3);
  CHECK(yaml::edit_distance("Name", "name") == 0);
  const std::vector<std::string> keys{"name", "description", "model", "cohort", "arms", "output", "solver"};
  CHECK(yaml::closest_match("cohrot", keys) == std::optional<std::string>("cohort"));
  CHECK(yaml::closest_match("arm", keys) == std::optional<std::string>("arms"));
  CHECK(yaml::closest_match("sovler", keys) == std::optional<std::string>("solver"));
  CHECK_FALSE(yaml::closest_match("regimen", keys).has_value());
  CHECK_FALSE(yaml::closest_match("xyz", std::vector<std::string>{"for"}).has_value());
}

TEST_CASE("regression: a stray ',' before the first key made yaml-cpp's LoadAll loop forever", "[scenario][errors]") {
  // yaml-cpp 0.7 reports empty documents at the ',' without consuming it; the loader must stop.
  try {
    parse_scenario("# a comment\n, split from it\nname: t\n", "comma.yaml");
    FAIL("a stray ',' was accepted");
  } catch (const ScenarioError& error) {
    CHECK(error.where().line == 2);
    CHECK(error.where().column == 1);
    CHECK_THAT(error.what(), Catch::Contains("invalid YAML: unexpected ','"));
  }
}

// ---------------------------------------------------------------------------------------------
// cohort: correlations, from_csv, replicates

namespace {

std::string cohort_scenario(const std::string& cohort_body) {
  return "name: t\n"
         "model: {name: ketamine_clements_2cmt}\n"
         "cohort:\n" +
         cohort_body +
         "arms:\n"
         "  - name: a\n"
         "    regimen: {route: iv_bolus, dose: 5 mg, schedule: {at: [1 h]}}\n";
}

const std::string kNormalCovariates =
    "  seed: 1\n"
    "  weight: {distribution: normal, mean: 80 kg, sd: 15 kg, min: 45 kg, max: 150 kg}\n"
    "  age: {distribution: normal, mean: 45 y, sd: 12 y, min: 18 y, max: 75 y}\n"
    "  baseline_madrs: {distribution: normal, mean: 33, sd: 5, min: 20, max: 50}\n";

// The message of the ScenarioError that parsing `text` as the CSV file `file` raises.
std::string csv_error(const std::string& text, const std::string& file = "patients.csv") {
  try {
    parse_covariate_table(text, file);
  } catch (const ScenarioError& error) {
    CHECK(error.where().file == file);
    CHECK(error.where().line >= 1);
    CHECK(error.code() == ExitCode::scenario);
    return error.what();
  }
  FAIL("the CSV text was accepted:\n" << text);
  return "";
}

}  // namespace

TEST_CASE("cohort.correlations become the symmetric 3 x 3 matrix of weight, age and baseline MADRS",
          "[scenario][cohort]") {
  const Scenario scenario =
      parse_scenario(cohort_scenario("  size: 10\n" + kNormalCovariates +
                                     "  correlations: {weight_kg~age: 0.2, baseline_madrs~age: -0.1}\n"),
                     "t.yaml");
  const Eigen::MatrixXd& r = scenario.cohort.covariate_correlation;
  REQUIRE(r.rows() == 3);
  REQUIRE(r.cols() == 3);
  CHECK(r(0, 0) == 1.0);
  CHECK(r(2, 2) == 1.0);
  CHECK(r(0, 1) == 0.2);
  CHECK(r(1, 0) == 0.2);
  CHECK(r(1, 2) == -0.1);
  CHECK(r(2, 1) == -0.1);
  CHECK(r(0, 2) == 0.0);  // not given

  const Scenario plain = parse_scenario(cohort_scenario("  size: 10\n" + kNormalCovariates), "t.yaml");
  CHECK(plain.cohort.covariate_correlation.size() == 0);  // no copula: the rejection draws of before
  CHECK(plain.cohort.replicates == 1);
  CHECK(plain.cohort.subjects_per_replicate == 10);
  CHECK(plain.cohort.size == 10);
  CHECK_FALSE(plain.cohort.table);
}

TEST_CASE("cohort.replicates multiplies the subjects of every arm", "[scenario][cohort]") {
  const Scenario scenario =
      parse_scenario(cohort_scenario("  size: 250\n  replicates: 40\n" + kNormalCovariates), "t.yaml");
  CHECK(scenario.cohort.replicates == 40);
  CHECK(scenario.cohort.subjects_per_replicate == 250);
  CHECK(scenario.cohort.size == 10000);
  CHECK(scenario.cohort.trial_size() == 250);
  CHECK(scenario.cohort.replicate_of(249) == 0);
  CHECK(scenario.cohort.replicate_of(250) == 1);
  CHECK(scenario.cohort.replicate_of(9999) == 39);
}

TEST_CASE("cohort.from_csv is read relative to the scenario file, with the file's errors at its lines",
          "[scenario][cohort][csv]") {
  const fs::path directory = fs::temp_directory_path() / ("ketasim_test_csv_" + std::to_string(::getpid()));
  fs::create_directories(directory / "data");
  const auto write = [&](const fs::path& path, const std::string& text) {
    std::ofstream(path, std::ios::binary) << text;
  };
  write(directory / "data" / "patients.csv", "ID,WT,SEX\n1,70,F\n2,82.5,M\n3,91,m\n");
  write(directory / "scenario.yaml", cohort_scenario("  seed: 3\n  from_csv: data/patients.csv\n"));
  const Scenario scenario = load_scenario_file((directory / "scenario.yaml").string());
  REQUIRE(scenario.cohort.table);
  const CovariateTable& table = *scenario.cohort.table;
  CHECK(table.file == (directory / "data" / "patients.csv").string());
  CHECK(scenario.cohort.size == 3);
  CHECK(table.weight_kg == std::vector<double>{70.0, 82.5, 91.0});
  CHECK(table.female == std::vector<std::int8_t>{1, 0, 0});
  CHECK_FALSE(table.has_age());  // drawn from cohort.age
  CHECK_FALSE(table.has_baseline_madrs());
  CHECK(table.ids == std::vector<std::string>{"1", "2", "3"});

  write(directory / "data" / "patients.csv", "ID,WT,SEX\n1,70,F\n\n2,7O,M\n");
  try {
    load_scenario_file((directory / "scenario.yaml").string());
    FAIL("a weight of '7O' was accepted");
  } catch (const ScenarioError& error) {
    CHECK(std::string(error.what()) ==
          (directory / "data" / "patients.csv").string() + ":4:3: error: column WT: '7O' is not a number");
  }
  fs::remove_all(directory);
}

TEST_CASE("a cohort CSV: names in any case, NONMEM aliases, quotes, comments, CRLF and a BOM",
          "[scenario][cohort][csv]") {
  const CovariateTable table = parse_covariate_table(
      "\xEF\xBB\xBF# invented\r\nid,Weight_Kg,AGE,\"Sex\",madrs,TIME,\"note\"\r\n"
      "a,70,40,female,30,0,\"likes, commas\"\r\n"
      "  # a comment between rows\r\n"
      "\"b\",+81.5, 52 ,MALE,44,0,\"said \"\"hi\"\"\"\r\n",
      "x.csv");
  CHECK(table.rows == 2);
  CHECK(table.lines == std::vector<int>{3, 5});
  CHECK(table.ids == std::vector<std::string>{"a", "b"});
  CHECK(table.weight_kg == std::vector<double>{70.0, 81.5});
  CHECK(table.age_years == std::vector<double>{40.0, 52.0});
  CHECK(table.female == std::vector<std::int8_t>{1, 0});
  CHECK(table.baseline_madrs == std::vector<double>{30.0, 44.0});
  CHECK(table.weight_column == "Weight_Kg");
  CHECK(table.sex_column == "Sex");

  const CovariateTable coded = parse_covariate_table("WT,FEMALE\n60,1\n75,0\n", "y.csv");
  CHECK(coded.female == std::vector<std::int8_t>{1, 0});
  CHECK(coded.ids.empty());
}

TEST_CASE("a cohort CSV: every defect names the file, line, column and value", "[scenario][cohort][csv]") {
  CHECK(csv_error("ID,WT\n1,70\n2,7O\n") == "patients.csv:3:3: error: column WT: '7O' is not a number");
  CHECK_THAT(csv_error("WT\n0\n"),
             Catch::Contains("patients.csv:2:1: error: column WT: body weight '0' must be greater than 0 kg"));
  CHECK_THAT(csv_error("WT\n-3\n"), Catch::Contains("must be greater than 0 kg"));
  CHECK_THAT(csv_error("WT\n7000\n"),
             Catch::Contains("body weight '7000' lies outside the accepted range of a body weight: up to 500 kg"));
  CHECK_THAT(csv_error("WT\nnan\n"), Catch::Contains("'nan' is not a number"));
  CHECK_THAT(csv_error("WT,MADRS\n70,61\n"),
             Catch::Contains("patients.csv:2:4: error: column MADRS: MADRS '61' lies outside the scale's 0 to 60"));
  CHECK_THAT(csv_error("WT,baseline_madrs\n70,-1\n"),
             Catch::Contains("column baseline_madrs: MADRS '-1' lies outside"));
  CHECK_THAT(csv_error("AGE\n130\n"),
             Catch::Contains("age '130' lies outside the accepted range of an age: up to 120 y"));
  CHECK_THAT(csv_error(""), Catch::Contains("patients.csv:1: error: the file has no header line"));
  CHECK_THAT(csv_error("# only a comment\n\n"), Catch::Contains("no header line"));
  CHECK_THAT(csv_error("ID,WT\n"), Catch::Contains("patients.csv:1: error: the file has a header but no data rows"));
  CHECK_THAT(csv_error("ID,WT,wt\n1,2,3\n"),
             Catch::Contains("patients.csv:1:7: error: the header names column 'wt' twice (also column 2)"));
  CHECK_THAT(csv_error("weight_kg,WT\n1,2\n"),
             Catch::Contains("columns 'weight_kg' and 'WT' both give the body weight"));
  CHECK_THAT(csv_error("SEX,female\nF,1\n"), Catch::Contains("columns 'SEX' and 'female' both give the sex"));
  CHECK_THAT(csv_error("ID,,WT\n1,2,3\n"),
             Catch::Contains("patients.csv:1:4: error: column 2 of the header has no name"));
  CHECK_THAT(csv_error("ID,TIME,DV\n1,0,3\n"), Catch::Contains("the header names no covariate column"));
  CHECK_THAT(csv_error("ID,wieght_kg\n1,70\n"),
             Catch::Contains("unknown column 'wieght_kg' (did you mean 'weight_kg'?)"));
  CHECK_THAT(csv_error("ID,WT\n1,70\n2\n"),
             Catch::Contains("patients.csv:3: error: expected 2 fields as in the header, found 1"));
  CHECK_THAT(csv_error("ID,WT\n1,70,3\n"), Catch::Contains("expected 2 fields as in the header, found 3"));
  CHECK_THAT(csv_error("ID,WT\n1,\n"),
             Catch::Contains("patients.csv:2:3: error: column WT: missing value; every row needs the body weight"));
  CHECK_THAT(csv_error("ID,WT\n1,.\n"), Catch::Contains("column WT: missing value '.'"));
  CHECK_THAT(csv_error("ID,WT\n1,70\n1,80\n"),
             Catch::Contains("patients.csv:3:1: error: column ID: id '1' appears again (first on line 2)"));
  CHECK_THAT(csv_error("ID,WT\n,70\n"), Catch::Contains("column ID: empty id"));
  CHECK_THAT(csv_error("WT,SEX\n70,X\n"), Catch::Contains("column SEX: 'X' is not a sex; expected F or M"));
  CHECK_THAT(csv_error("WT,SEX\n70,1\n"), Catch::Contains("for 1/0 codes name the column 'female'"));
  CHECK_THAT(csv_error("WT,female\n70,2\n"),
             Catch::Contains("column female: '2' is not a sex code; expected 1 (female) or 0 (male)"));
  CHECK_THAT(csv_error("ID,WT\n\"1,70\n"),
             Catch::Contains("patients.csv:2:1: error: the quoted field has no closing quote"));
  CHECK_THAT(csv_error("ID,WT\n\"1\"x,70\n"),
             Catch::Contains("patients.csv:2:4: error: unexpected text after a closing quote"));
}

TEST_CASE("a cohort CSV: mangled files are refused with a located message, never a crash", "[scenario][cohort][csv]") {
  const std::string valid = read_text(std::string(KETASIM_SOURCE_DIR) + "/scenarios/example_patients.csv");
  REQUIRE(parse_covariate_table(valid, "example_patients.csv").rows == 20);
  std::mt19937 random(20240611u);
  const std::string alphabet = ",\"\n\r#.-+eE0123456789 FMfmxX\t\xEF\xBB\xBF\0";
  int accepted = 0, refused = 0;
  for (int trial = 0; trial < 3000; ++trial) {
    std::string text = valid;
    const int edits = 1 + static_cast<int>(random() % 8);
    for (int e = 0; e < edits; ++e) {
      const std::size_t at = text.empty() ? 0 : random() % text.size();
      const char c = alphabet[random() % alphabet.size()];
      switch (random() % 4) {
        case 0:
          text.insert(text.begin() + static_cast<std::ptrdiff_t>(at), c);
          break;
        case 1:
          if (!text.empty()) text.erase(at, 1 + random() % 12);
          break;
        case 2:
          if (!text.empty()) text[at] = c;
          break;
        default:
          text = text.substr(0, at);
          break;  // truncated
      }
    }
    try {
      const CovariateTable table = parse_covariate_table(text, "fuzz.csv");
      ++accepted;
      REQUIRE(table.rows >= 1);
      REQUIRE(table.lines.size() == table.rows);
      for (const auto* column : {&table.weight_kg, &table.age_years, &table.baseline_madrs})
        REQUIRE((column->empty() || column->size() == table.rows));
      for (const double w : table.weight_kg) REQUIRE((w > 0.0 && std::isfinite(w)));
      for (const double m : table.baseline_madrs) REQUIRE((m >= 0.0 && m <= 60.0));
    } catch (const ScenarioError& error) {
      ++refused;
      REQUIRE(error.where().file == "fuzz.csv");
      REQUIRE(error.where().line >= 1);
    }
  }
  CHECK(accepted > 100);  // both outcomes are exercised
  CHECK(refused > 100);
}
