// `ketasim compare`: Kaplan-Meier medians with R's confidence intervals (hand-computed), the
// paired bootstrap on cases that can be enumerated, pairwise exclusion of failed subjects, trial
// replicates, the output formats, and the reader on small HDF5 files written here.

#include <H5Cpp.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

#include "ketasim/analysis/compare.hpp"
#include "ketasim/analysis/statistics.hpp"
#include "ketasim/base/errors.hpp"
#include "ketasim/base/random_stream.hpp"
#include "ketasim/run/run.hpp"

using namespace ketasim;
namespace fs = std::filesystem;

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

std::vector<double> one_to(int n) {
  std::vector<double> values;
  for (int i = 1; i <= n; ++i) values.push_back(i);
  return values;
}

const OutcomeLine& line_of(const Comparison& c, const std::string& outcome, const std::string& statistic,
                           double day = kNaN) {
  const auto found = std::find_if(c.lines.begin(), c.lines.end(), [&](const OutcomeLine& line) {
    return line.outcome == outcome && line.statistic == statistic &&
           (std::isnan(day) ? std::isnan(line.day) : line.day == day);
  });
  REQUIRE(found != c.lines.end());
  return *found;
}

// An arm of `n` subjects with one assessment (day 28); every other outcome is a constant.
ArmData make_arm(const std::string& name, const std::vector<double>& response_day28) {
  const std::size_t n = response_day28.size();
  ArmData arm;
  arm.name = name;
  arm.assessment_days = {28.0};
  arm.response_at = {response_day28};
  arm.remission_at = {response_day28};
  arm.days_in_response.assign(n, 10.0);
  arm.relapse_day.assign(n, kNaN);
  arm.relapse_observed.assign(n, kNaN);
  arm.dissociation_per_week.assign(n, 1.0);
  arm.peak_sbp_rise_mmhg.assign(n, 10.0);
  arm.sessions.assign(n, 3.0);
  arm.failed.assign(n, false);
  return arm;
}

ResultFile make_file(std::vector<ArmData> arms) {
  ResultFile file;
  file.path = "in-memory.h5";
  file.scenario_name = "test";
  file.layout_version = 2;
  file.subjects_per_replicate = static_cast<std::int64_t>(arms.front().subjects());
  file.arms = std::move(arms);
  return file;
}

}  // namespace

// ---- Kaplan-Meier: Greenwood and the median's confidence interval ------------------------------

TEST_CASE("KM median CI, 10 events at 1..10: median 5.5, 95% CI [3, NA] as R's survfit", "[compare][statistics]") {
  // n_j = 11 - j at risk at time j, one event each: S(k) = (10 - k)/10, and Greenwood's sum
  // telescopes: sum_j 1/(n_j (n_j - 1)) = 1/(10 - k) - 1/10 = k / (10 (10 - k)).
  // Lower curve S·exp(-1.96·sqrt(gw)): k=2: 0.8·exp(-1.96·0.1581) = 0.587; k=3: 0.7·exp(-1.96·0.2070)
  // = 0.4665 < 0.5, so LCL = 3. Upper S·exp(+1.96·sqrt(gw)): k=9: 0.1·exp(1.96·0.9487) = 0.642 and
  // S(10) = 0 (NA): never reaches 0.5, UCL = NA. S(5) = 0.5 exactly: median (5 + 6)/2.
  const KaplanMeier km = kaplan_meier(one_to(10), std::vector<bool>(10, true));
  CHECK(km.greenwood[2] == Approx(3.0 / 70.0));
  CHECK(km.lower[2] == Approx(0.7 * std::exp(-1.959964 * std::sqrt(3.0 / 70.0))));
  CHECK(km.upper[8] == Approx(0.1 * std::exp(1.959964 * std::sqrt(0.9))));
  CHECK(std::isinf(km.greenwood[9]));
  CHECK(std::isnan(km.lower[9]));
  CHECK(km.median == 5.5);
  CHECK(km.median_lower == 3.0);
  CHECK(std::isnan(km.median_upper));
}

TEST_CASE("KM median CI, 20 events at 1..20: median 10.5, 95% CI [7, 16]", "[compare][statistics]") {
  // Greenwood after k events: k / (20 (20 - k)). Lower: k=6: 0.70·exp(-1.96·sqrt(6/280)) = 0.525,
  // k=7: 0.65·exp(-1.96·sqrt(7/260)) = 0.471 -> 7. Upper: k=15: 0.25·exp(1.96·sqrt(0.15)) = 0.534,
  // k=16: 0.20·exp(1.96·sqrt(0.2)) = 0.480 -> 16. S(10) = 0.5 exactly: median (10 + 11)/2.
  const KaplanMeier km = kaplan_meier(one_to(20), std::vector<bool>(20, true));
  CHECK(km.median == 10.5);
  CHECK(km.median_lower == 7.0);
  CHECK(km.median_upper == 16.0);
  CHECK(km.upper[13] == Approx(0.30 * std::exp(1.959964 * std::sqrt(14.0 / 120.0))));
}

