#pragma once
// Summary statistics of simulated cohorts: quantiles and the Kaplan-Meier estimator.

#include <vector>

namespace ketasim {

// The Kaplan-Meier estimate of a survival curve from right-censored times.
struct KaplanMeier {
  std::vector<double> times;     // distinct event times, ascending
  std::vector<double> survival;  // S(t) just after each of them
  std::vector<int> at_risk;      // subjects at risk just before each of them
  // The median survival time as R's survfit reports it: the first time S(t) < 0.5; when S(t)
  // equals 0.5 exactly on an interval, the midpoint of that interval's ends. NaN when S(t)
  // never reaches 0.5 (more than half censored before their event).
  double median = 0.0;
};

// `event[i]` false means subject i was censored at time[i]. Ties: events before censorings.
KaplanMeier kaplan_meier(const std::vector<double>& time, const std::vector<bool>& event);

}  // namespace ketasim
