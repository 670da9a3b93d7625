#include "ketasim/output/hdf5_writer.hpp"

#include <H5Cpp.h>
#include <fcntl.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>
#include <ctime>
#include <exception>
#include <iterator>
#include <limits>
#include <map>
#include <mutex>
#include <numeric>
#include <optional>
#include <set>
#include <system_error>
#include <thread>
#include <utility>

#include "ketasim/base/errors.hpp"
#include "ketasim/base/quantiles.hpp"
#include "ketasim/base/threads.hpp"
#include "ketasim/base/version.hpp"
#include "ketasim/output/hdf5_file_driver.hpp"
#include "ketasim/output/output_file.hpp"

namespace ketasim {
namespace {

// Shapes and names of docs/hdf5-layout.md. Changing any of them is an incompatible change of
// the file format: bump kLayoutVersion and update the document.
constexpr hsize_t kChunkSubjects = static_cast<hsize_t>(kTrajectoryChunkSubjects);
constexpr hsize_t kChunkTimePoints = 4096;  // 64 x 4096 float32 = 1 MiB, the largest chunk
// Deflate level 1: on shuffled float32 trajectories level 6 cost ~30% more write time for files
// only ~4% smaller (20000 x 2000 benchmark, 4.2:1 at level 1); shuffle alone doubles the ratio.
constexpr int kDeflateLevel = 1;
constexpr std::size_t kMinChunkCacheBytes = std::size_t{1} << 20;
constexpr std::size_t kMaxChunkCacheBytes = std::size_t{8} << 20;
// HDF5's default preemption weight. At 1.0 the chunk cache never evicts a chunk that was only
// partly written or read, and HDF5 counts an edge chunk (T not a multiple of 4096) as partly
// accessed forever: every edge chunk then stayed in memory, uncompressed, until the dataset was
// closed (~470 MiB for 10000 W1 subjects).
constexpr double kChunkCachePreemptionWeight = 0.75;
// The summary pass reads compressed chunks ahead for its decoding threads, this many per thread.
constexpr std::size_t kSummaryBatchPerThread = 2;
// Bits of a stored chunk's filter mask: filter i of the pipeline was skipped for that chunk.
constexpr std::uint32_t kShuffleSkipped = 1U << 0;  // the pipeline is shuffle (0), deflate (1)
constexpr std::uint32_t kDeflateSkipped = 1U << 1;

struct SummaryQuantile {
  const char* name;
  double probability;
};
constexpr std::array<SummaryQuantile, 3> kSummaryQuantiles{{{"p05", 0.05}, {"p50", 0.50}, {"p95", 0.95}}};

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// ---- HDF5 error reporting ------------------------------------------------------------------
// By default HDF5 prints its error stack to stderr. While a writer method runs, a handler that
// records the stack instead is installed (and the previous one restored afterwards), so the most
// useful lines can go into the IoError: the API function that failed and the innermost cause,
// e.g. "H5Fcreate(): unable to create file <- ketasim_file_open(): Permission denied". A failed read
// or write of the file is reported by its errno instead (hdf5_file_driver.hpp).
// The handler runs when the failing C call returns, before C++ destructors of the HDF5 wrapper
// objects (whose own C calls would clear the stack) have run.

struct Hdf5ErrorStack {
  std::string api_call;
  std::string innermost_cause;
  void clear() {
    api_call.clear();
    innermost_cause.clear();
  }
};

herr_t record_error_line(unsigned depth, const H5E_error2_t* error, void* client) {
  auto& stack = *static_cast<Hdf5ErrorStack*>(client);
  std::string line = std::string(error->func_name != nullptr ? error->func_name : "?") +
                     "(): " + (error->desc != nullptr ? error->desc : "");
  if (depth == 0) stack.api_call = line;  // walking downward, the API function comes first
  stack.innermost_cause = std::move(line);
  return 0;
}

herr_t record_error_stack(hid_t error_stack, void* client) {
  static_cast<Hdf5ErrorStack*>(client)->clear();
  H5Ewalk2(error_stack, H5E_WALK_DOWNWARD, record_error_line, client);
  return 0;
}

class ErrorStackRecorder {
 public:
  explicit ErrorStackRecorder(Hdf5ErrorStack& stack) {
    if (H5Eget_auto2(H5E_DEFAULT, &previous_handler_, &previous_data_) < 0) {
      previous_handler_ = nullptr;
      previous_data_ = nullptr;
    }
    H5Eset_auto2(H5E_DEFAULT, record_error_stack, &stack);
  }
  ~ErrorStackRecorder() { H5Eset_auto2(H5E_DEFAULT, previous_handler_, previous_data_); }
  ErrorStackRecorder(const ErrorStackRecorder&) = delete;
  ErrorStackRecorder& operator=(const ErrorStackRecorder&) = delete;

