// ketasim: the command-line front end. Thin by design: parse arguments, call the engine, print.

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

#include "command_line.hpp"
#include "ketasim/analysis/calibration.hpp"
#include "ketasim/analysis/compare.hpp"
#include "ketasim/analysis/reproduction.hpp"
#include "ketasim/base/errors.hpp"
#include "ketasim/base/format.hpp"
#include "ketasim/base/input_file.hpp"
#include "ketasim/base/version.hpp"
#include "ketasim/base/yaml_reader.hpp"
#include "ketasim/input/scenario_loader.hpp"
#include "ketasim/model/blocks.hpp"
#include "ketasim/model/model.hpp"
#include "ketasim/model/model_card.hpp"
#include "ketasim/output/journal.hpp"
#include "ketasim/output/merge.hpp"
#include "ketasim/output/nonmem_export.hpp"
#include "ketasim/output/output_file.hpp"
#include "ketasim/run/cohort.hpp"
#include "ketasim/run/run.hpp"
#include "ketasim/solve/timeline.hpp"
#include "mpi_job.hpp"

namespace {

using namespace ketasim;
using ketasim::cli::MpiJob;
using ketasim::cli::RankCount;
using ketasim::cli::RankProgress;

// Ctrl-C, SIGTERM (Slurm's time limit, `timeout`), SIGHUP (the terminal closed) or SIGQUIT during
// `run` asks the run to stop cleanly: it stops at its next check, removes its temporary file and
// exits with 128 + the signal's number (SIGTERM: 143), its journal kept for `--resume`. A second
// signal, or any signal during another command, removes the temporary files at once and exits with
// 130: `timeout` and `kill -- -PGID` signal a process twice (itself and its group), and a second
// Ctrl-C must not leave gigabytes behind either.
std::atomic<bool> g_interrupted{false};
std::atomic<bool> g_run_polls_interruption{false};
std::atomic<int> g_stop_signal{0};  // the signal that stopped the run
static_assert(std::atomic<bool>::is_always_lock_free, "used from a signal handler");
static_assert(std::atomic<int>::is_always_lock_free, "used from a signal handler");

extern "C" void on_stop_signal(int signal_number) {
  if (g_run_polls_interruption.load() && !g_interrupted.load()) {
    g_stop_signal.store(signal_number);
    if (!g_interrupted.exchange(true)) return;
  }
  remove_registered_temporaries();  // async-signal-safe, as is _exit
  _exit(static_cast<int>(ExitCode::interrupted));
}

void install_stop_signal_handlers() {
  struct sigaction action {};
  action.sa_handler = on_stop_signal;
  action.sa_flags =
      SA_RESTART;  // the run goes on after the first signal: its reads and writes must not fail with EINTR
  sigemptyset(&action.sa_mask);
  for (const int signal_number : {SIGINT, SIGTERM, SIGHUP, SIGQUIT}) sigaction(signal_number, &action, nullptr);
}

std::string plural(std::int64_t count, const std::string& singular, const std::string& plural_form = "") {
  return std::to_string(count) + " " + (count == 1 ? singular : plural_form.empty() ? singular + "s" : plural_form);
}

std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  const auto total = static_cast<long long>(std::llround(seconds));
  char text[32];
  std::snprintf(text, sizeof text, "%lld:%02lld:%02lld", total / 3600, (total / 60) % 60, total % 60);
  return text;
}

std::string format_quantiles(const Quantiles& q, int decimals) {
  char text[96];
  std::snprintf(text, sizeof text, "%.*f [%.*f-%.*f]", decimals, q.p50, decimals, q.p05, decimals, q.p95);
  return text;
}

// `run_line`, when given, replaces the line that says how the run went (a run on MPI ranks).
void print_summary(const RunReport& report, const Scenario& scenario, const std::string& output,
                   const std::optional<Shard>& shard, const std::string& run_line = "") {
  std::string subjects = plural(report.subjects_per_arm, "subject") + " per arm";
  if (shard) {
    subjects = "shard " + std::to_string(shard->index) + "/" + std::to_string(shard->count) + ": subjects " +
               std::to_string(report.subjects.first) + "-" +
               std::to_string(report.subjects.first + report.subjects.count - 1) + " of " + subjects;
  }
  const std::int64_t simulated = report.subjects.count - report.subjects_resumed;
  if (!run_line.empty()) {
    std::printf("\n%s\n", run_line.c_str());
  } else {
    std::printf("\n%s: %s, %s, %.1f s on %s (%.0f subject-arms/s)\n", scenario.name.c_str(), subjects.c_str(),
                plural(static_cast<std::int64_t>(report.arms.size()), "arm").c_str(), report.elapsed_seconds,
                plural(report.threads, "thread").c_str(),
                static_cast<double>(simulated * static_cast<std::int64_t>(report.arms.size())) /
                    std::max(report.elapsed_seconds, 1e-9));
  }
  if (report.subjects_resumed > 0) {
    std::printf("(resumed: %lld subjects of every arm read back from the journal, %lld simulated now)\n",
                static_cast<long long>(report.subjects_resumed), static_cast<long long>(simulated));
  }
  if (shard) std::printf("(the figures below are of this shard's subjects; `ketasim merge` makes the whole file)\n");
  // The arm column is as wide as the longest arm name (at least 18).
  int name_width = 18;
  for (const ArmReport& arm : report.arms) name_width = std::max(name_width, static_cast<int>(arm.name.size()));
  std::printf("median [5th-95th percentile] over subjects\n");
  std::printf("%-*s %-14s %-24s %-24s %-22s %-24s\n", name_width, "arm", "sessions", "Cmax (ng/mL)",
              "AUC per week (ng*h/mL)", "dose-1 dissociation", "h/week dissociation>=thr");
  for (const ArmReport& arm : report.arms) {
    std::printf("%-*s %-14s %-24s %-24s %-22s %-24s\n", name_width, arm.name.c_str(),
                format_quantiles(arm.sessions_given, 0).c_str(), format_quantiles(arm.cmax_ng_per_ml, 0).c_str(),
                format_quantiles(arm.weekly_auc_ng_h_per_ml, 0).c_str(),
                format_quantiles(arm.first_dose_peak_dissociation, 1).c_str(),
                format_quantiles(arm.dissociation_hours_per_week, 2).c_str());
  }
  std::printf("dissociation threshold: %g score points\n", scenario.output.dissociation_threshold);
  if (!report.arms.empty() && !report.arms.front().assessment_h.empty()) {
    const std::vector<double>& times = report.arms.front().assessment_h;
    std::printf(
        "\nMADRS after the first session: median change from baseline | %% in response | %% in remission (observed)\n");
    std::printf("%-*s", name_width, "arm");
    for (const double t : times) std::printf(" %17s", format_duration_h(t).c_str());
    std::printf("\n");
    for (const ArmReport& arm : report.arms) {
      std::printf("%-*s", name_width, arm.name.c_str());
      for (std::size_t k = 0; k < times.size(); ++k) {
        char cell[48];
        std::snprintf(cell, sizeof cell, "%.1f|%.0f%%|%.0f%%", arm.madrs_change_median[k],
                      100.0 * arm.response_fraction[k], 100.0 * arm.remission_fraction[k]);
        std::printf(" %17s", cell);
      }
      std::printf("\n");
    }
  }
  for (const ArmReport& arm : report.arms) {
    if (arm.failed > 0)
      std::printf("warning: arm %s: %lld subjects failed to solve (metrics/status and metrics/message in the file)\n",
                  arm.name.c_str(), static_cast<long long>(arm.failed));
    if (arm.ode_fallbacks > 0)
      std::printf("note: arm %s: %lld subjects were solved by the ODE path (exact stepping not possible)\n",
                  arm.name.c_str(), static_cast<long long>(arm.ode_fallbacks));
  }
  if (!output.empty()) std::printf("%s: %s\n", shard ? "shard file" : "results", output.c_str());
}

// The progress of a run on a terminal: one line rewritten in place, ended when the run ends (also
// when it fails, so that the error starts a line of its own).
class ProgressLine {
 public:
  ProgressLine() = default;
  ProgressLine(const ProgressLine&) = delete;
  ProgressLine& operator=(const ProgressLine&) = delete;
  ~ProgressLine() { end(); }

  void end() {
    if (open_) std::fputc('\n', stderr);
    open_ = false;
  }

  void show(const Progress& p) {
    char text[160];
    if (p.phase == Progress::Phase::journals) {
      const std::string what = p.journals > 1
                                   ? "merging " + plural(static_cast<std::int64_t>(p.journals), "rank journal")
                                   : std::string("reading back the journal");
      std::snprintf(text, sizeof text, "%s: %lld/%lld subjects", what.c_str(), static_cast<long long>(p.subjects_done),
                    static_cast<long long>(p.subjects_total));
    } else if (p.phase == Progress::Phase::report) {
      std::snprintf(text, sizeof text, "summarising %s x %s: the end-of-run statistics",
                    plural(p.subjects_total, "subject").c_str(),
                    plural(static_cast<std::int64_t>(p.arms), "arm").c_str());
    } else if (p.phase == Progress::Phase::simulating) {
      // The rate of the simulation: subjects read back from a journal took no simulating.
      const double subject_arms =
          static_cast<double>(p.subjects_done - p.subjects_resumed) * static_cast<double>(p.arms);
      const double rate = subject_arms / std::max(p.elapsed_seconds, 1e-9);
      const double left = subject_arms > 0 ? static_cast<double>(p.subjects_total - p.subjects_done) *
                                                 static_cast<double>(p.arms) / rate
                                           : std::nan("");
      std::snprintf(text, sizeof text, "simulating: %lld/%lld subjects  %.0f subject-arms/s  %s left",
                    static_cast<long long>(p.subjects_done), static_cast<long long>(p.subjects_total), rate,
                    format_duration(left).c_str());
    } else {
      show_finish({p.summaries_done, p.summaries_total}, p.subjects_total);
      return;
    }
    std::fprintf(stderr, "\r%-78s", text);
    open_ = true;
  }

