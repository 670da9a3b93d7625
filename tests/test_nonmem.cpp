// NONMEM-style data sets in both directions (docs/nonmem.md): dosing tables read as an arm's
// regimen (every column honoured or refused with file:line:column), and `ketasim export`.

#include <catch2/catch.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include <unistd.h>

#include "ketasim/errors.hpp"
#include "ketasim/nonmem.hpp"
#include "ketasim/reproduction.hpp"
#include "ketasim/run.hpp"
#include "ketasim/scenario_loader.hpp"
#include "ketasim/timeline.hpp"

using namespace ketasim;
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
Scenario scenario_with_table(const TempDir& dir, const std::string& table, const std::string& rule = "route: iv_infusion",
                             const std::string& doses_from = "t.csv") {
  std::ofstream(dir.path / "t.csv") << table;
  return parse_scenario(kHeader + "arms:\n  - name: arm\n    regimen: {" + rule + ", doses_from: " + doses_from + "}\n" +
                            "output: {grid: {every: 30 min, for: 4 weeks}, variables: []}\n",
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
  for (const Dose& dose : subject_doses(scenario.arms[0], 70.0, subject, 1).doses) hours.push_back(ticks_to_hours(dose.start));
  return hours;
}

bool same_values(const std::vector<double>& a, const std::vector<double>& b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (!(a[i] == b[i] || (std::isnan(a[i]) && std::isnan(b[i])))) return false;
  return true;
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
  CHECK_THAT(table_error(dir, header + "1,9,40,60,1,2.5,84\n"), Catch::Contains("t.csv:2:13") && Catch::Contains("ADDL"));
  CHECK_THAT(table_error(dir, header + "1,9,40,60,1,-1,84\n"), Catch::Contains("t.csv:2:13") && Catch::Contains("ADDL"));
  // The last additional dose must stay within the 100-year limit of every time.
  CHECK_THAT(table_error(dir, header + "1,9,40,60,1,1000,1000\n"), Catch::Contains("100 years"));
  // ADDL on an observation row means nothing: refused, as NONMEM requires it to be 0 there.
  CHECK_THAT(table_error(dir, header + "1,9,40,60,1,0,0\n1,10,0,0,0,2,12\n"), Catch::Contains("t.csv:3:") && Catch::Contains("ADDL"));
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
    const std::string message = table_error(dir, std::string("ID,TIME,AMT,RATE,EVID\n1,9,40,60,1\n1,200,40,60,") + evid + "\n");
    CHECK_THAT(message, Catch::Contains("t.csv:3:13") && Catch::Contains("EVID") && Catch::Contains("reset") &&
                            Catch::Contains("arm"));
  }
  CHECK_THAT(table_error(dir, "ID,TIME,AMT,RATE,EVID\n1,9,40,60,5\n"), Catch::Contains("t.csv:2:11") && Catch::Contains("EVID"));
}

TEST_CASE("observation (EVID 0) and other-event (EVID 2) rows give no dose and are checked", "[nonmem][table]") {
  const TempDir dir("evid");
  const std::string header = "ID,TIME,AMT,RATE,CMT,EVID,MDV,DV\n";
  const Scenario read = scenario_with_table(dir, header + "1,9,40,60,1,1,1,.\n1,10,0,0,1,0,0,112.5\n1,11,.,.,.,2,1,.\n1,12,.,.,0,0,1,.\n");
  CHECK(dose_hours(read, 0) == std::vector<double>{9});
  // An amount on an observation row would be a dose NONMEM refuses; it is not skipped.
  CHECK_THAT(table_error(dir, header + "1,9,40,60,1,1,1,.\n1,10,40,0,1,0,0,112.5\n"), Catch::Contains("t.csv:3:6") && Catch::Contains("AMT"));
  CHECK_THAT(table_error(dir, header + "1,9,40,60,1,1,1,.\n1,10,0,0,.,2,1,7\n"), Catch::Contains("t.csv:3:") && Catch::Contains("DV"));
}

