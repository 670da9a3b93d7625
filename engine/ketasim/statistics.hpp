#pragma once
// Summary statistics of simulated cohorts: quantiles and the Kaplan-Meier estimator.

#include <vector>

namespace ketasim {

// The Kaplan-Meier estimate of a survival curve from right-censored times, with Greenwood's
// variance and the pointwise 95% confidence band of R's survfit defaults (conf.type = "log").
struct KaplanMeier {
  std::vector<double> times;     // distinct event times, ascending
  std::vector<double> survival;  // S(t) just after each of them
  std::vector<int> at_risk;      // subjects at risk just before each of them
  std::vector<int> events;       // events at each of them
  // Greenwood's sum over event times up to t of d / (n (n - d)): the variance of log S(t)
  // (infinite once S(t) = 0).
  std::vector<double> greenwood;
  // S(t) · exp(∓1.96 · sqrt(greenwood)), the upper one capped at 1; NaN where S(t) = 0 (R: NA).
  std::vector<double> lower;
  std::vector<double> upper;
  // The median survival time as R's survfit reports it: the first time S(t) < 0.5; when S(t)
  // equals 0.5 exactly on an interval, the midpoint of that interval's ends. NaN when S(t)
  // never reaches 0.5 (more than half censored before their event).
  double median = 0.0;
  // Its 95% confidence interval as print.survfit reports it (0.95LCL, 0.95UCL): the same rule
  // applied to the lower and to the upper curve. NaN when that curve never reaches 0.5.
  double median_lower = 0.0;
  double median_upper = 0.0;
};

// `event[i]` false means subject i was censored at time[i]. Ties: events before censorings.
KaplanMeier kaplan_meier(const std::vector<double>& time, const std::vector<bool>& event);

// Where a survival curve (values at `times`, NaN entries ignored) first reaches 0.5, by R's
// survival:::survmean rule: the first time the curve is below 0.5 + sqrt(machine epsilon); if it
// equals 0.5 there (within that tolerance), the midpoint between that time and the next time the
// curve falls below it, or the time itself when it never does. NaN when never reached.
double survival_median(const std::vector<double>& times, const std::vector<double>& curve);

}  // namespace ketasim
