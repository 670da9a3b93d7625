#include "ketasim/run/run.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <exception>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <thread>

#include "ketasim/base/format.hpp"
#include "ketasim/base/threads.hpp"
#include "ketasim/input/covariate_table.hpp"
#include "ketasim/model/blocks.hpp"
#include "ketasim/output/hdf5_writer.hpp"
#include "ketasim/output/journal.hpp"
#include "ketasim/output/output_file.hpp"
#include "ketasim/run/run_report.hpp"
#include "ketasim/run/scenario_runner.hpp"

namespace ketasim {

std::vector<ArmLayout> arm_layouts(const Scenario& scenario) {
  return ScenarioRunner(scenario).layouts();
}

std::string describe_model(const ArmLayout& layout) {
  std::string overrides;
  for (const ParameterValue& parameter : layout.model_parameters)
    overrides += (overrides.empty() ? " with " : ", ") + parameter.name + " = " + format_significant(parameter.value) +
                 (parameter.unit.empty() ? "" : " " + parameter.unit);
  return layout.model + (overrides.empty() ? " (the card's values)" : overrides);
}

std::vector<std::string> scenario_input_files(const Scenario& scenario) {
  std::vector<std::string> files{scenario.source_file};
  if (scenario.cohort.table) files.push_back(scenario.cohort.table->file);
  for (const Arm& arm : scenario.arms)
    for (const DosingRule& rule : arm.regimen)
      if (rule.table) files.push_back(rule.table->file);
  return files;
}

namespace {

OutputSpace space_for(const std::vector<ArmLayout>& layouts, std::int64_t subjects_per_arm,
                      const std::string& output_path) {
  return {estimate_result_size(layouts, subjects_per_arm), free_space_for(output_path)};
}

// Before anything is simulated: a file that cannot fit would fail after all the work. A journal
// (RunOptions::journal) holds about what the file does, beside it until the file is complete.
void refuse_if_it_cannot_fit(const OutputSpace& space, const std::string& output_path, bool with_journal) {
  const std::uintmax_t least_bytes = (with_journal ? 2 : 1) * space.size.least_bytes;
  if (!space.free_bytes || least_bytes <= *space.free_bytes) return;
  throw IoError(output_path + ": not enough space: the result file needs at least " +
                format_bytes(space.size.least_bytes) +
                (with_journal ? ", and its journal as much again while the run goes (`--no-journal`: none)" : "") +
                " (" + describe_output_space(space, output_path) +
                "). Free some space, write it elsewhere, simulate fewer subjects, or write the metrics only "
                "(`variables: []` under `output:` in the scenario: " +
                format_bytes(space.size.without_trajectories_bytes) + ")");
}

}  // namespace

OutputSpace output_space(const Scenario& scenario, const std::string& output_path, const std::optional<Shard>& shard) {
  const std::int64_t subjects = shard ? shard_subjects(scenario.cohort.size, *shard).count : scenario.cohort.size;
  return space_for(arm_layouts(scenario), subjects, output_path);
}

std::string describe_output_space(const OutputSpace& space, const std::string& output_path) {
  std::string text = "about " + format_bytes(space.size.expected_bytes) + ", at most " +
                     format_bytes(space.size.upper_bound_bytes) + " uncompressed";
  if (space.free_bytes) {
    const std::filesystem::path directory = std::filesystem::path(output_path).parent_path();
    text +=
        "; " + format_bytes(*space.free_bytes) + " free in '" + (directory.empty() ? "." : directory.string()) + "'";
  }
  return text;
}

std::int64_t rank_block_size(std::int64_t default_size, std::int64_t subjects, std::int64_t ranks) {
  constexpr std::int64_t kBlocksPerRank = 8;
  const std::int64_t wanted = (subjects + kBlocksPerRank * ranks - 1) / (kBlocksPerRank * ranks);
  return std::clamp<std::int64_t>((wanted + 63) / 64 * 64, 64, std::max<std::int64_t>(default_size, 64));
}

SubjectSchedule subject_schedule(const Scenario& scenario, std::size_t arm, std::int64_t subject_id) {
  return ScenarioRunner(scenario).schedule(arm, subject_id);
}

namespace {

// What a run needs besides its output and a bounded amount of memory: the temporary files of the
// end-of-run statistics, for large cohorts. Refused before anything runs when they cannot fit.
void check_temporary_space(const Scenario& scenario, const std::filesystem::path& directory, std::uint64_t bytes) {
  if (bytes == 0) return;
  const std::optional<std::uintmax_t> available = free_space_for((directory / "report").string());
  if (!available || bytes <= *available) return;  // unknown: the writer reports a bad directory
  throw Error(ExitCode::scenario, scenario.source_file + ": cohort.size: " + std::to_string(scenario.cohort.size) +
                                      " subjects per arm need " + format_bytes(bytes) +
                                      " of temporary files for the end-of-run statistics in " + directory.string() +
                                      ", which has " + format_bytes(*available) +
                                      " free: run fewer subjects, or write the output where there is room");
}

std::int64_t default_block_size(const std::vector<ArmPlan>& arms) {
  std::size_t bytes_per_subject = 0;
  for (const ArmPlan& arm : arms)
    bytes_per_subject += arm.layout.trajectories.size() * arm.layout.time_h.size() * sizeof(float);
  // About 16 MiB of trajectories per block, in multiples of 64 subjects (the writer's chunk rows).
  const std::size_t target = (std::size_t{16} << 20) / std::max<std::size_t>(bytes_per_subject, 1);
  return static_cast<std::int64_t>(std::clamp<std::size_t>(target / 64 * 64, 64, 4096));
}

// The subjects of every arm the run simulates: the whole cohort, or the shard's share of it.
SubjectRange simulated_subjects(const Scenario& scenario, const std::optional<Shard>& shard) {
  const std::int64_t total = scenario.cohort.size;
  if (!shard) return {0, total};
  const std::string given = std::to_string(shard->index) + "/" + std::to_string(shard->count);
  if (shard->index < 1 || shard->index > shard->count)
    throw Error(ExitCode::usage, "--shard " + given + ": expected INDEX/COUNT with 1 <= INDEX <= COUNT");
  if (shard->count > total) {
    throw Error(ExitCode::usage, "--shard " + given + ": " + std::to_string(shard->count) + " shards of " +
                                     std::to_string(total) + " subjects per arm would leave shards without subjects; " +
                                     "split " + scenario.source_file + " into at most " + std::to_string(total) +
                                     " shards");
  }
  return shard_subjects(total, *shard);
}

// The provenance the writer stores at the root of the file; `subjects`: the shard's, with one.
RunInfo run_info(const Scenario& scenario, const std::optional<Shard>& shard, SubjectRange subjects) {
  RunInfo info;
  info.scenario_file = scenario.source_file;
  info.scenario_yaml = scenario.yaml_text;
  info.scenario_name = scenario.name;
  info.model_name = scenario.model.name;
  info.seed = scenario.cohort.seed;
  info.subjects_per_arm = scenario.cohort.size;
  info.replicates = scenario.cohort.replicates;
  info.subjects_per_replicate = scenario.cohort.trial_size();
  info.solver_method = to_string(scenario.solver.method);
  info.solver_rtol = scenario.solver.rtol;
  info.solver_atol = scenario.solver.atol;
  if (shard) info.shard = RunInfo::ShardPart{*shard, subjects};
  return info;
}

// Whose journal it is: a shard's (its shard), rank r's of R (r+1/R, over the whole cohort), or
// none (a whole run).
std::optional<Shard> journal_place(const RunOptions& options) {
  if (options.rank) return Shard{options.rank->rank + 1, options.rank->ranks};
  return options.shard;
}

// The writer of a run with an output file (refused first if the file cannot fit); none without.
std::optional<ResultWriter> open_writer(const Scenario& scenario, const RunOptions& options,
                                        const std::vector<ArmLayout>& layouts, SubjectRange subjects,
                                        unsigned threads) {
  if (options.output_path.empty()) return std::nullopt;
  if (options.rank) {
    // A rank writes its journal only (its writer prepares the blocks and is never finished): about
    // its share of the file.
    const std::int64_t share = (subjects.count + options.rank->ranks - 1) / options.rank->ranks;
    refuse_if_it_cannot_fit(space_for(layouts, share, options.output_path), options.output_path, false);
  } else {
    refuse_if_it_cannot_fit(space_for(layouts, subjects.count, options.output_path), options.output_path,
                            options.journal != RunOptions::Journal::none);
  }
  ResultWriterOptions writer_options;
  writer_options.summary_threads = threads;
  writer_options.cancel = options.cancel;
  RunInfo info = run_info(scenario, options.shard, subjects);
  if (!options.rank_journals.empty()) {
    info.mpi_ranks = static_cast<std::int64_t>(options.rank_journals.size());
    info.mpi_rank_busy_seconds = options.rank_busy_seconds;
  }
  return std::make_optional<ResultWriter>(options.output_path, info, layouts, scenario.cohort.size, writer_options);
}

// What a worker hands to the calling thread for one range of subjects, one block per arm: with an
// output file the blocks prepared for the writer (trajectory chunks already compressed, on the
// worker), without one the blocks themselves.
struct FinishedRange {
  std::int64_t index = 0;  // of the block (block_of)
  std::int64_t subjects = 0;
  std::vector<PreparedBlock> prepared;
  std::vector<SubjectBlock> blocks;
};

// The cohort's blocks simulated on worker threads and handed, as they finish, to the calling
// thread, which writes them: at most two ranges per thread in flight, so memory is bounded by the
// blocks in flight, not by the cohort. The first failure of a worker or of the calling thread
// stops every worker and is rethrown; a cancellation (RunOptions::cancel) throws InterruptedError.
// The blocks marked in `done` (read back from a journal) are not simulated.
class BlockPipeline {
 public:
  BlockPipeline(const ScenarioRunner& runner, const RunOptions& options, const ResultWriter* writer,
                SubjectRange subjects, std::int64_t block_size, const std::vector<bool>& done, unsigned threads)
      : runner_(runner),
        options_(options),
        writer_(writer),
        cohort_(subjects),
        block_size_(block_size),
        blocks_(static_cast<std::size_t>(block_count(cohort_, block_size_))),
        done_(done),
        pending_(static_cast<std::size_t>(std::count(done.begin(), done.end(), false))),
        max_in_flight_(2 * static_cast<std::size_t>(threads)),
        threads_(threads) {}

