#pragma once
// The last pipeline stage: finished subjects → one HDF5 file per run, in the layout described
// in docs/hdf5-layout.md (version kLayoutVersion). The file is written under a temporary name
// next to the final one and renamed into place only by finish(), so a run that fails or is
// interrupted never leaves a half-written file and never touches an existing result.
//
// HDF5 types stay out of this header (the engine links HDF5 privately). Debian's HDF5 build is
// not thread-safe, so everything that calls HDF5 (construction, write, finish, destruction) must
// stay on one thread. The expensive part of writing, compressing the trajectory chunks, is split
// off into prepare(), which does not call HDF5 and may run on any number of threads at once:
//
//   worker threads:   PreparedBlock prepared = writer.prepare(std::move(block));
//   writer thread:    writer.write(std::move(prepared));

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "ketasim/solve/results.hpp"

namespace ketasim {

// Trajectory matrices are stored in chunks of this many subjects (rows). Blocks of subjects
// that start on a multiple of it fill whole chunks, which is the cheapest way to write them.
inline constexpr std::int64_t kTrajectoryChunkSubjects = 64;

class ResultWriter;

// A block of subjects made ready for ResultWriter::write(PreparedBlock&&) by
// ResultWriter::prepare: every trajectory chunk the block covers whole is already shuffled and
// deflated, byte for byte as HDF5's own filter pipeline would have stored it, and is written
// with H5Dwrite_chunk. Rows that share a chunk with subjects outside the block stay uncompressed
// and go through HDF5's pipeline when written. Only the writer that prepared it can write it.
class PreparedBlock {
 public:
  // One trajectory chunk as stored in the file (all filters applied).
  struct Chunk {
    std::size_t trajectory = 0;         // index into ArmLayout::trajectories
    std::int64_t first_subject = 0;     // the chunk's first row of the file (a subject, except in a shard)
    std::int64_t first_time_point = 0;  // the chunk's first column
    std::vector<unsigned char> bytes;   // shuffled, then deflated
  };
  // Consecutive rows written uncompressed; [trajectory][row * time points + t].
  struct Rows {
    std::int64_t first_subject = 0;  // the first row of the file (a subject, except in a shard)
    std::int64_t count = 0;
    std::vector<std::vector<float>> trajectories;
  };

  // A moved-from block is empty and no writer accepts it.
  PreparedBlock(PreparedBlock&& other) noexcept
      : writer_state_(std::exchange(other.writer_state_, nullptr)),
        columns_(std::move(other.columns_)),
        chunks_(std::move(other.chunks_)),
        uncompressed_rows_(std::move(other.uncompressed_rows_)) {}
  PreparedBlock& operator=(PreparedBlock&& other) noexcept {
    writer_state_ = std::exchange(other.writer_state_, nullptr);
    columns_ = std::move(other.columns_);
    chunks_ = std::move(other.chunks_);
    uncompressed_rows_ = std::move(other.uncompressed_rows_);
    return *this;
  }
  PreparedBlock(const PreparedBlock&) = delete;
  PreparedBlock& operator=(const PreparedBlock&) = delete;
  ~PreparedBlock() = default;

  // The prepared block's arm, subject range, subject columns, metrics, status and messages. Its
  // `trajectories` is empty: the trajectory values are in chunks() and uncompressed_rows().
  const SubjectBlock& columns() const { return columns_; }
  const std::vector<Chunk>& chunks() const { return chunks_; }
  const std::vector<Rows>& uncompressed_rows() const { return uncompressed_rows_; }

