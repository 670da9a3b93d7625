// Per-subject random streams, the cohort sampler and the subject blocks; correlated covariates,
// cohorts read from a CSV file and trial replicates.

#include <H5Cpp.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <filesystem>
#include <map>
#include <numeric>
#include <set>

#include "ketasim/analysis/reproduction.hpp"
#include "ketasim/base/random_stream.hpp"
#include "ketasim/input/covariate_table.hpp"
#include "ketasim/input/scenario_loader.hpp"
#include "ketasim/model/blocks.hpp"
#include "ketasim/run/cohort.hpp"
#include "ketasim/run/run.hpp"

using namespace ketasim;
namespace fs = std::filesystem;

namespace {
Scenario cohort_scenario() {
  Scenario scenario;
  scenario.model.name = "ketamine_clements_2cmt";
  scenario.cohort.size = 1000;
  scenario.cohort.seed = 12345;
  scenario.cohort.weight.kind = CovariateDistribution::Kind::truncated_normal;
  scenario.cohort.weight.mean = 80.0;
  scenario.cohort.weight.sd = 15.0;
  scenario.cohort.weight.min = 45.0;
  scenario.cohort.weight.max = 150.0;
  scenario.cohort.variability.parameters = {"V1", "k10"};
  scenario.cohort.variability.cv = {0.25, 0.30};
  scenario.cohort.variability.correlation = Eigen::MatrixXd::Identity(2, 2);
  return scenario;
}

double normal_pdf(double x) {
  return std::exp(-0.5 * x * x) / std::sqrt(2.0 * M_PI);
}
double normal_cdf(double x) {
  return 0.5 * std::erfc(-x / std::sqrt(2.0));
}
}  // namespace

TEST_CASE("a subject's stream does not depend on the order of draws", "[cohort]") {
  RandomStream a(7, 42, StreamPurpose::random_effects);
  RandomStream b(7, 42, StreamPurpose::random_effects);
  RandomStream other_subject(7, 43, StreamPurpose::random_effects);
  RandomStream other_purpose(7, 42, StreamPurpose::covariates);
  const double first = a.normal();
  CHECK(first == b.normal());
  CHECK(first != other_subject.normal());
  CHECK(first != other_purpose.normal());

  const Scenario scenario = cohort_scenario();
  const CohortSampler sampler(scenario, *find_builtin_model(scenario.model.name));
  const Subject later = sampler.draw(999);
  for (std::int64_t i = 0; i < 10; ++i) (void)sampler.draw(i);
  const Subject again = sampler.draw(999);
  CHECK(later.weight_kg == again.weight_kg);
  CHECK(later.parameters == again.parameters);
}

TEST_CASE("uniform draws are in (0, 1) with the right mean and variance", "[cohort]") {
  RandomStream stream(1, 0, StreamPurpose::covariates);
  const int n = 200000;
  double sum = 0.0, sum_squares = 0.0;
  for (int i = 0; i < n; ++i) {
    const double u = stream.uniform();
    REQUIRE(u > 0.0);
    REQUIRE(u < 1.0);
    sum += u;
    sum_squares += u * u;
  }
  const double mean = sum / n;
  CHECK(mean == Approx(0.5).margin(0.005));
  CHECK(sum_squares / n - mean * mean == Approx(1.0 / 12.0).margin(0.002));
}

TEST_CASE("weights follow the truncated normal distribution", "[cohort]") {
  const Scenario scenario = cohort_scenario();
  const CohortSampler sampler(scenario, *find_builtin_model(scenario.model.name));
  const int n = 20000;
  double sum = 0.0;
  for (int i = 0; i < n; ++i) {
    const double weight = sampler.draw(i).weight_kg;
    REQUIRE(weight >= 45.0);
    REQUIRE(weight <= 150.0);
    sum += weight;
  }
  const double alpha = (45.0 - 80.0) / 15.0, beta = (150.0 - 80.0) / 15.0;
  const double expected = 80.0 + 15.0 * (normal_pdf(alpha) - normal_pdf(beta)) / (normal_cdf(beta) - normal_cdf(alpha));
  CHECK(sum / n == Approx(expected).margin(0.35));  // about 3 standard errors
}