TEST_CASE("KM median CI with censoring and ties", "[compare][statistics]") {
  // 1, 2, 2+, 3, 4+, 5: n = 6, 5, 3, 1 at the events 1, 2, 3, 5. Greenwood 1/30, +1/20 = 1/12,
  // +1/6 = 1/4, then infinite. Lower at 2: (2/3)·exp(-1.96·sqrt(1/12)) = 0.379 < 0.5 (at 1:
  // (5/6)·exp(-1.96·sqrt(1/30)) = 0.583) -> LCL 2. Upper capped at 1 until S = 0: UCL NA. Median 3.
  const KaplanMeier censored = kaplan_meier({1, 2, 2, 3, 4, 5}, {true, true, false, true, false, true});
  CHECK(censored.greenwood[0] == Approx(1.0 / 30.0));
  CHECK(censored.greenwood[1] == Approx(1.0 / 12.0));
  CHECK(censored.greenwood[2] == Approx(0.25));
  CHECK(censored.upper[2] == 1.0);
  CHECK(censored.median == 3.0);
  CHECK(censored.median_lower == 2.0);
  CHECK(std::isnan(censored.median_upper));
  // 1, 1, 2, 2+, 3: two events at 1 of 5 at risk: 2/(5·3) = 2/15, S = 3/5; at 2: 1/(3·2) -> 0.3,
  // S = 2/5. Median 2; lower at 1: 0.6·exp(-1.96·sqrt(2/15)) = 0.293 -> LCL 1.
  const KaplanMeier tied = kaplan_meier({1, 1, 2, 2, 3}, {true, true, true, false, true});
  CHECK(tied.events == std::vector<int>{2, 1, 1});
  CHECK(tied.greenwood[0] == Approx(2.0 / 15.0));
  CHECK(tied.greenwood[1] == Approx(0.3));
  CHECK(tied.median == 2.0);
  CHECK(tied.median_lower == 1.0);
}

TEST_CASE("survival_median follows R's rule: midpoint at exactly 0.5, NA entries skipped", "[compare][statistics]") {
  CHECK(survival_median({1, 2, 3}, {0.8, 0.5, 0.2}) == 2.5);
  CHECK(survival_median({1, 2, 3}, {0.8, 0.5, 0.5}) == 2.0);  // never below 0.5 after: the time itself
  CHECK(survival_median({1, 2, 3}, {kNaN, 0.9, 0.4}) == 3.0);
  CHECK(std::isnan(survival_median({1, 2}, {0.9, kNaN})));
  CHECK(survival_median({1, 2}, {0.9, 0.5 + 1e-9}) == 2.0);  // within sqrt(eps) of 0.5, no later drop
}

// ---- Statistics on subject lists ------------------------------------------------------------

TEST_CASE("rates, means and medians ignore NaN and count subjects as often as drawn", "[compare]") {
  const std::vector<double> response{1, 0, kNaN, 1};
  const std::vector<std::size_t> all{0, 1, 2, 3};
  const std::vector<std::uint32_t> once(4, 1), twice_the_first{2, 1, 0, 0}, only_nan{0, 0, 1, 0};
  CHECK(rate_percent(response, all, once) == Approx(200.0 / 3.0));
  CHECK(rate_percent(response, all, twice_the_first) == Approx(200.0 / 3.0));
  CHECK(std::isnan(rate_percent(response, all, only_nan)));
  const std::vector<double> values{1, 2, kNaN, 6};
  CHECK(mean_of(values, all, once) == 3.0);
  CHECK(mean_of(values, all, twice_the_first) == 4.0 / 3.0);
  CHECK(sorted_values_of(values, all).quantile(once, 0.5) == 2.0);
  CHECK(sorted_values_of(values, all).quantile(twice_the_first, 0.5) == 1.0);
  CHECK(std::isnan(sorted_values_of(values, all).quantile(only_nan, 0.5)));
  // KM over the subjects with a finite time and event (non-responders at end of treatment are NaN).
  const std::vector<double> time{1, kNaN, 2, 4, 5}, event{1, kNaN, 1, 1, 1};
  CHECK(survival_order_of(time, event, all).median(once) == 2.0);
  CHECK(survival_order_of(time, event, all).median(std::vector<std::uint32_t>{0, 5, 1, 2}) == 4.0);
}

// ---- Weighted statistics against the sort-based ones on the expanded resample ----------------

namespace {

// Per-subject values from a small set (ties everywhere), with NaNs; the same stream gives the same.
std::vector<double> tied_values_with_nan(std::uint64_t seed, std::size_t n, int distinct, double nan_share) {
  RandomStream stream(seed, 0, StreamPurpose::covariates);
  std::vector<double> values(n);
  for (double& value : values) {
    const double u = stream.uniform();
    value = u < nan_share ? kNaN : std::floor(stream.uniform() * distinct) - 2.0;
  }
  return values;
}

// The resample as the old bootstrap built it: each subject listed as often as drawn.
template <class Value>
std::vector<Value> expanded(const std::vector<Value>& values, const std::vector<std::size_t>& subjects,
                            const std::vector<std::uint32_t>& multiplicity) {
  std::vector<Value> list;
  for (std::size_t j = 0; j < subjects.size(); ++j) list.insert(list.end(), multiplicity[j], values[subjects[j]]);
  return list;
}

// Every other subject of 0..2n-1, so that list positions and subject indices differ.
std::vector<std::size_t> every_other(std::size_t n) {
  std::vector<std::size_t> subjects(n);
  for (std::size_t j = 0; j < n; ++j) subjects[j] = 2 * j + 1;
  return subjects;
}

// A textbook Kaplan-Meier on a list (no sorting trick): at each distinct event time t, n = subjects
// with time >= t, d = events at t, S *= 1 - d / n. Returns the event times and S after each.
std::pair<std::vector<double>, std::vector<double>> textbook_km(const std::vector<double>& time,
                                                                const std::vector<bool>& event) {
  std::vector<double> event_times;
  for (std::size_t i = 0; i < time.size(); ++i)
    if (event[i]) event_times.push_back(time[i]);
  std::sort(event_times.begin(), event_times.end());
  event_times.erase(std::unique(event_times.begin(), event_times.end()), event_times.end());
  std::vector<double> survival;
  double s = 1.0;
  for (const double t : event_times) {
    int at_risk = 0, events = 0;
    for (std::size_t i = 0; i < time.size(); ++i) {
      at_risk += time[i] >= t ? 1 : 0;
      events += time[i] == t && event[i] ? 1 : 0;
    }
    s *= 1.0 - static_cast<double>(events) / at_risk;
    survival.push_back(s);
  }
  return {event_times, survival};
}

}  // namespace

