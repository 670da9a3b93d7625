#pragma once
// A whole scenario run: subjects in blocks over threads, every arm per subject, blocks streamed
// to the HDF5 writer as they finish. Memory is bounded by the blocks in flight, not by subjects
// times time points. Results are identical for any thread count.

#include <atomic>
#include <cstdint>
#include <functional>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "ketasim/base/quantiles.hpp"  // quantile(), for the callers of run.hpp
#include "ketasim/input/scenario.hpp"
#include "ketasim/output/hdf5_writer.hpp"
#include "ketasim/run/cohort.hpp"
#include "ketasim/solve/results.hpp"
#include "ketasim/solve/timeline.hpp"

namespace ketasim {

// What a run is doing, for a progress line. After the simulation, a run with an output file
// computes the per-time summaries of every trajectory (reading the file back), then closes the
// file, flushes it to disk and renames it: for large runs these take minutes, not an instant.
// Last, every run computes the end-of-run statistics over its subjects (the report). While
// simulating, on_progress is called after each block and about every 100 ms between blocks.
// Before simulating, a run that resumes reads its journal back (`journals` = 1), and the output of
// MPI ranks is written from their journals (`journals` = the ranks) with nothing simulated.
struct Progress {
  enum class Phase { journals, simulating, summaries, closing, report };
  Phase phase = Phase::simulating;
  std::size_t journals = 0;        // Phase::journals: how many are read
  std::int64_t subjects_done = 0;  // subjects with every arm simulated
  std::int64_t subjects_total = 0;
  std::int64_t subjects_resumed = 0;  // of subjects_done, those read back from a journal (not simulated now)
  std::size_t arms = 0;               // subject-arms simulated = subjects_done * arms
  std::size_t summaries_done = 0;     // Phase::summaries: trajectory summaries (one per trajectory and arm)
  std::size_t summaries_total = 0;
  double elapsed_seconds = 0.0;
};

// One rank of `mpirun -n R ketasim run` (docs/hpc.md, "MPI"): block b of the cohort is rank
// (b mod R)'s, so that subjects whose cost differs along the cohort (as-needed dosing, a dosing
// table, the ODE fallback) are spread over every rank rather than left to one.
struct RankBlocks {
  std::int64_t rank = 0;  // from 0
  std::int64_t ranks = 1;
};

// The block size of a run on `ranks` MPI ranks when none is given: the default (about 16 MiB of
// trajectories, 64 to 4096 subjects), made smaller when needed, to a multiple of 64, so that each
// rank has about 8 blocks or more to balance with.
std::int64_t rank_block_size(std::int64_t default_size, std::int64_t subjects, std::int64_t ranks);

struct RunOptions {
  std::string output_path;  // "" = simulate and summarise without writing a file
  unsigned threads = 0;     // 0 = default_thread_count() (threads.hpp)
  // Only this shard of every arm's subjects (shard_subjects, blocks.hpp); the output file is then
  // a shard file for `ketasim merge`. Refused (Error, usage) with more shards than subjects.
  std::optional<Shard> shard;
  std::int64_t block_size = 0;                       // 0 = chosen from the size of a subject's output
  std::function<void(const Progress&)> on_progress;  // called from the calling thread
  // When set and it becomes true (e.g. from a signal handler), the run stops at the next block,
  // removes its temporary file and throws InterruptedError. Polled a few times a second.
  const std::atomic<bool>* cancel = nullptr;
  // Every finished block of subjects, on the calling thread, in completion order (not subject
  // order): for callers that analyse the results in memory (reproduction checks, calibration).
  std::function<void(const SubjectBlock&)> on_block;
  // Called once, on the calling thread, before any block: the layout of every arm (as written to
  // the output file), which the blocks follow.
  std::function<void(const std::vector<ArmLayout>&)> on_start;
  // A journal of the finished blocks next to the output (journal.hpp; docs/hpc.md, "Resume"), so
  // that an interrupted run can continue: `write` starts one (refusing, IoError, an existing
  // journal: it holds an interrupted run's work); `resume` continues from an existing one (IoError
  // when it is of another run) or, without one, starts afresh. The journal is removed once the
  // output is renamed into place; a run interrupted after some blocks keeps it (RunInterrupted).
  // Needs an output path and no on_block. With `none`, a run with an output file still refuses
  // the journal of an interrupted run of it.
  enum class Journal { none, write, resume };
  Journal journal = Journal::none;
  // Notes for the user, on the calling thread: what a resume read back, a resume without a journal.
  std::function<void(const std::string&)> on_note;
  // With `rank`, the run simulates only that rank's blocks (RankBlocks) into its journal
  // (journal_path_for(output_path); `journal` must be write or resume) and writes no output file:
  // the journal, kept when the rank is done, is what the rank hands to rank 0. Not with `shard`.
  std::optional<RankBlocks> rank;
  // Rank 0 after every rank is done: the journals of the ranks, in rank order. The output is written
  // from their blocks, nothing is simulated; IoError (nothing written, the journals kept) when one is
  // of another run or a block is in none of them. They are removed once the output is renamed into
  // place. The file records `rank_journals.size()` as mpi_ranks and `rank_busy_seconds`.
  std::vector<std::string> rank_journals;
  std::vector<double> rank_busy_seconds;
  // The end-of-run report (RunReport) keeps at most this many bytes of per-subject values in
  // memory; beyond, they go to unlinked temporary files in the output's directory (the system's
  // temporary directory without an output file), 8 bytes per subject, arm and reported value
  // (5 + the assessments). The quantiles are exact either way.
  std::size_t report_memory_bytes = std::size_t{64} << 20;
};

// A journaled run stopped by RunOptions::cancel after some blocks: the journal keeps them.
class RunInterrupted : public InterruptedError {
 public:
  RunInterrupted(std::int64_t blocks_done, std::int64_t blocks_total, std::string journal_path);
  std::int64_t blocks_done() const { return blocks_done_; }
  std::int64_t blocks_total() const { return blocks_total_; }
  const std::string& journal_path() const { return journal_path_; }