TEST_CASE("random effects are log-normal with omega^2 = ln(1 + CV^2) and the given correlation", "[cohort]") {
  Scenario scenario = cohort_scenario();
  scenario.cohort.variability.correlation << 1.0, 0.6, 0.6, 1.0;
  const ModelCard& card = *find_builtin_model(scenario.model.name);
  const CohortSampler sampler(scenario, card);
  const int v1 = card.index_of("V1"), k10 = card.index_of("k10");
  const int n = 20000;
  std::vector<double> eta_v1, eta_k10;
  for (int i = 0; i < n; ++i) {
    const Subject s = sampler.draw(i);
    const double ratio = s.weight_kg / 70.0;
    eta_v1.push_back(std::log(s.parameters[static_cast<std::size_t>(v1)] /
                              (card.parameters[static_cast<std::size_t>(v1)].value * ratio)));
    eta_k10.push_back(std::log(s.parameters[static_cast<std::size_t>(k10)] /
                               (card.parameters[static_cast<std::size_t>(k10)].value * std::pow(ratio, -0.25))));
  }
  const auto mean = [](const std::vector<double>& x) {
    return std::accumulate(x.begin(), x.end(), 0.0) / static_cast<double>(x.size());
  };
  const double m1 = mean(eta_v1), m2 = mean(eta_k10);
  double s11 = 0, s22 = 0, s12 = 0;
  for (int i = 0; i < n; ++i) {
    s11 += (eta_v1[i] - m1) * (eta_v1[i] - m1);
    s22 += (eta_k10[i] - m2) * (eta_k10[i] - m2);
    s12 += (eta_v1[i] - m1) * (eta_k10[i] - m2);
  }
  CHECK(m1 == Approx(0.0).margin(0.006));
  CHECK(std::sqrt(s11 / n) == Approx(std::sqrt(std::log1p(0.25 * 0.25))).epsilon(0.03));
  CHECK(std::sqrt(s22 / n) == Approx(std::sqrt(std::log1p(0.30 * 0.30))).epsilon(0.03));
  CHECK(s12 / std::sqrt(s11 * s22) == Approx(0.6).margin(0.02));
}

TEST_CASE("subject blocks and shares cover every subject exactly once", "[blocks]") {
  const auto blocks = split_into_blocks({10, 1000}, 256);
  REQUIRE(blocks.size() == 4);
  CHECK(blocks[0] == SubjectRange{10, 256});
  CHECK(blocks[3] == SubjectRange{10 + 768, 232});
  CHECK(split_into_blocks({0, 0}, 64).empty());
  CHECK_THROWS(split_into_blocks({0, 10}, 0));

  for (const std::int64_t parts : {1, 3, 7, 1000, 1001}) {
    std::int64_t next = 0;
    for (std::int64_t part = 0; part < parts; ++part) {
      const SubjectRange share = share_of(1000, parts, part);
      REQUIRE(share.first == next);
      REQUIRE(share.count >= 1000 / parts);
      REQUIRE(share.count <= 1000 / parts + 1);
      next += share.count;
    }
    CHECK(next == 1000);
  }
}

TEST_CASE("shards are counted from 1 and tile the subjects in order", "[blocks]") {
  CHECK(parse_shard("3/100") == Shard{3, 100});
  CHECK(parse_shard("1/1") == Shard{1, 1});
  CHECK(parse_shard("100/100") == Shard{100, 100});
  for (const char* wrong : {"0/3", "4/3", "3", "3/", "/3", "-1/3", "+1/3", "1/-3", " 1/3", "1/3 ", "1.0/3", "a/b",
                            "1/3/4", "1//3", "", "1/99999999999999999999", "1/1099511627777"})
    CHECK_FALSE(parse_shard(wrong));
  // 10 subjects in 3 shards: 4, 3, 3, contiguous, in shard order; the same shares as share_of.
  CHECK(shard_subjects(10, {1, 3}) == SubjectRange{0, 4});
  CHECK(shard_subjects(10, {2, 3}) == SubjectRange{4, 3});
  CHECK(shard_subjects(10, {3, 3}) == SubjectRange{7, 3});
  CHECK(shard_subjects(10, {1, 1}) == SubjectRange{0, 10});
  CHECK_THROWS(shard_subjects(10, {0, 3}));
  CHECK_THROWS(shard_subjects(10, {4, 3}));
}

// ---------------------------------------------------------------------------------------------
// Correlated covariates, cohorts from a CSV file, trial replicates

