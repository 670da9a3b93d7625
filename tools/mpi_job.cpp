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

// The number of ranks an MPI launcher announced in the environment; 0 if none did. OpenMPI's
// mpirun sets OMPI_COMM_WORLD_SIZE, srun with PMI-2 PMI_SIZE, srun with PMIx PMIX_RANK (no size).
int launcher_ranks() {
  for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE"}) {
    const char* value = std::getenv(name);
    if (value != nullptr && *value != '\0') return std::max(1, std::atoi(value));
  }
  return std::getenv("PMIX_RANK") != nullptr ? 1 : 0;
}

}  // namespace

MpiJob::MpiJob() {
  const int announced = launcher_ranks();
  if (announced == 0) return;
#ifdef KETASIM_WITH_MPI
  int provided = 0;
  MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided);
  initialised_ = true;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
  MPI_Comm_size(MPI_COMM_WORLD, &ranks_);
#else
  if (announced > 1) {
    throw Error(ExitCode::usage, "started by an MPI launcher with " + std::to_string(announced) +
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

}  // namespace ketasim::cli
