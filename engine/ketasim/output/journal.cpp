#include "ketasim/output/journal.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string_view>
#include <utility>

#include "ketasim/base/errors.hpp"
#include "ketasim/base/version.hpp"
#include "ketasim/output/run_identity.hpp"

namespace ketasim {

static_assert(std::endian::native == std::endian::little, "the journal is stored as the memory holds it");

namespace {

constexpr char kMagic[16] = {'K', 'E', 'T', 'A', 'S', 'I', 'M', '-', 'J', 'O', 'U', 'R', 'N', 'A', 'L', '\n'};
constexpr std::size_t kFileHeaderBytes = sizeof kMagic + sizeof(std::uint32_t);

// A record: kind, payload bytes, CRC-32 of the payload, then the payload.
enum class RecordKind : std::uint32_t { identity = 0x44495352, block = 0x4b4c4252 };  // "RSID", "RBLK"
constexpr std::size_t kRecordHeaderBytes = sizeof(std::uint32_t) + sizeof(std::uint64_t) + sizeof(std::uint32_t);

std::uint32_t crc32_of(const char* data, std::size_t bytes) {
  uLong crc = crc32_z(0L, Z_NULL, 0);
  crc = crc32_z(crc, reinterpret_cast<const Bytef*>(data), bytes);
  return static_cast<std::uint32_t>(crc);
}

// ---- Encoding: values appended to a byte string, as the memory holds them --------------------

class Encoder {
 public:
  explicit Encoder(std::string& out) : out_(out) {}
  template <class Number>
  void number(Number value) {
    out_.append(reinterpret_cast<const char*>(&value), sizeof value);
  }
  void size(std::size_t value) { number(static_cast<std::uint64_t>(value)); }
  void text(const std::string& value) {
    size(value.size());
    out_.append(value);
  }
  template <class Number>
  void numbers(const std::vector<Number>& values) {
    size(values.size());
    out_.append(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(Number));
  }
  void texts(const std::vector<std::string>& values) {
    size(values.size());
    for (const std::string& value : values) text(value);
  }

 private:
  std::string& out_;
};

// The reverse, over a payload whose CRC matched; a payload that does not decode is damage all the
// same (DecodeError), never a crash or a huge allocation.
struct DecodeError {
  std::string what;
};

class Decoder {
 public:
  Decoder(const char* begin, const char* end) : at_(begin), end_(end) {}
  template <class Number>
  Number number() {
    Number value{};
    take(&value, sizeof value);
    return value;
  }
  std::size_t size(std::size_t element_bytes = 1) {
    const auto value = number<std::uint64_t>();
    if (element_bytes > 0 && value > static_cast<std::uint64_t>(end_ - at_) / element_bytes)
      throw DecodeError{"a length beyond the record"};
    return static_cast<std::size_t>(value);
  }
  std::string text() {
    const std::size_t bytes = size();
    std::string value(at_, bytes);
    at_ += bytes;
    return value;
  }
  template <class Number>
  std::vector<Number> numbers() {
    std::vector<Number> values(size(sizeof(Number)));
    take(values.data(), values.size() * sizeof(Number));
    return values;
  }
  std::vector<std::string> texts() {
    std::vector<std::string> values(size(sizeof(std::uint64_t)));
    for (std::string& value : values) value = text();
    return values;
  }
  bool at_end() const { return at_ == end_; }

