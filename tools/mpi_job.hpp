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

  // Collective: the largest of every rank's `value`.
  int largest_over_ranks(int value) const;
  // Collective: rank 0's `value`, on every rank.
  int from_rank_zero(int value) const;

 private:
  int rank_ = 0;
  int ranks_ = 1;
  bool initialised_ = false;
};

}  // namespace ketasim::cli
