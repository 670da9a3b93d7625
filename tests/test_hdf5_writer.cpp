// The HDF5 result writer: what it writes is read back with the HDF5 C++ API and compared with
// values computed independently here (formulas of the subject, row and time indices, and
// quantiles worked out by hand).

#include <H5Cpp.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <catch2/catch.hpp>
#include <cerrno>
#include <cmath>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <limits>
#include <optional>
#include <regex>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "ketasim/base/errors.hpp"
#include "ketasim/base/version.hpp"
#include "ketasim/output/hdf5_writer.hpp"
#include "ketasim/solve/results.hpp"

namespace fs = std::filesystem;
using ketasim::ArmLayout;
using ketasim::ColumnSpec;
using ketasim::IoError;
using ketasim::ResultWriter;
using ketasim::ResultWriterOptions;
using ketasim::RunInfo;
using ketasim::SubjectBlock;

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

class TemporaryDirectory {
 public:
  TemporaryDirectory() {
    static std::atomic<int> counter{0};
    path_ = fs::temp_directory_path() /
            ("ketasim-hdf5-test-" + std::to_string(::getpid()) + "-" + std::to_string(counter++));
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TemporaryDirectory() {
    std::error_code ignored;
    fs::permissions(path_, fs::perms::owner_all, fs::perm_options::add, ignored);
    fs::remove_all(path_, ignored);
  }
  TemporaryDirectory(const TemporaryDirectory&) = delete;
  TemporaryDirectory& operator=(const TemporaryDirectory&) = delete;
  fs::path operator/(const std::string& name) const { return path_ / name; }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

std::string file_contents(const fs::path& path) {
  std::ifstream stream(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(stream), std::istreambuf_iterator<char>()};
}

// Files the directory holds (the writer's temporary file must not survive it).
std::vector<std::string> directory_listing(const fs::path& directory) {
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(directory)) names.push_back(entry.path().filename().string());
  return names;
}

RunInfo make_info(std::int64_t subjects_per_arm) {
  RunInfo info;
  info.scenario_file = "scenarios/example.yaml";
  info.scenario_yaml = "name: example\narms:\n  - name: low\n    dose: 0.5 µg/kg\n";
  info.scenario_name = "example";
  info.model_name = "clements_2cmt";
  info.seed = 18446744073709551557ULL;  // needs all 64 bits
  info.subjects_per_arm = subjects_per_arm;
  info.solver_method = "rosenbrock4";
  info.solver_rtol = 1e-8;
  info.solver_atol = 1e-10;
  return info;
}

// The values a block carries are formulas of (arm, column, subject, index), all exact in float.
float trajectory_value(std::size_t arm, std::size_t trajectory, std::int64_t subject, std::size_t t) {
  return static_cast<float>(1000 * arm + 100 * trajectory + 10 * static_cast<std::size_t>(subject) + t) + 0.5f;
}
double subject_value(std::size_t arm, std::size_t column, std::int64_t subject, std::size_t j) {
  return static_cast<double>(1000 * arm + 100 * column + 10 * static_cast<std::size_t>(subject) + j) + 0.25;
}
double metric_value(std::size_t arm, std::size_t metric, std::int64_t subject, std::size_t j) {
  return static_cast<double>(1000 * arm + 100 * metric + 10 * static_cast<std::size_t>(subject) + j) + 0.75;
}
bool subject_failed(std::size_t arm, std::int64_t subject) {
  return arm == 0 && subject == 3;
}
std::string failure_message(std::size_t arm, std::int64_t subject) {
  return subject_failed(arm, subject) ? "step size underflow at t = 12 h" : "";
}

SubjectBlock make_block(const std::vector<ArmLayout>& arms, std::size_t arm, std::int64_t first, std::int64_t count) {
  const ArmLayout& layout = arms[arm];
  SubjectBlock block;
  block.arm = arm;
  block.first_subject = first;
  block.count = count;
  for (std::size_t k = 0; k < layout.trajectories.size(); ++k) {
    auto& values = block.trajectories.emplace_back();
    for (std::int64_t s = first; s < first + count; ++s) {
      for (std::size_t t = 0; t < layout.time_h.size(); ++t) values.push_back(trajectory_value(arm, k, s, t));
    }
  }
  for (std::size_t c = 0; c < layout.subject_columns.size(); ++c) {
    auto& values = block.subject_columns.emplace_back();
    for (std::int64_t s = first; s < first + count; ++s) {
      for (std::size_t j = 0; j < layout.subject_columns[c].width; ++j) values.push_back(subject_value(arm, c, s, j));
    }
  }
  for (std::size_t m = 0; m < layout.metrics.size(); ++m) {
    auto& values = block.metrics.emplace_back();
    for (std::int64_t s = first; s < first + count; ++s) {
      for (std::size_t j = 0; j < layout.metrics[m].width; ++j) values.push_back(metric_value(arm, m, s, j));
    }
  }
  for (std::int64_t s = first; s < first + count; ++s) {
    block.status.push_back(subject_failed(arm, s) ? 1 : 0);
    block.message.push_back(failure_message(arm, s));
  }
  return block;
}

// Three arms in an order that is not alphabetical: a full one, one without doses or subject
// columns, and one with an empty time grid (so [N x 0] trajectories).
std::vector<ArmLayout> make_layout() {
  ArmLayout weekly;
  weekly.name = "weekly_0.5mg_per_kg";
  weekly.description = "0.5 mg/kg over 40 min once a week";
  weekly.time_h = {0.0, 0.5, 1.0, 168.0};
  weekly.trajectories = {{"concentration_ng_per_ml", "ng/mL", 1, "plasma concentration"},
                         {"effect", "", 1, "normalized effect"}};
  weekly.subject_columns = {{"weight_kg", "kg", 1, "body weight"}, {"eta", "", 2, "random effects on CL, V1"}};
  weekly.metrics = {{"cmax_ng_per_ml", "ng/mL", 1, "peak concentration"},
                    {"auc_by_week", "ng*h/mL", 3, "AUC of each week"},
                    {"nothing", "", 0, "a metric of width 0"}};
  weekly.dose_time_h = {0.0, 168.0};
  weekly.dose_duration_h = {40.0 / 60.0, 40.0 / 60.0};

  ArmLayout placebo;
  placebo.name = "placebo";
  placebo.description = "no drug";
  placebo.time_h = {0.0, 24.0, 48.0};
  placebo.trajectories = {{"concentration_ng_per_ml", "ng/mL", 1, "plasma concentration"}};
  placebo.metrics = {{"cmax_ng_per_ml", "ng/mL", 1, "peak concentration"}};

  ArmLayout no_grid;
  no_grid.name = "no_grid";
  no_grid.description = "metrics only";
  no_grid.trajectories = {{"concentration_ng_per_ml", "ng/mL", 1, "plasma concentration"}};
  no_grid.metrics = {{"cmax_ng_per_ml", "ng/mL", 1, "peak concentration"}};
  return {weekly, placebo, no_grid};
}

// ---- Reading back ---------------------------------------------------------------------------

std::vector<hsize_t> shape_of(const H5::DataSet& dataset) {
  const H5::DataSpace space = dataset.getSpace();
  std::vector<hsize_t> dims(static_cast<std::size_t>(space.getSimpleExtentNdims()));
  space.getSimpleExtentDims(dims.data());
  return dims;
}

template <class Value>
std::vector<Value> read_all(const H5::H5File& file, const std::string& path, const H5::PredType& memory_type) {
  const H5::DataSet dataset = file.openDataSet(path);
  std::vector<Value> values(static_cast<std::size_t>(dataset.getSpace().getSimpleExtentNpoints()));
  if (!values.empty()) dataset.read(values.data(), memory_type);
  return values;
}

std::vector<double> read_doubles(const H5::H5File& file, const std::string& path) {
  return read_all<double>(file, path, H5::PredType::NATIVE_DOUBLE);
}

// The writer stores UTF-8; HDF5 does not convert between character sets, so read as UTF-8.
H5::StrType variable_string_type() {
  H5::StrType type(H5::PredType::C_S1, H5T_VARIABLE);
  type.setCset(H5T_CSET_UTF8);
  return type;
}

std::vector<std::string> read_strings(const H5::H5File& file, const std::string& path) {
  const H5::DataSet dataset = file.openDataSet(path);
  const H5::DataSpace space = dataset.getSpace();
  const H5::StrType type = variable_string_type();
  std::vector<char*> texts(static_cast<std::size_t>(space.getSimpleExtentNpoints()));
  dataset.read(texts.data(), type);
  std::vector<std::string> strings(texts.begin(), texts.end());
  H5::DataSet::vlenReclaim(texts.data(), type, space);
  return strings;
}

std::string text_attribute(const H5::H5Object& object, const char* name) {
  std::string value;
  object.openAttribute(name).read(variable_string_type(), value);
  return value;
}

std::vector<std::string> text_array_attribute(const H5::H5Object& object, const char* name) {
  const H5::Attribute attribute = object.openAttribute(name);
  const H5::DataSpace space = attribute.getSpace();
  const H5::StrType type = variable_string_type();
  std::vector<char*> texts(static_cast<std::size_t>(space.getSimpleExtentNpoints()));
  attribute.read(type, texts.data());
  std::vector<std::string> strings(texts.begin(), texts.end());
  H5Dvlen_reclaim(type.getId(), space.getId(), H5P_DEFAULT, texts.data());
  return strings;
}

template <class Value>
Value number_attribute(const H5::H5Object& object, const char* name, const H5::PredType& memory_type) {
  Value value{};
  object.openAttribute(name).read(memory_type, &value);
  return value;
}

void check_units(const H5::H5File& file, const std::string& path, const std::string& unit) {
  INFO(path);
  const H5::DataSet dataset = file.openDataSet(path);
  CHECK(text_attribute(dataset, "units") == unit);
  CHECK(dataset.attrExists("description"));
}

std::vector<hsize_t> shape(const H5::H5File& file, const std::string& path) {
  return shape_of(file.openDataSet(path));
}

// Matches hand-computed values; NaN must stay NaN.
void check_values(const std::vector<double>& actual, const std::vector<double>& expected) {
  REQUIRE(actual.size() == expected.size());
  for (std::size_t i = 0; i < expected.size(); ++i) {
    INFO("index " << i << ": " << actual[i] << " vs " << expected[i]);
    if (std::isnan(expected[i])) {
      CHECK(std::isnan(actual[i]));
    } else {
      CHECK(actual[i] == Approx(expected[i]).epsilon(1e-12));
    }
  }
}

// A one-arm layout whose only trajectory matrix is given; used for the summary tests.
struct Matrix {
  std::int64_t subjects;
  std::size_t time_points;
  std::vector<float> values;  // [subject * time_points + t]
};

void write_matrix(const fs::path& path, const Matrix& matrix, ResultWriterOptions options) {
  ArmLayout arm;
  arm.name = "arm";
  arm.time_h.resize(matrix.time_points);
  for (std::size_t t = 0; t < matrix.time_points; ++t) arm.time_h[t] = static_cast<double>(t);
  arm.trajectories = {{"concentration_ng_per_ml", "ng/mL", 1, "plasma concentration"}};
  ResultWriter writer(path.string(), make_info(matrix.subjects), {arm}, matrix.subjects, options);
  // One subject per block, last subject first: the summary must not depend on the order.
  for (std::int64_t subject = matrix.subjects - 1; subject >= 0; --subject) {
    SubjectBlock block;
    block.first_subject = subject;
    block.count = 1;
    const auto row = matrix.values.begin() + subject * static_cast<std::int64_t>(matrix.time_points);
    block.trajectories = {std::vector<float>(row, row + static_cast<std::int64_t>(matrix.time_points))};
    const bool failed = std::all_of(row, row + static_cast<std::int64_t>(matrix.time_points),
                                    [](float value) { return std::isnan(value); });
    block.status = {static_cast<std::int8_t>(failed ? 1 : 0)};
    block.message = {failed ? "failed" : ""};
    writer.write(block);
  }
  writer.finish();
}

}  // namespace

