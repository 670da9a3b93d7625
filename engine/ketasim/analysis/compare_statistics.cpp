// The statistics of `compare` on per-subject vectors and lists of subject indices (compare.hpp):
// rates, means, medians and Kaplan-Meier medians on any multiplicities of a list, the paired
// bootstrap and the trial replicates. The weighted quantile and Kaplan-Meier themselves are
// statistics.cpp's; the one quantile is base/quantiles.hpp's.
#include <algorithm>
#include <cmath>
#include <limits>

#include "ketasim/analysis/compare.hpp"
#include "ketasim/analysis/statistics.hpp"
#include "ketasim/base/quantiles.hpp"
#include "ketasim/base/random_stream.hpp"
#include "ketasim/base/threads.hpp"

namespace ketasim {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

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

}  // namespace ketasim
