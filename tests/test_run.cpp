// Whole runs: results independent of thread count and block size, the published end-of-infusion
// concentration for the default scenario, and failed subjects recorded without stopping the run.

#include <H5Cpp.h>

#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <vector>

#include "ketasim/base/errors.hpp"
#include "ketasim/base/threads.hpp"
#include "ketasim/input/scenario_loader.hpp"
#include "ketasim/model/model_card.hpp"
#include "ketasim/output/journal.hpp"
#include "ketasim/run/run.hpp"

using namespace ketasim;
namespace fs = std::filesystem;

namespace {

const char* kTwoArmScenario = R"(
name: run_test
model:
  name: ketamine_domino_3cmt
cohort:
  size: 150
  seed: 99
  weight: {distribution: normal, mean: 80 kg, sd: 15 kg, min: 45 kg, max: 150 kg}
  variability:
    cv: {V1: 30%, k10: 30%, ke0: 20%}
arms:
  - name: once_weekly
    regimen: {route: iv_infusion, dose: 0.5 mg/kg, infusion_duration: 40 min, schedule: [Mon 09:00], for: 2 weeks}
  - name: twice_weekly
    regimen:
      - {route: iv_infusion, dose: 0.5 mg/kg, infusion_duration: 40 min, schedule: [Mon 09:00, Thu 09:00], for: 2 weeks}
      - {route: iv_bolus, dose: 5 mg, schedule: {at: [30 h]}}
output:
  grid: {every: 10 min, for: 10 d}
  dissociation_threshold: 4
)";

fs::path temporary_file(const std::string& name) {
  return fs::temp_directory_path() / ("ketasim_test_run_" + std::to_string(::getpid()) + "_" + name);
}

// Every numeric dataset of every arm, as raw bytes, by path.
std::vector<std::pair<std::string, std::vector<char>>> numeric_datasets(const fs::path& file,
                                                                        const std::vector<ArmLayout>& layouts) {
  H5::H5File h5(file.string(), H5F_ACC_RDONLY);
  std::vector<std::string> paths;
  for (const ArmLayout& arm : layouts) {
    const std::string base = "/arms/" + arm.name + "/";
    paths.push_back(base + "time_h");
    paths.push_back(base + "subjects/id");
    paths.push_back(base + "metrics/status");
    for (const auto& c : arm.subject_columns) paths.push_back(base + "subjects/" + c.name);
    for (const auto& c : arm.metrics) paths.push_back(base + "metrics/" + c.name);
    for (const auto& c : arm.trajectories) {
      paths.push_back(base + "trajectories/" + c.name);
      for (const char* q : {"p05", "p50", "p95"}) paths.push_back(base + "summary/" + c.name + "/" + q);
    }
  }
  std::vector<std::pair<std::string, std::vector<char>>> result;
  for (const std::string& path : paths) {
    H5::DataSet dataset = h5.openDataSet(path);
    const H5::DataType type = dataset.getDataType();
    const auto points = static_cast<std::size_t>(dataset.getSpace().getSimpleExtentNpoints());
    std::vector<char> bytes(points * type.getSize());
    if (!bytes.empty()) dataset.read(bytes.data(), type);
    result.emplace_back(path, std::move(bytes));
  }
  return result;
}

RunReport run_to(const Scenario& scenario, const fs::path& output, unsigned threads, std::int64_t block_size) {
  RunOptions options;
  options.output_path = output.string();
  options.threads = threads;
  options.block_size = block_size;
  return run_scenario(scenario, options);
}

}  // namespace