  // `what`: "2 rank files", "3 shard files"; `subjects_per_arm`: 0 when not known.
  void show(const MergeProgress& p, const std::string& what, std::int64_t subjects_per_arm = 0) {
    if (p.copied) return show_finish(p.finish, subjects_per_arm);
    char text[160];
    std::snprintf(text, sizeof text, "merging %s: %lld/%lld subject-arms copied", what.c_str(),
                  static_cast<long long>(p.subject_arms_done), static_cast<long long>(p.subject_arms_total));
    std::fprintf(stderr, "\r%-78s", text);
    open_ = true;
  }

  // The summary pass and the rename, which `run` and `merge` share; `subjects`: 0 when not known.
  void show_finish(const FinishProgress& p, std::int64_t subjects) {
    char text[160];
    if (p.summaries_done < p.summaries_total) {
      std::snprintf(text, sizeof text, "summaries: %zu/%zu variables (per-time quantiles over %s)", p.summaries_done,
                    p.summaries_total, subjects > 0 ? plural(subjects, "subject").c_str() : "the subjects");
    } else {
      std::snprintf(text, sizeof text, "renaming: flushing the file to disk and renaming it into place");
    }
    std::fprintf(stderr, "\r%-78s", text);
    open_ = true;
  }

 private:
  bool open_ = false;
};

// A run that writes a lot says so before it starts (and warns when the disk may be too small;
// when it certainly is, run_scenario refuses the run with the whole story).
void print_output_space(const Scenario& scenario, const std::string& output, bool quiet,
                        const std::optional<Shard>& shard) {
  constexpr std::uintmax_t kLargeOutputBytes = 100'000'000;
  const OutputSpace space = output_space(scenario, output, shard);
  if (space.certainly_too_small()) return;
  if (space.maybe_too_small()) {
    std::fprintf(stderr,
                 "warning: %s may not fit: %s; if the disk fills up, the run fails at the end and writes nothing "
                 "(`variables: []` under `output:` writes the metrics only: %s)\n",
                 output.c_str(), describe_output_space(space, output).c_str(),
                 format_bytes(space.size.without_trajectories_bytes).c_str());
  } else if (!quiet && space.size.expected_bytes > kLargeOutputBytes) {
    std::fprintf(stderr, "output %s: %s\n", output.c_str(), describe_output_space(space, output).c_str());
  }
}

std::string directory_of(const std::string& path) {
  const std::string parent = std::filesystem::path(path).parent_path().string();
  return parent.empty() ? "." : parent;
}

// kill -9, a crash or a power cut leave a run's temporary file behind; the next run into the same
// directory points them out (removing them is `ketasim clean`'s job: docs/cli.md says why).
void note_stale_temporaries(const std::string& output) {
  const std::string directory = directory_of(output);
  const std::vector<StaleTemporary> stale = stale_temporaries(directory);
  if (stale.empty()) return;
  std::uintmax_t bytes = 0;
  std::string names;
  for (std::size_t i = 0; i < stale.size(); ++i) {
    bytes += stale[i].bytes;
    if (i < 3) names += (names.empty() ? "" : ", ") + std::filesystem::path(stale[i].path).filename().string();
  }
  if (stale.size() > 3) names += ", ...";
  std::fprintf(stderr,
               "note: '%s' holds %s of ketasim runs on this host that were killed before they finished (%s): %s; "
               "`ketasim clean %s` removes them\n",
               directory.c_str(), plural(static_cast<std::int64_t>(stale.size()), "temporary file").c_str(),
               format_bytes(bytes).c_str(), names.c_str(), directory.c_str());
}

int command_clean(const std::string& directory) {
  std::error_code error;
  if (!std::filesystem::is_directory(directory, error)) throw IoError(directory + ": not a directory");
  const std::vector<StaleTemporary> stale = stale_temporaries(directory);
  if (stale.empty()) std::printf("%s: no temporary files of killed ketasim runs of this host\n", directory.c_str());
  for (const StaleTemporary& file : stale) {
    if (::unlink(file.path.c_str()) != 0) throw IoError(file.path + ": cannot remove: " + std::strerror(errno));
    std::printf("removed %s (%s, left by process %ld)\n", file.path.c_str(), format_bytes(file.bytes).c_str(),
                file.pid);
  }
  return 0;
}

struct RunArguments {
  std::string scenario_path;
  std::string output = "results.h5";
  unsigned threads = 0;
  std::int64_t subjects = 0;
  std::string shard;            // INDEX/COUNT, or "" for the whole run
  std::int64_t block_size = 0;  // 0: the run's default
  bool resume = false;
  bool no_journal = false;
  bool quiet = false;
  bool progress = false;       // --progress: the progress line also when stderr is not a terminal
  std::string command_line;    // as typed, each word quoted for a shell if it needs it
  std::string launch_command;  // an MPI rank's launcher ("mpirun -n 4"), before command_line to resume
  bool summary = true;         // false: the progress only (the shard of an MPI rank, quiet or not)
  // The shard of an MPI rank: what its progress adds to the job's (rank 0: the job's progress to
  // show, summed over the ranks; the other ranks publish theirs and show nothing), and the line,
  // which the rank keeps open after its shard while it waits for the others.
  std::function<Progress(const Progress&)> job_progress;
  ProgressLine* progress_line = nullptr;
  std::optional<RankBlocks> rank;  // the blocks of this MPI rank only, into its journal (RunOptions::rank)
};

// Whether a command shows its progress line: on a terminal, or when asked (`--progress`: under
// mpirun, whose ranks write to pipes, or in a batch job's log).
bool shows_progress(bool quiet, bool forced) {
  return !quiet && (forced || isatty(STDERR_FILENO));
}

const char* signal_name(int signal_number) {
  switch (signal_number) {
    case SIGINT:
      return "SIGINT";
    case SIGTERM:
      return "SIGTERM";
    case SIGHUP:
      return "SIGHUP";
    case SIGQUIT:
      return "SIGQUIT";
    default:
      return "a signal";
  }
}

// 128 + the signal that stopped the run, as shells report a process a signal ended (SIGTERM: 143).
int stopped_exit_code() {
  const int signal_number = g_stop_signal.load();
  return signal_number > 0 ? 128 + signal_number : static_cast<int>(ExitCode::interrupted);
}

// The command that continues a run that was stopped: its command line with --resume, after its MPI
// launcher (`mpirun -n 4 ketasim run ... --resume`: the ranks resume together, each its own shard).
std::string resume_command(const RunArguments& arguments) {
  const std::string& line = arguments.command_line;
  const bool has_resume = (" " + line + " ").find(" --resume ") != std::string::npos;
  const std::string command = has_resume ? line : line + " --resume";
  return arguments.launch_command.empty() ? command : arguments.launch_command + " " + command;
}

// Under Slurm the stopped run is a job, whose own command is what resumes it (SIGTERM comes before
// a time limit, which Slurm does not requeue; a pre-emption or node failure requeues a job
// submitted with --requeue, and its --resume then goes on by itself).
void print_slurm_resume_note() {
  if (std::getenv("SLURM_JOB_ID") == nullptr) return;
  std::fprintf(stderr,
               "ketasim: under Slurm: submit the job again with --resume in its command (tools/slurm's scripts "
               "have it); a job submitted with --requeue is requeued after a pre-emption or a node failure and "
               "resumes by itself\n");
}

int command_run(const RunArguments& arguments) {
  const std::string& output = arguments.output;
  const bool quiet = arguments.quiet;
  Scenario scenario = load_scenario_file(arguments.scenario_path);
  if (arguments.subjects > 0) scenario.cohort.set_subjects_per_replicate(arguments.subjects);
  const std::optional<Shard> shard =
      arguments.shard.empty() ? std::nullopt : parse_shard(arguments.shard);  // checked by the option
  // Whatever can refuse the run does so before anything is simulated (run_scenario checks again).
  check_output_path(output, scenario_input_files(scenario));
  note_stale_temporaries(output);
  if (!arguments.rank) print_output_space(scenario, output, quiet, shard);  // a rank writes its journal only
  RunOptions options;
  options.output_path = output;
  options.threads = arguments.threads;
  options.shard = shard;
  options.rank = arguments.rank;
  options.block_size = arguments.block_size;
  options.cancel = &g_interrupted;
  options.journal = arguments.resume       ? RunOptions::Journal::resume
                    : arguments.no_journal ? RunOptions::Journal::none
                                           : RunOptions::Journal::write;
  ProgressLine own_line;
  ProgressLine& progress_line = arguments.progress_line != nullptr ? *arguments.progress_line : own_line;
  options.on_note = [&progress_line](const std::string& text) {
    progress_line.end();
    std::fprintf(stderr, "ketasim: %s\n", text.c_str());
  };
  const bool show = shows_progress(quiet, arguments.progress);
  if (show || arguments.job_progress) {
    options.on_progress = [&progress_line, &arguments, show](const Progress& p) {
      const Progress shown = arguments.job_progress ? arguments.job_progress(p) : p;
      if (show) progress_line.show(shown);
    };
  }
  g_run_polls_interruption = true;
  RunReport report;
  try {
    report = run_scenario(scenario, options);
  } catch (const RunInterrupted& stopped) {
    progress_line.end();
    std::fprintf(stderr, "ketasim: stopped by %s after %lld of %lld blocks; %s keeps them; resume with: %s\n",
                 signal_name(g_stop_signal.load()), static_cast<long long>(stopped.blocks_done()),
                 static_cast<long long>(stopped.blocks_total()), stopped.journal_path().c_str(),
                 resume_command(arguments).c_str());
    print_slurm_resume_note();
    return stopped_exit_code();
  } catch (const InterruptedError& stopped) {
    progress_line.end();
    std::fprintf(stderr, "ketasim: error: %s\n", stopped.what());
    // Stopped outside the blocks (reading the journal back, the summary pass): a journal kept is
    // resumed from as after a stop between blocks.
    std::error_code ignored;
    if (std::filesystem::exists(journal_path_for(output), ignored)) {
      std::fprintf(stderr, "ketasim: %s keeps the finished blocks; resume with: %s\n", journal_path_for(output).c_str(),
                   resume_command(arguments).c_str());
      print_slurm_resume_note();
    }
    return stopped_exit_code();
  }
  g_run_polls_interruption = false;
  // An MPI rank's line stays open: rank 0 goes on showing the job's progress on it.
  if (arguments.progress_line == nullptr || g_interrupted) progress_line.end();
  if (g_interrupted)  // during the final flush and rename, where the run no longer checks
    std::fprintf(stderr, "note: the interruption came when %s was already complete: it is kept\n", output.c_str());
  if (!quiet && arguments.summary) print_summary(report, scenario, output, shard);
  for (const ArmReport& arm : report.arms)
    if (arm.subjects > 0 && arm.failed == arm.subjects) {
      std::fprintf(stderr, "error: every subject of arm %s failed to solve\n", arm.name.c_str());
      return static_cast<int>(ExitCode::solver);
    }
  return 0;
}