  // Runs every block; `consume` is called on the calling thread for each finished range, `waiting`
  // (if set) about every 100 ms while the calling thread waits for one.
  void run(const std::function<void(FinishedRange&&)>& consume, const std::function<void()>& waiting = {}) {
    std::vector<std::jthread> pool;
    for (unsigned i = 0; i < threads_; ++i) pool.emplace_back([this] { work(); });
    try {
      for (std::size_t handed = 0; handed < pending_; ++handed) {
        std::optional<FinishedRange> range = next_finished(waiting);
        if (!range) break;
        const std::int64_t subjects = range->subjects;
        consume(std::move(*range));
        subjects_done_ += subjects;
        release();
      }
    } catch (...) {
      stop(std::current_exception());
    }
    pool.clear();  // joins
    if (failure_) std::rethrow_exception(failure_);
    if (cancelled()) throw interrupted();  // a worker saw it first
  }

 private:
  bool cancelled() const { return options_.cancel != nullptr && options_.cancel->load(); }

  InterruptedError interrupted() const {
    return InterruptedError("interrupted after " + std::to_string(subjects_done_) + " of " +
                            std::to_string(cohort_.count) + " subjects; nothing written");
  }

  // The next range a worker finished; nullopt once the run is aborted. `waiting` is called, without
  // the lock, each time 100 ms pass without one.
  std::optional<FinishedRange> next_finished(const std::function<void()>& waiting) {
    while (true) {
      {
        std::unique_lock lock(mutex_);
        // A signal handler cannot notify the condition variable: poll for cancellation.
        if (cancelled()) throw interrupted();
        if (changed_.wait_for(lock, std::chrono::milliseconds(100), [&] { return abort_ || !finished_.empty(); })) {
          if (abort_) return std::nullopt;
          FinishedRange range = std::move(finished_.front());
          finished_.pop_front();
          return range;
        }
      }
      if (waiting) waiting();
    }
  }