namespace {

// A scenario with every covariate drawn from a distribution; `extra` adds cohort keys (indented
// by two spaces). Loaded as if it were in scenarios/, so from_csv finds example_patients.csv.
Scenario covariate_scenario(const std::string& extra, const std::string& grid = "{every: 6 h, for: 1 d}") {
  const std::string text = R"(
name: covariates
model: {name: ketamine_clements_2cmt}
cohort:
  seed: 12345
  weight: {distribution: normal, mean: 80 kg, sd: 15 kg, min: 45 kg, max: 150 kg}
  age: {distribution: normal, mean: 45 y, sd: 12 y, min: 18 y, max: 75 y}
  female_fraction: 60%
  baseline_madrs: {distribution: normal, mean: 33, sd: 5, min: 20, max: 50}
  variability: {cv: {V1: 25%, k10: 30%}}
)" + extra + R"(
arms:
  - name: a
    regimen: {route: iv_bolus, dose: 0.5 mg/kg, schedule: {at: [1 h]}}
output:
  grid: )" + grid + "\n";
  return parse_scenario(text, std::string(KETASIM_SOURCE_DIR) + "/scenarios/covariate_test.yaml");
}

// The truncated normal's distribution function, from erfc: an oracle independent of the
// quantile function under test.
double truncated_cdf(const CovariateDistribution& d, double x) {
  const auto phi = [](double v) { return 0.5 * std::erfc(-v / std::sqrt(2.0)); };
  const double lower = phi((d.min - d.mean) / d.sd);
  return (phi((x - d.mean) / d.sd) - lower) / (phi((d.max - d.mean) / d.sd) - lower);
}

double pearson(const std::vector<double>& x, const std::vector<double>& y) {
  const double n = static_cast<double>(x.size());
  const double mx = std::accumulate(x.begin(), x.end(), 0.0) / n, my = std::accumulate(y.begin(), y.end(), 0.0) / n;
  double sxx = 0.0, syy = 0.0, sxy = 0.0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    sxx += (x[i] - mx) * (x[i] - mx);
    syy += (y[i] - my) * (y[i] - my);
    sxy += (x[i] - mx) * (y[i] - my);
  }
  return sxy / std::sqrt(sxx * syy);
}

// Every subject column of every arm ("arm/column"), by subject id, from a whole run.
std::map<std::string, std::vector<double>> subject_columns_of_run(const Scenario& scenario, unsigned threads,
                                                                  std::int64_t block_size) {
  std::map<std::string, std::vector<double>> columns;
  for (ArmResults& arm : run_in_memory(scenario, threads, block_size).arms)
    for (auto& [name, values] : arm.subject_columns) columns[arm.name + "/" + name] = std::move(values);
  return columns;
}

}  // namespace

TEST_CASE("the inverse normal distribution function matches published quantiles", "[cohort][copula]") {
  // Quantiles as tabulated (e.g. Abramowitz & Stegun 26.2; R's qnorm).
  CHECK(standard_normal_quantile(0.5) == 0.0);
  CHECK(standard_normal_quantile(0.975) == Approx(1.959963984540054).epsilon(1e-15));
  CHECK(standard_normal_quantile(0.9) == Approx(1.2815515655446004).epsilon(1e-15));
  CHECK(standard_normal_quantile(0.995) == Approx(2.5758293035489004).epsilon(1e-15));
  CHECK(standard_normal_quantile(0.001) == Approx(-3.090232306167813).epsilon(1e-15));
  CHECK(standard_normal_quantile(0.025) == Approx(-1.959963984540054).epsilon(1e-15));
  CHECK(standard_normal_quantile(0.8413447460685429) == Approx(1.0).epsilon(1e-14));  // Phi(1)
  CHECK(standard_normal_quantile(0.0) == -HUGE_VAL);
  CHECK(standard_normal_quantile(1.0) == HUGE_VAL);
  CHECK(std::isnan(standard_normal_quantile(1.5)));
  // All three regions of AS 241 (|p - 0.5| <= 0.425, r <= 5, r > 5), against erfc: the quantile
  // of Phi(x) is x. Only x <= 0: above, Phi(x) = 1 - small keeps just the absolute precision
  // of p (1e-16), which the quantile amplifies by 1 / phi(x).
  for (double x = -37.5; x <= 0.0; x += 0.01) {
    INFO("x = " << x);
    const double p = standard_normal_cdf(x);
    REQUIRE(standard_normal_quantile(p) == Approx(x).epsilon(1e-13).margin(1e-13));
  }
  for (double x = 0.01; x <= 8.0; x += 0.01) {
    INFO("x = " << x);
    REQUIRE(standard_normal_quantile(standard_normal_cdf(x)) == Approx(x).margin(4e-16 / normal_pdf(x)));
  }
  for (const double p : {1e-300, 1e-100, 1e-20, 1e-12, 3e-6, 0.02, 0.3, 0.5 - 1e-9}) {
    INFO("p = " << p);
    // One rounding of x changes Phi(x) by the relative amount |x| * |dx| = x^2 * 1.1e-16.
    const double x = standard_normal_quantile(p);
    CHECK(standard_normal_cdf(x) == Approx(p).epsilon(1e-14 + 1e-15 * x * x));
  }
  for (const double p : {0.001, 0.02, 0.3, 0.5 - 1e-9})  // 1 - p exact enough to test symmetry
    CHECK(standard_normal_quantile(1.0 - p) == Approx(-standard_normal_quantile(p)).epsilon(1e-12).margin(1e-15));
}