// The message and exit code of the exception being handled, as the command line reports it.
struct Failure {
  int exit_code = 0;
  std::string message;  // the line to print on stderr
};

Failure current_failure() {
  try {
    throw;
  } catch (const ScenarioError& error) {
    return {static_cast<int>(error.code()), error.what()};  // already "file:line:column: error: key: ..."
  } catch (const Error& error) {
    return {static_cast<int>(error.code()), std::string("ketasim: error: ") + error.what()};
  } catch (const std::exception& error) {
    return {static_cast<int>(ExitCode::internal), std::string("internal error: ") + error.what()};
  }
}

// The name of rank `rank` (from 0) of `ranks` beside the output: its journal is this name's
// (journal_path_for), and its writer's temporary file is made beside it.
std::string rank_path(const std::string& output, int rank, int ranks) {
  return output + ".rank-" + std::to_string(rank + 1) + "-of-" + std::to_string(ranks) + ".h5";
}

// The journals of the ranks, in rank order.
std::vector<std::string> rank_journals(const std::string& output, int ranks) {
  std::vector<std::string> journals;
  for (int r = 0; r < ranks; ++r) journals.push_back(journal_path_for(rank_path(output, r, ranks)));
  return journals;
}

// Whether a rank's journal is there: what a run with `--resume` goes on from.
bool any_rank_work_kept(const std::string& output, int ranks) {
  for (const std::string& journal : rank_journals(output, ranks)) {
    std::error_code ignored;
    if (std::filesystem::exists(journal, ignored)) return true;
  }
  return false;
}

// "ranks busy 45.0 s, 30.2 s (idle 17% of the ranks' time)": each rank's busy seconds, and the
// share of the ranks' time (R x the slowest rank's) spent waiting for the slowest.
std::string describe_rank_balance(const std::vector<double>& busy_seconds) {
  std::string text = "ranks busy";
  double slowest = 0.0, busy = 0.0;
  for (std::size_t r = 0; r < busy_seconds.size(); ++r) {
    char figure[32];
    std::snprintf(figure, sizeof figure, "%s %.1f s", r == 0 ? "" : ",", busy_seconds[r]);
    text += figure;
    slowest = std::max(slowest, busy_seconds[r]);
    busy += busy_seconds[r];
  }
  const double available = slowest * static_cast<double>(busy_seconds.size());
  char idle[64];
  std::snprintf(idle, sizeof idle, " (idle %.0f%% of the ranks' time)",
                available > 0 ? 100.0 * (1.0 - busy / available) : 0.0);
  return text + idle;
}

// What rank 0 of `mpirun -n R ketasim run` knows of the job once every rank is done.
struct RankJob {
  int ranks = 0;
  std::vector<double> busy_seconds;  // per rank
  double seconds = 0.0;              // since rank 0 started
};

// Rank 0, once every rank has journaled its blocks: writes the output from the ranks' journals
// (temporary name, rename) and removes them; on failure keeps them and says how to go on. The
// summary is the whole run's. The exit code.
int write_from_rank_journals(const RunArguments& arguments, const Scenario& scenario, const RankJob& job,
                             ProgressLine& progress_line) {
  try {
    RunOptions options;
    options.output_path = arguments.output;
    options.threads = arguments.threads;
    options.block_size = arguments.block_size;
    options.journal = RunOptions::Journal::none;
    options.rank_journals = rank_journals(arguments.output, job.ranks);
    options.rank_busy_seconds = job.busy_seconds;
    options.cancel = &g_interrupted;
    options.on_note = [&progress_line](const std::string& text) {
      progress_line.end();
      std::fprintf(stderr, "ketasim: %s\n", text.c_str());
    };
    if (shows_progress(arguments.quiet, arguments.progress))
      options.on_progress = [&progress_line](const Progress& p) { progress_line.show(p); };
    g_run_polls_interruption = true;
    const RunReport report = run_scenario(scenario, options);
    g_run_polls_interruption = false;
    progress_line.end();
    if (!arguments.quiet) {
      const double seconds = job.seconds + report.elapsed_seconds;
      char line[512];
      std::snprintf(line, sizeof line,
                    "%s: %s per arm, %s, %.1f s on %d MPI ranks x %s (%.0f subject-arms/s); %s; "
                    "the file written from their journals in %.1f s",
                    scenario.name.c_str(), plural(report.subjects_per_arm, "subject").c_str(),
                    plural(static_cast<std::int64_t>(report.arms.size()), "arm").c_str(), seconds, job.ranks,
                    plural(arguments.threads > 0 ? arguments.threads : report.threads, "thread").c_str(),
                    static_cast<double>(report.subjects.count * static_cast<std::int64_t>(report.arms.size())) /
                        std::max(seconds, 1e-9),
                    describe_rank_balance(job.busy_seconds).c_str(), report.elapsed_seconds);
      print_summary(report, scenario, arguments.output, std::nullopt, line);
    }
    return 0;
  } catch (...) {
    progress_line.end();
    const Failure failure = current_failure();
    std::fprintf(stderr,
                 "%s\nketasim: the journals of the ranks (%s.rank-*.journal) are kept: the same mpirun "
                 "command with --resume goes on from them\n",
                 failure.message.c_str(), arguments.output.c_str());
    return failure.exit_code;
  }
}

// The progress of one rank of `mpirun -n R ketasim run`: its own count, which the other ranks send
// to rank 0 (RankProgress), and on rank 0 the whole job's, shown on its one line.
class JobProgress {
 public:
  JobProgress(const MpiJob& mpi, bool show)
      : rank_progress_(mpi), ranks_(mpi.ranks()), lead_(mpi.rank() == 0), show_(show) {}

  void set_job(std::int64_t subjects_per_arm, std::size_t arms) {
    job_subjects_ = subjects_per_arm;
    last_.arms = arms;
  }
  ProgressLine& line() { return line_; }

  // The progress of this rank's run: rank 0 gets the job's (to show), the others publish theirs.
  Progress on_rank_progress(const Progress& rank) {
    if (rank.phase == Progress::Phase::journals || rank.phase == Progress::Phase::simulating) {
      own_ = {rank.subjects_done, rank.subjects_resumed};
      last_ = rank;
    }
    if (!lead_) {
      rank_progress_.publish(own_);
      return rank;
    }
    return job_progress();
  }

  // Once this rank is done (`failed` or not): the other ranks send their last count; rank 0 shows
  // the job's progress until every rank is done (polling, so that it does not spin in the reduction
  // that follows while it waits) and returns what it knows of the job.
  RankJob finish(bool failed) {
    RankJob job;
    job.ranks = ranks_;
    const double busy_seconds = seconds();
    if (!lead_) {
      rank_progress_.publish_last(own_, busy_seconds);
    } else {
      while (true) {
        const Progress shown = job_progress();
        if (show_ && !failed) line_.show(shown);
        if (rank_progress_.all_ranks_done()) break;
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
      }
      job.busy_seconds = rank_progress_.busy_seconds(busy_seconds);
      job.seconds = seconds();
    }
    line_.end();
    return job;
  }

 private:
  double seconds() const { return std::chrono::duration<double>(std::chrono::steady_clock::now() - started_).count(); }

  // The subjects of every rank, simulating until the last rank is done.
  Progress job_progress() {
    Progress job = last_;
    const RankCount count = rank_progress_.job_count(own_);
    job.phase = Progress::Phase::simulating;
    job.subjects_done = count.subjects_done;
    job.subjects_resumed = count.subjects_resumed;
    job.subjects_total = job_subjects_;
    job.elapsed_seconds = seconds();
    return job;
  }

  RankProgress rank_progress_;  // collective to make: every rank makes its JobProgress at the same point
  const int ranks_;
  const bool lead_;
  const bool show_;
  const std::chrono::steady_clock::time_point started_ = std::chrono::steady_clock::now();
  RankCount own_;                  // this rank's subjects done, as its run reports them
  Progress last_;                  // this rank's last progress (its arms, for the rate)
  std::int64_t job_subjects_ = 0;  // of every arm, over every rank: the cohort's size
  ProgressLine line_;              // rank 0's, for the whole job
};