TEST_CASE("output is identical for any thread count and block size", "[run]") {
  const Scenario scenario = parse_scenario(kTwoArmScenario, "run_test.yaml");
  const fs::path one = temporary_file("one.h5"), two = temporary_file("two.h5");
  run_to(scenario, one, 1, 64);
  run_to(scenario, two, 2, 13);  // many small, unaligned blocks finishing out of order
  const auto layouts = arm_layouts(scenario);
  const auto a = numeric_datasets(one, layouts);
  const auto b = numeric_datasets(two, layouts);
  REQUIRE(a.size() == b.size());
  REQUIRE(a.size() > 40);
  for (std::size_t i = 0; i < a.size(); ++i) {
    INFO(a[i].first);
    CHECK(a[i].second.size() > 0);
    const bool identical = a[i].second == b[i].second;  // not CHECK(a == b): Catch would print megabytes
    CHECK(identical);
  }
  fs::remove(one);
  fs::remove(two);
}

TEST_CASE("paired arms: subject i has the same weight and parameters in every arm", "[run]") {
  const Scenario scenario = parse_scenario(kTwoArmScenario, "run_test.yaml");
  const fs::path output = temporary_file("paired.h5");
  run_to(scenario, output, 2, 64);
  const auto layouts = arm_layouts(scenario);
  const auto datasets = numeric_datasets(output, layouts);
  const auto find = [&](const std::string& path) {
    for (const auto& entry : datasets)
      if (entry.first == path) return entry.second;
    FAIL("no dataset " << path);
    return std::vector<char>();
  };
  for (const char* column : {"weight_kg", "V1", "k10", "ke0"}) {
    INFO(column);
    const bool same = find(std::string("/arms/once_weekly/subjects/") + column) ==
                      find(std::string("/arms/twice_weekly/subjects/") + column);
    CHECK(same);
  }
  const bool distinct = find("/arms/once_weekly/subjects/weight_kg") != find("/arms/once_weekly/subjects/V1");
  CHECK(distinct);
  fs::remove(output);
}

TEST_CASE("default scenario: median end-of-infusion ketamine is near the published 185 ng/mL", "[run]") {
  // Venous samples after 0.5 mg/kg over 40 min average about 185 ng/mL (e.g. Zarate 2012);
  // the Clements model predicts about 177 ng/mL at 70 kg.
  Scenario scenario = load_scenario_file(std::string(KETASIM_SOURCE_DIR) + "/scenarios/once_vs_twice_weekly.yaml");
  scenario.cohort.size = 400;
  RunOptions options;
  options.threads = 2;
  const RunReport report = run_scenario(scenario, options);
  REQUIRE(report.arms.size() == 2);
  for (const ArmReport& arm : report.arms) {
    INFO(arm.name);
    CHECK(arm.failed == 0);
    CHECK(std::abs(arm.cmax_ng_per_ml.p50 - 185.0) / 185.0 < 0.10);
    // Weekly exposure doubles with the second weekly infusion.
  }
  CHECK(report.arms[1].weekly_auc_ng_h_per_ml.p50 ==
        Approx(2.0 * report.arms[0].weekly_auc_ng_h_per_ml.p50).epsilon(0.02));
  CHECK(report.arms[1].doses == 2 * report.arms[0].doses);
}

