#include "ketasim/output/hdf5_writer.hpp"

#include <H5Cpp.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <ctime>
#include <iterator>
#include <map>
#include <numeric>
#include <optional>
#include <set>
#include <utility>

#include "ketasim/base/errors.hpp"
#include "ketasim/base/threads.hpp"
#include "ketasim/base/version.hpp"
#include "ketasim/output/chunk_codec.hpp"
#include "ketasim/output/hdf5_file_driver.hpp"
#include "ketasim/output/hdf5_util.hpp"
#include "ketasim/output/output_file.hpp"
#include "ketasim/output/summaries.hpp"

namespace ketasim {
namespace {

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
  if (info.shard) {
    const SubjectRange& part = info.shard->subjects;
    if (part.first < 0 || part.count < 0 || part.first > subjects_per_arm - part.count)
      throw IoError(final_path + ": cannot define the output: shard subjects [" + std::to_string(part.first) + ", " +
                    std::to_string(part.first + part.count) + ") are outside [0, " + std::to_string(subjects_per_arm) +
                    ")");
  }
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
  const ArmLayout* layout = nullptr;       // in State::layouts
  std::vector<H5::DataSet> trajectories;   // [N x T]
  std::vector<SummaryDatasets> summaries;  // [trajectory][quantile]
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
  // Declared before `file`, so destroyed after it: the temporary file is closed before removal.
  AtomicOutputFile output;
  std::string temporary_path;
  std::int64_t subjects_per_arm = 0;
  // The rows the file holds: subjects [first_stored, first_stored + stored) of every arm, all of
  // them unless the file is a shard (RunInfo::shard); row r is subject first_stored + r.
  std::int64_t first_stored = 0;
  std::int64_t stored = 0;
  bool with_summaries = true;  // a shard has none: they are computed over every shard by the merge
  ResultWriterOptions options;
  std::vector<ArmLayout> layouts;

  // Used by the writer thread only. Every HDF5 call goes through `hdf5_calls`, inside a
  // QuietHdf5Errors guard that records into hdf5_calls.errors() (one per public method).
  hdf5_file_driver::FileControl file_control;  // of `file`, which refers to it
  Hdf5FileCalls hdf5_calls{temporary_path, file_control};
  std::optional<H5::H5File> file;  // emplaced: H5File's copy assignment is deprecated
  std::vector<ArmDatasets> arms;
  Phase phase = Phase::open;

  // Creates the temporary file next to `path` (AtomicOutputFile, output_file.hpp).
  State(std::string path, const RunInfo& info)
      : final_path(std::move(path)),
        output(final_path, {info.scenario_file}),
        temporary_path(output.temporary_path()) {}
  State(const State&) = delete;
  State& operator=(const State&) = delete;
  ~State();

