#include "ketasim/analysis/compare.hpp"

#include <H5Cpp.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <mutex>
#include <optional>
#include <sstream>
#include <thread>
#include <tuple>
#include <utility>

#include "ketasim/analysis/statistics.hpp"
#include "ketasim/base/errors.hpp"
#include "ketasim/base/format.hpp"
#include "ketasim/base/random_stream.hpp"
#include "ketasim/base/threads.hpp"
#include "ketasim/base/time.hpp"
#include "ketasim/output/result_reader.hpp"
#include "ketasim/run/run.hpp"
#include "ketasim/solve/results.hpp"

namespace ketasim {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
// A requested day matches an assessment when it is this close (assessments are whole minutes).
constexpr double kDayTolerance = 1e-6;
constexpr std::array<double, 2> kDefaultPriceUsd{kDefaultPricePerSessionUsd[0], kDefaultPricePerSessionUsd[1]};
// Blood pressure is the link of this name in the shipped PD module (models/modules/ketamine_pd.yaml):
// the file records no link roles, so its peak metric is found by the link's name.
constexpr const char* kBloodPressureLink = "sbp_change";

// ---- Reading the file ----------------------------------------------------------------------

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
    arm.price_per_session_usd = kDefaultPriceUsd;
    return;
  }
  const std::vector<double> price = reader.read_attribute_numbers(arm_group, arm_path, "price_per_session_usd", false);
  if (price.size() != 2 || !std::isfinite(price[0]) || !std::isfinite(price[1]) || price[0] < 0 || price[1] < 0)
    reader.fail(arm_path + " attribute price_per_session_usd",
                "expected two finite non-negative prices (low, high) in USD");
  arm.price_per_session_usd = {price[0], price[1]};
}

ArmData read_arm(const FileReader& reader, const H5::Group& arms, const std::string& name, std::size_t subjects) {
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
  const std::string sbp_name = metric_dataset(MetricId::peak_link, kBloodPressureLink);
  const NumberTable sbp = reader.read_numbers(metrics, metrics_path, sbp_name);
  if (sbp.rows != subjects)
    reader.fail(metrics_path + "/" + sbp_name,
                "expected " + std::to_string(subjects) + " rows, found " + std::to_string(sbp.rows));
  arm.peak_sbp_rise_mmhg = row_maxima(sbp);
  read_sessions(reader, metrics, group, arm_path, subjects, grid_end_h, arm);
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
    const H5::Group arms = reader.open_group(file, "", "arms");
    for (const std::string& name : names)
      result.arms.push_back(read_arm(reader, arms, name, static_cast<std::size_t>(subjects)));
    return result;
  } catch (const H5::Exception& exception) {
    throw IoError("cannot read result file '" + path + "': " + exception.getDetailMsg());
  }
}

// ---- Statistics -------------------------------------------------------------------------------

namespace {

std::vector<double> finite_values(const std::vector<double>& values, Subjects subjects) {
  std::vector<double> selected;
  selected.reserve(subjects.size());
  for (const std::size_t i : subjects)
    if (std::isfinite(values[i])) selected.push_back(values[i]);
  return selected;
}

}  // namespace

namespace {

constexpr std::uint8_t kNotCounted = 0, kZero = 1, kOne = 2;

}  // namespace

BinaryOutcome::BinaryOutcome(const std::vector<double>& zero_one, Subjects subjects) : code_(subjects.size()) {
  for (std::size_t j = 0; j < subjects.size(); ++j) {
    const double value = zero_one[subjects[j]];
    code_[j] = !std::isfinite(value) ? kNotCounted : value != 0.0 ? kOne : kZero;
  }
}

BinaryOutcome::Counts BinaryOutcome::counts(Multiplicities multiplicity) const {
  Counts counts;
  for (std::size_t j = 0; j < code_.size(); ++j) {
    const std::uint64_t count = multiplicity[j];
    counts.counted += code_[j] != kNotCounted ? count : 0;
    counts.ones += code_[j] == kOne ? count : 0;
  }
  return counts;
}

double BinaryOutcome::percent(Multiplicities multiplicity) const {
  const Counts c = counts(multiplicity);
  return c.counted > 0 ? 100.0 * static_cast<double>(c.ones) / static_cast<double>(c.counted) : kNaN;
}

GatheredValues::GatheredValues(const std::vector<double>& values, Subjects subjects)
    : value_(subjects.size()), finite_(subjects.size()) {
  for (std::size_t j = 0; j < subjects.size(); ++j) {
    const double value = values[subjects[j]];
    finite_[j] = std::isfinite(value) ? 1 : 0;
    value_[j] = finite_[j] ? value : 0.0;
  }
}

GatheredValues::Sums GatheredValues::sums(Multiplicities multiplicity) const {
  Sums sums;
  for (std::size_t j = 0; j < value_.size(); ++j) {
    sums.sum += static_cast<double>(multiplicity[j]) * value_[j];
    sums.counted += finite_[j] ? multiplicity[j] : 0;
  }
  return sums;
}

double GatheredValues::mean(Multiplicities multiplicity) const {
  const Sums s = sums(multiplicity);
  return s.counted > 0 ? s.sum / static_cast<double>(s.counted) : kNaN;
}

double rate_percent(const std::vector<double>& zero_one, Subjects subjects, Multiplicities multiplicity) {
  return BinaryOutcome(zero_one, subjects).percent(multiplicity);
}

double mean_of(const std::vector<double>& values, Subjects subjects, Multiplicities multiplicity) {
  return GatheredValues(values, subjects).mean(multiplicity);
}

