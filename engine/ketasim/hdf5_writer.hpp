#pragma once
// The last pipeline stage: finished subjects → one HDF5 file per run, in the layout described
// in docs/hdf5-layout.md (version kLayoutVersion). The file is written under a temporary name
// next to the final one and renamed into place only by finish(), so a run that fails or is
// interrupted never leaves a half-written file and never touches an existing result.
//
// HDF5 types stay out of this header (the engine links HDF5 privately). Only one thread may use
// a writer: Debian's HDF5 build is not thread-safe.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "ketasim/results.hpp"

namespace ketasim {

// Trajectory matrices are stored in chunks of this many subjects (rows). Blocks of subjects
// that start on a multiple of it fill whole chunks, which is the cheapest way to write them.
inline constexpr std::int64_t kTrajectoryChunkSubjects = 64;

struct ResultWriterOptions {
  // Upper bound on the memory finish() uses to compute the per-time quantiles (the trajectory
  // slab read back from the file plus one column of scratch). Tests shrink it to force many
  // slabs; at least one time column is always read, so for more than ~20 million subjects per
  // arm the bound is exceeded.
  std::size_t summary_memory_bytes = std::size_t{256} << 20;
};

class ResultWriter {
 public:
  // Creates `final_path` + ".tmp-<pid>" next to the final file and defines every dataset.
  // Throws IoError if the directory of `final_path` does not exist or is not writable, if the
  // layout cannot be represented (empty, duplicate or reserved names; dose vectors of different
  // lengths; info.subjects_per_arm != subjects_per_arm) or if HDF5 fails.
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

  // Checks that every subject of every arm was written, computes the per-arm summaries, closes
  // the file, flushes it to disk and renames it to the final path atomically. On failure throws
  // IoError; the writer is then unusable and its destructor removes the temporary file.
  void finish();

  // Not on a moved-from writer.
  const std::string& final_path() const;
  const std::string& temporary_path() const;

 private:
  struct State;  // defined in hdf5_writer.cpp, where the HDF5 types are
  State& open_state(const char* operation);
  std::unique_ptr<State> state_;
};

}  // namespace ketasim