TEST_CASE("a truncated normal at quantile z: inside the bounds, monotone, and the same quantile as z",
          "[cohort][copula]") {
  const CovariateDistribution weight{CovariateDistribution::Kind::truncated_normal, 80.0, 80.0, 15.0, 45.0, 150.0};
  double previous = weight.min;
  for (double z = -40.0; z <= 40.0; z += 0.05) {
    INFO("z = " << z);
    const double x = truncated_normal_at(weight, z);
    REQUIRE(x >= weight.min);
    REQUIRE(x <= weight.max);
    REQUIRE(x >= previous - 1e-12);  // monotone up to rounding where x is clamped to max
    previous = x;
    if (std::fabs(z) < 7.0)
      REQUIRE(truncated_cdf(weight, x) == Approx(standard_normal_cdf(z)).epsilon(1e-9).margin(1e-12));
  }
  CHECK(truncated_normal_at(weight, -40.0) == Approx(weight.min).epsilon(1e-14));
  CHECK(truncated_normal_at(weight, 40.0) == Approx(weight.max).epsilon(1e-14));
  // Symmetric bounds: the median is the mean, and the quantiles mirror each other.
  const CovariateDistribution madrs{CovariateDistribution::Kind::truncated_normal, 33.0, 33.0, 5.0, 23.0, 43.0};
  CHECK(truncated_normal_at(madrs, 0.0) == Approx(33.0).epsilon(1e-15));
  CHECK(truncated_normal_at(madrs, 1.3) - 33.0 == Approx(33.0 - truncated_normal_at(madrs, -1.3)).epsilon(1e-12));
  CHECK(truncated_normal_at(CovariateDistribution::constant(70.0), 2.0) == 70.0);
}

TEST_CASE("without correlations or a CSV file the covariates are the draws of before", "[cohort][copula]") {
  // Recorded from commit 74af0d0 (before correlations, CSV cohorts and replicates existed) with
  // this cohort: any change to these draws changes every existing scenario and the calibration.
  const Scenario scenario = covariate_scenario("  size: 5000");
  const CohortSampler sampler(scenario, *find_builtin_model(scenario.model.name));
  const int v1 = sampler.card().index_of("V1"), k10 = sampler.card().index_of("k10");
  struct Recorded {
    std::int64_t id;
    double weight, age, madrs, v1, k10;
  };
  const Recorded recorded[] = {
      {0, 63.53228783468569, 50.483524047015258, 34.184543036793194, 130.80289967370265, 0.58184617371766356},
      {1, 65.658818173723901, 31.569439372758424, 34.30286576982035, 101.21981354787647, 1.1240039021338657},
      {7, 68.028956728482939, 47.868785440438486, 26.518776474053212, 98.33709858884373, 0.46200477038920706},
      {4242, 82.632602289026806, 45.194005169225385, 23.382375284212166, 174.83573186559798, 0.69622735147699111},
  };
  for (const Recorded& r : recorded) {
    INFO("subject " << r.id);
    const Subject subject = sampler.draw(r.id);
    CHECK(subject.weight_kg == r.weight);
    CHECK(subject.age_years == r.age);
    CHECK(subject.baseline_madrs == r.madrs);
    CHECK(subject.female);
    CHECK(subject.parameters[static_cast<std::size_t>(v1)] == r.v1);
    CHECK(subject.parameters[static_cast<std::size_t>(k10)] == r.k10);
    CHECK(subject.table_row == -1);
  }
}

