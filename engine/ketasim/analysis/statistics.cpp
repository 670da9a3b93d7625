#include "ketasim/analysis/statistics.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>

#include "ketasim/base/quantiles.hpp"

namespace ketasim {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
// qnorm(0.975): R's survfit default conf.int = 0.95.
constexpr double kZ95 = 1.959963984540054;

// The pointwise band of survfit's conf.type = "log": exp(log S ± z · se), se = sqrt(Greenwood).
void add_log_band(KaplanMeier& km) {
  km.lower.resize(km.times.size());
  km.upper.resize(km.times.size());
  for (std::size_t k = 0; k < km.times.size(); ++k) {
    const double s = km.survival[k];
    if (s <= 0.0) {
      km.lower[k] = km.upper[k] = kNaN;
      continue;
    }
    const double half_width = kZ95 * std::sqrt(km.greenwood[k]);
    km.lower[k] = s * std::exp(-half_width);
    km.upper[k] = std::min(1.0, s * std::exp(half_width));
  }
}

}  // namespace

double survival_median(const std::vector<double>& times, const std::vector<double>& curve) {
  if (times.size() != curve.size()) throw std::invalid_argument("survival_median: times and curve differ in length");
  // R: tolerance <- sqrt(.Machine$double.eps), as all.equal() uses.
  const double tolerance = std::sqrt(std::numeric_limits<double>::epsilon());
  for (std::size_t k = 0; k < times.size(); ++k) {
    if (std::isnan(curve[k]) || curve[k] >= 0.5 + tolerance) continue;
    if (std::abs(curve[k] - 0.5) < tolerance) {
      for (std::size_t next = k + 1; next < times.size(); ++next)
        if (!std::isnan(curve[next]) && curve[next] < curve[k]) return 0.5 * (times[k] + times[next]);
    }
    return times[k];
  }
  return kNaN;
}

SortedValues::SortedValues(std::span<const double> values) {
  for (std::size_t j = 0; j < values.size(); ++j)
    if (std::isfinite(values[j])) entry_.push_back(j);
  std::sort(entry_.begin(), entry_.end(), [&](std::size_t a, std::size_t b) { return values[a] < values[b]; });
  value_.reserve(entry_.size());
  for (const std::size_t j : entry_) value_.push_back(values[j]);
}

double SortedValues::quantile(Multiplicities multiplicity, double probability) const {
  std::uint64_t count = 0;
  for (const std::size_t j : entry_) count += multiplicity[j];
  if (count == 0) return kNaN;
  const Type7Rank rank = type7_rank(count, probability);
  // Walk the sorted entries until `counted` (the multiset's elements up to entry k) passes a rank.
  std::size_t k = 0;
  std::uint64_t counted = multiplicity[entry_[0]];
  while (counted <= rank.low) counted += multiplicity[entry_[++k]];
  const double low = value_[k];
  if (rank.fraction == 0.0) return low;
  while (counted <= rank.low + 1) counted += multiplicity[entry_[++k]];
  return type7_value(low, value_[k], rank.fraction);
}

SurvivalOrder::SurvivalOrder(std::span<const double> time, const std::vector<bool>& event) {
  if (time.size() != event.size()) throw std::invalid_argument("SurvivalOrder: times and events differ in length");
  for (std::size_t j = 0; j < time.size(); ++j)
    if (std::isfinite(time[j])) entry_.push_back(j);
  std::sort(entry_.begin(), entry_.end(), [&](std::size_t a, std::size_t b) {
    return time[a] < time[b] || (time[a] == time[b] && event[a] && !event[b]);
  });
  time_.reserve(entry_.size());
  event_.reserve(entry_.size());
  for (const std::size_t j : entry_) {
    time_.push_back(time[j]);
    event_.push_back(event[j]);
  }
}

KaplanMeier SurvivalOrder::curve(Multiplicities multiplicity) const {
  KaplanMeier km;
  std::int64_t at_risk = 0;
  for (const std::size_t j : entry_) at_risk += multiplicity[j];
  double survival = 1.0;
  double greenwood = 0.0;
  std::size_t k = 0;
  while (k < entry_.size()) {
    const double t = time_[k];
    std::int64_t events = 0, leaving = 0;
    for (; k < entry_.size() && time_[k] == t; ++k) {
      const std::uint32_t count = multiplicity[entry_[k]];
      events += event_[k] ? count : 0;
      leaving += count;
    }
    if (events > 0) {
      survival *= 1.0 - static_cast<double>(events) / static_cast<double>(at_risk);
      greenwood += events < at_risk ? static_cast<double>(events) /
                                          (static_cast<double>(at_risk) * static_cast<double>(at_risk - events))
                                    : std::numeric_limits<double>::infinity();
      km.times.push_back(t);
      km.survival.push_back(survival);
      km.at_risk.push_back(static_cast<int>(at_risk));
      km.events.push_back(static_cast<int>(events));
      km.greenwood.push_back(greenwood);
    }
    at_risk -= leaving;
  }
  return km;
}

double SurvivalOrder::median(Multiplicities multiplicity) const {
  const KaplanMeier km = curve(multiplicity);
  return survival_median(km.times, km.survival);
}

KaplanMeier kaplan_meier(const std::vector<double>& time, const std::vector<bool>& event) {
  if (time.size() != event.size()) throw std::invalid_argument("kaplan_meier: times and events differ in length");
  const std::vector<std::uint32_t> once(time.size(), 1);
  KaplanMeier km = SurvivalOrder(time, event).curve(once);
  add_log_band(km);
  km.median = survival_median(km.times, km.survival);
  km.median_lower = survival_median(km.times, km.lower);
  km.median_upper = survival_median(km.times, km.upper);
  return km;
}

}  // namespace ketasim