 private:
  std::int64_t blocks_done_;
  std::int64_t blocks_total_;
  std::string journal_path_;
};

struct Quantiles {
  double p05 = 0.0, p50 = 0.0, p95 = 0.0;
};

struct ArmReport {
  std::string name;
  std::string description;
  std::int64_t subjects = 0;
  std::int64_t failed = 0;
  std::int64_t ode_fallbacks = 0;  // subjects solved by the ODE path under method auto
  std::size_t doses = 0;           // the most doses a subject can be given
  Quantiles sessions_given;        // sessions started within the grid (NaN unless the dosed metrics are written)
  Quantiles cmax_ng_per_ml;
  Quantiles first_dose_peak_dissociation;
  Quantiles weekly_auc_ng_h_per_ml;       // mean AUC per week over the run
  Quantiles dissociation_hours_per_week;  // time above the threshold, per week
  // Models with a MADRS, per assessment (empty without one): observed MADRS minus baseline
  // (median over subjects), and the fractions of subjects in response and in remission.
  std::vector<double> assessment_h;
  std::vector<double> madrs_change_median;
  std::vector<double> response_fraction;
  std::vector<double> remission_fraction;
};

struct RunReport {
  std::vector<ArmReport> arms;
  std::int64_t subjects_per_arm = 0;  // of the scenario's cohort
  SubjectRange subjects;              // those simulated: all, or the shard's (RunOptions::shard)
  std::int64_t subjects_resumed = 0;  // of them, those read back from a journal (RunOptions::journal)
  unsigned threads = 0;
  double elapsed_seconds = 0.0;
};

// With an output path, checks before simulating anything that the path may be written
// (check_output_path, output_file.hpp: not the scenario or one of its tables, ...) and that the
// file can fit (output_space), with its journal (RunOptions::journal) as much again; throws IoError
// otherwise.
RunReport run_scenario(const Scenario& scenario, const RunOptions& options);

// The files a scenario reads: the scenario file, cohort.from_csv and every doses_from table.
std::vector<std::string> scenario_input_files(const Scenario& scenario);

// The size of the result file of `scenario` (hdf5_writer.hpp) and the space free where
// `output_path` would be written. A run is refused when even the least it can take does not fit
// (it certainly fails); when only the expected size does not fit it may fail, and is not refused.
struct OutputSpace {
  ResultSizeEstimate size;
  std::optional<std::uintmax_t> free_bytes;  // nullopt: the file system does not say
  bool certainly_too_small() const { return free_bytes && size.least_bytes > *free_bytes; }
  bool maybe_too_small() const { return free_bytes && size.expected_bytes > *free_bytes; }
};
// With `shard`, of the shard's file (shard_subjects; the shard must be valid for the scenario).
OutputSpace output_space(const Scenario& scenario, const std::string& output_path,
                         const std::optional<Shard>& shard = std::nullopt);

// "about 1.07 GB (at most 3.9 GB uncompressed)", and the free space when known.
std::string describe_output_space(const OutputSpace& space, const std::string& output_path);

// One subject of one arm as the run simulates it, for the timeline command: its covariates and the
// doses it was given (after adherence, with the doses its as-needed rule triggered).
struct SubjectSchedule {
  Subject subject;
  std::vector<Dose> doses;
  int missed = 0;
  std::string failure;  // why the solve failed ("" when it did not)
  BreakpointPlan plan;  // the plan the solve ran (empty when the subject's model could not be built)
};

SubjectSchedule subject_schedule(const Scenario& scenario, std::size_t arm, std::int64_t subject_id);

// The layout of every arm's output (columns, grid, nominal doses), as written to the file.
std::vector<ArmLayout> arm_layouts(const Scenario& scenario);

// An arm's model in words, for messages and summaries: "ketamine_venous with V1 = 120 L, CL =
// 60 L/h", or "esketamine_intranasal (the card's values)".
std::string describe_model(const ArmLayout& layout);

// Bytes of temporary files a run writes besides its output, in the output's directory: the values
// of the end-of-run report once they exceed RunOptions::report_memory_bytes (then 8 bytes per
// subject, arm and reported value), else 0. For estimates of the disk a run needs.
std::uint64_t report_temporary_bytes(const std::vector<ArmLayout>& layouts, std::int64_t subjects_per_arm,
                                     std::size_t report_memory_bytes);

}  // namespace ketasim
