#pragma once
// The engine's one quantile: Hyndman & Fan type 7, R's quantile(type = 7). With the n values
// sorted x[0..n-1] and h = (n - 1) p, Q(p) is x[floor h] when h is whole or x[floor h] equals
// x[floor h + 1], and otherwise (1 - f) x[floor h] + f x[floor h + 1], f = h - floor h, in double
// (float values widen exactly), as R computes it. It depends only on the multiset of values.
//
// The order statistics come three ways, to the same numbers:
//   InPlaceQuantiles   values in memory, reordered in place (the writer's per-time summaries);
//   SortedValues       a sample sorted once, weighted by multiplicities (statistics.hpp: bootstrap);
//   RadixSelection     exact selection with bounded memory, over values scanned several times
//                      (QuantileAccumulator: the end-of-run report; the writer, for cohorts whose
//                      time column does not fit in memory).

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <memory>
#include <span>
#include <type_traits>
#include <vector>

namespace ketasim {

// Where the p-quantile of `count` sorted values lies: x[low], or between x[low] and x[low + 1]
// when fraction > 0 (then low + 1 < count).
struct Type7Rank {
  std::uint64_t low = 0;
  double fraction = 0.0;
};
Type7Rank type7_rank(std::uint64_t count, double probability);  // count > 0, probability in [0, 1]

// R's arithmetic once x[low] and (if the fraction is not 0) x[low + 1] are known.
inline double type7_value(double low, double high, double fraction) {
  return fraction == 0.0 || low == high ? low : (1.0 - fraction) * low + fraction * high;
}

// Type-7 quantile of the finite values (NaN and infinities are left out); NaN if there are none.
double quantile(std::vector<double> values, double probability);

// Quantiles of values in memory, which it reorders (nth_element); each quantile narrows the
// search of the next (once x[r] is in its sorted place, a later rank above r is selected among the
// values after it only). The values must not contain NaN. No values: NaN.
template <class Value>
class InPlaceQuantiles {
 public:
  explicit InPlaceQuantiles(std::span<Value> values) : values_(values) {}

  double operator()(double probability) {
    if (values_.empty()) return std::numeric_limits<double>::quiet_NaN();
    const Type7Rank rank = type7_rank(values_.size(), probability);
    const auto low = static_cast<std::size_t>(rank.low);
    select(low);
    if (rank.fraction == 0.0) return values_[low];
    // Everything after a value in its sorted place is >= it, so x[low + 1] is their minimum.
    return type7_value(values_[low], *std::min_element(at(low + 1), values_.end()), rank.fraction);
  }

 private:
  auto at(std::size_t index) { return values_.begin() + static_cast<std::ptrdiff_t>(index); }

  void select(std::size_t rank) {
    std::size_t begin = 0;
    std::size_t end = values_.size();
    for (const std::size_t placed : placed_) {
      if (placed == rank) return;
      if (placed < rank) begin = std::max(begin, placed + 1);
      if (placed > rank) end = std::min(end, placed);
    }
    std::nth_element(at(begin), at(rank), at(end));
    placed_.push_back(rank);
  }

  std::span<Value> values_;
  std::vector<std::size_t> placed_;
};

// Exact order statistics of several multisets ("series") at once, with memory that does not
// depend on their sizes: most significant digit first, each pass over the values counts, for
// every rank wanted, the values that share the digits found so far by their next digit, and
// keeps the digit under which the rank falls. A value's order key is its IEEE bits, flipped so
// that unsigned order is numeric order (-0 sorts just below +0); so float takes 4 passes and
// double 8. Values must not be NaN, and every pass must add the same values (in any order).
//
//   RadixSelection<float> selection(ranks);
//   while (!selection.done()) { for each value v of series s: selection.add(s, v); selection.end_pass(); }
//   selection.value(s, k)   // the value of rank ranks[s][k] of series s
template <class Value>
class RadixSelection {
  static_assert(std::is_same_v<Value, float> || std::is_same_v<Value, double>);

 public:
  using Key = std::conditional_t<std::is_same_v<Value, float>, std::uint32_t, std::uint64_t>;
  static constexpr int kKeyBits = 8 * sizeof(Key);
  static constexpr int kDigitBits = 8;
  static constexpr int kPasses = kKeyBits / kDigitBits;
  static constexpr std::size_t kBuckets = std::size_t{1} << kDigitBits;

