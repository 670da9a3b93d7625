#include "mpi_job.hpp"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <string>
#include <thread>

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

#ifdef KETASIM_WITH_MPI
// Waits for a non-blocking collective by testing it every 10 ms: a rank waiting for another (rank 0
// writing the output, the slowest rank) sleeps rather than spins in MPI's progress loop, which
// would take a core from the ranks still working on the same node.
void wait_sleeping(MPI_Request& request) {
  int completed = 0;
  while (true) {
    MPI_Test(&request, &completed, MPI_STATUS_IGNORE);
    if (completed) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}
#endif

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
    MPI_Request request = MPI_REQUEST_NULL;
    MPI_Iallreduce(&value, &largest, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD, &request);
    wait_sleeping(request);
    return largest;
  }
#endif
  return value;
}

int MpiJob::from_rank_zero(int value) const {
#ifdef KETASIM_WITH_MPI
  if (initialised_) {
    MPI_Request request = MPI_REQUEST_NULL;
    MPI_Ibcast(&value, 1, MPI_INT, 0, MPI_COMM_WORLD, &request);
    wait_sleeping(request);
  }
#endif
  return value;
}

void MpiJob::wait_for_all() const {
#ifdef KETASIM_WITH_MPI
  if (initialised_) MPI_Barrier(MPI_COMM_WORLD);
#endif
}

}  // namespace ketasim::cli

namespace ketasim::cli {

// What a rank sends rank 0: subjects done, subjects resumed, 1 for its last message, busy microseconds.
struct RankProgress::Channel {
#ifdef KETASIM_WITH_MPI
  MPI_Comm comm = MPI_COMM_NULL;
  MPI_Request request = MPI_REQUEST_NULL;
  std::int64_t message[4] = {0, 0, 0, 0};  // the send in flight reads it: not touched until it completes
#endif
};

namespace {
#ifdef KETASIM_WITH_MPI
constexpr int kProgressTag = 1;
#endif
}  // namespace

RankProgress::RankProgress(const MpiJob& job)
    : job_(job),
      channel_(std::make_unique<Channel>()),
      latest_(static_cast<std::size_t>(job.ranks())),
      busy_seconds_(static_cast<std::size_t>(job.ranks()), 0.0),
      done_(static_cast<std::size_t>(job.ranks()), false) {
#ifdef KETASIM_WITH_MPI
  if (job_.initialised_) MPI_Comm_dup(MPI_COMM_WORLD, &channel_->comm);
#endif
}

RankProgress::~RankProgress() {
#ifdef KETASIM_WITH_MPI
  if (channel_->comm != MPI_COMM_NULL) {
    if (channel_->request != MPI_REQUEST_NULL) MPI_Wait(&channel_->request, MPI_STATUS_IGNORE);
    MPI_Comm_free(&channel_->comm);
  }
#endif
}

void RankProgress::publish(const RankCount& count) {
#ifdef KETASIM_WITH_MPI
  if (channel_->comm == MPI_COMM_NULL || job_.rank() == 0) return;
  if (channel_->request != MPI_REQUEST_NULL) {
    int completed = 0;
    MPI_Test(&channel_->request, &completed, MPI_STATUS_IGNORE);
    if (!completed) return;  // rank 0 has not taken the last one yet: this count is skipped, not queued
  }
  channel_->message[0] = count.subjects_done;
  channel_->message[1] = count.subjects_resumed;
  channel_->message[2] = 0;
  channel_->message[3] = 0;
  MPI_Isend(channel_->message, 4, MPI_INT64_T, 0, kProgressTag, channel_->comm, &channel_->request);
#else
  (void)count;
#endif
}

void RankProgress::publish_last(const RankCount& count, double busy_seconds) {
#ifdef KETASIM_WITH_MPI
  if (channel_->comm == MPI_COMM_NULL || job_.rank() == 0) return;
  if (channel_->request != MPI_REQUEST_NULL) MPI_Wait(&channel_->request, MPI_STATUS_IGNORE);
  channel_->message[0] = count.subjects_done;
  channel_->message[1] = count.subjects_resumed;
  channel_->message[2] = 1;
  channel_->message[3] = static_cast<std::int64_t>(busy_seconds * 1e6);
  MPI_Send(channel_->message, 4, MPI_INT64_T, 0, kProgressTag, channel_->comm);
#else
  (void)count;
  (void)busy_seconds;
#endif
}

RankCount RankProgress::job_count(const RankCount& own) {
#ifdef KETASIM_WITH_MPI
  if (channel_->comm != MPI_COMM_NULL && job_.rank() == 0) {
    while (true) {
      int arrived = 0;
      MPI_Status status;
      MPI_Iprobe(MPI_ANY_SOURCE, kProgressTag, channel_->comm, &arrived, &status);
      if (!arrived) break;
      std::int64_t message[4];
      MPI_Recv(message, 4, MPI_INT64_T, status.MPI_SOURCE, kProgressTag, channel_->comm, MPI_STATUS_IGNORE);
      const auto rank = static_cast<std::size_t>(status.MPI_SOURCE);
      // Messages of one sender arrive in the order sent: the last one is the rank's final count.
      latest_[rank] = {message[0], message[1]};
      if (message[2] == 1) {
        done_[rank] = true;
        busy_seconds_[rank] = static_cast<double>(message[3]) / 1e6;
      }
    }
  }
#endif
  RankCount job = own;
  for (std::size_t rank = 1; rank < latest_.size(); ++rank) {
    job.subjects_done += latest_[rank].subjects_done;
    job.subjects_resumed += latest_[rank].subjects_resumed;
  }
  return job;
}

bool RankProgress::all_ranks_done() const {
  return std::all_of(done_.begin() + (done_.empty() ? 0 : 1), done_.end(), [](bool done) { return done; });
}

std::vector<double> RankProgress::busy_seconds(double own) const {
  std::vector<double> seconds = busy_seconds_;
  if (!seconds.empty()) seconds.front() = own;
  return seconds;
}

}  // namespace ketasim::cli
