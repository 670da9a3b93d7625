#pragma once
// Every file ketasim writes goes through here (the HDF5 result of `run`, `compare -o`,
// `reproduce --markdown`, `calibrate --write`): the rules for where an output may go, checked
// before any work is done; a temporary file next to the target, named so that ketasim (and a
// person) can tell whose it is; and the flush and rename that make the output appear whole.
//
// The rules (docs/cli.md, "Output files"): the path is not empty, its file name fits the file
// system, its directory exists and is writable, and if something already has that name it is a
// regular file that is not read-only, not a symbolic link and not one of the command's inputs.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace ketasim {

// Throws IoError (exit 6) naming `path` and the rule it breaks, or Error(usage) for an empty path.
// `input_files` are the files the command reads (the scenario, its CSV tables): an output that is
// one of them (the same file, under any name) is refused.
void check_output_path(const std::string& path, const std::vector<std::string>& input_files = {});

// Bytes this user may still write in the file system that holds `path`'s directory (statvfs
// f_bavail); nullopt when the file system does not say.
std::optional<std::uintmax_t> free_space_for(const std::string& path);

// This host's name as ketasim writes it (in temporary names and in a result file's `host`
// attribute): gethostname(), characters other than letters, digits, '-' and '.' replaced by '_',
// at most 64 bytes; "unknown-host" when there is none.
std::string this_host();

// The temporary name of `final_name`: "<prefix>.ketasim-tmp.<host>.<pid>.<random>", in the same
// directory. The host and process id let a later run tell a temporary left by a killed process
// from one still being written (stale_temporaries); `final_name` is cut so that the whole name
// fits in `name_max` bytes (names of 252+ characters used to fail).
std::string temporary_file_name(std::string_view final_name, std::string_view host, long pid, std::string_view random,
                                std::size_t name_max);

struct TemporaryFileOwner {
  std::string host;
  long pid = 0;
};
// The host and process of a name made by temporary_file_name; nullopt for any other name.
std::optional<TemporaryFileOwner> temporary_file_owner(std::string_view file_name);

// A ketasim temporary file left in a directory by a process that no longer runs.
struct StaleTemporary {
  std::string path;
  std::uintmax_t bytes = 0;
  long pid = 0;
};
// The ketasim temporary files in `directory` written on this host by processes that no longer
// exist (kill(pid, 0) fails with ESRCH): left by kill -9, a crash or a power cut. Temporaries of
// other hosts are never listed: on a shared file system their process may still be running.
std::vector<StaleTemporary> stale_temporaries(const std::string& directory);

// A file written under a temporary name next to its final path and renamed into place by
// commit(). Construction checks the final path (check_output_path) and picks the temporary name;
// the caller creates and writes the temporary file (O_EXCL: the name is new). Until commit()
// succeeds, the destructor removes the temporary file, and remove_registered_temporaries() (from
// a signal handler) can remove it too.
class AtomicOutputFile {
 public:
  explicit AtomicOutputFile(std::string final_path, const std::vector<std::string>& input_files = {});
  AtomicOutputFile(const AtomicOutputFile&) = delete;
  AtomicOutputFile& operator=(const AtomicOutputFile&) = delete;
  ~AtomicOutputFile();

  const std::string& final_path() const { return final_path_; }
  const std::string& temporary_path() const { return temporary_path_; }

  // Flushes the temporary file to disk, renames it to the final path (atomically replacing an
  // older file of that name) and flushes the directory. Throws IoError; the temporary file is
  // then still removed by the destructor.
  void commit();

 private:
  std::string final_path_;
  std::string temporary_path_;
  int registry_slot_ = -1;
  bool committed_ = false;
};

// `text` to `path` through an AtomicOutputFile: never a half-written file.
void write_file_atomically(const std::string& path, std::string_view text,
                           const std::vector<std::string>& input_files = {});

// Removes (unlink) the temporary file of every AtomicOutputFile not yet committed or destroyed.
// Async-signal-safe: for a signal handler that ends the process at once (_exit), so that a second
// Ctrl-C or a SIGTERM sent twice does not leave a half-written file behind.
void remove_registered_temporaries() noexcept;

}  // namespace ketasim
