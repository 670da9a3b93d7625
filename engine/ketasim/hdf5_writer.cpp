#include "ketasim/hdf5_writer.hpp"

#include <H5Cpp.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <limits>
#include <numeric>
#include <optional>
#include <set>
#include <utility>

#include "ketasim/errors.hpp"
#include "ketasim/version.hpp"

namespace ketasim {
namespace {

namespace fs = std::filesystem;

// Shapes and names of docs/hdf5-layout.md. Changing any of them is an incompatible change of
// the file format: bump kLayoutVersion and update the document.
constexpr hsize_t kChunkSubjects = static_cast<hsize_t>(kTrajectoryChunkSubjects);
constexpr hsize_t kChunkTimePoints = 4096;  // 64 x 4096 float32 = 1 MiB, the largest chunk
// Deflate level 1: on shuffled float32 trajectories level 6 cost ~30% more write time for files
// only ~4% smaller (20000 x 2000 benchmark, 4.2:1 at level 1); shuffle alone doubles the ratio.
constexpr int kDeflateLevel = 1;
constexpr std::size_t kMinChunkCacheBytes = std::size_t{1} << 20;
constexpr std::size_t kMaxChunkCacheBytes = std::size_t{8} << 20;

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
// e.g. "H5FD_sec2_open(): unable to open file: ... error message = 'Permission denied'".
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

std::string describe(const H5::Exception& exception, const Hdf5ErrorStack& stack) {
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
  const H5::DataSet dataset =
      create_dataset(parent, name, H5::PredType::IEEE_F64LE, {values.size()}, unit, description);
  if (!values.empty()) dataset.write(values.data(), H5::PredType::NATIVE_DOUBLE);
}

// [N x T] float32, chunked by subjects x time points, shuffle + deflate. Chunks must have
// non-zero sizes, so an empty matrix stays contiguous (and uncompressed).
H5::DSetCreatPropList trajectory_creation(hsize_t subjects, hsize_t time_points) {
  const float fill = std::numeric_limits<float>::quiet_NaN();
  H5::DSetCreatPropList creation = float_creation(H5::PredType::NATIVE_FLOAT, &fill);
  if (subjects == 0 || time_points == 0) return creation;
  const std::array<hsize_t, 2> chunk{std::min(subjects, kChunkSubjects), std::min(time_points, kChunkTimePoints)};
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
  access.setChunkCache(521, cache_bytes, 1.0);  // 521: HDF5's default slot count, a prime
  return access;
}

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

// ---- Quantiles -----------------------------------------------------------------------------

// Hyndman & Fan type 7 (R's default): with the n values sorted x[0..n-1], h = (n - 1) p and
// Q(p) = x[floor h] + (h - floor h) (x[floor h + 1] - x[floor h]). Reorders `values`; the result
// depends only on the multiset of values, never on their order. No values → NaN.
double type7_quantile(std::vector<double>& values, double probability) {
  if (values.empty()) return kNaN;
  const double position = static_cast<double>(values.size() - 1) * probability;
  const auto low_index = static_cast<std::size_t>(std::floor(position));
  const double fraction = position - static_cast<double>(low_index);
  const auto low = values.begin() + static_cast<std::ptrdiff_t>(low_index);
  std::nth_element(values.begin(), low, values.end());
  if (fraction == 0.0 || low_index + 1 == values.size()) return *low;
  const double high = *std::min_element(low + 1, values.end());  // after nth_element, all >= *low
  return *low == high ? high : (1.0 - fraction) * *low + fraction * high;
}

// Time columns per slab read back in finish(): the slab (N x columns float32) plus one column of
// double scratch must fit in the budget. Slabs wider than a chunk are whole multiples of the
// chunk width, so that each chunk is decompressed once.
hsize_t summary_columns_per_slab(hsize_t subjects, hsize_t time_points, std::size_t budget_bytes) {
  const std::size_t scratch_bytes = static_cast<std::size_t>(subjects) * sizeof(double);
  const std::size_t slab_bytes = budget_bytes > scratch_bytes ? budget_bytes - scratch_bytes : 0;
  hsize_t columns = std::max<hsize_t>(1, slab_bytes / (static_cast<std::size_t>(subjects) * sizeof(float)));
  columns = std::min(columns, time_points);
  const hsize_t chunk_columns = std::min(time_points, kChunkTimePoints);
  if (columns >= chunk_columns) columns -= columns % chunk_columns;
  return columns;
}

// ---- Layout validation ---------------------------------------------------------------------

void check_names(const std::string& final_path, const std::string& where, const std::vector<ColumnSpec>& columns,
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

// Rename makes the file visible atomically; fsync first so that a crash right after the rename
// cannot leave a complete-looking name on incomplete contents.
void flush_to_disk(const std::string& path) {
  const int descriptor = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (descriptor < 0 || ::fsync(descriptor) != 0) {
    const std::string reason = std::strerror(errno);
    if (descriptor >= 0) ::close(descriptor);
    throw IoError(path + ": cannot flush the finished file to disk: " + reason);
  }
  ::close(descriptor);
}

void flush_directory_entry(const fs::path& directory) {
  // Best effort: not every file system can fsync a directory, and the data is already safe.
  const int descriptor = ::open(directory.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (descriptor < 0) return;
  (void)::fsync(descriptor);
  ::close(descriptor);
}

fs::path directory_of(const std::string& path) {
  const fs::path parent = fs::path(path).parent_path();
  return parent.empty() ? fs::path(".") : parent;
}

// ---- Writer state --------------------------------------------------------------------------

struct ColumnDataset {
  H5::DataSet dataset;
  std::size_t width = 1;  // 1 → [N]; otherwise [N x width]
};

struct ArmDatasets {
  ArmLayout layout;
  std::vector<H5::DataSet> trajectories;                                     // [N x T]
  std::vector<std::array<H5::DataSet, kSummaryQuantiles.size()>> summaries;  // [trajectory][quantile]
  std::vector<ColumnDataset> subject_columns;
  std::vector<ColumnDataset> metrics;
  H5::DataSet subject_id;
  H5::DataSet status;
  H5::DataSet message;
  std::vector<bool> written;  // one bit per subject
  std::int64_t written_count = 0;
};

}  // namespace

struct ResultWriter::State {
  enum class Phase { open, finished, failed };

  std::string final_path;
  std::string temporary_path;
  std::int64_t subjects_per_arm = 0;
  ResultWriterOptions options;
  Hdf5ErrorStack error_stack;
  std::optional<H5::H5File> file;  // emplaced: H5File's copy assignment is deprecated
  std::vector<ArmDatasets> arms;
  Phase phase = Phase::open;
  bool temporary_file_may_exist = false;

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
      throw IoError(temporary_path + ": cannot " + what + ": " + describe(exception, error_stack));
    }
  }