TEST_CASE("a subject that cannot be solved is recorded and the run goes on", "[run]") {
  // ke0 set to the slow disposition rate of the 70-kg Clements model makes the effect compartment
  // resonate with it: the eigenvectors are degenerate and exact stepping is refused.
  const ModelCard& card = *find_builtin_model("ketamine_clements_2cmt");
  const auto value = [&](const char* name) {
    return card.parameters[static_cast<std::size_t>(card.index_of(name))].value;
  };
  const double k10 = value("k10"), k12 = value("k12"), k21 = value("k21");
  const double sum = k10 + k12 + k21;
  const double beta = 0.5 * (sum - std::sqrt(sum * sum - 4.0 * k10 * k21));
  const auto degenerate = [beta](const char* method) {
    char text[1024];
    std::snprintf(text, sizeof text, R"(
name: degenerate
model:
  name: ketamine_clements_2cmt
  parameters: {ke0: %.17g 1/h}
cohort: {size: 5, seed: 1, weight: 70 kg}
arms:
  - name: single
    regimen: {route: iv_infusion, dose: 35 mg, infusion_duration: 40 min, schedule: {at: [1 h]}}
output:
  grid: {every: 30 min, for: 1 d}
solver:
  method: %s
)",
                  beta, method);
    return parse_scenario(text, "degenerate.yaml");
  };
  const fs::path output = temporary_file("failed.h5");
  {
    const RunReport report = run_to(degenerate("exact"), output, 1, 64);
    CHECK(report.arms[0].failed == 5);
    H5::H5File h5(output.string(), H5F_ACC_RDONLY);
    std::vector<std::int8_t> status(5);
    h5.openDataSet("/arms/single/metrics/status").read(status.data(), H5::PredType::NATIVE_INT8);
    CHECK(status == std::vector<std::int8_t>(5, 1));
    std::vector<float> plasma(5 * 49);
    h5.openDataSet("/arms/single/trajectories/plasma_ketamine_ng_per_ml")
        .read(plasma.data(), H5::PredType::NATIVE_FLOAT);
    CHECK(std::isnan(plasma[10]));
  }
  const Scenario fallback = degenerate("auto");
  const RunReport report = run_to(fallback, output, 1, 64);
  CHECK(report.arms[0].failed == 0);
  CHECK(report.arms[0].ode_fallbacks == 5);
  CHECK(report.arms[0].cmax_ng_per_ml.p50 > 100.0);
  fs::remove(output);
}

TEST_CASE("an unwritable output path fails before simulating and creates nothing", "[run]") {
  const Scenario scenario = parse_scenario(kTwoArmScenario, "run_test.yaml");
  const fs::path missing_dir = temporary_file("no_such_dir") / "results.h5";
  CHECK_THROWS_AS(run_to(scenario, missing_dir, 1, 64), IoError);
  CHECK_FALSE(fs::exists(missing_dir.parent_path()));
}

TEST_CASE("a cancelled run throws InterruptedError and leaves no file, temporary or final", "[run]") {
  const Scenario scenario = parse_scenario(kTwoArmScenario, "run_test.yaml");
  const fs::path folder = temporary_file("cancel");
  fs::create_directories(folder);
  std::atomic<bool> cancel{false};
  std::int64_t progress_calls = 0;
  RunOptions options;
  options.output_path = (folder / "results.h5").string();
  options.threads = 2;
  options.block_size = 10;
  options.cancel = &cancel;
  options.on_progress = [&](const Progress&) {
    if (++progress_calls == 3) cancel = true;  // part-way through the 15 blocks
  };
  CHECK_THROWS_AS(run_scenario(scenario, options), InterruptedError);
  CHECK(progress_calls == 3);
  CHECK(fs::is_empty(folder));
  fs::remove_all(folder);
}

TEST_CASE("output.metrics and an empty variable list select what is written", "[run]") {
  const Scenario scenario = parse_scenario(R"(
name: metrics_only
model: {name: ketamine_clements_2cmt}
cohort: {size: 20, seed: 3, weight: 70 kg}
arms:
  - name: weekly
    regimen: {route: iv_infusion, dose: 35 mg, infusion_duration: 40 min, schedule: [Mon 09:00], count: 2}
output:
  grid: {every: 15 min, for: 14 d}
  variables: []
  metrics: [cmax, time_above_dissociation]
)",
                                           "metrics_only.yaml");
  const fs::path output = temporary_file("metrics_only.h5");
  const RunReport report = run_to(scenario, output, 2, 64);
  CHECK(report.arms[0].cmax_ng_per_ml.p50 > 100.0);
  CHECK(std::isnan(report.arms[0].weekly_auc_ng_h_per_ml.p50));  // AUC was not selected
  H5::H5File h5(output.string(), H5F_ACC_RDONLY);
  H5::Group metrics = h5.openGroup("/arms/weekly/metrics");
  std::vector<std::string> names;
  for (hsize_t i = 0; i < metrics.getNumObjs(); ++i) names.push_back(metrics.getObjnameByIdx(i));
  std::sort(names.begin(), names.end());
  CHECK(names == std::vector<std::string>{"cmax_ng_per_ml", "message", "solver_path", "status",
                                          "time_above_dissociation_h", "tmax_h"});
  CHECK_FALSE(h5.exists("/arms/weekly/trajectories/plasma_ketamine_ng_per_ml"));
  fs::remove(output);
}

