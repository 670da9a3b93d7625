#pragma once
// How many threads a command uses when --threads is not given. One function for every command
// (run, its summary pass, compare's bootstrap, reproduce, calibrate), so that they agree.

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <exception>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

namespace ketasim {

// The CPUs this process may run on: its affinity mask (sched_getaffinity), which `taskset`,
// Slurm's CPU binding and cgroup cpusets set, rather than every core of the machine; at most
// SLURM_CPUS_PER_TASK when Slurm sets it (a job step without CPU binding has no smaller mask).
// At least 1. Throws Error(usage) when SLURM_CPUS_PER_TASK is set but not a count of CPUs.
unsigned default_thread_count();

// SLURM_CPUS_PER_TASK's value `value` (getenv's result) as a count: nullopt when unset or empty;
// Error(usage), naming the variable and its value, when it is not a whole number of at least 1.
std::optional<unsigned> slurm_cpus_per_task(const char* value);

// `requested` when it is not 0, otherwise default_thread_count().
unsigned thread_count(unsigned requested);

// The one parallel loop: runs task(thread, index) for every index in [0, count) on up to
// `threads` threads, the calling thread being thread 0, so that a task can keep per-thread
// scratch (indexed by `thread`). Indices are handed out one at a time, so which thread runs an
// index varies: a task's result must depend on the index only. After every thread has stopped,
// rethrows the first exception a task threw; the remaining indices are then skipped.
template <class Task>
void parallel_for(unsigned threads, std::size_t count, const Task& task) {
  std::atomic<std::size_t> next{0};
  std::atomic<bool> failed{false};
  std::mutex failure_mutex;
  std::exception_ptr failure;
  const auto work = [&](unsigned thread) {
    try {
      for (std::size_t index = next++; index < count && !failed; index = next++) task(thread, index);
    } catch (...) {
      const std::lock_guard lock(failure_mutex);
      if (!failure) failure = std::current_exception();
      failed = true;
    }
  };
  {
    std::vector<std::jthread> helpers;  // joined at the end of the scope, also if starting one throws
    const auto used = static_cast<unsigned>(std::min<std::size_t>(threads, count));
    for (unsigned thread = 1; thread < used; ++thread) helpers.emplace_back(work, thread);
    work(0);
  }
  if (failure) std::rethrow_exception(failure);
}

}  // namespace ketasim
