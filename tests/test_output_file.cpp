// Files ketasim writes (output_file.hpp): where an output may go, the temporary names (NAME_MAX,
// whose they are, which are stale), the atomic rename and the signal-time cleanup; the size a
// result file will take; the default thread count; the phases a run reports while it writes.

#include <sched.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <climits>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "ketasim/base/errors.hpp"
#include "ketasim/base/format.hpp"
#include "ketasim/base/threads.hpp"
#include "ketasim/input/scenario_loader.hpp"
#include "ketasim/output/hdf5_writer.hpp"
#include "ketasim/output/output_file.hpp"
#include "ketasim/run/run.hpp"

using namespace ketasim;
namespace fs = std::filesystem;

namespace {

class Folder {
 public:
  Folder() {
    static std::atomic<int> counter{0};
    path_ = fs::temp_directory_path() /
            ("ketasim-output-test-" + std::to_string(::getpid()) + "-" + std::to_string(counter++));
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~Folder() {
    std::error_code ignored;
    fs::remove_all(path_, ignored);
  }
  Folder(const Folder&) = delete;
  Folder& operator=(const Folder&) = delete;
  std::string operator/(const std::string& name) const { return (path_ / name).string(); }
  const fs::path& path() const { return path_; }
  std::vector<std::string> names() const {
    std::vector<std::string> names;
    for (const auto& entry : fs::directory_iterator(path_)) names.push_back(entry.path().filename().string());
    std::sort(names.begin(), names.end());
    return names;
  }

 private:
  fs::path path_;
};

void write_text(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

std::string read_text(const std::string& path) {
  std::ifstream stream(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(stream), std::istreambuf_iterator<char>()};
}

// The pid of a process that has exited and been reaped.
long dead_pid() {
  const pid_t child = ::fork();
  if (child == 0) ::_exit(0);
  int status = 0;
  ::waitpid(child, &status, 0);
  return child;
}

}  // namespace

TEST_CASE("temporary names fit NAME_MAX and keep whose they are", "[output]") {
  const std::string host = "node17.cluster.example.org";
  const std::string long_name(252, 'r');
  const std::string name = temporary_file_name(long_name, host, 123456, "ab12cd", 255);
  CHECK(name.size() == 255);
  CHECK(name.rfind(std::string(30, 'r'), 0) == 0);  // the start of the final name, for a person
  const auto owner = temporary_file_owner(name);
  REQUIRE(owner.has_value());
  CHECK(owner->host == host);
  CHECK(owner->pid == 123456);

  CHECK(temporary_file_name("results.h5", "vm", 42, "zzzzzz", 255) == "results.h5.ketasim-tmp.vm.42.zzzzzz");
  // A cut inside a UTF-8 character would leave an invalid name: the whole character goes.
  const std::string accented = std::string(200, 'a') + "\xc3\xa9" + std::string(60, 'b');  // 'é' at bytes 200-201
  const std::string suffix = ".ketasim-tmp.vm.42.zzzzzz";
  const std::string cut = temporary_file_name(accented, "vm", 42, "zzzzzz", 201 + suffix.size());
  CHECK(cut == std::string(200, 'a') + suffix);
}

TEST_CASE("only names made by temporary_file_name have an owner", "[output]") {
  CHECK_FALSE(temporary_file_owner("results.h5").has_value());
  CHECK_FALSE(temporary_file_owner("results.h5.tmp-1234").has_value());  // the names of ketasim 0.x
  CHECK_FALSE(temporary_file_owner("r.h5.ketasim-tmp.vm.12x.abcdef").has_value());
  CHECK_FALSE(temporary_file_owner("r.h5.ketasim-tmp.vm.12.abc").has_value());
  CHECK_FALSE(temporary_file_owner("r.h5.ketasim-tmp.12.abcdef").has_value());  // no host
}

TEST_CASE("check_output_path refuses what must not be replaced, before anything is written", "[output]") {
  const Folder folder;
  const auto refused = [](const std::string& path, const std::vector<std::string>& inputs = {}) {
    try {
      check_output_path(path, inputs);
    } catch (const Error& error) {
      return std::string(error.what());
    }
    return std::string();
  };

  CHECK_NOTHROW(check_output_path(folder / "new.h5"));
  write_text(folder / "old.h5", "old");
  CHECK_NOTHROW(check_output_path(folder / "old.h5"));

  CHECK_THROWS_MATCHES(check_output_path(""), Error,
                       Catch::Predicate<Error>([](const Error& e) { return e.code() == ExitCode::usage; }));
  fs::create_directory(folder / "directory");
  CHECK_THAT(refused(folder / "directory"), Catch::Contains("is a directory"));
  CHECK_THAT(refused(folder.path().string() + "/"), Catch::Contains("names a directory"));
  REQUIRE(::mkfifo((folder / "fifo").c_str(), 0644) == 0);
  CHECK_THAT(refused(folder / "fifo"), Catch::Contains("is a FIFO (named pipe), not a regular file"));
  fs::create_symlink("old.h5", folder / "link.h5");
  CHECK_THAT(refused(folder / "link.h5"), Catch::Contains("is a symbolic link to 'old.h5'"));
  fs::create_symlink("nowhere.h5", folder / "dangling.h5");
  CHECK_THAT(refused(folder / "dangling.h5"), Catch::Contains("is a symbolic link"));

  write_text(folder / "kept.h5", "kept");
  fs::permissions(folder / "kept.h5", fs::perms::owner_read | fs::perms::group_read, fs::perm_options::replace);
  CHECK_THAT(refused(folder / "kept.h5"), Catch::Contains("is read-only (mode 0440)") && Catch::Contains("chmod u+w"));

  write_text(folder / "scenario.yaml", "name: x\n");
  fs::create_hard_link(folder / "scenario.yaml", folder / "other_name.yaml");
  CHECK_THAT(refused(folder / "other_name.yaml", {folder / "scenario.yaml"}),
             Catch::Contains("is the same file as '" + (folder / "scenario.yaml") + "', an input of this command"));
  CHECK_NOTHROW(check_output_path(folder / "old.h5", {folder / "scenario.yaml"}));

  CHECK_THAT(refused(folder / "missing/r.h5"), Catch::Contains("does not exist"));
  CHECK_THAT(refused(folder / std::string(256, 'n')), Catch::Contains("its file name is 256 bytes long"));
  CHECK_NOTHROW(check_output_path(folder / std::string(255, 'n')));
  CHECK(read_text(folder / "kept.h5") == "kept");
}

TEST_CASE("AtomicOutputFile: the temporary file is renamed into place by commit, removed otherwise", "[output]") {
  const Folder folder;
  write_text(folder / "result.txt", "old");
  {
    AtomicOutputFile output(folder / "result.txt");
    CHECK(fs::path(output.temporary_path()).parent_path() == folder.path());
    write_text(output.temporary_path(), "half");
  }  // not committed
  CHECK(folder.names() == std::vector<std::string>{"result.txt"});
  CHECK(read_text(folder / "result.txt") == "old");

  write_file_atomically(folder / "result.txt", "new");
  CHECK(folder.names() == std::vector<std::string>{"result.txt"});
  CHECK(read_text(folder / "result.txt") == "new");

  const std::string long_name(252, 'x');  // its temporary name must be cut to fit
  write_file_atomically(folder / long_name, "long");
  CHECK(read_text(folder / long_name) == "long");
}

TEST_CASE("remove_registered_temporaries removes the temporaries still open, and only those", "[output]") {
  const Folder folder;
  std::string committed_temporary;
  {
    AtomicOutputFile done(folder / "done.txt");
    write_text(done.temporary_path(), "done");
    done.commit();
    committed_temporary = done.temporary_path();
  }
  AtomicOutputFile open(folder / "open.txt");
  write_text(open.temporary_path(), "half");
  write_text(committed_temporary, "someone else's file under a name that was ours");
  remove_registered_temporaries();
  CHECK_FALSE(fs::exists(open.temporary_path()));
  CHECK(fs::exists(committed_temporary));
  CHECK(read_text(folder / "done.txt") == "done");
}

TEST_CASE("stale_temporaries lists the temporaries of dead processes of this host only", "[output]") {
  const Folder folder;
  std::string host;
  {
    const AtomicOutputFile probe(folder / "probe.h5");  // the host as the names spell it
    host = temporary_file_owner(fs::path(probe.temporary_path()).filename().string())->host;
  }
  const long dead = dead_pid();
  write_text(folder / temporary_file_name("killed.h5", host, dead, "aaaaaa", 255), "left by kill -9");
  write_text(folder / temporary_file_name("live.h5", host, ::getppid(), "bbbbbb", 255), "being written");
  write_text(folder / temporary_file_name("other.h5", host + "-elsewhere", dead, "cccccc", 255), "another node's");
  write_text(folder / "killed.h5.tmp-99999", "not ours to judge");
  const std::vector<StaleTemporary> stale = stale_temporaries(folder.path().string());
  REQUIRE(stale.size() == 1);
  CHECK(fs::path(stale[0].path).filename() == temporary_file_name("killed.h5", host, dead, "aaaaaa", 255));
  CHECK(stale[0].pid == dead);
  CHECK(stale[0].bytes == std::string("left by kill -9").size());
}

TEST_CASE("free space and byte counts are reported in the units people read", "[output]") {
  CHECK(format_bytes(12) == "12 B");
  CHECK(format_bytes(340'000) == "340 kB");
  CHECK(format_bytes(1'070'000'000) == "1.07 GB");
  CHECK(format_bytes(999'999) == "1 MB");
  const Folder folder;
  const auto free = free_space_for(folder / "r.h5");
  REQUIRE(free.has_value());
  CHECK(*free > 0);
}

TEST_CASE("the size estimate bounds what the writer stores, from the layout alone", "[output]") {
  const Folder folder;
  ArmLayout arm;
  arm.name = "arm";
  for (int t = 0; t < 300; ++t) arm.time_h.push_back(t);
  arm.trajectories = {{"noise", "", 1, ""}};
  arm.metrics = {{"m", "", 3, ""}};
  arm.subject_columns = {{"w", "kg", 1, ""}};
  const std::int64_t subjects = 1000;  // not a multiple of the 64-subject chunks: the last is padded
  RunInfo info;
  info.subjects_per_arm = subjects;
  const ResultSizeEstimate estimate = estimate_result_size({arm}, subjects);
  CHECK(estimate.least_bytes < estimate.expected_bytes);
  CHECK(estimate.expected_bytes < estimate.upper_bound_bytes);
  CHECK(estimate.without_trajectories_bytes < estimate.least_bytes);
  const double trajectory_bytes = 1000.0 * 300 * 4;
  CHECK(estimate.upper_bound_bytes - estimate.without_trajectories_bytes >=
        static_cast<std::uintmax_t>(trajectory_bytes));

  // Random bits do not compress: the file is above the expected size and below the upper bound.
  // (Some bit patterns are NaN; the summaries leave them out.)
  ResultWriter writer(folder / "noise.h5", info, {arm}, subjects);
  SubjectBlock block;
  block.count = subjects;
  std::uint32_t state = 12345;
  block.trajectories.emplace_back();
  for (int i = 0; i < 1000 * 300; ++i) {
    state = state * 1664525U + 1013904223U;
    float value = 0.0f;
    std::memcpy(&value, &state, sizeof value);
    block.trajectories[0].push_back(value);
  }
  block.metrics = {std::vector<double>(3000, 1.0)};
  block.subject_columns = {std::vector<double>(1000, 70.0)};
  block.status.assign(1000, 0);
  block.message.assign(1000, "");
  writer.write(block);
  writer.finish();
  const auto stored = fs::file_size(folder / "noise.h5");
  CHECK(stored > estimate.expected_bytes);
  CHECK(stored <= estimate.upper_bound_bytes);
}

TEST_CASE("the default thread count is the CPUs the affinity mask allows", "[output]") {
  cpu_set_t original;
  REQUIRE(sched_getaffinity(0, sizeof original, &original) == 0);
  CHECK(default_thread_count() == static_cast<unsigned>(CPU_COUNT(&original)));
  int first = 0;
  while (!CPU_ISSET(first, &original)) ++first;
  cpu_set_t one;
  CPU_ZERO(&one);
  CPU_SET(first, &one);
  REQUIRE(sched_setaffinity(0, sizeof one, &one) == 0);  // as `taskset -c N` does
  CHECK(default_thread_count() == 1);
  CHECK(thread_count(0) == 1);
  CHECK(thread_count(3) == 3);
  REQUIRE(sched_setaffinity(0, sizeof original, &original) == 0);
}

TEST_CASE("SLURM_CPUS_PER_TASK caps the default thread count, and a value that is not a count is an error",
          "[output]") {
  CHECK_FALSE(slurm_cpus_per_task(nullptr));
  CHECK_FALSE(slurm_cpus_per_task(""));
  CHECK(slurm_cpus_per_task("1") == 1U);
  CHECK(slurm_cpus_per_task("16") == 16U);
  for (const char* wrong : {"0", "-1", "2x", " 2", "1.5", "abc", "99999999999"}) {
    INFO(wrong);
    try {
      slurm_cpus_per_task(wrong);
      FAIL("accepted");
    } catch (const Error& error) {
      CHECK(error.code() == ExitCode::usage);
      CHECK_THAT(error.what(), Catch::Contains("SLURM_CPUS_PER_TASK is '" + std::string(wrong) + "'"));
    }
  }
  const unsigned cpus = default_thread_count();
  REQUIRE(::setenv("SLURM_CPUS_PER_TASK", "1", 1) == 0);
  CHECK(default_thread_count() == 1);
  CHECK(thread_count(0) == 1);
  CHECK(thread_count(2) == 2);  // --threads wins
  REQUIRE(::setenv("SLURM_CPUS_PER_TASK", "4096", 1) == 0);
  CHECK(default_thread_count() == cpus);  // a cap, never more than the mask allows
  REQUIRE(::unsetenv("SLURM_CPUS_PER_TASK") == 0);
  CHECK(default_thread_count() == cpus);
}

namespace {

const char* kSmallScenario = R"(
name: phases
model: {name: ketamine_clements_2cmt}
cohort: {size: 130, seed: 5, weight: 70 kg}
arms:
  - name: a
    regimen: {route: iv_infusion, dose: 0.5 mg/kg, infusion_duration: 40 min, schedule: [Mon 09:00], for: 1 week}
  - name: b
    regimen: {route: iv_infusion, dose: 0.5 mg/kg, infusion_duration: 40 min, schedule: [Mon 09:00, Thu 09:00], for: 1 week}
output:
  grid: {every: 10 min, for: 1 week}
)";

}  // namespace

TEST_CASE("a run reports simulating, then the summaries of each variable, the rename, the report", "[output][run]") {
  const Scenario scenario = parse_scenario(kSmallScenario, "phases.yaml");
  const Folder folder;
  std::vector<Progress> seen;
  RunOptions options;
  options.output_path = folder / "r.h5";
  options.threads = 2;
  options.block_size = 64;
  options.on_progress = [&](const Progress& p) { seen.push_back(p); };
  run_scenario(scenario, options);
  REQUIRE(seen.size() >= 4);
  CHECK(seen.front().phase == Progress::Phase::simulating);
  CHECK(seen.front().arms == 2);
  const std::size_t variables = 2 * arm_layouts(scenario).front().trajectories.size();
  std::size_t last_done = 0;
  bool summaries_seen = false;
  for (std::size_t i = 1; i < seen.size(); ++i) {
    CHECK(static_cast<int>(seen[i].phase) >= static_cast<int>(seen[i - 1].phase));  // phases only move forward
    if (seen[i].phase != Progress::Phase::summaries) continue;
    summaries_seen = true;
    CHECK(seen[i].subjects_done == 130);
    CHECK(seen[i].summaries_total == variables);
    CHECK(seen[i].summaries_done >= last_done);
    CHECK(seen[i].summaries_done < variables);
    last_done = seen[i].summaries_done;
  }
  CHECK(summaries_seen);
  CHECK(last_done == variables - 1);
  // The rename, then the end-of-run statistics over the 130 subjects: the last thing a run does.
  REQUIRE(seen.size() >= 2);
  CHECK(seen[seen.size() - 2].phase == Progress::Phase::closing);
  CHECK(seen[seen.size() - 2].summaries_done == variables);
  CHECK(seen.back().phase == Progress::Phase::report);
  CHECK(seen.back().subjects_done == 130);
}

TEST_CASE("a run cancelled during the summaries writes nothing", "[output][run]") {
  const Scenario scenario = parse_scenario(kSmallScenario, "phases.yaml");
  const Folder folder;
  std::atomic<bool> cancel{false};
  RunOptions options;
  options.output_path = folder / "r.h5";
  options.threads = 1;
  options.cancel = &cancel;
  options.on_progress = [&](const Progress& p) {
    if (p.phase == Progress::Phase::summaries && p.summaries_done == 1) cancel = true;
  };
  CHECK_THROWS_AS(run_scenario(scenario, options), InterruptedError);
  CHECK(folder.names().empty());
}

TEST_CASE("a run refuses an output that is its scenario or a file it reads, before simulating", "[output][run]") {
  const Folder folder;
  write_text(folder / "phases.yaml", kSmallScenario);
  const Scenario scenario = load_scenario_file(folder / "phases.yaml");
  bool simulated = false;
  RunOptions options;
  options.output_path = folder / "phases.yaml";
  options.on_progress = [&](const Progress&) { simulated = true; };
  CHECK_THROWS_WITH(run_scenario(scenario, options), Catch::Contains("an input of this command"));
  CHECK_FALSE(simulated);
  CHECK(read_text(folder / "phases.yaml") == kSmallScenario);
}