TEST_CASE("metrics are typed: found by id and link role, and the report reads the dissociation link's peak", "[run]") {
  const Scenario scenario = parse_scenario(kTwoArmScenario, "run_test.yaml");
  const std::vector<ArmLayout> layouts = arm_layouts(scenario);
  const std::vector<MetricColumn>& metrics = layouts[0].metrics;
  const auto column = [&](MetricId id, LinkRole role = LinkRole::none) {
    const std::optional<std::size_t> found = find_metric(metrics, id, role);
    REQUIRE(found);
    return metrics[*found];
  };
  CHECK(column(MetricId::cmax).name == "cmax_ng_per_ml");
  CHECK(column(MetricId::solver_path).name == "solver_path");
  // The card's dissociation link (role: dissociation), its systolic blood pressure link (role:
  // systolic_blood_pressure) and its diastolic one (no role) all have a per-dose peak; the role,
  // not the name, tells them apart.
  CHECK(column(MetricId::peak_link, LinkRole::dissociation).name == "peak_dissociation");
  CHECK(column(MetricId::peak_link, LinkRole::systolic_blood_pressure).name == "peak_sbp_change");
  CHECK(column(MetricId::peak_link).name == "peak_dbp_change");

  const fs::path output = temporary_file("typed.h5");
  const RunReport report = run_to(scenario, output, 2, 64);
  H5::H5File h5(output.string(), H5F_ACC_RDONLY);
  const H5::DataSet peaks = h5.openDataSet("/arms/once_weekly/metrics/peak_dissociation");
  hsize_t shape[2] = {0, 0};
  peaks.getSpace().getSimpleExtentDims(shape);
  std::vector<double> values(static_cast<std::size_t>(shape[0] * shape[1]));
  peaks.read(values.data(), H5::PredType::NATIVE_DOUBLE);
  std::vector<double> first_dose;
  for (hsize_t row = 0; row < shape[0]; ++row) first_dose.push_back(values[static_cast<std::size_t>(row * shape[1])]);
  CHECK(report.arms[0].first_dose_peak_dissociation.p50 == quantile(first_dose, 0.5));
  CHECK(report.arms[0].first_dose_peak_dissociation.p95 == quantile(first_dose, 0.95));
  fs::remove(output);
}

TEST_CASE("parallel_for runs every index once and rethrows a task's exception", "[run]") {
  std::vector<std::atomic<int>> runs(1000);
  parallel_for(4, runs.size(), [&](unsigned thread, std::size_t index) {
    CHECK(thread < 4);
    ++runs[index];
  });
  CHECK(std::all_of(runs.begin(), runs.end(), [](const std::atomic<int>& count) { return count.load() == 1; }));
  CHECK_THROWS_WITH(parallel_for(3, 100,
                                 [](unsigned, std::size_t index) {
                                   if (index == 17) throw IoError("index 17");
                                 }),
                    Catch::Contains("index 17"));
}

TEST_CASE("rank_block_size gives each MPI rank about 8 blocks, in multiples of 64, within the default", "[run][mpi]") {
  CHECK(rank_block_size(4096, 20000, 2) == 1280);      // 20000 / 16 = 1250, rounded up to 64
  CHECK(rank_block_size(4096, 1'000'000, 2) == 4096);  // enough blocks already
  CHECK(rank_block_size(4096, 100, 4) == 64);          // never below one chunk row
  CHECK(rank_block_size(256, 1'000'000, 64) == 256);   // never above the default
  CHECK(rank_block_size(4096, 20000, 1) == 2560);      // 20000 / 8
}

