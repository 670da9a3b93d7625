#pragma once
// Summary statistics of simulated cohorts: quantiles and the Kaplan-Meier estimator, also on
// weighted samples (a bootstrap resample is a count per subject: how often it was drawn), where
// the values are sorted once and every resample is one pass over them.

#include <cstddef>
#include <cstdint>
#include <span>
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
// Subjects whose time is not finite are left out.
KaplanMeier kaplan_meier(const std::vector<double>& time, const std::vector<bool>& event);

// How many times each entry of a sample is counted (a bootstrap resample: how often each subject
// was drawn; 1 for every entry: the sample itself).
using Multiplicities = std::span<const std::uint32_t>;

// Values sorted once, so that the quantile of any weighting of them is a single pass.
class SortedValues {
 public:
  // Entry j is values[j]; the entries whose value is not finite are left out.
  explicit SortedValues(std::span<const double> values);
  // The type-7 quantile (quantiles.hpp) of the multiset where entry j appears multiplicity[j]
  // times: the same number as quantile() on that multiset. NaN when it is empty.
  double quantile(Multiplicities multiplicity, double probability) const;

 private:
  std::vector<std::size_t> entry_;  // the finite entries, by ascending value
  std::vector<double> value_;       // their values, ascending
};

// Right-censored times sorted once for the Kaplan-Meier estimator (by time, events before
// censorings at equal times), so that the estimate on any weighting of them is a single pass.
class SurvivalOrder {
 public:
  // Entry j: time[j], event[j] (false: censored); the entries whose time is not finite are left out.
  SurvivalOrder(std::span<const double> time, const std::vector<bool>& event);
  // The product-limit curve where entry j counts multiplicity[j] times: times, survival,
  // at_risk, events and greenwood (no band, no median).
  KaplanMeier curve(Multiplicities multiplicity) const;
  // The median of that curve (survival_median of its survival).
  double median(Multiplicities multiplicity) const;

 private:
  std::vector<std::size_t> entry_;  // the entries with a finite time, in survival order
  std::vector<double> time_;        // their times
  std::vector<bool> event_;         // their events
};

// Where a survival curve (values at `times`, NaN entries ignored) first reaches 0.5, by R's
// survival:::survmean rule: the first time the curve is below 0.5 + sqrt(machine epsilon); if it
// equals 0.5 there (within that tolerance), the midpoint between that time and the next time the
// curve falls below it, or the time itself when it never does. NaN when never reached.
double survival_median(const std::vector<double>& times, const std::vector<double>& curve);

}  // namespace ketasim