 private:
  void take(void* destination, std::size_t bytes) {
    if (bytes > static_cast<std::size_t>(end_ - at_)) throw DecodeError{"the record ends early"};
    if (bytes > 0) std::memcpy(destination, at_, bytes);
    at_ += bytes;
  }
  const char* at_;
  const char* end_;
};

// ---- The identity ----------------------------------------------------------------------------

void encode_columns(Encoder& out, const std::vector<ColumnSpec>& columns) {
  out.size(columns.size());
  for (const ColumnSpec& column : columns) {
    out.text(column.name);
    out.text(column.unit);
    out.size(column.width);
    out.text(column.description);
  }
}

ColumnSpec decode_column(Decoder& in) {
  ColumnSpec column;
  column.name = in.text();
  column.unit = in.text();
  column.width = in.number<std::uint64_t>();
  column.description = in.text();
  return column;
}

std::vector<ColumnSpec> decode_columns(Decoder& in) {
  std::vector<ColumnSpec> columns(in.size(sizeof(std::uint64_t)));
  for (ColumnSpec& column : columns) column = decode_column(in);
  return columns;
}

void encode_layout(Encoder& out, const ArmLayout& arm) {
  out.text(arm.name);
  out.text(arm.model);
  out.size(arm.model_parameters.size());
  for (const ParameterValue& parameter : arm.model_parameters) {
    out.text(parameter.name);
    out.number(parameter.value);
    out.text(parameter.unit);
  }
  out.text(arm.description);
  out.numbers(arm.time_h);
  encode_columns(out, arm.trajectories);
  encode_columns(out, arm.subject_columns);
  out.size(arm.metrics.size());
  for (const MetricColumn& metric : arm.metrics) {
    encode_columns(out, {metric});
    out.number(static_cast<std::int32_t>(metric.id));
    out.number(static_cast<std::int32_t>(metric.link_role));
  }
  out.numbers(arm.dose_time_h);
  out.numbers(arm.dose_duration_h);
  out.numbers(arm.assessment_time_h);
  out.numbers(arm.observation_time_h);
  out.numbers(arm.relapse_visit_time_h);
  out.texts(arm.observed_outputs);
  out.number(arm.price_per_session_usd[0]);
  out.number(arm.price_per_session_usd[1]);
}

ArmLayout decode_layout(Decoder& in) {
  ArmLayout arm;
  arm.name = in.text();
  arm.model = in.text();
  arm.model_parameters.resize(in.size(sizeof(std::uint64_t)));
  for (ParameterValue& parameter : arm.model_parameters) {
    parameter.name = in.text();
    parameter.value = in.number<double>();
    parameter.unit = in.text();
  }
  arm.description = in.text();
  arm.time_h = in.numbers<double>();
  arm.trajectories = decode_columns(in);
  arm.subject_columns = decode_columns(in);
  arm.metrics.resize(in.size(sizeof(std::uint64_t)));
  for (MetricColumn& metric : arm.metrics) {
    const std::vector<ColumnSpec> spec = decode_columns(in);
    if (spec.size() != 1) throw DecodeError{"a metric of " + std::to_string(spec.size()) + " columns"};
    static_cast<ColumnSpec&>(metric) = spec.front();
    metric.id = static_cast<MetricId>(in.number<std::int32_t>());
    metric.link_role = static_cast<LinkRole>(in.number<std::int32_t>());
  }
  arm.dose_time_h = in.numbers<double>();
  arm.dose_duration_h = in.numbers<double>();
  arm.assessment_time_h = in.numbers<double>();
  arm.observation_time_h = in.numbers<double>();
  arm.relapse_visit_time_h = in.numbers<double>();
  arm.observed_outputs = in.texts();
  arm.price_per_session_usd[0] = in.number<double>();
  arm.price_per_session_usd[1] = in.number<double>();
  return arm;
}

void encode_identity(Encoder& out, const JournalIdentity& identity) {
  out.text(identity.ketasim_version);
  out.text(identity.source_revision);
  out.number(identity.layout_version);
  const RunInfo& run = identity.run;
  out.text(run.scenario_file);
  out.text(run.scenario_yaml);
  out.text(run.scenario_name);
  out.text(run.model_name);
  out.number(run.seed);
  out.number(run.subjects_per_arm);
  out.number(run.replicates);
  out.number(run.subjects_per_replicate);
  out.text(run.solver_method);
  out.number(run.solver_rtol);
  out.number(run.solver_atol);
  out.number(identity.shard ? identity.shard->index : std::int64_t{0});
  out.number(identity.shard ? identity.shard->count : std::int64_t{0});
  out.number(identity.subjects.first);
  out.number(identity.subjects.count);
  out.number(identity.block_size);
  out.size(identity.arms.size());
  for (const ArmLayout& arm : identity.arms) encode_layout(out, arm);
  out.size(identity.tables.size());
  for (const JournalIdentity::InputTable& table : identity.tables) {
    out.text(table.path);
    out.number(table.bytes);
    out.number(table.crc32);
  }
}

JournalIdentity decode_identity(Decoder& in) {
  JournalIdentity identity;
  identity.ketasim_version = in.text();
  identity.source_revision = in.text();
  identity.layout_version = in.number<std::int64_t>();
  RunInfo& run = identity.run;
  run.scenario_file = in.text();
  run.scenario_yaml = in.text();
  run.scenario_name = in.text();
  run.model_name = in.text();
  run.seed = in.number<std::uint64_t>();
  run.subjects_per_arm = in.number<std::int64_t>();
  run.replicates = in.number<std::int64_t>();
  run.subjects_per_replicate = in.number<std::int64_t>();
  run.solver_method = in.text();
  run.solver_rtol = in.number<double>();
  run.solver_atol = in.number<double>();
  const Shard shard{in.number<std::int64_t>(), in.number<std::int64_t>()};
  if (shard.count > 0) identity.shard = shard;
  identity.subjects.first = in.number<std::int64_t>();
  identity.subjects.count = in.number<std::int64_t>();
  identity.block_size = in.number<std::int64_t>();
  identity.arms.resize(in.size(sizeof(std::uint64_t)));
  for (ArmLayout& arm : identity.arms) arm = decode_layout(in);
  identity.tables.resize(in.size(sizeof(std::uint64_t)));
  for (JournalIdentity::InputTable& table : identity.tables) {
    table.path = in.text();
    table.bytes = in.number<std::uint64_t>();
    table.crc32 = in.number<std::uint32_t>();
  }
  if (identity.block_size < 1 || identity.subjects.first < 0 || identity.subjects.count < 0)
    throw DecodeError{"a block size or subject range out of bounds"};
  return identity;
}

// ---- Blocks ----------------------------------------------------------------------------------

void encode_arm(Encoder& out, const PreparedBlock& block) {
  const SubjectBlock& columns = block.columns();
  out.size(columns.arm);
  out.number(columns.first_subject);
  out.number(columns.count);
  out.size(columns.subject_columns.size());
  for (const std::vector<double>& column : columns.subject_columns) out.numbers(column);
  out.size(columns.metrics.size());
  for (const std::vector<double>& metric : columns.metrics) out.numbers(metric);
  out.numbers(columns.status);
  out.texts(columns.message);
  out.size(block.chunks().size());
  for (const PreparedBlock::Chunk& chunk : block.chunks()) {
    out.size(chunk.trajectory);
    out.number(chunk.first_subject);
    out.number(chunk.first_time_point);
    out.numbers(chunk.bytes);
  }
  out.size(block.uncompressed_rows().size());
  for (const PreparedBlock::Rows& rows : block.uncompressed_rows()) {
    out.number(rows.first_subject);
    out.number(rows.count);
    out.size(rows.trajectories.size());
    for (const std::vector<float>& values : rows.trajectories) out.numbers(values);
  }
}

JournaledArm decode_arm(Decoder& in) {
  JournaledArm arm;
  SubjectBlock& columns = arm.columns;
  columns.arm = in.number<std::uint64_t>();
  columns.first_subject = in.number<std::int64_t>();
  columns.count = in.number<std::int64_t>();
  columns.subject_columns.resize(in.size(sizeof(std::uint64_t)));
  for (std::vector<double>& column : columns.subject_columns) column = in.numbers<double>();
  columns.metrics.resize(in.size(sizeof(std::uint64_t)));
  for (std::vector<double>& metric : columns.metrics) metric = in.numbers<double>();
  columns.status = in.numbers<std::int8_t>();
  columns.message = in.texts();
  arm.chunks.resize(in.size(sizeof(std::uint64_t)));
  for (PreparedBlock::Chunk& chunk : arm.chunks) {
    chunk.trajectory = in.number<std::uint64_t>();
    chunk.first_subject = in.number<std::int64_t>();
    chunk.first_time_point = in.number<std::int64_t>();
    chunk.bytes = in.numbers<unsigned char>();
  }
  arm.rows.resize(in.size(sizeof(std::uint64_t)));
  for (PreparedBlock::Rows& rows : arm.rows) {
    rows.first_subject = in.number<std::int64_t>();
    rows.count = in.number<std::int64_t>();
    rows.trajectories.resize(in.size(sizeof(std::uint64_t)));
    for (std::vector<float>& values : rows.trajectories) values = in.numbers<float>();
  }
  return arm;
}

// ---- Files -----------------------------------------------------------------------------------

std::string system_reason() {
  return std::strerror(errno);
}

void write_all(int descriptor, const std::string& path, const char* data, std::size_t bytes) {
  while (bytes > 0) {
    const ssize_t written = ::write(descriptor, data, bytes);
    if (written < 0 && errno == EINTR) continue;
    if (written <= 0) throw IoError(path + ": cannot write the journal: " + system_reason());
    data += written;
    bytes -= static_cast<std::size_t>(written);
  }
}

// Best effort, as for the output's rename: not every file system can fsync a directory.
void flush_directory_of(const std::string& path) {
  std::filesystem::path directory = std::filesystem::path(path).parent_path();
  if (directory.empty()) directory = ".";
  const int descriptor = ::open(directory.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (descriptor < 0) return;
  (void)::fsync(descriptor);
  ::close(descriptor);
}

// An exclusive lock, or IoError when another process holds one; file systems without locks pass.
void lock_or_refuse(int descriptor, const std::string& path) {
  if (::flock(descriptor, LOCK_EX | LOCK_NB) == 0) return;
  if (errno == EWOULDBLOCK) {
    throw IoError(path + ": another ketasim run is writing this journal (it holds its lock): wait for it to end, " +
                  "or write the output elsewhere");
  }
}

// The record around `payload`, which `buffer` holds after kRecordHeaderBytes reserved for the frame.
void frame_record(std::string& buffer, RecordKind kind) {
  const std::uint64_t payload_bytes = buffer.size() - kRecordHeaderBytes;
  const std::uint32_t crc = crc32_of(buffer.data() + kRecordHeaderBytes, payload_bytes);
  const auto kind_value = static_cast<std::uint32_t>(kind);
  std::memcpy(buffer.data(), &kind_value, sizeof kind_value);
  std::memcpy(buffer.data() + sizeof kind_value, &payload_bytes, sizeof payload_bytes);
  std::memcpy(buffer.data() + sizeof kind_value + sizeof payload_bytes, &crc, sizeof crc);
}

}  // namespace

std::string journal_path_for(const std::string& output_path) {
  constexpr std::string_view kSuffix = ".journal";
  const std::filesystem::path output(output_path);
  const std::string name = output.filename().string();
  const std::filesystem::path directory = output.parent_path().empty() ? "." : output.parent_path();
  const long limit = ::pathconf(directory.c_str(), _PC_NAME_MAX);
  const std::size_t name_max = limit > 0 ? static_cast<std::size_t>(limit) : std::size_t{NAME_MAX};
  if (name.size() + kSuffix.size() <= name_max) return output_path + std::string(kSuffix);
  // Too long for the file system: the name cut, and made the output's own again by its CRC-32.
  char crc[16];
  std::snprintf(crc, sizeof crc, "~%08x", static_cast<unsigned>(crc32_of(name.data(), name.size())));
  std::size_t keep = name_max > kSuffix.size() + 9 ? name_max - kSuffix.size() - 9 : 0;
  while (keep > 0 && (static_cast<unsigned char>(name[keep]) & 0xC0) == 0x80) --keep;  // not inside a UTF-8 character
  const std::string cut = name.substr(0, keep) + crc + std::string(kSuffix);
  return output.parent_path().empty() ? cut : (output.parent_path() / cut).string();
}

JournalIdentity journal_identity(const RunInfo& run, std::optional<Shard> shard, SubjectRange subjects,
                                 std::int64_t block_size, std::vector<ArmLayout> arms,
                                 const std::vector<std::string>& tables) {
  JournalIdentity identity;
  identity.ketasim_version = kVersion;
  identity.source_revision = kSourceRevision;
  identity.layout_version = kLayoutVersion;
  identity.run = run;
  identity.shard = shard;
  identity.subjects = subjects;
  identity.block_size = block_size;
  identity.arms = std::move(arms);
  for (const std::string& path : tables) {
    std::ifstream file(path, std::ios::binary);
    if (!file) throw IoError(path + ": cannot read the table to record it in the journal: " + system_reason());
    JournalIdentity::InputTable table{path, 0, static_cast<std::uint32_t>(crc32_z(0L, Z_NULL, 0))};
    std::vector<char> piece(std::size_t{1} << 16);
    while (file.read(piece.data(), static_cast<std::streamsize>(piece.size())) || file.gcount() > 0) {
      const auto bytes = static_cast<std::size_t>(file.gcount());
      table.crc32 =
          static_cast<std::uint32_t>(crc32_z(table.crc32, reinterpret_cast<const Bytef*>(piece.data()), bytes));
      table.bytes += bytes;
    }
    identity.tables.push_back(table);
  }
  return identity;
}

std::string identity_difference(const JournalIdentity& journal, const JournalIdentity& run) {
  const auto differs = [](const std::string& what, const std::string& theirs, const std::string& ours) {
    return what + " is " + theirs + " in the journal, " + ours + " in this run";
  };
  const auto shard_text = [](const std::optional<Shard>& shard) {
    return shard ? "shard " + std::to_string(shard->index) + "/" + std::to_string(shard->count)
                 : std::string("the whole run (no --shard)");
  };
  const RunInfo& a = journal.run;
  const RunInfo& b = run.run;
  if (journal.ketasim_version != run.ketasim_version || journal.source_revision != run.source_revision)
    return differs("the program", build_of(journal.ketasim_version, journal.source_revision),
                   build_of(run.ketasim_version, run.source_revision));
  if (journal.layout_version != run.layout_version)
    return differs("the layout version", std::to_string(journal.layout_version), std::to_string(run.layout_version));
  if (a.scenario_yaml != b.scenario_yaml) {
    std::string detail;
    if (a.scenario_name != b.scenario_name)
      detail = " (its name is '" + a.scenario_name + "', this one's '" + b.scenario_name + "')";
    else if (a.seed != b.seed)
      detail = " (its seed is " + std::to_string(a.seed) + ", this one's " + std::to_string(b.seed) + ")";
    return "the scenario differs: the journal's was read from " + a.scenario_file +
           ", whose text then was not that of " + b.scenario_file + detail;
  }
  if (a.seed != b.seed) return differs("the seed", std::to_string(a.seed), std::to_string(b.seed));
  if (a.subjects_per_arm != b.subjects_per_arm || a.replicates != b.replicates ||
      a.subjects_per_replicate != b.subjects_per_replicate) {
    const auto cohort = [](const RunInfo& info) {
      return std::to_string(info.subjects_per_arm) + " subjects per arm (" + std::to_string(info.replicates) + " x " +
             std::to_string(info.subjects_per_replicate) + ")";
    };
    return differs("the cohort (--subjects)", cohort(a), cohort(b));
  }
  if (a.solver_method != b.solver_method ||
      !same_numbers({a.solver_rtol, a.solver_atol}, {b.solver_rtol, b.solver_atol}))
    return "the solver settings differ";
  if (journal.shard != run.shard || journal.subjects != run.subjects)
    return differs("the part of the cohort", shard_text(journal.shard), shard_text(run.shard));
  if (journal.block_size != run.block_size)
    return differs("the block size (--block-size)", std::to_string(journal.block_size), std::to_string(run.block_size));
  if (journal.arms.size() != run.arms.size())
    return differs("the number of arms", std::to_string(journal.arms.size()), std::to_string(run.arms.size()));
  for (std::size_t arm = 0; arm < run.arms.size(); ++arm) {
    if (journal.arms[arm].name != run.arms[arm].name)
      return differs("arm " + std::to_string(arm + 1), "'" + journal.arms[arm].name + "'",
                     "'" + run.arms[arm].name + "'");
    const std::string difference = layout_difference(journal.arms[arm], run.arms[arm]);
    if (!difference.empty())
      return "arm '" + run.arms[arm].name + "' differs in " + difference + " (a model card or a table changed)";
  }
  for (const JournalIdentity::InputTable& table : run.tables) {
    const auto same = [&](const JournalIdentity::InputTable& other) {
      return other.path == table.path && other.bytes == table.bytes && other.crc32 == table.crc32;
    };
    if (std::none_of(journal.tables.begin(), journal.tables.end(), same))
      return "the table " + table.path + " changed since the journal was written (its size or CRC-32 differs)";
  }
  return "";
}

// ---- JournalReader ---------------------------------------------------------------------------

struct JournalReader::File {
  int descriptor = -1;
  std::string payload;  // the record being read, reused
  ~File() {
    if (descriptor >= 0) ::close(descriptor);
  }
  // `bytes` at `offset`, or false when the file ends first.
  bool read_at(std::uint64_t offset, char* into, std::size_t bytes) const {
    while (bytes > 0) {
      const ssize_t got = ::pread(descriptor, into, bytes, static_cast<off_t>(offset));
      if (got < 0 && errno == EINTR) continue;
      if (got <= 0) return false;
      into += got;
      offset += static_cast<std::uint64_t>(got);
      bytes -= static_cast<std::size_t>(got);
    }
    return true;
  }
};

JournalReader::JournalReader(const std::string& path) : file_(std::make_unique<File>()), path_(path) {
  file_->descriptor = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (file_->descriptor < 0) throw IoError(path + ": cannot read the journal: " + system_reason());
  struct stat status {};
  if (::fstat(file_->descriptor, &status) != 0 || !S_ISREG(status.st_mode))
    throw IoError(path + ": the journal is not a regular file");
  file_bytes_ = static_cast<std::uint64_t>(status.st_size);
  const auto refuse = [&](const std::string& problem) -> void {
    throw IoError(path + ": not a journal this ketasim can resume from (" + problem + "); delete it to start afresh");
  };
  char header[kFileHeaderBytes];
  if (!file_->read_at(0, header, sizeof header) || std::memcmp(header, kMagic, sizeof kMagic) != 0)
    refuse("it does not start as a ketasim journal");
  std::uint32_t version = 0;
  std::memcpy(&version, header + sizeof kMagic, sizeof version);
  if (version != kJournalFormatVersion)
    refuse("journal format " + std::to_string(version) + ", this ketasim reads " +
           std::to_string(kJournalFormatVersion));
  valid_bytes_ = kFileHeaderBytes;
  char frame[kRecordHeaderBytes];
  std::uint32_t kind = 0, crc = 0;
  std::uint64_t bytes = 0;
  if (!file_->read_at(valid_bytes_, frame, sizeof frame)) refuse("its identity record is cut short");
  std::memcpy(&kind, frame, sizeof kind);
  std::memcpy(&bytes, frame + sizeof kind, sizeof bytes);
  std::memcpy(&crc, frame + sizeof kind + sizeof bytes, sizeof crc);
  if (kind != static_cast<std::uint32_t>(RecordKind::identity) || bytes > file_bytes_ - valid_bytes_ - sizeof frame)
    refuse("its identity record is damaged or cut short");
  file_->payload.resize(bytes);
  if (!file_->read_at(valid_bytes_ + sizeof frame, file_->payload.data(), bytes) ||
      crc32_of(file_->payload.data(), bytes) != crc)
    refuse("its identity record does not match its CRC-32");
  try {
    Decoder in(file_->payload.data(), file_->payload.data() + bytes);
    identity_ = decode_identity(in);
    if (!in.at_end()) refuse("its identity record has bytes left over");
  } catch (const DecodeError& error) {
    refuse("its identity record: " + error.what);
  }
  valid_bytes_ += sizeof frame + bytes;
  blocks_ = block_count(identity_.subjects, identity_.block_size);
}

JournalReader::~JournalReader() = default;

std::optional<JournaledBlock> JournalReader::next() {
  if (!discarded_reason_.empty() || valid_bytes_ == file_bytes_) return std::nullopt;
  const std::uint64_t remaining = file_bytes_ - valid_bytes_;
  const auto discard = [&](const std::string& reason) -> std::optional<JournaledBlock> {
    discarded_reason_ = reason;
    return std::nullopt;
  };
  char frame[kRecordHeaderBytes];
  if (remaining < sizeof frame || !file_->read_at(valid_bytes_, frame, sizeof frame))
    return discard("a record cut short (the run was stopped while writing it)");
  std::uint32_t kind = 0, crc = 0;
  std::uint64_t bytes = 0;
  std::memcpy(&kind, frame, sizeof kind);
  std::memcpy(&bytes, frame + sizeof kind, sizeof bytes);
  std::memcpy(&crc, frame + sizeof kind + sizeof bytes, sizeof crc);
  if (kind != static_cast<std::uint32_t>(RecordKind::block)) return discard("a record of unknown kind (damage)");
  if (bytes > remaining - sizeof frame) return discard("a record cut short (the run was stopped while writing it)");
  file_->payload.resize(bytes);
  if (!file_->read_at(valid_bytes_ + sizeof frame, file_->payload.data(), bytes))
    return discard("a record that cannot be read: " + system_reason());
  if (crc32_of(file_->payload.data(), bytes) != crc) return discard("a record that does not match its CRC-32 (damage)");
  JournaledBlock block;
  try {
    Decoder in(file_->payload.data(), file_->payload.data() + bytes);
    block.index = in.number<std::int64_t>();
    block.arms.resize(in.size(sizeof(std::uint64_t)));
    for (JournaledArm& arm : block.arms) arm = decode_arm(in);
    if (!in.at_end()) throw DecodeError{"bytes left over"};
  } catch (const DecodeError& error) {
    return discard("a record that does not decode: " + error.what);
  }
  if (block.index < 0 || block.index >= blocks_)
    return discard("block " + std::to_string(block.index) + ", which the run does not have");
  if (seen_.contains(block.index)) return discard("block " + std::to_string(block.index) + " a second time");
  if (block.arms.size() != identity_.arms.size())
    return discard("a block of " + std::to_string(block.arms.size()) + " arms");
  const SubjectRange subjects = block_of(identity_.subjects, identity_.block_size, block.index);
  for (std::size_t arm = 0; arm < block.arms.size(); ++arm) {
    const SubjectBlock& columns = block.arms[arm].columns;
    if (columns.arm != arm || columns.first_subject != subjects.first || columns.count != subjects.count)
      return discard("block " + std::to_string(block.index) + " with other subjects than its range");
  }
  seen_.insert(block.index);
  valid_bytes_ += sizeof frame + bytes;
  return block;
}

// ---- JournalLock, JournalWriter --------------------------------------------------------------

JournalLock::JournalLock(const std::string& path) : path_(path) {
  descriptor_ = ::open(path.c_str(), O_RDWR | O_CLOEXEC | O_NOFOLLOW);
  if (descriptor_ < 0) throw IoError(path + ": cannot open the journal for writing: " + system_reason());
  try {
    lock_or_refuse(descriptor_, path);
  } catch (...) {
    ::close(descriptor_);
    throw;
  }
}

JournalLock::JournalLock(JournalLock&& other) noexcept
    : path_(std::move(other.path_)), descriptor_(std::exchange(other.descriptor_, -1)) {}

JournalLock::~JournalLock() {
  if (descriptor_ >= 0) ::close(descriptor_);
}

JournalWriter::JournalWriter(std::string path, int descriptor) : path_(std::move(path)), descriptor_(descriptor) {}

JournalWriter::JournalWriter(JournalWriter&& other) noexcept
    : path_(std::move(other.path_)),
      descriptor_(std::exchange(other.descriptor_, -1)),
      blocks_written_(other.blocks_written_),
      buffer_(std::move(other.buffer_)) {}

JournalWriter& JournalWriter::operator=(JournalWriter&& other) noexcept {
  if (this != &other) {
    if (descriptor_ >= 0) ::close(descriptor_);
    path_ = std::move(other.path_);
    descriptor_ = std::exchange(other.descriptor_, -1);
    blocks_written_ = other.blocks_written_;
    buffer_ = std::move(other.buffer_);
  }
  return *this;
}

JournalWriter::~JournalWriter() {
  if (descriptor_ >= 0) ::close(descriptor_);
}

JournalWriter JournalWriter::create(const std::string& path, const JournalIdentity& identity) {
  const int descriptor = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0644);
  if (descriptor < 0) throw IoError(path + ": cannot create the journal: " + system_reason());
  JournalWriter writer(path, descriptor);
  try {
    lock_or_refuse(descriptor, path);
    std::string record(kRecordHeaderBytes, '\0');
    Encoder record_out(record);
    encode_identity(record_out, identity);
    frame_record(record, RecordKind::identity);
    std::string& buffer = writer.buffer_;
    buffer.assign(kMagic, sizeof kMagic);
    Encoder(buffer).number(kJournalFormatVersion);
    buffer += record;
    write_all(descriptor, path, buffer.data(), buffer.size());
    if (::fsync(descriptor) != 0) throw IoError(path + ": cannot flush the journal to disk: " + system_reason());
    flush_directory_of(path);
  } catch (...) {
    ::unlink(path.c_str());
    throw;
  }
  return writer;
}

JournalWriter JournalWriter::reopen(JournalLock lock, std::uint64_t valid_bytes, std::int64_t blocks) {
  const std::string path = lock.path_;
  JournalWriter writer(path, std::exchange(lock.descriptor_, -1));
  writer.blocks_written_ = blocks;
  if (::ftruncate(writer.descriptor_, static_cast<off_t>(valid_bytes)) != 0 ||
      ::lseek(writer.descriptor_, static_cast<off_t>(valid_bytes), SEEK_SET) < 0 || ::fsync(writer.descriptor_) != 0)
    throw IoError(path + ": cannot cut the journal to its valid records: " + system_reason());
  return writer;
}

void JournalWriter::append(std::int64_t index, const std::vector<PreparedBlock>& arms) {
  buffer_.assign(kRecordHeaderBytes, '\0');
  Encoder out(buffer_);
  out.number(index);
  out.size(arms.size());
  for (const PreparedBlock& arm : arms) encode_arm(out, arm);
  frame_record(buffer_, RecordKind::block);
  write_all(descriptor_, path_, buffer_.data(), buffer_.size());
  if (::fdatasync(descriptor_) != 0) throw IoError(path_ + ": cannot flush the journal to disk: " + system_reason());
  ++blocks_written_;
}

void JournalWriter::remove() {
  if (descriptor_ >= 0) ::close(std::exchange(descriptor_, -1));
  if (::unlink(path_.c_str()) != 0 && errno != ENOENT)
    throw IoError(path_ + ": cannot delete the journal of the finished run: " + system_reason());
  flush_directory_of(path_);
}

}  // namespace ketasim