// After every rank is done, on every rank: the errors (rank 0's, and that of a rank whose exit code
// differs from rank 0's: the same code is, but for rare cases, the same error on every rank, printed
// once rather than R times) and, on rank 0, what is kept. The worst exit code of the ranks.
int report_rank_failures(const Failure& failure, const RunArguments& arguments, const MpiJob& mpi) {
  const bool lead = mpi.rank() == 0;
  const int worst = mpi.largest_over_ranks(failure.exit_code);
  const int rank_zero_code = mpi.from_rank_zero(failure.exit_code);
  if (!failure.message.empty() && (lead || failure.exit_code != rank_zero_code)) {
    std::fprintf(stderr, "%s%s\n", lead ? "" : ("MPI rank " + std::to_string(mpi.rank()) + ": ").c_str(),
                 failure.message.c_str());
  }
  if (worst != 0 && lead) {
    if (failure.exit_code == 0)
      std::fprintf(stderr, "ketasim: error: another MPI rank failed (exit %d); %s not written\n", worst,
                   arguments.output.c_str());
    if (any_rank_work_kept(arguments.output, mpi.ranks()))
      std::fprintf(stderr,
                   "ketasim: the journals of the ranks (%s.rank-*.journal) are kept: `--resume` goes on from them\n",
                   arguments.output.c_str());
  }
  // No rank exits before every rank has printed its messages: a non-zero exit ends the others
  // under `srun --kill-on-bad-exit` (tools/slurm/ketasim.sbatch), and mpirun may do the same.
  if (worst != 0) mpi.wait_for_all();
  return worst;
}

// `mpirun -n R ketasim run`: rank r simulates the blocks b of the cohort with b mod R = r into its
// journal beside the output (so `--resume` resumes every rank), the ranks agree that every rank
// succeeded, then rank 0 writes the output from the journals (temporary name, rename) and removes
// them. A failure on any rank makes every rank exit non-zero with no output written (docs/hpc.md,
// "MPI"). Rank 0 shows the progress of the whole job.
int command_run_on_ranks(const RunArguments& arguments, const MpiJob& mpi) {
  const bool lead = mpi.rank() == 0;
  if (!arguments.shard.empty())
    throw Error(ExitCode::usage, "--shard cannot be given to a run on several MPI ranks: the ranks split the run");
  if (arguments.no_journal) {
    throw Error(ExitCode::usage,
                "--no-journal cannot be given to a run on several MPI ranks: each rank hands its blocks to rank 0 "
                "in its journal");
  }
  JobProgress progress(mpi, lead && shows_progress(arguments.quiet, arguments.progress));  // collective
  RunArguments rank_arguments = arguments;
  rank_arguments.output = rank_path(arguments.output, mpi.rank(), mpi.ranks());
  rank_arguments.rank = RankBlocks{mpi.rank(), mpi.ranks()};
  rank_arguments.quiet = arguments.quiet || !lead;  // rank 0 alone shows progress
  rank_arguments.summary = false;                   // a rank's figures are not the run's
  rank_arguments.launch_command = mpi.launch_command();
  rank_arguments.progress_line = &progress.line();
  rank_arguments.job_progress = [&progress](const Progress& p) { return progress.on_rank_progress(p); };
  std::optional<Scenario> scenario;
  Failure failure;
  try {
    // The final output is checked on every rank before anything is simulated, so that a path no
    // rank may write fails them all at once.
    scenario = load_scenario_file(arguments.scenario_path);
    if (arguments.subjects > 0) scenario->cohort.set_subjects_per_replicate(arguments.subjects);
    progress.set_job(scenario->cohort.size, scenario->arms.size());
    check_output_path(arguments.output, scenario_input_files(*scenario));
    if (lead) print_output_space(*scenario, arguments.output, arguments.quiet, std::nullopt);
    failure.exit_code = command_run(rank_arguments);
  } catch (...) {
    failure = current_failure();
  }
  const RankJob job = progress.finish(failure.exit_code != 0);
  const int worst = report_rank_failures(failure, arguments, mpi);
  if (worst != 0) return worst;
  // Rank 0 writes the output; every rank exits with its code.
  return mpi.from_rank_zero(lead ? write_from_rank_journals(arguments, *scenario, job, progress.line()) : 0);
}

// `ketasim merge`: shard files → one result file (merge.hpp checks them all before writing).
int command_merge(const std::vector<std::string>& shards, const std::string& output, unsigned threads, bool quiet,
                  bool progress) {
  MergeOptions options;
  options.threads = threads;
  ProgressLine progress_line;
  const std::string what = plural(static_cast<std::int64_t>(shards.size()), "shard file");
  if (shows_progress(quiet, progress))
    options.on_progress = [&progress_line, &what](const MergeProgress& p) { progress_line.show(p, what); };
  const MergeReport report = merge_shards(shards, output, options);
  progress_line.end();
  if (!quiet) {
    std::printf("%s: merged %s into %s: %s per arm, %s, %.1f s on %s\n", report.scenario_name.c_str(),
                plural(static_cast<std::int64_t>(report.shards), "shard").c_str(), output.c_str(),
                plural(report.subjects_per_arm, "subject").c_str(),
                plural(static_cast<std::int64_t>(report.arms), "arm").c_str(), report.elapsed_seconds,
                plural(report.threads, "thread").c_str());
  }
  return 0;
}

int command_validate(const std::string& scenario_path) {
  const Scenario scenario = load_scenario_file(scenario_path);
  std::string subjects = plural(scenario.cohort.size, "subject");
  if (scenario.cohort.replicates > 1) {
    subjects += " (" + std::to_string(scenario.cohort.replicates) + " replicates of " +
                std::to_string(scenario.cohort.subjects_per_replicate) + ")";
  }
  std::printf("%s: valid scenario '%s': model %s, %s, %s (", scenario_path.c_str(), scenario.name.c_str(),
              scenario.model.name.c_str(), subjects.c_str(),
              plural(static_cast<std::int64_t>(scenario.arms.size()), "arm").c_str());
  for (std::size_t a = 0; a < scenario.arms.size(); ++a) {
    const std::size_t nominal = expand_doses(scenario.arms[a], 1.0).size();
    std::printf(
        "%s%s: %s%s", a ? ", " : "", scenario.arms[a].name.c_str(),
        plural(static_cast<std::int64_t>(nominal), "dose").c_str(),
        most_doses(scenario.arms[a], scenario.output.grid_end) > nominal ? " (+ as needed or per subject)" : "");
  }
  std::printf(")\n");
  // Arms with a model of their own simulate another card or other parameter values: say which.
  const std::vector<ArmLayout> layouts = arm_layouts(scenario);
  for (std::size_t a = 0; a < scenario.arms.size(); ++a)
    if (scenario.arms[a].model)
      std::printf("  arm %s: model %s\n", scenario.arms[a].name.c_str(), describe_model(layouts[a]).c_str());
  const ResultSizeEstimate size = output_space(scenario, "").size;
  std::printf("result file of a run: about %s, at most %s uncompressed (metrics only, with `variables: []`: %s)\n",
              format_bytes(size.expected_bytes).c_str(), format_bytes(size.upper_bound_bytes).c_str(),
              format_bytes(size.without_trajectories_bytes).c_str());
  return 0;
}

// One row of the timeline: an event of the plan the solver ran, with the dose it comes from.
void print_timeline_event(const TimelineEvent& event, const SubjectSchedule& schedule, const Arm& arm,
                          const ModelCard& card, const std::vector<std::string>& channels, bool csv) {
  const std::string when = describe_time(event.time);
  std::string origin = "-", route = "-", drug = "-", into = "-";
  if (event.dose >= 0) {
    const Dose& dose = schedule.doses[static_cast<std::size_t>(event.dose)];
    drug = dose.drug == DoseDrug::model_drug ? card.drug : to_string(dose.drug);
    route = to_string(dose.route);
    origin = dose.triggered                                                                     ? "as_needed"
             : arm.regimen[static_cast<std::size_t>(dose.rule)].schedule == ScheduleKind::table ? "table"
                                                                                                : "scheduled";
  }
  if (event.channel >= 0) into = channels[static_cast<std::size_t>(event.channel)];
  if (event.kind == EventKind::observation) into = to_string(event.mark);
  if (csv)
    std::printf("%.6f,%s,%s,%d,%s,%s,%s,%s,%.6g,%.6g\n", ticks_to_hours(event.time), when.c_str(),
                to_string(event.kind).c_str(), event.dose, origin.c_str(), route.c_str(), drug.c_str(), into.c_str(),
                event.amount, event.rate_per_h);
  else
    std::printf("%12.4f  %-22s %-15s %5d %-10s %-12s %-10s %-24s %11.4f %12.4f\n", ticks_to_hours(event.time),
                when.c_str(), to_string(event.kind).c_str(), event.dose, origin.c_str(), route.c_str(), drug.c_str(),
                into.c_str(), event.amount, event.rate_per_h);
}

