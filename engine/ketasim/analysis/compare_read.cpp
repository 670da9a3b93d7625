// Reading a result file for `compare` (compare.hpp): the arms in scenario order, the metrics it
// compares, the replicates and the layout version, with errors that name the file and the object.

#include <H5Cpp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>

#include "ketasim/analysis/compare.hpp"
#include "ketasim/base/errors.hpp"
#include "ketasim/base/time.hpp"
#include "ketasim/model/model_card.hpp"
#include "ketasim/output/result_reader.hpp"
#include "ketasim/solve/results.hpp"

namespace ketasim {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// The largest finite value of each row (NaN for a row without one, e.g. no dose in the grid).
std::vector<double> row_maxima(const NumberTable& table) {
  std::vector<double> maxima(table.rows, kNaN);
  for (std::size_t row = 0; row < table.rows; ++row)
    for (std::size_t column = 0; column < table.columns; ++column) {
      const double value = table.at(row, column);
      if (std::isfinite(value) && !(value <= maxima[row])) maxima[row] = value;
    }
  return maxima;
}

void read_dissociation(const FileReader& reader, const H5::Group& metrics, const std::string& metrics_path,
                       std::size_t subjects, double grid_weeks, ArmData& arm) {
  const std::string burden = metric_dataset(MetricId::dissociation_burden);
  const std::string hours_above = metric_dataset(MetricId::time_above_dissociation);
  const bool has_burden = FileReader::has_link(metrics, burden);
  if (!has_burden && !FileReader::has_link(metrics, hours_above))
    reader.fail(metrics_path + "/" + burden, "missing, and so is " + hours_above +
                                                 " (output.metrics must include dissociation_burden or "
                                                 "time_above_dissociation)");
  arm.dissociation_measure =
      has_burden ? DissociationMeasure::burden_score_h : DissociationMeasure::hours_above_threshold;
  arm.dissociation_per_week = reader.read_vector(metrics, metrics_path, has_burden ? burden : hours_above, subjects);
  for (double& value : arm.dissociation_per_week) value /= grid_weeks;
}

void read_sessions(const FileReader& reader, const H5::Group& metrics, const H5::Group& arm_group,
                   const std::string& arm_path, std::size_t subjects, double grid_end_h, ArmData& arm) {
  const std::string sessions_given = metric_dataset(MetricId::sessions_given);
  arm.sessions_from_file = FileReader::has_link(metrics, sessions_given);
  if (arm.sessions_from_file) {
    arm.sessions = reader.read_vector(metrics, arm_path + "/metrics", sessions_given, subjects);
    return;
  }
  const H5::Group doses = reader.open_group(arm_group, arm_path, "doses");
  const std::vector<double> dose_times = reader.read_vector(doses, arm_path + "/doses", "time_h", std::nullopt);
  const auto within_grid =
      std::count_if(dose_times.begin(), dose_times.end(), [&](double t) { return t <= grid_end_h + 1e-9; });
  arm.sessions.assign(subjects, static_cast<double>(within_grid));
}

void read_price(const FileReader& reader, const H5::Group& arm_group, const std::string& arm_path, ArmData& arm) {
  arm.price_from_file = arm_group.attrExists("price_per_session_usd");
  if (!arm.price_from_file) {
    arm.price_per_session_usd = {kDefaultPricePerSessionUsd[0], kDefaultPricePerSessionUsd[1]};
    return;
  }
  const std::vector<double> price = reader.read_attribute_numbers(arm_group, arm_path, "price_per_session_usd", false);
  if (price.size() != 2 || !std::isfinite(price[0]) || !std::isfinite(price[1]) || price[0] < 0 || price[1] < 0)
    reader.fail(arm_path + " attribute price_per_session_usd",
                "expected two finite non-negative prices (low, high) in USD");
  arm.price_per_session_usd = {price[0], price[1]};
}

std::string read_model_name(const FileReader& reader, const H5::H5Object& object, const std::string& object_path) {
  const std::vector<std::string> names = reader.read_strings(object, object_path, "model");
  if (names.size() != 1) reader.fail(object_path + " attribute model", "expected one model name");
  return names.front();
}

// The card an arm simulated: the arm's attribute `model`, or the root's in a file written before
// arms could have a model of their own. Both name a built-in card.
const ModelCard& arm_card(const FileReader& reader, const H5::Group& arm_group, const std::string& arm_path,
                          const std::optional<std::string>& file_model) {
  const bool own = arm_group.attrExists("model");
  const std::string where = own ? arm_path + " attribute model" : "/ attribute model";
  std::optional<std::string> name = file_model;
  if (own) name = read_model_name(reader, arm_group, arm_path);
  if (!name) reader.fail(where, "missing (compare reads the link roles of the card an arm simulated)");
  const ModelCard* card = find_builtin_model(*name);
  if (card == nullptr) reader.fail(where, "model '" + *name + "' is not built into this ketasim");
  return *card;
}

// The peak systolic blood pressure rise of each subject over the doses: the per-dose peak metric of
// the link with the role systolic_blood_pressure in the arm's card. The file records no link roles,
// so the card it names says which link it is (docs/model-cards.md, links).
std::vector<double> read_peak_sbp_rise(const FileReader& reader, const H5::Group& metrics,
                                       const std::string& metrics_path, const ModelCard& card, std::size_t subjects) {
  const LinkBlock* link = card.link_with_role(LinkRole::systolic_blood_pressure);
  if (link == nullptr)
    reader.fail(metrics_path, "model '" + card.name + "' has no link with the role systolic_blood_pressure, whose " +
                                  "peak compare reports");
  const std::string name = metric_dataset(MetricId::peak_link, link->name);
  const NumberTable sbp = reader.read_numbers(metrics, metrics_path, name);
  if (sbp.rows != subjects)
    reader.fail(metrics_path + "/" + name,
                "expected " + std::to_string(subjects) + " rows, found " + std::to_string(sbp.rows));
  return row_maxima(sbp);
}

ArmData read_arm(const FileReader& reader, const H5::Group& arms, const std::string& name, std::size_t subjects,
                 const std::optional<std::string>& file_model) {
  const std::string arm_path = "/arms/" + name;
  if (!FileReader::has_link(arms, name))
    reader.fail(arm_path, "group missing (the root attribute `arms` lists arm '" + name + "')");
  const H5::Group group = reader.open_group(arms, "/arms", name);
  ArmData arm;
  arm.name = name;
  const std::vector<double> time_h = reader.read_vector(group, arm_path, "time_h", std::nullopt);
  const double grid_end_h = time_h.empty() ? kNaN : time_h.back();
  for (const double hours : reader.read_vector(group, arm_path, "assessments_h", std::nullopt))
    arm.assessment_days.push_back(hours / kHoursPerDay);

  const std::string metrics_path = arm_path + "/metrics";
  const H5::Group metrics = reader.open_group(group, arm_path, "metrics");
  for (const double status : reader.read_vector(metrics, metrics_path, "status", subjects))
    arm.failed.push_back(status != 0.0);
  const std::size_t assessments = arm.assessment_days.size();
  const auto vector = [&](MetricId id) {
    return reader.read_vector(metrics, metrics_path, metric_dataset(id), subjects);
  };
  const auto columns = [&](MetricId id) {
    return reader.read_columns(metrics, metrics_path, metric_dataset(id), subjects, assessments);
  };
  arm.response_at = columns(MetricId::response_at);
  arm.remission_at = columns(MetricId::remission_at);
  arm.days_in_response = vector(MetricId::days_in_response);
  arm.relapse_day = vector(MetricId::relapse_day);
  arm.relapse_observed = vector(MetricId::relapse_observed);
  read_dissociation(reader, metrics, metrics_path, subjects, grid_end_h / kHoursPerWeek, arm);
  arm.peak_sbp_rise_mmhg =
      read_peak_sbp_rise(reader, metrics, metrics_path, arm_card(reader, group, arm_path, file_model), subjects);
  read_sessions(reader, metrics, group, arm_path, subjects, grid_end_h, arm);
  if (FileReader::has_link(metrics, metric_dataset(MetricId::relapse_visits_day))) {
    arm.relapse_visits_day = vector(MetricId::relapse_visits_day);
    arm.relapse_visits_observed = vector(MetricId::relapse_visits_observed);
  }
  if (FileReader::has_link(metrics, metric_dataset(MetricId::stopped_early))) {
    arm.stopped_early = vector(MetricId::stopped_early);
    arm.sessions_to_response = vector(MetricId::sessions_to_response);
  }
  // An arm without a titration (every value NaN) titrated no one: 0, so that the paired difference
  // against it is the other arm's share. An arm without a given_if rule stays NaN (n/a): whether
  // its subjects "continued" depends on what it gives after the induction.
  const auto zero_if_absent = [](std::vector<double> values) {
    if (std::none_of(values.begin(), values.end(), [](double v) { return std::isfinite(v); }))
      std::fill(values.begin(), values.end(), 0.0);
    return values;
  };
  if (FileReader::has_link(metrics, metric_dataset(MetricId::titrated)))
    arm.titrated = zero_if_absent(vector(MetricId::titrated));
  if (FileReader::has_link(metrics, metric_dataset(MetricId::continued))) arm.continued = vector(MetricId::continued);
  read_price(reader, group, arm_path, arm);
  return arm;
}

void read_replicates(const FileReader& reader, const H5::H5File& file, std::int64_t subjects, ResultFile& result) {
  const bool has_replicates = file.attrExists("replicates");
  result.replicates = has_replicates ? reader.read_integer(file, "/", "replicates") : 1;
  if (result.replicates < 1)
    reader.fail("/ attribute replicates", "expected at least 1, found " + std::to_string(result.replicates));
  if (result.replicates == 1) {
    result.subjects_per_replicate = subjects;
    return;
  }
  result.subjects_per_replicate = reader.read_integer(file, "/", "subjects_per_replicate");
  if (result.subjects_per_replicate < 1 || result.replicates * result.subjects_per_replicate != subjects)
    reader.fail("/ attribute subjects_per_replicate", "expected replicates (" + std::to_string(result.replicates) +
                                                          ") x subjects_per_replicate (" +
                                                          std::to_string(result.subjects_per_replicate) +
                                                          ") = subjects_per_arm (" + std::to_string(subjects) + ")");
}

}  // namespace

