// Fuzz target: a NONMEM-style dosing table (doses_from) -> read_dosing_table, for an infusion and a
// bolus rule of drug and for placebo sessions. read_dosing_table takes a path, so the input is written to an in-memory
// file (memfd_create) and read through /proc/self/fd: no file on disk. Every refusal must be a ketasim::Error; anything
// else escaping, or a crash, is a finding. docs/testing.md says how to run it.

#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "ketasim/base/errors.hpp"
#include "ketasim/input/dosing_table.hpp"

namespace {

// The one in-memory file, rewritten for every input.
int memory_file() {
  static const int fd = [] {
    const int created = ::memfd_create("fuzz.csv", MFD_CLOEXEC);
    if (created < 0) std::abort();
    return created;
  }();
  return fd;
}

void write_all(int fd, const std::uint8_t* data, std::size_t size) {
  if (::ftruncate(fd, 0) != 0 || ::lseek(fd, 0, SEEK_SET) != 0) std::abort();
  while (size > 0) {
    const ssize_t written = ::write(fd, data, size);
    if (written <= 0) std::abort();
    data += written;
    size -= static_cast<std::size_t>(written);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const int fd = memory_file();
  write_all(fd, data, size);
  const std::string path = "/proc/self/fd/" + std::to_string(fd);
  // An infusion and a bolus of drug into compartment 1, and placebo sessions (no compartment), as
  // the loader builds them (scenario_loader.cpp, table_dose_target); one with a column ignored on
  // purpose.
  ketasim::TableDoseTarget infusion{ketasim::Route::iv_infusion, true, 1, "ketamine.central"};
  ketasim::TableDoseTarget bolus{ketasim::Route::iv_bolus, true, 1, "ketamine.central"};
  ketasim::TableDoseTarget placebo{ketasim::Route::iv_infusion, false, 0, ""};
  for (const ketasim::TableDoseTarget* target : {&infusion, &bolus, &placebo}) {
    for (const std::vector<std::string>& ignored : {std::vector<std::string>{}, std::vector<std::string>{"WT"}}) {
      try {
        ketasim::read_dosing_table(path, *target, ignored);
      } catch (const ketasim::Error&) {
        // Refused with a typed error.
      }
    }
  }
  return 0;
}
