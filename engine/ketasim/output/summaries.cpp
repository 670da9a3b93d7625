#include "ketasim/output/summaries.hpp"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <span>

#include "ketasim/base/errors.hpp"
#include "ketasim/base/quantiles.hpp"
#include "ketasim/base/threads.hpp"

namespace ketasim {
namespace {

// The summary pass reads compressed chunks ahead for its decoding threads, this many per thread.
constexpr std::size_t kSummaryBatchPerThread = 2;

// Memory the summary pass needs besides the slab, per decoding thread: the chunk being decoded
// (inflated bytes and floats) and one compressed chunk in the batch read ahead for it.
std::size_t summary_scratch_bytes(const ChunkGrid& grid, unsigned threads) {
  const auto chunk_bytes = static_cast<std::size_t>(grid.chunk_rows * grid.chunk_columns) * sizeof(float);
  return threads * (kSummaryBatchPerThread * chunk_bytes + 2 * chunk_bytes);
}

// Time columns per slab read back in finish(): the slab (N x columns float32) plus the scratch of
// the decoding threads must fit in the budget; 0 when not even one column does. Slabs wider than a
// chunk are whole multiples of the chunk width, so that each chunk is decompressed once.
hsize_t summary_columns_per_slab(const ChunkGrid& grid, std::size_t budget_bytes, unsigned threads) {
  const std::size_t scratch_bytes = summary_scratch_bytes(grid, threads);
  const std::size_t slab_bytes = budget_bytes > scratch_bytes ? budget_bytes - scratch_bytes : 0;
  hsize_t columns = slab_bytes / (static_cast<std::size_t>(grid.subjects) * sizeof(float));
  columns = std::min(columns, grid.time_points);
  if (columns >= grid.chunk_columns) columns -= columns % grid.chunk_columns;
  return columns;
}

}  // namespace

SummaryDatasets define_summary_datasets(const H5::Group& summary, const ColumnSpec& trajectory, hsize_t time_points) {
  const H5::Group quantiles = summary.createGroup(trajectory.name);
  SummaryDatasets datasets;
  for (std::size_t q = 0; q < kSummaryQuantiles.size(); ++q) {
    const std::string percentile = std::to_string(std::lround(kSummaryQuantiles[q].probability * 100.0));
    datasets[q] = hdf5::create_dataset(
        quantiles, kSummaryQuantiles[q].name, H5::PredType::IEEE_F64LE, {time_points}, trajectory.unit,
        percentile + "th percentile of " + trajectory.name + " over subjects at each time point (type 7, NaN ignored)",
        hdf5::nan_filled_doubles());
  }
  return datasets;
}

// Within options.summary_memory_bytes whatever N is: from slabs of whole time columns while one
// column of N values fits, otherwise selected exactly from the compressed chunks in a few passes.
void TrajectorySummaries::write(const H5::DataSet& trajectory, hsize_t subjects, hsize_t time_points,
                                const SummaryDatasets& summaries, const std::string& what) {
  Task task{trajectory, ChunkGrid::of(subjects, time_points), what, {}};
  for (auto& values : task.quantiles) values.assign(task.grid.time_points, std::numeric_limits<double>::quiet_NaN());
  if (task.grid.chunked()) {
    const unsigned threads = thread_count(options_.summary_threads);
    const hsize_t slab_columns = summary_columns_per_slab(task.grid, options_.summary_memory_bytes, threads);
    if (slab_columns > 0) {
      summarize_by_slabs(task, threads, slab_columns);
    } else {
      summarize_by_selection(task);
    }
  }
  if (task.grid.time_points == 0) return;
  hdf5_calls_(task.what, [&] {
    for (std::size_t q = 0; q < kSummaryQuantiles.size(); ++q) {
      summaries[q].write(task.quantiles[q].data(), H5::PredType::NATIVE_DOUBLE);
    }
  });
}

void TrajectorySummaries::throw_if_cancelled(const Task& task) const {
  if (options_.cancel != nullptr && options_.cancel->load())
    throw InterruptedError("interrupted: did not " + task.what);
}

const std::vector<float>& TrajectorySummaries::decode(ChunkDecoder& decoder, const Task& task,
                                                      const StoredChunk& chunk) const {
  try {
    return decoder.decode(task.grid, chunk);
  } catch (const IoError& error) {
    throw hdf5_calls_.failure(task.what, error.what());
  }
}

// It reads the compressed chunks of a slab in small batches, and the summary threads decode them
// into the slab (column-major, so that each time point's values are contiguous), then select the
// quantiles of each time point in place.
void TrajectorySummaries::summarize_by_slabs(Task& task, unsigned threads, hsize_t slab_columns) {
  const ChunkGrid& grid = task.grid;
  const auto subjects = static_cast<std::size_t>(grid.subjects);
  std::vector<float> slab(subjects * static_cast<std::size_t>(slab_columns));  // [t - first][subject]
  std::vector<ChunkDecoder> decoders(threads);
  std::vector<StoredChunk> batch;
  for (hsize_t first = 0; first < grid.time_points; first += slab_columns) {
    const hsize_t width = std::min(slab_columns, grid.time_points - first);
    std::vector<std::array<hsize_t, 2>> origins;
    for (hsize_t column = first / grid.chunk_columns * grid.chunk_columns; column < first + width;
         column += grid.chunk_columns) {
      for (hsize_t row = 0; row < grid.subjects; row += grid.chunk_rows) origins.push_back({row, column});
    }
    const auto decode_into_slab = [&](unsigned thread, std::size_t index) {
      const StoredChunk& chunk = batch[index];
      const std::vector<float>& values = decode(decoders[thread], task, chunk);
      const hsize_t rows = std::min(grid.chunk_rows, grid.subjects - chunk.origin[0]);
      const hsize_t t_begin = std::max(first, chunk.origin[1]);
      const hsize_t t_end = std::min({first + width, chunk.origin[1] + grid.chunk_columns, grid.time_points});
      for (hsize_t t = t_begin; t < t_end; ++t) {
        float* destination = slab.data() + (t - first) * subjects + chunk.origin[0];
        const float* source = values.data() + (t - chunk.origin[1]);
        for (hsize_t r = 0; r < rows; ++r) destination[r] = source[r * grid.chunk_columns];
      }
    };
    const std::size_t batch_size = kSummaryBatchPerThread * threads;
    for (std::size_t next = 0; next < origins.size(); next += batch_size) {
      throw_if_cancelled(task);
      batch.resize(std::min(batch_size, origins.size() - next));
      hdf5_calls_(task.what, [&] {
        for (std::size_t i = 0; i < batch.size(); ++i) read_stored_chunk(task.dataset, origins[next + i], batch[i]);
      });
      parallel_for(threads, batch.size(), decode_into_slab);
    }
    parallel_for(threads, static_cast<std::size_t>(width), [&](unsigned, std::size_t t) {
      throw_if_cancelled(task);
      float* values = slab.data() + t * subjects;
      float* const end_of_values =
          std::partition(values, values + subjects, [](float value) { return !std::isnan(value); });
      InPlaceQuantiles<float> quantile(std::span<float>(values, end_of_values));
      for (std::size_t q = 0; q < kSummaryQuantiles.size(); ++q) {
        task.quantiles[q][first + t] = quantile(kSummaryQuantiles[q].probability);
      }
    });
  }
}

// For cohorts whose time column does not fit: chunk column by chunk column (up to 4096 time
// points), one pass counts each time point's values that are not NaN, then RadixSelection finds
// the ranks the quantiles need in four more passes, decoding every chunk each time. Memory: the
// selection's histograms (12 KiB per time point) and one chunk, whatever N is.
void TrajectorySummaries::summarize_by_selection(Task& task) {
  const ChunkGrid& grid = task.grid;
  std::array<double, kSummaryQuantiles.size()> probabilities{};
  for (std::size_t q = 0; q < kSummaryQuantiles.size(); ++q) probabilities[q] = kSummaryQuantiles[q].probability;
  const std::size_t histogram_bytes =
      2 * kSummaryQuantiles.size() * RadixSelection<float>::kBuckets * sizeof(std::uint64_t);
  const hsize_t group_columns =
      std::clamp<hsize_t>(options_.summary_memory_bytes / histogram_bytes, 1, grid.chunk_columns);
  ChunkDecoder decoder;
  StoredChunk chunk;
  for (hsize_t first = 0; first < grid.time_points; first += group_columns) {
    const hsize_t width = std::min(group_columns, grid.time_points - first);
    // The values of time points [first, first + width) that are not NaN, to `visit(t - first, value)`.
    const auto scan = [&](const auto& visit) {
      for (hsize_t chunk_column = first / grid.chunk_columns * grid.chunk_columns; chunk_column < first + width;
           chunk_column += grid.chunk_columns) {
        for (hsize_t row = 0; row < grid.subjects; row += grid.chunk_rows) {
          throw_if_cancelled(task);
          hdf5_calls_(task.what, [&] { read_stored_chunk(task.dataset, {row, chunk_column}, chunk); });
          const std::vector<float>& values = decode(decoder, task, chunk);
          const hsize_t rows = std::min(grid.chunk_rows, grid.subjects - row);
          const hsize_t t_begin = std::max(first, chunk_column);
          const hsize_t t_end = std::min({first + width, chunk_column + grid.chunk_columns, grid.time_points});
          for (hsize_t r = 0; r < rows; ++r) {
            for (hsize_t t = t_begin; t < t_end; ++t) {
              const float value = values[r * grid.chunk_columns + (t - chunk_column)];
              if (!std::isnan(value)) visit(static_cast<std::size_t>(t - first), value);
            }
          }
        }
      }
    };
    std::vector<std::uint64_t> counts(static_cast<std::size_t>(width), 0);
    scan([&](std::size_t t, float) { ++counts[t]; });
    std::vector<std::vector<std::uint64_t>> ranks(counts.size());
    for (std::size_t t = 0; t < counts.size(); ++t)
      if (counts[t] > 0) ranks[t] = type7_ranks(counts[t], probabilities);
    RadixSelection<float> selection(ranks);
    while (!selection.done()) {
      scan([&](std::size_t t, float value) { selection.add(t, value); });
      selection.end_pass();
    }
    for (std::size_t t = 0; t < counts.size(); ++t) {
      if (counts[t] == 0) continue;
      std::vector<double> values;
      for (std::size_t k = 0; k < ranks[t].size(); ++k) values.push_back(selection.value(t, k));
      const std::vector<double> quantiles = type7_from_ranks(counts[t], probabilities, ranks[t], values);
      for (std::size_t q = 0; q < kSummaryQuantiles.size(); ++q) task.quantiles[q][first + t] = quantiles[q];
    }
  }
}

}  // namespace ketasim