ResultFile read_result_file(const std::string& path) {
  const QuietHdf5Errors quiet;
  const FileReader reader(path);
  try {
    const H5::H5File file = open_result_file(path);
    ResultFile result;
    result.path = path;
    result.layout_version = read_layout_version(reader, file);
    if (file.attrExists("scenario_name")) {
      const std::vector<std::string> names = reader.read_strings(file, "/", "scenario_name");
      if (!names.empty()) result.scenario_name = names.front();
    }
    const std::int64_t subjects = reader.read_integer(file, "/", "subjects_per_arm");
    if (subjects < 0)
      reader.fail("/ attribute subjects_per_arm", "expected a count, found " + std::to_string(subjects));
    read_replicates(reader, file, subjects, result);
    const std::vector<std::string> names = reader.read_strings(file, "/", "arms");
    if (names.empty()) reader.fail("/ attribute arms", "expected at least one arm name");
    std::optional<std::string> file_model;
    if (file.attrExists("model")) file_model = read_model_name(reader, file, "/");
    const H5::Group arms = reader.open_group(file, "", "arms");
    for (const std::string& name : names)
      result.arms.push_back(read_arm(reader, arms, name, static_cast<std::size_t>(subjects), file_model));
    return result;
  } catch (const H5::Exception& exception) {
    throw IoError("cannot read result file '" + path + "': " + exception.getDetailMsg());
  }
}

}  // namespace ketasim
