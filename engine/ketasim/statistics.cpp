#include "ketasim/statistics.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <stdexcept>

namespace ketasim {

KaplanMeier kaplan_meier(const std::vector<double>& time, const std::vector<bool>& event) {
  if (time.size() != event.size()) throw std::invalid_argument("kaplan_meier: times and events differ in length");
  std::vector<std::size_t> order(time.size());
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
    return time[a] < time[b] || (time[a] == time[b] && event[a] && !event[b]);
  });
  KaplanMeier km;
  km.median = std::numeric_limits<double>::quiet_NaN();
  int at_risk = static_cast<int>(time.size());
  double survival = 1.0;
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
      km.times.push_back(t);
      km.survival.push_back(survival);
      km.at_risk.push_back(at_risk);
    }
    at_risk -= leaving;
  }
  for (std::size_t k = 0; k < km.times.size(); ++k) {
    if (km.survival[k] < 0.5 - 1e-12) {
      km.median = km.times[k];
      break;
    }
    if (std::abs(km.survival[k] - 0.5) <= 1e-12) {
      km.median = k + 1 < km.times.size() ? 0.5 * (km.times[k] + km.times[k + 1]) : km.times[k];
      break;
    }
  }
  return km;
}

}  // namespace ketasim