TEST_CASE("ResultWriter round-trips a layout written in blocks out of order", "[hdf5]") {
  const TemporaryDirectory directory;
  const fs::path path = directory / "result.h5";
  const std::vector<ArmLayout> arms = make_layout();
  RunInfo info = make_info(5);
  info.scenario_yaml += std::string(100000, '#') + "\n";  // larger than HDF5's 64 KiB attribute header limit

  {
    ResultWriter writer(path.string(), info, arms, 5);
    CHECK(fs::exists(writer.temporary_path()));
    writer.write(make_block(arms, 0, 3, 2));
    writer.write(make_block(arms, 1, 2, 3));
    writer.write(make_block(arms, 0, 0, 1));
    writer.write(make_block(arms, 2, 0, 5));
    writer.write(make_block(arms, 1, 0, 2));
    writer.write(make_block(arms, 0, 1, 2));
    writer.finish();
    CHECK_FALSE(fs::exists(writer.temporary_path()));
  }
  CHECK(directory_listing(directory.path()) == std::vector<std::string>{"result.h5"});

  const H5::H5File file(path.string(), H5F_ACC_RDONLY);
  CHECK(text_attribute(file, "ketasim_version") == ketasim::kVersion);
  CHECK(number_attribute<int>(file, "layout_version", H5::PredType::NATIVE_INT) == ketasim::kLayoutVersion);
  CHECK(text_attribute(file, "source_revision") == ketasim::kSourceRevision);
  CHECK(text_attribute(file, "scenario_file") == "scenarios/example.yaml");
  CHECK(text_attribute(file, "scenario_yaml") == info.scenario_yaml);
  CHECK(text_attribute(file, "scenario_name") == "example");
  CHECK(text_attribute(file, "model") == "clements_2cmt");
  CHECK(number_attribute<std::uint64_t>(file, "seed", H5::PredType::NATIVE_UINT64) == 18446744073709551557ULL);
  CHECK(number_attribute<std::int64_t>(file, "subjects_per_arm", H5::PredType::NATIVE_INT64) == 5);
  CHECK(text_attribute(file, "solver_method") == "rosenbrock4");
  CHECK(number_attribute<double>(file, "solver_rtol", H5::PredType::NATIVE_DOUBLE) == 1e-8);
  CHECK(number_attribute<double>(file, "solver_atol", H5::PredType::NATIVE_DOUBLE) == 1e-10);
  CHECK(std::regex_match(text_attribute(file, "created_utc"), std::regex(R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)")));
  CHECK(text_array_attribute(file, "arms") == std::vector<std::string>{"weekly_0.5mg_per_kg", "placebo", "no_grid"});

  for (std::size_t a = 0; a < arms.size(); ++a) {
    const ArmLayout& layout = arms[a];
    const std::string root = "/arms/" + layout.name + "/";
    const hsize_t time_points = layout.time_h.size();
    INFO("arm " << layout.name);
    CHECK(text_attribute(file.openGroup(root), "description") == layout.description);
    CHECK(read_doubles(file, root + "time_h") == layout.time_h);
    check_units(file, root + "time_h", "h");

    for (std::size_t k = 0; k < layout.trajectories.size(); ++k) {
      const std::string name = root + "trajectories/" + layout.trajectories[k].name;
      CHECK(shape(file, name) == std::vector<hsize_t>{5, time_points});
      CHECK(file.openDataSet(name).getDataType() == H5::PredType::IEEE_F32LE);
      check_units(file, name, layout.trajectories[k].unit);
      const auto values = read_all<float>(file, name, H5::PredType::NATIVE_FLOAT);
      for (std::int64_t s = 0; s < 5; ++s) {
        for (std::size_t t = 0; t < time_points; ++t) {
          CHECK(values[static_cast<std::size_t>(s) * time_points + t] == trajectory_value(a, k, s, t));
        }
      }
      for (const char* quantile : {"p05", "p50", "p95"}) {
        const std::string summary = root + "summary/" + layout.trajectories[k].name + "/" + quantile;
        CHECK(shape(file, summary) == std::vector<hsize_t>{time_points});
        check_units(file, summary, layout.trajectories[k].unit);
      }
    }

    CHECK(read_all<std::int64_t>(file, root + "subjects/id", H5::PredType::NATIVE_INT64) ==
          std::vector<std::int64_t>{0, 1, 2, 3, 4});
    for (std::size_t c = 0; c < layout.subject_columns.size(); ++c) {
      const ColumnSpec& column = layout.subject_columns[c];
      const std::string name = root + "subjects/" + column.name;
      CHECK(shape(file, name) == (column.width == 1 ? std::vector<hsize_t>{5} : std::vector<hsize_t>{5, column.width}));
      check_units(file, name, column.unit);
      std::vector<double> expected;
      for (std::int64_t s = 0; s < 5; ++s) {
        for (std::size_t j = 0; j < column.width; ++j) expected.push_back(subject_value(a, c, s, j));
      }
      CHECK(read_doubles(file, name) == expected);
    }
    for (std::size_t m = 0; m < layout.metrics.size(); ++m) {
      const ColumnSpec& column = layout.metrics[m];
      const std::string name = root + "metrics/" + column.name;
      CHECK(shape(file, name) == (column.width == 1 ? std::vector<hsize_t>{5} : std::vector<hsize_t>{5, column.width}));
      check_units(file, name, column.unit);
      std::vector<double> expected;
      for (std::int64_t s = 0; s < 5; ++s) {
        for (std::size_t j = 0; j < column.width; ++j) expected.push_back(metric_value(a, m, s, j));
      }
      CHECK(read_doubles(file, name) == expected);
    }
    std::vector<std::int8_t> expected_status;
    std::vector<std::string> expected_messages;
    for (std::int64_t s = 0; s < 5; ++s) {
      expected_status.push_back(subject_failed(a, s) ? 1 : 0);
      expected_messages.push_back(failure_message(a, s));
    }
    CHECK(read_all<std::int8_t>(file, root + "metrics/status", H5::PredType::NATIVE_INT8) == expected_status);
    CHECK(read_strings(file, root + "metrics/message") == expected_messages);
    check_units(file, root + "metrics/status", "");
    CHECK(read_doubles(file, root + "doses/time_h") == layout.dose_time_h);
    CHECK(read_doubles(file, root + "doses/duration_h") == layout.dose_duration_h);
    check_units(file, root + "doses/duration_h", "h");
  }

  // The weekly arm's median concentration is subject 2's (formula above), 1 x 4 values.
  check_values(read_doubles(file, "/arms/weekly_0.5mg_per_kg/summary/concentration_ng_per_ml/p50"),
               {20.5, 21.5, 22.5, 23.5});

  const H5::DSetCreatPropList creation =
      file.openDataSet("/arms/weekly_0.5mg_per_kg/trajectories/effect").getCreatePlist();
  CHECK(creation.getLayout() == H5D_CHUNKED);
  std::array<hsize_t, 2> chunk{};
  creation.getChunk(2, chunk.data());
  CHECK(chunk == std::array<hsize_t, 2>{5, 4});
  CHECK(creation.allFiltersAvail());
  std::vector<H5Z_filter_t> filters;
  for (int i = 0; i < creation.getNfilters(); ++i) {
    unsigned flags = 0;
    std::size_t count = 0;
    std::array<char, 64> name{};
    filters.push_back(creation.getFilter(i, flags, count, nullptr, name.size(), name.data(), flags));
  }
  CHECK(filters == std::vector<H5Z_filter_t>{H5Z_FILTER_SHUFFLE, H5Z_FILTER_DEFLATE});
}

TEST_CASE("ResultWriter summaries are type-7 quantiles over the subjects that are not NaN", "[hdf5]") {
  // Subject 1 failed (its row is NaN); at t = 2 no subject has a value; at t = 3 only one.
  const Matrix matrix{5,
                      4,
                      {
                          5.0f, 10.0f, NAN, NAN,   //
                          NAN,  NAN,   NAN, NAN,   //
                          1.0f, 40.0f, NAN, 7.0f,  //
                          4.0f, 20.0f, NAN, NAN,   //
                          2.0f, 30.0f, NAN, NAN,   //
                      }};
  // t = 0: sorted {1, 2, 4, 5}, n = 4: h = 3p → p05 = 1 + 0.15 * 1, p50 = 2 + 0.5 * 2, p95 = 4 + 0.85 * 1.
  // t = 1: sorted {10, 20, 30, 40}: p05 = 10 + 0.15 * 10, p50 = 25, p95 = 30 + 0.85 * 10.
  const std::vector<double> p05{1.15, 11.5, kNaN, 7.0};
  const std::vector<double> p50{3.0, 25.0, kNaN, 7.0};
  const std::vector<double> p95{4.85, 38.5, kNaN, 7.0};

  // The default budget reads everything at once; a 1-byte budget holds not even one time column,
  // so the quantiles are selected from the compressed chunks (radix selection).
  for (const std::size_t budget : {ResultWriterOptions{}.summary_memory_bytes, std::size_t{1}}) {
    INFO("summary memory budget " << budget);
    const TemporaryDirectory directory;
    const fs::path path = directory / "summary.h5";
    write_matrix(path, matrix, ResultWriterOptions{budget});
    const H5::H5File file(path.string(), H5F_ACC_RDONLY);
    const std::string root = "/arms/arm/summary/concentration_ng_per_ml/";
    check_values(read_doubles(file, root + "p05"), p05);
    check_values(read_doubles(file, root + "p50"), p50);
    check_values(read_doubles(file, root + "p95"), p95);
  }
}

TEST_CASE("ResultWriter summaries span several chunks of time points", "[hdf5]") {
  // 3 subjects x 5000 time points: more than one 4096-point chunk, so finish() reads several slabs.
  // Subject s at time t holds (t mod 7) + s: sorted {a, a + 1, a + 2} with a = t mod 7, h = 2p.
  Matrix matrix{3, 5000, {}};
  for (std::int64_t s = 0; s < 3; ++s) {
    for (std::size_t t = 0; t < matrix.time_points; ++t) {
      matrix.values.push_back(static_cast<float>(t % 7) + static_cast<float>(s));
    }
  }
  std::vector<double> p05, p50, p95;
  for (std::size_t t = 0; t < matrix.time_points; ++t) {
    const auto low = static_cast<double>(t % 7);
    p05.push_back(low + 0.1);
    p50.push_back(low + 1.0);
    p95.push_back(low + 1.9);
  }
  for (const std::size_t budget : {ResultWriterOptions{}.summary_memory_bytes, std::size_t{4096 * 12}}) {
    INFO("summary memory budget " << budget);
    const TemporaryDirectory directory;
    const fs::path path = directory / "long.h5";
    write_matrix(path, matrix, ResultWriterOptions{budget});
    const H5::H5File file(path.string(), H5F_ACC_RDONLY);
    const std::string root = "/arms/arm/summary/concentration_ng_per_ml/";
    check_values(read_doubles(file, root + "p05"), p05);
    check_values(read_doubles(file, root + "p50"), p50);
    check_values(read_doubles(file, root + "p95"), p95);
  }
}

TEST_CASE("ResultWriter destroyed without finish leaves no file and the old result untouched", "[hdf5]") {
  const TemporaryDirectory directory;
  const fs::path path = directory / "result.h5";
  const std::string previous = std::string("an earlier result\n\0binary", 26);
  std::ofstream(path, std::ios::binary) << previous;
  const std::vector<ArmLayout> arms = make_layout();
  {
    ResultWriter writer(path.string(), make_info(5), arms, 5);
    REQUIRE(fs::exists(writer.temporary_path()));
    writer.write(make_block(arms, 0, 0, 5));
    CHECK(file_contents(path) == previous);
  }
  CHECK(directory_listing(directory.path()) == std::vector<std::string>{"result.h5"});
  CHECK(file_contents(path) == previous);
}

TEST_CASE("ResultWriter finish fails when a subject was never written", "[hdf5]") {
  const TemporaryDirectory directory;
  const fs::path path = directory / "result.h5";
  const std::vector<ArmLayout> arms = make_layout();
  {
    ResultWriter writer(path.string(), make_info(5), arms, 5);
    for (std::size_t arm = 1; arm < arms.size(); ++arm) writer.write(make_block(arms, arm, 0, 5));
    writer.write(make_block(arms, 0, 0, 2));
    writer.write(make_block(arms, 0, 3, 2));
    CHECK_THROWS_WITH(writer.finish(),
                      Catch::Contains("1 of 5 subjects of arm 'weekly_0.5mg_per_kg'") && Catch::Contains("subject 2"));
    CHECK_THROWS_AS(writer.finish(), IoError);  // unusable after the failure
  }
  CHECK(directory_listing(directory.path()).empty());
}

TEST_CASE("ResultWriter rejects a block that does not fit and stays usable", "[hdf5]") {
  const TemporaryDirectory directory;
  const fs::path path = directory / "result.h5";
  const std::vector<ArmLayout> arms = make_layout();
  {
    ResultWriter writer(path.string(), make_info(5), arms, 5);
    writer.write(make_block(arms, 0, 1, 2));

    CHECK_THROWS_WITH(writer.write(make_block(arms, 0, 2, 2)),
                      Catch::Contains("subject 2 of arm 'weekly_0.5mg_per_kg' was already written"));
    CHECK_THROWS_WITH(writer.write(make_block(arms, 0, 4, 2)), Catch::Contains("the arm has subjects [0, 5)"));
    SubjectBlock no_such_arm;
    no_such_arm.arm = 3;
    CHECK_THROWS_WITH(writer.write(no_such_arm), Catch::Contains("there are only 3 arms"));
    SubjectBlock short_trajectory = make_block(arms, 0, 0, 1);
    short_trajectory.trajectories[1].pop_back();
    CHECK_THROWS_WITH(writer.write(short_trajectory), Catch::Contains("trajectory 'effect': 3 values, expected 4"));
    SubjectBlock bad_status = make_block(arms, 0, 0, 1);
    bad_status.status[0] = 2;
    CHECK_THROWS_WITH(writer.write(bad_status), Catch::Contains("status 2 of subject 0 is neither 0 nor 1"));
    SubjectBlock missing_message = make_block(arms, 0, 0, 1);
    missing_message.trajectories[0][0] = -1.0f;  // must not reach the file: the block is rejected whole
    missing_message.message.clear();
    CHECK_THROWS_WITH(writer.write(missing_message), Catch::Contains("1 status values and 0 messages"));

    writer.write(make_block(arms, 0, 0, 1));
    writer.write(make_block(arms, 0, 3, 2));
    for (std::size_t arm = 1; arm < arms.size(); ++arm) writer.write(make_block(arms, arm, 0, 5));
    writer.finish();
    CHECK_THROWS_WITH(writer.finish(), Catch::Contains("already finished"));
  }
  const H5::H5File file(path.string(), H5F_ACC_RDONLY);
  const auto values = read_all<float>(file, "/arms/weekly_0.5mg_per_kg/trajectories/concentration_ng_per_ml",
                                      H5::PredType::NATIVE_FLOAT);
  for (std::int64_t s = 0; s < 5; ++s) {
    for (std::size_t t = 0; t < 4; ++t) {
      CHECK(values[static_cast<std::size_t>(s) * 4 + t] == trajectory_value(0, 0, s, t));
    }
  }
}

TEST_CASE("ResultWriter writes a shard: its subjects' rows with their ids, no summaries, its place", "[hdf5]") {
  const TemporaryDirectory directory;
  const fs::path path = directory / "result.shard-2.h5";
  const std::vector<ArmLayout> arms = make_layout();
  RunInfo info = make_info(10);
  info.shard = RunInfo::ShardPart{{2, 3}, {4, 3}};  // shard 2/3 of 10: subjects 4, 5, 6
  {
    ResultWriter writer(path.string(), info, arms, 10);
    CHECK_THROWS_WITH(writer.write(make_block(arms, 0, 3, 2)),
                      Catch::Contains("the file holds subjects [4, 7) of every arm"));
    CHECK_THROWS_WITH(writer.write(make_block(arms, 0, 6, 2)),
                      Catch::Contains("the file holds subjects [4, 7) of every arm"));
    writer.write(make_block(arms, 0, 5, 2));
    CHECK_THROWS_WITH(writer.write(make_block(arms, 0, 6, 1)), Catch::Contains("subject 6 of arm"));
    writer.write(writer.prepare(make_block(arms, 0, 4, 1)));
    for (std::size_t arm = 1; arm + 1 < arms.size(); ++arm) writer.write(make_block(arms, arm, 4, 3));
    CHECK_THROWS_WITH(writer.finish(), Catch::Contains("3 of 3 subjects of arm") && Catch::Contains("subject 4)"));
  }
  CHECK_FALSE(fs::exists(path));
  {
    ResultWriter writer(path.string(), info, arms, 10);
    for (std::size_t arm = 0; arm < arms.size(); ++arm) writer.write(make_block(arms, arm, 4, 3));
    writer.finish();
  }
  const H5::H5File file(path.string(), H5F_ACC_RDONLY);
  CHECK(number_attribute<std::int64_t>(file, "subjects_per_arm", H5::PredType::NATIVE_INT64) == 10);
  CHECK(number_attribute<std::int64_t>(file, "shard_index", H5::PredType::NATIVE_INT64) == 2);
  CHECK(number_attribute<std::int64_t>(file, "shard_count", H5::PredType::NATIVE_INT64) == 3);
  CHECK(number_attribute<std::int64_t>(file, "shard_first_subject", H5::PredType::NATIVE_INT64) == 4);
  CHECK(number_attribute<std::int64_t>(file, "shard_subjects", H5::PredType::NATIVE_INT64) == 3);
  const std::string arm = "/arms/weekly_0.5mg_per_kg";
  CHECK(read_all<std::int64_t>(file, arm + "/subjects/id", H5::PredType::NATIVE_INT64) ==
        std::vector<std::int64_t>{4, 5, 6});
  const auto values = read_all<float>(file, arm + "/trajectories/concentration_ng_per_ml", H5::PredType::NATIVE_FLOAT);
  REQUIRE(values.size() == 3 * 4);
  for (std::int64_t row = 0; row < 3; ++row)
    for (std::size_t t = 0; t < 4; ++t)
      CHECK(values[static_cast<std::size_t>(row) * 4 + t] == trajectory_value(0, 0, 4 + row, t));
  CHECK_FALSE(file.nameExists(arm + "/summary"));
}

TEST_CASE("ResultWriter fails in the constructor when the output directory is missing or not writable", "[hdf5]") {
  const TemporaryDirectory directory;
  const std::vector<ArmLayout> arms = make_layout();
  const auto construct = [&](const fs::path& path) { ResultWriter writer(path.string(), make_info(5), arms, 5); };

  const fs::path missing = directory / "no_such_directory" / "result.h5";
  CHECK_THROWS_AS(construct(missing), IoError);
  CHECK_THROWS_WITH(construct(missing), Catch::Contains(missing.string()) && Catch::Contains("does not exist"));

  const fs::path plain_file = directory / "plain_file";
  std::ofstream(plain_file) << "not a directory\n";
  CHECK_THROWS_WITH(construct(plain_file / "result.h5"), Catch::Contains((plain_file / "result.h5").string()));

  // The rules of check_output_path (test_output_file.cpp) hold for the writer: a directory of the
  // final name is refused and left alone, and no temporary file is made.
  const fs::path taken = directory / "taken.h5";
  fs::create_directory(taken);
  CHECK_THROWS_WITH(construct(taken), Catch::Contains(taken.string()) && Catch::Contains("is a directory"));
  CHECK(fs::is_directory(taken));
  CHECK(directory_listing(directory.path()).size() == 2);  // plain_file and taken.h5: no temporary file

  const fs::path read_only = directory / "read_only";
  fs::create_directory(read_only);
  fs::permissions(read_only, fs::perms::owner_read | fs::perms::owner_exec, fs::perm_options::replace);
  const bool permissions_enforced = !std::ofstream(read_only / "probe").is_open();
  if (permissions_enforced) {
    CHECK_THROWS_WITH(construct(read_only / "result.h5"),
                      Catch::Contains((read_only / "result.h5").string()) && Catch::Contains("not writable"));
    CHECK(directory_listing(read_only).empty());
  } else {
    WARN("directory permissions are not enforced for this user (root?): read-only case skipped");
  }
}

TEST_CASE("ResultWriter writes arms of zero subjects", "[hdf5]") {
  const TemporaryDirectory directory;
  const fs::path path = directory / "empty.h5";
  {
    ResultWriter writer(path.string(), make_info(0), make_layout(), 0);
    writer.finish();
  }
  const H5::H5File file(path.string(), H5F_ACC_RDONLY);
  const std::string root = "/arms/weekly_0.5mg_per_kg/";
  CHECK(shape(file, root + "trajectories/effect") == std::vector<hsize_t>{0, 4});
  CHECK(shape(file, root + "subjects/id") == std::vector<hsize_t>{0});
  CHECK(shape(file, root + "subjects/eta") == std::vector<hsize_t>{0, 2});
  CHECK(shape(file, root + "metrics/message") == std::vector<hsize_t>{0});
  check_values(read_doubles(file, root + "summary/effect/p50"), {kNaN, kNaN, kNaN, kNaN});
  CHECK(shape(file, "/arms/no_grid/trajectories/concentration_ng_per_ml") == std::vector<hsize_t>{0, 0});
  CHECK(shape(file, "/arms/no_grid/summary/concentration_ng_per_ml/p95") == std::vector<hsize_t>{0});
}

// ---- Prepared blocks (compressed on worker threads, written with H5Dwrite_chunk) --------------

namespace {

// One arm long enough for two chunks of time points (the second an edge chunk, 4100 - 4096 wide)
// and, with 150 subjects, three chunk rows (the last an edge chunk of 22 subjects).
std::vector<ArmLayout> make_long_layout() {
  ArmLayout arm;
  arm.name = "long";
  arm.description = "two chunks of time points";
  for (std::size_t t = 0; t < 4100; ++t) arm.time_h.push_back(0.25 * static_cast<double>(t));
  arm.trajectories = {{"concentration_ng_per_ml", "ng/mL", 1, "plasma concentration"},
                      {"effect", "", 1, "normalized effect"}};
  arm.subject_columns = {{"weight_kg", "kg", 1, "body weight"}};
  arm.metrics = {{"cmax_ng_per_ml", "ng/mL", 1, "peak concentration"}};
  return {arm};
}

struct SubjectRange {
  std::int64_t first;
  std::int64_t count;
};

enum class WritePath { plain, prepared };

// Every arm is written in the given ranges, through write(SubjectBlock) or prepare + write.
void write_in_blocks(const fs::path& path, const std::vector<ArmLayout>& arms, std::int64_t subjects,
                     const std::vector<SubjectRange>& ranges, WritePath how) {
  ResultWriter writer(path.string(), make_info(subjects), arms, subjects);
  for (std::size_t arm = 0; arm < arms.size(); ++arm) {
    for (const SubjectRange& range : ranges) {
      SubjectBlock block = make_block(arms, arm, range.first, range.count);
      if (how == WritePath::plain) {
        writer.write(block);
      } else {
        writer.write(writer.prepare(std::move(block)));
      }
    }
  }
  writer.finish();
}

// A chunk as HDF5 stored it: after the filters, and which filters were skipped.
struct StoredChunk {
  std::array<hsize_t, 2> offset{};
  std::uint32_t filter_mask = 0;
  std::vector<unsigned char> bytes;
  bool operator==(const StoredChunk&) const = default;
};

// Every chunk of a chunked 2-D dataset, row of chunks by row of chunks.
std::vector<StoredChunk> stored_chunks(const H5::H5File& file, const std::string& path) {
  const H5::DataSet dataset = file.openDataSet(path);
  const std::vector<hsize_t> dims = shape_of(dataset);
  const H5::DSetCreatPropList creation = dataset.getCreatePlist();
  if (creation.getLayout() != H5D_CHUNKED) return {};
  std::array<hsize_t, 2> chunk{};
  creation.getChunk(2, chunk.data());
  std::vector<StoredChunk> chunks;
  for (hsize_t row = 0; row < dims[0]; row += chunk[0]) {
    for (hsize_t column = 0; column < dims[1]; column += chunk[1]) {
      StoredChunk& stored = chunks.emplace_back();
      stored.offset = {row, column};
      hsize_t size = 0;
      REQUIRE(H5Dget_chunk_storage_size(dataset.getId(), stored.offset.data(), &size) >= 0);
      stored.bytes.resize(static_cast<std::size_t>(size));
      REQUIRE(H5Dread_chunk(dataset.getId(), H5P_DEFAULT, stored.offset.data(), &stored.filter_mask,
                            stored.bytes.data()) >= 0);
    }
  }
  return chunks;
}

std::vector<std::uint64_t> bits_of(const std::vector<double>& values) {
  std::vector<std::uint64_t> bits;
  for (const double value : values) bits.push_back(std::bit_cast<std::uint64_t>(value));
  return bits;
}

std::vector<std::string> filters_of(const H5::DataSet& dataset) {
  const H5::DSetCreatPropList creation = dataset.getCreatePlist();
  std::vector<std::string> filters;
  for (int i = 0; i < creation.getNfilters(); ++i) {
    unsigned flags = 0;
    std::size_t count = 0;
    std::array<char, 64> name{};
    const H5Z_filter_t filter = creation.getFilter(i, flags, count, nullptr, name.size(), name.data(), flags);
    filters.push_back(std::to_string(filter) + " " + name.data());
  }
  return filters;
}

// Both files hold the same values in every dataset of every arm (NaN included, bit for bit), the
// trajectories with the same filters and the very same stored chunks.
void check_same_files(const fs::path& expected_path, const fs::path& actual_path, const std::vector<ArmLayout>& arms) {
  const H5::H5File expected(expected_path.string(), H5F_ACC_RDONLY);
  const H5::H5File actual(actual_path.string(), H5F_ACC_RDONLY);
  for (const ArmLayout& layout : arms) {
    const std::string root = "/arms/" + layout.name + "/";
    std::vector<std::string> numeric{root + "subjects/id", root + "metrics/status"};
    for (const ColumnSpec& column : layout.subject_columns) numeric.push_back(root + "subjects/" + column.name);
    for (const ColumnSpec& column : layout.metrics) numeric.push_back(root + "metrics/" + column.name);
    for (const ColumnSpec& trajectory : layout.trajectories) {
      const std::string name = root + "trajectories/" + trajectory.name;
      INFO(name);
      numeric.push_back(name);
      for (const char* quantile : {"p05", "p50", "p95"})
        numeric.push_back(root + "summary/" + trajectory.name + "/" + quantile);
      CHECK(filters_of(actual.openDataSet(name)) == filters_of(expected.openDataSet(name)));
      const std::vector<StoredChunk> expected_chunks = stored_chunks(expected, name);
      const std::vector<StoredChunk> actual_chunks = stored_chunks(actual, name);
      REQUIRE(actual_chunks.size() == expected_chunks.size());
      for (std::size_t c = 0; c < expected_chunks.size(); ++c) {
        INFO("chunk at subject " << expected_chunks[c].offset[0] << ", time point " << expected_chunks[c].offset[1]);
        CHECK(actual_chunks[c].filter_mask == 0);
        CHECK(actual_chunks[c] == expected_chunks[c]);
      }
    }
    for (const std::string& name : numeric) {
      INFO(name);
      CHECK(shape(actual, name) == shape(expected, name));
      CHECK(bits_of(read_doubles(actual, name)) == bits_of(read_doubles(expected, name)));
    }
    CHECK(read_strings(actual, root + "metrics/message") == read_strings(expected, root + "metrics/message"));
  }
}

}  // namespace

TEST_CASE("ResultWriter prepared and plain writes store the same chunks", "[hdf5]") {
  const std::vector<ArmLayout> arms = make_long_layout();
  // Blocks on chunk boundaries as run_scenario makes them (the last one partial: an edge chunk
  // padded with the fill value), one block for everything, and blocks that split chunk rows.
  const std::vector<std::pair<const char*, std::vector<SubjectRange>>> partitions{
      {"aligned, partial last block", {{0, 64}, {64, 64}, {128, 22}}},
      {"one block", {{0, 150}}},
      {"unaligned", {{100, 50}, {0, 50}, {50, 50}}},
      {"single subjects around a boundary", {{0, 63}, {63, 1}, {64, 1}, {65, 85}}},
  };
  const TemporaryDirectory directory;
  const fs::path plain = directory / "plain.h5";
  write_in_blocks(plain, arms, 150, {{0, 150}}, WritePath::plain);
  {
    const H5::H5File file(plain.string(), H5F_ACC_RDONLY);
    const auto values = read_all<float>(file, "/arms/long/trajectories/effect", H5::PredType::NATIVE_FLOAT);
    REQUIRE(values.size() == 150 * 4100);
    CHECK(values[149 * 4100 + 4099] == trajectory_value(0, 1, 149, 4099));  // the far corner, in both edge chunks
  }
  for (const auto& [name, ranges] : partitions) {
    INFO(name);
    const fs::path prepared = directory / (std::string(name) + ".h5");
    write_in_blocks(prepared, arms, 150, ranges, WritePath::prepared);
    check_same_files(plain, prepared, arms);
  }
}

TEST_CASE("ResultWriter prepare compresses exactly the chunks a block covers whole", "[hdf5]") {
  const std::vector<ArmLayout> arms = make_long_layout();
  const TemporaryDirectory directory;
  ResultWriter writer((directory / "result.h5").string(), make_info(150), arms, 150);
  const auto chunk_origins = [](const ketasim::PreparedBlock& block) {
    std::vector<std::array<std::int64_t, 3>> origins;
    for (const auto& chunk : block.chunks()) {
      origins.push_back({static_cast<std::int64_t>(chunk.trajectory), chunk.first_subject, chunk.first_time_point});
    }
    return origins;
  };
  const auto row_ranges = [](const ketasim::PreparedBlock& block) {
    std::vector<std::array<std::int64_t, 2>> ranges;
    for (const auto& rows : block.uncompressed_rows()) {
      ranges.push_back({rows.first_subject, rows.count});
      for (const auto& values : rows.trajectories) CHECK(values.size() == static_cast<std::size_t>(rows.count) * 4100);
    }
    return ranges;
  };

  // The last block: its chunk row ends at N, so it is whole (stored padded).
  const ketasim::PreparedBlock last = writer.prepare(make_block(arms, 0, 128, 22));
  CHECK(chunk_origins(last) ==
        std::vector<std::array<std::int64_t, 3>>{{0, 128, 0}, {0, 128, 4096}, {1, 128, 0}, {1, 128, 4096}});
  CHECK(row_ranges(last).empty());
  CHECK(last.columns().trajectories.empty());
  CHECK(last.columns().first_subject == 128);
  CHECK(last.columns().count == 22);
  CHECK(last.columns().metrics == make_block(arms, 0, 128, 22).metrics);

  // [40, 140): rows 40..63 and 128..139 share chunks with other blocks.
  const ketasim::PreparedBlock middle = writer.prepare(make_block(arms, 0, 40, 100));
  CHECK(chunk_origins(middle) ==
        std::vector<std::array<std::int64_t, 3>>{{0, 64, 0}, {0, 64, 4096}, {1, 64, 0}, {1, 64, 4096}});
  CHECK(row_ranges(middle) == std::vector<std::array<std::int64_t, 2>>{{40, 24}, {128, 12}});
  CHECK(middle.uncompressed_rows()[1].trajectories[1][4100 + 7] == trajectory_value(0, 1, 129, 7));

  // Inside one chunk row: nothing to compress.
  const ketasim::PreparedBlock inside = writer.prepare(make_block(arms, 0, 70, 10));
  CHECK(inside.chunks().empty());
  CHECK(row_ranges(inside) == std::vector<std::array<std::int64_t, 2>>{{70, 10}});
}

TEST_CASE("ResultWriter prepare gives the same bytes on concurrent threads as on one", "[hdf5]") {
  const std::vector<ArmLayout> arms = make_long_layout();
  const TemporaryDirectory directory;
  ResultWriter writer((directory / "result.h5").string(), make_info(150), arms, 150);
  const auto chunks_of = [](const ketasim::PreparedBlock& block) {
    std::vector<std::vector<unsigned char>> bytes;
    for (const auto& chunk : block.chunks()) bytes.push_back(chunk.bytes);
    return bytes;
  };
  const ketasim::PreparedBlock first_alone = writer.prepare(make_block(arms, 0, 0, 64));
  const ketasim::PreparedBlock second_alone = writer.prepare(make_block(arms, 0, 64, 86));
  REQUIRE(first_alone.chunks().size() == 4);
  REQUIRE(second_alone.chunks().size() == 8);
  REQUIRE(chunks_of(first_alone) != chunks_of(second_alone));  // so that mixing them up would show

  for (int round = 0; round < 4; ++round) {
    INFO("round " << round);
    SubjectBlock first_block = make_block(arms, 0, 0, 64);
    SubjectBlock second_block = make_block(arms, 0, 64, 86);
    std::optional<ketasim::PreparedBlock> first, second;
    std::atomic<int> ready{0};
    const auto prepare = [&](SubjectBlock& block, std::optional<ketasim::PreparedBlock>& result) {
      ++ready;
      while (ready.load() < 2) {
      }  // start together
      result.emplace(writer.prepare(std::move(block)));
    };
    std::thread one(prepare, std::ref(first_block), std::ref(first));
    std::thread two(prepare, std::ref(second_block), std::ref(second));
    one.join();
    two.join();
    CHECK(chunks_of(*first) == chunks_of(first_alone));
    CHECK(chunks_of(*second) == chunks_of(second_alone));
  }
}

TEST_CASE("ResultWriter prepared blocks of the general layout read back like plain ones", "[hdf5]") {
  // Fewer subjects than a chunk row (chunks of 5 rows), a [5 x 0] metric, an arm with an empty
  // time grid (not chunked), blocks out of order and split inside the single chunk row.
  const std::vector<ArmLayout> arms = make_layout();
  const TemporaryDirectory directory;
  write_in_blocks(directory / "plain.h5", arms, 5, {{3, 2}, {0, 3}}, WritePath::plain);
  write_in_blocks(directory / "prepared.h5", arms, 5, {{3, 2}, {0, 3}}, WritePath::prepared);
  write_in_blocks(directory / "whole.h5", arms, 5, {{0, 5}}, WritePath::prepared);
  check_same_files(directory / "plain.h5", directory / "prepared.h5", arms);
  check_same_files(directory / "plain.h5", directory / "whole.h5", arms);
}

TEST_CASE("ResultWriter rejects prepared blocks that do not fit", "[hdf5]") {
  const std::vector<ArmLayout> arms = make_layout();
  const TemporaryDirectory directory;
  ResultWriter writer((directory / "result.h5").string(), make_info(5), arms, 5);
  ResultWriter other((directory / "other.h5").string(), make_info(5), arms, 5);

  SubjectBlock short_trajectory = make_block(arms, 0, 0, 1);
  short_trajectory.trajectories[1].pop_back();
  CHECK_THROWS_WITH(writer.prepare(short_trajectory), Catch::Contains("trajectory 'effect': 3 values, expected 4"));
  CHECK_THROWS_WITH(writer.prepare(make_block(arms, 0, 4, 2)), Catch::Contains("the arm has subjects [0, 5)"));

  CHECK_THROWS_WITH(writer.write(other.prepare(make_block(arms, 0, 0, 5))),
                    Catch::Contains("not prepared by this writer"));
  ketasim::PreparedBlock moved = writer.prepare(make_block(arms, 0, 0, 5));
  const ketasim::PreparedBlock taken = std::move(moved);
  CHECK_THROWS_WITH(writer.write(std::move(moved)), Catch::Contains("moved from"));  // NOLINT(bugprone-use-after-move)

  writer.write(writer.prepare(make_block(arms, 0, 2, 2)));
  CHECK_THROWS_WITH(writer.write(writer.prepare(make_block(arms, 0, 0, 3))),
                    Catch::Contains("subject 2 of arm 'weekly_0.5mg_per_kg' was already written"));
  // Still usable: the rest of the file is written and finished.
  writer.write(writer.prepare(make_block(arms, 0, 0, 2)));
  writer.write(writer.prepare(make_block(arms, 0, 4, 1)));
  for (std::size_t arm = 1; arm < arms.size(); ++arm) writer.write(writer.prepare(make_block(arms, arm, 0, 5)));
  writer.finish();
}

TEST_CASE("ResultWriter summaries equal sorted type-7 quantiles for any thread count, budget and write path",
          "[hdf5]") {
  // 70 subjects x 70 time points; at time t only subjects 0..t have a value (the others are NaN),
  // so every n from 1 to 70 occurs. Values are small multiples of 1/8 with many ties.
  const std::int64_t subjects = 70;
  const std::size_t time_points = 70;
  Matrix matrix{subjects, time_points, {}};
  std::uint32_t state = 12345;
  for (std::int64_t s = 0; s < subjects; ++s) {
    for (std::size_t t = 0; t < time_points; ++t) {
      state = state * 1664525U + 1013904223U;  // LCG: deterministic, platform-independent
      matrix.values.push_back(static_cast<std::size_t>(s) <= t ? static_cast<float>(state >> 27) / 8.0f : NAN);
    }
  }
  // The reference sorts everything; the writer selects. Same arithmetic: (1 - f) x[lo] + f x[lo + 1].
  std::array<std::vector<double>, 3> expected;
  for (std::size_t t = 0; t < time_points; ++t) {
    std::vector<double> sorted;
    for (std::int64_t s = 0; s < subjects; ++s) {
      const float value = matrix.values[static_cast<std::size_t>(s) * time_points + t];
      if (!std::isnan(value)) sorted.push_back(value);
    }
    std::sort(sorted.begin(), sorted.end());
    const std::array<double, 3> probabilities{0.05, 0.50, 0.95};
    for (std::size_t q = 0; q < 3; ++q) {
      const double position = static_cast<double>(sorted.size() - 1) * probabilities[q];
      const auto low = static_cast<std::size_t>(std::floor(position));
      const double fraction = position - static_cast<double>(low);
      const bool exact = fraction == 0.0 || low + 1 == sorted.size() || sorted[low] == sorted[low + 1];
      expected[q].push_back(exact ? sorted[fraction == 0.0 || low + 1 == sorted.size() ? low : low + 1]
                                  : (1.0 - fraction) * sorted[low] + fraction * sorted[low + 1]);
    }
  }

  const auto check_file = [&](const fs::path& path) {
    const H5::H5File file(path.string(), H5F_ACC_RDONLY);
    const std::string root = "/arms/arm/summary/concentration_ng_per_ml/";
    CHECK(bits_of(read_doubles(file, root + "p05")) == bits_of(expected[0]));
    CHECK(bits_of(read_doubles(file, root + "p50")) == bits_of(expected[1]));
    CHECK(bits_of(read_doubles(file, root + "p95")) == bits_of(expected[2]));
  };
  const TemporaryDirectory directory;
  for (const unsigned threads : {1U, 3U}) {
    // The default budget: one slab; one time column per slab (the decoding scratch of three
    // threads, 4 chunks of 64 x 70 floats each, plus 70 floats); 1 byte: radix selection.
    for (const std::size_t budget :
         {ResultWriterOptions{}.summary_memory_bytes, std::size_t{3 * 4 * 64 * 70 * 4 + 70 * 4}, std::size_t{1}}) {
      INFO(threads << " summary threads, budget " << budget);
      const ResultWriterOptions options{budget, threads};
      // One subject per block: every row goes through HDF5's pipeline and chunk cache.
      const fs::path plain = directory / "plain.h5";
      write_matrix(plain, matrix, options);
      check_file(plain);
      // One prepared block: the chunks are written compressed with H5Dwrite_chunk.
      ArmLayout arm;
      arm.name = "arm";
      for (std::size_t t = 0; t < time_points; ++t) arm.time_h.push_back(static_cast<double>(t));
      arm.trajectories = {{"concentration_ng_per_ml", "ng/mL", 1, "plasma concentration"}};
      const fs::path prepared = directory / "prepared.h5";
      {
        ResultWriter writer(prepared.string(), make_info(subjects), {arm}, subjects, options);
        SubjectBlock block;
        block.count = subjects;
        block.trajectories = {matrix.values};
        block.status.assign(static_cast<std::size_t>(subjects), 0);
        block.message.assign(static_cast<std::size_t>(subjects), "");
        ketasim::PreparedBlock ready = writer.prepare(std::move(block));
        REQUIRE(ready.chunks().size() == 2);  // rows 0-63 and the edge chunk of rows 64-69
        writer.write(std::move(ready));
        writer.finish();
      }
      check_file(prepared);
    }
  }
}

namespace {

// While alive, what the process writes to its standard error (fd 2: HDF5's C library and the
// std::cerr of its C++ wrappers) goes to `file` instead.
class CapturedStandardError {
 public:
  explicit CapturedStandardError(const fs::path& file) : file_(file) {
    std::cerr.flush();
    std::fflush(stderr);
    saved_ = ::dup(STDERR_FILENO);
    const int target = ::open(file.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    REQUIRE(saved_ >= 0);
    REQUIRE(target >= 0);
    ::dup2(target, STDERR_FILENO);
    ::close(target);
  }
  ~CapturedStandardError() { restore(); }
  CapturedStandardError(const CapturedStandardError&) = delete;
  CapturedStandardError& operator=(const CapturedStandardError&) = delete;

  std::string text() {
    restore();
    return file_contents(file_);
  }

 private:
  void restore() {
    if (saved_ < 0) return;
    std::cerr.flush();
    std::fflush(stderr);
    ::dup2(saved_, STDERR_FILENO);
    ::close(saved_);
    saved_ = -1;
  }
  fs::path file_;
  int saved_ = -1;
};

// While alive, no file of the process can grow beyond `bytes` (RLIMIT_FSIZE): a write past it
// fails with EFBIG, as one fails with ENOSPC on a full disk, and the limit decides at which point
// of the writer's work. SIGXFSZ, which would end the process, is ignored meanwhile.
class FileSizeLimit {
 public:
  explicit FileSizeLimit(rlim_t bytes) {
    REQUIRE(::getrlimit(RLIMIT_FSIZE, &saved_) == 0);
    previous_handler_ = std::signal(SIGXFSZ, SIG_IGN);
    rlimit limit = saved_;
    limit.rlim_cur = bytes;
    REQUIRE(::setrlimit(RLIMIT_FSIZE, &limit) == 0);
  }
  ~FileSizeLimit() {
    ::setrlimit(RLIMIT_FSIZE, &saved_);
    std::signal(SIGXFSZ, previous_handler_);
  }
  FileSizeLimit(const FileSizeLimit&) = delete;
  FileSizeLimit& operator=(const FileSizeLimit&) = delete;

 private:
  rlimit saved_{};
  void (*previous_handler_)(int) = SIG_DFL;
};

enum class WriterPhase { construct, write, finish, done };

struct WriterOutcome {
  WriterPhase phase = WriterPhase::done;  // the phase that threw (done if none did)
  std::string message;                    // what it threw
};

// 300 subjects x 3000 time points of values that compress poorly, written as the run writes
// them: prepared blocks of 64 subjects, the last rows through HDF5's own pipeline.
WriterOutcome write_poorly_compressible(const fs::path& path) {
  const std::int64_t subjects = 300;
  ArmLayout arm;
  arm.name = "arm";
  for (std::size_t t = 0; t < 3000; ++t) arm.time_h.push_back(static_cast<double>(t));
  arm.trajectories = {{"concentration_ng_per_ml", "ng/mL", 1, "plasma concentration"}};
  arm.metrics = {{"cmax_ng_per_ml", "ng/mL", 1, "peak concentration"}};
  WriterPhase phase = WriterPhase::construct;
  try {
    ResultWriter writer(path.string(), make_info(subjects), {arm}, subjects);
    phase = WriterPhase::write;
    std::uint32_t state = 2463534242U;
    for (std::int64_t first = 0; first < subjects; first += 64) {
      SubjectBlock block;
      block.first_subject = first;
      block.count = std::min<std::int64_t>(64, subjects - first);
      auto& values = block.trajectories.emplace_back();
      for (std::size_t i = 0; i < static_cast<std::size_t>(block.count) * arm.time_h.size(); ++i) {
        state ^= state << 13U;  // xorshift32
        state ^= state >> 17U;
        state ^= state << 5U;
        values.push_back(static_cast<float>(state) * 1e-6f);
      }
      block.metrics = {std::vector<double>(static_cast<std::size_t>(block.count), 1.0)};
      block.status.assign(static_cast<std::size_t>(block.count), 0);
      block.message.assign(static_cast<std::size_t>(block.count), "");
      if (block.count == 64) {
        writer.write(writer.prepare(std::move(block)));
      } else {
        writer.write(block);
      }
    }
    phase = WriterPhase::finish;
    writer.finish();
    return {};
  } catch (const IoError& error) {
    return {phase, error.what()};
  }
}

}  // namespace

TEST_CASE("ResultWriter on a file that cannot grow fails cleanly in every phase", "[hdf5][fault]") {
  // Regression (issue 9): on a full disk the writer printed HDF5's failures to stderr and crashed
  // (closing the file failed, and was tried again). Now: an IoError with the system's reason, the
  // temporary file removed, nothing printed, no HDF5 object left open, and HDF5 still usable.
  const TemporaryDirectory directory;
  const TemporaryDirectory captures;
  const fs::path path = directory / "result.h5";
  REQUIRE(write_poorly_compressible(path).phase == WriterPhase::done);
  const auto complete_size = static_cast<rlim_t>(fs::file_size(path));
  fs::remove(path);

  std::set<WriterPhase> failed_in;
  for (int step = 0; step < 40; ++step) {
    const rlim_t limit = complete_size * static_cast<rlim_t>(step) / 40;
    INFO("file size limit " << limit << " of " << complete_size << " bytes");
    WriterOutcome outcome;
    std::string printed;
    {
      CapturedStandardError captured(captures / "stderr.txt");
      {
        const FileSizeLimit file_size_limit(limit);
        outcome = write_poorly_compressible(path);
      }
      printed = captured.text();
    }
    CHECK(outcome.phase != WriterPhase::done);
    CHECK_THAT(outcome.message, Catch::Contains(std::strerror(EFBIG)));
    failed_in.insert(outcome.phase);
    CHECK(printed.empty());
    CHECK(directory_listing(directory.path()).empty());
    // (Datatypes are left out: the C++ API's predefined types count as open.)
    CHECK(H5Fget_obj_count(H5F_OBJ_ALL, H5F_OBJ_FILE | H5F_OBJ_DATASET | H5F_OBJ_GROUP | H5F_OBJ_ATTR) == 0);
  }
  // The limits reach every phase: creating the datasets, writing blocks, the summaries and close.
  CHECK(failed_in == std::set<WriterPhase>{WriterPhase::construct, WriterPhase::write, WriterPhase::finish});

  // HDF5 is still in a usable state: the same output, without a limit, is written whole.
  CHECK(write_poorly_compressible(path).phase == WriterPhase::done);
  CHECK(fs::file_size(path) == complete_size);
}

TEST_CASE("ResultWriter finish stops its summary pass when cancelled and leaves no file", "[hdf5][fault]") {
  const TemporaryDirectory directory;
  const fs::path path = directory / "result.h5";
  const std::vector<ArmLayout> arms = make_layout();
  std::atomic<bool> cancel{false};
  ResultWriterOptions options;
  options.cancel = &cancel;
  {
    ResultWriter writer(path.string(), make_info(5), arms, 5, options);
    for (std::size_t arm = 0; arm < arms.size(); ++arm) writer.write(make_block(arms, arm, 0, 5));
    cancel = true;
    CHECK_THROWS_AS(writer.finish(), ketasim::InterruptedError);
    CHECK_THROWS_WITH(writer.finish(), Catch::Contains("unusable after an earlier failure"));
  }
  CHECK(directory_listing(directory.path()).empty());
}
