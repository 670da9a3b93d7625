// The calibration's declared split of the reproduction suite: fitted targets and a validation set
// of whole studies the fit never sees.
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>

#include "ketasim/analysis/calibration.hpp"
#include "ketasim/base/errors.hpp"

using namespace ketasim;
namespace fs = std::filesystem;

namespace {

// A small suite in a folder of its own: target files and a calibration spec beside them.
class Suite {
 public:
  explicit Suite(const std::string& name)
      : folder_(fs::temp_directory_path() / ("ketasim_test_calibration_" + std::to_string(::getpid()) + "_" + name)) {
    fs::remove_all(folder_);
    fs::create_directories(folder_ / "suite");
  }
  ~Suite() { fs::remove_all(folder_); }
  Suite(const Suite&) = delete;
  Suite& operator=(const Suite&) = delete;

  void target(const std::string& name, const std::string& study, const std::string& extra) const {
    std::ofstream(folder_ / "suite" / (name + ".yaml"))
        << "target: " << name << "\ntitle: t\nsource: s\nstudy: \"" << study << "\"\n"
        << extra << "scenario: none.yaml\nstatistic: {kind: mean, arm: a, value: {metric: cmax_ng_per_ml}}\n"
        << "expected: 1\ntolerance: {absolute: 1, why: w}\n";
  }
  // A spec fitting the listed targets.
  std::string spec(const std::vector<std::string>& fitted) const {
    std::ofstream out(folder_ / "fit.yaml");
    out << "calibration: fit\nmodel: ketamine_venous\nseed: 1\nsubjects: 10\n"
        << "parameters:\n  resp_half_life: {start: 4 d, min: 1 d, max: 10 d}\nsuite: suite\ntargets:\n";
    for (const std::string& name : fitted) out << "  - suite/" << name << ".yaml\n";
    return (folder_ / "fit.yaml").string();
  }

 private:
  fs::path folder_;
};

std::string load_error(const std::string& spec) {
  try {
    (void)load_calibration(spec);
  } catch (const ScenarioError& error) {
    return error.what();
  }
  return "";
}

}  // namespace

TEST_CASE("calibration: the fitted targets and the validation set are whole studies", "[calibration]") {
  Suite suite("split");
  suite.target("a1", "Study A", "evidence: verified\nfitted_by: fit\n");
  suite.target("a2", "Study A", "evidence: recalled\nfitted_by: fit\n");
  suite.target("b1", "Study B", "evidence: recalled\n");
  const CalibrationSpec spec = load_calibration(suite.spec({"a1", "a2"}));
  REQUIRE(spec.targets.size() == 2);
  REQUIRE(spec.validation.size() == 1);
  CHECK(spec.validation.front().name == "b1");
  CHECK(spec.targets.front().evidence == Evidence::verified);
  CHECK(spec.targets.back().evidence == Evidence::recalled);

  SECTION("a study split between the fit and the validation set is refused") {
    suite.target("b2", "Study A", "evidence: recalled\n");
    const std::string message = load_error(suite.spec({"a1", "a2"}));
    CHECK_THAT(message, Catch::Contains("study 'Study A' is split"));
    CHECK_THAT(message, Catch::Contains("fit.yaml:9"));  // the `targets` list
  }
  SECTION("a fitted target must say which calibration fits it") {
    CHECK_THAT(load_error(suite.spec({"a1", "a2", "b1"})), Catch::Contains("does not say `fitted_by: fit`"));
  }
  SECTION("a target that says it is fitted must be listed") {
    CHECK_THAT(load_error(suite.spec({"a1"})), Catch::Contains("'a2'"));
    CHECK_THAT(load_error(suite.spec({"a1"})), Catch::Contains("is not listed here"));
  }
  SECTION("evidence is verified or recalled") {
    suite.target("b1", "Study B", "evidence: remembered\n");
    const std::string message = load_error(suite.spec({"a1", "a2"}));
    CHECK_THAT(message, Catch::Contains("b1.yaml:5"));
    CHECK_THAT(message, Catch::Contains("expected verified"));
  }
}

TEST_CASE("calibration: the shipped fit leaves whole studies out", "[calibration]") {
  const CalibrationSpec spec =
      load_calibration(std::string(KETASIM_SOURCE_DIR) + "/models/calibration/ketamine_response.yaml");
  std::set<std::string> fitted_studies;
  for (const ReproductionTarget& target : spec.targets) fitted_studies.insert(target.study);
  std::set<std::string> held_out;
  for (const ReproductionTarget& target : spec.validation) {
    CHECK(fitted_studies.count(target.study) == 0);
    held_out.insert(target.study);
  }
  // The studies the response model must predict without having seen them.
  CHECK(held_out.count("Kishimoto 2016") == 1);
  CHECK(held_out.count("Fava 2020") == 1);
  CHECK(spec.targets.size() + spec.validation.size() >= 28);
}