SortedValues sorted_values_of(const std::vector<double>& values, Subjects subjects) {
  std::vector<double> selected(subjects.size());
  for (std::size_t j = 0; j < subjects.size(); ++j) selected[j] = values[subjects[j]];
  return SortedValues(selected);
}

SurvivalOrder survival_order_of(const std::vector<double>& time, const std::vector<double>& event, Subjects subjects) {
  std::vector<double> selected_time(subjects.size());
  std::vector<bool> selected_event(subjects.size());
  for (std::size_t j = 0; j < subjects.size(); ++j) {
    const std::size_t i = subjects[j];
    selected_time[j] = std::isfinite(event[i]) ? time[i] : kNaN;  // no event status: left out
    selected_event[j] = event[i] != 0.0;
  }
  return SurvivalOrder(selected_time, selected_event);
}

std::vector<std::uint32_t> counted_once(Subjects subjects) {
  return std::vector<std::uint32_t>(subjects.size(), 1);
}

namespace {

KaplanMeier km_of(const std::vector<double>& time, const std::vector<double>& event, Subjects subjects) {
  std::vector<double> times;
  std::vector<bool> events;
  for (const std::size_t i : subjects)
    if (std::isfinite(time[i]) && std::isfinite(event[i])) {
      times.push_back(time[i]);
      events.push_back(event[i] != 0.0);
    }
  return kaplan_meier(times, events);
}

// 0: one per core; never more threads than samples.
unsigned resolve_threads(unsigned requested, int samples) {
  const unsigned available = thread_count(requested);
  return std::max(1u, std::min(available, static_cast<unsigned>(std::max(samples, 1))));
}

}  // namespace

std::vector<std::size_t> kept_subjects(const std::vector<bool>& failed_arm, const std::vector<bool>& failed_reference) {
  std::vector<std::size_t> kept;
  for (std::size_t i = 0; i < failed_arm.size() && i < failed_reference.size(); ++i)
    if (!failed_arm[i] && !failed_reference[i]) kept.push_back(i);
  return kept;
}

void draw_multiplicities(std::size_t subjects, std::uint64_t seed, int sample,
                         std::vector<std::uint32_t>& multiplicity) {
  multiplicity.assign(subjects, 0);
  RandomStream stream(seed, static_cast<std::uint64_t>(sample), StreamPurpose::bootstrap);
  const double n = static_cast<double>(subjects);
  for (std::size_t draw = 0; draw < subjects; ++draw)
    ++multiplicity[std::min(subjects - 1, static_cast<std::size_t>(stream.uniform() * n))];
}

std::vector<BootstrapInterval> paired_bootstrap(std::size_t subjects, int samples, std::uint64_t seed, unsigned threads,
                                                const std::function<std::vector<double>(Multiplicities)>& differences) {
  std::vector<std::vector<double>> values_of_sample(static_cast<std::size_t>(std::max(samples, 0)));
  const unsigned used = resolve_threads(threads, samples);
  std::vector<std::vector<std::uint32_t>> multiplicities(used);  // one buffer per thread
  parallel_for(used, values_of_sample.size(), [&](unsigned thread, std::size_t b) {
    std::vector<std::uint32_t>& multiplicity = multiplicities[thread];
    draw_multiplicities(subjects, seed, static_cast<int>(b), multiplicity);
    values_of_sample[b] = differences(multiplicity);
  });
  const std::size_t statistics = values_of_sample.empty() ? 0 : values_of_sample.front().size();
  std::vector<BootstrapInterval> intervals;
  for (std::size_t k = 0; k < statistics; ++k) {
    std::vector<double> finite;
    std::int64_t skipped = 0;
    for (const std::vector<double>& values : values_of_sample) {
      if (std::isfinite(values[k]))
        finite.push_back(values[k]);
      else
        ++skipped;
    }
    intervals.push_back({quantile(finite, 0.025), quantile(finite, 0.975), skipped});
  }
  return intervals;
}

ReplicateOutcome replicate_outcome(const std::vector<double>& arm_response, const std::vector<bool>& arm_failed,
                                   const std::vector<double>& reference_response,
                                   const std::vector<bool>& reference_failed, std::int64_t replicates,
                                   std::int64_t subjects_per_replicate, double margin_pp) {
  ReplicateOutcome outcome;
  std::int64_t wins = 0, defined = 0;
  const auto per_replicate = static_cast<std::size_t>(subjects_per_replicate);
  for (std::int64_t r = 0; r < replicates; ++r) {
    std::vector<std::size_t> solved, kept;
    for (std::size_t i = static_cast<std::size_t>(r) * per_replicate;
         i < static_cast<std::size_t>(r + 1) * per_replicate; ++i) {
      if (!arm_failed[i]) solved.push_back(i);
      if (!arm_failed[i] && !reference_failed[i]) kept.push_back(i);
    }
    outcome.arm_rates.push_back(rate_percent(arm_response, solved, counted_once(solved)));
    const std::vector<std::uint32_t> once = counted_once(kept);
    const double difference = rate_percent(arm_response, kept, once) - rate_percent(reference_response, kept, once);
    if (std::isfinite(difference)) {
      ++defined;
      wins += difference > margin_pp ? 1 : 0;
    } else {
      ++outcome.undefined;
    }
  }
  outcome.p05 = quantile(outcome.arm_rates, 0.05);
  outcome.p50 = quantile(outcome.arm_rates, 0.50);
  outcome.p95 = quantile(outcome.arm_rates, 0.95);
  outcome.probability_better = defined > 0 ? static_cast<double>(wins) / static_cast<double>(defined) : kNaN;
  return outcome;
}