  // A consumed range leaves room for another in flight.
  void release() {
    {
      std::lock_guard lock(mutex_);
      --in_flight_;
    }
    changed_.notify_all();
  }

  void stop(const std::exception_ptr& error) {
    {
      std::lock_guard lock(mutex_);
      abort_ = true;
      if (error && !failure_) failure_ = error;
    }
    changed_.notify_all();
  }

  // A worker: takes the next range while there is room in flight, simulates it (and prepares it for
  // the writer), hands it over; an interruption or failure stops every worker.
  void work() {
    while (true) {
      std::size_t index = 0;
      {
        std::unique_lock lock(mutex_);
        changed_.wait(lock, [&] { return abort_ || in_flight_ < max_in_flight_; });
        while (next_range_ < blocks_ && done_[next_range_]) ++next_range_;
        if (abort_ || cancelled() || next_range_ >= blocks_) return;
        index = next_range_++;
        ++in_flight_;
      }
      try {
        FinishedRange range = simulate(index);
        std::lock_guard lock(mutex_);
        finished_.push_back(std::move(range));
      } catch (const InterruptedError&) {  // the calling thread reports it
        stop(nullptr);
        continue;
      } catch (...) {
        stop(std::current_exception());
        continue;
      }
      changed_.notify_all();
    }
  }

