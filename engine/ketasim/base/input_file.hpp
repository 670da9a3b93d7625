#pragma once
// The one way ketasim reads a file the user names (a scenario, a cohort CSV, a dosing table, a
// reproduction target, a calibration spec or fit). A hostile or mistaken path must not hang the
// process or exhaust its memory: only regular files are read (not a directory, a FIFO, a device
// such as /dev/zero, or a socket), and never more than a limit that depends on what the file is.
// docs/scenario.md#limits documents the limits.

#include <sys/types.h>

#include <cstddef>
#include <string>

namespace ketasim {

// YAML files (scenarios, targets, calibration specs and fits): 4 MiB. yaml-cpp keeps about 500
// bytes per scalar, so the densest 4 MiB of YAML ([1,1,1,...]) takes about 1 GB to parse; the
// largest scenario in the repository is a few KB, and one listing 100,000 dose times is 1 MiB.
inline constexpr std::size_t kMaxYamlFileBytes = std::size_t{4} << 20;

// CSV tables (cohort.from_csv, doses_from): 64 MiB, about a million rows of 60 characters (a
// NONMEM data set of 10,000 subjects with 100 rows each). Parsed rows take up to 13 times their
// text (short rows with an id: "17,70"), so the worst case stays under 1 GB, as for YAML.
inline constexpr std::size_t kMaxTableFileBytes = std::size_t{64} << 20;

// The whole content of the regular file at `path`. Throws IoError naming `what` ("scenario
// file") and the path when the file cannot be opened, is not a regular file (saying what it is),
// or holds more than `max_bytes` bytes (saying the limit).
std::string read_text_file(const std::string& path, const std::string& what, std::size_t max_bytes);

// "a directory", "a FIFO (named pipe)", "a character device", ...: what the file of `mode` (stat's
// st_mode) is, for messages about inputs and outputs that must be regular files.
std::string file_type_name(mode_t mode);

}  // namespace ketasim
