#pragma once
// The trajectory chunks of a result file (internal to the writer): how an [N x T] float32 matrix
// is cut into chunks, the filters HDF5 stores them with (shuffle, then deflate), and the same
// filters outside HDF5, so that worker threads compress whole chunks for H5Dwrite_chunk
// (ResultWriter::prepare) and the summary pass decodes the stored chunks it reads back with
// H5Dread_chunk.

#include <H5Cpp.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <limits>
#include <vector>

#include "ketasim/output/hdf5_writer.hpp"

namespace ketasim {

// Shapes of docs/hdf5-layout.md. Changing any of them is an incompatible change of the file
// format: bump kLayoutVersion and update the document.
inline constexpr hsize_t kChunkSubjects = static_cast<hsize_t>(kTrajectoryChunkSubjects);
inline constexpr hsize_t kChunkTimePoints = 4096;  // 64 x 4096 float32 = 1 MiB, the largest chunk
// Deflate level 1: on shuffled float32 trajectories level 6 cost ~30% more write time for files
// only ~4% smaller (20000 x 2000 benchmark, 4.2:1 at level 1); shuffle alone doubles the ratio.
inline constexpr int kDeflateLevel = 1;
inline constexpr float kTrajectoryFill = std::numeric_limits<float>::quiet_NaN();

// How an [N x T] trajectory matrix is cut into chunks. Chunks must have non-zero sizes, so an
// empty matrix is not chunked: it stays contiguous (and uncompressed).
struct ChunkGrid {
  hsize_t subjects = 0;
  hsize_t time_points = 0;
  hsize_t chunk_rows = 0;  // 0: not chunked
  hsize_t chunk_columns = 0;

  static ChunkGrid of(hsize_t subjects, hsize_t time_points) {
    if (subjects == 0 || time_points == 0) return {subjects, time_points, 0, 0};
    return {subjects, time_points, std::min(subjects, kChunkSubjects), std::min(time_points, kChunkTimePoints)};
  }
  bool chunked() const { return chunk_rows > 0; }
};

// [N x T] float32, chunked by subjects x time points, shuffle + deflate.
H5::DSetCreatPropList trajectory_creation(hsize_t subjects, hsize_t time_points);

// The chunk cache holds two bands of chunk rows (all chunks of 64 subjects over every time
// point, up to a cap), so that a block of subjects that does not start or end on a chunk
// boundary completes its chunks in memory instead of compressing them twice.
H5::DSetAccPropList trajectory_access(hsize_t subjects, hsize_t time_points);

// The rows of a block [first, end) that make up whole chunk rows: [begin, stop), both on chunk
// boundaries (the last chunk row ends at N: HDF5 stores that edge chunk full size, padded with
// the fill value). The rows before and after share their chunks with other blocks. When no chunk
// row is covered whole, begin = stop = end.
struct WholeChunkRows {
  hsize_t begin = 0;
  hsize_t stop = 0;
};
WholeChunkRows whole_chunk_rows(const ChunkGrid& grid, hsize_t first, hsize_t end);

// HDF5's filter pipeline, outside HDF5, for whole chunks (chunk_codec.cpp says what HDF5 stores).
class ChunkCompressor {
 public:
  // Compresses the chunk whose first element is (first_row, first_column) of the matrix; `rows`
  // is the block's matrix [row * T + t], its row 0 being subject `rows_first_subject`; every row
  // of the chunk that lies inside the dataset must be in it.
  std::vector<unsigned char> compress(const ChunkGrid& grid, const float* rows, hsize_t rows_first_subject,
                                      hsize_t first_row, hsize_t first_column);

 private:
  std::vector<unsigned char> shuffled_;  // scratch, reused from chunk to chunk
  std::vector<unsigned char> deflated_;
};

// A chunk as stored in the file, read back for the summaries.
struct StoredChunk {
  std::array<hsize_t, 2> origin{};  // first row, first column
  std::uint32_t filter_mask = 0;
  std::vector<unsigned char> bytes;
};

// The reverse of ChunkCompressor (and of HDF5's pipeline for a chunk it compressed itself): the
// chunk's chunk_rows x chunk_columns values, row-major. Throws IoError for a corrupt chunk.
class ChunkDecoder {
 public:
  const std::vector<float>& decode(const ChunkGrid& grid, const StoredChunk& chunk);

 private:
  std::vector<unsigned char> inflated_;  // scratch, reused from chunk to chunk
  std::vector<float> values_;
};

// Writes a chunk compressed by ChunkCompressor (all filters applied) at `origin` (first row, first
// column) of a trajectory dataset.
void write_stored_chunk(const H5::DataSet& dataset, const std::array<hsize_t, 2>& origin,
                        const std::vector<unsigned char>& bytes);

// Every chunk of a trajectory matrix exists once every subject was written. A chunk still dirty in
// HDF5's chunk cache (rows written uncompressed) is first written to the file by HDF5 itself:
// both H5Dget_chunk_storage_size and H5Dread_chunk evict it before looking it up.
void read_stored_chunk(const H5::DataSet& dataset, const std::array<hsize_t, 2>& origin, StoredChunk& chunk);

}  // namespace ketasim
