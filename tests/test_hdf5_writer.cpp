// The HDF5 result writer: what it writes is read back with the HDF5 C++ API and compared with
// values computed independently here (formulas of the subject, row and time indices, and
// quantiles worked out by hand).

#include <H5Cpp.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <regex>
#include <string>
#include <vector>

#include "ketasim/errors.hpp"
#include "ketasim/hdf5_writer.hpp"
#include "ketasim/results.hpp"
#include "ketasim/version.hpp"

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
bool subject_failed(std::size_t arm, std::int64_t subject) { return arm == 0 && subject == 3; }
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

std::vector<hsize_t> shape(const H5::H5File& file, const std::string& path) { return shape_of(file.openDataSet(path)); }

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

  // The default budget reads everything at once; a 1-byte budget reads one time column at a time.
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

  // HDF5 itself fails (the temporary name is taken by a directory): its reason is in the message.
  const fs::path blocked = directory / "blocked.h5";
  fs::create_directory(blocked.string() + ".tmp-" + std::to_string(::getpid()));
  CHECK_THROWS_WITH(construct(blocked), Catch::Contains(blocked.string()) && Catch::Contains("H5Fcreate") &&
                                            Catch::Contains("Is a directory"));
  CHECK(fs::is_directory(blocked.string() + ".tmp-" + std::to_string(::getpid())));  // not removed
  CHECK_FALSE(fs::exists(blocked));

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
