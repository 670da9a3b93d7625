// Per-subject random streams, the cohort sampler and the subject blocks.

#include <catch2/catch.hpp>

#include <cmath>
#include <numeric>

#include "ketasim/blocks.hpp"
#include "ketasim/cohort.hpp"
#include "ketasim/random_stream.hpp"

using namespace ketasim;

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

double normal_pdf(double x) { return std::exp(-0.5 * x * x) / std::sqrt(2.0 * M_PI); }
double normal_cdf(double x) { return 0.5 * std::erfc(-x / std::sqrt(2.0)); }
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
    eta_v1.push_back(std::log(s.parameters[static_cast<std::size_t>(v1)] / (card.parameters[static_cast<std::size_t>(v1)].value * ratio)));
    eta_k10.push_back(std::log(s.parameters[static_cast<std::size_t>(k10)] /
                               (card.parameters[static_cast<std::size_t>(k10)].value * std::pow(ratio, -0.25))));
  }
  const auto mean = [](const std::vector<double>& x) { return std::accumulate(x.begin(), x.end(), 0.0) / static_cast<double>(x.size()); };
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
