// NONMEM-style data sets in both directions (docs/nonmem.md): dosing tables read as an arm's
// regimen (every column honoured or refused with file:line:column), and `ketasim export`.

#include <H5Cpp.h>
#include <unistd.h>

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
#include "ketasim/base/version.hpp"
#include "ketasim/input/scenario_loader.hpp"
#include "ketasim/output/nonmem_export.hpp"
#include "ketasim/run/run.hpp"
#include "ketasim/solve/timeline.hpp"

using namespace ketasim;
using ketasim::testing::same_values;
namespace fs = std::filesystem;

namespace {

// A folder of its own per test case, removed at the end.
struct TempDir {
  fs::path path;
  explicit TempDir(const std::string& name)
      : path(fs::temp_directory_path() / ("ketasim_nonmem_" + name + "_" + std::to_string(::getpid()))) {
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ignored;
    fs::remove_all(path, ignored);
  }
};

const std::string kHeader = R"(
name: tables
model: {name: ketamine_venous}
cohort:
  size: 4
  seed: 7
  weight: 70 kg
)";

// A scenario whose one arm takes its doses from `table` (written as t.csv beside it).
Scenario scenario_with_table(const TempDir& dir, const std::string& table,
                             const std::string& rule = "route: iv_infusion", const std::string& doses_from = "t.csv") {
  std::ofstream(dir.path / "t.csv") << table;
  return parse_scenario(kHeader + "arms:\n  - name: arm\n    regimen: {" + rule + ", doses_from: " + doses_from +
                            "}\n" + "output: {grid: {every: 30 min, for: 4 weeks}, variables: []}\n",
                        (dir.path / "s.yaml").string());
}

// The loader's message for a table, or "accepted".
std::string table_error(const TempDir& dir, const std::string& table, const std::string& rule = "route: iv_infusion",
                        const std::string& doses_from = "t.csv") {
  try {
    scenario_with_table(dir, table, rule, doses_from);
  } catch (const ScenarioError& error) {
    return error.what();
  }
  return "accepted";
}

std::vector<double> dose_hours(const Scenario& scenario, std::int64_t subject) {
  std::vector<double> hours;
  for (const Dose& dose : subject_doses(scenario.arms[0], 70.0, subject, 1).doses)
    hours.push_back(ticks_to_hours(dose.start));
  return hours;
}

}  // namespace

// --- dosing tables ----------------------------------------------------------------------------

TEST_CASE("ADDL and II give the additional doses, the same as the explicit rows", "[nonmem][table]") {
  const TempDir dir("addl");
  const std::string header = "ID,TIME,AMT,RATE,CMT,EVID,MDV,ADDL,II,SS,DV\n";
  // The row of the issue: 40 mg at 60 mg/h at 9 h, and 5 more every 84 h.
  const Scenario shorthand = scenario_with_table(dir, header + "1,9,40,60,1,1,1,5,84,0,.\n2,0,20,60,1,1,1,0,0,0,.\n");
  CHECK(dose_hours(shorthand, 0) == std::vector<double>{9, 93, 177, 261, 345, 429});
  CHECK(dose_hours(shorthand, 1) == std::vector<double>{0});
  const ScenarioResults implied = run_in_memory(shorthand, 1);
  std::string rows;
  for (int k = 0; k < 6; ++k) rows += "1," + std::to_string(9 + 84 * k) + ",40,60,1,1,1,0,0,0,.\n";
  const Scenario explicit_rows = scenario_with_table(dir, header + rows + "2,0,20,60,1,1,1,0,0,0,.\n");
  const ScenarioResults listed = run_in_memory(explicit_rows, 1);
  REQUIRE(implied.arms.size() == 1);
  for (const auto& [name, values] : listed.arms[0].metrics) {
    INFO(name);
    CHECK(same_values(values, implied.arms[0].metrics.at(name)));
  }
  for (const auto& [name, values] : listed.arms[0].subject_columns) {
    INFO(name);
    CHECK(same_values(values, implied.arms[0].subject_columns.at(name)));
  }
}