TEST_CASE("the multiplicities are the draws of the index-list bootstrap (same seed, same resamples)",
          "[compare][bootstrap]") {
  for (const std::size_t n : {1u, 2u, 7u, 500u}) {
    for (int sample = 0; sample < 20; ++sample) {
      RandomStream stream(kDefaultBootstrapSeed, static_cast<std::uint64_t>(sample), StreamPurpose::bootstrap);
      std::vector<std::uint32_t> listed(n, 0);
      for (std::size_t draw = 0; draw < n; ++draw)
        ++listed[std::min(n - 1, static_cast<std::size_t>(stream.uniform() * static_cast<double>(n)))];
      std::vector<std::uint32_t> multiplicity;
      draw_multiplicities(n, kDefaultBootstrapSeed, sample, multiplicity);
      CHECK(multiplicity == listed);
    }
  }
}

TEST_CASE("weighted type-7 quantile equals quantile() of the expanded resample (ties, NaNs, many seeds)",
          "[compare][statistics]") {
  for (std::uint64_t seed = 1; seed <= 60; ++seed) {
    const std::size_t n = 1 + seed % 37;
    const std::vector<double> values =
        tied_values_with_nan(seed, 2 * n + 2, 1 + static_cast<int>(seed % 6), seed % 3 == 0 ? 0.5 : 0.2);
    const std::vector<std::size_t> subjects = every_other(n);
    const SortedValues sorted = sorted_values_of(values, subjects);
    for (int sample = 0; sample < 10; ++sample) {
      std::vector<std::uint32_t> multiplicity;
      draw_multiplicities(n, seed, sample, multiplicity);
      const std::vector<double> resample = expanded(values, subjects, multiplicity);
      for (const double p : {0.0, 0.025, 0.05, 1.0 / 3.0, 0.5, 0.95, 0.975, 1.0}) {
        const double expected = quantile(resample, p);
        const double weighted = sorted.quantile(multiplicity, p);
        INFO("seed " << seed << " sample " << sample << " p " << p);
        CHECK((weighted == expected || (std::isnan(weighted) && std::isnan(expected))));
      }
    }
  }
}

TEST_CASE("weighted Kaplan-Meier equals kaplan_meier() and a textbook KM of the expanded resample",
          "[compare][statistics]") {
  std::int64_t medians_reached = 0;
  for (std::uint64_t seed = 1; seed <= 60; ++seed) {
    const std::size_t n = 1 + seed % 41;
    // Times 1..5 (ties), a share NaN (not responders at end of treatment); events 0/1, a few NaN.
    std::vector<double> time = tied_values_with_nan(seed, 2 * n + 2, 5, 0.25);
    for (double& t : time) t += 3.0;
    std::vector<double> event = tied_values_with_nan(seed + 1000, 2 * n + 2, 2, 0.05);
    for (double& e : event) e += 2.0;
    const std::vector<std::size_t> subjects = every_other(n);
    const SurvivalOrder order = survival_order_of(time, event, subjects);
    for (int sample = 0; sample < 10; ++sample) {
      std::vector<std::uint32_t> multiplicity;
      draw_multiplicities(n, seed, sample, multiplicity);
      std::vector<double> kept_time;
      std::vector<bool> kept_event;
      for (std::size_t j = 0; j < n; ++j)
        if (std::isfinite(time[subjects[j]]) && std::isfinite(event[subjects[j]])) {
          kept_time.insert(kept_time.end(), multiplicity[j], time[subjects[j]]);
          kept_event.insert(kept_event.end(), multiplicity[j], event[subjects[j]] != 0.0);
        }
      const KaplanMeier expected = kaplan_meier(kept_time, kept_event);
      const KaplanMeier weighted = order.curve(multiplicity);
      const auto [textbook_times, textbook_survival] = textbook_km(kept_time, kept_event);
      INFO("seed " << seed << " sample " << sample);
      CHECK(weighted.times == textbook_times);
      CHECK(weighted.survival == textbook_survival);
      CHECK(weighted.at_risk == expected.at_risk);
      CHECK(weighted.events == expected.events);
      CHECK(weighted.greenwood == expected.greenwood);
      const double median = order.median(multiplicity);
      CHECK((median == expected.median || (std::isnan(median) && std::isnan(expected.median))));
      medians_reached += std::isfinite(median) ? 1 : 0;
    }
  }
  CHECK(medians_reached > 100);  // the comparison is not only between NaNs
}

TEST_CASE("paired bootstrap: equal differences give a degenerate interval at that difference", "[compare][bootstrap]") {
  const std::vector<double> arm{5, 6, 7, 8, 9}, reference{2, 3, 4, 5, 6};  // every difference is 3
  const std::vector<std::size_t> kept{0, 1, 2, 3, 4};
  const auto intervals = paired_bootstrap(kept.size(), 500, 7, 0, [&](Multiplicities m) {
    return std::vector<double>{mean_of(arm, kept, m) - mean_of(reference, kept, m)};
  });
  REQUIRE(intervals.size() == 1);
  CHECK(intervals[0].low == Approx(3.0));
  CHECK(intervals[0].high == Approx(3.0));
  CHECK(intervals[0].skipped == 0);
}