TEST_CASE("correlated covariates have the requested correlation and their own truncated marginals",
          "[cohort][copula]") {
  const Scenario scenario = covariate_scenario(
      "  size: 20000\n  correlations: {weight~age: 0.2, weight_kg~baseline_madrs: 0.0, age~baseline_madrs: -0.1}");
  REQUIRE(scenario.cohort.covariate_correlation.rows() == 3);
  const CohortSampler sampler(scenario, *find_builtin_model(scenario.model.name));
  const Cohort& cohort = scenario.cohort;
  const int n = 20000;
  std::vector<double> weight_scores, age_scores, madrs_scores;
  double weight_sum = 0.0;
  for (int i = 0; i < n; ++i) {
    const Subject s = sampler.draw(i);
    REQUIRE(s.weight_kg >= 45.0);
    REQUIRE(s.weight_kg <= 150.0);
    REQUIRE(s.age_years >= 18.0);
    REQUIRE(s.age_years <= 75.0);
    REQUIRE(s.baseline_madrs >= 20.0);
    REQUIRE(s.baseline_madrs <= 50.0);
    weight_sum += s.weight_kg;
    // Normal scores: the standard normal at each value's quantile in its own truncated normal.
    weight_scores.push_back(standard_normal_quantile(truncated_cdf(cohort.weight, s.weight_kg)));
    age_scores.push_back(standard_normal_quantile(truncated_cdf(cohort.age, s.age_years)));
    madrs_scores.push_back(standard_normal_quantile(truncated_cdf(cohort.baseline_madrs, s.baseline_madrs)));
  }
  // Standard error of a sample correlation: (1 - r^2) / sqrt(n); 3 SE.
  const auto margin = [](double r) { return 3.0 * (1.0 - r * r) / std::sqrt(static_cast<double>(n)); };
  CHECK(pearson(weight_scores, age_scores) == Approx(0.2).margin(margin(0.2)));
  CHECK(pearson(weight_scores, madrs_scores) == Approx(0.0).margin(margin(0.0)));
  CHECK(pearson(age_scores, madrs_scores) == Approx(-0.1).margin(margin(-0.1)));
  // The marginal is still the truncated normal (as the rejection draws give it).
  const double alpha = (45.0 - 80.0) / 15.0, beta = (150.0 - 80.0) / 15.0;
  const double expected = 80.0 + 15.0 * (normal_pdf(alpha) - normal_pdf(beta)) / (normal_cdf(beta) - normal_cdf(alpha));
  CHECK(weight_sum / n == Approx(expected).margin(0.35));
}

TEST_CASE("correlated covariates with loose bounds: the values themselves correlate as requested", "[cohort][copula]") {
  Scenario scenario = covariate_scenario("  size: 20000\n  correlations: {weight~age: 0.6}");
  scenario.cohort.weight.min = 80.0 - 8 * 15.0 + 1e-9;  // loose bounds: the values are almost normal
  scenario.cohort.weight.max = 80.0 + 8 * 15.0;
  scenario.cohort.age.min = 45.0 - 8 * 12.0;
  scenario.cohort.age.max = 45.0 + 8 * 12.0;
  const CohortSampler sampler(scenario, *find_builtin_model(scenario.model.name));
  std::vector<double> weight, age;
  for (int i = 0; i < 20000; ++i) {
    const Subject s = sampler.draw(i);
    weight.push_back(s.weight_kg);
    age.push_back(s.age_years);
  }
  CHECK(pearson(weight, age) == Approx(0.6).margin(3.0 * (1.0 - 0.36) / std::sqrt(20000.0)));
}