  void create_file();
  void write_root_attributes(const RunInfo& info);
  void write_shard_attributes(const RunInfo::ShardPart& shard);
  void write_merge_attributes(const std::vector<RunInfo::MergedShard>& shards);
  void define_arm(const ArmLayout& layout);  // layout: an element of `layouts`
  void define_subjects(const H5::Group& arm_group, ArmDatasets& arm) const;
  void define_metrics(const H5::Group& arm_group, ArmDatasets& arm) const;
  void define_trajectories(const H5::Group& arm_group, ArmDatasets& arm) const;
  // Thread-safe. Without `with_trajectories`, the block's trajectories are not checked (a block
  // restored from a journal has them as chunks and rows).
  void check_block_shape(const SubjectBlock& block, bool with_trajectories = true) const;
  void check_not_written(const SubjectBlock& block) const;
  void write_block(const SubjectBlock& block);
  void write_prepared_block(const PreparedBlock& block);
  void write_trajectory_rows(const ArmDatasets& arm, hsize_t first, hsize_t rows,
                             const std::vector<std::vector<float>>& trajectories) const;
  void write_subject_columns(const ArmDatasets& arm, const SubjectBlock& block) const;
  void mark_written(ArmDatasets& arm, const SubjectBlock& block) const;
  void check_every_subject_written() const;
  void write_summary(const ArmDatasets& arm, std::size_t trajectory);
  void close_file();
  void discard_file() noexcept;
};

ResultWriter::State::~State() {
  if (phase != Phase::finished) discard_file();
}

void ResultWriter::State::create_file() {
  hdf5_calls("create the temporary output file", [&] {
    H5::FileAccPropList access;
    access.setFcloseDegree(H5F_CLOSE_STRONG);  // closing the file really closes it before the rename
    hdf5_file_driver::use(access.getId(), &file_control);
    file.emplace(temporary_path, H5F_ACC_EXCL, H5::FileCreatPropList::DEFAULT,
                 access);  // a new name, never another's file
  });
}

void ResultWriter::State::write_root_attributes(const RunInfo& info) {
  hdf5_calls("write the root attributes", [&] {
    hdf5::set_text_attribute(*file, "ketasim_version", kVersion);
    hdf5::set_number_attribute(*file, "layout_version", H5::PredType::STD_I32LE, H5::PredType::NATIVE_INT,
                               kLayoutVersion);
    hdf5::set_text_attribute(*file, "source_revision", kSourceRevision);
    hdf5::set_text_attribute(*file, "scenario_file", info.scenario_file);
    hdf5::set_text_attribute(*file, "scenario_yaml", info.scenario_yaml);
    hdf5::set_text_attribute(*file, "scenario_name", info.scenario_name);
    hdf5::set_text_attribute(*file, "model", info.model_name);
    hdf5::set_number_attribute(*file, "seed", H5::PredType::STD_U64LE, H5::PredType::NATIVE_UINT64, info.seed);
    hdf5::set_number_attribute(*file, "subjects_per_arm", H5::PredType::STD_I64LE, H5::PredType::NATIVE_INT64,
                               info.subjects_per_arm);
    hdf5::set_number_attribute(*file, "replicates", H5::PredType::STD_I64LE, H5::PredType::NATIVE_INT64,
                               info.replicates);
    hdf5::set_number_attribute(*file, "subjects_per_replicate", H5::PredType::STD_I64LE, H5::PredType::NATIVE_INT64,
                               info.subjects_per_replicate > 0 ? info.subjects_per_replicate : info.subjects_per_arm);
    hdf5::set_text_attribute(*file, "solver_method", info.solver_method);
    hdf5::set_number_attribute(*file, "solver_rtol", H5::PredType::IEEE_F64LE, H5::PredType::NATIVE_DOUBLE,
                               info.solver_rtol);
    hdf5::set_number_attribute(*file, "solver_atol", H5::PredType::IEEE_F64LE, H5::PredType::NATIVE_DOUBLE,
                               info.solver_atol);
    hdf5::set_text_attribute(*file, "created_utc", utc_now_iso8601());
    hdf5::set_text_attribute(*file, "host", this_host());
    hdf5::set_number_attribute(*file, "threads", H5::PredType::STD_I64LE, H5::PredType::NATIVE_INT64,
                               static_cast<std::int64_t>(options.summary_threads));
  });
  if (info.shard) write_shard_attributes(*info.shard);
  if (!info.merged_from.empty()) write_merge_attributes(info.merged_from);
  if (info.mpi_ranks > 0) {
    hdf5_calls("write the attribute mpi_ranks", [&] {
      hdf5::set_number_attribute(*file, "mpi_ranks", H5::PredType::STD_I64LE, H5::PredType::NATIVE_INT64,
                                 info.mpi_ranks);
      if (!info.mpi_rank_busy_seconds.empty())
        hdf5::set_float_array_attribute(*file, "mpi_rank_busy_seconds", info.mpi_rank_busy_seconds);
    });
  }
}

// What `ketasim merge` checks and needs (docs/hdf5-layout.md, "Shard files").
void ResultWriter::State::write_shard_attributes(const RunInfo::ShardPart& shard) {
  hdf5_calls("write the shard attributes", [&] {
    const auto set = [&](const char* name, std::int64_t value) {
      hdf5::set_number_attribute(*file, name, H5::PredType::STD_I64LE, H5::PredType::NATIVE_INT64, value);
    };
    set("shard_index", shard.shard.index);
    set("shard_count", shard.shard.count);
    set("shard_first_subject", shard.subjects.first);
    set("shard_subjects", shard.subjects.count);
  });
}

// Provenance of a merged file: where each shard was computed, in subject order.
void ResultWriter::State::write_merge_attributes(const std::vector<RunInfo::MergedShard>& shards) {
  std::vector<std::string> paths, hosts, created;
  std::vector<double> threads;
  for (const RunInfo::MergedShard& shard : shards) {
    paths.push_back(shard.path);
    hosts.push_back(shard.host);
    created.push_back(shard.created_utc);
    threads.push_back(static_cast<double>(shard.threads));
  }
  hdf5_calls("write the merge attributes", [&] {
    hdf5::set_text_array_attribute(*file, "merged_shard_files", paths);
    hdf5::set_text_array_attribute(*file, "merged_shard_hosts", hosts);
    hdf5::set_text_array_attribute(*file, "merged_shard_created_utc", created);
    hdf5::set_float_array_attribute(*file, "merged_shard_threads", threads);
  });
}

void ResultWriter::State::define_arm(const ArmLayout& layout) {
  ArmDatasets arm;
  arm.layout = &layout;
  hdf5_calls("define arm '" + layout.name + "'", [&] {
    const H5::Group group = file->createGroup("arms/" + layout.name);
    hdf5::set_text_attribute(group, "description", layout.description);
    hdf5::set_text_attribute(group, "model", layout.model);
    std::vector<std::string> names, units;
    std::vector<double> values;
    for (const ParameterValue& parameter : layout.model_parameters) {
      names.push_back(parameter.name);
      values.push_back(parameter.value);
      units.push_back(parameter.unit);
    }
    hdf5::set_text_array_attribute(group, "model_parameters", names);
    hdf5::set_float_array_attribute(group, "model_parameter_values", values);
    hdf5::set_text_array_attribute(group, "model_parameter_units", units);
    hdf5::set_float_array_attribute(group, "price_per_session_usd",
                                    {layout.price_per_session_usd[0], layout.price_per_session_usd[1]});
    hdf5::write_vector(group, "time_h", layout.time_h, "h", "output time grid, hours from the start of the simulation");
    define_subjects(group, arm);
    define_metrics(group, arm);
    const H5::Group doses = group.createGroup("doses");
    hdf5::write_vector(doses, "time_h", layout.dose_time_h, "h",
                       "nominal dose times of the scheduled rules, hours from the start of the simulation "
                       "(per-subject doses given: subjects/dose_time_h)");
    hdf5::write_vector(doses, "duration_h", layout.dose_duration_h, "h", "infusion durations; 0 for a bolus");
    hdf5::write_vector(
        group, "assessments_h", layout.assessment_time_h, "h",
        "MADRS assessment times, hours after the start of the first session (columns of the *_at metrics)");
    hdf5::write_vector(group, "observation_times_h", layout.observation_time_h, "h",
                       "sampling times of the simulated observations (metrics ipred_* and dv_*), hours from the start");
    hdf5::set_text_array_attribute(group, "observed_outputs", layout.observed_outputs);
    if (!layout.relapse_visit_time_h.empty())
      hdf5::write_vector(group, "relapse_visits_h", layout.relapse_visit_time_h, "h",
                         "visits of output.relapse, hours after the start of the first session (columns of "
                         "metrics/madrs_observed_at_visit)");
    define_trajectories(group, arm);
  });
  arms.push_back(std::move(arm));
}

void ResultWriter::State::define_subjects(const H5::Group& arm_group, ArmDatasets& arm) const {
  const auto subjects = static_cast<hsize_t>(stored);
  const H5::Group group = arm_group.createGroup("subjects");
  arm.subject_id = hdf5::create_dataset(group, "id", H5::PredType::STD_I64LE, {subjects}, "",
                                        "subject id (row index within the arm)");
  for (const ColumnSpec& column : arm.layout->subject_columns) {
    arm.subject_columns.push_back(
        {hdf5::create_dataset(group, column.name, H5::PredType::IEEE_F64LE, hdf5::column_shape(subjects, column.width),
                              column.unit, column.description, hdf5::nan_filled_doubles()),
         column.width});
  }
}

void ResultWriter::State::define_metrics(const H5::Group& arm_group, ArmDatasets& arm) const {
  const auto subjects = static_cast<hsize_t>(stored);
  const H5::Group group = arm_group.createGroup("metrics");
  for (const ColumnSpec& column : arm.layout->metrics) {
    arm.metrics.push_back(
        {hdf5::create_dataset(group, column.name, H5::PredType::IEEE_F64LE, hdf5::column_shape(subjects, column.width),
                              column.unit, column.description, hdf5::nan_filled_doubles()),
         column.width});
  }
  arm.status = hdf5::create_dataset(group, "status", H5::PredType::STD_I8LE, {subjects}, "",
                                    "0 = solved, 1 = failed (the subject's trajectories and metrics are NaN)");
  arm.message = hdf5::create_dataset(group, "message", hdf5::utf8_text_type(), {subjects}, "",
                                     "empty when solved, otherwise why the subject failed");
}

void ResultWriter::State::define_trajectories(const H5::Group& arm_group, ArmDatasets& arm) const {
  const auto subjects = static_cast<hsize_t>(stored);
  const hsize_t time_points = arm.layout->time_h.size();
  const H5::DSetCreatPropList creation = trajectory_creation(subjects, time_points);
  const H5::DSetAccPropList access = trajectory_access(subjects, time_points);
  const H5::Group trajectories = arm_group.createGroup("trajectories");
  std::optional<H5::Group> summary;
  if (with_summaries) summary = arm_group.createGroup("summary");
  for (const ColumnSpec& column : arm.layout->trajectories) {
    arm.trajectories.push_back(hdf5::create_dataset(trajectories, column.name, H5::PredType::IEEE_F32LE,
                                                    {subjects, time_points}, column.unit, column.description, creation,
                                                    access));
    if (summary) arm.summaries.push_back(define_summary_datasets(*summary, column, time_points));
  }
}

namespace {

[[noreturn]] void reject_block(const std::string& final_path, const SubjectBlock& block, const std::string& problem) {
  throw IoError(final_path + ": cannot write subjects [" + std::to_string(block.first_subject) + ", " +
                std::to_string(block.first_subject + block.count) + ") of arm " + std::to_string(block.arm) + ": " +
                problem);
}

}  // namespace

void ResultWriter::State::check_block_shape(const SubjectBlock& block, bool with_trajectories) const {
  const auto reject = [&](const std::string& problem) { reject_block(final_path, block, problem); };
  if (block.arm >= layouts.size()) reject("there are only " + std::to_string(layouts.size()) + " arms");
  const ArmLayout& layout = layouts[block.arm];
  if (block.first_subject < first_stored || block.count < 0 ||
      block.first_subject - first_stored > stored - block.count) {
    reject(stored == subjects_per_arm ? "the arm has subjects [0, " + std::to_string(subjects_per_arm) + ")"
                                      : "the file holds subjects [" + std::to_string(first_stored) + ", " +
                                            std::to_string(first_stored + stored) + ") of every arm");
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
  if (with_trajectories) check_sizes("trajectory", layout.trajectories, block.trajectories, time_points);
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
  const std::int64_t first = block.first_subject - first_stored;  // rows
  const std::int64_t end = first + block.count;
  const std::int64_t row = arm.written.first_written(first, end);
  if (row != end) {
    reject_block(
        final_path, block,
        "subject " + std::to_string(first_stored + row) + " of arm '" + arm.layout->name + "' was already written");
  }
}

void ResultWriter::State::write_trajectory_rows(const ArmDatasets& arm, hsize_t first, hsize_t rows,
                                                const std::vector<std::vector<float>>& trajectories) const {
  for (std::size_t i = 0; i < arm.trajectories.size(); ++i) {
    hdf5::write_rows(arm.trajectories[i], H5::PredType::NATIVE_FLOAT, trajectories[i].data(), first, rows,
                     arm.layout->time_h.size(), true);
  }
}

// Everything of the block but its trajectories.
void ResultWriter::State::write_subject_columns(const ArmDatasets& arm, const SubjectBlock& block) const {
  const auto first = static_cast<hsize_t>(block.first_subject - first_stored);
  const auto rows = static_cast<hsize_t>(block.count);
  const auto write_columns = [&](const std::vector<ColumnDataset>& columns, const auto& buffers) {
    for (std::size_t i = 0; i < columns.size(); ++i) {
      hdf5::write_rows(columns[i].dataset, H5::PredType::NATIVE_DOUBLE, buffers[i].data(), first, rows,
                       columns[i].width, columns[i].width != 1);
    }
  };
  write_columns(arm.subject_columns, block.subject_columns);
  write_columns(arm.metrics, block.metrics);
  std::vector<std::int64_t> ids(block.status.size());
  std::iota(ids.begin(), ids.end(), block.first_subject);
  hdf5::write_rows(arm.subject_id, H5::PredType::NATIVE_INT64, ids.data(), first, rows, 1, false);
  hdf5::write_rows(arm.status, H5::PredType::NATIVE_INT8, block.status.data(), first, rows, 1, false);
  std::vector<const char*> messages;
  for (const std::string& message : block.message) messages.push_back(message.c_str());
  hdf5::write_rows(arm.message, hdf5::utf8_text_type(), messages.data(), first, rows, 1, false);
}

void ResultWriter::State::mark_written(ArmDatasets& arm, const SubjectBlock& block) const {
  const std::int64_t first = block.first_subject - first_stored;  // rows
  arm.written.add(first, first + block.count);
}

void ResultWriter::State::write_block(const SubjectBlock& block) {
  ArmDatasets& arm = arms[block.arm];
  hdf5_calls("write subjects of arm '" + arm.layout->name + "'", [&] {
    write_trajectory_rows(arm, static_cast<hsize_t>(block.first_subject - first_stored),
                          static_cast<hsize_t>(block.count), block.trajectories);
    write_subject_columns(arm, block);
  });
  mark_written(arm, block);
}

void ResultWriter::State::write_prepared_block(const PreparedBlock& block) {
  const SubjectBlock& columns = block.columns_;
  ArmDatasets& arm = arms[columns.arm];
  hdf5_calls("write subjects of arm '" + arm.layout->name + "'", [&] {
    for (const PreparedBlock::Chunk& chunk : block.chunks_) {
      write_stored_chunk(arm.trajectories[chunk.trajectory],
                         {static_cast<hsize_t>(chunk.first_subject), static_cast<hsize_t>(chunk.first_time_point)},
                         chunk.bytes);
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
    if (arm.written.count() == stored) continue;
    const std::int64_t first_missing = first_stored + arm.written.first_missing();
    throw IoError(final_path + ": cannot finish the output: " + std::to_string(stored - arm.written.count()) + " of " +
                  std::to_string(stored) + " subjects of arm '" + arm.layout->name +
                  "' were never written (the first is subject " + std::to_string(first_missing) + ")");
  }
}

// The per-time quantiles of one trajectory (summaries.hpp).
void ResultWriter::State::write_summary(const ArmDatasets& arm, std::size_t trajectory) {
  TrajectorySummaries summaries(options, hdf5_calls);
  summaries.write(
      arm.trajectories[trajectory], static_cast<hsize_t>(stored), arm.layout->time_h.size(), arm.summaries[trajectory],
      "summarize trajectory '" + arm.layout->trajectories[trajectory].name + "' of arm '" + arm.layout->name + "'");
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
        hdf5_calls("close a dataset of arm '" + arm.layout->name + "'", [&] { dataset.close(); });
      } catch (const IoError& failure) {
        if (!first_failure) first_failure = failure;
      }
    });
  }
  if (first_failure) throw *first_failure;  // the datasets that could not be closed stay in `arms`
  arms.clear();                             // the datasets must be released before the file
  if (!file) return;
  hdf5_calls("flush the file", [&] { file->flush(H5F_SCOPE_LOCAL); });
  const hid_t id = file->getId();
  H5Iinc_ref(id);  // the wrapper's destructor then only drops its own reference
  file.reset();
  hdf5_calls("close the file", [&] {
    if (H5Fclose(id) < 0) throw H5::FileIException("H5Fclose", "cannot close the file");
  });
}

