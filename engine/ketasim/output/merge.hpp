#pragma once
// `ketasim merge`: the shard files of one split run (`ketasim run --shard I/N`) become one result
// file whose datasets are those of the run done whole, value for value: the per-subject rows are
// copied into place, and the per-time summaries are computed over every subject by the writer's
// own summary pass (ResultWriter::finish), exactly as a whole run computes them.
//
// Nothing is written until every shard has been checked: each is a shard file, all come from one
// scenario, seed, cohort size and build (the one merging), they are the shards of one split, each
// given once, and their subject ranges tile every arm. The output is written under a temporary
// name and renamed when complete, as `run` does. Memory does not grow with the number of subjects
// or shards (docs/hpc.md, "Memory").

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "ketasim/output/hdf5_writer.hpp"

namespace ketasim {

struct MergeProgress {
  std::int64_t subject_arms_done = 0;  // rows copied, over every arm
  std::int64_t subject_arms_total = 0;
  bool copied = false;      // the rows are all copied: the summaries and the rename remain
  FinishProgress finish{};  // once copied: how far the summaries are
  double elapsed_seconds = 0.0;
};

struct MergeOptions {
  // Threads that compress the trajectory chunks and compute the summaries; 0 =
  // default_thread_count() (threads.hpp). The output does not depend on it.
  unsigned threads = 0;
  // About this many bytes per block of subjects read from a shard (trajectories and columns);
  // `threads` blocks are in memory at once, with their compressed chunks.
  std::size_t block_bytes = std::size_t{16} << 20;
  std::size_t summary_memory_bytes = ResultWriterOptions{}.summary_memory_bytes;
  std::function<void(const MergeProgress&)> on_progress;  // on the calling thread
  const std::atomic<bool>* cancel = nullptr;              // as RunOptions::cancel
};

struct MergeReport {
  std::string scenario_name;
  std::int64_t subjects_per_arm = 0;
  std::size_t arms = 0;
  std::size_t shards = 0;
  unsigned threads = 0;
  double elapsed_seconds = 0.0;
};

// Merges `shard_paths` (in any order) into `output_path`. Refuses, before writing anything:
// with IoError (exit 6) a path that is not a readable HDF5 shard file of this build's layout, shards
// of different scenarios, seeds, cohort sizes, solver settings, builds or layouts, or subject ranges
// that overlap or leave a gap; with Error(usage) (exit 2) no shard, a shard given twice, missing
// shards or shards of splits into different counts; and an output path that check_output_path
// refuses (one of the shards, say). Each message names the file and what is wrong.
MergeReport merge_shards(const std::vector<std::string>& shard_paths, const std::string& output_path,
                         const MergeOptions& options = {});

}  // namespace ketasim