  FinishedRange simulate(std::size_t index) const {
    const SubjectRange subjects = block_of(cohort_, block_size_, static_cast<std::int64_t>(index));
    FinishedRange range{
        static_cast<std::int64_t>(index), subjects.count, {}, runner_.simulate(subjects, options_.cancel)};
    if (writer_ && !options_.on_block) {
      for (SubjectBlock& block : range.blocks) range.prepared.push_back(writer_->prepare(std::move(block)));
      range.blocks.clear();
    }
    return range;
  }

  const ScenarioRunner& runner_;
  const RunOptions& options_;
  const ResultWriter* writer_;
  const SubjectRange cohort_;
  const std::int64_t block_size_;
  const std::size_t blocks_;
  const std::vector<bool>& done_;
  const std::size_t pending_;
  const std::size_t max_in_flight_;
  const unsigned threads_;
  std::int64_t subjects_done_ = 0;  // handed to the calling thread; only it touches this

  std::mutex mutex_;
  std::condition_variable changed_;
  std::deque<FinishedRange> finished_;
  std::size_t in_flight_ = 0;
  std::size_t next_range_ = 0;
  bool abort_ = false;
  std::exception_ptr failure_;
};

double seconds_since(std::chrono::steady_clock::time_point started) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
}

// The per-time summaries and the close of the file, with their progress.
void finish_writer(ResultWriter& writer, const RunOptions& options, Progress& progress,
                   std::chrono::steady_clock::time_point started) {
  try {
    writer.finish([&](const FinishProgress& step) {
      progress.phase =
          step.summaries_done < step.summaries_total ? Progress::Phase::summaries : Progress::Phase::closing;
      progress.summaries_done = step.summaries_done;
      progress.summaries_total = step.summaries_total;
      progress.elapsed_seconds = seconds_since(started);
      if (options.on_progress) options.on_progress(progress);
    });
  } catch (const InterruptedError&) {
    throw InterruptedError("interrupted while computing the summaries; nothing written");
  }
}

}  // namespace