  // ranks[s]: the 0-based ranks wanted in series s, each below the number of values it will have.
  explicit RadixSelection(const std::vector<std::vector<std::uint64_t>>& ranks) : first_target_(ranks.size() + 1, 0) {
    for (std::size_t s = 0; s < ranks.size(); ++s) {
      for (const std::uint64_t rank : ranks[s]) targets_.push_back({rank, 0, {}});
      first_target_[s + 1] = targets_.size();
    }
  }

  bool done() const { return pass_ == kPasses || targets_.empty(); }

  void add(std::size_t series, Value value) {
    const Key key = key_of(value);
    const int shift = kKeyBits - kDigitBits * (pass_ + 1);
    const auto digit = static_cast<std::size_t>((key >> shift) & (kBuckets - 1));
    const Key known = pass_ == 0 ? 0 : key >> (shift + kDigitBits);  // the digits found so far
    for (std::size_t t = first_target_[series]; t < first_target_[series + 1]; ++t) {
      Target& target = targets_[t];
      if (target.prefix == known) ++target.histogram[digit];
    }
  }

  void end_pass() {
    for (Target& target : targets_) {
      std::size_t digit = 0;
      while (digit + 1 < kBuckets && target.rank >= target.histogram[digit]) target.rank -= target.histogram[digit++];
      target.prefix = static_cast<Key>((target.prefix << kDigitBits) | digit);
      target.histogram.fill(0);
    }
    ++pass_;
  }

  // After done(): the value of the k-th rank given for `series`.
  Value value(std::size_t series, std::size_t k) const { return value_of(targets_[first_target_[series] + k].prefix); }

  static Key key_of(Value value) {
    const Key bits = std::bit_cast<Key>(value);
    return (bits >> (kKeyBits - 1)) != 0 ? static_cast<Key>(~bits) : static_cast<Key>(bits | kSignBit);
  }
  static Value value_of(Key key) {
    return std::bit_cast<Value>((key & kSignBit) != 0 ? static_cast<Key>(key & ~kSignBit) : static_cast<Key>(~key));
  }

 private:
  static constexpr Key kSignBit = Key{1} << (kKeyBits - 1);
  struct Target {
    std::uint64_t rank;  // within the values that share `prefix`
    Key prefix;          // the high digits found so far
    std::array<std::uint64_t, kBuckets> histogram;
  };
  std::vector<Target> targets_;
  std::vector<std::size_t> first_target_;  // series s has targets [first_target_[s], first_target_[s + 1])
  int pass_ = 0;
};

// The ranks whose values give the type-7 quantiles at `probabilities` of `count` values (one or
// two each), and the quantiles once those values are known. count > 0.
std::vector<std::uint64_t> type7_ranks(std::uint64_t count, std::span<const double> probabilities);
std::vector<double> type7_from_ranks(std::uint64_t count, std::span<const double> probabilities,
                                     std::span<const std::uint64_t> ranks, std::span<const double> values);

// A multiset of doubles added one at a time, with exact type-7 quantiles at the end and memory
// that does not depend on how many were added: up to `memory_values` values are kept in memory;
// past that, every value goes to an unlinked temporary file in `spill_directory` (gone with the
// process, however it ends), and the quantiles are selected from it by RadixSelection (8 reads).
class QuantileAccumulator {
 public:
  QuantileAccumulator(std::size_t memory_values, std::filesystem::path spill_directory);
  ~QuantileAccumulator();
  QuantileAccumulator(QuantileAccumulator&&) noexcept;
  QuantileAccumulator& operator=(QuantileAccumulator&&) noexcept;

  // NaN and infinities are left out, as by quantile(). Throws IoError if the spill file cannot be
  // written.
  void add(double value);
  std::uint64_t count() const { return count_; }
  bool spilled() const;
  // NaN for each probability when no value was added.
  std::vector<double> quantiles(std::span<const double> probabilities);

 private:
  class SpillFile;
  std::size_t memory_values_;
  std::filesystem::path spill_directory_;
  std::vector<double> values_;
  std::unique_ptr<SpillFile> spill_;
  std::uint64_t count_ = 0;
};

}  // namespace ketasim
