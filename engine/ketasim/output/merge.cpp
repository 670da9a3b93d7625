#include "ketasim/output/merge.hpp"

#include <H5Cpp.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <map>
#include <optional>
#include <utility>

#include "ketasim/base/errors.hpp"
#include "ketasim/base/threads.hpp"
#include "ketasim/base/version.hpp"
#include "ketasim/model/blocks.hpp"
#include "ketasim/output/chunk_codec.hpp"
#include "ketasim/output/hdf5_util.hpp"
#include "ketasim/output/output_file.hpp"
#include "ketasim/output/result_reader.hpp"
#include "ketasim/output/run_identity.hpp"

namespace ketasim {
namespace {

// What one shard file says about itself: the run it belongs to, its place in the split, where it
// was computed, and the layout of every arm (as the writer was given it).
struct ShardFile {
  std::string path;
  RunInfo info;  // scenario, seed, cohort and solver: those of the whole run
  std::string ketasim_version;
  std::string source_revision;
  std::vector<std::string> arm_names;
  Shard shard;
  SubjectRange subjects;
  RunInfo::MergedShard provenance;
  std::vector<ArmLayout> layouts;
};

// ---- Reading a shard's attributes and layout -------------------------------------------------

// A scalar number attribute read exactly (a seed does not fit a double).
template <class Number>
Number exact_number(const FileReader& reader, const H5::H5Object& object, const std::string& name,
                    const H5::PredType& memory_type) {
  const std::string where = "/ attribute " + name;
  if (!object.attrExists(name)) reader.fail(where, "missing");
  const H5::Attribute attribute = object.openAttribute(name);
  const H5T_class_t type_class = attribute.getTypeClass();
  const bool integer = memory_type.getClass() == H5T_INTEGER;
  if (type_class != H5T_INTEGER && (integer || type_class != H5T_FLOAT))
    reader.fail(where, integer ? "expected an integer" : "expected a number");
  if (attribute.getSpace().getSimpleExtentNpoints() != 1) reader.fail(where, "expected one value");
  Number value{};
  attribute.read(memory_type, &value);
  return value;
}

std::int64_t integer_attribute(const FileReader& reader, const H5::H5Object& object, const std::string& name) {
  return exact_number<std::int64_t>(reader, object, name, H5::PredType::NATIVE_INT64);
}

std::string text_attribute(const FileReader& reader, const H5::H5Object& object, const std::string& object_path,
                           const std::string& name) {
  const std::vector<std::string> texts = reader.read_strings(object, object_path, name);
  if (texts.size() != 1)
    reader.fail(object_path + " attribute " + name, "expected one text, found " + std::to_string(texts.size()));
  return texts.front();
}

std::vector<std::string> member_names(const H5::Group& group) {
  std::vector<std::string> names;
  for (hsize_t i = 0; i < group.getNumObjs(); ++i) names.push_back(group.getObjnameByIdx(i));
  return names;
}

// A per-subject dataset of `rows` rows: [rows] (width 1) or [rows x width] (any other width), of
// floating-point values; a trajectory is [rows x time_points].
ColumnSpec read_column(const FileReader& reader, const H5::Group& group, const std::string& group_path,
                       const std::string& name, std::int64_t rows, std::optional<std::size_t> time_points) {
  const std::string object = group_path + "/" + name;
  if (group.childObjType(name) != H5O_TYPE_DATASET) reader.fail(object, "expected a dataset");
  const H5::DataSet dataset = group.openDataSet(name);
  if (dataset.getTypeClass() != H5T_FLOAT) reader.fail(object, "expected floating-point values");
  const H5::DataSpace space = dataset.getSpace();
  const int rank = space.getSimpleExtentNdims();
  hsize_t dims[2] = {0, 0};
  if (rank == 1 || rank == 2) space.getSimpleExtentDims(dims);
  const bool shape_ok = time_points ? rank == 2 && dims[1] == *time_points : rank == 1 || (rank == 2 && dims[1] != 1);
  if (!shape_ok || dims[0] != static_cast<hsize_t>(rows)) {
    reader.fail(object, "expected " + std::to_string(rows) + " rows (the shard's subjects)" +
                            (time_points ? " x " + std::to_string(*time_points) + " time points" : std::string()) +
                            ", found rank " + std::to_string(rank) + " with " + std::to_string(dims[0]) + " rows");
  }
  ColumnSpec column;
  column.name = name;
  column.unit = text_attribute(reader, dataset, object, "units");
  column.description = text_attribute(reader, dataset, object, "description");
  column.width = rank == 1 ? 1 : static_cast<std::size_t>(dims[1]);
  return column;
}

// A dataset the writer makes in every arm, of `rows` rows.
void require_rows(const FileReader& reader, const H5::Group& group, const std::string& group_path,
                  const std::string& name, std::int64_t rows) {
  const std::string object = group_path + "/" + name;
  if (!FileReader::has_link(group, name)) reader.fail(object, "dataset missing");
  hsize_t dims[1] = {0};
  const H5::DataSpace space = group.openDataSet(name).getSpace();
  if (space.getSimpleExtentNdims() != 1) reader.fail(object, "expected one dimension");
  space.getSimpleExtentDims(dims);
  if (dims[0] != static_cast<hsize_t>(rows))
    reader.fail(object, "expected " + std::to_string(rows) + " rows, found " + std::to_string(dims[0]));
}

void read_arm_attributes(const FileReader& reader, const H5::Group& group, const std::string& path, ArmLayout& layout) {
  layout.description = text_attribute(reader, group, path, "description");
  layout.model = text_attribute(reader, group, path, "model");
  const std::vector<std::string> names = reader.read_strings(group, path, "model_parameters");
  const std::vector<double> values = reader.read_attribute_numbers(group, path, "model_parameter_values", false);
  const std::vector<std::string> units = reader.read_strings(group, path, "model_parameter_units");
  if (values.size() != names.size() || units.size() != names.size())
    reader.fail(path + " attribute model_parameters", "model_parameter_values and _units are of other lengths");
  for (std::size_t i = 0; i < names.size(); ++i) layout.model_parameters.push_back({names[i], values[i], units[i]});
  const std::vector<double> price = reader.read_attribute_numbers(group, path, "price_per_session_usd", false);
  if (price.size() != 2) reader.fail(path + " attribute price_per_session_usd", "expected 2 numbers");
  layout.price_per_session_usd[0] = price[0];
  layout.price_per_session_usd[1] = price[1];
  layout.observed_outputs = reader.read_strings(group, path, "observed_outputs");
}

// An arm's layout as the writer was given it, from what the shard stores: the datasets of the
// arm's grids and doses, and the names, units, descriptions and widths of its per-subject datasets.
ArmLayout read_layout(const FileReader& reader, const H5::Group& arms, const std::string& name, std::int64_t rows) {
  const std::string path = "/arms/" + name;
  const H5::Group group = reader.open_group(arms, "/arms", name);
  ArmLayout layout;
  layout.name = name;
  read_arm_attributes(reader, group, path, layout);
  layout.time_h = reader.read_vector(group, path, "time_h", std::nullopt);
  const H5::Group doses = reader.open_group(group, path, "doses");
  layout.dose_time_h = reader.read_vector(doses, path + "/doses", "time_h", std::nullopt);
  layout.dose_duration_h = reader.read_vector(doses, path + "/doses", "duration_h", layout.dose_time_h.size());
  layout.assessment_time_h = reader.read_vector(group, path, "assessments_h", std::nullopt);
  layout.observation_time_h = reader.read_vector(group, path, "observation_times_h", std::nullopt);
  if (FileReader::has_link(group, "relapse_visits_h"))
    layout.relapse_visit_time_h = reader.read_vector(group, path, "relapse_visits_h", std::nullopt);

  const H5::Group subjects = reader.open_group(group, path, "subjects");
  require_rows(reader, subjects, path + "/subjects", "id", rows);
  for (const std::string& column : member_names(subjects))
    if (column != "id")
      layout.subject_columns.push_back(read_column(reader, subjects, path + "/subjects", column, rows, {}));
  const H5::Group metrics = reader.open_group(group, path, "metrics");
  require_rows(reader, metrics, path + "/metrics", "status", rows);
  require_rows(reader, metrics, path + "/metrics", "message", rows);
  for (const std::string& column : member_names(metrics)) {
    if (column == "status" || column == "message") continue;
    MetricColumn metric;
    static_cast<ColumnSpec&>(metric) = read_column(reader, metrics, path + "/metrics", column, rows, {});
    layout.metrics.push_back(metric);
  }
  const H5::Group trajectories = reader.open_group(group, path, "trajectories");
  for (const std::string& trajectory : member_names(trajectories)) {
    layout.trajectories.push_back(
        read_column(reader, trajectories, path + "/trajectories", trajectory, rows, layout.time_h.size()));
  }
  return layout;
}

void read_run_info(const FileReader& reader, const H5::H5File& file, ShardFile& shard) {
  RunInfo& info = shard.info;
  info.scenario_file = text_attribute(reader, file, "/", "scenario_file");
  info.scenario_yaml = text_attribute(reader, file, "/", "scenario_yaml");
  info.scenario_name = text_attribute(reader, file, "/", "scenario_name");
  info.model_name = text_attribute(reader, file, "/", "model");
  info.seed = exact_number<std::uint64_t>(reader, file, "seed", H5::PredType::NATIVE_UINT64);
  info.subjects_per_arm = integer_attribute(reader, file, "subjects_per_arm");
  info.replicates = integer_attribute(reader, file, "replicates");
  info.subjects_per_replicate = integer_attribute(reader, file, "subjects_per_replicate");
  info.solver_method = text_attribute(reader, file, "/", "solver_method");
  info.solver_rtol = exact_number<double>(reader, file, "solver_rtol", H5::PredType::NATIVE_DOUBLE);
  info.solver_atol = exact_number<double>(reader, file, "solver_atol", H5::PredType::NATIVE_DOUBLE);
  shard.ketasim_version = text_attribute(reader, file, "/", "ketasim_version");
  shard.source_revision = text_attribute(reader, file, "/", "source_revision");
  shard.provenance.path = shard.path;
  shard.provenance.host = text_attribute(reader, file, "/", "host");
  shard.provenance.created_utc = text_attribute(reader, file, "/", "created_utc");
  shard.provenance.threads = integer_attribute(reader, file, "threads");
}

// The shard's place in its split, checked against its own cohort size.
void read_shard_place(const FileReader& reader, const H5::H5File& file, ShardFile& shard) {
  shard.shard = {integer_attribute(reader, file, "shard_index"), integer_attribute(reader, file, "shard_count")};
  shard.subjects = {integer_attribute(reader, file, "shard_first_subject"),
                    integer_attribute(reader, file, "shard_subjects")};
  if (shard.shard.index < 1 || shard.shard.index > shard.shard.count)
    reader.fail("/ attribute shard_index", "expected 1 to shard_count (" + std::to_string(shard.shard.count) +
                                               "), found " + std::to_string(shard.shard.index));
  const std::int64_t total = shard.info.subjects_per_arm;
  if (shard.subjects.first < 0 || shard.subjects.count < 0 || shard.subjects.first > total - shard.subjects.count)
    reader.fail("/ attributes shard_first_subject and shard_subjects",
                "subjects [" + std::to_string(shard.subjects.first) + ", " +
                    std::to_string(shard.subjects.first + shard.subjects.count) + ") are not within the " +
                    std::to_string(total) + " subjects per arm");
}

ShardFile read_shard(const std::string& path) {
  const QuietHdf5Errors quiet;
  const FileReader reader(path);
  try {
    const H5::H5File file = open_hdf5_for_reading(path, "shard");
    ShardFile shard;
    shard.path = path;
    if (!file.attrExists("shard_index")) {
      const std::string what = file.attrExists("merged_shard_files") ? "a merged result file"
                               : file.attrExists("layout_version")   ? "a result file of a whole run"
                                                                     : "not a ketasim file";
      throw IoError(path + ": not a shard file (" + what +
                    ", without the root attribute shard_index); `ketasim merge` takes the files written by "
                    "`ketasim run --shard INDEX/COUNT`");
    }
    const std::int64_t layout_version = integer_attribute(reader, file, "layout_version");
    if (layout_version != kLayoutVersion)
      reader.fail("/ attribute layout_version", "this ketasim merges shards of layout version " +
                                                    std::to_string(kLayoutVersion) + ", the file has " +
                                                    std::to_string(layout_version));
    read_run_info(reader, file, shard);
    read_shard_place(reader, file, shard);
    shard.arm_names = reader.read_strings(file, "/", "arms");
    if (shard.arm_names.empty()) reader.fail("/ attribute arms", "expected at least one arm name");
    const H5::Group arms = reader.open_group(file, "", "arms");
    for (const std::string& name : shard.arm_names)
      shard.layouts.push_back(read_layout(reader, arms, name, shard.subjects.count));
    return shard;
  } catch (const H5::Exception& exception) {
    throw IoError("cannot read shard '" + path + "': " + exception.getDetailMsg());
  }
}

// ---- Checking that the shards make one whole run ----------------------------------------------

// The merged file records the merging build: shards of another build are refused, not relabelled.
void check_build(const ShardFile& shard) {
  if (shard.ketasim_version == kVersion && shard.source_revision == kSourceRevision) return;
  throw IoError(shard.path + ": written by " + build_of(shard.ketasim_version, shard.source_revision) +
                ", but this is " + build_of(kVersion, kSourceRevision) +
                ": merge with the build that ran the shards (the merged file records the build that wrote it)");
}

// `other` comes from the same run as `first`: scenario, seed, cohort, solver and layout.
void check_same_run(const ShardFile& first, const ShardFile& other) {
  const auto refuse = [&](const std::string& what, const std::string& theirs, const std::string& ours) {
    throw IoError(other.path + ": " + what + " is " + theirs + ", but " + first.path + "'s is " + ours +
                  ": shards of different runs cannot be merged");
  };
  const RunInfo& a = first.info;
  const RunInfo& b = other.info;
  if (a.scenario_yaml != b.scenario_yaml) {
    throw IoError(other.path + ": its scenario (attribute scenario_yaml) differs from that of " + first.path +
                  ": shards of different scenarios cannot be merged");
  }
  if (a.scenario_name != b.scenario_name) refuse("the scenario name", b.scenario_name, a.scenario_name);
  if (a.model_name != b.model_name) refuse("the model", b.model_name, a.model_name);
  if (a.seed != b.seed) refuse("the seed", std::to_string(b.seed), std::to_string(a.seed));
  if (a.subjects_per_arm != b.subjects_per_arm || a.replicates != b.replicates ||
      a.subjects_per_replicate != b.subjects_per_replicate) {
    const auto cohort = [](const RunInfo& info) {
      return std::to_string(info.subjects_per_arm) + " subjects per arm (" + std::to_string(info.replicates) +
             (info.replicates == 1 ? " replicate of " : " replicates of ") +
             std::to_string(info.subjects_per_replicate) + ")";
    };
    refuse("the cohort", cohort(b), cohort(a));
  }
  if (a.solver_method != b.solver_method ||
      !same_numbers({a.solver_rtol, a.solver_atol}, {b.solver_rtol, b.solver_atol}))
    refuse("the solver (solver_method, solver_rtol, solver_atol)", b.solver_method, a.solver_method);
  if (first.arm_names != other.arm_names) refuse("the list of arms", "another", "this");
  for (std::size_t arm = 0; arm < first.layouts.size(); ++arm) {
    const std::string difference = layout_difference(first.layouts[arm], other.layouts[arm]);
    if (!difference.empty()) {
      throw IoError(other.path + ": arm '" + first.arm_names[arm] + "' differs from that of " + first.path + " in " +
                    difference + ": the runs read different inputs (a cohort or dosing table, a model card)");
    }
  }
}

std::string shard_name(const ShardFile& shard) {
  return shard.path + " (shard " + std::to_string(shard.shard.index) + "/" + std::to_string(shard.shard.count) + ")";
}

std::string subject_range(SubjectRange range) {
  return "subjects [" + std::to_string(range.first) + ", " + std::to_string(range.first + range.count) + ")";
}

// The shards are those of one split, each once, and their subjects tile [0, N): sorts them by
// subject.
void check_split(std::vector<ShardFile>& shards) {
  const ShardFile& first = shards.front();
  std::map<std::int64_t, const ShardFile*> by_index;
  for (const ShardFile& shard : shards) {
    if (shard.shard.count != first.shard.count) {
      throw Error(ExitCode::usage, shard_name(shard) + " and " + shard_name(first) +
                                       " come from splits into different numbers of shards: merge the shards of one "
                                       "split, `--shard INDEX/COUNT` with the same COUNT");
    }
    const auto [where, added] = by_index.emplace(shard.shard.index, &shard);
    if (!added) {
      throw Error(ExitCode::usage, "shard " + std::to_string(shard.shard.index) + "/" +
                                       std::to_string(shard.shard.count) + " is given twice: " + where->second->path +
                                       " and " + shard.path + "; give each shard once");
    }
  }
  if (static_cast<std::int64_t>(by_index.size()) != first.shard.count) {
    std::string missing;
    std::int64_t expected = 1;
    const auto note_missing = [&](std::int64_t from, std::int64_t to) {  // [from, to)
      if (from >= to) return;
      missing += (missing.empty() ? "" : ", ") + std::to_string(from) +
                 (to - from > 1 ? "-" + std::to_string(to - 1) : std::string());
    };
    for (const auto& [index, shard] : by_index) {
      note_missing(expected, index);
      expected = index + 1;
    }
    note_missing(expected, first.shard.count + 1);
    throw Error(ExitCode::usage,
                "shard" + std::string(first.shard.count - static_cast<std::int64_t>(by_index.size()) > 1 ? "s " : " ") +
                    missing + " of " + std::to_string(first.shard.count) + " missing: " +
                    std::to_string(by_index.size()) + " given; a merge needs every shard of the split, each once");
  }
  std::sort(shards.begin(), shards.end(),
            [](const ShardFile& a, const ShardFile& b) { return a.subjects.first < b.subjects.first; });
  std::int64_t next = 0;
  for (std::size_t i = 0; i < shards.size(); ++i) {
    const ShardFile& shard = shards[i];
    if (shard.subjects.first < next) {
      throw IoError(shard_name(shard) + " holds " + subject_range(shard.subjects) + ", which overlap those of " +
                    shard_name(shards[i - 1]) + ", " + subject_range(shards[i - 1].subjects) +
                    ": a subject would be merged twice");
    }
    if (shard.subjects.first > next)
      throw IoError("no shard holds " + subject_range({next, shard.subjects.first - next}) + " of every arm");
    next = shard.subjects.first + shard.subjects.count;
  }
  if (next != first.info.subjects_per_arm)
    throw IoError("no shard holds " + subject_range({next, first.info.subjects_per_arm - next}) + " of every arm");
}

// ---- Copying the rows ---------------------------------------------------------------------------

// Rows per block of an arm: about `bytes` of trajectories and columns, a multiple of the trajectory
// chunk's rows (so that the writer compresses whole chunks on the worker threads).
std::int64_t block_rows(const ArmLayout& layout, std::size_t bytes) {
  std::size_t row_bytes =
      layout.trajectories.size() * layout.time_h.size() * sizeof(float) + 32;  // + id, status, message
  for (const ColumnSpec& column : layout.subject_columns) row_bytes += column.width * sizeof(double);
  for (const ColumnSpec& column : layout.metrics) row_bytes += column.width * sizeof(double);
  const std::size_t rows = std::clamp<std::size_t>(bytes / row_bytes, kTrajectoryChunkSubjects, std::size_t{1} << 16);
  return static_cast<std::int64_t>(rows / kTrajectoryChunkSubjects * kTrajectoryChunkSubjects);
}

// The open datasets of one arm of a shard.
struct ShardArm {
  std::vector<H5::DataSet> trajectories, subject_columns, metrics;
  H5::DataSet id, status, message;
};

ShardArm open_arm(const H5::H5File& file, const ArmLayout& layout, std::int64_t rows) {
  const std::string path = "arms/" + layout.name + "/";
  const H5::DSetAccPropList access = trajectory_access(static_cast<hsize_t>(rows), layout.time_h.size());
  ShardArm arm;
  for (const ColumnSpec& column : layout.trajectories)
    arm.trajectories.push_back(file.openDataSet(path + "trajectories/" + column.name, access));
  for (const ColumnSpec& column : layout.subject_columns)
    arm.subject_columns.push_back(file.openDataSet(path + "subjects/" + column.name));
  for (const ColumnSpec& column : layout.metrics)
    arm.metrics.push_back(file.openDataSet(path + "metrics/" + column.name));
  arm.id = file.openDataSet(path + "subjects/id");
  arm.status = file.openDataSet(path + "metrics/status");
  arm.message = file.openDataSet(path + "metrics/message");
  return arm;
}

// Subjects `range` of arm `arm_index`, read from the shard (row = subject - shard's first subject).
SubjectBlock read_block(const ShardFile& shard, const ShardArm& source, std::size_t arm_index, SubjectRange range) {
  const ArmLayout& layout = shard.layouts[arm_index];
  const auto first_row = static_cast<hsize_t>(range.first - shard.subjects.first);
  const auto rows = static_cast<hsize_t>(range.count);
  SubjectBlock block;
  block.arm = arm_index;
  block.first_subject = range.first;
  block.count = range.count;
  const hsize_t time_points = layout.time_h.size();
  for (const H5::DataSet& dataset : source.trajectories) {
    std::vector<float>& values = block.trajectories.emplace_back(rows * time_points);
    hdf5::read_rows(dataset, H5::PredType::NATIVE_FLOAT, values.data(), first_row, rows, time_points, true);
  }
  const auto read_columns = [&](const std::vector<H5::DataSet>& datasets, const auto& specs,
                                std::vector<std::vector<double>>& buffers) {
    for (std::size_t i = 0; i < datasets.size(); ++i) {
      std::vector<double>& values = buffers.emplace_back(rows * specs[i].width);
      hdf5::read_rows(datasets[i], H5::PredType::NATIVE_DOUBLE, values.data(), first_row, rows, specs[i].width,
                      specs[i].width != 1);
    }
  };
  read_columns(source.subject_columns, layout.subject_columns, block.subject_columns);
  read_columns(source.metrics, layout.metrics, block.metrics);
  std::vector<std::int64_t> ids(rows);
  hdf5::read_rows(source.id, H5::PredType::NATIVE_INT64, ids.data(), first_row, rows, 1, false);
  for (hsize_t r = 0; r < rows; ++r) {
    const std::int64_t expected = range.first + static_cast<std::int64_t>(r);
    if (ids[r] != expected) {
      throw IoError(shard.path + ": /arms/" + layout.name + "/subjects/id: row " + std::to_string(first_row + r) +
                    " is subject " + std::to_string(ids[r]) + ", expected " + std::to_string(expected) +
                    " (the shard holds " + subject_range(shard.subjects) + ")");
    }
  }
  block.status.resize(rows);
  hdf5::read_rows(source.status, H5::PredType::NATIVE_INT8, block.status.data(), first_row, rows, 1, false);
  const H5::StrType text = hdf5::utf8_text_type();
  std::vector<char*> messages(rows, nullptr);
  hdf5::read_rows(source.message, text, messages.data(), first_row, rows, 1, false);
  for (const char* message : messages) block.message.emplace_back(message != nullptr ? message : "");
  if (rows > 0) {
    const H5::DataSpace memory(1, &rows);
    H5Dvlen_reclaim(text.getId(), memory.getId(), H5P_DEFAULT, messages.data());
  }
  return block;
}

// Copies every row of `shard` into the writer: blocks read on this thread (HDF5 is not
// thread-safe), their trajectory chunks compressed on `threads` threads, written in order.
class ShardCopier {
 public:
  ShardCopier(ResultWriter& writer, const MergeOptions& options, unsigned threads, MergeProgress& progress,
              std::chrono::steady_clock::time_point started)
      : writer_(writer), options_(options), threads_(threads), progress_(progress), started_(started) {}