// The breakpoint plan one subject's solve ran (the engine's, after adherence and as-needed doses):
// its input edges, session starts, jumps and marked observations, by the same-time rule.
int command_timeline(const std::string& scenario_path, const std::string& arm_name, std::int64_t subject_id, bool csv) {
  const Scenario scenario = load_scenario_file(scenario_path);
  const Arm* arm = nullptr;
  std::size_t arm_index = 0;
  std::string names;
  for (std::size_t a = 0; a < scenario.arms.size(); ++a) {
    if (scenario.arms[a].name == arm_name) {
      arm = &scenario.arms[a];
      arm_index = a;
    }
    names += (names.empty() ? "" : ", ") + scenario.arms[a].name;
  }
  if (!arm) throw Error(ExitCode::usage, "no arm '" + arm_name + "' in " + scenario_path + " (arms: " + names + ")");
  if (subject_id < 0 || subject_id >= scenario.cohort.size)
    throw Error(ExitCode::usage, "--subject must be in [0, " + std::to_string(scenario.cohort.size) + ")");
  // The arm's own model (card and overridden parameters, as the result file records them).
  const ArmLayout layout = arm_layouts(scenario)[arm_index];
  const ModelCard* card = find_builtin_model(layout.model);
  const SubjectSchedule schedule = subject_schedule(scenario, arm_index, subject_id);
  const Subject& subject = schedule.subject;
  const std::vector<std::string> channels = channel_names(Model(*card));

  if (csv) {
    std::printf("time_h,when,event,dose,origin,route,drug,into,amount,rate_per_h\n");
  } else {
    std::printf("# scenario %s, arm %s, subject %lld, weight %.2f kg, age %.1f y\n", scenario.name.c_str(),
                arm->name.c_str(), static_cast<long long>(subject_id), subject.weight_kg, subject.age_years);
    std::printf("# model %s\n", describe_model(layout).c_str());
    std::printf(
        "# the plan the solver ran; same-time rule: infusion_stop, infusion_start, session_start, bolus, "
        "observation; amounts in mg (sessions: count)\n");
    std::printf("%12s  %-22s %-15s %5s %-10s %-12s %-10s %-24s %11s %12s\n", "time_h", "when", "event", "dose",
                "origin", "route", "drug", "into", "amount", "rate_per_h");
  }
  for (const TimelineEvent& event : schedule.plan.events)
    print_timeline_event(event, schedule, *arm, *card, channels, csv);
  if (csv) return 0;
  if (schedule.missed > 0) std::printf("# %d scheduled sessions missed (adherence)\n", schedule.missed);
  if (!schedule.failure.empty()) std::printf("# the solve failed: %s\n", schedule.failure.c_str());
  double total = 0.0;
  for (const Dose& dose : schedule.doses)
    if (dose.drug == DoseDrug::model_drug) total += dose.amount_mg;
  std::printf("# %zu doses, %.3f mg of %s in total\n", schedule.doses.size(), total, card->drug.c_str());
  return 0;
}

std::string describe_iiv(const Iiv& iiv) {
  char text[48];
  switch (iiv.kind) {
    case IivKind::none:
      return "-";
    case IivKind::log_normal:
      std::snprintf(text, sizeof text, "%.3g%% CV", iiv.magnitude * 100.0);
      return text;
    case IivKind::logit_normal:
      std::snprintf(text, sizeof text, "logit SD %.3g", iiv.magnitude);
      return text;
    case IivKind::normal:
      std::snprintf(text, sizeof text, "SD %.3g", iiv.magnitude);
      return text;
  }
  return "?";
}

void print_card(const ModelCard& card) {
  const Model model(card);
  std::printf("%s: %s\n  citation: %s\n  sampling: %s; dosed drug %s; reference weight %.0f kg\n", card.name.c_str(),
              card.title.c_str(), card.citation.c_str(), card.sampling.c_str(), card.drug.c_str(),
              card.reference_weight_kg);
  if (!card.included_modules.empty()) {
    std::string modules;
    for (const std::string& module : card.included_modules) modules += (modules.empty() ? "" : ", ") + module;
    std::printf("  modules: %s\n", modules.c_str());
  }
  for (const std::string& calibration : card.calibrations)
    std::printf("  calibrated by `ketasim calibrate %s`\n", calibration.c_str());
  std::printf("  %-28s %12s %-8s %5s %-14s %s\n", "parameter", "value", "unit", "allom", "IIV", "description [source]");
  for (const ParameterSpec& spec : card.parameters) {
    std::string source = spec.source;
    if (!spec.calibrated_by.empty())
      source = "CALIBRATED (" + spec.calibrated_by + "): " + source;
    else if (spec.assumed)
      source = "ASSUMED: " + source;
    std::string iiv = describe_iiv(spec.iiv);
    if (spec.covariate_effect) iiv += " +age";
    std::printf("  %-28s %12.6g %-8s %5.2f %-14s %s [%s]\n", spec.name.c_str(), to_display_unit(spec, spec.value),
                spec.unit.empty() ? "-" : spec.unit.c_str(), spec.allometric_exponent, iiv.c_str(),
                spec.description.c_str(), source.c_str());
  }
  std::string states;
  for (const std::string& state : model.state_names()) states += (states.empty() ? "" : ", ") + state;
  std::printf("  states (%d): %s\n", model.state_count(), states.c_str());
  std::string outputs;
  for (const ModelOutput& output : model.outputs())
    outputs += (outputs.empty() ? "" : ", ") + output.name + (output.unit.empty() ? "" : " (" + output.unit + ")");
  std::printf("  outputs (scenario output.variables): %s\n", outputs.c_str());
  std::string routes;
  if (card.routes.iv) routes += "iv_infusion, iv_bolus (into " + card.routes.iv->drug + ".central)";
  if (card.routes.intranasal) {
    char text[160];
    std::snprintf(text, sizeof text, "%sintranasal (%g mg devices, %g min apart)", routes.empty() ? "" : "; ",
                  card.routes.intranasal->device_mg, card.routes.intranasal->device_interval_h * kMinutesPerHour);
    routes += text;
  }
  std::printf("  routes: %s\n", routes.c_str());
  for (const ResidualError& error : card.residual_errors)
    std::printf("  residual error of %s: %s %.3g [%s]\n", error.analyte.c_str(),
                error.log_scale ? "log-scale SD" : "proportional", error.proportional, error.source.c_str());
  std::printf("  notes: %s\n  card: %s\n", card.notes.c_str(), card.source_file.c_str());
}

std::string joined_command(int argc, char** argv) {
  std::string command = "ketasim";
  for (int i = 1; i < argc; ++i) command += std::string(" ") + argv[i];
  return command;
}

