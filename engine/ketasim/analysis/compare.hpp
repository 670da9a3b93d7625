#pragma once
// `ketasim compare`: the arms of one result file side by side (response, remission, time to
// relapse, dissociation, blood pressure, sessions, cost), with paired differences against a
// reference arm. Three stages, each usable alone, each in a file of its own:
//   read_result_file  HDF5 (docs/hdf5-layout.md) -> ResultFile, only the datasets needed
//                     (compare_read.cpp);
//   compare_arms      ResultFile + CompareOptions -> Comparison (pure; no HDF5) (compare_build.cpp);
//   format_comparison Comparison -> text (table, csv, markdown, json) (compare_format.cpp).
// The statistics (compare_statistics.cpp) take per-subject vectors, a list of subject indices and
// how many times each of them counts (a bootstrap resample: how often it was drawn), so they can
// be tested on vectors written by hand. Quantiles and Kaplan-Meier sort once per list
// (statistics.hpp); each resample is one pass.

#include <array>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "ketasim/analysis/statistics.hpp"
#include "ketasim/input/scenario.hpp"  // kDefaultPricePerSessionUsd

namespace ketasim {

// ---- What is read from a result file -------------------------------------------------------

// How the dissociation outcome was measured (the burden metric is newer than the other).
enum class DissociationMeasure {
  burden_score_h,         // metrics/dissociation_burden_score_h: ∫ dissociation score dt
  hours_above_threshold,  // metrics/time_above_dissociation_h (fallback for older files)
};

// One arm, one entry per subject (row i = subject i in every arm). NaN where the file has NaN.
struct ArmData {
  std::string name;
  std::vector<double> assessment_days;            // assessments_h / 24, after the first session
  std::vector<std::vector<double>> response_at;   // [assessment][subject]: 1, 0, NaN
  std::vector<std::vector<double>> remission_at;  // [assessment][subject]
  std::vector<double> days_in_response;           // d
  std::vector<double> relapse_day;                // d; finite only for responders at end of treatment
  std::vector<double> relapse_observed;           // 1 event, 0 censored
  DissociationMeasure dissociation_measure = DissociationMeasure::burden_score_h;
  std::vector<double> dissociation_per_week;  // the measure divided by the grid length in weeks
  std::vector<double> peak_sbp_rise_mmhg;     // max over doses of metrics/peak_<link>, the link with
                                              // LinkRole::systolic_blood_pressure in the arm's card
  bool sessions_from_file = true;             // false: nominal doses within the grid (same for all)
  std::vector<double> sessions;               // sessions given
  // Relapse at visits (metrics/relapse_visits_day, relapse_visits_observed; output.relapse): finite
  // for the subjects at risk; empty when the file has none.
  std::vector<double> relapse_visits_day;
  std::vector<double> relapse_visits_observed;
  // Stop rules (metrics/stopped_early, sessions_to_response); empty when the file has none.
  std::vector<double> stopped_early;         // 1, 0, NaN
  std::vector<double> sessions_to_response;  // NaN when not stopped
  // Titrations (metrics/titrated) and given_if rules (metrics/continued): 1, 0, NaN in an arm
  // without one; empty when the file has none.
  std::vector<double> titrated;
  std::vector<double> continued;
  bool price_from_file = true;  // false: the default prices
  std::array<double, 2> price_per_session_usd{kDefaultPricePerSessionUsd[0],
                                              kDefaultPricePerSessionUsd[1]};  // low, high
  std::vector<bool> failed;                                                    // metrics/status != 0
  std::size_t subjects() const { return failed.size(); }
};

struct ResultFile {
  std::string path;
  std::string scenario_name;
  int layout_version = 0;
  std::int64_t replicates = 1;  // trial replicates; subject i is in replicate i / subjects_per_replicate
  std::int64_t subjects_per_replicate = 0;
  std::vector<ArmData> arms;  // scenario order (root attribute `arms`)
};

// Reads what `compare` needs. Throws IoError naming the file, the dataset or attribute and what
// was expected, for a missing, unreadable or malformed file or an unsupported layout version.
ResultFile read_result_file(const std::string& path);

// ---- Options and results --------------------------------------------------------------------

inline constexpr std::uint64_t kDefaultBootstrapSeed = 20240917;

struct CompareOptions {
  std::string reference;        // empty: the first arm
  std::vector<double> at_days;  // empty: the reference arm's assessment days
  int bootstrap = 2000;         // paired bootstrap replicates
  std::uint64_t seed = kDefaultBootstrapSeed;
  double margin_pp = 0.0;  // a replicate "wins" when rate_arm - rate_reference > margin
  unsigned threads = 0;    // bootstrap threads, 0: one per core; the results do not depend on it
};

// Which interval goes with an arm's value.
enum class IntervalKind {
  none,
  ci95,      // a 95% confidence interval (KM median: Greenwood, log scale)
  spread90,  // 5th and 95th percentiles (over subjects or over trial replicates)
};

// A value with an optional interval. `skipped` counts bootstrap samples where the statistic was
// undefined (-1: the statistic is always defined, nothing to report).
struct Cell {
  double value;
  double low;
  double high;
  std::int64_t skipped = -1;
};

// One outcome row of the table: a value per arm and, unless it is a count or a setting, the
// paired difference from the reference arm with its bootstrap CI.
struct OutcomeLine {
  std::string outcome;    // tidy name, e.g. response_rate
  double day;             // NaN when the outcome has no day
  std::string statistic;  // percent, mean, median, km_median, count, probability, ...
  std::string label;      // for the table, without the unit
  std::string unit;
  int decimals = 1;
  IntervalKind interval = IntervalKind::none;
  std::vector<Cell> arms;  // one per arm, file order
  bool has_difference = false;
  std::string difference_unit;
  std::vector<Cell> differences;  // one per arm; the reference's is NaN
};

struct Comparison {
  std::string file;
  std::string scenario_name;
  int layout_version = 0;
  std::vector<std::string> arms;
  std::size_t reference = 0;
  std::vector<double> at_days;  // the last is the primary day
  int bootstrap = 0;
  std::uint64_t seed = 0;
  std::int64_t replicates = 1;
  double margin_pp = 0.0;
  std::vector<OutcomeLine> lines;
  std::vector<std::string> notes;  // fallbacks and exclusions, in words
};

// Throws Error(usage) for an unknown reference arm or a day that is not an assessment.
Comparison compare_arms(const ResultFile& file, const CompareOptions& options);

enum class OutputFormat { table, csv, markdown, json };
OutputFormat parse_output_format(const std::string& name);  // throws Error(usage)
std::string format_comparison(const Comparison& comparison, OutputFormat format);

// "1d,15d,28d" (also "1,15", "1 d"): days, in the order given. Throws Error(usage).
std::vector<double> parse_days(const std::string& text);

// ---- The statistics, on per-subject vectors and lists of subject indices -------------------

using Subjects = std::span<const std::size_t>;

// A 0/1 outcome of each subject of a list (non-finite: not counted), coded once, so that counting
// it with any multiplicities is a branch-free pass.
class BinaryOutcome {
 public:
  BinaryOutcome(const std::vector<double>& zero_one, Subjects subjects);
  struct Counts {
    std::uint64_t counted = 0;  // subjects with a value, each as often as it counts
    std::uint64_t ones = 0;     // of them, those with a 1 (any nonzero value)
  };
  Counts counts(Multiplicities multiplicity) const;
  double percent(Multiplicities multiplicity) const;  // 100 ones / counted; NaN when none counted