TEST_CASE("dose rows: CMT must be the route's compartment, MDV 1, no DV; RATE -1 and -2 without DUR are refused", "[nonmem][table]") {
  const TempDir dir("dose_row");
  const std::string header = "ID,TIME,AMT,RATE,CMT,EVID,MDV,DV\n";
  CHECK(table_error(dir, header + "1,9,40,60,1,1,1,.\n1,10,40,60,.,1,.,0\n") == "accepted");
  CHECK_THAT(table_error(dir, header + "1,9,40,60,2,1,1,.\n"),
             Catch::Contains("t.csv:2:11") && Catch::Contains("CMT") && Catch::Contains("ketamine.central"));
  CHECK_THAT(table_error(dir, header + "1,9,40,60,1,1,0,.\n"), Catch::Contains("t.csv:2:15") && Catch::Contains("MDV"));
  CHECK_THAT(table_error(dir, header + "1,9,40,60,1,1,1,3.5\n"), Catch::Contains("t.csv:2:17") && Catch::Contains("DV"));
  CHECK_THAT(table_error(dir, header + "1,9,40,-1,1,1,1,.\n"), Catch::Contains("t.csv:2:8") && Catch::Contains("RATE"));
  CHECK_THAT(table_error(dir, header + "1,9,40,-2,1,1,1,.\n"), Catch::Contains("t.csv:2:8") && Catch::Contains("DUR"));
  // RATE and DUR both given: one infusion cannot have two durations.
  CHECK_THAT(table_error(dir, "ID,TIME,AMT,RATE,DUR\n1,9,40,60,0.5\n"), Catch::Contains("t.csv:2:") && Catch::Contains("DUR"));
  // A bolus route takes no rate.
  CHECK_THAT(table_error(dir, "ID,TIME,AMT,RATE\n1,9,40,60\n", "route: iv_bolus"), Catch::Contains("t.csv:2:8") && Catch::Contains("RATE"));
}

TEST_CASE("a column ketasim does not read is refused unless listed in ignore_columns", "[nonmem][table]") {
  const TempDir dir("columns");
  CHECK_THAT(table_error(dir, "ID,TIME,AMT,RATE,WT\n1,9,40,60,82\n"),
             Catch::Contains("t.csv:1:18") && Catch::Contains("WT") && Catch::Contains("cohort") && Catch::Contains("ignore_columns"));
  CHECK_THAT(table_error(dir, "ID,TIME,AMT,RAET\n1,9,40,60\n"), Catch::Contains("t.csv:1:13") && Catch::Contains("did you mean 'RATE'"));
  const std::string ignored = "{file: t.csv, ignore_columns: [WT, study]}";
  CHECK(table_error(dir, "ID,TIME,AMT,RATE,WT,STUDY\n1,9,40,60,82,A\n", "route: iv_infusion", ignored) == "accepted");
  // What is listed must be in the table, and must not be a column ketasim reads.
  CHECK_THAT(table_error(dir, "ID,TIME,AMT,RATE,WT\n1,9,40,60,82\n", "route: iv_infusion", ignored), Catch::Contains("study"));
  CHECK_THAT(table_error(dir, "ID,TIME,AMT,RATE,WT\n1,9,40,60,82\n", "route: iv_infusion", "{file: t.csv, ignore_columns: [WT, AMT]}"),
             Catch::Contains("AMT"));
}

TEST_CASE("implausible amounts and times are refused at load, as in YAML", "[nonmem][table]") {
  const TempDir dir("limits");
  const std::string header = "ID,TIME,AMT,RATE\n";
  CHECK_THAT(table_error(dir, header + "1,9,1e308,1e308\n"), Catch::Contains("t.csv:2:5") && Catch::Contains("AMT"));
  CHECK_THAT(table_error(dir, header + "1,-1,40,60\n"), Catch::Contains("t.csv:2:3") && Catch::Contains("TIME"));
  CHECK_THAT(table_error(dir, header + "1,1e7,40,60\n"), Catch::Contains("t.csv:2:3") && Catch::Contains("100 years"));
  // NONMEM requires ascending times within an individual, and the rows of one ID together.
  CHECK_THAT(table_error(dir, header + "1,81,40,60\n1,9,40,60\n"), Catch::Contains("t.csv:3:3") && Catch::Contains("ascending"));
  CHECK_THAT(table_error(dir, header + "1,9,40,60\n2,9,40,60\n1,81,40,60\n"), Catch::Contains("t.csv:4:1") && Catch::Contains("ID 1"));
  // The same limit in the YAML path.
  CHECK_THROWS_WITH(parse_scenario(kHeader + "arms:\n  - name: a\n    regimen: {route: iv_bolus, dose: 1e308 mg, schedule: {at: [9 h]}}\n", "d.yaml"),
                    Catch::Contains("d.yaml:10:") && Catch::Contains("limit"));
}

TEST_CASE("a dosing table that is a directory is a scenario error, not a crash", "[nonmem][table]") {
  const TempDir dir("directory");
  fs::create_directories(dir.path / "folder.csv");
  const std::string message = table_error(dir, "ID,TIME,AMT,RATE\n1,9,40,60\n", "route: iv_infusion", "folder.csv");
  CHECK_THAT(message, Catch::Contains("s.yaml:") && Catch::Contains("directory"));
}