// The same, each word that a shell would split or expand in single quotes, for a line to copy.
std::string shell_command(int argc, char** argv) {
  std::string command = "ketasim";
  for (int i = 1; i < argc; ++i) {
    const std::string word = argv[i];
    const bool plain = !word.empty() && word.find_first_not_of(
                                            "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                            "0123456789-_./=:,+@%") == std::string::npos;
    if (plain) {
      command += " " + word;
      continue;
    }
    command += " '";
    for (const char c : word) command += c == '\'' ? std::string("'\\''") : std::string(1, c);
    command += "'";
  }
  return command;
}

// Data that ships with ketasim (the plot script, the reproduction suite) is looked for beside the
// running binary first, at KETASIM_DATA_FROM_BIN (share/ketasim relative to bin/, set by
// tools/CMakeLists.txt), so that an installed tree works wherever it is moved; then in the source
// tree this binary was built from, for a binary run from its build folder.
std::vector<std::filesystem::path> data_candidates(const std::filesystem::path& installed,
                                                   const std::filesystem::path& in_source) {
  std::vector<std::filesystem::path> candidates;
  std::error_code error;
  const std::filesystem::path executable = std::filesystem::read_symlink("/proc/self/exe", error);
  if (!error) candidates.push_back((executable.parent_path() / KETASIM_DATA_FROM_BIN / installed).lexically_normal());
  candidates.push_back((std::filesystem::path(KETASIM_SOURCE_DIR) / in_source).lexically_normal());
  return candidates;
}

std::filesystem::path find_data(const std::filesystem::path& installed, const std::filesystem::path& in_source,
                                const std::string& what) {
  std::string tried;
  for (const std::filesystem::path& candidate : data_candidates(installed, in_source)) {
    std::error_code error;
    if (std::filesystem::exists(candidate, error)) return candidate;
    tried += (tried.empty() ? "" : ", ") + candidate.string();
  }
  throw IoError("cannot find " + what + " (looked for " + tried + ")");
}

std::filesystem::path find_reproduction_suite() {
  return find_data("reproduction", std::filesystem::path("benchmarks") / "reproduction", "the reproduction suite");
}

void print_outcomes(const std::vector<TargetOutcome>& outcomes) {
  std::printf("%-44s %10s %-26s %10s  %s\n", "target", "published", "tolerance", "simulated", "result");
  for (const TargetOutcome& outcome : outcomes) {
    const ReproductionTarget& target = *outcome.target;
    std::printf("%-44s %10.4g %-26s %10.4g  %s\n", target.name.c_str(), target.expected,
                target.tolerance.describe(target.expected).c_str(), outcome.simulated, outcome.verdict().c_str());
  }
}

int command_reproduce(std::vector<std::string> files, const std::string& markdown, unsigned threads,
                      const std::string& command) {
  if (files.empty()) files = suite_files(find_reproduction_suite());  // every target of the suite, in name order
  if (!markdown.empty()) check_output_path(markdown, files);          // before the suite runs, not after
  std::vector<ReproductionTarget> targets;
  for (const std::string& file : files) targets.push_back(load_target(file));
  EvaluationOptions options;
  options.threads = threads;
  const std::vector<TargetOutcome> outcomes = evaluate_targets(targets, options);
  print_outcomes(outcomes);
  if (!markdown.empty()) {
    write_file_atomically(markdown, validation_markdown(outcomes, command), files);
    std::printf("written: %s\n", markdown.c_str());
  }
  for (const TargetOutcome& outcome : outcomes)
    if (outcome.failed()) return static_cast<int>(ExitCode::check_failed);
  return 0;
}

// The committed fit, evaluated once: the targets on the calibration cohorts and the objective,
// which must be the one the fit recorded. Any change of the model, the engine or a fitted target
// that moves the fit shows here in seconds, where a refit from the start takes many minutes.
int command_verify_fit(const std::string& spec_path, unsigned threads) {
  const CalibrationSpec spec = load_calibration(spec_path);
  const std::string fit_path = std::filesystem::path(spec_path).replace_extension().string() + ".fit.yaml";
  const std::string text = read_text_file(fit_path, "fit file", kMaxYamlFileBytes);
  const auto committed = read_fit_values(text, spec, fit_path);
  std::vector<double> values;
  for (std::size_t i = 0; i < spec.parameters.size(); ++i) {
    if (i >= committed.size() || committed[i].first != spec.parameters[i].name)
      throw Error(ExitCode::check_failed, fit_path + ": its fitted values do not match the parameters of " + spec_path +
                                              " (refit with --write)");
    values.push_back(committed[i].second);
  }
  if (committed.size() != spec.parameters.size())
    throw Error(ExitCode::check_failed, fit_path + ": it has more fitted values than " + spec_path + " has parameters");
  const double recorded = read_fit_objective(text, fit_path);
  const FitEvaluation evaluation = evaluate_fit(spec, values, threads);
  print_outcomes(evaluation.outcomes);
  const bool same = std::abs(evaluation.objective - recorded) <= 1e-9 * std::max(1.0, std::abs(recorded));
  std::printf("objective at the committed fit %.17g, recorded %.17g: %s\n", evaluation.objective, recorded,
              same ? "the same" : "DIFFERENT (the model, the engine or a target changed since the fit)");
  return same ? 0 : static_cast<int>(ExitCode::check_failed);
}

int command_calibrate(const std::string& spec_path, bool write, bool check, unsigned threads, bool quiet,
                      const std::string& command) {
  const CalibrationSpec spec = load_calibration(spec_path);
  const std::filesystem::path base = std::filesystem::path(spec_path).replace_extension();
  const std::string fit_path = base.string() + ".fit.yaml";
  const std::string report_path = base.string() + ".report.md";
  if (write) {  // before the fit, not after
    check_output_path(fit_path, {spec_path});
    check_output_path(report_path, {spec_path});
  }
  const bool show_progress = !quiet && isatty(STDERR_FILENO);
  const auto progress = [&](int evaluation, double objective) {
    if (show_progress)
      std::fprintf(stderr, "\revaluation %d/%d  objective %.6g   ", evaluation, spec.max_evaluations, objective);
  };
  const CalibrationResult result = calibrate(spec, threads, progress);
  if (show_progress) std::fputc('\n', stderr);
  std::printf("calibration %s: %d evaluations, %s; objective %.6g (start %.6g)\n", spec.name.c_str(),
              result.evaluations, result.stop_reason.c_str(), result.objective, result.start_objective);
  const ModelCard& card = *find_builtin_model(spec.model);
  for (std::size_t i = 0; i < spec.parameters.size(); ++i) {
    const CalibratedParameter& parameter = spec.parameters[i];
    const bool iiv = parameter.name.ends_with(".iiv");
    const double shown = iiv ? result.fitted[i]
                             : to_display_unit(card.parameters[static_cast<std::size_t>(card.index_of(parameter.name))],
                                               result.fitted[i]);
    std::printf("  %-24s %14.8g %s\n", parameter.name.c_str(), shown, parameter.unit.c_str());
  }
  print_outcomes(result.outcomes);
  if (write) {
    write_file_atomically(fit_path, fit_yaml(spec, result, command), {spec_path});
    write_file_atomically(report_path, calibration_report(spec, result, command), {spec_path});
    std::printf("written: %s and %s.report.md (rebuild to use the fitted values)\n", fit_path.c_str(),
                base.string().c_str());
  }
  if (check) {
    const auto committed = read_fit_values(read_text_file(fit_path, "fit file", kMaxYamlFileBytes), spec, fit_path);
    bool same = committed.size() == spec.parameters.size();
    for (std::size_t i = 0; same && i < committed.size(); ++i) {
      const double difference = std::abs(committed[i].second - result.fitted[i]);
      const bool close =
          committed[i].first == spec.parameters[i].name && difference <= 1e-6 * std::abs(result.fitted[i]);
      if (!close)
        std::printf("differs from %s: %s committed %.10g, refitted %.10g\n", fit_path.c_str(),
                    committed[i].first.c_str(), committed[i].second, result.fitted[i]);
      same = same && close;
    }
    std::printf("%s\n", same ? "the refit reproduces the committed values"
                             : "the refit does NOT reproduce the committed values");
    if (!same) return static_cast<int>(ExitCode::check_failed);
  }
  return 0;
}

struct CompareArguments {
  std::string file;
  std::string reference;
  std::string at;
  std::string format = "table";
  std::string output;  // empty: stdout
  int bootstrap = 2000;
  std::uint64_t seed = kDefaultBootstrapSeed;
  double margin_pp = 0.0;
  unsigned threads = 0;  // 0: one per core
};

int command_compare(const CompareArguments& arguments) {
  const OutputFormat format = parse_output_format(arguments.format);
  if (!arguments.output.empty()) check_output_path(arguments.output, {arguments.file});
  CompareOptions options;
  options.reference = arguments.reference;
  if (!arguments.at.empty()) options.at_days = parse_days(arguments.at);
  options.bootstrap = arguments.bootstrap;
  options.seed = arguments.seed;
  options.margin_pp = arguments.margin_pp;
  options.threads = arguments.threads;
  const Comparison comparison = compare_arms(read_result_file(arguments.file), options);
  const std::string text = format_comparison(comparison, format);
  // csv has no room for notes (fallbacks, exclusions): they go to stderr.
  if (format == OutputFormat::csv)
    for (const std::string& note : comparison.notes) std::fprintf(stderr, "note: %s\n", note.c_str());
  if (arguments.output.empty()) {
    std::fwrite(text.data(), 1, text.size(), stdout);
  } else {
    write_file_atomically(arguments.output, text, {arguments.file});
    std::fprintf(stderr, "written: %s\n", arguments.output.c_str());
  }
  return 0;
}

// `ketasim models [show] [NAME]`: CLI11 gives the first word, the others are its extras.
int command_models(std::vector<std::string> words) {
  const bool show = !words.empty() && words.front() == "show";
  if (show) words.erase(words.begin());
  if (show && words.empty())
    throw Error(ExitCode::usage,
                "usage: ketasim models [show] NAME: `show` needs a NAME (`ketasim models` lists them)");
  if (words.size() > 1) {
    throw Error(ExitCode::usage, "usage: ketasim models [show] NAME: got " + std::to_string(words.size()) + " names (" +
                                     yaml::join_alternatives(words, "and") + ")");
  }
  const std::string name = words.empty() ? std::string() : words.front();
  if (name.empty()) {
    for (const ModelCard& card : builtin_models())
      std::printf("%-26s %s\n%-26s   %s\n", card.name.c_str(), card.title.c_str(), "", card.citation.c_str());
    return 0;
  }
  const ModelCard* card = find_builtin_model(name);
  if (!card) {
    std::vector<std::string> names;
    for (const ModelCard& candidate : builtin_models()) names.push_back(candidate.name);
    throw Error(ExitCode::usage, "no model '" + name + "'" + yaml::did_you_mean(name, names) + "; the models are " +
                                     yaml::join_alternatives(names, "and"));
  }
  print_card(*card);
  return 0;
}

// `ketasim plot`: the figures are drawn by tools/ketasim_plot.py with matplotlib. This finds the
// script and a Python that can import h5py and matplotlib, then becomes that Python (exec), so the
// script's exit code is the command's.
std::filesystem::path find_plot_script() {
  return find_data("ketasim_plot.py", std::filesystem::path("tools") / "ketasim_plot.py",
                   "the plotting script ketasim_plot.py");
}

// Runs `python -c "import h5py, matplotlib"` quietly; true if it succeeds.
bool python_can_plot(const std::string& python) {
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, "/dev/null", O_WRONLY, 0);
  std::string program = python, flag = "-c", code = "import h5py, matplotlib";
  char* arguments[] = {program.data(), flag.data(), code.data(), nullptr};
  pid_t child = 0;
  const int spawned = posix_spawnp(&child, python.c_str(), &actions, nullptr, arguments, environ);
  posix_spawn_file_actions_destroy(&actions);
  if (spawned != 0) return false;
  int status = 0;
  while (waitpid(child, &status, 0) < 0)
    if (errno != EINTR) return false;
  return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

// Debian's interpreter first (it has python3-h5py and python3-matplotlib when installed), then
// the python3 first on PATH (pyenv, a virtual environment).
std::string find_plot_python() {
  for (const std::string candidate : {"/usr/bin/python3", "python3"})
    if (python_can_plot(candidate)) return candidate;
  throw IoError(
      "no Python that can import h5py and matplotlib (tried /usr/bin/python3, then python3 on PATH); "
      "on Debian: apt-get install python3-h5py python3-matplotlib");
}

struct PlotOptions {
  std::string results_path;
  std::string output_dir = ".";
  std::string format = "png";
  std::vector<std::string> arms;
  std::vector<std::string> variables;
};

std::string comma_joined(const std::vector<std::string>& items) {
  std::string joined;
  for (const std::string& item : items) joined += (joined.empty() ? "" : ",") + item;
  return joined;
}

int command_plot(const PlotOptions& options) {
  const std::string script = find_plot_script().string();
  const std::string python = find_plot_python();
  std::vector<std::string> words = {python, script, "-o", options.output_dir, "--format", options.format};
  if (!options.arms.empty()) words.insert(words.end(), {"--arms", comma_joined(options.arms)});
  if (!options.variables.empty()) words.insert(words.end(), {"--variables", comma_joined(options.variables)});
  std::vector<std::string> versions;  // the script reads what this ketasim's readers read (one list, here)
  for (int version = ketasim::kOldestReadableLayoutVersion; version <= ketasim::kLayoutVersion; ++version)
    versions.push_back(std::to_string(version));
  words.insert(words.end(), {"--layout-versions", comma_joined(versions)});
  words.insert(words.end(), {"--", options.results_path});  // a file name may start with '-'
  std::vector<char*> arguments;
  for (std::string& word : words) arguments.push_back(word.data());
  arguments.push_back(nullptr);
  std::cout.flush();
  std::fflush(nullptr);
  execvp(python.c_str(), arguments.data());
  throw IoError("cannot run " + python + " " + script + ": " + std::strerror(errno));
}

}  // namespace

