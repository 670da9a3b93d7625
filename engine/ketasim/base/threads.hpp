#pragma once
// How many threads a command uses when --threads is not given. One function for every command
// (run, its summary pass, compare's bootstrap, reproduce, calibrate), so that they agree.

namespace ketasim {

// The CPUs this process may run on: its affinity mask (sched_getaffinity), which `taskset`,
// Slurm's CPU binding and cgroup cpusets set, rather than every core of the machine. At least 1.
unsigned default_thread_count();

// `requested` when it is not 0, otherwise default_thread_count().
unsigned thread_count(unsigned requested);

}  // namespace ketasim