TEST_CASE("a CSV cohort without size: subject i is row i of the file", "[cohort][csv]") {
  const Scenario scenario = covariate_scenario("  from_csv: example_patients.csv");
  REQUIRE(scenario.cohort.table);
  const CovariateTable& table = *scenario.cohort.table;
  REQUIRE(table.rows == 20);
  CHECK(scenario.cohort.size == 20);
  CHECK(scenario.cohort.table_rows == Cohort::TableRows::in_order);
  const CohortSampler sampler(scenario, *find_builtin_model(scenario.model.name));
  for (std::int64_t i = 0; i < 20; ++i) {
    const Subject s = sampler.draw(i);
    const auto row = static_cast<std::size_t>(i);
    CHECK(s.table_row == i);
    CHECK(s.weight_kg == table.weight_kg[row]);
    CHECK(s.age_years == table.age_years[row]);
    CHECK(s.female == (table.female[row] == 1));
    CHECK(s.baseline_madrs == table.baseline_madrs[row]);
  }
  // The first and last rows of scenarios/example_patients.csv, as written there.
  const Subject first = sampler.draw(0), last = sampler.draw(19);
  CHECK(first.weight_kg == 62.5);
  CHECK(first.age_years == 34.0);
  CHECK(first.female);
  CHECK(first.baseline_madrs == 31.0);
  CHECK(table.ids.front() == "101");
  CHECK(last.weight_kg == 75.0);
  CHECK(last.age_years == 40.0);
  CHECK(last.baseline_madrs == 29.0);
  // Random effects are still drawn: the same person gets different parameters as another subject.
  const int v1 = sampler.card().index_of("V1");
  CHECK(first.parameters[static_cast<std::size_t>(v1)] / first.weight_kg !=
        last.parameters[static_cast<std::size_t>(v1)] / last.weight_kg);
}

TEST_CASE("a CSV cohort with size resamples rows, the same for any thread count", "[cohort][csv]") {
  const Scenario scenario = covariate_scenario("  from_csv: example_patients.csv\n  size: 200");
  CHECK(scenario.cohort.size == 200);
  CHECK(scenario.cohort.table_rows == Cohort::TableRows::resample);
  const CovariateTable& table = *scenario.cohort.table;
  const CohortSampler sampler(scenario, *find_builtin_model(scenario.model.name));
  std::set<std::int64_t> rows_drawn;
  for (std::int64_t i = 0; i < 200; ++i) {
    const Subject s = sampler.draw(i);
    REQUIRE(s.table_row >= 0);
    REQUIRE(s.table_row < 20);
    const auto row = static_cast<std::size_t>(s.table_row);
    REQUIRE(s.weight_kg == table.weight_kg[row]);
    REQUIRE(s.age_years == table.age_years[row]);
    REQUIRE(s.baseline_madrs == table.baseline_madrs[row]);
    rows_drawn.insert(s.table_row);
  }
  CHECK(rows_drawn.size() == 20);  // 200 draws of 20 rows: P(a row never drawn) < 0.001

  const auto one = subject_columns_of_run(scenario, 1, 64);
  const auto two = subject_columns_of_run(scenario, 2, 7);
  REQUIRE(one.size() == two.size());
  for (const auto& [name, values] : one) {
    INFO(name);
    REQUIRE(values.size() == 200);  // every column has width 1 (the arm has one dose)
    const bool identical = std::equal(values.begin(), values.end(), two.at(name).begin(), two.at(name).end(),
                                      [](double x, double y) { return x == y || (std::isnan(x) && std::isnan(y)); });
    CHECK(identical);
  }
  // The weights written are the drawn rows' weights.
  for (std::int64_t i = 0; i < 200; ++i)
    REQUIRE(one.at("a/weight_kg")[static_cast<std::size_t>(i)] == sampler.draw(i).weight_kg);
}

