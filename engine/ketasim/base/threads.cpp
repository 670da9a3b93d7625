#include "ketasim/base/threads.hpp"

#include <sched.h>

#include <algorithm>
#include <thread>

namespace ketasim {

unsigned default_thread_count() {
  cpu_set_t allowed;
  CPU_ZERO(&allowed);
  if (sched_getaffinity(0, sizeof allowed, &allowed) == 0) {
    const int count = CPU_COUNT(&allowed);
    if (count > 0) return static_cast<unsigned>(count);
  }
  // A mask wider than cpu_set_t (more than 1024 CPUs) or no affinity support: every core.
  return std::max(1U, std::thread::hardware_concurrency());
}

unsigned thread_count(unsigned requested) {
  return requested > 0 ? requested : default_thread_count();
}

}  // namespace ketasim