TEST_CASE("paired bootstrap: two subjects, differences 1 and 5, give [1, 5]", "[compare][bootstrap]") {
  // Samples of two subjects: (0,0) mean 1 with probability 1/4, mixed mean 3 with 1/2, (1,1) mean
  // 5 with 1/4. The 2.5% and 97.5% percentiles fall inside the first and last quarter: 1 and 5.
  // A statistic that is undefined for the sample (0,0) is skipped, and exactly those are counted.
  const std::vector<double> arm{11, 25}, reference{10, 20};
  const std::vector<std::size_t> kept{0, 1};
  std::atomic<std::int64_t> only_first = 0;
  const auto intervals = paired_bootstrap(kept.size(), 2000, kDefaultBootstrapSeed, 2, [&](Multiplicities m) {
    const bool undefined = m[0] == 2;
    only_first += undefined ? 1 : 0;
    return std::vector<double>{mean_of(arm, kept, m) - mean_of(reference, kept, m), undefined ? kNaN : 1.0};
  });
  CHECK(intervals[0].low == 1.0);
  CHECK(intervals[0].high == 5.0);
  CHECK(intervals[0].skipped == 0);
  CHECK(intervals[1].skipped == only_first.load());
  CHECK(only_first.load() > 400);  // about 2000/4
  CHECK(only_first.load() < 600);
}

TEST_CASE("paired bootstrap: the same seed gives the same samples, another seed others", "[compare][bootstrap]") {
  std::vector<double> values;
  for (int i = 0; i < 30; ++i) values.push_back(std::sin(i) * 10);
  std::vector<std::size_t> kept(values.size());
  for (std::size_t i = 0; i < kept.size(); ++i) kept[i] = i;
  const auto run = [&](std::uint64_t seed) {
    return paired_bootstrap(kept.size(), 300, seed, 0,
                            [&](Multiplicities m) { return std::vector<double>{mean_of(values, kept, m)}; })[0];
  };
  CHECK(run(1).low == run(1).low);
  CHECK(run(1).high == run(1).high);
  CHECK(run(1).low != run(2).low);
}

// ---- The comparison -------------------------------------------------------------------------

TEST_CASE("a subject failed in either arm drops from that pair's differences, not from the other arm", "[compare]") {
  ArmData a = make_arm("a", {1, 0, 0, 1});
  ArmData b = make_arm("b", {1, 1, 0, 0});
  b.failed[3] = true;  // subject 3: its response is 0 in b, 1 in a
  b.response_at[0][3] = kNaN;
  CompareOptions options;
  options.bootstrap = 200;
  const Comparison c = compare_arms(make_file({a, b}), options);
  const OutcomeLine& rate = line_of(c, "response_rate", "percent", 28.0);
  CHECK(rate.arms[0].value == 50.0);  // a: its own 4 subjects
  CHECK(rate.arms[1].value == Approx(200.0 / 3.0));
  // Pairs 0, 1, 2: a 1/3, b 2/3 -> +33.3 pp (with subject 3 kept in a it would be +16.7).
  CHECK(rate.differences[1].value == Approx(100.0 / 3.0));
  CHECK(line_of(c, "excluded_pairs", "count").arms[1].value == 1.0);
  CHECK(line_of(c, "failed_subjects", "count").arms[1].value == 1.0);
  CHECK(line_of(c, "failed_subjects", "count").arms[0].value == 0.0);
}

TEST_CASE("cost per responder is the arm's total cost over its responders at the primary day", "[compare]") {
  ArmData a = make_arm("a", {1, 0, 0, 0});
  ArmData b = make_arm("b", {1, 1, 0, 0});
  b.sessions.assign(4, 6.0);
  b.price_per_session_usd = {100.0, 200.0};
  CompareOptions options;
  options.bootstrap = 100;
  const Comparison c = compare_arms(make_file({a, b}), options);
  // a: 4 subjects x 3 sessions x 400 USD / 1 responder; b: 4 x 6 x 100 / 2.
  CHECK(line_of(c, "cost_per_responder_low_price", "ratio", 28.0).arms[0].value == 4800.0);
  CHECK(line_of(c, "cost_per_responder_low_price", "ratio", 28.0).arms[1].value == 1200.0);
  CHECK(line_of(c, "cost_per_subject_high_price", "mean").arms[1].value == 1200.0);
  CHECK(line_of(c, "cost_per_subject_high_price", "mean").differences[1].value == 1200.0 - 2400.0);
}

TEST_CASE("compare --bootstrap 0: differences without an interval, and the heading says so", "[compare][bootstrap]") {
  CompareOptions options;
  options.bootstrap = 0;
  const Comparison c = compare_arms(make_file({make_arm("a", {1, 0, 0, 1}), make_arm("b", {1, 1, 0, 1})}), options);
  CHECK(line_of(c, "response_rate", "percent", 28.0).differences[1].value == 25.0);
  const std::string table = format_comparison(c, OutputFormat::table);
  CHECK(table.find("without confidence intervals (--bootstrap 0)") != std::string::npos);
  CHECK(table.find("percentiles of 0 bootstrap") == std::string::npos);
  CHECK(table.find(" pp [") == std::string::npos);  // no interval after a difference
  CHECK(table.find("+25.0 pp") != std::string::npos);
  CHECK(table.find("difference vs a [95% CI]") == std::string::npos);
  CHECK(table.find("difference vs a ") != std::string::npos);
}

