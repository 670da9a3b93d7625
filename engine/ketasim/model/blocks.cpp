#include "ketasim/model/blocks.hpp"

#include <algorithm>
#include <charconv>
#include <stdexcept>

namespace ketasim {

std::int64_t block_count(SubjectRange range, std::int64_t block_size) {
  if (block_size <= 0) throw std::invalid_argument("block size must be positive");
  return range.count / block_size + (range.count % block_size != 0 ? 1 : 0);
}

SubjectRange block_of(SubjectRange range, std::int64_t block_size, std::int64_t index) {
  const std::int64_t offset = index * block_size;
  return {range.first + offset, std::min(block_size, range.count - offset)};
}

std::vector<SubjectRange> split_into_blocks(SubjectRange range, std::int64_t block_size) {
  std::vector<SubjectRange> blocks;
  for (std::int64_t index = 0; index < block_count(range, block_size); ++index)
    blocks.push_back(block_of(range, block_size, index));
  return blocks;
}

SubjectRange share_of(std::int64_t total, std::int64_t parts, std::int64_t part) {
  if (parts <= 0 || part < 0 || part >= parts) throw std::invalid_argument("part must be in [0, parts)");
  const std::int64_t base = total / parts;
  const std::int64_t extra = total % parts;
  const std::int64_t first = part * base + std::min(part, extra);
  return {first, base + (part < extra ? 1 : 0)};
}

SubjectRange shard_subjects(std::int64_t total, Shard shard) {
  return share_of(total, shard.count, shard.index - 1);
}

std::optional<Shard> parse_shard(std::string_view text) {
  const auto number = [](std::string_view digits) -> std::optional<std::int64_t> {
    if (digits.empty() || digits.front() < '0' || digits.front() > '9') return std::nullopt;  // no sign
    std::int64_t value = 0;
    const auto [end, error] = std::from_chars(digits.data(), digits.data() + digits.size(), value);
    if (error != std::errc() || end != digits.data() + digits.size()) return std::nullopt;
    return value;
  };
  const std::size_t slash = text.find('/');
  if (slash == std::string_view::npos) return std::nullopt;
  const std::optional<std::int64_t> index = number(text.substr(0, slash));
  const std::optional<std::int64_t> count = number(text.substr(slash + 1));
  if (!index || !count || *index < 1 || *index > *count || *count > kMaxShards) return std::nullopt;
  return Shard{*index, *count};
}

}  // namespace ketasim
