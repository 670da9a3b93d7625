// The one quantile (quantiles.hpp), every way it is computed, against a sort-based oracle: R's
// quantile(type = 7) on the sorted finite values. Multisets with many ties, NaN, infinities and
// both zeros; the bounded-memory paths (radix selection, the spilled accumulator) must give the
// very same numbers as the in-memory ones.

#include <algorithm>
#include <bit>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <random>
#include <span>
#include <vector>

#include "ketasim/analysis/statistics.hpp"
#include "ketasim/base/quantiles.hpp"

using namespace ketasim;

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

// Numeric order with -0 before +0 (the order RadixSelection keys have), so that the oracle's
// order statistics are defined to the bit.
bool before(double a, double b) {
  return a < b || (a == b && std::signbit(a) && !std::signbit(b));
}

std::vector<double> sorted_finite(std::vector<double> values) {
  std::erase_if(values, [](double v) { return !std::isfinite(v); });
  std::sort(values.begin(), values.end(), before);
  return values;
}

// R: h = (n - 1) p; x[lo] if h is whole or x[lo] == x[hi]; else (1 - f) x[lo] + f x[hi].
double oracle(const std::vector<double>& values, double p) {
  const std::vector<double> x = sorted_finite(values);
  if (x.empty()) return kNaN;
  const double h = static_cast<double>(x.size() - 1) * p;
  const auto lo = static_cast<std::size_t>(std::floor(h));
  const double f = h - static_cast<double>(lo);
  if (f == 0.0 || lo + 1 == x.size() || x[lo] == x[lo + 1]) return x[lo];
  return (1.0 - f) * x[lo] + f * x[lo + 1];
}

bool same(double a, double b) {
  return (std::isnan(a) && std::isnan(b)) || a == b;
}

// Values drawn from a small set, so ties are the rule: both zeros, negatives, and (unless
// `finite_only`) NaN and the infinities.
std::vector<double> tie_heavy(std::mt19937_64& random, std::size_t n, bool finite_only) {
  static const std::vector<double> pool{-2.5, -1.0, -0.0, 0.0, 0.0, 1e-300, 0.125, 3.0, 3.0, 7.75, 1e300};
  static const std::vector<double> special{kNaN, kInf, -kInf};
  std::vector<double> values;
  for (std::size_t i = 0; i < n; ++i) {
    if (!finite_only && random() % 7 == 0) {
      values.push_back(special[random() % special.size()]);
    } else {
      values.push_back(pool[random() % pool.size()] *
                       (random() % 3 == 0 ? 1.0 : 1.0 + static_cast<double>(random() % 4)));
    }
  }
  return values;
}

const std::vector<double> kProbabilities{0.0, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 1.0, 1.0 / 3.0};

}  // namespace

TEST_CASE("quantile() equals the sorted type-7 oracle, ties, NaN, infinities and zeros included", "[quantiles]") {
  std::mt19937_64 random(1);
  for (std::size_t n = 0; n < 40; ++n) {
    for (int repeat = 0; repeat < 20; ++repeat) {
      const std::vector<double> values = tie_heavy(random, n, false);
      for (const double p : kProbabilities) {
        INFO("n " << n << ", p " << p);
        CHECK(same(quantile(values, p), oracle(values, p)));
      }
    }
  }
  CHECK(quantile({1.0, 2.0, 4.0, 5.0}, 0.05) == 0.85 * 1.0 + 0.15 * 2.0);  // (1 - f) x[0] + f x[1], f = 0.15
  CHECK(std::isnan(quantile({kNaN, kInf}, 0.5)));
}

TEST_CASE("weighted quantiles of sorted values equal quantile() of the expanded multiset", "[quantiles]") {
  std::mt19937_64 random(2);
  for (int repeat = 0; repeat < 200; ++repeat) {
    const std::vector<double> values = tie_heavy(random, 1 + random() % 30, false);
    std::vector<std::uint32_t> multiplicity(values.size());
    std::vector<double> expanded;
    for (std::size_t j = 0; j < values.size(); ++j) {
      multiplicity[j] = static_cast<std::uint32_t>(random() % 3);
      for (std::uint32_t m = 0; m < multiplicity[j]; ++m) expanded.push_back(values[j]);
    }
    const SortedValues sorted(values);
    for (const double p : kProbabilities) CHECK(same(sorted.quantile(multiplicity, p), oracle(expanded, p)));
  }
}