TEST_CASE("trial replicates: spread of the rates and the probability of beating the reference",
          "[compare][replicates]") {
  // 4 replicates of 2 subjects. Rates (%) of the reference: 0, 50, 50, 100; of the arm: 50, 100,
  // 50, 100. Differences 50, 50, 0, 0: with margin 0 the arm wins 2 of 4; with margin 60 none.
  const std::vector<double> reference{0, 0, 1, 0, 0, 1, 1, 1};
  const std::vector<double> arm{1, 0, 1, 1, 1, 0, 1, 1};
  const std::vector<bool> none(8, false);
  const ReplicateOutcome outcome = replicate_outcome(arm, none, reference, none, 4, 2, 0.0);
  CHECK(outcome.arm_rates == std::vector<double>{50, 100, 50, 100});
  CHECK(outcome.probability_better == 0.5);
  CHECK(outcome.p50 == 75.0);
  CHECK(outcome.p05 == Approx(50.0));
  CHECK(replicate_outcome(arm, none, reference, none, 4, 2, 60.0).probability_better == 0.0);
  CHECK(replicate_outcome(reference, none, arm, none, 4, 2, -10.0).probability_better == 0.5);
  // Both subjects of replicate 0 failed in the reference: no pair left, the replicate is left out
  // of the probability (1 win in the 3 others) and counted as undefined.
  std::vector<bool> failed = none;
  failed[0] = failed[1] = true;
  const ReplicateOutcome partial = replicate_outcome(arm, none, reference, failed, 4, 2, 0.0);
  CHECK(partial.undefined == 1);
  CHECK(partial.probability_better == Approx(1.0 / 3.0));
}

TEST_CASE("bootstrap intervals are the same on 1, 2 and 3 threads", "[compare][bootstrap]") {
  // Two arms of 300 subjects with every kind of statistic varying (ties, NaNs, a failed pair).
  const auto random_arm = [](const std::string& name, std::uint64_t seed) {
    std::vector<double> response = tied_values_with_nan(seed, 300, 2, 0.1);
    for (double& r : response) r = std::isnan(r) ? r : std::abs(r + 1.0) < 0.5 ? 1.0 : 0.0;
    ArmData arm = make_arm(name, response);
    arm.days_in_response = tied_values_with_nan(seed + 1, 300, 30, 0.0);
    arm.relapse_day = tied_values_with_nan(seed + 2, 300, 20, 0.4);
    for (double& day : arm.relapse_day) day += 3.0;
    arm.relapse_observed = tied_values_with_nan(seed + 3, 300, 2, 0.0);
    for (double& observed : arm.relapse_observed) observed += 2.0;
    arm.dissociation_per_week = tied_values_with_nan(seed + 4, 300, 1000, 0.0);
    for (double& burden : arm.dissociation_per_week) burden = burden / 7.0 + 3.0;  // not whole numbers
    arm.peak_sbp_rise_mmhg = tied_values_with_nan(seed + 5, 300, 15, 0.05);
    return arm;
  };
  ArmData b = random_arm("b", 200);
  b.failed[17] = true;
  const ResultFile file = make_file({random_arm("a", 100), b});
  const auto intervals_on = [&](unsigned threads) {
    CompareOptions options;
    options.bootstrap = 400;
    options.threads = threads;
    std::vector<double> bounds;
    for (const OutcomeLine& line : compare_arms(file, options).lines)
      for (const Cell& cell : line.differences)
        bounds.insert(bounds.end(), {cell.value, cell.low, cell.high, static_cast<double>(cell.skipped)});
    return bounds;
  };
  const std::vector<double> one = intervals_on(1);
  std::size_t finite = 0;
  for (const double bound : one) finite += std::isfinite(bound) ? 1 : 0;
  CHECK(finite > 40);
  for (const unsigned threads : {2u, 3u}) {
    const std::vector<double> other = intervals_on(threads);
    REQUIRE(other.size() == one.size());
    for (std::size_t k = 0; k < one.size(); ++k) {
      INFO("threads " << threads << " bound " << k);
      CHECK((other[k] == one[k] || (std::isnan(other[k]) && std::isnan(one[k]))));
    }
  }
}

TEST_CASE("replicate lines appear when the file has replicates", "[compare][replicates]") {
  ResultFile file = make_file({make_arm("a", {0, 0, 1, 0, 0, 1, 1, 1}), make_arm("b", {1, 0, 1, 1, 1, 0, 1, 1})});
  file.replicates = 4;
  file.subjects_per_replicate = 2;
  CompareOptions options;
  options.bootstrap = 50;
  const Comparison c = compare_arms(file, options);
  CHECK(line_of(c, "probability_better", "probability", 28.0).arms[1].value == 50.0);
  CHECK(line_of(c, "trial_response_rate", "median_over_replicates", 28.0).arms[0].value == 50.0);
}

TEST_CASE("days and arms are checked: errors name what is available", "[compare][errors]") {
  CHECK(parse_days("1d,15d, 28 d,41") == std::vector<double>{1, 15, 28, 41});
  CHECK_THROWS_AS(parse_days("1d,x"), Error);
  CHECK_THROWS_AS(parse_days(""), Error);
  const ResultFile file = make_file({make_arm("a", {1, 0}), make_arm("b", {1, 1})});
  CompareOptions options;
  options.at_days = {15};
  try {
    compare_arms(file, options);
    FAIL("day 15 accepted");
  } catch (const Error& error) {
    CHECK(error.code() == ExitCode::usage);
    CHECK(std::string(error.what()).find("assessment days: 28") != std::string::npos);
  }
  options.at_days.clear();
  options.reference = "c";
  try {
    compare_arms(file, options);
    FAIL("arm c accepted");
  } catch (const Error& error) {
    CHECK(error.code() == ExitCode::usage);
    CHECK(std::string(error.what()).find("arms: a, b") != std::string::npos);
  }
  options.reference = "b";
  const Comparison c = compare_arms(file, options);
  CHECK(c.reference == 1);
  CHECK(line_of(c, "response_rate", "percent", 28.0).differences[0].value == -50.0);
}

// ---- Formats --------------------------------------------------------------------------------