 private:
  friend class ResultWriter;
  PreparedBlock() = default;
  const void* writer_state_ = nullptr;  // identifies the writer that prepared the block
  SubjectBlock columns_;
  std::vector<Chunk> chunks_;
  std::vector<Rows> uncompressed_rows_;
};

struct ResultWriterOptions {
  // Upper bound on the memory finish() uses to compute the per-time quantiles: the trajectory
  // slab read back from the file (whole time columns, N float32 each), plus per summary thread a
  // few chunks being decoded. When not even one time column fits (some 60 million subjects per arm
  // at the default), the quantiles are selected exactly from the compressed chunks instead, in
  // five passes over them (quantiles.hpp, RadixSelection), within the bound. Tests shrink it to
  // force many slabs, or the selection.
  std::size_t summary_memory_bytes = std::size_t{256} << 20;
  // Threads that decompress the trajectories and compute the quantiles in finish(); 0 =
  // default_thread_count() (threads.hpp), resolved by the constructor. The file records it as the
  // root attribute `threads` (the run passes the thread count of its workers too). The summaries
  // do not depend on it.
  unsigned summary_threads = 0;
  // When set and it becomes true, finish() stops its summary pass with InterruptedError (checked
  // a few times a second at least), and the writer is unusable, as after any failure.
  const std::atomic<bool>* cancel = nullptr;
};

// How far finish() is: `summaries_done` of the `summaries_total` trajectory summaries (one per
// trajectory of every arm) are computed; at done == total the file is being closed, flushed to
// disk and renamed.
struct FinishProgress {
  std::size_t summaries_done = 0;
  std::size_t summaries_total = 0;
};

// What a result file will take on disk, from its layout alone (before anything is simulated).
// Metrics, subject columns and the rest are stored uncompressed and counted exactly; the
// trajectories are compressed, by a ratio that depends on the values: 2.7:1 to 5.9:1 on the
// shipped scenarios (docs/cli.md, "Output size"). `expected_bytes` assumes 3.5:1 (a little less
// than the default scenario's 3.8:1), `least_bytes` 8:1 (better than any scenario measured), and
// `upper_bound_bytes` no compression (what HDF5 stores for a chunk that does not compress).
struct ResultSizeEstimate {
  std::uintmax_t least_bytes = 0;
  std::uintmax_t expected_bytes = 0;
  std::uintmax_t upper_bound_bytes = 0;
  std::uintmax_t without_trajectories_bytes = 0;  // what `output.variables: []` would write
};
ResultSizeEstimate estimate_result_size(const std::vector<ArmLayout>& arms, std::int64_t subjects_per_arm);

class ResultWriter {
 public:
  // Creates a temporary file next to the final one (AtomicOutputFile, output_file.hpp) and
  // defines every dataset. With info.shard, the file is a shard (docs/hdf5-layout.md, "Shard
  // files"): its datasets hold the rows of the shard's subjects only, blocks give subject ids of
  // the whole arm, and there are no summaries. Throws IoError if `final_path` breaks a rule of check_output_path
  // (its directory missing or not writable; a directory, device, link, read-only file or the
  // scenario file info.scenario_file at that name), if the layout cannot be represented (empty, duplicate or reserved
  // names; dose vectors of different lengths; info.subjects_per_arm != subjects_per_arm) or if HDF5 fails.
  ResultWriter(std::string final_path, const RunInfo& info, std::vector<ArmLayout> arms, std::int64_t subjects_per_arm,
               ResultWriterOptions options = {});

  ResultWriter(const ResultWriter&) = delete;
  ResultWriter& operator=(const ResultWriter&) = delete;
  ResultWriter(ResultWriter&&) noexcept;
  ResultWriter& operator=(ResultWriter&&) noexcept;

  // If finish() was not reached: closes and deletes the temporary file. Never throws.
  ~ResultWriter();

  // Blocks may come in any order; each subject must be written exactly once. A block that does
  // not match the layout (sizes, arm index, subject range, a subject already written) is
  // rejected with IoError before anything is written, and the writer stays usable. An HDF5
  // failure while writing leaves the writer unusable.
  void write(const SubjectBlock& block);

  // Checks `block` against the layout (as write does, except whether its subjects were already
  // written) and compresses the trajectory chunks it covers whole. Does not call HDF5 and reads
  // only what the constructor set, so any number of threads may call it at once, also while
  // another thread is in write(); not concurrently with finish(), a move or the destructor.
  // Throws IoError if the block does not match the layout.
  PreparedBlock prepare(SubjectBlock block) const;

  // A prepared block rebuilt from its parts, as PreparedBlock's accessors give them (a block read
  // back from a run's journal, journal.hpp): the chunks and rows must be exactly those prepare()
  // makes of a block of these subjects (their places and sizes are checked, the compressed bytes
  // are not: the journal checks them with a CRC). Throws IoError, as prepare() does, otherwise.
  PreparedBlock restore(SubjectBlock columns, std::vector<PreparedBlock::Chunk> chunks,
                        std::vector<PreparedBlock::Rows> rows) const;

  // Writes a block made by this writer's prepare(); the file gets the same contents as
  // write(const SubjectBlock&) of the original block would give it. Rejects with IoError, before
  // writing anything, a block from another writer or whose subjects were already written.
  void write(PreparedBlock&& block);

  // Checks that every subject of every arm was written, computes the per-arm summaries, closes
  // the file, flushes it to disk and renames it to the final path atomically. On failure throws
  // IoError; the writer is then unusable and its destructor removes the temporary file.
  // `on_progress` is called on this thread before each slab of time points of each summary and
  // once when the summaries are done; what it throws (e.g. InterruptedError, to cancel) makes
  // finish() fail in the same way.
  void finish(const std::function<void(const FinishProgress&)>& on_progress = {});

  // Not on a moved-from writer.
  const std::string& final_path() const;
  const std::string& temporary_path() const;

 private:
  struct State;  // defined in hdf5_writer.cpp, where the HDF5 types are
  State& open_state(const char* operation);
  std::unique_ptr<State> state_;
};

}  // namespace ketasim
