#include "ketasim/base/threads.hpp"

#include <sched.h>

#include <algorithm>
#include <cstdlib>
#include <string>
#include <thread>

#include "ketasim/base/errors.hpp"

namespace ketasim {
namespace {

// The CPUs of the affinity mask; every core when the mask cannot be read (a mask wider than
// cpu_set_t, more than 1024 CPUs, or no affinity support).
unsigned affinity_cpu_count() {
  cpu_set_t allowed;
  CPU_ZERO(&allowed);
  if (sched_getaffinity(0, sizeof allowed, &allowed) == 0) {
    const int count = CPU_COUNT(&allowed);
    if (count > 0) return static_cast<unsigned>(count);
  }
  return std::max(1U, std::thread::hardware_concurrency());
}

}  // namespace

std::optional<unsigned> slurm_cpus_per_task(const char* value) {
  if (value == nullptr || *value == '\0') return std::nullopt;
  const std::string text(value);
  const bool digits =
      text.size() <= 9 && std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; });
  const long cpus = digits ? std::stol(text) : 0;
  if (cpus < 1) {
    throw Error(ExitCode::usage, "the environment variable SLURM_CPUS_PER_TASK is '" + text +
                                     "'; expected a whole number of CPUs, at least 1 (Slurm sets it from "
                                     "--cpus-per-task); unset it, or give --threads");
  }
  return static_cast<unsigned>(cpus);
}

unsigned default_thread_count() {
  const unsigned cpus = affinity_cpu_count();
  const std::optional<unsigned> slurm = slurm_cpus_per_task(std::getenv("SLURM_CPUS_PER_TASK"));
  return slurm ? std::min(cpus, *slurm) : cpus;
}

unsigned thread_count(unsigned requested) {
  return requested > 0 ? requested : default_thread_count();
}

}  // namespace ketasim
