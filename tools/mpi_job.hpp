#pragma once
// The MPI job a `ketasim` process may be one rank of (docs/hpc.md, "MPI"). MPI is initialised only
// when an MPI launcher started the process (its environment says so: mpirun, or srun with PMI or
// PMIx), so a plain `ketasim` never loads MPI's runtime and prints nothing of it. Only the CLI
// links MPI; the engine knows nothing of ranks (a rank simulates its interleaved blocks into its
// journal, rank 0 writes the file from the journals).

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

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

  // Collective: the largest of every rank's `value`. Waits sleeping (a non-blocking collective tested
  // every 10 ms), not spinning: a rank waiting for the others leaves its core to them.
  int largest_over_ranks(int value) const;
  // Collective: rank 0's `value`, on every rank.
  int from_rank_zero(int value) const;
  // Collective: returns when every rank has called it (a barrier).
  void wait_for_all() const;

 private:
  friend class RankProgress;
  int rank_ = 0;
  int ranks_ = 1;
  bool initialised_ = false;
  std::string launch_command_;
  int srun_tasks_without_mpi_ = 0;
};

// Subjects of every arm done by one rank (or, summed, by the job).
struct RankCount {
  std::int64_t subjects_done = 0;
  std::int64_t subjects_resumed = 0;  // of them, read back from the rank's journal
};

// The progress of every rank, gathered on rank 0 for its one progress line (docs/hpc.md, "MPI").
// The other ranks send their counts to rank 0 by point-to-point messages on a communicator of their
// own, without ever waiting: a rank sends a count only when its previous send has completed (else
// the count waits for the next call, which replaces it), and rank 0 takes what has arrived
// (MPI_Iprobe) whenever it draws its line. MPI is called from the main thread only (the run's
// progress callback runs there). Each rank ends with one last message: its count and the seconds it
// was busy, which rank 0 waits for before it writes the file (the load balance, measured). Without MPI, or
// on one rank, it does nothing.
class RankProgress {
 public:
  explicit RankProgress(const MpiJob& job);  // collective (duplicates the communicator)
  ~RankProgress();                           // collective (frees it)
  RankProgress(const RankProgress&) = delete;
  RankProgress& operator=(const RankProgress&) = delete;

  // Not rank 0: sends `count` if no earlier send is in flight. Never waits.
  void publish(const RankCount& count);
  // Not rank 0: the last count and the seconds this rank was busy; waits for the send to complete
  // (rank 0 keeps receiving until it has every rank's last message).
  void publish_last(const RankCount& count, double busy_seconds);

  // Rank 0: receives what has arrived (never waits); the sum of `own` and every other rank's latest count.
  RankCount job_count(const RankCount& own);
  // Rank 0: whether every other rank has sent its last message (after job_count received them).
  bool all_ranks_done() const;
  // Rank 0, once all_ranks_done(): each rank's busy seconds, rank 0's (`own`) first.
  std::vector<double> busy_seconds(double own) const;

 private:
  const MpiJob& job_;
  struct Channel;  // the MPI types, in mpi_job.cpp
  std::unique_ptr<Channel> channel_;
  std::vector<RankCount> latest_;     // rank 0: per rank
  std::vector<double> busy_seconds_;  // rank 0: per rank, once its last message came
  std::vector<bool> done_;            // rank 0: per rank
};

}  // namespace ketasim::cli