 private:
  std::vector<std::uint8_t> code_;  // per entry: kNotCounted, kZero or kOne
};

// The values of each subject of a list gathered once (non-finite: left out), so that their sum
// and mean with any multiplicities is a branch-free pass.
class GatheredValues {
 public:
  GatheredValues(const std::vector<double>& values, Subjects subjects);
  struct Sums {
    double sum = 0.0;           // Σ multiplicity · value, in the order of the list
    std::uint64_t counted = 0;  // Σ multiplicity over the finite values
  };
  Sums sums(Multiplicities multiplicity) const;
  double mean(Multiplicities multiplicity) const;  // NaN when none counted

 private:
  std::vector<double> value_;         // 0 where left out
  std::vector<std::uint8_t> finite_;  // 1 where counted
};

// Over the finite values; subjects[j] counts multiplicity[j] times. (Shorthands for the classes
// above; the comparison prepares those once per list.) A mean may differ in the last bits from
// adding each value as often as it was drawn: the sum is Σ multiplicity · value.
double rate_percent(const std::vector<double>& zero_one, Subjects subjects, Multiplicities multiplicity);
double mean_of(const std::vector<double>& values, Subjects subjects, Multiplicities multiplicity);
// The values of `subjects`, sorted once for quantiles of any multiplicities of them (type 7).
SortedValues sorted_values_of(const std::vector<double>& values, Subjects subjects);
// The subjects with a finite time and event (1 event, 0 censored), sorted once for Kaplan-Meier
// medians of any multiplicities of them.
SurvivalOrder survival_order_of(const std::vector<double>& time, const std::vector<double>& event, Subjects subjects);
// Every subject of a list counted once.
std::vector<std::uint32_t> counted_once(Subjects subjects);

// Indices of the subjects kept in a comparison: not failed in either arm.
std::vector<std::size_t> kept_subjects(const std::vector<bool>& failed_arm, const std::vector<bool>& failed_reference);

struct BootstrapInterval {
  double low;
  double high;
  std::int64_t skipped = 0;  // samples where the statistic was NaN
};

// Percentile 95% intervals (type-7 quantiles 2.5% and 97.5%) of each of the statistics that
// `differences` returns for a resample of a list of `subjects` subjects, given as multiplicities
// (how many times each entry of the list was drawn). Sample b draws `subjects` entries with
// replacement from RandomStream(seed, b, bootstrap): the same samples for every statistic and
// every arm pair with the same list. The samples run on `threads` threads (0: one per core), so
// `differences` must be safe to call concurrently; the intervals do not depend on the thread count.
std::vector<BootstrapInterval> paired_bootstrap(std::size_t subjects, int samples, std::uint64_t seed, unsigned threads,
                                                const std::function<std::vector<double>(Multiplicities)>& differences);

// How many times each of `subjects` entries is drawn in bootstrap sample `sample` (exactly the
// draws of paired_bootstrap), into `multiplicity` (resized).
void draw_multiplicities(std::size_t subjects, std::uint64_t seed, int sample,
                         std::vector<std::uint32_t>& multiplicity);

// Trial replicates: subject i belongs to replicate i / subjects_per_replicate.
struct ReplicateOutcome {
  std::vector<double> arm_rates;  // response rate (%) of each replicate, the arm's solved subjects
  double p05, p50, p95;           // over replicates
  double probability_better;      // fraction of replicates with rate_arm - rate_ref > margin (pairwise kept)
  std::int64_t undefined = 0;     // replicates without a kept subject with a response value
};
ReplicateOutcome replicate_outcome(const std::vector<double>& arm_response, const std::vector<bool>& arm_failed,
                                   const std::vector<double>& reference_response,
                                   const std::vector<bool>& reference_failed, std::int64_t replicates,
                                   std::int64_t subjects_per_replicate, double margin_pp);

}  // namespace ketasim