TEST_CASE("ADDL and II follow NONMEM's rule: one is positive exactly when the other is", "[nonmem][table]") {
  const TempDir dir("addl_ii");
  const std::string header = "ID,TIME,AMT,RATE,EVID,ADDL,II\n";
  CHECK_THAT(table_error(dir, header + "1,9,40,60,1,5,0\n"), Catch::Contains("t.csv:2:15") && Catch::Contains("II"));
  CHECK_THAT(table_error(dir, header + "1,9,40,60,1,5,.\n"), Catch::Contains("t.csv:2:15") && Catch::Contains("II"));
  CHECK_THAT(table_error(dir, header + "1,9,40,60,1,0,84\n"), Catch::Contains("t.csv:2:15") && Catch::Contains("ADDL"));
  CHECK_THAT(table_error(dir, header + "1,9,40,60,1,2.5,84\n"),
             Catch::Contains("t.csv:2:13") && Catch::Contains("ADDL"));
  CHECK_THAT(table_error(dir, header + "1,9,40,60,1,-1,84\n"),
             Catch::Contains("t.csv:2:13") && Catch::Contains("ADDL"));
  // The last additional dose must stay within the 100-year limit of every time.
  CHECK_THAT(table_error(dir, header + "1,9,40,60,1,1000,1000\n"), Catch::Contains("100 years"));
  // ADDL on an observation row means nothing: refused, as NONMEM requires it to be 0 there.
  CHECK_THAT(table_error(dir, header + "1,9,40,60,1,0,0\n1,10,0,0,0,2,12\n"),
             Catch::Contains("t.csv:3:") && Catch::Contains("ADDL"));
}

TEST_CASE("steady state (SS) is refused with the line, the column and why", "[nonmem][table]") {
  const TempDir dir("ss");
  const std::string message = table_error(dir, "ID,TIME,AMT,RATE,EVID,SS,II\n1,9,40,60,1,1,84\n");
  CHECK_THAT(message, Catch::Contains("t.csv:2:13") && Catch::Contains("SS") && Catch::Contains("steady state"));
  CHECK(table_error(dir, "ID,TIME,AMT,RATE,EVID,SS\n1,9,40,60,1,0\n1,10,40,60,1,.\n") == "accepted");
}

TEST_CASE("reset events (EVID 3 and 4) are refused: ketasim simulates one continuous course", "[nonmem][table]") {
  const TempDir dir("reset");
  for (const char* evid : {"3", "4"}) {
    INFO("EVID " << evid);
    const std::string message =
        table_error(dir, std::string("ID,TIME,AMT,RATE,EVID\n1,9,40,60,1\n1,200,40,60,") + evid + "\n");
    CHECK_THAT(message, Catch::Contains("t.csv:3:13") && Catch::Contains("EVID") && Catch::Contains("reset") &&
                            Catch::Contains("arm"));
  }
  CHECK_THAT(table_error(dir, "ID,TIME,AMT,RATE,EVID\n1,9,40,60,5\n"),
             Catch::Contains("t.csv:2:11") && Catch::Contains("EVID"));
}

TEST_CASE("observation (EVID 0) and other-event (EVID 2) rows give no dose and are checked", "[nonmem][table]") {
  const TempDir dir("evid");
  const std::string header = "ID,TIME,AMT,RATE,CMT,EVID,MDV,DV\n";
  const Scenario read = scenario_with_table(
      dir, header + "1,9,40,60,1,1,1,.\n1,10,0,0,1,0,0,112.5\n1,11,.,.,.,2,1,.\n1,12,.,.,0,0,1,.\n");
  CHECK(dose_hours(read, 0) == std::vector<double>{9});
  // An amount on an observation row would be a dose NONMEM refuses; it is not skipped.
  CHECK_THAT(table_error(dir, header + "1,9,40,60,1,1,1,.\n1,10,40,0,1,0,0,112.5\n"),
             Catch::Contains("t.csv:3:6") && Catch::Contains("AMT"));
  CHECK_THAT(table_error(dir, header + "1,9,40,60,1,1,1,.\n1,10,0,0,.,2,1,7\n"),
             Catch::Contains("t.csv:3:") && Catch::Contains("DV"));
}