 private:
  H5E_auto2_t previous_handler_ = nullptr;
  void* previous_data_ = nullptr;
};

// `system_error`: the errno of the first failed read or write of the file (hdf5_file_driver), 0 if
// none: the cause the user can act on (a full disk must say so); the API call says what failed.
std::string describe(const H5::Exception& exception, const Hdf5ErrorStack& stack, int system_error) {
  if (system_error != 0) {
    return std::string(std::strerror(system_error)) + " (in " +
           (stack.api_call.empty() ? exception.getFuncName() : stack.api_call) + ")";
  }
  if (stack.api_call.empty()) return exception.getFuncName() + ": " + exception.getDetailMsg();
  if (stack.innermost_cause == stack.api_call) return stack.api_call;
  return stack.api_call + " <- " + stack.innermost_cause;
}

// ---- Small HDF5 helpers --------------------------------------------------------------------

H5::StrType utf8_text_type() {
  H5::StrType type(H5::PredType::C_S1, H5T_VARIABLE);
  type.setCset(H5T_CSET_UTF8);
  return type;
}

void set_text_attribute(const H5::H5Object& object, const char* name, const std::string& value) {
  const H5::StrType type = utf8_text_type();
  const H5::Attribute attribute = object.createAttribute(name, type, H5::DataSpace(H5S_SCALAR));
  const char* text = value.c_str();
  attribute.write(type, &text);
}

void set_text_array_attribute(const H5::H5Object& object, const char* name, const std::vector<std::string>& values) {
  const H5::StrType type = utf8_text_type();
  const hsize_t size = values.size();
  const H5::Attribute attribute = object.createAttribute(name, type, H5::DataSpace(1, &size));
  std::vector<const char*> texts;
  for (const std::string& value : values) texts.push_back(value.c_str());
  if (!texts.empty()) attribute.write(type, texts.data());
}

void set_float_array_attribute(const H5::H5Object& object, const char* name, const std::vector<double>& values) {
  const hsize_t size = values.size();
  const H5::Attribute attribute = object.createAttribute(name, H5::PredType::IEEE_F64LE, H5::DataSpace(1, &size));
  if (!values.empty()) attribute.write(H5::PredType::NATIVE_DOUBLE, values.data());
}

template <class Number>
void set_number_attribute(const H5::H5Object& object, const char* name, const H5::PredType& file_type,
                          const H5::PredType& memory_type, Number value) {
  const H5::Attribute attribute = object.createAttribute(name, file_type, H5::DataSpace(H5S_SCALAR));
  attribute.write(memory_type, &value);
}

H5::DataSet create_dataset(const H5::Group& parent, const std::string& name, const H5::DataType& file_type,
                           const std::vector<hsize_t>& shape, const std::string& unit, const std::string& description,
                           const H5::DSetCreatPropList& creation = H5::DSetCreatPropList::DEFAULT,
                           const H5::DSetAccPropList& access = H5::DSetAccPropList::DEFAULT) {
  const H5::DataSpace space(static_cast<int>(shape.size()), shape.data());
  H5::DataSet dataset = parent.createDataSet(name, file_type, space, creation, access);
  set_text_attribute(dataset, "units", unit);
  set_text_attribute(dataset, "description", description);
  return dataset;
}

H5::DSetCreatPropList float_creation(const H5::DataType& memory_type, const void* fill_value) {
  H5::DSetCreatPropList creation;
  creation.setFillValue(memory_type, fill_value);
  return creation;
}

H5::DSetCreatPropList nan_filled_doubles() {
  const double fill = kNaN;
  return float_creation(H5::PredType::NATIVE_DOUBLE, &fill);
}

// A column of one value per subject is [N]; any other width (including 0) is [N x width].
std::vector<hsize_t> column_shape(hsize_t subjects, std::size_t width) {
  return width == 1 ? std::vector<hsize_t>{subjects} : std::vector<hsize_t>{subjects, width};
}

// A small float64 vector written whole, e.g. the time grid.
void write_vector(const H5::Group& parent, const std::string& name, const std::vector<double>& values,
                  const std::string& unit, const std::string& description) {
  H5::DataSet dataset = create_dataset(parent, name, H5::PredType::IEEE_F64LE, {values.size()}, unit, description);
  if (!values.empty()) dataset.write(values.data(), H5::PredType::NATIVE_DOUBLE);
  dataset.close();  // closing writes the data: a failure must throw, not be printed by the destructor
}

// ---- Trajectory chunks -----------------------------------------------------------------------

constexpr float kTrajectoryFill = std::numeric_limits<float>::quiet_NaN();

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
H5::DSetCreatPropList trajectory_creation(hsize_t subjects, hsize_t time_points) {
  const float fill = kTrajectoryFill;
  H5::DSetCreatPropList creation = float_creation(H5::PredType::NATIVE_FLOAT, &fill);
  const ChunkGrid grid = ChunkGrid::of(subjects, time_points);
  if (!grid.chunked()) return creation;
  const std::array<hsize_t, 2> chunk{grid.chunk_rows, grid.chunk_columns};
  creation.setChunk(2, chunk.data());
  creation.setShuffle();  // before deflate: the filters run in the order they are added
  creation.setDeflate(kDeflateLevel);
  return creation;
}

// The chunk cache holds two bands of chunk rows (all chunks of 64 subjects over every time
// point, up to a cap), so that a block of subjects that does not start or end on a chunk
// boundary completes its chunks in memory instead of compressing them twice.
H5::DSetAccPropList trajectory_access(hsize_t subjects, hsize_t time_points) {
  H5::DSetAccPropList access;
  const std::size_t band_bytes =
      static_cast<std::size_t>(std::min(subjects, kChunkSubjects) * time_points) * sizeof(float);
  const std::size_t cache_bytes = std::clamp(2 * band_bytes, kMinChunkCacheBytes, kMaxChunkCacheBytes);
  access.setChunkCache(521, cache_bytes, kChunkCachePreemptionWeight);  // 521: HDF5's default slot count, a prime
  return access;
}

// The rows of a block [first, end) that make up whole chunk rows: [begin, stop), both on chunk
// boundaries (the last chunk row ends at N: HDF5 stores that edge chunk full size, padded with
// the fill value). The rows before and after share their chunks with other blocks. When no chunk
// row is covered whole, begin = stop = end.
struct WholeChunkRows {
  hsize_t begin = 0;
  hsize_t stop = 0;
};

WholeChunkRows whole_chunk_rows(const ChunkGrid& grid, hsize_t first, hsize_t end) {
  if (!grid.chunked()) return {end, end};
  const hsize_t begin = std::min((first + grid.chunk_rows - 1) / grid.chunk_rows * grid.chunk_rows, end);
  const hsize_t stop = end == grid.subjects ? end : end / grid.chunk_rows * grid.chunk_rows;
  return begin < stop ? WholeChunkRows{begin, stop} : WholeChunkRows{end, end};
}

// HDF5's filter pipeline, outside HDF5, for whole chunks. What HDF5 1.10 stores for a chunk of a
// shuffle + deflate dataset is (H5Zshuffle.c, H5Zdeflate.c):
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

class ChunkCompressor {
 public:
  // Compresses the chunk whose first element is (first_row, first_column) of the matrix; `rows`
  // is the block's matrix [row * T + t], its row 0 being subject `rows_first_subject`; every row
  // of the chunk that lies inside the dataset must be in it.
  std::vector<unsigned char> compress(const ChunkGrid& grid, const float* rows, hsize_t rows_first_subject,
                                      hsize_t first_row, hsize_t first_column) {
    const auto elements = static_cast<std::size_t>(grid.chunk_rows * grid.chunk_columns);
    shuffled_.resize(elements * sizeof(float));
    const std::array<unsigned char*, sizeof(float)> planes{shuffled_.data(), shuffled_.data() + elements,
                                                           shuffled_.data() + 2 * elements,
                                                           shuffled_.data() + 3 * elements};
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
  const std::vector<float>& decode(const ChunkGrid& grid, const StoredChunk& chunk) {
    const auto elements = static_cast<std::size_t>(grid.chunk_rows * grid.chunk_columns);
    const std::size_t size = elements * sizeof(float);
    const unsigned char* shuffled = chunk.bytes.data();
    std::size_t shuffled_size = chunk.bytes.size();
    if ((chunk.filter_mask & kDeflateSkipped) == 0) {
      inflated_.resize(size);
      uLongf length = static_cast<uLongf>(size);
      const int status =
          uncompress(inflated_.data(), &length, chunk.bytes.data(), static_cast<uLong>(chunk.bytes.size()));
      if (status != Z_OK) fail(chunk, "zlib uncompress status " + std::to_string(status));
      shuffled = inflated_.data();
      shuffled_size = length;
    }
    if (shuffled_size != size) fail(chunk, std::to_string(shuffled_size) + " bytes, expected " + std::to_string(size));
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

 private:
  [[noreturn]] static void fail(const StoredChunk& chunk, const std::string& problem) {
    throw IoError("the chunk at subject " + std::to_string(chunk.origin[0]) + ", time point " +
                  std::to_string(chunk.origin[1]) + " is corrupt: " + problem);
  }

  std::vector<unsigned char> inflated_;  // scratch, reused from chunk to chunk
  std::vector<float> values_;
};

void write_rows(const H5::DataSet& dataset, const H5::DataType& memory_type, const void* data, hsize_t first_row,
                hsize_t rows, hsize_t width, bool is_matrix) {
  if (rows == 0 || width == 0) return;
  H5::DataSpace file_space = dataset.getSpace();
  const std::array<hsize_t, 2> start{first_row, 0};
  const std::array<hsize_t, 2> count{rows, width};
  const int rank = is_matrix ? 2 : 1;
  file_space.selectHyperslab(H5S_SELECT_SET, count.data(), start.data());
  const H5::DataSpace memory_space(rank, count.data());
  dataset.write(data, memory_type, memory_space, file_space);
}

// Every chunk of a trajectory matrix exists once every subject was written. A chunk still dirty in
// HDF5's chunk cache (rows written uncompressed) is first written to the file by HDF5 itself:
// both H5Dget_chunk_storage_size and H5Dread_chunk evict it before looking it up.
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

// ---- Layout validation ---------------------------------------------------------------------

template <class Column>  // ColumnSpec or MetricColumn
void check_names(const std::string& final_path, const std::string& where, const std::vector<Column>& columns,
                 std::set<std::string> taken) {
  for (const ColumnSpec& column : columns) {
    const std::string& name = column.name;
    if (name.empty() || name == "." || name == ".." || name.find('/') != std::string::npos) {
      throw IoError(final_path + ": cannot define " + where + ": '" + name +
                    "' is not a valid HDF5 name (empty, '.', '..' or contains '/')");
    }
    if (!taken.insert(name).second) {
      throw IoError(final_path + ": cannot define " + where + ": the name '" + name + "' is used twice or is reserved");
    }
  }
}

void check_layout(const std::string& final_path, const RunInfo& info, const std::vector<ArmLayout>& arms,
                  std::int64_t subjects_per_arm) {
  if (subjects_per_arm < 0 || info.subjects_per_arm != subjects_per_arm) {
    throw IoError(final_path + ": cannot define the output: subjects_per_arm is " + std::to_string(subjects_per_arm) +
                  " but the run info says " + std::to_string(info.subjects_per_arm));
  }
  if (arms.empty()) throw IoError(final_path + ": cannot define the output: the run has no arms");
  std::vector<ColumnSpec> arm_names;
  for (const ArmLayout& arm : arms) arm_names.push_back({arm.name, "", 1, ""});
  check_names(final_path, "the arms", arm_names, {});
  for (const ArmLayout& arm : arms) {
    const std::string where = "arm '" + arm.name + "'";
    check_names(final_path, where + " trajectories", arm.trajectories, {});
    check_names(final_path, where + " subject columns", arm.subject_columns, {"id"});
    check_names(final_path, where + " metrics", arm.metrics, {"status", "message"});
    if (arm.dose_time_h.size() != arm.dose_duration_h.size()) {
      throw IoError(final_path + ": cannot define " + where + ": " + std::to_string(arm.dose_time_h.size()) +
                    " dose times but " + std::to_string(arm.dose_duration_h.size()) + " dose durations");
    }
  }
}

std::string utc_now_iso8601() {
  const std::time_t now = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  std::tm utc{};
  gmtime_r(&now, &utc);
  std::array<char, 32> text{};
  std::strftime(text.data(), text.size(), "%Y-%m-%dT%H:%M:%SZ", &utc);
  return text.data();
}

// ---- Writer state --------------------------------------------------------------------------

struct ColumnDataset {
  H5::DataSet dataset;
  std::size_t width = 1;  // 1 → [N]; otherwise [N x width]
};

// The subjects written so far, as disjoint ranges [first, end), merged when they touch: blocks
// come in roughly increasing order, so there are a few ranges at any time, whatever the cohort size
// (a bit per subject was 125 GB for the 2^40 subjects a scenario may have).
class WrittenSubjects {
 public:
  // The first subject of [first, end) already written; end if none.
  std::int64_t first_written(std::int64_t first, std::int64_t end) const {
    auto next = ranges_.upper_bound(first);
    if (next != ranges_.begin() && std::prev(next)->second > first) return first;
    return next != ranges_.end() && next->first < end ? next->first : end;
  }
  // [first, end) must not overlap what was written.
  void add(std::int64_t first, std::int64_t end) {
    if (first == end) return;
    count_ += end - first;
    auto next = ranges_.upper_bound(first);
    if (next != ranges_.end() && next->first == end) {
      end = next->second;
      next = ranges_.erase(next);
    }
    if (next != ranges_.begin() && std::prev(next)->second == first) {
      std::prev(next)->second = end;
      return;
    }
    ranges_.emplace_hint(next, first, end);
  }
  std::int64_t count() const { return count_; }
  std::int64_t first_missing() const {
    return ranges_.empty() || ranges_.begin()->first > 0 ? 0 : ranges_.begin()->second;
  }

 private:
  std::map<std::int64_t, std::int64_t> ranges_;  // first -> end
  std::int64_t count_ = 0;
};

struct ArmDatasets {
  const ArmLayout* layout = nullptr;                                         // in State::layouts
  std::vector<H5::DataSet> trajectories;                                     // [N x T]
  std::vector<std::array<H5::DataSet, kSummaryQuantiles.size()>> summaries;  // [trajectory][quantile]
  std::vector<ColumnDataset> subject_columns;
  std::vector<ColumnDataset> metrics;
  H5::DataSet subject_id;
  H5::DataSet status;
  H5::DataSet message;
  WrittenSubjects written;
};

template <class Visit>
void for_each_dataset(ArmDatasets& arm, const Visit& visit) {
  for (H5::DataSet& dataset : arm.trajectories) visit(dataset);
  for (auto& quantiles : arm.summaries)
    for (H5::DataSet& dataset : quantiles) visit(dataset);
  for (ColumnDataset& column : arm.subject_columns) visit(column.dataset);
  for (ColumnDataset& column : arm.metrics) visit(column.dataset);
  visit(arm.subject_id);
  visit(arm.status);
  visit(arm.message);
}

}  // namespace

struct ResultWriter::State {
  enum class Phase { open, finished, failed };