// An unfinished file is thrown away: its writes are discarded from here on, so that closing it
// (which flushes HDF5's caches) cannot fail for want of space, then it is removed. Never throws.
void ResultWriter::State::discard_file() noexcept {
  file_control.discard_writes = true;
  try {
    const QuietHdf5Errors quiet(hdf5_calls.errors());
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
    columns += (time_points + 2 * arm.dose_time_h.size() + arm.assessment_time_h.size() +
                arm.observation_time_h.size() + arm.relapse_visit_time_h.size()) *
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
    : state_(std::make_unique<State>(std::move(final_path), info)) {
  State& state = *state_;
  state.subjects_per_arm = subjects_per_arm;
  state.stored = subjects_per_arm;
  if (info.shard) {
    state.first_stored = info.shard->subjects.first;
    state.stored = info.shard->subjects.count;
    state.with_summaries = false;
  }
  state.options = options;
  // Resolved once: the `threads` attribute records what the summary pass then uses.
  state.options.summary_threads = thread_count(options.summary_threads);
  check_layout(state.final_path, info, arms, subjects_per_arm);
  state.layouts = std::move(arms);  // never resized again: the arms' datasets point into it

  const QuietHdf5Errors quiet(state.hdf5_calls.errors());
  state.create_file();
  state.write_root_attributes(info);
  std::vector<std::string> arm_names;
  for (const ArmLayout& arm : state.layouts) arm_names.push_back(arm.name);
  state.hdf5_calls("write the arm names", [&] {
    hdf5::set_text_array_attribute(*state.file, "arms", arm_names);
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
  const QuietHdf5Errors quiet(state.hdf5_calls.errors());
  state.phase = State::Phase::failed;  // until the write completes
  state.write_block(block);
  state.phase = State::Phase::open;
}

PreparedBlock ResultWriter::prepare(SubjectBlock block) const {
  if (!state_) throw IoError("ResultWriter::prepare: the writer was moved from");
  const State& state = *state_;  // only what the constructor set; nothing here may touch HDF5
  state.check_block_shape(block);
  const ArmLayout& layout = state.layouts[block.arm];
  const ChunkGrid grid = ChunkGrid::of(static_cast<hsize_t>(state.stored), layout.time_h.size());
  const auto first = static_cast<hsize_t>(block.first_subject - state.first_stored);  // rows of the file
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

PreparedBlock ResultWriter::restore(SubjectBlock columns, std::vector<PreparedBlock::Chunk> chunks,
                                    std::vector<PreparedBlock::Rows> rows) const {
  if (!state_) throw IoError("ResultWriter::restore: the writer was moved from");
  const State& state = *state_;
  state.check_block_shape(columns, false);
  const auto reject = [&](const std::string& problem) { reject_block(state.final_path, columns, problem); };
  if (!columns.trajectories.empty()) reject("a restored block holds its trajectories in chunks and rows only");
  // Exactly the chunks and rows prepare() makes of this block, in its order.
  const ArmLayout& layout = state.layouts[columns.arm];
  const ChunkGrid grid = ChunkGrid::of(static_cast<hsize_t>(state.stored), layout.time_h.size());
  const auto first = static_cast<hsize_t>(columns.first_subject - state.first_stored);
  const auto end = first + static_cast<hsize_t>(columns.count);
  const WholeChunkRows whole = whole_chunk_rows(grid, first, end);
  std::size_t next_chunk = 0;
  for (std::size_t trajectory = 0; trajectory < layout.trajectories.size(); ++trajectory) {
    for (hsize_t row = whole.begin; row < whole.stop; row += grid.chunk_rows) {
      for (hsize_t column = 0; column < grid.time_points; column += grid.chunk_columns) {
        const bool expected = next_chunk < chunks.size() && chunks[next_chunk].trajectory == trajectory &&
                              chunks[next_chunk].first_subject == static_cast<std::int64_t>(row) &&
                              chunks[next_chunk].first_time_point == static_cast<std::int64_t>(column) &&
                              !chunks[next_chunk].bytes.empty();
        if (!expected) reject("its trajectory chunks are not those of its subjects");
        ++next_chunk;
      }
    }
  }
  if (next_chunk != chunks.size()) reject("it has more trajectory chunks than its subjects fill");
  std::size_t next_rows = 0;
  const auto expect_rows = [&](hsize_t begin, hsize_t stop) {
    if (begin == stop) return;
    const bool expected =
        next_rows < rows.size() && rows[next_rows].first_subject == static_cast<std::int64_t>(begin) &&
        rows[next_rows].count == static_cast<std::int64_t>(stop - begin) &&
        rows[next_rows].trajectories.size() == layout.trajectories.size() &&
        std::all_of(
            rows[next_rows].trajectories.begin(), rows[next_rows].trajectories.end(),
            [&](const std::vector<float>& values) { return values.size() == (stop - begin) * grid.time_points; });
    if (!expected) reject("its uncompressed trajectory rows are not those of its subjects");
    ++next_rows;
  };
  expect_rows(first, whole.begin);
  expect_rows(whole.stop, end);
  if (next_rows != rows.size()) reject("it has more uncompressed trajectory rows than subjects");
  PreparedBlock prepared;
  prepared.writer_state_ = state_.get();
  prepared.columns_ = std::move(columns);
  prepared.chunks_ = std::move(chunks);
  prepared.uncompressed_rows_ = std::move(rows);
  return prepared;
}

void ResultWriter::write(PreparedBlock&& block) {
  State& state = open_state("write");
  if (block.writer_state_ != state_.get()) {
    throw IoError(state.final_path + ": cannot write a prepared block: it was not prepared by this writer" +
                  (block.writer_state_ == nullptr ? " (it was moved from)" : ""));
  }
  state.check_not_written(block.columns_);
  const QuietHdf5Errors quiet(state.hdf5_calls.errors());
  state.phase = State::Phase::failed;  // until the write completes
  state.write_prepared_block(block);
  state.phase = State::Phase::open;
}

void ResultWriter::finish(const std::function<void(const FinishProgress&)>& on_progress) {
  State& state = open_state("finish");
  const QuietHdf5Errors quiet(state.hdf5_calls.errors());
  state.phase = State::Phase::failed;  // until the rename succeeds; the destructor then cleans up
  state.check_every_subject_written();
  FinishProgress progress;
  for (const ArmDatasets& arm : state.arms) progress.summaries_total += arm.summaries.size();
  const auto report = [&] {
    if (on_progress) on_progress(progress);
  };
  for (const ArmDatasets& arm : state.arms) {
    for (std::size_t trajectory = 0; trajectory < arm.summaries.size(); ++trajectory) {
      report();
      state.write_summary(arm, trajectory);
      ++progress.summaries_done;
    }
  }
  report();  // all summaries done: closing, flushing and renaming
  state.close_file();
  state.output.commit();
  state.phase = State::Phase::finished;
}

const std::string& ResultWriter::final_path() const {
  return state_->final_path;
}
const std::string& ResultWriter::temporary_path() const {
  return state_->temporary_path;
}

}  // namespace ketasim