TEST_CASE("dose rows: CMT must be the route's compartment, MDV 1, no DV, RATE -1 and -2 without DUR are refused",
          "[nonmem][table]") {
  const TempDir dir("dose_row");
  const std::string header = "ID,TIME,AMT,RATE,CMT,EVID,MDV,DV\n";
  CHECK(table_error(dir, header + "1,9,40,60,1,1,1,.\n1,10,40,60,.,1,.,0\n") == "accepted");
  CHECK_THAT(table_error(dir, header + "1,9,40,60,2,1,1,.\n"),
             Catch::Contains("t.csv:2:11") && Catch::Contains("CMT") && Catch::Contains("ketamine.central"));
  CHECK_THAT(table_error(dir, header + "1,9,40,60,1,1,0,.\n"), Catch::Contains("t.csv:2:15") && Catch::Contains("MDV"));
  CHECK_THAT(table_error(dir, header + "1,9,40,60,1,1,1,3.5\n"),
             Catch::Contains("t.csv:2:17") && Catch::Contains("DV"));
  CHECK_THAT(table_error(dir, header + "1,9,40,-1,1,1,1,.\n"), Catch::Contains("t.csv:2:8") && Catch::Contains("RATE"));
  CHECK_THAT(table_error(dir, header + "1,9,40,-2,1,1,1,.\n"), Catch::Contains("t.csv:2:8") && Catch::Contains("DUR"));
  // RATE and DUR both given: one infusion cannot have two durations.
  CHECK_THAT(table_error(dir, "ID,TIME,AMT,RATE,DUR\n1,9,40,60,0.5\n"),
             Catch::Contains("t.csv:2:") && Catch::Contains("DUR"));
  // A bolus route takes no rate.
  CHECK_THAT(table_error(dir, "ID,TIME,AMT,RATE\n1,9,40,60\n", "route: iv_bolus"),
             Catch::Contains("t.csv:2:8") && Catch::Contains("RATE"));
}

TEST_CASE("a column ketasim does not read is refused unless listed in ignore_columns", "[nonmem][table]") {
  const TempDir dir("columns");
  CHECK_THAT(table_error(dir, "ID,TIME,AMT,RATE,WT\n1,9,40,60,82\n"),
             Catch::Contains("t.csv:1:18") && Catch::Contains("WT") && Catch::Contains("cohort") &&
                 Catch::Contains("ignore_columns"));
  CHECK_THAT(table_error(dir, "ID,TIME,AMT,RAET\n1,9,40,60\n"),
             Catch::Contains("t.csv:1:13") && Catch::Contains("did you mean 'RATE'"));
  const std::string ignored = "{file: t.csv, ignore_columns: [WT, study]}";
  CHECK(table_error(dir, "ID,TIME,AMT,RATE,WT,STUDY\n1,9,40,60,82,A\n", "route: iv_infusion", ignored) == "accepted");
  // What is listed must be in the table, and must not be a column ketasim reads.
  CHECK_THAT(table_error(dir, "ID,TIME,AMT,RATE,WT\n1,9,40,60,82\n", "route: iv_infusion", ignored),
             Catch::Contains("study"));
  CHECK_THAT(table_error(dir, "ID,TIME,AMT,RATE,WT\n1,9,40,60,82\n", "route: iv_infusion",
                         "{file: t.csv, ignore_columns: [WT, AMT]}"),
             Catch::Contains("AMT"));
}

TEST_CASE("implausible amounts and times are refused at load, as in YAML", "[nonmem][table]") {
  const TempDir dir("limits");
  const std::string header = "ID,TIME,AMT,RATE\n";
  CHECK_THAT(table_error(dir, header + "1,9,1e308,1e308\n"), Catch::Contains("t.csv:2:5") && Catch::Contains("AMT"));
  CHECK_THAT(table_error(dir, header + "1,-1,40,60\n"), Catch::Contains("t.csv:2:3") && Catch::Contains("TIME"));
  CHECK_THAT(table_error(dir, header + "1,1e7,40,60\n"), Catch::Contains("t.csv:2:3") && Catch::Contains("100 years"));
  // NONMEM requires ascending times within an individual, and the rows of one ID together.
  CHECK_THAT(table_error(dir, header + "1,81,40,60\n1,9,40,60\n"),
             Catch::Contains("t.csv:3:3") && Catch::Contains("ascending"));
  CHECK_THAT(table_error(dir, header + "1,9,40,60\n2,9,40,60\n1,81,40,60\n"),
             Catch::Contains("t.csv:4:1") && Catch::Contains("ID 1"));
  // The same limit in the YAML path.
  CHECK_THROWS_WITH(
      parse_scenario(
          kHeader + "arms:\n  - name: a\n    regimen: {route: iv_bolus, dose: 1e308 mg, schedule: {at: [9 h]}}\n",
          "d.yaml"),
      Catch::Contains("d.yaml:10:") && Catch::Contains("accepted range of a drug amount"));
  CHECK_THAT(table_error(dir, header + "1,9,1e308,1e308\n"), Catch::Contains("accepted range of a drug amount"));
}