TEST_CASE("output formats: tidy csv, json structure, aligned table, markdown", "[compare][format]") {
  ArmData once = make_arm("once", {1, 0, 0, 0});
  ArmData twice = make_arm("twice", {1, 1, 0, 0});
  CompareOptions options;
  options.bootstrap = 100;
  options.seed = 18446744073709551615ULL;  // the largest seed survives as an integer
  const Comparison c = compare_arms(make_file({once, twice}), options);

  const std::string csv = format_comparison(c, OutputFormat::csv);
  CHECK(csv.rfind("arm,outcome,day,statistic,value,ci_low,ci_high,unit\n", 0) == 0);
  CHECK(csv.find("\ntwice,response_rate,28,percent_difference,25,") != std::string::npos);
  CHECK(csv.find("\nonce,response_rate,28,percent,25,,,%\n") != std::string::npos);
  CHECK(csv.find(",bootstrap,,seed,18446744073709551615,") != std::string::npos);

  const std::string json = format_comparison(c, OutputFormat::json);
  CHECK(json.find("\"reference\": \"once\"") != std::string::npos);
  CHECK(json.find("\"arms\": [\"once\", \"twice\"]") != std::string::npos);
  CHECK(json.find("\"seed\": 18446744073709551615") != std::string::npos);
  CHECK(json.find("{\"arm\": \"twice\", \"outcome\": \"response_rate\", \"day\": 28, \"statistic\": "
                  "\"percent_difference\", \"value\": 25,") != std::string::npos);
  CHECK(json.find("nan") == std::string::npos);  // NaN is written as null
  CHECK(std::count(json.begin(), json.end(), '{') == std::count(json.begin(), json.end(), '}'));
  CHECK(std::count(json.begin(), json.end(), '[') == std::count(json.begin(), json.end(), ']'));

  const std::string table = format_comparison(c, OutputFormat::table);
  CHECK(table.find("response rate, day 28 (%)") != std::string::npos);
  CHECK(table.find("+25.0 pp [") != std::string::npos);
  CHECK(table.find("seed 18446744073709551615") != std::string::npos);

  const std::string markdown = format_comparison(c, OutputFormat::markdown);
  CHECK(markdown.find("| outcome | once (reference) | twice |\n|---|--:|--:|") != std::string::npos);
  CHECK_THROWS_AS(parse_output_format("xml"), Error);
}

// ---- Reading files ------------------------------------------------------------------------------

