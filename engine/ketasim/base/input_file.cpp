#include "ketasim/base/input_file.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>

#include "ketasim/base/errors.hpp"

namespace ketasim {

std::string file_type_name(mode_t mode) {
  if (S_ISREG(mode)) return "a regular file";
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISFIFO(mode)) return "a FIFO (named pipe)";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISSOCK(mode)) return "a socket";
  return "a special file";
}

namespace {

std::string size_text(std::size_t bytes) {
  if (bytes >= (std::size_t{1} << 20) && bytes % (std::size_t{1} << 20) == 0)
    return std::to_string(bytes >> 20) + " MiB";
  return std::to_string(bytes) + " bytes";
}

// Closes the descriptor on every path out of read_text_file.
class FileDescriptor {
 public:
  explicit FileDescriptor(int fd) : fd_(fd) {}
  FileDescriptor(const FileDescriptor&) = delete;
  FileDescriptor& operator=(const FileDescriptor&) = delete;
  ~FileDescriptor() {
    if (fd_ >= 0) ::close(fd_);
  }
  int get() const { return fd_; }

 private:
  int fd_;
};

}  // namespace

std::string read_text_file(const std::string& path, const std::string& what, std::size_t max_bytes) {
  const std::string named = "cannot read " + what + " '" + path + "': ";
  // O_NONBLOCK: opening a FIFO must not wait for a writer; the type check below refuses it.
  const FileDescriptor file(::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC));
  if (file.get() < 0) {
    const int open_error = errno;
    struct stat status {};
    if (::stat(path.c_str(), &status) == 0 && !S_ISREG(status.st_mode))  // a socket cannot be opened
      throw IoError(named + "it is " + file_type_name(status.st_mode) + ", not a regular file");
    throw IoError(named + std::strerror(open_error));
  }
  // fstat, not stat: the file opened is the file checked, whatever happens to the path meanwhile.
  struct stat status {};
  if (::fstat(file.get(), &status) != 0) throw IoError(named + std::strerror(errno));
  if (!S_ISREG(status.st_mode))
    throw IoError(named + "it is " + file_type_name(status.st_mode) + ", not a regular file");
  const std::string limit = "the limit of " + size_text(max_bytes) + " for a " + what + " (docs/scenario.md#limits)";
  if (static_cast<std::uintmax_t>(status.st_size) > max_bytes)
    throw IoError(named + "it holds " + std::to_string(status.st_size) + " bytes, more than " + limit);

  // The size can change while reading (or be 0 for files such as those of /proc): read until the
  // end, but never more than the limit.
  std::string text;
  text.reserve(static_cast<std::size_t>(status.st_size));
  char buffer[1 << 16];
  while (true) {
    const ssize_t got = ::read(file.get(), buffer, sizeof buffer);
    if (got < 0) {
      if (errno == EINTR) continue;
      throw IoError(named + std::strerror(errno));
    }
    if (got == 0) break;
    if (text.size() + static_cast<std::size_t>(got) > max_bytes) throw IoError(named + "it holds more than " + limit);
    text.append(buffer, static_cast<std::size_t>(got));
  }
  return text;
}

}  // namespace ketasim