TEST_CASE("a dosing table that is a directory is a scenario error, not a crash", "[nonmem][table]") {
  const TempDir dir("directory");
  fs::create_directories(dir.path / "folder.csv");
  const std::string message = table_error(dir, "ID,TIME,AMT,RATE\n1,9,40,60\n", "route: iv_infusion", "folder.csv");
  CHECK_THAT(message, Catch::Contains("s.yaml:") && Catch::Contains("directory"));
}

// --- export -----------------------------------------------------------------------------------

namespace {

// The rows of a CSV text as maps column name -> text.
std::vector<std::map<std::string, std::string>> csv_rows(const std::string& text, std::string* header_line = nullptr) {
  std::istringstream in(text);
  std::string line;
  std::getline(in, line);
  if (header_line) *header_line = line;
  const auto split = [](const std::string& row) {
    std::vector<std::string> fields;
    std::stringstream cells(row);
    std::string cell;
    while (std::getline(cells, cell, ',')) fields.push_back(cell);
    return fields;
  };
  const std::vector<std::string> names = split(line);
  std::vector<std::map<std::string, std::string>> rows;
  while (std::getline(in, line)) {
    const std::vector<std::string> fields = split(line);
    REQUIRE(fields.size() == names.size());
    std::map<std::string, std::string> row;
    for (std::size_t c = 0; c < names.size(); ++c) row[names[c]] = fields[c];
    rows.push_back(std::move(row));
  }
  return rows;
}

std::vector<double> read_doubles(const std::string& file, const std::string& dataset) {
  const H5::H5File h5(file, H5F_ACC_RDONLY);
  const H5::DataSet set = h5.openDataSet(dataset);
  std::vector<double> values(static_cast<std::size_t>(set.getSpace().getSimpleExtentNpoints()));
  set.read(values.data(), H5::PredType::NATIVE_DOUBLE);
  return values;
}

// Runs `arms` (the text after "arms:\n") with `output` and returns the result file's path.
std::string run_to_file(const TempDir& dir, const std::string& model, const std::string& arms,
                        const std::string& output) {
  const Scenario scenario = parse_scenario(
      "name: export\nmodel: {name: " + model + "}\ncohort: {size: 3, seed: 11, weight: 70 kg}\narms:\n" + arms + output,
      (dir.path / "s.yaml").string());
  RunOptions options;
  options.threads = 1;
  options.output_path = (dir.path / "r.h5").string();
  run_scenario(scenario, options);
  return options.output_path;
}

std::string exported(const std::string& file, const std::string& arm) {
  std::ostringstream out;
  write_nonmem_data(file, arm, out);
  return out.str();
}

const std::string kTwoArms =
    "  - {name: a, regimen: {route: iv_infusion, dose: 0.5 mg/kg, infusion_duration: 40 min, schedule: {at: [9 h]}}}\n"
    "  - {name: b, regimen: {route: iv_infusion, dose: 0.75 mg/kg, infusion_duration: 40 min, schedule: {at: [9 h, 81 "
    "h]}}}\n";
// Observed outputs listed against alphabetical order: DVID must follow this order.
const std::string kObservations =
    "output:\n  grid: {every: 10 min, for: 5 d}\n  variables: []\n"
    "  observations: {times: [9.67 h, 24 h], variables: [{name: plasma_ketamine, error: {proportional: 20%}}, {name: "
    "madrs, error: {additive: 2}}]}\n";

}  // namespace

TEST_CASE("export: an unknown arm is a usage error that names the file's arms", "[nonmem][export]") {
  const TempDir dir("export_arm");
  const std::string file = run_to_file(dir, "ketamine_venous", kTwoArms, kObservations);
  try {
    exported(file, "nope");
    FAIL("accepted");
  } catch (const Error& error) {
    CHECK(error.code() == ExitCode::usage);
    CHECK_THAT(std::string(error.what()), Catch::Contains("nope") && Catch::Contains("a, b"));
  }
}