  // Set by the constructor and never changed afterwards: prepare() reads them from any thread.
  std::string final_path;
  std::string temporary_path;
  // Declared before `file`, so destroyed after it: the temporary file is closed before removal.
  std::optional<AtomicOutputFile> output;
  std::int64_t subjects_per_arm = 0;
  ResultWriterOptions options;
  std::vector<ArmLayout> layouts;

  // Used by the writer thread only.
  Hdf5ErrorStack error_stack;
  hdf5_file_driver::FileControl file_control;  // of `file`, which refers to it
  std::optional<H5::H5File> file;              // emplaced: H5File's copy assignment is deprecated
  std::vector<ArmDatasets> arms;
  Phase phase = Phase::open;

  State() = default;
  State(const State&) = delete;
  State& operator=(const State&) = delete;
  ~State();

  // Runs an HDF5 action; an H5::Exception becomes an IoError naming the temporary file.
  template <class Action>
  void hdf5(const std::string& what, Action&& action) {
    error_stack.clear();
    try {
      std::forward<Action>(action)();
    } catch (const H5::Exception& exception) {
      throw IoError(temporary_path + ": cannot " + what + ": " +
                    describe(exception, error_stack, file_control.failure));
    }
    // A failure that HDF5 did not report to the caller (the destructor of a C++ wrapper object
    // swallows it), or that an earlier call left behind: the file is incomplete either way.
    if (file_control.failure != 0 && !file_control.discard_writes) {
      throw IoError(temporary_path + ": cannot " + what + ": " + std::strerror(file_control.failure));
    }
  }

