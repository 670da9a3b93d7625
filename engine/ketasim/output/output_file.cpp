#include "ketasim/output/output_file.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <climits>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <random>

#include "ketasim/base/errors.hpp"
#include "ketasim/base/input_file.hpp"

namespace ketasim {
namespace {

namespace fs = std::filesystem;

constexpr std::string_view kTemporaryMarker = ".ketasim-tmp.";
constexpr std::size_t kRandomLength = 6;
constexpr std::size_t kMaxHostLength = 64;  // HOST_NAME_MAX on Linux

std::string quoted(const std::string& path) {
  return "'" + path + "'";
}

fs::path directory_of(const std::string& path) {
  const fs::path parent = fs::path(path).parent_path();
  return parent.empty() ? fs::path(".") : parent;
}

std::size_t name_max_of(const fs::path& directory) {
  const long limit = ::pathconf(directory.c_str(), _PC_NAME_MAX);
  return limit > 0 ? static_cast<std::size_t>(limit) : std::size_t{NAME_MAX};
}

std::string mode_text(mode_t mode) {
  std::array<char, 8> text{};
  std::snprintf(text.data(), text.size(), "%04o", static_cast<unsigned>(mode & 07777));
  return text.data();
}

std::string random_suffix() {
  static constexpr std::string_view kAlphabet = "abcdefghijklmnopqrstuvwxyz0123456789";
  std::random_device device;
  std::uniform_int_distribution<std::size_t> pick(0, kAlphabet.size() - 1);
  std::string text;
  for (std::size_t i = 0; i < kRandomLength; ++i) text += kAlphabet[pick(device)];
  return text;
}

// ---- Temporaries a signal handler may remove --------------------------------------------------

// A slot is free (0), being filled (1) or holds the path of a live temporary (2). The handler
// reads only slots in state 2; lock-free atomics are safe in a signal handler.
struct RegistrySlot {
  std::atomic<int> state{0};
  std::array<char, PATH_MAX> path{};
};
static_assert(std::atomic<int>::is_always_lock_free, "read from a signal handler");
std::array<RegistrySlot, 16> g_registry;

int register_temporary(const std::string& path) {
  std::error_code error;
  const std::string absolute = fs::absolute(path, error).string();  // the handler must not depend on the cwd
  if (error || absolute.size() >= PATH_MAX) return -1;
  for (std::size_t i = 0; i < g_registry.size(); ++i) {
    int expected = 0;
    if (!g_registry[i].state.compare_exchange_strong(expected, 1)) continue;
    std::memcpy(g_registry[i].path.data(), absolute.c_str(), absolute.size() + 1);
    g_registry[i].state.store(2);
    return static_cast<int>(i);
  }
  return -1;  // more files open at once than slots: only the signal cleanup is lost
}

void unregister_temporary(int slot) {
  if (slot >= 0) g_registry[static_cast<std::size_t>(slot)].state.store(0);
}

void flush_to_disk(const std::string& path) {
  const int descriptor = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (descriptor < 0 || ::fsync(descriptor) != 0) {
    const std::string reason = std::strerror(errno);
    if (descriptor >= 0) ::close(descriptor);
    throw IoError(path + ": cannot flush the finished file to disk: " + reason);
  }
  ::close(descriptor);
}

void flush_directory(const fs::path& directory) {
  // Best effort: not every file system can fsync a directory, and the data is already safe.
  const int descriptor = ::open(directory.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (descriptor < 0) return;
  (void)::fsync(descriptor);
  ::close(descriptor);
}

void check_directory(const std::string& path) {
  const fs::path directory = directory_of(path);
  std::error_code error;
  if (!fs::is_directory(directory, error)) {
    throw IoError(path + ": cannot write the output: the directory '" + directory.string() +
                  "' does not exist or is not a directory");
  }
  if (::access(directory.c_str(), W_OK | X_OK) != 0) {
    throw IoError(path + ": cannot write the output: the directory '" + directory.string() +
                  "' is not writable: " + std::strerror(errno));
  }
  const std::string name = fs::path(path).filename().string();
  const std::size_t name_max = name_max_of(directory);
  if (name.size() > name_max) {
    throw IoError(path + ": cannot write the output: its file name is " + std::to_string(name.size()) +
                  " bytes long, and the file system of '" + directory.string() + "' allows at most " +
                  std::to_string(name_max));
  }
}

bool same_file(const struct stat& a, const std::string& other) {
  struct stat b {};
  return ::stat(other.c_str(), &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

// What already has the output's name must be a plain file ketasim may replace.
void check_existing_target(const std::string& path, const std::vector<std::string>& input_files) {
  struct stat target {};
  if (::lstat(path.c_str(), &target) != 0) {
    if (errno == ENOENT) return;
    throw IoError(path + ": cannot write the output: " + std::strerror(errno));
  }
  if (S_ISLNK(target.st_mode)) {
    std::error_code error;
    const fs::path link = fs::read_symlink(path, error);
    throw IoError(path + ": is a symbolic link" + (error ? std::string() : " to " + quoted(link.string())) +
                  "; ketasim does not write through links (the rename would replace the link): give the path of the "
                  "file itself, or remove the link");
  }
  if (S_ISDIR(target.st_mode)) {
    throw IoError(path + ": is a directory; give the path of a file (e.g. " + (fs::path(path) / "results.h5").string() +
                  ")");
  }
  if (!S_ISREG(target.st_mode)) {
    throw IoError(path + ": is " + file_type_name(target.st_mode) +
                  ", not a regular file; ketasim writes its outputs as regular files and would replace it");
  }
  for (const std::string& input : input_files) {
    if (!input.empty() && same_file(target, input)) {
      throw IoError(path + ": is the same file as " + quoted(input) +
                    ", an input of this command; choose another output name");
    }
  }
  // access() says yes to root for any file: the mode bits say what the owner meant.
  const bool read_only = ::access(path.c_str(), W_OK) != 0 || (target.st_mode & (S_IWUSR | S_IWGRP | S_IWOTH)) == 0;
  if (read_only) {
    throw IoError(path + ": is read-only (mode " + mode_text(target.st_mode) +
                  "); ketasim does not replace a read-only file: remove it, or make it writable (chmod u+w " +
                  quoted(path) + ") to have it replaced");
  }
}

}  // namespace

// Host names are letters, digits, '-' and '.', but nothing stops an administrator from setting
// others; a '/' would make the temporary name a path.
std::string this_host() {
  std::array<char, 256> name{};
  if (::gethostname(name.data(), name.size() - 1) != 0) return "unknown-host";
  std::string host(name.data());
  for (char& c : host) {
    const bool plain =
        (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '.';
    if (!plain) c = '_';
  }
  if (host.empty()) host = "unknown-host";
  return host.substr(0, kMaxHostLength);
}

void check_output_path(const std::string& path, const std::vector<std::string>& input_files) {
  if (path.empty()) throw Error(ExitCode::usage, "the output path is empty: give a file name, e.g. results.h5");
  const std::string name = fs::path(path).filename().string();
  if (name.empty() || name == "." || name == "..") {
    throw IoError(path + ": names a directory; give the path of a file (e.g. " +
                  (fs::path(path) / "results.h5").lexically_normal().string() + ")");
  }
  check_directory(path);
  check_existing_target(path, input_files);
}

std::optional<std::uintmax_t> free_space_for(const std::string& path) {
  struct statvfs info {};
  if (::statvfs(directory_of(path).c_str(), &info) != 0) return std::nullopt;
  return static_cast<std::uintmax_t>(info.f_bavail) * info.f_frsize;
}

std::string temporary_file_name(std::string_view final_name, std::string_view host, long pid, std::string_view random,
                                std::size_t name_max) {
  std::string suffix = std::string(kTemporaryMarker) + std::string(host.substr(0, kMaxHostLength)) + "." +
                       std::to_string(pid) + "." + std::string(random);
  // The prefix only helps a person see which output the temporary is for: cut it, never the
  // suffix that says whose it is. A cut inside a UTF-8 character would leave an invalid name.
  std::size_t keep = suffix.size() < name_max ? std::min(final_name.size(), name_max - suffix.size()) : 0;
  while (keep > 0 && keep < final_name.size() && (static_cast<unsigned char>(final_name[keep]) & 0xC0) == 0x80) --keep;
  return std::string(final_name.substr(0, keep)) + suffix;
}

std::optional<TemporaryFileOwner> temporary_file_owner(std::string_view file_name) {
  const std::size_t marker = file_name.rfind(kTemporaryMarker);
  if (marker == std::string_view::npos) return std::nullopt;
  const std::string_view rest = file_name.substr(marker + kTemporaryMarker.size());  // host.pid.random
  const std::size_t last_dot = rest.rfind('.');
  if (last_dot == std::string_view::npos || last_dot == 0) return std::nullopt;
  const std::size_t pid_dot = rest.rfind('.', last_dot - 1);
  if (pid_dot == std::string_view::npos || pid_dot == 0) return std::nullopt;
  const std::string_view random = rest.substr(last_dot + 1);
  const std::string_view pid = rest.substr(pid_dot + 1, last_dot - pid_dot - 1);
  if (random.size() != kRandomLength || pid.empty() || pid.size() > 10) return std::nullopt;
  for (const char c : pid)
    if (c < '0' || c > '9') return std::nullopt;
  return TemporaryFileOwner{std::string(rest.substr(0, pid_dot)), std::stol(std::string(pid))};
}

std::vector<StaleTemporary> stale_temporaries(const std::string& directory) {
  std::vector<StaleTemporary> stale;
  const std::string host = this_host();
  std::error_code error;
  fs::directory_iterator entries(directory.empty() ? fs::path(".") : fs::path(directory), error);
  if (error) return stale;
  for (const fs::directory_entry& entry : entries) {
    const std::optional<TemporaryFileOwner> owner = temporary_file_owner(entry.path().filename().string());
    if (!owner || owner->host != host || owner->pid <= 0 || owner->pid == ::getpid()) continue;
    if (!entry.is_regular_file(error) || entry.is_symlink(error)) continue;
    // EPERM: the process exists (another user's); only ESRCH says it is gone.
    if (::kill(static_cast<pid_t>(owner->pid), 0) == 0 || errno != ESRCH) continue;
    const std::uintmax_t bytes = entry.file_size(error);
    stale.push_back({entry.path().string(), error ? 0 : bytes, owner->pid});
  }
  return stale;
}

AtomicOutputFile::AtomicOutputFile(std::string final_path, const std::vector<std::string>& input_files)
    : final_path_(std::move(final_path)) {
  check_output_path(final_path_, input_files);
  const fs::path directory = directory_of(final_path_);
  const std::string name = temporary_file_name(fs::path(final_path_).filename().string(), this_host(), ::getpid(),
                                               random_suffix(), name_max_of(directory));
  temporary_path_ = (fs::path(final_path_).parent_path() / name).string();
  registry_slot_ = register_temporary(temporary_path_);
}

AtomicOutputFile::~AtomicOutputFile() {
  if (!committed_) {
    // unlink never removes a directory: a name taken by one is someone else's.
    (void)::unlink(temporary_path_.c_str());
  }
  unregister_temporary(registry_slot_);
}

void AtomicOutputFile::commit() {
  flush_to_disk(temporary_path_);  // so that a crash right after the rename cannot leave a complete-looking name on
                                   // incomplete contents
  if (std::rename(temporary_path_.c_str(), final_path_.c_str()) != 0) {
    throw IoError(final_path_ + ": cannot rename the finished file '" + temporary_path_ +
                  "' into place: " + std::strerror(errno));
  }
  committed_ = true;
  unregister_temporary(registry_slot_);
  registry_slot_ = -1;
  flush_directory(directory_of(final_path_));
}

void write_file_atomically(const std::string& path, std::string_view text,
                           const std::vector<std::string>& input_files) {
  AtomicOutputFile output(path, input_files);
  const int descriptor = ::open(output.temporary_path().c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
  if (descriptor < 0) throw IoError(output.temporary_path() + ": cannot create: " + std::strerror(errno));
  std::size_t written = 0;
  while (written < text.size()) {
    const ssize_t count = ::write(descriptor, text.data() + written, text.size() - written);
    if (count < 0 && errno == EINTR) continue;
    if (count <= 0) {
      const std::string reason = std::strerror(errno);
      ::close(descriptor);
      throw IoError(path + ": cannot write: " + reason);
    }
    written += static_cast<std::size_t>(count);
  }
  if (::close(descriptor) != 0) throw IoError(path + ": cannot write: " + std::strerror(errno));
  output.commit();
}

void remove_registered_temporaries() noexcept {
  for (RegistrySlot& slot : g_registry)
    if (slot.state.load() == 2) (void)::unlink(slot.path.data());
}

}  // namespace ketasim