TEST_CASE("export: ARM and IPRED columns, DVID in the scenario's order, CMT of the observed compartment, exact numbers",
          "[nonmem][export]") {
  const TempDir dir("export_columns");
  const std::string file = run_to_file(dir, "ketamine_venous", kTwoArms, kObservations);
  std::string header;
  const auto rows = csv_rows(exported(file, "b"), &header);
  CHECK(header == "ID,TIME,AMT,RATE,CMT,EVID,MDV,DV,IPRED,DVID,ARM,SUBJ,WT,AGE,FEMALE,MADRS0");
  const std::vector<double> ipred_c = read_doubles(file, "arms/b/metrics/ipred_plasma_ketamine_ng_per_ml");
  const std::vector<double> dv_c = read_doubles(file, "arms/b/metrics/dv_plasma_ketamine_ng_per_ml");
  const std::vector<double> ipred_madrs = read_doubles(file, "arms/b/metrics/ipred_madrs");
  const std::vector<double> weight = read_doubles(file, "arms/b/subjects/weight_kg");
  const std::vector<double> amounts = read_doubles(file, "arms/b/subjects/dose_amount_mg");
  std::size_t doses = 0, observations = 0;
  for (const auto& row : rows) {
    const auto subject = static_cast<std::size_t>(std::stoll(row.at("ID")) - 1);
    CHECK(row.at("ARM") == "2");
    CHECK(row.at("SUBJ") == row.at("ID"));
    CHECK(std::stod(row.at("WT")) == weight[subject]);  // shortest text that reads back to the same double
    if (row.at("EVID") == "1") {
      CHECK(row.at("CMT") == "1");  // ketamine.central, the first state of ketamine_venous
      CHECK(row.at("DV") == ".");
      CHECK(row.at("IPRED") == ".");
      CHECK(std::stod(row.at("AMT")) == amounts[subject * 2 + (row.at("TIME") == "9" ? 0 : 1)]);
      ++doses;
      continue;
    }
    const std::size_t sample = row.at("TIME") == "9.67" ? 0 : 1;  // not 9.6699999999999999
    CHECK((row.at("TIME") == "9.67" || row.at("TIME") == "24"));
    if (row.at("DVID") == "1") {
      CHECK(row.at("CMT") == "1");  // plasma_ketamine: the concentration in ketamine.central
      CHECK(std::stod(row.at("IPRED")) == ipred_c[subject * 2 + sample]);
      CHECK(std::stod(row.at("DV")) == dv_c[subject * 2 + sample]);
    } else {
      CHECK(row.at("DVID") == "2");
      CHECK(row.at("CMT") == "0");  // the MADRS is no compartment
      CHECK(std::stod(row.at("IPRED")) == ipred_madrs[subject * 2 + sample]);
    }
    ++observations;
  }
  CHECK(doses == 3 * 2);
  CHECK(observations == 3 * 2 * 2);
}

TEST_CASE("export: placebo sessions give no drug, even with a recorded dose, intranasal devices enter their depots",
          "[nonmem][export]") {
  const TempDir dir("export_routes");
  const std::string placebo = run_to_file(dir, "ketamine_venous",
                                          "  - {name: midazolam, regimen: {route: iv_infusion, drug: midazolam, dose: "
                                          "0.045 mg/kg, infusion_duration: 40 min, schedule: {at: [9 h]}}}\n",
                                          "output: {grid: {every: 10 min, for: 2 d}, variables: []}\n");
  for (const auto& row : csv_rows(exported(placebo, "midazolam"))) CHECK(row.at("EVID") != "1");

  const std::string nasal =
      run_to_file(dir, "esketamine_intranasal",
                  "  - {name: spray, regimen: {route: intranasal, dose: 84 mg, schedule: {at: [9 h]}}}\n",
                  "output: {grid: {every: 10 min, for: 2 d}, variables: []}\n");
  std::vector<std::string> rows;
  for (const auto& row : csv_rows(exported(nasal, "spray")))
    if (row.at("ID") == "1")
      rows.push_back(row.at("TIME") + " " + row.at("AMT") + " " + row.at("RATE") + " " + row.at("CMT"));
  // Three 28 mg devices 5 min apart, each into the nasal depot (esketamine.nasal, state 5) and
  // into the gut (esketamine.gut, state 6) with its duration modelled (RATE -2).
  const std::string t1 = "9.083333333333334", t2 = "9.166666666666666";
  CHECK(rows == std::vector<std::string>{"9 28 0 5", "9 28 -2 6", t1 + " 28 0 5", t1 + " 28 -2 6", t2 + " 28 0 5",
                                         t2 + " 28 -2 6"});
}

TEST_CASE("export and compare read the same layout versions", "[nonmem][export]") {
  const TempDir dir("export_layout");
  const std::string file = run_to_file(dir, "ketamine_venous", kTwoArms, kObservations);
  for (const int version : {kLayoutVersion + 1, 99}) {
    {
      const H5::H5File h5(file, H5F_ACC_RDWR);
      h5.openAttribute("layout_version").write(H5::PredType::NATIVE_INT, &version);
    }
    INFO("layout " << version);
    CHECK_THROWS_AS(exported(file, "a"), IoError);
    CHECK_THROWS_WITH(exported(file, "a"), Catch::Contains("layout"));
  }
}