namespace {

void note(const RunOptions& options, const std::string& text) {
  if (options.on_note) options.on_note(text);
}

// The identity of this run, which its journal records: the tables it reads are checksummed (the
// scenario's text is in the run's RunInfo).
JournalIdentity journal_identity_of(const Scenario& scenario, const RunOptions& options, SubjectRange subjects,
                                    std::int64_t block_size, const std::vector<ArmLayout>& layouts,
                                    std::optional<Shard> place) {
  const std::vector<std::string> inputs = scenario_input_files(scenario);
  return journal_identity(run_info(scenario, options.shard, subjects), place, subjects, block_size, layouts,
                          std::vector<std::string>(inputs.begin() + 1, inputs.end()));
}

// The journal a run resumes from, checked before anything is written: locked, its identity that of
// this run. nullopt when there is none (the run starts afresh). Refuses an existing journal when the
// run does not resume: it holds the work of an interrupted run, which is never overwritten.
struct JournalSource {
  JournalLock lock;
  std::unique_ptr<JournalReader> reader;
};

std::optional<JournalSource> find_journal(const RunOptions& options, const JournalIdentity& identity) {
  const std::string path = journal_path_for(options.output_path);
  std::error_code error;
  if (options.output_path.empty() || !std::filesystem::exists(std::filesystem::symlink_status(path, error))) {
    if (options.journal == RunOptions::Journal::resume) note(options, "no journal " + path + ": starting afresh");
    return std::nullopt;
  }
  if (options.journal != RunOptions::Journal::resume) {
    throw IoError(path + ": the journal of an interrupted run of " + options.output_path +
                  " exists: pass --resume to continue that run from it, or delete it to start afresh");
  }
  JournalSource source{JournalLock(path), nullptr};
  source.reader = std::make_unique<JournalReader>(path);
  const std::string difference = identity_difference(source.reader->identity(), identity);
  if (!difference.empty()) {
    throw IoError(path + ": the journal is of another run: " + difference +
                  "; resume with the same scenario, seed, --subjects, --shard and ketasim build, or delete the "
                  "journal to start afresh");
  }
  return source;
}

// Reads the blocks of a journal back: each is checked by the writer (restore), counted in the
// report and marked done, and written into the output unless the run is a rank's (which writes
// none). The number of blocks read.
std::int64_t read_back(JournalReader& reader, const std::string& path, const RunOptions& options, ResultWriter& writer,
                       ReportCollector& collector, std::vector<bool>& done, Progress& progress,
                       std::chrono::steady_clock::time_point started) {
  std::int64_t blocks = 0;
  while (std::optional<JournaledBlock> block = reader.next()) {
    if (options.cancel != nullptr && options.cancel->load())
      throw InterruptedError("interrupted while reading the journal back; the journal is unchanged");
    if (done[static_cast<std::size_t>(block->index)])  // another rank's block, or one read already
      throw IoError(path + ": block " + std::to_string(block->index) +
                    " is not this journal's to hold: another rank's, or in two journals");
    for (JournaledArm& arm : block->arms) {
      PreparedBlock prepared = writer.restore(std::move(arm.columns), std::move(arm.chunks), std::move(arm.rows));
      collector.add(prepared.columns());
      if (!options.rank) writer.write(std::move(prepared));
    }
    done[static_cast<std::size_t>(block->index)] = true;
    progress.subjects_done += block->arms.empty() ? 0 : block->arms.front().columns.count;
    progress.subjects_resumed = progress.subjects_done;
    progress.elapsed_seconds = seconds_since(started);
    if (options.on_progress) options.on_progress(progress);
    ++blocks;
  }
  return blocks;
}

// The blocks of the journal read back (read_back) instead of being simulated; the journal is then
// cut to its valid records and reopened for the blocks to come.
JournalWriter replay_journal(JournalSource&& source, const RunOptions& options, ResultWriter& writer,
                             ReportCollector& collector, std::vector<bool>& done, Progress& progress,
                             std::chrono::steady_clock::time_point started, std::int64_t own_blocks) {
  JournalReader& reader = *source.reader;
  progress.phase = Progress::Phase::journals;
  progress.journals = 1;
  const std::int64_t blocks =
      read_back(reader, journal_path_for(options.output_path), options, writer, collector, done, progress, started);
  progress.phase = Progress::Phase::simulating;
  std::string text = "resuming from " + journal_path_for(options.output_path) + ": " + std::to_string(blocks) + " of " +
                     std::to_string(own_blocks) + (options.rank ? " blocks of this rank (" : " blocks (") +
                     std::to_string(progress.subjects_done) + " subjects of every arm) read back";
  if (!reader.discarded_reason().empty())
    text += "; discarded its last " + std::to_string(reader.discarded_bytes()) + " bytes: " + reader.discarded_reason();
  note(options, text);
  return JournalWriter::reopen(std::move(source.lock), reader.valid_bytes(), blocks);
}

// Called in a handler: rethrows the run's failure. A journal with blocks stays for --resume (an
// interruption then becomes RunInterrupted, any other failure gets a note); one without any is
// removed, since there is nothing to resume from.
[[noreturn]] void rethrow_keeping_journal(std::optional<JournalWriter>& journal, const RunOptions& options,
                                          std::int64_t blocks_total) {
  const std::string path = journal_path_for(options.output_path);
  if (journal && journal->blocks_written() == 0) {
    try {
      journal->remove();
    } catch (const IoError&) {  // the run's own failure is the one to report
    }
    journal.reset();
  }
  try {
    throw;
  } catch (const InterruptedError&) {
    if (!journal) throw;
    throw RunInterrupted(journal->blocks_written(), blocks_total, path);
  } catch (...) {
    if (journal) {
      note(options, path + " keeps " + std::to_string(journal->blocks_written()) + " of " +
                        std::to_string(blocks_total) + " blocks: rerun with --resume to continue from them");
    }
    throw;
  }
}

}  // namespace

