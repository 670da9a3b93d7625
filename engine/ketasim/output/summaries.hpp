#pragma once
// The per-time summaries of a result file (internal to the writer): the 5th, 50th and 95th
// percentiles over subjects of each trajectory at each time point, computed by
// ResultWriter::finish() from the compressed chunks once every subject is written, within
// ResultWriterOptions::summary_memory_bytes whatever the number of subjects.

#include <H5Cpp.h>

#include <array>
#include <string>
#include <vector>

#include "ketasim/output/chunk_codec.hpp"
#include "ketasim/output/hdf5_util.hpp"
#include "ketasim/output/hdf5_writer.hpp"

namespace ketasim {

// The datasets of summary/<trajectory>/ (docs/hdf5-layout.md).
struct SummaryQuantile {
  const char* name;
  double probability;
};
inline constexpr std::array<SummaryQuantile, 3> kSummaryQuantiles{{{"p05", 0.05}, {"p50", 0.50}, {"p95", 0.95}}};
using SummaryDatasets = std::array<H5::DataSet, kSummaryQuantiles.size()>;  // [quantile]

// Creates summary/<trajectory>/p05, p50 and p95 in `summary`, [time_points] float64, NaN-filled.
SummaryDatasets define_summary_datasets(const H5::Group& summary, const ColumnSpec& trajectory, hsize_t time_points);

// Computes the quantiles of one trajectory matrix [N x T] at a time and writes them. The HDF5 calls
// stay on the calling thread; the decoding and the selection run on options.summary_threads.
class TrajectorySummaries {
 public:
  // `hdf5_calls` runs the calls on the file (its errors name the file); `options` must outlive this.
  TrajectorySummaries(const ResultWriterOptions& options, Hdf5FileCalls& hdf5_calls)
      : options_(options), hdf5_calls_(hdf5_calls) {}

  // The quantiles of `trajectory` [subjects x time_points], all of whose subjects were written,
  // into `summaries` (NaN where no subject has a value). `what` names the task in errors and in
  // the InterruptedError of a cancel (options.cancel), e.g. "summarize trajectory 'x' of arm 'a'".
  void write(const H5::DataSet& trajectory, hsize_t subjects, hsize_t time_points, const SummaryDatasets& summaries,
             const std::string& what);

 private:
  struct Task {
    const H5::DataSet& dataset;
    ChunkGrid grid;
    std::string what;
    std::array<std::vector<double>, kSummaryQuantiles.size()> quantiles;  // [quantile][time point]
  };
  void summarize_by_slabs(Task& task, unsigned threads, hsize_t slab_columns);
  void summarize_by_selection(Task& task);
  void throw_if_cancelled(const Task& task) const;
  // A stored chunk decoded; a corrupt one is an IoError naming the file and the task.
  const std::vector<float>& decode(ChunkDecoder& decoder, const Task& task, const StoredChunk& chunk) const;

  const ResultWriterOptions& options_;
  Hdf5FileCalls& hdf5_calls_;
};

}  // namespace ketasim
