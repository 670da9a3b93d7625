#include "mpi_job.hpp"

#include <algorithm>
#include <cstdlib>
#include <string>

#include "ketasim/base/errors.hpp"

#ifdef KETASIM_WITH_MPI
#include <mpi.h>
#endif

namespace ketasim::cli {
namespace {

// A positive count from the environment variable `name`; 0 if it is unset, empty or not positive.
int environment_count(const char* name) {
  const char* value = std::getenv(name);
  return value != nullptr ? std::max(0, std::atoi(value)) : 0;
}

// What the environment says of the launcher that started this process.
struct Launch {
  int ranks = 0;        // as announced; 0: no MPI launcher
  std::string command;  // the launcher's command, for a resume hint
};

// OpenMPI's mpirun sets OMPI_COMM_WORLD_SIZE (and PMIX_RANK: it is checked first); srun with
// PMIx (--mpi=pmix) sets PMIX_RANK but no size, which the job step's SLURM_STEP_NUM_TASKS gives;
// srun with PMI-2 (--mpi=pmi2) sets PMI_SIZE. Another PMIx or PMI launcher is taken for mpirun.
Launch launch_from_environment() {
  const int step_tasks = environment_count("SLURM_STEP_NUM_TASKS");  // set in srun's tasks only
  if (const int size = environment_count("OMPI_COMM_WORLD_SIZE"); size > 0) return {size, "mpirun"};
  if (std::getenv("PMIX_RANK") != nullptr) {
    if (step_tasks > 0) return {step_tasks, "srun --mpi=pmix"};
    return {1, "mpirun"};
  }
  if (const int size = environment_count("PMI_SIZE"); size > 0)
    return {size, step_tasks > 0 ? "srun --mpi=pmi2" : "mpirun"};
  return {};
}

}  // namespace

MpiJob::MpiJob() {
  const Launch launch = launch_from_environment();
  if (launch.ranks == 0) {
    // srun without an MPI plugin (MpiDefault=none, no --mpi) starts plain processes: say so rather
    // than let each run the whole job (the `run` command refuses it, ketasim.cpp).
    srun_tasks_without_mpi_ = environment_count("SLURM_STEP_NUM_TASKS");
    return;
  }
#ifdef KETASIM_WITH_MPI
  int provided = 0;
  MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided);
  initialised_ = true;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
  MPI_Comm_size(MPI_COMM_WORLD, &ranks_);
  if (ranks_ > 1) launch_command_ = launch.command + " -n " + std::to_string(ranks_);
#else
  if (launch.ranks > 1) {
    throw Error(ExitCode::usage, "started by an MPI launcher with " + std::to_string(launch.ranks) +
                                     " ranks, but this ketasim was built without MPI (KETASIM_WITH_MPI=OFF): "
                                     "rebuild it with MPI, or split the run with `run --shard` and `merge`");
  }
#endif
}

MpiJob::~MpiJob() {
#ifdef KETASIM_WITH_MPI
  if (initialised_) MPI_Finalize();
#endif
}

int MpiJob::largest_over_ranks(int value) const {
#ifdef KETASIM_WITH_MPI
  if (initialised_) {
    int largest = value;
    MPI_Allreduce(&value, &largest, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    return largest;
  }
#endif
  return value;
}

int MpiJob::from_rank_zero(int value) const {
#ifdef KETASIM_WITH_MPI
  if (initialised_) MPI_Bcast(&value, 1, MPI_INT, 0, MPI_COMM_WORLD);
#endif
  return value;
}

void MpiJob::wait_for_all() const {
#ifdef KETASIM_WITH_MPI
  if (initialised_) MPI_Barrier(MPI_COMM_WORLD);
#endif
}

}  // namespace ketasim::cli
