#include "ketasim/base/quantiles.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "ketasim/base/errors.hpp"

namespace ketasim {

namespace fs = std::filesystem;

Type7Rank type7_rank(std::uint64_t count, double probability) {
  const double position = static_cast<double>(count - 1) * probability;
  Type7Rank rank;
  rank.low = static_cast<std::uint64_t>(std::floor(position));
  rank.fraction = rank.low + 1 < count ? position - static_cast<double>(rank.low) : 0.0;
  return rank;
}

double quantile(std::vector<double> values, double probability) {
  std::erase_if(values, [](double value) { return !std::isfinite(value); });
  return InPlaceQuantiles<double>(values)(probability);
}

std::vector<std::uint64_t> type7_ranks(std::uint64_t count, std::span<const double> probabilities) {
  std::vector<std::uint64_t> ranks;
  for (const double probability : probabilities) {
    const Type7Rank rank = type7_rank(count, probability);
    ranks.push_back(rank.low);
    if (rank.fraction != 0.0) ranks.push_back(rank.low + 1);
  }
  std::sort(ranks.begin(), ranks.end());
  ranks.erase(std::unique(ranks.begin(), ranks.end()), ranks.end());
  return ranks;
}

std::vector<double> type7_from_ranks(std::uint64_t count, std::span<const double> probabilities,
                                     std::span<const std::uint64_t> ranks, std::span<const double> values) {
  const auto value_of_rank = [&](std::uint64_t rank) {
    return values[static_cast<std::size_t>(std::lower_bound(ranks.begin(), ranks.end(), rank) - ranks.begin())];
  };
  std::vector<double> quantiles;
  for (const double probability : probabilities) {
    const Type7Rank rank = type7_rank(count, probability);
    const double low = value_of_rank(rank.low);
    quantiles.push_back(rank.fraction == 0.0 ? low : type7_value(low, value_of_rank(rank.low + 1), rank.fraction));
  }
  return quantiles;
}

// Doubles appended to an unlinked file, read back in slabs. Its name never appears in a
// directory (O_TMPFILE), or is removed at once where the file system cannot do that.
class QuantileAccumulator::SpillFile {
 public:
  explicit SpillFile(const fs::path& directory) : directory_(directory) {
    descriptor_ = ::open(directory.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (descriptor_ < 0) {
      std::string name = (directory / "ketasim-values-XXXXXX").string();
      descriptor_ = ::mkostemp(name.data(), O_CLOEXEC);
      if (descriptor_ >= 0) ::unlink(name.c_str());
    }
    if (descriptor_ < 0) fail("create", errno);
    buffer_.reserve(kSlabValues);
  }
  ~SpillFile() { ::close(descriptor_); }
  SpillFile(const SpillFile&) = delete;
  SpillFile& operator=(const SpillFile&) = delete;

  void append(double value) {
    buffer_.push_back(value);
    if (buffer_.size() == kSlabValues) flush();
  }

  template <class Visit>
  void scan(const Visit& visit) {
    flush();
    std::vector<double> slab(kSlabValues);
    for (std::uint64_t first = 0; first < stored_; first += kSlabValues) {
      const auto count = static_cast<std::size_t>(std::min<std::uint64_t>(kSlabValues, stored_ - first));
      transfer(slab.data(), count, first, /*writing=*/false);
      for (std::size_t i = 0; i < count; ++i) visit(slab[i]);
    }
  }

 private:
  static constexpr std::size_t kSlabValues = std::size_t{1} << 17;  // 1 MiB

  void flush() {
    if (buffer_.empty()) return;
    transfer(buffer_.data(), buffer_.size(), stored_, /*writing=*/true);
    stored_ += buffer_.size();
    buffer_.clear();
  }

  void transfer(double* values, std::size_t count, std::uint64_t first, bool writing) {
    auto* bytes = reinterpret_cast<char*>(values);
    std::size_t left = count * sizeof(double);
    auto offset = static_cast<off_t>(first * sizeof(double));
    while (left > 0) {
      const ssize_t done =
          writing ? ::pwrite(descriptor_, bytes, left, offset) : ::pread(descriptor_, bytes, left, offset);
      if (done < 0 && errno == EINTR) continue;
      if (done <= 0) fail(writing ? "write" : "read", done < 0 ? errno : EIO);
      bytes += done;
      offset += done;
      left -= static_cast<std::size_t>(done);
    }
  }

  [[noreturn]] void fail(const char* operation, int error_number) const {
    throw IoError(
        directory_.string() + ": cannot " + operation +
        " the temporary file that holds the values of the end-of-run statistics: " + std::strerror(error_number));
  }

  fs::path directory_;
  int descriptor_ = -1;
  std::vector<double> buffer_;
  std::uint64_t stored_ = 0;  // values in the file
};

QuantileAccumulator::QuantileAccumulator(std::size_t memory_values, fs::path spill_directory)
    : memory_values_(memory_values), spill_directory_(std::move(spill_directory)) {}
QuantileAccumulator::~QuantileAccumulator() = default;
QuantileAccumulator::QuantileAccumulator(QuantileAccumulator&&) noexcept = default;
QuantileAccumulator& QuantileAccumulator::operator=(QuantileAccumulator&&) noexcept = default;

bool QuantileAccumulator::spilled() const {
  return spill_ != nullptr;
}

void QuantileAccumulator::add(double value) {
  if (!std::isfinite(value)) return;
  ++count_;
  if (spill_) {
    spill_->append(value);
    return;
  }
  values_.push_back(value);
  if (values_.size() <= memory_values_) return;
  spill_ = std::make_unique<SpillFile>(spill_directory_);
  for (const double kept : values_) spill_->append(kept);
  values_ = std::vector<double>();
}

std::vector<double> QuantileAccumulator::quantiles(std::span<const double> probabilities) {
  if (count_ == 0) return std::vector<double>(probabilities.size(), std::numeric_limits<double>::quiet_NaN());
  if (!spill_) {
    InPlaceQuantiles<double> in_memory(values_);
    std::vector<double> quantiles;
    for (const double probability : probabilities) quantiles.push_back(in_memory(probability));
    return quantiles;
  }
  const std::vector<std::uint64_t> ranks = type7_ranks(count_, probabilities);
  RadixSelection<double> selection({ranks});
  while (!selection.done()) {
    spill_->scan([&](double value) { selection.add(0, value); });
    selection.end_pass();
  }
  std::vector<double> values;
  for (std::size_t k = 0; k < ranks.size(); ++k) values.push_back(selection.value(0, k));
  return type7_from_ranks(count_, probabilities, ranks, values);
}

}  // namespace ketasim