// ---- The comparison -----------------------------------------------------------------------------

std::vector<double> parse_days(const std::string& text) {
  std::vector<double> days;
  std::stringstream stream(text);
  std::string item;
  while (std::getline(stream, item, ',')) {
    std::string word;
    for (const char c : item)
      if (c != ' ') word += c;
    if (!word.empty() && word.back() == 'd') word.pop_back();
    std::size_t used = 0;
    double day = kNaN;
    try {
      day = std::stod(word, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (word.empty() || used != word.size() || !std::isfinite(day) || day < 0)
      throw Error(ExitCode::usage, "--at: '" + item + "' is not a day (expected e.g. 1d,15d,28d)");
    days.push_back(day);
  }
  if (days.empty()) throw Error(ExitCode::usage, "--at: no day given (expected e.g. 1d,15d,28d)");
  return days;
}

namespace {

std::string list_days(const std::vector<double>& days) {
  std::string text;
  for (const double day : days) text += (text.empty() ? "" : ", ") + format_significant(day);
  return text.empty() ? "none" : text;
}

// Column of each requested day in every arm's `*_at` metrics: [arm][day].
std::vector<std::vector<std::size_t>> assessment_columns(const ResultFile& file, const std::vector<double>& days) {
  std::vector<std::vector<std::size_t>> columns;
  for (const ArmData& arm : file.arms) {
    std::vector<std::size_t>& arm_columns = columns.emplace_back();
    for (const double day : days) {
      const auto found = std::find_if(arm.assessment_days.begin(), arm.assessment_days.end(),
                                      [&](double d) { return std::abs(d - day) <= kDayTolerance; });
      if (found == arm.assessment_days.end())
        throw Error(ExitCode::usage, "--at: day " + format_significant(day) + " is not an assessment of arm " +
                                         arm.name + " in " + file.path +
                                         " (assessment days: " + list_days(arm.assessment_days) + ")");
      arm_columns.push_back(static_cast<std::size_t>(found - arm.assessment_days.begin()));
    }
  }
  return columns;
}

std::vector<std::size_t> solved_subjects(const ArmData& arm) {
  return kept_subjects(arm.failed, arm.failed);
}

// One arm's statistic on a fixed list of subjects, evaluated on any multiplicities of that list
// (the list itself, counted_once, or a bootstrap resample). It holds its own copy of the values it
// needs, gathered or sorted once. Safe to call concurrently.
using PreparedStatistic = std::function<double(Multiplicities)>;

// Prepares an arm's statistic on a list of subjects (sorting once where it needs an order).
using Estimator = std::function<PreparedStatistic(std::size_t arm, Subjects)>;

PreparedStatistic rate_statistic(const std::vector<double>& zero_one, Subjects subjects) {
  return [outcome = BinaryOutcome(zero_one, subjects)](Multiplicities m) { return outcome.percent(m); };
}

PreparedStatistic mean_statistic(const std::vector<double>& values, Subjects subjects, double factor = 1.0) {
  return [gathered = GatheredValues(values, subjects), factor](Multiplicities m) { return gathered.mean(m) * factor; };
}

PreparedStatistic median_statistic(const std::vector<double>& values, Subjects subjects) {
  return [sorted = sorted_values_of(values, subjects)](Multiplicities m) { return sorted.quantile(m, 0.5); };
}

PreparedStatistic km_median_statistic(const std::vector<double>& time, const std::vector<double>& event,
                                      Subjects subjects) {
  return [order = survival_order_of(time, event, subjects)](Multiplicities m) { return order.median(m); };
}

// An outcome whose per-arm statistic is also compared between arms, with a bootstrap CI.
struct EstimateSpec {
  OutcomeLine line;  // without values
  Estimator estimate;
  std::function<std::pair<double, double>(std::size_t arm, Subjects)> interval;  // optional
  bool may_be_undefined = false;  // report the skipped bootstrap samples even when there are none
};

OutcomeLine make_line(std::string outcome, double day, std::string statistic, std::string label, std::string unit,
                      int decimals, IntervalKind interval = IntervalKind::none) {
  OutcomeLine line;
  line.outcome = std::move(outcome);
  line.day = day;
  line.statistic = std::move(statistic);
  line.label = std::move(label);
  line.unit = std::move(unit);
  line.decimals = decimals;
  line.interval = interval;
  return line;
}

EstimateSpec differenced(OutcomeLine line, std::string difference_unit, Estimator estimate) {
  line.has_difference = true;
  line.difference_unit = std::move(difference_unit);
  return {std::move(line), std::move(estimate), {}};
}

class ComparisonBuilder {
 public:
  ComparisonBuilder(const ResultFile& file, const CompareOptions& options) : file_(file), options_(options) {}

  Comparison build() {
    resolve_reference();
    resolve_days();
    add_estimates();
    add_replicates();
    add_counts();
    return std::move(comparison_);
  }

 private:
  const ArmData& arm(std::size_t a) const { return file_.arms[a]; }
  const ArmData& reference() const { return file_.arms[comparison_.reference]; }
  bool has_primary_day() const { return !comparison_.at_days.empty(); }

  void resolve_reference() {
    comparison_.file = file_.path;
    comparison_.scenario_name = file_.scenario_name;
    comparison_.layout_version = file_.layout_version;
    comparison_.bootstrap = options_.bootstrap;
    comparison_.seed = options_.seed;
    comparison_.replicates = file_.replicates;
    comparison_.margin_pp = options_.margin_pp;
    std::string names;
    for (const ArmData& a : file_.arms) {
      comparison_.arms.push_back(a.name);
      names += (names.empty() ? "" : ", ") + a.name;
    }
    if (options_.reference.empty()) return;
    const auto found = std::find(comparison_.arms.begin(), comparison_.arms.end(), options_.reference);
    if (found == comparison_.arms.end())
      throw Error(ExitCode::usage,
                  "--reference: no arm '" + options_.reference + "' in " + file_.path + " (arms: " + names + ")");
    comparison_.reference = static_cast<std::size_t>(found - comparison_.arms.begin());
  }

  void resolve_days() {
    comparison_.at_days = options_.at_days.empty() ? reference().assessment_days : options_.at_days;
    columns_ = assessment_columns(file_, comparison_.at_days);
    if (comparison_.at_days.empty())
      comparison_.notes.push_back(
          "no MADRS assessments in the file: no response or remission rates, no cost per responder");
  }

  const std::vector<double>& response(std::size_t a, std::size_t day) const {
    return arm(a).response_at[columns_[a][day]];
  }
  const std::vector<double>& remission(std::size_t a, std::size_t day) const {
    return arm(a).remission_at[columns_[a][day]];
  }

  std::vector<EstimateSpec> rate_specs() const {
    std::vector<EstimateSpec> specs;
    const auto& days = comparison_.at_days;
    for (std::size_t d = 0; d < days.size(); ++d)
      specs.push_back(differenced(
          make_line("response_rate", days[d], "percent", "response rate, day " + format_significant(days[d]), "%", 1),
          "pp", [this, d](std::size_t a, Subjects s) { return rate_statistic(response(a, d), s); }));
    for (std::size_t d = 0; d < days.size(); ++d)
      specs.push_back(differenced(
          make_line("remission_rate", days[d], "percent", "remission rate, day " + format_significant(days[d]), "%", 1),
          "pp", [this, d](std::size_t a, Subjects s) { return rate_statistic(remission(a, d), s); }));
    return specs;
  }

  std::vector<EstimateSpec> response_duration_specs() const {
    std::vector<EstimateSpec> specs;
    specs.push_back(
        differenced(make_line("days_in_response", kNaN, "mean", "days in response, mean", "d", 1), "d",
                    [this](std::size_t a, Subjects s) { return mean_statistic(arm(a).days_in_response, s); }));
    specs.push_back(
        differenced(make_line("days_in_response", kNaN, "median", "days in response, median", "d", 1), "d",
                    [this](std::size_t a, Subjects s) { return median_statistic(arm(a).days_in_response, s); }));
    EstimateSpec relapse = differenced(make_line("time_to_relapse", kNaN, "km_median",
                                                 "time to relapse, KM median [95% CI]", "d", 1, IntervalKind::ci95),
                                       "d", [this](std::size_t a, Subjects s) {
                                         return km_median_statistic(arm(a).relapse_day, arm(a).relapse_observed, s);
                                       });
    relapse.may_be_undefined = true;
    relapse.interval = [this](std::size_t a, Subjects s) {
      const KaplanMeier km = km_of(arm(a).relapse_day, arm(a).relapse_observed, s);
      return std::pair{km.median_lower, km.median_upper};
    };
    specs.push_back(std::move(relapse));
    return specs;
  }

  std::vector<EstimateSpec> safety_specs() {
    const bool burden = reference().dissociation_measure == DissociationMeasure::burden_score_h;
    for (const ArmData& a : file_.arms)
      if (a.dissociation_measure != reference().dissociation_measure)
        throw IoError(file_.path + ": arm " + a.name + " has " + (burden ? "no " : "") +
                      "metrics/dissociation_burden_score_h but arm " + reference().name +
                      (burden ? " has" : " has not"));
    const std::string outcome = burden ? "dissociation_burden_per_week" : "hours_above_dissociation_threshold_per_week";
    const std::string label = burden ? "dissociation burden per week" : "time above dissociation threshold per week";
    const std::string unit = burden ? "score*h/week" : "h/week";
    if (!burden)
      comparison_.notes.push_back(
          "metrics/dissociation_burden_score_h is absent: dissociation is reported as hours above "
          "the threshold per week (metrics/time_above_dissociation_h / grid weeks)");
    std::vector<EstimateSpec> specs;
    specs.push_back(
        differenced(make_line(outcome, kNaN, "mean", label + ", mean", unit, 2), unit,
                    [this](std::size_t a, Subjects s) { return mean_statistic(arm(a).dissociation_per_week, s); }));
    specs.push_back(with_spread(
        differenced(make_line(outcome, kNaN, "median", label + ", median [p5, p95]", unit, 2, IntervalKind::spread90),
                    unit,
                    [this](std::size_t a, Subjects s) { return median_statistic(arm(a).dissociation_per_week, s); }),
        &ArmData::dissociation_per_week));
    specs.push_back(with_spread(
        differenced(make_line("peak_sbp_rise", kNaN, "median", "peak SBP rise, median [p5, p95]", "mmHg", 1,
                              IntervalKind::spread90),
                    "mmHg",
                    [this](std::size_t a, Subjects s) { return median_statistic(arm(a).peak_sbp_rise_mmhg, s); }),
        &ArmData::peak_sbp_rise_mmhg));
    return specs;
  }

  EstimateSpec with_spread(EstimateSpec spec, std::vector<double> ArmData::*values) const {
    spec.interval = [this, values](std::size_t a, Subjects s) {
      const SortedValues sorted = sorted_values_of(arm(a).*values, s);
      const std::vector<std::uint32_t> once = counted_once(s);
      return std::pair{sorted.quantile(once, 0.05), sorted.quantile(once, 0.95)};
    };
    return spec;
  }

  // Total cost of the subjects with a response value at the primary day over their responders.
  PreparedStatistic cost_per_responder(std::size_t a, Subjects s, std::size_t price) const {
    const std::vector<double>& responded = response(a, comparison_.at_days.size() - 1);
    const std::vector<double>& sessions = arm(a).sessions;
    std::vector<double> cost(responded.size(), kNaN), response_with_cost(responded.size(), kNaN);
    for (const std::size_t i : s)
      if (std::isfinite(responded[i]) && std::isfinite(sessions[i])) {
        cost[i] = sessions[i] * arm(a).price_per_session_usd[price];
        response_with_cost[i] = responded[i];
      }
    return [costs = GatheredValues(cost, s), responders = BinaryOutcome(response_with_cost, s)](Multiplicities m) {
      const std::uint64_t ones = responders.counts(m).ones;
      return ones > 0 ? costs.sums(m).sum / static_cast<double>(ones) : kNaN;
    };
  }

  std::vector<EstimateSpec> cost_specs() {
    std::vector<EstimateSpec> specs;
    specs.push_back(differenced(make_line("sessions", kNaN, "mean", "sessions given, mean", "sessions", 2), "sessions",
                                [this](std::size_t a, Subjects s) { return mean_statistic(arm(a).sessions, s); }));
    std::string nominal_sessions, default_prices;
    for (const ArmData& a : file_.arms) {
      if (!a.sessions_from_file)
        nominal_sessions += (nominal_sessions.empty() ? "" : ", ") + a.name + " " +
                            format_significant(a.sessions.empty() ? 0.0 : a.sessions.front());
      if (!a.price_from_file) default_prices += (default_prices.empty() ? "" : ", ") + a.name;
    }
    if (!nominal_sessions.empty())
      comparison_.notes.push_back("metrics/sessions_given is absent: sessions given = nominal doses within the grid (" +
                                  nominal_sessions + ")");
    if (!default_prices.empty())
      comparison_.notes.push_back("no price_per_session_usd attribute (" + default_prices +
                                  "): " + format_significant(kDefaultPriceUsd[0]) + "-" +
                                  format_significant(kDefaultPriceUsd[1]) + " USD per session assumed");
    const std::array<std::string, 2> price_names{"low", "high"};
    for (std::size_t p = 0; p < 2; ++p)
      specs.push_back(differenced(make_line("cost_per_subject_" + price_names[p] + "_price", kNaN, "mean",
                                            "cost per subject at the " + price_names[p] + " price, mean", "USD", 0),
                                  "USD", [this, p](std::size_t a, Subjects s) {
                                    return mean_statistic(arm(a).sessions, s, arm(a).price_per_session_usd[p]);
                                  }));
    if (!has_primary_day()) return specs;
    const double day = comparison_.at_days.back();
    for (std::size_t p = 0; p < 2; ++p) {
      EstimateSpec& spec = specs.emplace_back(differenced(
          make_line("cost_per_responder_" + price_names[p] + "_price", day, "ratio",
                    "cost per responder at day " + format_significant(day) + ", " + price_names[p] + " price", "USD",
                    0),
          "USD", [this, p](std::size_t a, Subjects s) { return cost_per_responder(a, s, p); }));
      spec.may_be_undefined = true;
    }
    return specs;
  }

  void add_estimates() {
    std::vector<EstimateSpec> specs = rate_specs();
    for (std::vector<EstimateSpec> group : {response_duration_specs(), safety_specs(), cost_specs()})
      for (EstimateSpec& spec : group) specs.push_back(std::move(spec));

    const std::size_t arms = file_.arms.size();
    for (EstimateSpec& spec : specs) {
      spec.line.arms.resize(arms, Cell{kNaN, kNaN, kNaN});
      spec.line.differences.resize(arms, Cell{kNaN, kNaN, kNaN});
      for (std::size_t a = 0; a < arms; ++a) {
        const std::vector<std::size_t> solved = solved_subjects(arm(a));
        spec.line.arms[a].value = spec.estimate(a, solved)(counted_once(solved));
        if (spec.interval) std::tie(spec.line.arms[a].low, spec.line.arms[a].high) = spec.interval(a, solved);
      }
    }
    for (std::size_t a = 0; a < arms; ++a)
      if (a != comparison_.reference) add_differences(a, specs);
    for (EstimateSpec& spec : specs) comparison_.lines.push_back(std::move(spec.line));
  }

  void add_differences(std::size_t a, std::vector<EstimateSpec>& specs) const {
    const std::size_t ref = comparison_.reference;
    const std::vector<std::size_t> kept = kept_subjects(arm(a).failed, reference().failed);
    std::vector<PreparedStatistic> of_arm, of_reference;
    for (const EstimateSpec& spec : specs) {
      of_arm.push_back(spec.estimate(a, kept));
      of_reference.push_back(spec.estimate(ref, kept));
    }
    const auto differences = [&](Multiplicities m) {
      std::vector<double> values;
      for (std::size_t k = 0; k < specs.size(); ++k) values.push_back(of_arm[k](m) - of_reference[k](m));
      return values;
    };
    const std::vector<double> point = differences(counted_once(kept));
    const std::vector<BootstrapInterval> intervals =
        paired_bootstrap(kept.size(), options_.bootstrap, options_.seed, options_.threads, differences);
    for (std::size_t k = 0; k < specs.size(); ++k) {
      Cell& cell = specs[k].line.differences[a];
      cell.value = point[k];
      if (k < intervals.size()) {
        cell.low = intervals[k].low;
        cell.high = intervals[k].high;
        cell.skipped = specs[k].may_be_undefined || intervals[k].skipped > 0 ? intervals[k].skipped : -1;
      }
    }
  }

  void add_replicates() {
    if (file_.replicates <= 1 || !has_primary_day()) return;
    const std::size_t day = comparison_.at_days.size() - 1;
    const std::string day_text = format_significant(comparison_.at_days.back());
    OutcomeLine spread = make_line(
        "trial_response_rate", comparison_.at_days.back(), "median_over_replicates",
        "response rate at day " + day_text + " over " + std::to_string(file_.replicates) + " trials, median [p5, p95]",
        "%", 1, IntervalKind::spread90);
    OutcomeLine better = make_line("probability_better", comparison_.at_days.back(), "probability",
                                   "trials where the response rate at day " + day_text + " beats " + reference().name +
                                       " by > " + format_significant(options_.margin_pp) + " pp",
                                   "%", 1);
    for (std::size_t a = 0; a < file_.arms.size(); ++a) {
      const ReplicateOutcome outcome =
          replicate_outcome(response(a, day), arm(a).failed, response(comparison_.reference, day), reference().failed,
                            file_.replicates, file_.subjects_per_replicate, options_.margin_pp);
      spread.arms.push_back({outcome.p50, outcome.p05, outcome.p95});
      const bool is_reference = a == comparison_.reference;
      better.arms.push_back({is_reference ? kNaN : 100.0 * outcome.probability_better, kNaN, kNaN,
                             is_reference ? -1 : outcome.undefined});
    }
    comparison_.lines.push_back(std::move(spread));
    comparison_.lines.push_back(std::move(better));
  }

  void add_counts() {
    OutcomeLine analysed = make_line("subjects", kNaN, "count", "subjects analysed (solved)", "subjects", 0);
    OutcomeLine failed =
        make_line("failed_subjects", kNaN, "count", "failed subjects (metrics/status = 1)", "subjects", 0);
    OutcomeLine excluded = make_line("excluded_pairs", kNaN, "count",
                                     "pairs excluded from differences (failed in either arm)", "subjects", 0);
    OutcomeLine at_risk = make_line("time_to_relapse", kNaN, "responders_end_of_treatment",
                                    "responders at end of treatment (KM sample)", "subjects", 0);
    OutcomeLine events = make_line("time_to_relapse", kNaN, "relapses_observed", "relapses observed", "subjects", 0);
    const auto count = [](double n) { return Cell{n, kNaN, kNaN}; };
    for (std::size_t a = 0; a < file_.arms.size(); ++a) {
      const std::vector<std::size_t> solved = solved_subjects(arm(a));
      analysed.arms.push_back(count(static_cast<double>(solved.size())));
      failed.arms.push_back(count(static_cast<double>(arm(a).subjects() - solved.size())));
      excluded.arms.push_back(count(
          a == comparison_.reference
              ? kNaN
              : static_cast<double>(arm(a).subjects() - kept_subjects(arm(a).failed, reference().failed).size())));
      const KaplanMeier km = km_of(arm(a).relapse_day, arm(a).relapse_observed, solved);
      double relapses = 0.0;
      for (const int e : km.events) relapses += e;
      at_risk.arms.push_back(count(static_cast<double>(finite_values(arm(a).relapse_day, solved).size())));
      events.arms.push_back(count(relapses));
      if (solved.size() < arm(a).subjects())
        comparison_.notes.push_back("arm " + arm(a).name + ": " + std::to_string(arm(a).subjects() - solved.size()) +
                                    " failed subjects excluded (from the arm, and from the pairs of its differences)");
    }
    for (OutcomeLine* line : {&at_risk, &events, &analysed, &failed, &excluded})
      comparison_.lines.push_back(std::move(*line));
  }

  const ResultFile& file_;
  const CompareOptions& options_;
  Comparison comparison_;
  std::vector<std::vector<std::size_t>> columns_;  // [arm][requested day] -> assessment column
};

}  // namespace

Comparison compare_arms(const ResultFile& file, const CompareOptions& options) {
  if (file.arms.empty()) throw IoError(file.path + ": no arms to compare");
  if (options.bootstrap < 0) throw Error(ExitCode::usage, "--bootstrap must be 0 or more");
  return ComparisonBuilder(file, options).build();
}

// ---- Formatting ---------------------------------------------------------------------------------

OutputFormat parse_output_format(const std::string& name) {
  if (name == "table") return OutputFormat::table;
  if (name == "csv") return OutputFormat::csv;
  if (name == "markdown") return OutputFormat::markdown;
  if (name == "json") return OutputFormat::json;
  throw Error(ExitCode::usage, "--format: '" + name + "' is not one of table, csv, markdown, json");
}

namespace {

std::string fixed(double value, int decimals) {
  if (!std::isfinite(value)) return "n/a";
  char text[64];
  std::snprintf(text, sizeof text, "%.*f", decimals, value);
  return text;
}

std::string signed_fixed(double value, int decimals) {
  if (!std::isfinite(value)) return "n/a";
  char text[64];
  std::snprintf(text, sizeof text, "%+.*f", decimals, value);
  return text;
}

std::string interval_text(double low, double high, int decimals) {
  return "[" + fixed(low, decimals) + ", " + fixed(high, decimals) + "]";
}

std::string arm_cell(const OutcomeLine& line, const Cell& cell) {
  std::string text = fixed(cell.value, line.decimals);
  if (line.interval != IntervalKind::none) text += " " + interval_text(cell.low, cell.high, line.decimals);
  if (cell.skipped > 0) text += " (" + std::to_string(cell.skipped) + " undefined)";
  return text;
}

// Without bootstrap resamples (--bootstrap 0) a difference has no interval to show.
std::string difference_cell(const OutcomeLine& line, const Cell& cell, bool with_interval) {
  std::string text = signed_fixed(cell.value, line.decimals) + " " + line.difference_unit;
  if (with_interval) text += " " + interval_text(cell.low, cell.high, line.decimals);
  if (cell.skipped > 0) text += " (" + std::to_string(cell.skipped) + " samples skipped)";
  return text;
}

// The table of `table` and `markdown`: a label column, then one column per arm.
std::vector<std::vector<std::string>> wide_rows(const Comparison& c) {
  std::vector<std::vector<std::string>> rows;
  std::vector<std::string> header{"outcome"};
  for (const std::string& arm : c.arms) header.push_back(arm + (&arm == &c.arms[c.reference] ? " (reference)" : ""));
  rows.push_back(header);
  for (const OutcomeLine& line : c.lines) {
    std::vector<std::string>& row = rows.emplace_back();
    row.push_back(line.unit == "subjects" ? line.label : line.label + " (" + line.unit + ")");
    for (std::size_t a = 0; a < c.arms.size(); ++a) {
      const bool not_for_reference = line.outcome == "excluded_pairs" || line.statistic == "probability";
      row.push_back(a == c.reference && not_for_reference ? "-" : arm_cell(line, line.arms[a]));
    }
    if (!line.has_difference) continue;
    std::vector<std::string>& difference = rows.emplace_back();
    const bool with_interval = c.bootstrap > 0;
    difference.push_back("  difference vs " + c.arms[c.reference] + (with_interval ? " [95% CI]" : ""));
    for (std::size_t a = 0; a < c.arms.size(); ++a)
      difference.push_back(a == c.reference ? "-" : difference_cell(line, line.differences[a], with_interval));
  }
  return rows;
}

std::string bootstrap_sentence(const Comparison& c) {
  const std::string paired = "differences are paired (arm - " + c.arms[c.reference] + ", the same subjects)";
  if (c.bootstrap == 0) return paired + ", without confidence intervals (--bootstrap 0)";
  return paired + ", 95% CI: percentiles of " + std::to_string(c.bootstrap) +
         " bootstrap resamples of subjects, seed " + std::to_string(c.seed);
}

std::string heading(const Comparison& c) {
  std::string text = c.file + ": scenario " + (c.scenario_name.empty() ? "?" : c.scenario_name) + ", layout " +
                     std::to_string(c.layout_version) + "; reference arm " + c.arms[c.reference];
  if (c.replicates > 1) text += "; " + std::to_string(c.replicates) + " trial replicates";
  return text;
}

std::string format_table(const Comparison& c) {
  const auto rows = wide_rows(c);
  std::vector<std::size_t> widths(rows.front().size(), 0);
  for (const auto& row : rows)
    for (std::size_t k = 0; k < row.size(); ++k) widths[k] = std::max(widths[k], row[k].size());
  std::string text = heading(c) + "\n" + bootstrap_sentence(c) + "\n\n";
  for (const auto& row : rows) {
    std::string line;
    for (std::size_t k = 0; k < row.size(); ++k) {
      line += row[k];
      if (k + 1 < row.size()) line += std::string(widths[k] - row[k].size() + 2, ' ');
    }
    text += line + "\n";
  }
  for (const std::string& note : c.notes) text += "note: " + note + "\n";
  return text;
}

std::string format_markdown(const Comparison& c) {
  const auto rows = wide_rows(c);
  std::string text = "# Comparison of arms\n\n" + heading(c) + ".\n\n" + bootstrap_sentence(c) + ".\n\n";
  for (std::size_t r = 0; r < rows.size(); ++r) {
    text += "|";
    for (const std::string& cell : rows[r]) {
      std::string escaped;
      for (const char ch : cell) escaped += ch == '|' ? std::string("\\|") : std::string(1, ch);
      text += " " + escaped + " |";
    }
    text += "\n";
    if (r == 0) {
      text += "|";
      for (std::size_t k = 0; k < rows[r].size(); ++k) text += k == 0 ? "---|" : "--:|";
      text += "\n";
    }
  }
  if (!c.notes.empty()) text += "\n";
  for (const std::string& note : c.notes) text += "- " + note + "\n";
  return text;
}

// The tidy long form shared by csv and json.
struct TidyRow {
  std::string arm, outcome;
  double day;
  std::string statistic;
  double value, ci_low, ci_high;
  std::string unit;
  std::string exact_value = {};  // printed instead of `value` when set (a 64-bit seed)
};

std::vector<TidyRow> tidy_rows(const Comparison& c) {
  std::vector<TidyRow> rows;
  rows.push_back({"", "bootstrap", kNaN, "seed", static_cast<double>(c.seed), kNaN, kNaN, "", std::to_string(c.seed)});
  rows.push_back({"", "bootstrap", kNaN, "resamples", static_cast<double>(c.bootstrap), kNaN, kNaN, ""});
  if (c.replicates > 1) rows.push_back({"", "margin", kNaN, "pp", c.margin_pp, kNaN, kNaN, "pp"});
  for (const OutcomeLine& line : c.lines)
    for (std::size_t a = 0; a < c.arms.size(); ++a) {
      const Cell& cell = line.arms[a];
      const bool spread = line.interval == IntervalKind::spread90;
      const bool ci = line.interval == IntervalKind::ci95;
      if (!(line.statistic == "probability" && a == c.reference) &&
          !(line.outcome == "excluded_pairs" && a == c.reference))
        rows.push_back({c.arms[a], line.outcome, line.day, line.statistic, cell.value, ci ? cell.low : kNaN,
                        ci ? cell.high : kNaN, line.unit});
      if (spread) {
        rows.push_back({c.arms[a], line.outcome, line.day, "p05", cell.low, kNaN, kNaN, line.unit});
        rows.push_back({c.arms[a], line.outcome, line.day, "p95", cell.high, kNaN, kNaN, line.unit});
      }
      if (cell.skipped >= 0)
        rows.push_back({c.arms[a], line.outcome, line.day, line.statistic + "_undefined",
                        static_cast<double>(cell.skipped), kNaN, kNaN, "replicates"});
      if (!line.has_difference || a == c.reference) continue;
      const Cell& difference = line.differences[a];
      rows.push_back({c.arms[a], line.outcome, line.day, line.statistic + "_difference", difference.value,
                      difference.low, difference.high, line.difference_unit});
      if (difference.skipped >= 0)
        rows.push_back({c.arms[a], line.outcome, line.day, line.statistic + "_difference_skipped",
                        static_cast<double>(difference.skipped), kNaN, kNaN, "bootstrap samples"});
    }
  return rows;
}

std::string number_or(double value, const std::string& missing) {
  return std::isfinite(value) ? format_significant(value, 12) : missing;
}

std::string csv_field(const std::string& text) {
  if (text.find_first_of(",\"\n") == std::string::npos) return text;
  std::string quoted = "\"";
  for (const char ch : text) quoted += ch == '"' ? std::string("\"\"") : std::string(1, ch);
  return quoted + "\"";
}

std::string format_csv(const Comparison& c) {
  std::string text = "arm,outcome,day,statistic,value,ci_low,ci_high,unit\n";
  for (const TidyRow& row : tidy_rows(c))
    text += csv_field(row.arm) + "," + csv_field(row.outcome) + "," + number_or(row.day, "") + "," +
            csv_field(row.statistic) + "," + (row.exact_value.empty() ? number_or(row.value, "") : row.exact_value) +
            "," + number_or(row.ci_low, "") + "," + number_or(row.ci_high, "") + "," + csv_field(row.unit) + "\n";
  return text;
}

std::string json_string(const std::string& text) {
  std::string quoted = "\"";
  for (const char ch : text) {
    switch (ch) {
      case '"':
        quoted += "\\\"";
        break;
      case '\\':
        quoted += "\\\\";
        break;
      case '\n':
        quoted += "\\n";
        break;
      case '\t':
        quoted += "\\t";
        break;
      default:
        if (static_cast<unsigned char>(ch) < 0x20) {
          char escape[8];
          std::snprintf(escape, sizeof escape, "\\u%04x", static_cast<unsigned>(ch));
          quoted += escape;
        } else {
          quoted += ch;
        }
    }
  }
  return quoted + "\"";
}

std::string format_json(const Comparison& c) {
  std::string text = "{\n  \"file\": " + json_string(c.file) + ",\n  \"scenario\": " + json_string(c.scenario_name) +
                     ",\n  \"layout_version\": " + std::to_string(c.layout_version) + ",\n  \"arms\": [";
  for (std::size_t a = 0; a < c.arms.size(); ++a) text += (a ? ", " : "") + json_string(c.arms[a]);
  text += "],\n  \"reference\": " + json_string(c.arms[c.reference]) + ",\n  \"at_days\": [";
  for (std::size_t d = 0; d < c.at_days.size(); ++d) text += (d ? ", " : "") + number_or(c.at_days[d], "null");
  text += "],\n  \"bootstrap\": {\"resamples\": " + std::to_string(c.bootstrap) +
          ", \"seed\": " + std::to_string(c.seed) +
          ", \"interval\": \"percentile 95%\"},\n  \"replicates\": " + std::to_string(c.replicates) +
          ",\n  \"margin_pp\": " + number_or(c.margin_pp, "null") + ",\n  \"notes\": [";
  for (std::size_t n = 0; n < c.notes.size(); ++n) text += (n ? ", " : "") + json_string(c.notes[n]);
  text += "],\n  \"results\": [";
  const std::vector<TidyRow> rows = tidy_rows(c);
  for (std::size_t r = 0; r < rows.size(); ++r) {
    const TidyRow& row = rows[r];
    text += std::string(r ? "," : "") + "\n    {\"arm\": " + json_string(row.arm) +
            ", \"outcome\": " + json_string(row.outcome) + ", \"day\": " + number_or(row.day, "null") +
            ", \"statistic\": " + json_string(row.statistic) +
            ", \"value\": " + (row.exact_value.empty() ? number_or(row.value, "null") : row.exact_value) +
            ", \"ci_low\": " + number_or(row.ci_low, "null") + ", \"ci_high\": " + number_or(row.ci_high, "null") +
            ", \"unit\": " + json_string(row.unit) + "}";
  }
  text += "\n  ]\n}\n";
  return text;
}

}  // namespace

std::string format_comparison(const Comparison& comparison, OutputFormat format) {
  switch (format) {
    case OutputFormat::table:
      return format_table(comparison);
    case OutputFormat::csv:
      return format_csv(comparison);
    case OutputFormat::markdown:
      return format_markdown(comparison);
    case OutputFormat::json:
      return format_json(comparison);
  }
  return {};
}

}  // namespace ketasim