TEST_CASE("replicates: N = R x n subjects, subject i in replicate i / n, in the file too", "[cohort][replicates]") {
  Scenario scenario = covariate_scenario("  size: 6\n  replicates: 3");
  CHECK(scenario.cohort.replicates == 3);
  CHECK(scenario.cohort.subjects_per_replicate == 6);
  CHECK(scenario.cohort.size == 18);
  const auto columns = subject_columns_of_run(scenario, 2, 5);
  const std::vector<double>& replicate = columns.at("a/replicate");
  REQUIRE(replicate.size() == 18);
  for (std::size_t i = 0; i < 18; ++i) CHECK(replicate[i] == static_cast<double>(i / 6));

  // `--subjects` sets n: N follows.
  scenario.cohort.set_subjects_per_replicate(4);
  CHECK(scenario.cohort.size == 12);
  CHECK(scenario.cohort.replicate_of(11) == 2);
  CHECK_THROWS_AS(scenario.cohort.set_subjects_per_replicate(kMaxCohortSize), Error);

  const fs::path output =
      fs::temp_directory_path() / ("ketasim_test_cohort_" + std::to_string(::getpid()) + "_replicates.h5");
  RunOptions options;
  options.output_path = output.string();
  options.threads = 2;
  run_scenario(scenario, options);
  {
    H5::H5File file(output.string(), H5F_ACC_RDONLY);
    std::int64_t replicates = 0, per_replicate = 0, per_arm = 0;
    file.openAttribute("replicates").read(H5::PredType::NATIVE_INT64, &replicates);
    file.openAttribute("subjects_per_replicate").read(H5::PredType::NATIVE_INT64, &per_replicate);
    file.openAttribute("subjects_per_arm").read(H5::PredType::NATIVE_INT64, &per_arm);
    CHECK(replicates == 3);
    CHECK(per_replicate == 4);
    CHECK(per_arm == 12);
    const H5::DataSet dataset = file.openDataSet("/arms/a/subjects/replicate");
    REQUIRE(dataset.getSpace().getSimpleExtentNpoints() == 12);
    std::vector<double> values(12);
    dataset.read(values.data(), H5::PredType::NATIVE_DOUBLE);
    for (std::size_t i = 0; i < 12; ++i) CHECK(values[i] == static_cast<double>(i / 4));
  }
  fs::remove(output);
}

TEST_CASE("replicates of a CSV cohort in order repeat the file's patients with new random effects",
          "[cohort][replicates][csv]") {
  Scenario scenario = covariate_scenario("  from_csv: example_patients.csv\n  replicates: 2");
  CHECK(scenario.cohort.size == 40);
  const CohortSampler sampler(scenario, *find_builtin_model(scenario.model.name));
  const Subject a = sampler.draw(3), b = sampler.draw(23);
  CHECK(a.table_row == 3);
  CHECK(b.table_row == 3);
  CHECK(a.weight_kg == b.weight_kg);
  CHECK(a.parameters != b.parameters);
  // In order, a replicate cannot have more subjects than the file has rows.
  CHECK_THROWS_AS(scenario.cohort.set_subjects_per_replicate(21), Error);
  scenario.cohort.set_subjects_per_replicate(10);
  CHECK(CohortSampler(scenario, *find_builtin_model(scenario.model.name)).draw(10).table_row == 0);
}

TEST_CASE("a random effect drawn last leaves every other draw of every subject as it was", "[cohort]") {
  // ketamine_pd's ad_magnitude has {logit_sd, order: last}: the same card without that variability
  // must give every subject the same values of every other parameter; drawn in parameter order
  // instead, it would shift the draws of the parameters after it (the card's pharmacokinetics).
  Scenario scenario;
  scenario.model.name = "ketamine_venous";
  scenario.cohort.size = 200;
  scenario.cohort.seed = 4242;
  scenario.cohort.variability.from_card = true;
  const ModelCard& shipped = *find_builtin_model(scenario.model.name);
  const auto ad = static_cast<std::size_t>(shipped.index_of("ad_magnitude"));
  REQUIRE(shipped.parameters[ad].iiv.kind == IivKind::logit_normal);
  REQUIRE(shipped.parameters[ad].iiv.drawn_last);
  ModelCard without = shipped;
  without.parameters[ad].iiv = Iiv{};
  ModelCard in_order = shipped;
  in_order.parameters[ad].iiv.drawn_last = false;
  const CohortSampler with_last(scenario, shipped), with_none(scenario, without), with_in_order(scenario, in_order);
  int other_parameters_changed_in_order = 0;
  std::vector<double> ad_values;
  for (int i = 0; i < 200; ++i) {
    const Subject a = with_last.draw(i), b = with_none.draw(i), c = with_in_order.draw(i);
    for (std::size_t p = 0; p < a.parameters.size(); ++p) {
      if (p == ad) continue;
      CHECK(a.parameters[p] == b.parameters[p]);
      if (c.parameters[p] != b.parameters[p]) ++other_parameters_changed_in_order;
    }
    CHECK(b.parameters[ad] == shipped.parameters[ad].value);
    ad_values.push_back(a.parameters[ad]);
    CHECK((a.parameters[ad] > 0.0 && a.parameters[ad] < 1.0));
  }
  CHECK(std::set<double>(ad_values.begin(), ad_values.end()).size() == ad_values.size());
  CHECK(other_parameters_changed_in_order > 0);
}
