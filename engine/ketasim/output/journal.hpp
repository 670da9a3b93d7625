#pragma once
// The journal of a run (`ketasim run --resume`, docs/hpc.md "Resume"): one append-only file next
// to the output, `<output>.journal`, that receives every finished block of subjects as the run
// writes it to its temporary output file, made durable (fdatasync) before the block counts as done.
// A run that is killed, pre-empted or stopped by SIGTERM keeps it; `--resume` reads the journaled
// blocks back instead of simulating them and simulates only the others, so the finished file is
// the one an uninterrupted run writes, bit for bit.
//
// File format (little-endian, as every platform ketasim builds on):
//   "KETASIM-JOURNAL\n"  16 bytes
//   u32 format version   (kJournalFormatVersion)
//   record: the run's identity (JournalIdentity)
//   record: a block, any number of times, in the order they finished
// and a record is
//   u32 kind (identity or block)   u64 payload bytes   u32 CRC-32 of the payload   payload
// The first record that is cut short (a torn write: the process died while appending it), does not
// match its CRC or repeats a block ends the journal: it and everything after it are discarded, and
// their blocks simulated again. A block is a whole set of arms (every arm of the same subjects), so
// a subject is never half journaled.

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <unordered_set>
#include <vector>

#include "ketasim/model/blocks.hpp"
#include "ketasim/output/hdf5_writer.hpp"
#include "ketasim/solve/results.hpp"

namespace ketasim {

inline constexpr std::uint32_t kJournalFormatVersion = 1;

// The journal of `output_path`: "<output_path>.journal"; when that name is too long for the file
// system, the output's name is cut and followed by "~" and its CRC-32 in hex, then ".journal".
std::string journal_path_for(const std::string& output_path);

// What a journal's blocks depend on: the same fields `ketasim merge` checks to refuse shards of
// another run (scenario text, seed, cohort, solver, arms and their layouts, the build), plus the
// place of the run (its shard), how its subjects are cut into blocks, and the contents of the tables
// it reads (which a result file does not store, so a merge cannot check them, but a journal can).
struct JournalIdentity {
  std::string ketasim_version;
  std::string source_revision;
  std::int64_t layout_version = 0;
  RunInfo run;  // scenario_file is not compared: the same scenario may be given by another path
  std::optional<Shard> shard;
  SubjectRange subjects;
  std::int64_t block_size = 0;
  std::vector<ArmLayout> arms;
  struct InputTable {
    std::string path;
    std::uint64_t bytes = 0;
    std::uint32_t crc32 = 0;
  };
  std::vector<InputTable> tables;  // cohort.from_csv and doses_from, as the scenario names them
};

// The identity of a run of this build: `tables` are read and checksummed here (IoError if one
// cannot be read).
JournalIdentity journal_identity(const RunInfo& run, std::optional<Shard> shard, SubjectRange subjects,
                                 std::int64_t block_size, std::vector<ArmLayout> arms,
                                 const std::vector<std::string>& tables);

// What differs between the identity a journal records and that of the run resuming from it, in
// words naming both values ("the seed is 8 in the journal, 9 in this run"); "" when nothing does.
std::string identity_difference(const JournalIdentity& journal, const JournalIdentity& run);

// One arm of a journaled block: what ResultWriter::restore needs to rebuild the PreparedBlock.
struct JournaledArm {
  SubjectBlock columns;  // without trajectories
  std::vector<PreparedBlock::Chunk> chunks;
  std::vector<PreparedBlock::Rows> rows;
};

struct JournaledBlock {
  std::int64_t index = 0;  // block_of(subjects, block_size, index)
  std::vector<JournaledArm> arms;
};

// Reads a journal from the start: the identity first (IoError when the file is not a journal of a
// version this build reads, or its identity record is damaged), then the blocks one at a time, so
// that memory stays that of one block whatever the journal's size.
class JournalReader {
 public:
  explicit JournalReader(const std::string& path);
  ~JournalReader();
  JournalReader(const JournalReader&) = delete;
  JournalReader& operator=(const JournalReader&) = delete;

  const JournalIdentity& identity() const { return identity_; }

  // The next valid block; nullopt at the end of the valid records. Blocks of another index than
  // [0, block_count) are refused as damage, as are repeats.
  std::optional<JournaledBlock> next();

  // After next() returned nullopt: the bytes of the valid records (where appending goes on), and
  // why the rest was discarded ("" when the journal ended cleanly).
  std::uint64_t valid_bytes() const { return valid_bytes_; }
  std::uint64_t discarded_bytes() const { return file_bytes_ - valid_bytes_; }
  const std::string& discarded_reason() const { return discarded_reason_; }

 private:
  struct File;
  std::unique_ptr<File> file_;
  std::string path_;
  JournalIdentity identity_;
  std::uint64_t file_bytes_ = 0;
  std::uint64_t valid_bytes_ = 0;
  std::int64_t blocks_ = 0;                // of the run, from its identity
  std::unordered_set<std::int64_t> seen_;  // the blocks read: memory grows with the journal, not the run
  std::string discarded_reason_;
};

// An existing journal opened for writing and locked (flock, exclusive): IoError naming the journal
// if another process holds the lock (a run still writing it). Taken before the journal is read, and
// handed to JournalWriter::reopen, so that no other run appends between the reading and the writing.
// File systems without flock (some network ones) are not locked.
class JournalLock {
 public:
  explicit JournalLock(const std::string& path);
  JournalLock(JournalLock&& other) noexcept;
  JournalLock& operator=(JournalLock&&) = delete;
  JournalLock(const JournalLock&) = delete;
  ~JournalLock();

 private:
  friend class JournalWriter;
  std::string path_;
  int descriptor_ = -1;
};

// Appends blocks to a journal, each made durable before append() returns. Holds an exclusive
// advisory lock (flock) on the file, so that two runs cannot write the same journal (or output).
class JournalWriter {
 public:
  // A new journal at `path` (IoError if something has that name), its identity written and flushed
  // to disk with its directory.
  static JournalWriter create(const std::string& path, const JournalIdentity& identity);
  // An existing journal, cut to `valid_bytes` (JournalReader::valid_bytes) before appending.
  static JournalWriter reopen(JournalLock lock, std::uint64_t valid_bytes, std::int64_t blocks);

  JournalWriter(JournalWriter&&) noexcept;
  JournalWriter& operator=(JournalWriter&&) noexcept;
  ~JournalWriter();  // closes the file (and releases the lock); the journal stays

  // Writes block `index` (one prepared block per arm, in arm order) and flushes it to disk
  // (fdatasync). Throws IoError; the journal then ends with a torn record, which a reader discards.
  void append(std::int64_t index, const std::vector<PreparedBlock>& arms);

  std::int64_t blocks_written() const { return blocks_written_; }

  // Closes and deletes the journal (after the output was renamed into place).
  void remove();

 private:
  JournalWriter(std::string path, int descriptor);
  std::string path_;
  int descriptor_ = -1;
  std::int64_t blocks_written_ = 0;
  std::string buffer_;  // one record, reused
};

}  // namespace ketasim
