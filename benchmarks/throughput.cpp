// Whole-run throughput of workload W1 (benchmarks/w1.yaml): subjects per second at 1 and 2
// threads, with the peak resident memory, in three configurations: metrics only (no
// trajectories), trajectories computed in memory (no file), and the whole run writing HDF5.
//
//   ketasim_throughput [--subjects N] [--scenario benchmarks/w1.yaml] [--output-dir /tmp]
//
// Prints one line per configuration; README quotes these lines.

#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "ketasim/base/threads.hpp"
#include "ketasim/base/version.hpp"
#include "ketasim/input/scenario_loader.hpp"
#include "ketasim/run/run.hpp"

namespace {
long peak_rss_mib() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_maxrss / 1024;
}
}  // namespace

int main(int argc, char** argv) {
  std::string scenario_path = KETASIM_W1_SCENARIO;
  std::string output_dir = std::filesystem::temp_directory_path().string();
  std::int64_t subjects = 0;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--subjects")
      subjects = std::atoll(argv[i + 1]);
    else if (flag == "--scenario")
      scenario_path = argv[i + 1];
    else if (flag == "--output-dir")
      output_dir = argv[i + 1];
    else {
      std::fprintf(stderr, "usage: %s [--subjects N] [--scenario FILE] [--output-dir DIR]\n", argv[0]);
      return 2;
    }
  }
  try {
    ketasim::Scenario scenario = ketasim::load_scenario_file(scenario_path);
    if (subjects > 0) scenario.cohort.size = subjects;
    std::printf("ketasim %s (%s), scenario %s, %lld subjects, %u threads usable (CPU affinity)\n", ketasim::kVersion,
                ketasim::kSourceRevision, scenario.name.c_str(), static_cast<long long>(scenario.cohort.size),
                ketasim::default_thread_count());
    const std::string output = output_dir + "/ketasim_throughput_" + std::to_string(getpid()) + ".h5";
    {
      // Warm-up: page in the code and the allocator before anything is timed.
      ketasim::Scenario warm_up = scenario;
      warm_up.cohort.size = std::min<std::int64_t>(scenario.cohort.size, 2000);
      ketasim::RunOptions options;
      (void)ketasim::run_scenario(warm_up, options);
    }
    constexpr int kRepeats = 3;
    enum class Mode { metrics_only, trajectories, write };
    ketasim::Scenario metrics_only = scenario;
    metrics_only.output.variables = std::vector<std::string>{};
    for (const Mode mode : {Mode::metrics_only, Mode::trajectories, Mode::write}) {
      const bool write = mode == Mode::write;
      for (const unsigned threads : {1u, 2u}) {
        std::vector<double> seconds;
        for (int repeat = 0; repeat < kRepeats; ++repeat) {
          ketasim::RunOptions options;
          options.threads = threads;
          options.output_path = write ? output : "";
          seconds.push_back(
              ketasim::run_scenario(mode == Mode::metrics_only ? metrics_only : scenario, options).elapsed_seconds);
        }
        std::sort(seconds.begin(), seconds.end());
        const double median = seconds[kRepeats / 2];
        const double subject_arms =
            static_cast<double>(scenario.cohort.size * static_cast<std::int64_t>(scenario.arms.size()));
        std::printf(
            "%-24s threads=%u  %8.0f subjects/s (median of %d; range %.0f-%.0f)  peak RSS so far %ld MiB%s\n",
            mode == Mode::metrics_only ? "metrics only"
            : write                    ? "run + HDF5 output"
                                       : "+ trajectories in memory",
            threads, subject_arms / median, kRepeats, subject_arms / seconds.back(), subject_arms / seconds.front(),
            peak_rss_mib(),
            write ? ("  file " + std::to_string(std::filesystem::file_size(output) >> 20) + " MiB").c_str() : "");
        std::fflush(stdout);
      }
    }
    std::filesystem::remove(output);
  } catch (const std::exception& error) {
    std::fprintf(stderr, "%s\n", error.what());
    return 1;
  }
  return 0;
}
