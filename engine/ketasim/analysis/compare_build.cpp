// Building the Comparison of `compare` (compare.hpp) from a ResultFile: the reference arm and the
// days, then one outcome line per statistic with each arm's value and interval, the paired
// differences with their bootstrap intervals, the trial replicates and the counts. Pure: no HDF5.

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <numeric>
#include <sstream>
#include <tuple>
#include <utility>

#include "ketasim/analysis/compare.hpp"
#include "ketasim/analysis/statistics.hpp"
#include "ketasim/base/errors.hpp"
#include "ketasim/base/format.hpp"

namespace ketasim {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
// A requested day matches an assessment when it is this close (assessments are whole minutes).
constexpr double kDayTolerance = 1e-6;

}  // namespace

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

// The finite values of a list of subjects.
std::vector<double> finite_values(const std::vector<double>& values, Subjects subjects) {
  std::vector<double> selected;
  selected.reserve(subjects.size());
  for (const std::size_t i : subjects)
    if (std::isfinite(values[i])) selected.push_back(values[i]);
  return selected;
}

// Kaplan-Meier on a list of subjects, each counted once: the curve with its band and the median's
// 95% CI (statistics.hpp); subjects without a finite time and event status are left out.
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
    specs.push_back(km_median_spec("time_to_relapse", "time to relapse, KM median [95% CI]", &ArmData::relapse_day,
                                   &ArmData::relapse_observed));
    return specs;
  }

  // The Kaplan-Meier median of a time to event (days) with its 95% CI, differenced between arms.
  EstimateSpec km_median_spec(const std::string& outcome, const std::string& label, std::vector<double> ArmData::*time,
                              std::vector<double> ArmData::*event) const {
    EstimateSpec spec = differenced(
        make_line(outcome, kNaN, "km_median", label, "d", 1, IntervalKind::ci95), "d",
        [this, time, event](std::size_t a, Subjects s) { return km_median_statistic(arm(a).*time, arm(a).*event, s); });
    spec.may_be_undefined = true;
    spec.interval = [this, time, event](std::size_t a, Subjects s) {
      const KaplanMeier km = km_of(arm(a).*time, arm(a).*event, s);
      return std::pair{km.median_lower, km.median_upper};
    };
    return spec;
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
                                  "): " + format_significant(kDefaultPricePerSessionUsd[0]) + "-" +
                                  format_significant(kDefaultPricePerSessionUsd[1]) + " USD per session assumed");
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

  bool relapse_at_visits() const {
    return std::all_of(file_.arms.begin(), file_.arms.end(),
                       [](const ArmData& a) { return !a.relapse_visits_day.empty(); });
  }

  // Relapse at visits (output.relapse), when every arm has its metrics: among the subjects at risk
  // at the first visit, the share relapsing by the last visit and the Kaplan-Meier median.
  std::vector<EstimateSpec> relapse_visit_specs() const {
    std::vector<EstimateSpec> specs;
    if (!relapse_at_visits()) return specs;
    EstimateSpec share = differenced(
        make_line("relapse_at_visits", kNaN, "percent", "relapsed at visits, of those at risk", "%", 1), "pp",
        [this](std::size_t a, Subjects s) { return rate_statistic(arm(a).relapse_visits_observed, s); });
    share.may_be_undefined = true;  // no subject at risk in a resample
    specs.push_back(std::move(share));
    specs.push_back(km_median_spec("time_to_relapse_at_visits", "time to relapse at visits, KM median [95% CI]",
                                   &ArmData::relapse_visits_day, &ArmData::relapse_visits_observed));
    return specs;
  }

  // Stop rules, when every arm has their metrics (a scenario with a stop rule writes them in every arm).
  std::vector<EstimateSpec> stop_specs() const {
    std::vector<EstimateSpec> specs;
    for (const ArmData& a : file_.arms)
      if (a.stopped_early.empty()) return specs;
    specs.push_back(differenced(make_line("stopped_early", kNaN, "percent", "stopped early by the stop rule", "%", 1),
                                "pp",
                                [this](std::size_t a, Subjects s) { return rate_statistic(arm(a).stopped_early, s); }));
    EstimateSpec sessions = differenced(
        make_line("sessions_to_response", kNaN, "median", "sessions to response, median (stopped subjects)", "sessions",
                  1),
        "sessions", [this](std::size_t a, Subjects s) { return median_statistic(arm(a).sessions_to_response, s); });
    sessions.may_be_undefined = true;  // an arm without a stop rule, or where none stopped
    specs.push_back(std::move(sessions));
    return specs;
  }

  // Titrations and given_if rules: the share titrated and the share continued, when the file has
  // their metrics (written in every arm when some arm has the rule).
  std::vector<EstimateSpec> design_specs() const {
    std::vector<EstimateSpec> specs;
    const auto has = [this](std::vector<double> ArmData::*values) {
      return std::none_of(file_.arms.begin(), file_.arms.end(), [&](const ArmData& a) { return (a.*values).empty(); });
    };
    if (has(&ArmData::titrated))
      specs.push_back(differenced(make_line("titrated", kNaN, "percent", "titrated to the new dose", "%", 1), "pp",
                                  [this](std::size_t a, Subjects s) { return rate_statistic(arm(a).titrated, s); }));
    if (has(&ArmData::continued)) {
      EstimateSpec continued =
          differenced(make_line("continued", kNaN, "percent", "continued (given_if met at its assessment)", "%", 1),
                      "pp", [this](std::size_t a, Subjects s) { return rate_statistic(arm(a).continued, s); });
      continued.may_be_undefined = true;  // an arm without a given_if rule
      specs.push_back(std::move(continued));
    }
    return specs;
  }

  void add_estimates() {
    std::vector<EstimateSpec> specs = rate_specs();
    for (std::vector<EstimateSpec> group :
         {response_duration_specs(), relapse_visit_specs(), stop_specs(), design_specs(), safety_specs(), cost_specs()})
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
    OutcomeLine visit_at_risk = make_line("time_to_relapse_at_visits", kNaN, "at_risk",
                                          "at risk of relapse at visits (first visit)", "subjects", 0);
    OutcomeLine visit_events =
        make_line("time_to_relapse_at_visits", kNaN, "relapses_observed", "relapses at visits", "subjects", 0);
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
      if (relapse_at_visits()) {
        visit_at_risk.arms.push_back(
            count(static_cast<double>(finite_values(arm(a).relapse_visits_day, solved).size())));
        const std::vector<double> observed = finite_values(arm(a).relapse_visits_observed, solved);
        visit_events.arms.push_back(count(std::accumulate(observed.begin(), observed.end(), 0.0)));
      }
      if (solved.size() < arm(a).subjects())
        comparison_.notes.push_back("arm " + arm(a).name + ": " + std::to_string(arm(a).subjects() - solved.size()) +
                                    " failed subjects excluded (from the arm, and from the pairs of its differences)");
    }
    for (OutcomeLine* line : {&at_risk, &events, &analysed, &failed, &excluded})
      comparison_.lines.push_back(std::move(*line));
    if (relapse_at_visits())
      for (OutcomeLine* line : {&visit_at_risk, &visit_events}) comparison_.lines.push_back(std::move(*line));
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

}  // namespace ketasim