namespace {

class TemporaryFolder {
 public:
  TemporaryFolder() : path_(fs::temp_directory_path() / ("ketasim-compare-test-" + std::to_string(::getpid()))) {
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TemporaryFolder() {
    std::error_code ignored;
    fs::remove_all(path_, ignored);
  }
  TemporaryFolder(const TemporaryFolder&) = delete;
  TemporaryFolder& operator=(const TemporaryFolder&) = delete;
  std::string operator/(const std::string& name) const { return (path_ / name).string(); }

 private:
  fs::path path_;
};

void write_doubles(const H5::Group& group, const std::string& name, const std::vector<hsize_t>& shape,
                   const std::vector<double>& values) {
  const H5::DataSet dataset =
      group.createDataSet(name, H5::PredType::IEEE_F64LE, H5::DataSpace(static_cast<int>(shape.size()), shape.data()));
  if (!values.empty()) dataset.write(values.data(), H5::PredType::NATIVE_DOUBLE);
}

template <class Number>
void write_number_attribute(const H5::H5Object& object, const char* name, const H5::PredType& type, Number value) {
  object.createAttribute(name, type, H5::DataSpace(H5S_SCALAR)).write(type, &value);
}

struct FileShape {
  int layout_version = 3;
  bool with_burden = true;  // layout 3 additions: burden, sessions, prices, replicates
  bool with_days_in_response = true;
  std::string model = "ketamine_venous";  // root attribute `model` ("": none)
  std::string arm_model = "";             // each arm's attribute `model` ("": none, as before arms had their own)
};

// Two arms of 4 subjects in 2 replicates, one assessment (day 28 -> [N] shapes) and one dose.
void write_result(const std::string& path, const FileShape& shape) {
  H5::H5File file(path, H5F_ACC_TRUNC);
  write_number_attribute(file, "layout_version", H5::PredType::NATIVE_INT32, shape.layout_version);
  write_number_attribute(file, "subjects_per_arm", H5::PredType::NATIVE_INT64, std::int64_t{4});
  if (shape.with_burden) {
    write_number_attribute(file, "replicates", H5::PredType::NATIVE_INT64, std::int64_t{2});
    write_number_attribute(file, "subjects_per_replicate", H5::PredType::NATIVE_INT64, std::int64_t{2});
  }
  H5::StrType text(H5::PredType::C_S1, H5T_VARIABLE);
  if (!shape.model.empty()) file.createAttribute("model", text, H5::DataSpace(H5S_SCALAR)).write(text, shape.model);
  const std::vector<const char*> names{"second", "first"};  // scenario order, not alphabetical
  const hsize_t arm_count = names.size();
  file.createAttribute("arms", text, H5::DataSpace(1, &arm_count)).write(text, names.data());
  const H5::Group arms = file.createGroup("arms");
  for (std::size_t a = 0; a < names.size(); ++a) {
    const H5::Group arm = arms.createGroup(names[a]);
    if (!shape.arm_model.empty())
      arm.createAttribute("model", text, H5::DataSpace(H5S_SCALAR)).write(text, shape.arm_model);
    write_doubles(arm, "time_h", {3}, {0.0, 168.0, 336.0});  // 2 weeks
    write_doubles(arm, "assessments_h", {1}, {28.0 * 24.0});
    const H5::Group doses = arm.createGroup("doses");
    write_doubles(doses, "time_h", {3}, {0.0, 100.0, 400.0});  // the last after the grid
    const H5::Group metrics = arm.createGroup("metrics");
    const std::int8_t status[4] = {0, 0, 0, static_cast<std::int8_t>(a == 0 ? 1 : 0)};
    const hsize_t four = 4;
    metrics.createDataSet("status", H5::PredType::STD_I8LE, H5::DataSpace(1, &four))
        .write(status, H5::PredType::NATIVE_INT8);
    const double base = static_cast<double>(a);
    write_doubles(metrics, "response_at", {4}, {1, 0, base, kNaN});
    write_doubles(metrics, "remission_at", {4}, {1, 0, 0, kNaN});
    if (shape.with_days_in_response) write_doubles(metrics, "days_in_response", {4}, {1, 2, 3, kNaN});
    write_doubles(metrics, "relapse_day", {4}, {5, kNaN, 7, kNaN});
    write_doubles(metrics, "relapse_observed", {4}, {1, kNaN, 0, kNaN});
    write_doubles(metrics, "time_above_dissociation_h", {4}, {2, 4, 6, kNaN});
    write_doubles(metrics, "peak_sbp_change", {4, 2}, {1, 3, 5, 2, kNaN, 4, kNaN, kNaN});
    if (shape.with_burden) {
      write_doubles(metrics, "dissociation_burden_score_h", {4}, {10, 20, 30, kNaN});
      write_doubles(metrics, "sessions_given", {4}, {1, 2, 2, kNaN});
      const double price[2] = {100.0 + base, 300.0};
      const hsize_t two = 2;
      arm.createAttribute("price_per_session_usd", H5::PredType::IEEE_F64LE, H5::DataSpace(1, &two))
          .write(H5::PredType::NATIVE_DOUBLE, price);
    }
  }
}

std::string io_error_of(const std::string& path) {
  try {
    read_result_file(path);
  } catch (const IoError& error) {
    return error.what();
  }
  return "no error";
}

}  // namespace

TEST_CASE("the reader: layout 3 additions, [N] shapes, scenario order of the arms", "[compare][hdf5]") {
  const TemporaryFolder folder;
  const std::string path = folder / "v3.h5";
  write_result(path, {});
  const ResultFile file = read_result_file(path);
  CHECK(file.layout_version == 3);
  CHECK(file.replicates == 2);
  CHECK(file.subjects_per_replicate == 2);
  REQUIRE(file.arms.size() == 2);
  CHECK(file.arms[0].name == "second");
  CHECK(file.arms[0].failed == std::vector<bool>{false, false, false, true});
  CHECK(file.arms[1].failed == std::vector<bool>{false, false, false, false});
  CHECK(file.arms[0].assessment_days == std::vector<double>{28.0});
  CHECK(file.arms[1].response_at[0][2] == 1.0);
  CHECK(file.arms[0].dissociation_measure == DissociationMeasure::burden_score_h);
  CHECK(file.arms[0].dissociation_per_week[1] == 10.0);  // 20 score*h over 2 weeks
  CHECK(file.arms[0].peak_sbp_rise_mmhg[0] == 3.0);      // max over the doses
  CHECK(file.arms[0].peak_sbp_rise_mmhg[2] == 4.0);      // NaN doses ignored
  CHECK(std::isnan(file.arms[0].peak_sbp_rise_mmhg[3]));
  CHECK(file.arms[0].sessions[1] == 2.0);
  CHECK(file.arms[1].price_per_session_usd == std::array<double, 2>{101.0, 300.0});
}

TEST_CASE("the reader: layout 2 fallbacks for dissociation, sessions and prices", "[compare][hdf5]") {
  const TemporaryFolder folder;
  const std::string path = folder / "v2.h5";
  write_result(path, {.layout_version = 2, .with_burden = false});
  const ResultFile file = read_result_file(path);
  CHECK(file.replicates == 1);
  const ArmData& arm = file.arms[0];
  CHECK(arm.dissociation_measure == DissociationMeasure::hours_above_threshold);
  CHECK(arm.dissociation_per_week[2] == 3.0);          // 6 h over 2 weeks
  CHECK(arm.sessions == std::vector<double>(4, 2.0));  // doses at 0 and 100 h within 336 h
  CHECK(!arm.sessions_from_file);
  CHECK(!arm.price_from_file);
  CHECK(arm.price_per_session_usd == std::array<double, 2>{400.0, 800.0});
  CompareOptions options;
  options.bootstrap = 20;
  const Comparison c = compare_arms(file, options);
  CHECK(line_of(c, "hours_above_dissociation_threshold_per_week", "mean").unit == "h/week");
  CHECK(std::any_of(c.notes.begin(), c.notes.end(), [](const std::string& note) {
    return note.find("dissociation_burden_score_h is absent") != std::string::npos;
  }));
}

TEST_CASE("the reader: malformed files give IoErrors naming the file and the object", "[compare][hdf5][errors]") {
  const TemporaryFolder folder;
  CHECK(io_error_of(folder / "absent.h5").find("absent.h5': no such file") != std::string::npos);
  { std::ofstream(folder / "text.h5") << "not hdf5"; }
  CHECK(io_error_of(folder / "text.h5").find("not an HDF5 file") != std::string::npos);
  write_result(folder / "v4.h5", {.layout_version = 4});
  CHECK(io_error_of(folder / "v4.h5")
            .find("layout_version: this ketasim reads layout versions 2 and 3, the file has 4") != std::string::npos);
  write_result(folder / "partial.h5", {.with_days_in_response = false});
  CHECK(io_error_of(folder / "partial.h5").find("partial.h5: /arms/second/metrics/days_in_response: dataset missing") !=
        std::string::npos);
}

TEST_CASE("the reader finds blood pressure by the link role of the card each arm simulated", "[compare][hdf5]") {
  const TemporaryFolder folder;
  // The arm's own card counts over the root's (which need not exist then).
  write_result(folder / "own.h5", {.model = "no_such_card", .arm_model = "esketamine_intranasal"});
  CHECK(read_result_file(folder / "own.h5").arms[1].peak_sbp_rise_mmhg[0] == 3.0);
  // Without a card to read the roles of, there is no telling which peak is the blood pressure.
  write_result(folder / "unknown.h5", {.model = "no_such_card"});
  CHECK(io_error_of(folder / "unknown.h5")
            .find("unknown.h5: / attribute model: model 'no_such_card' is not built into this ketasim") !=
        std::string::npos);
  write_result(folder / "none.h5", {.model = ""});
  CHECK(io_error_of(folder / "none.h5").find("none.h5: / attribute model: missing") != std::string::npos);
}

TEST_CASE("compare reports the share stopped early and the median sessions to response of stop rules",
          "[compare][stop]") {
  ArmData a = make_arm("until", {1, 0, 1, 0});
  ArmData b = make_arm("stop_later", {1, 1, 1, 0});
  a.stopped_early = {1, 0, 1, 1};
  a.sessions_to_response = {2, kNaN, 4, 3};
  b.stopped_early = {0, 1, 1, 0};
  b.sessions_to_response = {kNaN, 5, 6, kNaN};
  CompareOptions options;
  options.bootstrap = 200;
  const Comparison c = compare_arms(make_file({a, b}), options);
  const OutcomeLine& stopped = line_of(c, "stopped_early", "percent");
  CHECK(stopped.arms[0].value == Approx(75.0));
  CHECK(stopped.arms[1].value == Approx(50.0));
  CHECK(stopped.differences[1].value == Approx(-25.0));
  const OutcomeLine& sessions = line_of(c, "sessions_to_response", "median");
  CHECK(sessions.arms[0].value == Approx(3.0));
  CHECK(sessions.arms[1].value == Approx(5.5));
  CHECK(sessions.differences[1].value == Approx(2.5));
  // Files without stop rules have no such lines.
  const Comparison plain = compare_arms(make_file({make_arm("a", {1, 0}), make_arm("b", {0, 1})}), options);
  for (const OutcomeLine& line : plain.lines) CHECK(line.outcome != "stopped_early");
}

TEST_CASE("compare reports relapse at visits among the subjects at risk", "[compare][relapse]") {
  ArmData a = make_arm("maintenance", {1, 0, 1, 0, 1});
  ArmData b = make_arm("placebo", {1, 1, 1, 0, 1});
  // Subject 3 is not at risk (NaN); in a, one relapse of four at risk; in b, three.
  a.relapse_visits_day = {14, 28, 28, kNaN, 7};
  a.relapse_visits_observed = {0, 0, 0, kNaN, 1};
  b.relapse_visits_day = {7, 7, 28, kNaN, 14};
  b.relapse_visits_observed = {1, 1, 0, kNaN, 1};
  CompareOptions options;
  options.bootstrap = 200;
  const Comparison c = compare_arms(make_file({a, b}), options);
  const OutcomeLine& share = line_of(c, "relapse_at_visits", "percent");
  CHECK(share.arms[0].value == Approx(25.0));
  CHECK(share.arms[1].value == Approx(75.0));
  CHECK(share.differences[1].value == Approx(50.0));
  // Kaplan-Meier in b: 4 at risk, 2 events at 7 d leave S = 0.5 until the next event at 14 d: the
  // median is the midpoint, 10.5 d (as R's survival package defines it).
  CHECK(line_of(c, "time_to_relapse_at_visits", "km_median").arms[1].value == Approx(10.5));
  CHECK(line_of(c, "time_to_relapse_at_visits", "at_risk").arms[0].value == 4.0);
  CHECK(line_of(c, "time_to_relapse_at_visits", "relapses_observed").arms[1].value == 3.0);
  // Files without relapse visits have no such lines.
  const Comparison plain = compare_arms(make_file({make_arm("a", {1, 0}), make_arm("b", {0, 1})}), options);
  for (const OutcomeLine& line : plain.lines) CHECK(line.outcome.find("at_visits") == std::string::npos);
}

TEST_CASE("compare reports the share titrated and the share continued", "[compare][titration][continuation]") {
  ArmData a = make_arm("titrated", {1, 0, 1, 0});
  ArmData b = make_arm("fixed", {1, 1, 1, 0});
  a.titrated = {1, 0, 1, 1};
  b.titrated = {0, 0, 0, 0};  // as the reader gives an arm without a titration
  a.continued = {1, 0, 0, 1};
  b.continued = {kNaN, kNaN, kNaN, kNaN};  // an arm without a given_if rule
  CompareOptions options;
  options.bootstrap = 200;
  const Comparison c = compare_arms(make_file({a, b}), options);
  const OutcomeLine& titrated = line_of(c, "titrated", "percent");
  CHECK(titrated.arms[0].value == Approx(75.0));
  CHECK(titrated.arms[1].value == Approx(0.0));
  CHECK(titrated.differences[1].value == Approx(-75.0));
  const OutcomeLine& continued = line_of(c, "continued", "percent");
  CHECK(continued.arms[0].value == Approx(50.0));
  CHECK(std::isnan(continued.arms[1].value));
  CHECK(std::isnan(continued.differences[1].value));
  // Files without either rule have no such lines.
  const Comparison plain = compare_arms(make_file({make_arm("a", {1, 0}), make_arm("b", {0, 1})}), options);
  for (const OutcomeLine& line : plain.lines) CHECK((line.outcome != "titrated" && line.outcome != "continued"));
}
