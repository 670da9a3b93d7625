#pragma once
// How subjects are split: into contiguous blocks for threads and for writing, and (next) into
// contiguous shares for MPI ranks. One small function each, tested on their own.

#include <cstdint>
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

}  // namespace ketasim