RunInterrupted::RunInterrupted(std::int64_t blocks_done, std::int64_t blocks_total, std::string journal_path)
    : InterruptedError("interrupted after " + std::to_string(blocks_done) + " of " + std::to_string(blocks_total) +
                       " blocks; " + journal_path + " keeps them: resume with --resume"),
      blocks_done_(blocks_done),
      blocks_total_(blocks_total),
      journal_path_(std::move(journal_path)) {}

namespace {

// Rank 0 of an MPI run: every rank's journal read back into the output, in rank order (each checked
// to be rank r+1/R's journal of this very run); IoError when a block is in none of them.
void read_rank_journals(const Scenario& scenario, const RunOptions& options, SubjectRange subjects,
                        std::int64_t block_size, const std::vector<ArmLayout>& layouts, ResultWriter& writer,
                        ReportCollector& collector, std::vector<bool>& done, Progress& progress,
                        std::chrono::steady_clock::time_point started) {
  const auto ranks = static_cast<std::int64_t>(options.rank_journals.size());
  progress.phase = Progress::Phase::journals;
  progress.journals = options.rank_journals.size();
  for (std::int64_t rank = 0; rank < ranks; ++rank) {
    const std::string& path = options.rank_journals[static_cast<std::size_t>(rank)];
    const JournalLock lock(path);  // no rank may still be appending to it
    JournalReader reader(path);
    const JournalIdentity identity =
        journal_identity_of(scenario, options, subjects, block_size, layouts, Shard{rank + 1, ranks});
    const std::string difference = identity_difference(reader.identity(), identity);
    if (!difference.empty())
      throw IoError(path + ": not the journal of rank " + std::to_string(rank) + " of this run: " + difference);
    read_back(reader, path, options, writer, collector, done, progress, started);
    if (!reader.discarded_reason().empty())
      throw IoError(path + ": its last " + std::to_string(reader.discarded_bytes()) +
                    " bytes are damaged: " + reader.discarded_reason() + "; --resume simulates those blocks again");
  }
  const auto missing = std::count(done.begin(), done.end(), false);
  if (missing > 0) {
    throw IoError("the journals of the " + std::to_string(ranks) + " MPI ranks lack " + std::to_string(missing) +
                  " of " + std::to_string(done.size()) + " blocks; --resume simulates them");
  }
  progress.phase = Progress::Phase::simulating;
}

// Where the end-of-run report's values go beyond RunOptions::report_memory_bytes.
std::filesystem::path spill_directory_for(const RunOptions& options) {
  return options.output_path.empty() ? std::filesystem::temp_directory_path()
                                     : std::filesystem::absolute(options.output_path).parent_path();
}

// The combinations of options run_scenario does not take (a programming error of the caller).
void check_run_options(const RunOptions& options) {
  const bool journaled = options.journal != RunOptions::Journal::none;
  const bool from_ranks = !options.rank_journals.empty();
  if (journaled && (options.output_path.empty() || options.on_block))
    throw std::invalid_argument("run_scenario: a journal needs an output file and no on_block");
  if (options.rank && (!journaled || options.shard || from_ranks || options.rank->ranks < 1 || options.rank->rank < 0 ||
                       options.rank->rank >= options.rank->ranks))
    throw std::invalid_argument("run_scenario: a rank needs a journal, no shard and a rank within its ranks");
  if (from_ranks && (journaled || options.shard || options.output_path.empty() || options.on_block))
    throw std::invalid_argument("run_scenario: the rank journals need an output file, no journal, shard or on_block");
}

// The run's block size: as given, else the default, made smaller on MPI ranks (rank_block_size).
std::int64_t run_block_size(const RunOptions& options, const std::vector<ArmPlan>& arms, std::int64_t subjects) {
  if (options.block_size > 0) return options.block_size;
  const std::int64_t ranks =
      options.rank ? options.rank->ranks : static_cast<std::int64_t>(options.rank_journals.size());
  return ranks > 1 ? rank_block_size(default_block_size(arms), subjects, ranks) : default_block_size(arms);
}

// A rank simulates its blocks only: the others are marked done, for it. Its blocks (all, without a
// rank), and their subjects in `progress`.
std::int64_t mark_own_blocks(const RunOptions& options, SubjectRange subjects, std::int64_t block_size,
                             std::vector<bool>& done, Progress& progress) {
  progress.subjects_total = subjects.count;
  if (!options.rank) return static_cast<std::int64_t>(done.size());
  std::int64_t own_blocks = 0;
  progress.subjects_total = 0;
  for (std::size_t b = 0; b < done.size(); ++b) {
    done[b] = static_cast<std::int64_t>(b) % options.rank->ranks != options.rank->rank;
    if (done[b]) continue;
    ++own_blocks;
    progress.subjects_total += block_of(subjects, block_size, static_cast<std::int64_t>(b)).count;
  }
  return own_blocks;
}

// Once the output is complete and renamed, its journal and the ranks' journals are no longer needed.
// A rank keeps its journal: rank 0 writes the output from it.
void remove_journals(std::optional<JournalWriter>& journal, const RunOptions& options) {
  if (journal && !options.rank) journal->remove();
  for (const std::string& path : options.rank_journals) {
    std::error_code error;
    if (!std::filesystem::remove(path, error) && error)
      note(options, path + ": cannot remove it (" + error.message() + "); the output is complete: delete it");
  }
}

}  // namespace

