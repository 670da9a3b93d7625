#include "ketasim/statistics.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <stdexcept>

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

KaplanMeier kaplan_meier(const std::vector<double>& time, const std::vector<bool>& event) {
  if (time.size() != event.size()) throw std::invalid_argument("kaplan_meier: times and events differ in length");
  std::vector<std::size_t> order(time.size());
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
    return time[a] < time[b] || (time[a] == time[b] && event[a] && !event[b]);
  });
  KaplanMeier km;
  int at_risk = static_cast<int>(time.size());
  double survival = 1.0;
  double greenwood = 0.0;
  std::size_t i = 0;
  while (i < order.size()) {
    const double t = time[order[i]];
    int events = 0, leaving = 0;
    for (; i < order.size() && time[order[i]] == t; ++i) {
      events += event[order[i]] ? 1 : 0;
      ++leaving;
    }
    if (events > 0) {
      survival *= 1.0 - static_cast<double>(events) / at_risk;
      greenwood += events < at_risk ? static_cast<double>(events) / (static_cast<double>(at_risk) * (at_risk - events))
                                    : std::numeric_limits<double>::infinity();
      km.times.push_back(t);
      km.survival.push_back(survival);
      km.at_risk.push_back(at_risk);
      km.events.push_back(events);
      km.greenwood.push_back(greenwood);
    }
    at_risk -= leaving;
  }
  add_log_band(km);
  km.median = survival_median(km.times, km.survival);
  km.median_lower = survival_median(km.times, km.lower);
  km.median_upper = survival_median(km.times, km.upper);
  return km;
}

}  // namespace ketasim
