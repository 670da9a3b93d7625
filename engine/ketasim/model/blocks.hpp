#pragma once
// How subjects are split: into contiguous blocks for threads and for writing, into contiguous
// shares for shards of a run (and, next, MPI ranks). One small function each, tested on their own.

#include <cstdint>
#include <optional>
#include <string_view>
#include <vector>

namespace ketasim {

struct SubjectRange {
  std::int64_t first = 0;
  std::int64_t count = 0;
  friend bool operator==(const SubjectRange&, const SubjectRange&) = default;
};

// Consecutive blocks of `block_size` subjects (the last may be shorter) covering `range` exactly.
std::vector<SubjectRange> split_into_blocks(SubjectRange range, std::int64_t block_size);
// The same blocks one at a time, without a list (2^40 subjects make 2^28 blocks of 4096): how many
// there are, and block `index` of them.
std::int64_t block_count(SubjectRange range, std::int64_t block_size);
SubjectRange block_of(SubjectRange range, std::int64_t block_size, std::int64_t index);

// The contiguous share of worker `part` (0-based) among `parts`: shares differ by at most one
// subject, earlier parts take the extra ones, and together they cover [0, total) exactly.
SubjectRange share_of(std::int64_t total, std::int64_t parts, std::int64_t part);

// One shard of a run split into `count` (`ketasim run --shard INDEX/COUNT`), counted from 1 as
// Slurm array tasks usually are (`--array=1-COUNT`).
struct Shard {
  std::int64_t index = 1;  // 1 ... count
  std::int64_t count = 1;
  friend bool operator==(const Shard&, const Shard&) = default;
};

// The subjects of every arm that `shard` computes: share_of(total, count, index - 1), so the shards
// of a split cover [0, total) exactly, in order, each subject once.
SubjectRange shard_subjects(std::int64_t total, Shard shard);

// "INDEX/COUNT" with whole numbers 1 <= INDEX <= COUNT <= kMaxShards (no signs, spaces or other
// characters); nullopt for anything else.
inline constexpr std::int64_t kMaxShards = std::int64_t{1} << 40;  // the most subjects an arm may have
std::optional<Shard> parse_shard(std::string_view text);

}  // namespace ketasim
