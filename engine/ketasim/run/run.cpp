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

// The writer of a run with an output file (refused first if the file cannot fit); none without.
std::optional<ResultWriter> open_writer(const Scenario& scenario, const RunOptions& options,
                                        const std::vector<ArmLayout>& layouts, SubjectRange subjects,
                                        unsigned threads) {
  if (options.output_path.empty()) return std::nullopt;
  refuse_if_it_cannot_fit(space_for(layouts, subjects.count, options.output_path), options.output_path,
                          options.journal != RunOptions::Journal::none);
  ResultWriterOptions writer_options;
  writer_options.summary_threads = threads;
  writer_options.cancel = options.cancel;
  return std::make_optional<ResultWriter>(options.output_path, run_info(scenario, options.shard, subjects), layouts,
                                          scenario.cohort.size, writer_options);
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

  // Runs every block; `consume` is called on the calling thread for each finished range.
  void run(const std::function<void(FinishedRange&&)>& consume) {
    std::vector<std::jthread> pool;
    for (unsigned i = 0; i < threads_; ++i) pool.emplace_back([this] { work(); });
    try {
      for (std::size_t handed = 0; handed < pending_; ++handed) {
        std::optional<FinishedRange> range = next_finished();
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

  // The next range a worker finished; nullopt once the run is aborted.
  std::optional<FinishedRange> next_finished() {
    std::unique_lock lock(mutex_);
    // A signal handler cannot notify the condition variable: poll for cancellation.
    do {
      if (cancelled()) throw interrupted();
    } while (!changed_.wait_for(lock, std::chrono::milliseconds(100), [&] { return abort_ || !finished_.empty(); }));
    if (abort_) return std::nullopt;
    FinishedRange range = std::move(finished_.front());
    finished_.pop_front();
    return range;
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
                                    std::int64_t block_size, const std::vector<ArmLayout>& layouts) {
  const std::vector<std::string> inputs = scenario_input_files(scenario);
  return journal_identity(run_info(scenario, options.shard, subjects), options.shard, subjects, block_size, layouts,
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

// The blocks of the journal written into the output (and counted in the report) instead of being
// simulated; the journal is then cut to its valid records and reopened for the blocks to come.
JournalWriter replay_journal(JournalSource&& source, const RunOptions& options, ResultWriter& writer,
                             ReportCollector& collector, std::vector<bool>& done, Progress& progress) {
  JournalReader& reader = *source.reader;
  std::int64_t blocks = 0;
  while (std::optional<JournaledBlock> block = reader.next()) {
    if (options.cancel != nullptr && options.cancel->load())
      throw InterruptedError("interrupted while reading the journal back; the journal is unchanged");
    for (JournaledArm& arm : block->arms) {
      PreparedBlock prepared = writer.restore(std::move(arm.columns), std::move(arm.chunks), std::move(arm.rows));
      collector.add(prepared.columns());
      writer.write(std::move(prepared));
    }
    done[static_cast<std::size_t>(block->index)] = true;
    progress.subjects_done += block->arms.empty() ? 0 : block->arms.front().columns.count;
    progress.subjects_resumed = progress.subjects_done;
    ++blocks;
  }
  std::string text = "resuming from " + journal_path_for(options.output_path) + ": " + std::to_string(blocks) + " of " +
                     std::to_string(done.size()) + " blocks (" + std::to_string(progress.subjects_done) +
                     " subjects of every arm) read back";
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

RunReport run_scenario(const Scenario& scenario, const RunOptions& options) {
  const auto started = std::chrono::steady_clock::now();
  const ScenarioRunner runner(scenario);
  const unsigned threads = thread_count(options.threads);
  const SubjectRange subjects = simulated_subjects(scenario, options.shard);  // refuses a shard it cannot honour
  const std::vector<ArmLayout> layouts = runner.layouts();
  const bool journaled = options.journal != RunOptions::Journal::none;
  if (journaled && (options.output_path.empty() || options.on_block))
    throw std::invalid_argument("run_scenario: a journal needs an output file and no on_block");
  if (options.on_start) options.on_start(layouts);
  // Before any work: where the output may go, and room for the end-of-run report's temporary files.
  if (!options.output_path.empty()) check_output_path(options.output_path, scenario_input_files(scenario));
  const std::filesystem::path spill_directory = options.output_path.empty()
                                                    ? std::filesystem::temp_directory_path()
                                                    : std::filesystem::absolute(options.output_path).parent_path();
  check_temporary_space(scenario, spill_directory,
                        report_temporary_bytes(layouts, subjects.count, options.report_memory_bytes));
  const std::int64_t block_size = options.block_size > 0 ? options.block_size : default_block_size(runner.arms());
  const JournalIdentity identity =
      journaled ? journal_identity_of(scenario, options, subjects, block_size, layouts) : JournalIdentity{};
  // Also without a journal of its own, a run refuses to run over the journal of an interrupted one.
  std::optional<JournalSource> journal_source = find_journal(options, identity);
  std::optional<ResultWriter> writer = open_writer(scenario, options, layouts, subjects, threads);

  ReportCollector collector(scenario, runner.arms(), runner.plan(), subjects.count, options.report_memory_bytes,
                            spill_directory);
  Progress progress;
  progress.subjects_total = subjects.count;
  progress.arms = runner.arms().size();
  std::vector<bool> done(static_cast<std::size_t>(block_count(subjects, block_size)), false);
  std::optional<JournalWriter> journal;
  try {
    if (journal_source)
      journal = replay_journal(std::move(*journal_source), options, *writer, collector, done, progress);
    else if (journaled)
      journal = JournalWriter::create(journal_path_for(options.output_path), identity);
    journal_source.reset();
    BlockPipeline pipeline(runner, options, writer ? &*writer : nullptr, subjects, block_size, done, threads);
    pipeline.run([&](FinishedRange&& range) {
      if (journal) journal->append(range.index, range.prepared);
      for (PreparedBlock& block : range.prepared) {
        collector.add(block.columns());
        writer->write(std::move(block));
      }
      for (const SubjectBlock& block : range.blocks) {
        collector.add(block);
        if (options.on_block) options.on_block(block);
        if (writer) writer->write(block);
      }
      progress.subjects_done += range.subjects;
      progress.elapsed_seconds = seconds_since(started);
      if (options.on_progress) options.on_progress(progress);
    });
    if (writer) finish_writer(*writer, options, progress, started);
  } catch (...) {
    rethrow_keeping_journal(journal, options, static_cast<std::int64_t>(done.size()));
  }
  if (journal) journal->remove();  // the output is complete and renamed

  RunReport report;
  report.arms = collector.finish();
  report.subjects_per_arm = scenario.cohort.size;
  report.subjects = subjects;
  report.subjects_resumed = progress.subjects_resumed;
  report.threads = threads;
  report.elapsed_seconds = seconds_since(started);
  return report;
}

}  // namespace ketasim