  void copy(const ShardFile& shard) {
    const QuietHdf5Errors quiet;
    try {
      const H5::H5File file = open_hdf5_for_reading(shard.path, "shard");
      for (std::size_t arm = 0; arm < shard.layouts.size(); ++arm) copy_arm(shard, file, arm);
    } catch (const H5::Exception& exception) {
      throw IoError("cannot read shard '" + shard.path + "': " + exception.getDetailMsg());
    }
  }

 private:
  void copy_arm(const ShardFile& shard, const H5::H5File& file, std::size_t arm) {
    const ShardArm source = open_arm(file, shard.layouts[arm], shard.subjects.count);
    const std::int64_t rows = block_rows(shard.layouts[arm], options_.block_bytes);
    const std::int64_t end = shard.subjects.first + shard.subjects.count;
    std::vector<SubjectRange> batch;
    for (std::int64_t first = shard.subjects.first; first < end;) {
      const std::int64_t next = std::min(end, (first / rows + 1) * rows);  // block edges at multiples of `rows`
      batch.push_back({first, next - first});
      first = next;
      if (batch.size() == threads_ || first == end) {
        copy_batch(shard, source, arm, batch);
        batch.clear();
      }
    }
  }

  void copy_batch(const ShardFile& shard, const ShardArm& source, std::size_t arm,
                  const std::vector<SubjectRange>& ranges) {
    if (options_.cancel != nullptr && options_.cancel->load())
      throw InterruptedError("interrupted while merging; nothing written");
    std::vector<SubjectBlock> blocks;
    for (const SubjectRange& range : ranges) blocks.push_back(read_block(shard, source, arm, range));
    std::vector<std::optional<PreparedBlock>> prepared(blocks.size());
    parallel_for(threads_, blocks.size(),
                 [&](unsigned, std::size_t i) { prepared[i].emplace(writer_.prepare(std::move(blocks[i]))); });
    for (std::optional<PreparedBlock>& block : prepared) {
      progress_.subject_arms_done += block->columns().count;
      writer_.write(std::move(*block));
    }
    progress_.elapsed_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started_).count();
    if (options_.on_progress) options_.on_progress(progress_);
  }