// The legend of an exported data set: what ARM, DVID and CMT numbers stand for, and what is not in it.
void print_export_legend(const ExportLegend& legend, std::FILE* to) {
  for (std::size_t k = 0; k < legend.arms.size(); ++k) std::fprintf(to, "ARM %zu: %s\n", k + 1, legend.arms[k].c_str());
  for (std::size_t v = 0; v < legend.observed.size(); ++v)
    std::fprintf(to, "DVID %zu: %s\n", v + 1, legend.observed[v].c_str());
  for (const auto& [number, state] : legend.compartments) std::fprintf(to, "CMT %d: %s\n", number, state.c_str());
  if (!legend.has_observations)
    std::fprintf(to,
                 "note: the scenario has no output.observations: dose rows only (add output.observations to simulate "
                 "samples with residual error)\n");
  if (legend.failed_subjects > 0)
    std::fprintf(to, "note: %zu failed subject%s left out (no simulated values; see metrics/message)\n",
                 legend.failed_subjects, legend.failed_subjects == 1 ? "" : "s");
}

// `ketasim export`: one arm (default: the first) or all of them, to standard output or to a file
// written under a temporary name and renamed when complete.
int command_export(const std::string& result_path, const std::string& arm, bool all_arms, const std::string& output) {
  if (all_arms && !arm.empty()) throw Error(ExitCode::usage, "--arm and --all-arms exclude each other");
  const std::vector<std::string> file_arms = arms_in_result(result_path);
  const std::vector<std::string> arms =
      all_arms ? file_arms : std::vector<std::string>{arm.empty() ? file_arms.front() : arm};
  if (output.empty() || output == "-") {
    const ExportLegend legend = write_nonmem_data(result_path, arms, std::cout);
    std::cout.flush();
    if (!std::cout) throw IoError("writing the data set to standard output failed");
    print_export_legend(legend, stderr);
    return 0;
  }
  // Written next to the final name and renamed (output_file.hpp): a failed export leaves any older
  // file untouched, and the result file itself is never the target.
  AtomicOutputFile file(output, {result_path});
  ExportLegend legend;
  {
    std::ofstream out(file.temporary_path(), std::ios::binary | std::ios::trunc);
    if (!out) throw IoError(file.temporary_path() + ": cannot create: " + std::strerror(errno));
    legend = write_nonmem_data(result_path, arms, out);
    out.close();
    if (!out) throw IoError(output + ": cannot write the data set");
  }
  file.commit();
  std::string names;
  for (const std::string& name : arms) names += (names.empty() ? "" : ", ") + name;
  std::printf("%s %s of %s -> %s (NONMEM-style, docs/nonmem.md: TIME in h, AMT in mg, RATE in mg/h)\n",
              arms.size() == 1 ? "arm" : "arms", names.c_str(), result_path.c_str(), output.c_str());
  print_export_legend(legend, stdout);
  return 0;
}

