#pragma once
// The MPI job a `ketasim` process may be one rank of (docs/hpc.md, "MPI"). MPI is initialised only
// when an MPI launcher started the process (its environment says so: mpirun, or srun with PMI or
// PMIx), so a plain `ketasim` never loads MPI's runtime and prints nothing of it. Only the CLI
// links MPI; the engine knows nothing of ranks (a rank computes a shard, rank 0 merges).

#include <string>

namespace ketasim::cli {

class MpiJob {
 public:
  // Initialises MPI (MPI_THREAD_FUNNELED: only the main thread calls MPI) when a launcher's
  // environment is present. Throws Error(usage) when it says there are several ranks but this
  // ketasim was built without MPI (KETASIM_WITH_MPI=OFF): each rank would otherwise write the
  // whole run into the same file.
  MpiJob();
  ~MpiJob();  // MPI_Finalize
  MpiJob(const MpiJob&) = delete;
  MpiJob& operator=(const MpiJob&) = delete;

  int rank() const { return rank_; }  // from 0
  int ranks() const { return ranks_; }
  bool several_ranks() const { return ranks_ > 1; }
  // The command that starts this job's ranks again, to put before `ketasim run ...` in a resume
  // hint: "mpirun -n 4", "srun --mpi=pmix -n 4"; "" for a single process.
  const std::string& launch_command() const { return launch_command_; }
  // The tasks of a Slurm job step that srun started without an MPI plugin (no PMI or PMIx in the
  // environment): each is a plain process, unaware of the others. 0 outside such a step.
  int srun_tasks_without_mpi() const { return srun_tasks_without_mpi_; }

  // Collective: the largest of every rank's `value`.
  int largest_over_ranks(int value) const;
  // Collective: rank 0's `value`, on every rank.
  int from_rank_zero(int value) const;
  // Collective: returns when every rank has called it (a barrier).
  void wait_for_all() const;

 private:
  int rank_ = 0;
  int ranks_ = 1;
  bool initialised_ = false;
  std::string launch_command_;
  int srun_tasks_without_mpi_ = 0;
};

}  // namespace ketasim::cli