// Rank r of R simulates the blocks b with b mod R = r into its journal and writes no file; the
// output written from the R journals has the datasets of the run done whole, bit for bit. A rank's
// journal missing blocks (the rank interrupted) or given as another rank's is refused, nothing
// written; the interrupted rank resumes from its journal.
TEST_CASE("MPI ranks: interleaved blocks into journals, the output written from them equals the whole run",
          "[run][mpi]") {
  const Scenario scenario = parse_scenario(kTwoArmScenario, "run_test.yaml");
  const fs::path folder = temporary_file("ranks");
  fs::create_directories(folder);
  const fs::path whole = folder / "whole.h5", out = folder / "out.h5";
  run_to(scenario, whole, 2, 16);
  constexpr std::int64_t kRanks = 3;
  std::vector<std::string> journals;
  const auto run_rank = [&](std::int64_t rank, RunOptions::Journal journal, const std::atomic<bool>* cancel) {
    const fs::path rank_file = folder / ("out.h5.rank-" + std::to_string(rank + 1) + ".h5");
    RunOptions options;
    options.output_path = rank_file.string();
    options.threads = 1;
    options.block_size = 16;  // 150 subjects: 10 blocks; rank 0 has 0, 3, 6, 9 (the last of 6 subjects)
    options.journal = journal;
    options.rank = RankBlocks{rank, kRanks};
    options.cancel = cancel;
    std::int64_t total = 0;
    options.on_progress = [&](const Progress& p) { total = p.subjects_total; };
    run_scenario(scenario, options);
    CHECK(total == (rank == 0 ? 16 * 3 + 6 : 16 * 3));  // its blocks' subjects
    CHECK_FALSE(fs::exists(rank_file));
    return journal_path_for(rank_file.string());
  };
  for (std::int64_t rank = 0; rank < 2; ++rank) journals.push_back(run_rank(rank, RunOptions::Journal::write, nullptr));
  // Rank 2 stopped after its first block: its journal keeps that one.
  const fs::path rank_3 = folder / "out.h5.rank-3.h5";
  {
    std::atomic<bool> cancel{false};
    RunOptions options;
    options.output_path = rank_3.string();
    options.threads = 1;
    options.block_size = 16;
    options.journal = RunOptions::Journal::write;
    options.rank = RankBlocks{2, kRanks};
    options.cancel = &cancel;
    options.on_progress = [&](const Progress& p) {
      if (p.subjects_done == 16) cancel = true;
    };
    CHECK_THROWS_AS(run_scenario(scenario, options), RunInterrupted);
  }
  journals.push_back(journal_path_for(rank_3.string()));
  RunOptions options;
  options.output_path = out.string();
  options.block_size = 16;
  options.rank_journals = journals;
  CHECK_THROWS_WITH(run_scenario(scenario, options), Catch::Contains("lack 2 of 10 blocks"));
  CHECK_FALSE(fs::exists(out));
  run_rank(2, RunOptions::Journal::resume, nullptr);
  options.rank_journals = {journals[1], journals[0], journals[2]};  // not in rank order
  CHECK_THROWS_WITH(run_scenario(scenario, options), Catch::Contains("not the journal of rank 0 of this run"));
  CHECK_FALSE(fs::exists(out));
  options.rank_journals = journals;
  options.rank_busy_seconds = {1.0, 2.0, 3.0};
  run_scenario(scenario, options);
  const auto layouts = arm_layouts(scenario);
  const auto a = numeric_datasets(whole, layouts);
  const auto b = numeric_datasets(out, layouts);
  REQUIRE(a.size() == b.size());
  for (std::size_t i = 0; i < a.size(); ++i) {
    INFO(a[i].first);
    const bool identical = a[i].second == b[i].second;
    CHECK(identical);
  }
  std::vector<std::string> left;  // the journals removed with the output complete, no temporary file
  for (const auto& entry : fs::directory_iterator(folder)) left.push_back(entry.path().filename().string());
  std::sort(left.begin(), left.end());
  CHECK(left == std::vector<std::string>{"out.h5", "whole.h5"});
  fs::remove_all(folder);
}