namespace {

// Every value the command line sets, one field per option, for every subcommand.
struct Arguments {
  std::string scenario_path, output = "results.h5", arm_name;
  std::string shard;
  std::int64_t block_size = 0;
  bool resume = false, no_journal = false;
  std::vector<std::string> merge_inputs;
  std::string merge_output;
  unsigned threads = 0;
  std::int64_t subjects = 0, subject_id = 0;
  bool quiet = false, csv = false;
  bool progress = false;
  std::string model_word;
  std::vector<std::string> target_files;
  std::string markdown;
  std::string spec_path;
  bool write = false, check = false, verify = false;
  std::string result_path, export_arm, export_output;
  bool export_all_arms = false;
  PlotOptions plot;
  CompareArguments compare;
  std::string clean_directory = ".";
  std::string help_topic;
};

// The subcommands, to see which one was given.
struct Commands {
  CLI::App* run = nullptr;
  CLI::App* merge = nullptr;
  CLI::App* validate = nullptr;
  CLI::App* timeline = nullptr;
  CLI::App* models = nullptr;
  CLI::App* reproduce = nullptr;
  CLI::App* calibrate = nullptr;
  CLI::App* export_csv = nullptr;
  CLI::App* plot = nullptr;
  CLI::App* compare = nullptr;
  CLI::App* clean = nullptr;
  CLI::App* help = nullptr;
};

CLI::Validator threads_value() {
  return ketasim::cli::whole_number(1, 1024);
}

// run, validate, timeline: the commands that read a scenario.
void add_scenario_commands(CLI::App& app, Arguments& a, Commands& commands) {
  namespace cli = ketasim::cli;
  auto* run = commands.run = app.add_subcommand("run", "Simulate a scenario and write one HDF5 file");
  run->add_option("scenario", a.scenario_path, "Scenario YAML file")->required();
  run->add_option("-o,--output", a.output, "Output HDF5 file (written to a temporary name, renamed on success)")
      ->capture_default_str()
      ->type_name("FILE")
      ->check(cli::not_empty("a file name"));
  run->add_option("-t,--threads", a.threads,
                  "Worker threads (default: the CPUs this process may use); results do not depend on it")
      ->type_name("N")
      ->check(threads_value());
  run->add_option("--subjects", a.subjects, "Override the cohort size of the scenario (subjects per replicate)")
      ->type_name("N")
      ->check(cli::whole_number(1, static_cast<std::uint64_t>(ketasim::kMaxCohortSize)));
  run->add_option("--shard", a.shard,
                  "Compute only shard INDEX of COUNT (1 <= INDEX <= COUNT) of every arm's subjects, into a shard file "
                  "for `ketasim merge`")
      ->type_name("INDEX/COUNT")
      ->check(cli::shard_value());
  run->add_option(
         "--block-size", a.block_size,
         "Subjects per block: the unit of work of a thread and of the journal, what an interruption loses "
         "at most (default: about 16 MiB of trajectories, 64 to 4096 subjects); the file does not depend on it")
      ->type_name("N")
      ->check(cli::whole_number(1, 1 << 20));
  auto* resume = run->add_flag("--resume", a.resume,
                               "Continue an interrupted run from the journal next to its output (OUTPUT.journal): its "
                               "finished blocks are read back, the others simulated; without a journal, start afresh");
  run->add_flag("--no-journal", a.no_journal,
                "Keep no journal of the finished blocks: an interrupted run cannot be resumed (saves its disk space)")
      ->excludes(resume);
  auto* run_quiet = run->add_flag("-q,--quiet", a.quiet, "No progress and no summary");
  run->add_flag("--progress", a.progress,
                "Show the progress line also when standard error is not a terminal (under mpirun, whose ranks "
                "write to pipes: rank 0 shows the whole job's)")
      ->excludes(run_quiet);

  auto* merge = commands.merge =
      app.add_subcommand("merge", "Merge the shard files of a split run (run --shard) into one result file");
  merge->add_option("shards", a.merge_inputs, "Shard files, every shard of the split once, in any order")->required();
  merge->add_option("-o,--output", a.merge_output, "Output HDF5 file (written to a temporary name, renamed on success)")
      ->required()
      ->type_name("FILE")
      ->check(cli::not_empty("a file name"));
  merge
      ->add_option("-t,--threads", a.threads,
                   "Compression and summary threads (default: the CPUs this process may use); the file does not "
                   "depend on it")
      ->type_name("N")
      ->check(threads_value());
  auto* merge_quiet = merge->add_flag("-q,--quiet", a.quiet, "No progress and no summary");
  merge->add_flag("--progress", a.progress, "Show the progress line also when standard error is not a terminal")
      ->excludes(merge_quiet);

  commands.validate = app.add_subcommand("validate", "Check a scenario without running it");
  commands.validate->add_option("scenario", a.scenario_path, "Scenario YAML file")->required();

  auto* timeline = commands.timeline = app.add_subcommand("timeline", "Print the expanded dose events of one subject");
  timeline->add_option("scenario", a.scenario_path, "Scenario YAML file")->required();
  timeline->add_option("--arm", a.arm_name, "Arm name")->required();
  timeline->add_option("--subject", a.subject_id, "Subject id (0-based)")->capture_default_str();
  timeline->add_flag("--csv", a.csv, "CSV instead of an aligned table");
}

// models, reproduce, calibrate: the commands about the model cards and their evidence.
void add_model_commands(CLI::App& app, Arguments& a, Commands& commands) {
  namespace cli = ketasim::cli;
  auto* models = commands.models =
      app.add_subcommand("models", "List the built-in model cards, or show one: ketasim models [show] NAME");
  models->add_option("NAME", a.model_word, "The model card to show in full (`ketasim models` lists them)");
  models->allow_extras();  // `show NAME`: the second word is an extra (command_models)

  auto* reproduce = commands.reproduce =
      app.add_subcommand("reproduce", "Check published results (benchmarks/reproduction/); exit 7 if one fails");
  std::string suite_folder;
  try {
    suite_folder = find_reproduction_suite().string();
  } catch (const Error& error) {
    suite_folder = error.what();
  }
  reproduce->add_option("targets", a.target_files, "Target files (default: the whole suite, " + suite_folder + ")");
  reproduce->add_option("--markdown", a.markdown, "Also write the validation table (e.g. docs/validation.md)")
      ->type_name("FILE")
      ->check(cli::not_empty("a file name"));
  reproduce->add_option("-t,--threads", a.threads, "Worker threads (default: the CPUs this process may use)")
      ->type_name("N")
      ->check(threads_value());

  auto* calibrate = commands.calibrate =
      app.add_subcommand("calibrate", "Fit model parameters to published results (models/calibration/)");
  calibrate->add_option("spec", a.spec_path, "Calibration spec, e.g. models/calibration/ketamine_response.yaml")
      ->required();
  calibrate->add_flag("--write", a.write, "Write NAME.fit.yaml and NAME.report.md next to the spec");
  calibrate->add_flag("--check", a.check,
                      "Refit from the start; exit 7 unless it reproduces the committed NAME.fit.yaml");
  calibrate
      ->add_flag("--verify", a.verify,
                 "No fit: evaluate the targets at the committed NAME.fit.yaml; exit 7 unless the objective is the one "
                 "recorded there")
      ->excludes("--write")
      ->excludes("--check");
  calibrate
      ->add_option("-t,--threads", a.threads,
                   "Worker threads (default: the CPUs this process may use); results do not depend on it")
      ->type_name("N")
      ->check(threads_value());
  calibrate->add_flag("-q,--quiet", a.quiet, "No progress");
}

// export and plot: the commands that turn a result file into other files.
void add_output_commands(CLI::App& app, Arguments& a, Commands& commands) {
  namespace cli = ketasim::cli;
  auto* export_csv = commands.export_csv =
      app.add_subcommand("export", "Write arms of a result file as a NONMEM-style CSV data set (docs/nonmem.md)");
  export_csv->add_option("results", a.result_path, "Result HDF5 file of `ketasim run`")->required();
  export_csv->add_option("--arm", a.export_arm, "Arm name (default: the first arm)");
  export_csv->add_flag("--all-arms", a.export_all_arms,
                       "Every arm, in scenario order, each subject of each arm with its own ID");
  export_csv->add_option(
      "-o,--output", a.export_output,
      "CSV file, or - for standard output (the default); a file is written to a temporary name, renamed on success");

  auto* plot = commands.plot = app.add_subcommand(
      "plot", "Draw figures from a result file: trajectories, relapse (Kaplan-Meier), response and remission");
  plot->add_option("results", a.plot.results_path, "Result file written by `ketasim run`")->required();
  plot->add_option("-o,--output-dir", a.plot.output_dir, "Folder for the figures (created if missing)")
      ->capture_default_str();
  plot->add_option("--format", a.plot.format, "Image format: png or svg")
      ->check(cli::one_of({"png", "svg"}))
      ->capture_default_str();
  plot->add_option("--arms", a.plot.arms, "Arms to show, e.g. A,B (default: all, in scenario order)")
      ->delimiter(',')
      ->allow_extra_args(false);
  plot->add_option("--variables", a.plot.variables,
                   "Trajectories to show, by dataset name (default: the dosed drug's plasma concentration, "
                   "dissociation_score, madrs)")
      ->delimiter(',')
      ->allow_extra_args(false);
}

void add_compare_command(CLI::App& app, Arguments& a, Commands& commands) {
  namespace cli = ketasim::cli;
  CompareArguments& arguments = a.compare;
  auto* compare = commands.compare =
      app.add_subcommand("compare", "Compare the arms of a result file, with paired differences from a reference arm");
  compare->add_option("file", arguments.file, "Result file written by `ketasim run`")->required();
  compare->add_option("--reference", arguments.reference, "Reference arm (default: the first arm of the scenario)");
  compare->add_option("--at", arguments.at,
                      "Days for the rates, e.g. 1d,15d,28d; the last is the primary day (default: every assessment)");
  compare->add_option("--format", arguments.format, "table, csv, markdown or json")
      ->capture_default_str()
      ->check(cli::one_of({"table", "csv", "markdown", "json"}));
  compare->add_option("-o,--output", arguments.output, "Write to FILE instead of stdout")
      ->type_name("FILE")
      ->check(cli::not_empty("a file name"));
  compare->add_option("--bootstrap", arguments.bootstrap, "Paired bootstrap resamples")
      ->capture_default_str()
      ->check(cli::whole_number(0, 1'000'000));
  compare->add_option("--seed", arguments.seed, "Seed of the bootstrap (recorded in the output)")
      ->capture_default_str()
      ->check(cli::whole_number(0));
  compare
      ->add_option("--margin", arguments.margin_pp,
                   "Trial replicates: percentage points of response rate to beat the reference by")
      ->capture_default_str()
      ->check(cli::finite_number());
  compare
      ->add_option("-t,--threads", arguments.threads,
                   "Bootstrap threads (default: the CPUs this process may use); results do not depend on it")
      ->type_name("N")
      ->check(threads_value());
}

// clean and help.
void add_housekeeping_commands(CLI::App& app, Arguments& a, Commands& commands) {
  commands.clean =
      app.add_subcommand("clean", "Remove the temporary files that killed runs of this host left in a directory");
  commands.clean->add_option("directory", a.clean_directory, "Directory to clean")->capture_default_str();

  commands.help = app.add_subcommand("help", "Show the commands, or the options of one: ketasim help COMMAND");
  commands.help->add_option("command", a.help_topic, "Command to show the options of");
}

// Runs the subcommand that was given; its exit code.
int dispatch(const CLI::App& app, const Commands& commands, const Arguments& a, const std::string& command_line,
             const std::string& shell_line, const MpiJob& mpi) {
  if (mpi.several_ranks() && !*commands.run) {
    throw ketasim::Error(ketasim::ExitCode::usage, "only `ketasim run` runs on several MPI ranks (this job has " +
                                                       std::to_string(mpi.ranks()) + ")");
  }
  if (mpi.srun_tasks_without_mpi() > 1 && *commands.run && a.shard.empty()) {
    throw ketasim::Error(ketasim::ExitCode::usage,
                         "srun started " + std::to_string(mpi.srun_tasks_without_mpi()) +
                             " tasks without an MPI plugin (no PMIx or PMI in the environment): each would run the "
                             "whole run into " +
                             a.output +
                             "; launch them with `srun --mpi=pmix` (tools/slurm/ketasim.sbatch, docs/hpc.md), or "
                             "give each task its own --shard");
  }
  if (*commands.help) {
    std::string problem;
    const std::string text = ketasim::cli::help_text(app, a.help_topic, problem);
    if (!problem.empty()) throw ketasim::Error(ketasim::ExitCode::usage, problem);
    std::cout << text;
    return 0;
  }
  if (*commands.clean) return command_clean(a.clean_directory);
  if (*commands.run) {
    RunArguments run;
    run.scenario_path = a.scenario_path;
    run.output = a.output;
    run.threads = a.threads;
    run.subjects = a.subjects;
    run.shard = a.shard;
    run.block_size = a.block_size;
    run.resume = a.resume;
    run.no_journal = a.no_journal;
    run.quiet = a.quiet;
    run.progress = a.progress;
    run.command_line = shell_line;
    return mpi.several_ranks() ? command_run_on_ranks(run, mpi) : command_run(run);
  }
  if (*commands.merge) return command_merge(a.merge_inputs, a.merge_output, a.threads, a.quiet, a.progress);
  if (*commands.validate) return command_validate(a.scenario_path);
  if (*commands.timeline) return command_timeline(a.scenario_path, a.arm_name, a.subject_id, a.csv);
  if (*commands.reproduce) return command_reproduce(a.target_files, a.markdown, a.threads, command_line);
  if (*commands.export_csv) return command_export(a.result_path, a.export_arm, a.export_all_arms, a.export_output);
  if (*commands.plot) return command_plot(a.plot);
  if (*commands.compare) return command_compare(a.compare);
  if (*commands.calibrate && a.verify) return command_verify_fit(a.spec_path, a.threads);
  if (*commands.calibrate) return command_calibrate(a.spec_path, a.write, a.check, a.threads, a.quiet, command_line);
  if (*commands.models) {
    std::vector<std::string> words;
    if (!a.model_word.empty()) words.push_back(a.model_word);
    for (const std::string& word : commands.models->remaining()) words.push_back(word);
    return command_models(words);
  }
  return 0;
}

int run_command_line(int argc, char** argv) {
  // MPI first (only under an MPI launcher), so that the stop signals are ours whatever it installs.
  std::optional<MpiJob> mpi;
  try {
    mpi.emplace();
  } catch (const ketasim::Error& error) {
    std::cerr << "ketasim: error: " << error.what() << '\n';
    return static_cast<int>(error.code());
  }
  install_stop_signal_handlers();
  // The name, not argv[0]: usage lines say `ketasim run`, not the path the binary was started by.
  CLI::App app{"ketasim: PK/PD simulation of ketamine therapy for virtual patient cohorts", "ketasim"};
  app.failure_message(ketasim::cli::failure_message);  // set before the commands, which copy it
  app.set_version_flag("--version", std::string("ketasim ") + ketasim::kVersion + " (" + ketasim::kSourceRevision +
                                        ", HDF5 layout " + std::to_string(ketasim::kLayoutVersion) + ")");
  app.require_subcommand(1);
  Arguments arguments;
  Commands commands;
  add_scenario_commands(app, arguments, commands);
  add_model_commands(app, arguments, commands);
  add_output_commands(app, arguments, commands);
  add_compare_command(app, arguments, commands);
  add_housekeeping_commands(app, arguments, commands);

  try {
    app.parse(argc, argv);
    const std::string problem = ketasim::cli::unused_arguments_problem(app);
    if (!problem.empty()) {
      std::cerr << "ketasim: error: " << problem << '\n'
                << ketasim::cli::usage_hint(app, ketasim::cli::selected_command(app)) << '\n';
      return static_cast<int>(ketasim::ExitCode::usage);
    }
  } catch (const CLI::ParseError& error) {
    const int code = app.exit(error);
    return code == 0 ? 0 : static_cast<int>(ketasim::ExitCode::usage);
  }

  try {
    return dispatch(app, commands, arguments, joined_command(argc, argv), shell_command(argc, argv), *mpi);
  } catch (...) {
    const Failure failure = current_failure();
    std::cerr << failure.message << '\n';
    return failure.exit_code;
  }
}

}  // namespace

// Anything that escapes (e.g. std::bad_alloc while the commands are set up) is an internal error
// with its exit code, never std::terminate.
int main(int argc, char** argv) {
  try {
    return run_command_line(argc, argv);
  } catch (const std::exception& error) {
    std::cerr << "internal error: " << error.what() << '\n';
  } catch (...) {
    std::cerr << "internal error: an unknown exception\n";
  }
  return static_cast<int>(ketasim::ExitCode::internal);
}
