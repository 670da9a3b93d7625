#include "ketasim/output/chunk_codec.hpp"

#include <zlib.h>

#include <bit>
#include <cstddef>
#include <cstring>
#include <string>

#include "ketasim/base/errors.hpp"
#include "ketasim/output/hdf5_util.hpp"

namespace ketasim {
namespace {

constexpr std::size_t kMinChunkCacheBytes = std::size_t{1} << 20;
constexpr std::size_t kMaxChunkCacheBytes = std::size_t{8} << 20;
// HDF5's default preemption weight. At 1.0 the chunk cache never evicts a chunk that was only
// partly written or read, and HDF5 counts an edge chunk (T not a multiple of 4096) as partly
// accessed forever: every edge chunk then stayed in memory, uncompressed, until the dataset was
// closed (~470 MiB for 10000 W1 subjects).
constexpr double kChunkCachePreemptionWeight = 0.75;
// Bits of a stored chunk's filter mask: filter i of the pipeline was skipped for that chunk.
constexpr std::uint32_t kShuffleSkipped = 1U << 0;  // the pipeline is shuffle (0), deflate (1)
constexpr std::uint32_t kDeflateSkipped = 1U << 1;

[[noreturn]] void fail_corrupt(const StoredChunk& chunk, const std::string& problem) {
  throw IoError("the chunk at subject " + std::to_string(chunk.origin[0]) + ", time point " +
                std::to_string(chunk.origin[1]) + " is corrupt: " + problem);
}

}  // namespace

H5::DSetCreatPropList trajectory_creation(hsize_t subjects, hsize_t time_points) {
  const float fill = kTrajectoryFill;
  H5::DSetCreatPropList creation = hdf5::float_creation(H5::PredType::NATIVE_FLOAT, &fill);
  const ChunkGrid grid = ChunkGrid::of(subjects, time_points);
  if (!grid.chunked()) return creation;
  const std::array<hsize_t, 2> chunk{grid.chunk_rows, grid.chunk_columns};
  creation.setChunk(2, chunk.data());
  creation.setShuffle();  // before deflate: the filters run in the order they are added
  creation.setDeflate(kDeflateLevel);
  return creation;
}

H5::DSetAccPropList trajectory_access(hsize_t subjects, hsize_t time_points) {
  H5::DSetAccPropList access;
  const std::size_t band_bytes =
      static_cast<std::size_t>(std::min(subjects, kChunkSubjects) * time_points) * sizeof(float);
  const std::size_t cache_bytes = std::clamp(2 * band_bytes, kMinChunkCacheBytes, kMaxChunkCacheBytes);
  access.setChunkCache(521, cache_bytes, kChunkCachePreemptionWeight);  // 521: HDF5's default slot count, a prime
  return access;
}

WholeChunkRows whole_chunk_rows(const ChunkGrid& grid, hsize_t first, hsize_t end) {
  if (!grid.chunked()) return {end, end};
  const hsize_t begin = std::min((first + grid.chunk_rows - 1) / grid.chunk_rows * grid.chunk_rows, end);
  const hsize_t stop = end == grid.subjects ? end : end / grid.chunk_rows * grid.chunk_rows;
  return begin < stop ? WholeChunkRows{begin, stop} : WholeChunkRows{end, end};
}

// What HDF5 1.10 stores for a chunk of a shuffle + deflate dataset is (H5Zshuffle.c, H5Zdeflate.c):
//   shuffle: the chunk's n elements of s bytes (n > 1) become s planes of n bytes, byte b of
//            element e going to b * n + e;
//   deflate: compress2(level) of the shuffled bytes (zlib format, default window and memory
//            level), into a buffer of ceil(1.001 * size) + 12 bytes, never smaller than zlib's
//            compressBound, so it cannot overflow there or here.
// The chunk is always full size; the part outside the dataset holds the fill value, as HDF5
// initialises a new chunk with it. Test "prepared and plain writes store the same chunks" pins it.
static_assert(std::endian::native == std::endian::little,
              "the trajectories are stored as IEEE_F32LE: the shuffle planes assume native = little-endian");
static_assert(sizeof(float) == 4);

std::vector<unsigned char> ChunkCompressor::compress(const ChunkGrid& grid, const float* rows,
                                                     hsize_t rows_first_subject, hsize_t first_row,
                                                     hsize_t first_column) {
  const auto elements = static_cast<std::size_t>(grid.chunk_rows * grid.chunk_columns);
  shuffled_.resize(elements * sizeof(float));
  const std::array<unsigned char*, sizeof(float)> planes{
      shuffled_.data(), shuffled_.data() + elements, shuffled_.data() + 2 * elements, shuffled_.data() + 3 * elements};
  const auto put = [&](std::size_t element, float value) {
    const auto bits = std::bit_cast<std::uint32_t>(value);
    for (std::size_t byte = 0; byte < sizeof(float); ++byte) {
      planes[byte][element] = static_cast<unsigned char>(bits >> (8 * byte));
    }
  };
  const hsize_t valid_columns = std::min(grid.chunk_columns, grid.time_points - first_column);
  for (hsize_t r = 0; r < grid.chunk_rows; ++r) {
    const auto element = static_cast<std::size_t>(r * grid.chunk_columns);
    const hsize_t row = first_row + r;
    hsize_t c = 0;
    if (row < grid.subjects) {
      const float* source = rows + (row - rows_first_subject) * grid.time_points + first_column;
      for (; c < valid_columns; ++c) put(element + c, source[c]);
    }
    for (; c < grid.chunk_columns; ++c) put(element + c, kTrajectoryFill);
  }
  // (One element: HDF5 skips the shuffle, and the planes above are then the element's bytes.)

  uLongf length = compressBound(static_cast<uLong>(shuffled_.size()));
  deflated_.resize(length);
  const int status =
      compress2(deflated_.data(), &length, shuffled_.data(), static_cast<uLong>(shuffled_.size()), kDeflateLevel);
  if (status != Z_OK) throw IoError("zlib compress2 failed with status " + std::to_string(status));
  return {deflated_.begin(), deflated_.begin() + static_cast<std::ptrdiff_t>(length)};
}

const std::vector<float>& ChunkDecoder::decode(const ChunkGrid& grid, const StoredChunk& chunk) {
  const auto elements = static_cast<std::size_t>(grid.chunk_rows * grid.chunk_columns);
  const std::size_t size = elements * sizeof(float);
  const unsigned char* shuffled = chunk.bytes.data();
  std::size_t shuffled_size = chunk.bytes.size();
  if ((chunk.filter_mask & kDeflateSkipped) == 0) {
    inflated_.resize(size);
    uLongf length = static_cast<uLongf>(size);
    const int status =
        uncompress(inflated_.data(), &length, chunk.bytes.data(), static_cast<uLong>(chunk.bytes.size()));
    if (status != Z_OK) fail_corrupt(chunk, "zlib uncompress status " + std::to_string(status));
    shuffled = inflated_.data();
    shuffled_size = length;
  }
  if (shuffled_size != size) {
    fail_corrupt(chunk, std::to_string(shuffled_size) + " bytes, expected " + std::to_string(size));
  }
  values_.resize(elements);
  if ((chunk.filter_mask & kShuffleSkipped) != 0) {
    std::memcpy(values_.data(), shuffled, size);
    return values_;
  }
  for (std::size_t element = 0; element < elements; ++element) {
    std::uint32_t bits = 0;
    for (std::size_t byte = 0; byte < sizeof(float); ++byte) {
      bits |= std::uint32_t{shuffled[byte * elements + element]} << (8 * byte);
    }
    values_[element] = std::bit_cast<float>(bits);
  }
  return values_;
}

void write_stored_chunk(const H5::DataSet& dataset, const std::array<hsize_t, 2>& origin,
                        const std::vector<unsigned char>& bytes) {
  const unsigned all_filters_applied = 0;
  if (H5Dwrite_chunk(dataset.getId(), H5P_DEFAULT, all_filters_applied, origin.data(), bytes.size(), bytes.data()) <
      0) {
    throw H5::DataSetIException("H5Dwrite_chunk", "cannot write a compressed trajectory chunk");
  }
}

void read_stored_chunk(const H5::DataSet& dataset, const std::array<hsize_t, 2>& origin, StoredChunk& chunk) {
  chunk.origin = origin;
  hsize_t size = 0;
  if (H5Dget_chunk_storage_size(dataset.getId(), origin.data(), &size) < 0) {
    throw H5::DataSetIException("H5Dget_chunk_storage_size", "cannot find a trajectory chunk");
  }
  chunk.bytes.resize(static_cast<std::size_t>(size));
  if (H5Dread_chunk(dataset.getId(), H5P_DEFAULT, origin.data(), &chunk.filter_mask, chunk.bytes.data()) < 0) {
    throw H5::DataSetIException("H5Dread_chunk", "cannot read a trajectory chunk");
  }
}

}  // namespace ketasim
