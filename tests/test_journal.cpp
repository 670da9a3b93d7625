// The journal of a run (output/journal.hpp): blocks appended are read back exactly; a torn last
// record (the process died while appending) and a record that fails its CRC end the valid part; a
// journal of another run is told apart from this run's, naming what differs; a restored block must
// be the one prepare() makes. The end-to-end kill -9 and --resume tests are tests/cli/resume.sh.

#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <optional>
#include <string>
#include <vector>

#include "ketasim/base/errors.hpp"
#include "ketasim/output/hdf5_writer.hpp"
#include "ketasim/output/journal.hpp"
#include "ketasim/solve/results.hpp"

namespace fs = std::filesystem;
using namespace ketasim;

namespace {

constexpr std::int64_t kSubjects = 130;  // two whole chunk rows of 64, and an edge row of 2
constexpr std::int64_t kBlockSize = 40;  // blocks that fill whole chunks, part of one, or both
constexpr std::size_t kTimePoints = 3;

class JournalDirectory {
 public:
  JournalDirectory() {
    path_ = fs::temp_directory_path() / ("ketasim_journal_test_" + std::to_string(::getpid()));
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~JournalDirectory() {
    std::error_code error;
    fs::remove_all(path_, error);
  }
  std::string file(const std::string& name) const { return (path_ / name).string(); }

 private:
  fs::path path_;
};

std::vector<ArmLayout> layouts() {
  ArmLayout arm;
  arm.name = "weekly";
  arm.description = "once a week";
  arm.time_h = {0.0, 1.0, 2.0};
  arm.trajectories = {{"plasma", "ng/mL", 1, "concentration"}, {"madrs", "", 1, "score"}};
  arm.subject_columns = {{"weight_kg", "kg", 1, "weight"}};
  arm.metrics = {{{"cmax", "ng/mL", 1, "peak"}, MetricId::cmax, LinkRole::none}};
  return {arm};
}

RunInfo run_info() {
  RunInfo info;
  info.scenario_file = "resume.yaml";
  info.scenario_yaml = "name: resume\n";
  info.scenario_name = "resume";
  info.model_name = "ketamine_venous";
  info.seed = 7;
  info.subjects_per_arm = kSubjects;
  info.subjects_per_replicate = kSubjects;
  info.solver_method = "auto";
  info.solver_rtol = 1e-8;
  info.solver_atol = 1e-10;
  return info;
}

JournalIdentity identity() {
  return journal_identity(run_info(), std::nullopt, {0, kSubjects}, kBlockSize, layouts(), {});
}

SubjectBlock block_of_subjects(std::int64_t index) {
  const SubjectRange subjects = block_of({0, kSubjects}, kBlockSize, index);
  SubjectBlock block;
  block.first_subject = subjects.first;
  block.count = subjects.count;
  block.trajectories.resize(2);
  block.subject_columns.resize(1);
  block.metrics.resize(1);
  for (std::int64_t s = subjects.first; s < subjects.first + subjects.count; ++s) {
    for (std::size_t k = 0; k < 2; ++k)
      for (std::size_t t = 0; t < kTimePoints; ++t)
        block.trajectories[k].push_back(static_cast<float>(s) + 0.25f * static_cast<float>(k * kTimePoints + t));
    block.subject_columns[0].push_back(50.0 + static_cast<double>(s));
    block.metrics[0].push_back(static_cast<double>(s) / 3.0);
    block.status.push_back(s == 41 ? 1 : 0);
    block.message.push_back(s == 41 ? "step size underflow" : "");
  }
  return block;
}

std::vector<PreparedBlock> prepared(const ResultWriter& writer, std::int64_t index) {
  std::vector<PreparedBlock> arms;
  arms.push_back(writer.prepare(block_of_subjects(index)));
  return arms;
}

std::uintmax_t size_of(const std::string& path) {
  return fs::file_size(path);
}

std::vector<std::int64_t> indices_read(JournalReader& reader) {
  std::vector<std::int64_t> indices;
  while (std::optional<JournaledBlock> block = reader.next()) indices.push_back(block->index);
  return indices;
}

void flip_byte(const std::string& path, std::uintmax_t offset) {
  std::fstream file(path, std::ios::in | std::ios::out | std::ios::binary);
  file.seekg(static_cast<std::streamoff>(offset));
  char byte = 0;
  file.get(byte);
  file.seekp(static_cast<std::streamoff>(offset));
  file.put(static_cast<char>(byte ^ 0x5a));
}

// A journal of blocks 2, 0 and 3 (in that order, as threads finish them); the file size after
// each record.
struct WrittenJournal {
  std::string path;
  std::vector<std::uintmax_t> ends;  // ends[0]: after the identity
};

WrittenJournal write_journal(const JournalDirectory& directory, const ResultWriter& writer) {
  WrittenJournal written{directory.file("out.h5.journal"), {}};
  JournalWriter journal = JournalWriter::create(written.path, identity());
  written.ends.push_back(size_of(written.path));
  for (const std::int64_t index : {2, 0, 3}) {
    journal.append(index, prepared(writer, index));
    written.ends.push_back(size_of(written.path));
  }
  return written;
}

}  // namespace

TEST_CASE("Journal: appended blocks are read back exactly, and restore into the writer", "[journal]") {
  const JournalDirectory directory;
  ResultWriter writer(directory.file("out.h5"), run_info(), layouts(), kSubjects);
  const WrittenJournal written = write_journal(directory, writer);
  JournalReader reader(written.path);
  CHECK(identity_difference(reader.identity(), identity()).empty());
  for (const std::int64_t index : {2, 0, 3}) {
    std::optional<JournaledBlock> block = reader.next();
    REQUIRE(block);
    CHECK(block->index == index);
    REQUIRE(block->arms.size() == 1);
    const PreparedBlock original = std::move(prepared(writer, index).front());
    JournaledArm& arm = block->arms.front();
    CHECK(arm.columns.first_subject == original.columns().first_subject);
    CHECK(arm.columns.subject_columns == original.columns().subject_columns);
    CHECK(arm.columns.metrics == original.columns().metrics);
    CHECK(arm.columns.status == original.columns().status);
    CHECK(arm.columns.message == original.columns().message);
    REQUIRE(arm.chunks.size() == original.chunks().size());
    for (std::size_t i = 0; i < arm.chunks.size(); ++i) CHECK(arm.chunks[i].bytes == original.chunks()[i].bytes);
    REQUIRE(arm.rows.size() == original.uncompressed_rows().size());
    for (std::size_t i = 0; i < arm.rows.size(); ++i)
      CHECK(arm.rows[i].trajectories == original.uncompressed_rows()[i].trajectories);
    writer.write(writer.restore(std::move(arm.columns), std::move(arm.chunks), std::move(arm.rows)));
  }
  CHECK_FALSE(reader.next());
  CHECK(reader.discarded_reason().empty());
  CHECK(reader.valid_bytes() == written.ends.back());
  // Block 1 was never journaled: the writer still misses it, and takes it.
  writer.write(writer.prepare(block_of_subjects(1)));
  writer.finish();
  CHECK(fs::exists(directory.file("out.h5")));
}

TEST_CASE("Journal: a torn last record is discarded, and appending goes on after the valid ones", "[journal]") {
  const JournalDirectory directory;
  ResultWriter writer(directory.file("out.h5"), run_info(), layouts(), kSubjects);
  const WrittenJournal written = write_journal(directory, writer);
  const std::uintmax_t last_start = written.ends[2];
  // Cut inside the frame of the last record, and inside its payload.
  for (const std::uintmax_t cut : {last_start + 5, last_start + 40, written.ends[3] - 1}) {
    fs::copy_file(written.path, directory.file("torn.journal"), fs::copy_options::overwrite_existing);
    fs::resize_file(directory.file("torn.journal"), cut);
    JournalReader reader(directory.file("torn.journal"));
    CHECK(indices_read(reader) == std::vector<std::int64_t>{2, 0});
    CHECK(reader.valid_bytes() == last_start);
    CHECK(reader.discarded_bytes() == cut - last_start);
    CHECK_THAT(reader.discarded_reason(), Catch::Contains("cut short"));
  }
  // Resuming cuts the torn record off and appends after the valid ones.
  {
    JournalReader reader(directory.file("torn.journal"));
    indices_read(reader);
    JournalWriter journal = JournalWriter::reopen(JournalLock(directory.file("torn.journal")), reader.valid_bytes(), 2);
    journal.append(1, prepared(writer, 1));
    CHECK(journal.blocks_written() == 3);
  }
  JournalReader reader(directory.file("torn.journal"));
  CHECK(indices_read(reader) == std::vector<std::int64_t>{2, 0, 1});
  CHECK(reader.discarded_reason().empty());
}

TEST_CASE("Journal: a record that fails its CRC-32 ends the valid part", "[journal]") {
  const JournalDirectory directory;
  ResultWriter writer(directory.file("out.h5"), run_info(), layouts(), kSubjects);
  const WrittenJournal written = write_journal(directory, writer);
  flip_byte(written.path, written.ends[1] + 16 + 20);  // inside the payload of the second block (0)
  JournalReader reader(written.path);
  CHECK(indices_read(reader) == std::vector<std::int64_t>{2});
  CHECK(reader.valid_bytes() == written.ends[1]);
  CHECK_THAT(reader.discarded_reason(), Catch::Contains("CRC-32"));
}

TEST_CASE("Journal: a repeated block ends the valid part", "[journal]") {
  const JournalDirectory directory;
  ResultWriter writer(directory.file("out.h5"), run_info(), layouts(), kSubjects);
  const std::string path = directory.file("out.h5.journal");
  JournalWriter journal = JournalWriter::create(path, identity());
  journal.append(0, prepared(writer, 0));
  journal.append(0, prepared(writer, 0));
  JournalReader reader(path);
  CHECK(indices_read(reader) == std::vector<std::int64_t>{0});
  CHECK_THAT(reader.discarded_reason(), Catch::Contains("block 0 a second time"));
}

TEST_CASE("Journal: the identity of another run is told apart, naming what differs", "[journal]") {
  const JournalIdentity ours = identity();
  CHECK(identity_difference(ours, ours).empty());
  JournalIdentity other = ours;
  other.run.scenario_file = "elsewhere/resume.yaml";  // the same scenario under another path resumes
  CHECK(identity_difference(other, ours).empty());

  other = ours;
  other.run.scenario_yaml = "name: resume\nseed: 8\n";
  other.run.seed = 8;
  CHECK_THAT(identity_difference(other, ours), Catch::Contains("the scenario differs") && Catch::Contains("seed is 8"));
  other = ours;
  other.run.seed = 8;
  CHECK_THAT(identity_difference(other, ours), Catch::Contains("the seed is 8 in the journal, 7 in this run"));
  other = ours;
  other.source_revision = "other-build";
  CHECK_THAT(identity_difference(other, ours),
             Catch::Contains("the program is ketasim") && Catch::Contains("other-build"));
  other = ours;
  other.shard = Shard{1, 2};
  CHECK_THAT(identity_difference(other, ours), Catch::Contains("shard 1/2 in the journal"));
  other = ours;
  other.block_size = 64;
  CHECK_THAT(identity_difference(other, ours), Catch::Contains("--block-size"));
  other = ours;
  other.arms[0].time_h.back() = 3.0;
  CHECK_THAT(identity_difference(other, ours), Catch::Contains("arm 'weekly' differs in its time grid"));
  other = ours;
  JournalIdentity with_table = ours;
  other.tables = {{"cohort.csv", 10, 1}};
  with_table.tables = {{"cohort.csv", 10, 2}};
  CHECK_THAT(identity_difference(other, with_table), Catch::Contains("the table cohort.csv changed"));
}

TEST_CASE("Journal: the identity record is written and read back whole, a damaged one refused", "[journal]") {
  const JournalDirectory directory;
  const std::string path = directory.file("out.h5.journal");
  JournalIdentity ours = identity();
  ours.shard = Shard{2, 3};
  ours.tables = {{"doses.csv", 1234, 0xdeadbeef}};
  { JournalWriter::create(path, ours); }
  CHECK_THROWS_WITH(JournalWriter::create(path, ours), Catch::Contains("cannot create the journal"));
  {
    const JournalReader reader(path);
    CHECK(identity_difference(reader.identity(), ours).empty());
    CHECK(reader.identity().run.scenario_file == "resume.yaml");
  }
  flip_byte(path, 16 + 4 + 16 + 8);  // inside the identity's payload
  CHECK_THROWS_AS(JournalReader(path), IoError);
  CHECK_THROWS_WITH(JournalReader(path), Catch::Contains("CRC-32") && Catch::Contains("delete it to start afresh"));
  std::ofstream(directory.file("text.journal")) << "not a journal at all\n";
  CHECK_THROWS_WITH(JournalReader(directory.file("text.journal")),
                    Catch::Contains("does not start as a ketasim journal"));
}

TEST_CASE("Journal: a second writer of the same journal is refused while the first holds it", "[journal]") {
  const JournalDirectory directory;
  const std::string path = directory.file("out.h5.journal");
  const JournalWriter first = JournalWriter::create(path, identity());
  CHECK_THROWS_WITH(JournalLock(path), Catch::Contains("another ketasim run is writing this journal"));
}

TEST_CASE("ResultWriter::restore takes only the chunks and rows prepare() makes of the block", "[journal]") {
  const JournalDirectory directory;
  ResultWriter writer(directory.file("out.h5"), run_info(), layouts(), kSubjects);
  const PreparedBlock block3 = writer.prepare(block_of_subjects(3));  // [120, 130): rows 120-127, chunk 128
  const PreparedBlock block1 = writer.prepare(block_of_subjects(1));  // [40, 80): rows only
  REQUIRE_FALSE(block3.chunks().empty());
  REQUIRE_FALSE(block3.uncompressed_rows().empty());
  SubjectBlock columns = block3.columns();
  CHECK_NOTHROW(writer.restore(columns, block3.chunks(), block3.uncompressed_rows()));
  CHECK_THROWS_WITH(writer.restore(columns, {}, block3.uncompressed_rows()),
                    Catch::Contains("its trajectory chunks are not those of its subjects"));
  CHECK_THROWS_WITH(writer.restore(columns, block3.chunks(), block1.uncompressed_rows()),
                    Catch::Contains("uncompressed trajectory rows are not those of its subjects"));
  columns.metrics[0].pop_back();
  CHECK_THROWS_AS(writer.restore(columns, block3.chunks(), block3.uncompressed_rows()), IoError);
}

TEST_CASE("Journal: its name is the output's with .journal, cut to fit the file system's limit", "[journal]") {
  CHECK(journal_path_for("out.h5") == "out.h5.journal");
  CHECK(journal_path_for("runs/big.shard-3.h5") == "runs/big.shard-3.h5.journal");
  const JournalDirectory directory;
  const std::string long_a = directory.file(std::string(250, 'a') + "_1.h5");  // 255 bytes: the limit
  const std::string long_b = directory.file(std::string(250, 'a') + "_2.h5");
  const std::string journal_a = fs::path(journal_path_for(long_a)).filename().string();
  CHECK(journal_a.size() <= 255);
  CHECK(journal_a.ends_with(".journal"));
  CHECK(fs::path(journal_path_for(long_a)).parent_path() == fs::path(long_a).parent_path());
  CHECK(journal_path_for(long_a) != journal_path_for(long_b));  // the cut names stay each output's own
  CHECK_NOTHROW(JournalWriter::create(journal_path_for(long_a), identity()));
}