  void create_file();
  void write_root_attributes(const RunInfo& info);
  void define_arm(const ArmLayout& layout);
  void define_subjects(const H5::Group& arm_group, ArmDatasets& arm) const;
  void define_metrics(const H5::Group& arm_group, ArmDatasets& arm) const;
  void define_trajectories(const H5::Group& arm_group, ArmDatasets& arm) const;
  void check_block(const SubjectBlock& block) const;
  void write_block(const SubjectBlock& block);
  void check_every_subject_written() const;
  void write_summary(const ArmDatasets& arm, std::size_t trajectory);
  void close_file();
};

ResultWriter::State::~State() {
  if (phase == Phase::finished) return;
  try {
    ErrorStackRecorder recorder(error_stack);
    close_file();
  } catch (...) {  // NOLINT(bugprone-empty-catch): a destructor must not throw; the file is removed anyway
  }
  std::error_code ignored;
  // Never a directory: that would be someone else's, which made the file creation fail.
  if (temporary_file_may_exist && !fs::is_directory(temporary_path, ignored)) fs::remove(temporary_path, ignored);
}

void ResultWriter::State::create_file() {
  const fs::path directory = directory_of(final_path);
  std::error_code error;
  if (!fs::is_directory(directory, error)) {
    throw IoError(final_path + ": cannot write the output: the directory '" + directory.string() +
                  "' does not exist or is not a directory");
  }
  if (fs::is_directory(final_path, error)) {
    throw IoError(final_path + ": cannot write the output: a directory of that name exists");
  }
  if (::access(directory.c_str(), W_OK | X_OK) != 0) {
    throw IoError(final_path + ": cannot write the output: the directory '" + directory.string() +
                  "' is not writable: " + std::strerror(errno));
  }
  temporary_file_may_exist = true;  // a stale file of this name (same pid, crashed run) is overwritten
  hdf5("create the temporary output file", [&] {
    H5::FileAccPropList access;
    access.setFcloseDegree(H5F_CLOSE_STRONG);  // closing the file really closes it before the rename
    file.emplace(temporary_path, H5F_ACC_TRUNC, H5::FileCreatPropList::DEFAULT, access);
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
    set_text_attribute(*file, "solver_method", info.solver_method);
    set_number_attribute(*file, "solver_rtol", H5::PredType::IEEE_F64LE, H5::PredType::NATIVE_DOUBLE, info.solver_rtol);
    set_number_attribute(*file, "solver_atol", H5::PredType::IEEE_F64LE, H5::PredType::NATIVE_DOUBLE, info.solver_atol);
    set_text_attribute(*file, "created_utc", utc_now_iso8601());
  });
}

void ResultWriter::State::define_arm(const ArmLayout& layout) {
  ArmDatasets arm;
  arm.layout = layout;
  arm.written.assign(static_cast<std::size_t>(subjects_per_arm), false);
  hdf5("define arm '" + layout.name + "'", [&] {
    const H5::Group group = file->createGroup("arms/" + layout.name);
    set_text_attribute(group, "description", layout.description);
    write_vector(group, "time_h", layout.time_h, "h", "output time grid, hours from the start of the simulation");
    define_subjects(group, arm);
    define_metrics(group, arm);
    const H5::Group doses = group.createGroup("doses");
    write_vector(doses, "time_h", layout.dose_time_h, "h",
                 "nominal dose times, hours from the start of the simulation");
    write_vector(doses, "duration_h", layout.dose_duration_h, "h", "infusion durations; 0 for a bolus");
    define_trajectories(group, arm);
  });
  arms.push_back(std::move(arm));
}

void ResultWriter::State::define_subjects(const H5::Group& arm_group, ArmDatasets& arm) const {
  const auto subjects = static_cast<hsize_t>(subjects_per_arm);
  const H5::Group group = arm_group.createGroup("subjects");
  arm.subject_id =
      create_dataset(group, "id", H5::PredType::STD_I64LE, {subjects}, "", "subject id (row index within the arm)");
  for (const ColumnSpec& column : arm.layout.subject_columns) {
    arm.subject_columns.push_back(
        {create_dataset(group, column.name, H5::PredType::IEEE_F64LE, column_shape(subjects, column.width), column.unit,
                        column.description, nan_filled_doubles()),
         column.width});
  }
}

void ResultWriter::State::define_metrics(const H5::Group& arm_group, ArmDatasets& arm) const {
  const auto subjects = static_cast<hsize_t>(subjects_per_arm);
  const H5::Group group = arm_group.createGroup("metrics");
  for (const ColumnSpec& column : arm.layout.metrics) {
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
  const hsize_t time_points = arm.layout.time_h.size();
  const H5::DSetCreatPropList creation = trajectory_creation(subjects, time_points);
  const H5::DSetAccPropList access = trajectory_access(subjects, time_points);
  const H5::Group trajectories = arm_group.createGroup("trajectories");
  const H5::Group summary = arm_group.createGroup("summary");
  for (const ColumnSpec& column : arm.layout.trajectories) {
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

void ResultWriter::State::check_block(const SubjectBlock& block) const {
  const auto reject = [&](const std::string& problem) {
    throw IoError(final_path + ": cannot write subjects [" + std::to_string(block.first_subject) + ", " +
                  std::to_string(block.first_subject + block.count) + ") of arm " + std::to_string(block.arm) + ": " +
                  problem);
  };
  if (block.arm >= arms.size()) reject("there are only " + std::to_string(arms.size()) + " arms");
  const ArmDatasets& arm = arms[block.arm];
  if (block.first_subject < 0 || block.count < 0 || block.first_subject > subjects_per_arm - block.count) {
    reject("the arm has subjects [0, " + std::to_string(subjects_per_arm) + ")");
  }
  const auto rows = static_cast<std::size_t>(block.count);
  const auto check_sizes = [&](const char* kind, const std::vector<ColumnSpec>& specs, const auto& buffers,
                               auto width_of) {
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
  const auto time_points = [&](const ColumnSpec&) { return arm.layout.time_h.size(); };
  check_sizes("trajectory", arm.layout.trajectories, block.trajectories, time_points);
  check_sizes("subject column", arm.layout.subject_columns, block.subject_columns, width);
  check_sizes("metric", arm.layout.metrics, block.metrics, width);
  if (block.status.size() != rows || block.message.size() != rows) {
    reject(std::to_string(block.status.size()) + " status values and " + std::to_string(block.message.size()) +
           " messages for " + std::to_string(rows) + " subjects");
  }
  for (std::size_t row = 0; row < rows; ++row) {
    if (block.status[row] != 0 && block.status[row] != 1) {
      reject("status " + std::to_string(block.status[row]) + " of subject " +
             std::to_string(block.first_subject + static_cast<std::int64_t>(row)) + " is neither 0 nor 1");
    }
    if (arm.written[static_cast<std::size_t>(block.first_subject) + row]) {
      reject("subject " + std::to_string(block.first_subject + static_cast<std::int64_t>(row)) + " of arm '" +
             arm.layout.name + "' was already written");
    }
  }
}

void ResultWriter::State::write_block(const SubjectBlock& block) {
  ArmDatasets& arm = arms[block.arm];
  const auto first = static_cast<hsize_t>(block.first_subject);
  const auto rows = static_cast<hsize_t>(block.count);
  hdf5("write subjects of arm '" + arm.layout.name + "'", [&] {
    for (std::size_t i = 0; i < arm.trajectories.size(); ++i) {
      write_rows(arm.trajectories[i], H5::PredType::NATIVE_FLOAT, block.trajectories[i].data(), first, rows,
                 arm.layout.time_h.size(), true);
    }
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
  });
  std::fill_n(arm.written.begin() + block.first_subject, block.count, true);
  arm.written_count += block.count;
}

void ResultWriter::State::check_every_subject_written() const {
  for (const ArmDatasets& arm : arms) {
    if (arm.written_count == subjects_per_arm) continue;
    const auto first_missing = std::find(arm.written.begin(), arm.written.end(), false) - arm.written.begin();
    throw IoError(final_path + ": cannot finish the output: " + std::to_string(subjects_per_arm - arm.written_count) +
                  " of " + std::to_string(subjects_per_arm) + " subjects of arm '" + arm.layout.name +
                  "' were never written (the first is subject " + std::to_string(first_missing) + ")");
  }
}

// Reads the [N x T] matrix back in slabs of whole time columns, so memory stays within
// options.summary_memory_bytes whatever N is.
void ResultWriter::State::write_summary(const ArmDatasets& arm, std::size_t trajectory) {
  const auto subjects = static_cast<hsize_t>(subjects_per_arm);
  const hsize_t time_points = arm.layout.time_h.size();
  std::array<std::vector<double>, kSummaryQuantiles.size()> quantiles;
  for (auto& values : quantiles) values.assign(time_points, kNaN);
  const std::string what =
      "summarize trajectory '" + arm.layout.trajectories[trajectory].name + "' of arm '" + arm.layout.name + "'";
  if (subjects > 0 && time_points > 0) {
    const hsize_t slab_columns = summary_columns_per_slab(subjects, time_points, options.summary_memory_bytes);
    std::vector<float> slab(static_cast<std::size_t>(subjects * slab_columns));
    std::vector<double> column;
    column.reserve(static_cast<std::size_t>(subjects));
    for (hsize_t first = 0; first < time_points; first += slab_columns) {
      const hsize_t columns = std::min(slab_columns, time_points - first);
      hdf5(what, [&] {
        H5::DataSpace file_space = arm.trajectories[trajectory].getSpace();
        const std::array<hsize_t, 2> start{0, first};
        const std::array<hsize_t, 2> count{subjects, columns};
        file_space.selectHyperslab(H5S_SELECT_SET, count.data(), start.data());
        const H5::DataSpace memory_space(2, count.data());
        arm.trajectories[trajectory].read(slab.data(), H5::PredType::NATIVE_FLOAT, memory_space, file_space);
      });
      for (hsize_t t = 0; t < columns; ++t) {
        column.clear();
        for (hsize_t subject = 0; subject < subjects; ++subject) {
          const float value = slab[subject * columns + t];
          if (!std::isnan(value)) column.push_back(value);
        }
        for (std::size_t q = 0; q < kSummaryQuantiles.size(); ++q) {
          quantiles[q][first + t] = type7_quantile(column, kSummaryQuantiles[q].probability);
        }
      }
    }
  }
  if (time_points == 0) return;
  hdf5(what, [&] {
    for (std::size_t q = 0; q < kSummaryQuantiles.size(); ++q) {
      arm.summaries[trajectory][q].write(quantiles[q].data(), H5::PredType::NATIVE_DOUBLE);
    }
  });
}

void ResultWriter::State::close_file() {
  arms.clear();  // the datasets must be released before the file
  if (!file) return;
  hdf5("close the file", [&] {
    file->close();
    file.reset();
  });
}

// ---- ResultWriter --------------------------------------------------------------------------

ResultWriter::ResultWriter(std::string final_path, const RunInfo& info, std::vector<ArmLayout> arms,
                           std::int64_t subjects_per_arm, ResultWriterOptions options)
    : state_(std::make_unique<State>()) {
  State& state = *state_;
  state.final_path = std::move(final_path);
  state.temporary_path = state.final_path + ".tmp-" + std::to_string(::getpid());
  state.subjects_per_arm = subjects_per_arm;
  state.options = options;
  check_layout(state.final_path, info, arms, subjects_per_arm);

  ErrorStackRecorder recorder(state.error_stack);
  state.create_file();
  state.write_root_attributes(info);
  std::vector<std::string> arm_names;
  for (const ArmLayout& arm : arms) arm_names.push_back(arm.name);
  state.hdf5("write the arm names", [&] {
    set_text_array_attribute(*state.file, "arms", arm_names);
    state.file->createGroup("arms");
  });
  for (const ArmLayout& arm : arms) state.define_arm(arm);
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
  state.check_block(block);
  ErrorStackRecorder recorder(state.error_stack);
  state.phase = State::Phase::failed;  // until the write completes
  state.write_block(block);
  state.phase = State::Phase::open;
}

void ResultWriter::finish() {
  State& state = open_state("finish");
  ErrorStackRecorder recorder(state.error_stack);
  state.phase = State::Phase::failed;  // until the rename succeeds; the destructor then cleans up
  state.check_every_subject_written();
  for (const ArmDatasets& arm : state.arms) {
    for (std::size_t trajectory = 0; trajectory < arm.trajectories.size(); ++trajectory) {
      state.write_summary(arm, trajectory);
    }
  }
  state.close_file();
  flush_to_disk(state.temporary_path);
  std::error_code error;
  fs::rename(state.temporary_path, state.final_path, error);
  if (error) {
    throw IoError(state.final_path + ": cannot rename the finished file '" + state.temporary_path +
                  "' into place: " + error.message());
  }
  state.phase = State::Phase::finished;
  flush_directory_entry(directory_of(state.final_path));
}

const std::string& ResultWriter::final_path() const { return state_->final_path; }
const std::string& ResultWriter::temporary_path() const { return state_->temporary_path; }

}  // namespace ketasim