  ResultWriter& writer_;
  const MergeOptions& options_;
  const unsigned threads_;
  MergeProgress& progress_;
  const std::chrono::steady_clock::time_point started_;
};

}  // namespace

MergeReport merge_shards(const std::vector<std::string>& shard_paths, const std::string& output_path,
                         const MergeOptions& options) {
  const auto started = std::chrono::steady_clock::now();
  if (shard_paths.empty()) throw Error(ExitCode::usage, "no shard files to merge");
  check_output_path(output_path, shard_paths);
  const unsigned threads = thread_count(options.threads);

  std::vector<ShardFile> shards;
  for (const std::string& path : shard_paths) shards.push_back(read_shard(path));
  for (const ShardFile& shard : shards) {
    check_build(shard);
    check_same_run(shards.front(), shard);
  }
  check_split(shards);  // sorts them by subject

  RunInfo info = shards.front().info;
  for (const ShardFile& shard : shards) info.merged_from.push_back(shard.provenance);
  ResultWriterOptions writer_options;
  writer_options.summary_threads = threads;
  writer_options.summary_memory_bytes = options.summary_memory_bytes;
  writer_options.cancel = options.cancel;
  ResultWriter writer(output_path, info, shards.front().layouts, info.subjects_per_arm, writer_options);

  MergeProgress progress;
  progress.subject_arms_total = info.subjects_per_arm * static_cast<std::int64_t>(shards.front().layouts.size());
  ShardCopier copier(writer, options, threads, progress, started);
  for (const ShardFile& shard : shards) copier.copy(shard);
  progress.copied = true;
  writer.finish([&](const FinishProgress& step) {
    progress.finish = step;
    progress.elapsed_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    if (options.on_progress) options.on_progress(progress);
  });

  MergeReport report;
  report.scenario_name = info.scenario_name;
  report.subjects_per_arm = info.subjects_per_arm;
  report.arms = shards.front().layouts.size();
  report.shards = shards.size();
  report.threads = threads;
  report.elapsed_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  return report;
}

}  // namespace ketasim