TEST_CASE("radix selection gives every order statistic to the bit, several series at once", "[quantiles]") {
  std::mt19937_64 random(3);
  std::vector<std::vector<double>> series;
  for (int s = 0; s < 12; ++s) series.push_back(sorted_finite(tie_heavy(random, 1 + random() % 50, true)));
  series.push_back({-0.0, -0.0, 0.0});  // both zeros alone
  series.push_back({std::numeric_limits<double>::denorm_min(), -std::numeric_limits<double>::max(), kInf, -kInf});
  std::sort(series.back().begin(), series.back().end(), before);
  std::vector<std::vector<std::uint64_t>> ranks;
  for (const auto& values : series) {
    ranks.emplace_back();
    for (std::uint64_t r = 0; r < values.size(); ++r) ranks.back().push_back(r);
  }
  SECTION("double") {
    RadixSelection<double> selection(ranks);
    int passes = 0;
    while (!selection.done()) {
      for (std::size_t s = 0; s < series.size(); ++s) {
        std::vector<double> shuffled = series[s];
        std::shuffle(shuffled.begin(), shuffled.end(), random);  // any order, each pass
        for (const double value : shuffled) selection.add(s, value);
      }
      selection.end_pass();
      ++passes;
    }
    CHECK(passes == 8);
    for (std::size_t s = 0; s < series.size(); ++s)
      for (std::size_t r = 0; r < series[s].size(); ++r)
        CHECK(std::bit_cast<std::uint64_t>(selection.value(s, r)) == std::bit_cast<std::uint64_t>(series[s][r]));
  }
  SECTION("float") {
    RadixSelection<float> selection(ranks);
    while (!selection.done()) {
      for (std::size_t s = 0; s < series.size(); ++s)
        for (const double value : series[s]) selection.add(s, static_cast<float>(value));
      selection.end_pass();
    }
    for (std::size_t s = 0; s < series.size(); ++s) {
      for (std::size_t r = 0; r < series[s].size(); ++r) {
        // float conversion keeps the order, so the rank's value is the converted value of the rank
        CHECK(std::bit_cast<std::uint32_t>(selection.value(s, r)) ==
              std::bit_cast<std::uint32_t>(static_cast<float>(series[s][r])));
      }
    }
  }
}

TEST_CASE("a quantile accumulator spilled to a file gives the numbers of one in memory", "[quantiles]") {
  std::mt19937_64 random(4);
  for (const std::size_t n : {std::size_t{0}, std::size_t{1}, std::size_t{2}, std::size_t{17}, std::size_t{300000}}) {
    const std::vector<double> values = tie_heavy(random, n, false);
    QuantileAccumulator in_memory(n + 1, std::filesystem::temp_directory_path());
    QuantileAccumulator spilled(3, std::filesystem::temp_directory_path());
    for (const double value : values) {
      in_memory.add(value);
      spilled.add(value);
    }
    CHECK_FALSE(in_memory.spilled());
    CHECK(spilled.spilled() == (spilled.count() > 3));
    const std::vector<double> a = in_memory.quantiles(kProbabilities);
    const std::vector<double> b = spilled.quantiles(kProbabilities);
    for (std::size_t k = 0; k < kProbabilities.size(); ++k) {
      INFO("n " << n << ", p " << kProbabilities[k]);
      CHECK(same(a[k], oracle(values, kProbabilities[k])));
      CHECK(same(b[k], a[k]));
    }
  }
}

TEST_CASE("a quantile accumulator that cannot spill says where and why", "[quantiles]") {
  QuantileAccumulator accumulator(1, "/nonexistent-ketasim-directory");
  accumulator.add(1.0);
  CHECK_THROWS_WITH(accumulator.add(2.0),
                    Catch::Contains("/nonexistent-ketasim-directory: cannot create the temporary file"));
}