RunReport run_scenario(const Scenario& scenario, const RunOptions& options) {
  const auto started = std::chrono::steady_clock::now();
  const ScenarioRunner runner(scenario);
  const unsigned threads = thread_count(options.threads);
  const SubjectRange subjects = simulated_subjects(scenario, options.shard);  // refuses a shard it cannot honour
  const std::vector<ArmLayout> layouts = runner.layouts();
  check_run_options(options);
  const bool journaled = options.journal != RunOptions::Journal::none;
  const bool from_ranks = !options.rank_journals.empty();
  if (options.on_start) options.on_start(layouts);
  // Before any work: where the output may go, and room for the end-of-run report's temporary files.
  if (!options.output_path.empty()) check_output_path(options.output_path, scenario_input_files(scenario));
  const std::filesystem::path spill_directory = spill_directory_for(options);
  check_temporary_space(scenario, spill_directory,
                        report_temporary_bytes(layouts, subjects.count, options.report_memory_bytes));
  const std::int64_t block_size = run_block_size(options, runner.arms(), subjects.count);
  const JournalIdentity identity =
      journaled ? journal_identity_of(scenario, options, subjects, block_size, layouts, journal_place(options))
                : JournalIdentity{};
  // Also without a journal of its own, a run refuses to run over the journal of an interrupted one.
  std::optional<JournalSource> journal_source = find_journal(options, identity);
  std::optional<ResultWriter> writer = open_writer(scenario, options, layouts, subjects, threads);
  ReportCollector collector(scenario, runner.arms(), runner.plan(), subjects.count, options.report_memory_bytes,
                            spill_directory);
  Progress progress;
  progress.arms = runner.arms().size();
  std::vector<bool> done(static_cast<std::size_t>(block_count(subjects, block_size)), false);
  const std::int64_t own_blocks = mark_own_blocks(options, subjects, block_size, done, progress);
  std::optional<JournalWriter> journal;
  try {
    if (from_ranks)
      read_rank_journals(scenario, options, subjects, block_size, layouts, *writer, collector, done, progress, started);
    if (journal_source)
      journal =
          replay_journal(std::move(*journal_source), options, *writer, collector, done, progress, started, own_blocks);
    else if (journaled)
      journal = JournalWriter::create(journal_path_for(options.output_path), identity);
    journal_source.reset();
    // After each block, and between blocks (large blocks of slow subjects take seconds): the rate and
    // the time left stay current, and a caller that gathers the progress of other processes gets called.
    const auto report_progress = [&] {
      progress.elapsed_seconds = seconds_since(started);
      if (options.on_progress) options.on_progress(progress);
    };
    BlockPipeline pipeline(runner, options, writer ? &*writer : nullptr, subjects, block_size, done, threads);
    pipeline.run(
        [&](FinishedRange&& range) {
          if (journal) journal->append(range.index, range.prepared);
          for (PreparedBlock& block : range.prepared) {
            collector.add(block.columns());
            if (!options.rank) writer->write(std::move(block));
          }
          for (const SubjectBlock& block : range.blocks) {
            collector.add(block);
            if (options.on_block) options.on_block(block);
            if (writer) writer->write(block);
          }
          progress.subjects_done += range.subjects;
          report_progress();
        },
        report_progress);
    // A rank's writer only prepared its blocks: it is not finished, and removes its temporary file.
    if (writer && !options.rank) finish_writer(*writer, options, progress, started);
  } catch (...) {
    rethrow_keeping_journal(journal, options, own_blocks);
  }
  writer.reset();
  remove_journals(journal, options);
  progress.phase = Progress::Phase::report;
  if (options.on_progress) options.on_progress(progress);
  RunReport report;
  report.arms = collector.finish();
  report.subjects_per_arm = scenario.cohort.size;
  report.subjects = subjects;
  report.subjects_resumed = from_ranks ? 0 : progress.subjects_resumed;  // the ranks' journals were not a resume
  report.threads = threads;
  report.elapsed_seconds = seconds_since(started);
  return report;
}

}  // namespace ketasim