  void create_file();
  void write_root_attributes(const RunInfo& info);
  void define_arm(const ArmLayout& layout);  // layout: an element of `layouts`
  void define_subjects(const H5::Group& arm_group, ArmDatasets& arm) const;
  void define_metrics(const H5::Group& arm_group, ArmDatasets& arm) const;
  void define_trajectories(const H5::Group& arm_group, ArmDatasets& arm) const;
  void check_block_shape(const SubjectBlock& block) const;  // thread-safe
  void check_not_written(const SubjectBlock& block) const;
  void write_block(const SubjectBlock& block);
  void write_prepared_block(const PreparedBlock& block);
  void write_trajectory_rows(const ArmDatasets& arm, hsize_t first, hsize_t rows,
                             const std::vector<std::vector<float>>& trajectories) const;
  void write_subject_columns(const ArmDatasets& arm, const SubjectBlock& block) const;
  static void mark_written(ArmDatasets& arm, const SubjectBlock& block);
  void check_every_subject_written() const;
  struct SummaryTask {
    const H5::DataSet& dataset;
    ChunkGrid grid;
    std::string what;
    std::array<std::vector<double>, kSummaryQuantiles.size()> quantiles;  // [quantile][time point]
  };
  void write_summary(const ArmDatasets& arm, std::size_t trajectory);
  void summarize_by_slabs(SummaryTask& task, unsigned threads, hsize_t slab_columns);
  void summarize_by_selection(SummaryTask& task);
  void throw_if_cancelled(const SummaryTask& task) const;
  void close_file();
  void discard_file() noexcept;
};

ResultWriter::State::~State() {
  if (phase != Phase::finished) discard_file();
}

void ResultWriter::State::create_file() {
  hdf5("create the temporary output file", [&] {
    H5::FileAccPropList access;
    access.setFcloseDegree(H5F_CLOSE_STRONG);  // closing the file really closes it before the rename
    hdf5_file_driver::use(access.getId(), &file_control);
    file.emplace(temporary_path, H5F_ACC_EXCL, H5::FileCreatPropList::DEFAULT,
                 access);  // a new name, never another's file
  });
}

void ResultWriter::State::write_root_attributes(const RunInfo& info) {
  hdf5("write the root attributes", [&] {
    set_text_attribute(*file, "ketasim_version", kVersion);
    set_number_attribute(*file, "layout_version", H5::PredType::STD_I32LE, H5::PredType::NATIVE_INT, kLayoutVersion);
    set_text_attribute(*file, "source_revision", kSourceRevision);
    set_text_attribute(*file, "scenario_file", info.scenario_file);
    set_text_attribute(*file, "scenario_yaml", info.scenario_yaml);
    set_text_attribute(*file, "scenario_name", info.scenario_name);
    set_text_attribute(*file, "model", info.model_name);
    set_number_attribute(*file, "seed", H5::PredType::STD_U64LE, H5::PredType::NATIVE_UINT64, info.seed);
    set_number_attribute(*file, "subjects_per_arm", H5::PredType::STD_I64LE, H5::PredType::NATIVE_INT64,
                         info.subjects_per_arm);
    set_number_attribute(*file, "replicates", H5::PredType::STD_I64LE, H5::PredType::NATIVE_INT64, info.replicates);
    set_number_attribute(*file, "subjects_per_replicate", H5::PredType::STD_I64LE, H5::PredType::NATIVE_INT64,
                         info.subjects_per_replicate > 0 ? info.subjects_per_replicate : info.subjects_per_arm);
    set_text_attribute(*file, "solver_method", info.solver_method);
    set_number_attribute(*file, "solver_rtol", H5::PredType::IEEE_F64LE, H5::PredType::NATIVE_DOUBLE, info.solver_rtol);
    set_number_attribute(*file, "solver_atol", H5::PredType::IEEE_F64LE, H5::PredType::NATIVE_DOUBLE, info.solver_atol);
    set_text_attribute(*file, "created_utc", utc_now_iso8601());
  });
}

void ResultWriter::State::define_arm(const ArmLayout& layout) {
  ArmDatasets arm;
  arm.layout = &layout;
  hdf5("define arm '" + layout.name + "'", [&] {
    const H5::Group group = file->createGroup("arms/" + layout.name);
    set_text_attribute(group, "description", layout.description);
    set_text_attribute(group, "model", layout.model);
    std::vector<std::string> names, units;
    std::vector<double> values;
    for (const ParameterValue& parameter : layout.model_parameters) {
      names.push_back(parameter.name);
      values.push_back(parameter.value);
      units.push_back(parameter.unit);
    }
    set_text_array_attribute(group, "model_parameters", names);
    set_float_array_attribute(group, "model_parameter_values", values);
    set_text_array_attribute(group, "model_parameter_units", units);
    set_float_array_attribute(group, "price_per_session_usd",
                              {layout.price_per_session_usd[0], layout.price_per_session_usd[1]});
    write_vector(group, "time_h", layout.time_h, "h", "output time grid, hours from the start of the simulation");
    define_subjects(group, arm);
    define_metrics(group, arm);
    const H5::Group doses = group.createGroup("doses");
    write_vector(doses, "time_h", layout.dose_time_h, "h",
                 "nominal dose times of the scheduled rules, hours from the start of the simulation "
                 "(per-subject doses given: subjects/dose_time_h)");
    write_vector(doses, "duration_h", layout.dose_duration_h, "h", "infusion durations; 0 for a bolus");
    write_vector(group, "assessments_h", layout.assessment_time_h, "h",
                 "MADRS assessment times, hours after the start of the first session (columns of the *_at metrics)");
    write_vector(group, "observation_times_h", layout.observation_time_h, "h",
                 "sampling times of the simulated observations (metrics ipred_* and dv_*), hours from the start");
    set_text_array_attribute(group, "observed_outputs", layout.observed_outputs);
    define_trajectories(group, arm);
  });
  arms.push_back(std::move(arm));
}

void ResultWriter::State::define_subjects(const H5::Group& arm_group, ArmDatasets& arm) const {
  const auto subjects = static_cast<hsize_t>(subjects_per_arm);
  const H5::Group group = arm_group.createGroup("subjects");
  arm.subject_id =
      create_dataset(group, "id", H5::PredType::STD_I64LE, {subjects}, "", "subject id (row index within the arm)");
  for (const ColumnSpec& column : arm.layout->subject_columns) {
    arm.subject_columns.push_back(
        {create_dataset(group, column.name, H5::PredType::IEEE_F64LE, column_shape(subjects, column.width), column.unit,
                        column.description, nan_filled_doubles()),
         column.width});
  }
}

void ResultWriter::State::define_metrics(const H5::Group& arm_group, ArmDatasets& arm) const {
  const auto subjects = static_cast<hsize_t>(subjects_per_arm);
  const H5::Group group = arm_group.createGroup("metrics");
  for (const ColumnSpec& column : arm.layout->metrics) {
    arm.metrics.push_back(
        {create_dataset(group, column.name, H5::PredType::IEEE_F64LE, column_shape(subjects, column.width), column.unit,
                        column.description, nan_filled_doubles()),
         column.width});
  }
  arm.status = create_dataset(group, "status", H5::PredType::STD_I8LE, {subjects}, "",
                              "0 = solved, 1 = failed (the subject's trajectories and metrics are NaN)");
  arm.message = create_dataset(group, "message", utf8_text_type(), {subjects}, "",
                               "empty when solved, otherwise why the subject failed");
}

void ResultWriter::State::define_trajectories(const H5::Group& arm_group, ArmDatasets& arm) const {
  const auto subjects = static_cast<hsize_t>(subjects_per_arm);
  const hsize_t time_points = arm.layout->time_h.size();
  const H5::DSetCreatPropList creation = trajectory_creation(subjects, time_points);
  const H5::DSetAccPropList access = trajectory_access(subjects, time_points);
  const H5::Group trajectories = arm_group.createGroup("trajectories");
  const H5::Group summary = arm_group.createGroup("summary");
  for (const ColumnSpec& column : arm.layout->trajectories) {
    arm.trajectories.push_back(create_dataset(trajectories, column.name, H5::PredType::IEEE_F32LE,
                                              {subjects, time_points}, column.unit, column.description, creation,
                                              access));
    const H5::Group quantiles = summary.createGroup(column.name);
    std::array<H5::DataSet, kSummaryQuantiles.size()> datasets;
    for (std::size_t q = 0; q < kSummaryQuantiles.size(); ++q) {
      const std::string percentile = std::to_string(std::lround(kSummaryQuantiles[q].probability * 100.0));
      datasets[q] = create_dataset(
          quantiles, kSummaryQuantiles[q].name, H5::PredType::IEEE_F64LE, {time_points}, column.unit,
          percentile + "th percentile of " + column.name + " over subjects at each time point (type 7, NaN ignored)",
          nan_filled_doubles());
    }
    arm.summaries.push_back(datasets);
  }
}

namespace {

[[noreturn]] void reject_block(const std::string& final_path, const SubjectBlock& block, const std::string& problem) {
  throw IoError(final_path + ": cannot write subjects [" + std::to_string(block.first_subject) + ", " +
                std::to_string(block.first_subject + block.count) + ") of arm " + std::to_string(block.arm) + ": " +
                problem);
}

}  // namespace

void ResultWriter::State::check_block_shape(const SubjectBlock& block) const {
  const auto reject = [&](const std::string& problem) { reject_block(final_path, block, problem); };
  if (block.arm >= layouts.size()) reject("there are only " + std::to_string(layouts.size()) + " arms");
  const ArmLayout& layout = layouts[block.arm];
  if (block.first_subject < 0 || block.count < 0 || block.first_subject > subjects_per_arm - block.count) {
    reject("the arm has subjects [0, " + std::to_string(subjects_per_arm) + ")");
  }
  const auto rows = static_cast<std::size_t>(block.count);
  const auto check_sizes = [&](const char* kind, const auto& specs, const auto& buffers, auto width_of) {
    if (buffers.size() != specs.size()) {
      reject(std::string(kind) + ": " + std::to_string(buffers.size()) + " buffers for " +
             std::to_string(specs.size()) + " columns");
    }
    for (std::size_t i = 0; i < specs.size(); ++i) {
      const std::size_t expected = rows * width_of(specs[i]);
      if (buffers[i].size() != expected) {
        reject(std::string(kind) + " '" + specs[i].name + "': " + std::to_string(buffers[i].size()) +
               " values, expected " + std::to_string(expected));
      }
    }
  };
  const auto width = [](const ColumnSpec& spec) { return spec.width; };
  const auto time_points = [&](const ColumnSpec&) { return layout.time_h.size(); };
  check_sizes("trajectory", layout.trajectories, block.trajectories, time_points);
  check_sizes("subject column", layout.subject_columns, block.subject_columns, width);
  check_sizes("metric", layout.metrics, block.metrics, width);
  if (block.status.size() != rows || block.message.size() != rows) {
    reject(std::to_string(block.status.size()) + " status values and " + std::to_string(block.message.size()) +
           " messages for " + std::to_string(rows) + " subjects");
  }
  for (std::size_t row = 0; row < rows; ++row) {
    if (block.status[row] != 0 && block.status[row] != 1) {
      reject("status " + std::to_string(block.status[row]) + " of subject " +
             std::to_string(block.first_subject + static_cast<std::int64_t>(row)) + " is neither 0 nor 1");
    }
  }
}

// The block's arm and range are valid (check_block_shape).
void ResultWriter::State::check_not_written(const SubjectBlock& block) const {
  const ArmDatasets& arm = arms[block.arm];
  const std::int64_t end = block.first_subject + block.count;
  const std::int64_t subject = arm.written.first_written(block.first_subject, end);
  if (subject != end) {
    reject_block(final_path, block,
                 "subject " + std::to_string(subject) + " of arm '" + arm.layout->name + "' was already written");
  }
}

void ResultWriter::State::write_trajectory_rows(const ArmDatasets& arm, hsize_t first, hsize_t rows,
                                                const std::vector<std::vector<float>>& trajectories) const {
  for (std::size_t i = 0; i < arm.trajectories.size(); ++i) {
    write_rows(arm.trajectories[i], H5::PredType::NATIVE_FLOAT, trajectories[i].data(), first, rows,
               arm.layout->time_h.size(), true);
  }
}

// Everything of the block but its trajectories.
void ResultWriter::State::write_subject_columns(const ArmDatasets& arm, const SubjectBlock& block) const {
  const auto first = static_cast<hsize_t>(block.first_subject);
  const auto rows = static_cast<hsize_t>(block.count);
  const auto write_columns = [&](const std::vector<ColumnDataset>& columns, const auto& buffers) {
    for (std::size_t i = 0; i < columns.size(); ++i) {
      write_rows(columns[i].dataset, H5::PredType::NATIVE_DOUBLE, buffers[i].data(), first, rows, columns[i].width,
                 columns[i].width != 1);
    }
  };
  write_columns(arm.subject_columns, block.subject_columns);
  write_columns(arm.metrics, block.metrics);
  std::vector<std::int64_t> ids(block.status.size());
  std::iota(ids.begin(), ids.end(), block.first_subject);
  write_rows(arm.subject_id, H5::PredType::NATIVE_INT64, ids.data(), first, rows, 1, false);
  write_rows(arm.status, H5::PredType::NATIVE_INT8, block.status.data(), first, rows, 1, false);
  std::vector<const char*> messages;
  for (const std::string& message : block.message) messages.push_back(message.c_str());
  write_rows(arm.message, utf8_text_type(), messages.data(), first, rows, 1, false);
}

void ResultWriter::State::mark_written(ArmDatasets& arm, const SubjectBlock& block) {
  arm.written.add(block.first_subject, block.first_subject + block.count);
}

void ResultWriter::State::write_block(const SubjectBlock& block) {
  ArmDatasets& arm = arms[block.arm];
  hdf5("write subjects of arm '" + arm.layout->name + "'", [&] {
    write_trajectory_rows(arm, static_cast<hsize_t>(block.first_subject), static_cast<hsize_t>(block.count),
                          block.trajectories);
    write_subject_columns(arm, block);
  });
  mark_written(arm, block);
}

void ResultWriter::State::write_prepared_block(const PreparedBlock& block) {
  const SubjectBlock& columns = block.columns_;
  ArmDatasets& arm = arms[columns.arm];
  hdf5("write subjects of arm '" + arm.layout->name + "'", [&] {
    for (const PreparedBlock::Chunk& chunk : block.chunks_) {
      const std::array<hsize_t, 2> offset{static_cast<hsize_t>(chunk.first_subject),
                                          static_cast<hsize_t>(chunk.first_time_point)};
      const unsigned all_filters_applied = 0;
      if (H5Dwrite_chunk(arm.trajectories[chunk.trajectory].getId(), H5P_DEFAULT, all_filters_applied, offset.data(),
                         chunk.bytes.size(), chunk.bytes.data()) < 0) {
        throw H5::DataSetIException("H5Dwrite_chunk", "cannot write a compressed trajectory chunk");
      }
    }
    for (const PreparedBlock::Rows& rows : block.uncompressed_rows_) {
      write_trajectory_rows(arm, static_cast<hsize_t>(rows.first_subject), static_cast<hsize_t>(rows.count),
                            rows.trajectories);
    }
    write_subject_columns(arm, columns);
  });
  mark_written(arm, columns);
}

void ResultWriter::State::check_every_subject_written() const {
  for (const ArmDatasets& arm : arms) {
    if (arm.written.count() == subjects_per_arm) continue;
    const std::int64_t first_missing = arm.written.first_missing();
    throw IoError(final_path + ": cannot finish the output: " + std::to_string(subjects_per_arm - arm.written.count()) +
                  " of " + std::to_string(subjects_per_arm) + " subjects of arm '" + arm.layout->name +
                  "' were never written (the first is subject " + std::to_string(first_missing) + ")");
  }
}

// The per-time quantiles of one trajectory matrix [N x T], within options.summary_memory_bytes
// whatever N is: from slabs of whole time columns while one column of N values fits, otherwise
// selected exactly from the compressed chunks in a few passes. HDF5 calls stay on this thread.
void ResultWriter::State::write_summary(const ArmDatasets& arm, std::size_t trajectory) {
  SummaryTask task{
      arm.trajectories[trajectory],
      ChunkGrid::of(static_cast<hsize_t>(subjects_per_arm), arm.layout->time_h.size()),
      "summarize trajectory '" + arm.layout->trajectories[trajectory].name + "' of arm '" + arm.layout->name + "'",
      {}};
  for (auto& values : task.quantiles) values.assign(task.grid.time_points, kNaN);
  if (task.grid.chunked()) {
    const unsigned threads = thread_count(options.summary_threads);
    const hsize_t slab_columns = summary_columns_per_slab(task.grid, options.summary_memory_bytes, threads);
    if (slab_columns > 0) {
      summarize_by_slabs(task, threads, slab_columns);
    } else {
      summarize_by_selection(task);
    }
  }
  if (task.grid.time_points == 0) return;
  hdf5(task.what, [&] {
    for (std::size_t q = 0; q < kSummaryQuantiles.size(); ++q) {
      arm.summaries[trajectory][q].write(task.quantiles[q].data(), H5::PredType::NATIVE_DOUBLE);
    }
  });
}

void ResultWriter::State::throw_if_cancelled(const SummaryTask& task) const {
  if (options.cancel != nullptr && options.cancel->load()) throw InterruptedError("interrupted: did not " + task.what);
}

// It reads the compressed chunks of a slab in small batches, and the summary threads decode them
// into the slab (column-major, so that each time point's values are contiguous), then select the
// quantiles of each time point in place.
void ResultWriter::State::summarize_by_slabs(SummaryTask& task, unsigned threads, hsize_t slab_columns) {
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
      const std::vector<float>& values = decoders[thread].decode(grid, chunk);
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
      hdf5(task.what, [&] {
        for (std::size_t i = 0; i < batch.size(); ++i) read_stored_chunk(task.dataset, origins[next + i], batch[i]);
      });
      try {
        parallel_for(threads, batch.size(), decode_into_slab);
      } catch (const IoError& error) {
        throw IoError(temporary_path + ": cannot " + task.what + ": " + error.what());
      }
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
void ResultWriter::State::summarize_by_selection(SummaryTask& task) {
  const ChunkGrid& grid = task.grid;
  std::array<double, kSummaryQuantiles.size()> probabilities{};
  for (std::size_t q = 0; q < kSummaryQuantiles.size(); ++q) probabilities[q] = kSummaryQuantiles[q].probability;
  const std::size_t histogram_bytes =
      2 * kSummaryQuantiles.size() * RadixSelection<float>::kBuckets * sizeof(std::uint64_t);
  const hsize_t group_columns =
      std::clamp<hsize_t>(options.summary_memory_bytes / histogram_bytes, 1, grid.chunk_columns);
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
          hdf5(task.what, [&] { read_stored_chunk(task.dataset, {row, chunk_column}, chunk); });
          const std::vector<float>* values = nullptr;
          try {
            values = &decoder.decode(grid, chunk);
          } catch (const IoError& error) {
            throw IoError(temporary_path + ": cannot " + task.what + ": " + error.what());
          }
          const hsize_t rows = std::min(grid.chunk_rows, grid.subjects - row);
          const hsize_t t_begin = std::max(first, chunk_column);
          const hsize_t t_end = std::min({first + width, chunk_column + grid.chunk_columns, grid.time_points});
          for (hsize_t r = 0; r < rows; ++r) {
            for (hsize_t t = t_begin; t < t_end; ++t) {
              const float value = (*values)[r * grid.chunk_columns + (t - chunk_column)];
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

// Closes every dataset, then the file, each exactly once, also when closing fails: a failed
// H5Dclose keeps the dataset's ID, and the next attempt (H5::DataSet's destructor) would print its
// failure to stderr; a failed H5Fclose leaves an ID on which HDF5 crashes at exit
// (hdf5_file_driver.hpp), and a second H5Fclose (H5File's destructor) crashes at once. The file is
// therefore flushed first and closed only once that succeeded; otherwise it stays open for
// discard_file(). Throws the first failure once everything that could be released was.
void ResultWriter::State::close_file() {
  std::optional<IoError> first_failure;
  for (ArmDatasets& arm : arms) {
    for_each_dataset(arm, [&](H5::DataSet& dataset) {
      try {
        hdf5("close a dataset of arm '" + arm.layout->name + "'", [&] { dataset.close(); });
      } catch (const IoError& failure) {
        if (!first_failure) first_failure = failure;
      }
    });
  }
  if (first_failure) throw *first_failure;  // the datasets that could not be closed stay in `arms`
  arms.clear();                             // the datasets must be released before the file
  if (!file) return;
  hdf5("flush the file", [&] { file->flush(H5F_SCOPE_LOCAL); });
  const hid_t id = file->getId();
  H5Iinc_ref(id);  // the wrapper's destructor then only drops its own reference
  file.reset();
  hdf5("close the file", [&] {
    if (H5Fclose(id) < 0) throw H5::FileIException("H5Fclose", "cannot close the file");
  });
}

// An unfinished file is thrown away: its writes are discarded from here on, so that closing it
// (which flushes HDF5's caches) cannot fail for want of space, then it is removed. Never throws.
void ResultWriter::State::discard_file() noexcept {
  file_control.discard_writes = true;
  try {
    ErrorStackRecorder recorder(error_stack);
    close_file();
  } catch (...) {  // NOLINT(bugprone-empty-catch): the file is removed whether or not it closed
  }
  // The temporary file itself is removed by `output` (AtomicOutputFile), destroyed after this.
}

// ---- ResultWriter --------------------------------------------------------------------------

ResultSizeEstimate estimate_result_size(const std::vector<ArmLayout>& arms, std::int64_t subjects_per_arm) {
  // Compression ratios of the trajectories, and what every file has besides its datasets
  // (attributes, the scenario text, HDF5's own structures: 0.15 to 0.3 MB measured).
  constexpr double kExpectedRatio = 3.5;
  constexpr double kBestRatio = 8.0;
  constexpr std::uintmax_t kFileOverheadBytes = std::uintmax_t{128} << 10;
  constexpr std::uintmax_t kMessageSlotBytes = 16;  // a variable-length string's reference; a failure adds its text
  const auto subjects = static_cast<std::uintmax_t>(std::max<std::int64_t>(subjects_per_arm, 0));
  const auto round_up = [](std::uintmax_t value, std::uintmax_t step) {
    return step ? (value + step - 1) / step * step : value;
  };
  double trajectories = 0.0;                    // uncompressed, without chunk padding
  std::uintmax_t padded_trajectories = 0;       // as stored when no chunk compresses
  std::uintmax_t summaries = 0;                 // p05, p50, p95 of each trajectory, uncompressed
  std::uintmax_t columns = kFileOverheadBytes;  // everything else: uncompressed
  for (const ArmLayout& arm : arms) {
    const std::uintmax_t time_points = arm.time_h.size();
    const ChunkGrid grid = ChunkGrid::of(subjects, time_points);
    trajectories += static_cast<double>(arm.trajectories.size() * subjects * time_points * sizeof(float));
    padded_trajectories += arm.trajectories.size() * round_up(subjects, grid.chunk_rows) *
                           round_up(time_points, grid.chunk_columns) * sizeof(float);
    summaries += arm.trajectories.size() * kSummaryQuantiles.size() * time_points * sizeof(double);
    std::uintmax_t width = 0;
    for (const ColumnSpec& column : arm.subject_columns) width += column.width;
    for (const ColumnSpec& column : arm.metrics) width += column.width;
    columns += subjects * (width * sizeof(double) + sizeof(std::int64_t) + sizeof(std::int8_t) + kMessageSlotBytes);
    columns +=
        (time_points + 2 * arm.dose_time_h.size() + arm.assessment_time_h.size() + arm.observation_time_h.size()) *
        sizeof(double);
  }
  ResultSizeEstimate estimate;
  estimate.least_bytes = columns + summaries + static_cast<std::uintmax_t>(trajectories / kBestRatio);
  estimate.expected_bytes = columns + summaries + static_cast<std::uintmax_t>(trajectories / kExpectedRatio);
  estimate.upper_bound_bytes = columns + summaries + padded_trajectories;
  estimate.without_trajectories_bytes = columns;
  return estimate;
}

ResultWriter::ResultWriter(std::string final_path, const RunInfo& info, std::vector<ArmLayout> arms,
                           std::int64_t subjects_per_arm, ResultWriterOptions options)
    : state_(std::make_unique<State>()) {
  State& state = *state_;
  state.final_path = std::move(final_path);
  state.output.emplace(state.final_path, std::vector<std::string>{info.scenario_file});
  state.temporary_path = state.output->temporary_path();
  state.subjects_per_arm = subjects_per_arm;
  state.options = options;
  check_layout(state.final_path, info, arms, subjects_per_arm);
  state.layouts = std::move(arms);  // never resized again: the arms' datasets point into it

  ErrorStackRecorder recorder(state.error_stack);
  state.create_file();
  state.write_root_attributes(info);
  std::vector<std::string> arm_names;
  for (const ArmLayout& arm : state.layouts) arm_names.push_back(arm.name);
  state.hdf5("write the arm names", [&] {
    set_text_array_attribute(*state.file, "arms", arm_names);
    state.file->createGroup("arms");
  });
  for (const ArmLayout& arm : state.layouts) state.define_arm(arm);
}

ResultWriter::ResultWriter(ResultWriter&&) noexcept = default;
ResultWriter& ResultWriter::operator=(ResultWriter&&) noexcept = default;
ResultWriter::~ResultWriter() = default;  // State's destructor removes an unfinished file

ResultWriter::State& ResultWriter::open_state(const char* operation) {
  if (!state_) throw IoError(std::string("ResultWriter::") + operation + ": the writer was moved from");
  if (state_->phase != State::Phase::open) {
    throw IoError(state_->final_path + ": cannot " + operation + ": the writer is " +
                  (state_->phase == State::Phase::finished ? "already finished" : "unusable after an earlier failure"));
  }
  return *state_;
}

void ResultWriter::write(const SubjectBlock& block) {
  State& state = open_state("write");
  state.check_block_shape(block);
  state.check_not_written(block);
  ErrorStackRecorder recorder(state.error_stack);
  state.phase = State::Phase::failed;  // until the write completes
  state.write_block(block);
  state.phase = State::Phase::open;
}

PreparedBlock ResultWriter::prepare(SubjectBlock block) const {
  if (!state_) throw IoError("ResultWriter::prepare: the writer was moved from");
  const State& state = *state_;  // only what the constructor set; nothing here may touch HDF5
  state.check_block_shape(block);
  const ArmLayout& layout = state.layouts[block.arm];
  const ChunkGrid grid = ChunkGrid::of(static_cast<hsize_t>(state.subjects_per_arm), layout.time_h.size());
  const auto first = static_cast<hsize_t>(block.first_subject);
  const auto end = first + static_cast<hsize_t>(block.count);
  const WholeChunkRows whole = whole_chunk_rows(grid, first, end);

  PreparedBlock prepared;
  prepared.writer_state_ = state_.get();
  ChunkCompressor compressor;
  for (std::size_t trajectory = 0; trajectory < block.trajectories.size(); ++trajectory) {
    for (hsize_t row = whole.begin; row < whole.stop; row += grid.chunk_rows) {
      for (hsize_t column = 0; column < grid.time_points; column += grid.chunk_columns) {
        prepared.chunks_.push_back(
            {trajectory, static_cast<std::int64_t>(row), static_cast<std::int64_t>(column),
             compressor.compress(grid, block.trajectories[trajectory].data(), first, row, column)});
      }
    }
  }
  const auto keep_rows = [&](hsize_t begin, hsize_t stop) {
    if (begin == stop) return;
    PreparedBlock::Rows& rows = prepared.uncompressed_rows_.emplace_back();
    rows.first_subject = static_cast<std::int64_t>(begin);
    rows.count = static_cast<std::int64_t>(stop - begin);
    for (const std::vector<float>& values : block.trajectories) {
      const auto from = values.begin() + static_cast<std::ptrdiff_t>((begin - first) * grid.time_points);
      rows.trajectories.emplace_back(from, from + static_cast<std::ptrdiff_t>((stop - begin) * grid.time_points));
    }
  };
  keep_rows(first, whole.begin);
  keep_rows(whole.stop, end);
  block.trajectories.clear();
  prepared.columns_ = std::move(block);
  return prepared;
}

void ResultWriter::write(PreparedBlock&& block) {
  State& state = open_state("write");
  if (block.writer_state_ != state_.get()) {
    throw IoError(state.final_path + ": cannot write a prepared block: it was not prepared by this writer" +
                  (block.writer_state_ == nullptr ? " (it was moved from)" : ""));
  }
  state.check_not_written(block.columns_);
  ErrorStackRecorder recorder(state.error_stack);
  state.phase = State::Phase::failed;  // until the write completes
  state.write_prepared_block(block);
  state.phase = State::Phase::open;
}

void ResultWriter::finish(const std::function<void(const FinishProgress&)>& on_progress) {
  State& state = open_state("finish");
  ErrorStackRecorder recorder(state.error_stack);
  state.phase = State::Phase::failed;  // until the rename succeeds; the destructor then cleans up
  state.check_every_subject_written();
  FinishProgress progress;
  for (const ArmDatasets& arm : state.arms) progress.summaries_total += arm.trajectories.size();
  const auto report = [&] {
    if (on_progress) on_progress(progress);
  };
  for (const ArmDatasets& arm : state.arms) {
    for (std::size_t trajectory = 0; trajectory < arm.trajectories.size(); ++trajectory) {
      report();
      state.write_summary(arm, trajectory);
      ++progress.summaries_done;
    }
  }
  report();  // all summaries done: closing, flushing and renaming
  state.close_file();
  state.output->commit();
  state.phase = State::Phase::finished;
}

const std::string& ResultWriter::final_path() const {
  return state_->final_path;
}
const std::string& ResultWriter::temporary_path() const {
  return state_->temporary_path;
}

}  // namespace ketasim
