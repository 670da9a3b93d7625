#!/bin/sh
# A real single-node Slurm cluster (docs/hpc.md, "The Slurm cluster test"): munged, slurmctld and
# slurmd from Debian's packages, started here on this host with their key, configuration, state,
# sockets and logs in a private temporary directory (ports that were free), and stopped, with the
# directory removed, when the script ends, whatever happened. On it:
#   - tools/slurm/submit-shards.sh: a job array of 3 shards (ketasim-shard.sbatch) and the merge
#     job that depends on it (ketasim-merge.sbatch);
#   - tools/slurm/ketasim.sbatch on 2 tasks: srun --mpi=pmix starts 2 MPI ranks (mpi_ranks = 2);
#   - the same, stopped by SIGTERM (as before a time limit), then submitted again: it resumes;
#     requeued while it runs (as by a pre-emption): Slurm starts it again and it resumes again;
#   - srun of `ketasim run` on 2 tasks without an MPI plugin: refused, nothing written.
# Each result file has the datasets of the single-process run of the same scenario, bit for bit
# (same_datasets.py). Exits 77 (skipped) only when slurmctld is not installed.
# usage: slurm_cluster.sh KETASIM SOURCE_DIR WORK_DIR SCENARIO SUBJECTS STOPPED_SUBJECTS
set -u
ketasim=$1
source_dir=$2
work=$3
scenario=$4
subjects=$5
stopped_subjects=$6  # a run long enough to be stopped by SIGTERM in the middle
. "$(dirname "$0")/lib.sh"
# The jobs run in the work directory: every path they are given must be absolute.
for path in "$ketasim" "$source_dir" "$work" "$scenario"; do
  case $path in
    /*) ;;
    *) echo "FAIL: $path: give absolute paths (the jobs run in $work)"; exit 2 ;;
  esac
done
PATH=$PATH:/usr/sbin:/sbin  # the daemons, for a caller whose PATH lacks them
if ! command -v slurmctld > /dev/null 2>&1; then
  echo "SKIP: slurmctld is not installed (run tools/install-deps.sh: it installs slurm-wlm and munge)"
  exit 77
fi
for command in slurmd munged sbatch srun scontrol sinfo; do
  command -v $command > /dev/null 2>&1 || { echo "FAIL: $command is missing beside slurmctld (tools/install-deps.sh)"; exit 1; }
done
rm -rf "$work" && mkdir -p "$work" && cd "$work" || exit 1

# The cluster's files: a short path, since munged's socket path must fit a sockaddr_un; searchable
# by all, since munged refuses a socket in a directory that is not.
# A cluster left by a run of this script that was killed (SIGKILL, e.g. a ctest timeout, leaves no
# trap to stop it): its daemons are stopped and its files removed. Only one whose script is gone:
# another run of this script may be going on beside this one.
for left in /tmp/ketasim-slurm.*; do
  [ -f "$left/owner.pid" ] || continue
  kill -0 "$(cat "$left/owner.pid")" 2> /dev/null && continue
  for pid_file in "$left/slurmd.pid" "$left/slurmctld.pid" "$left/munge/munged.pid"; do
    [ -f "$pid_file" ] && kill -TERM "$(cat "$pid_file")" 2> /dev/null &&
      echo "note: stopped $(basename "$pid_file" .pid) (pid $(cat "$pid_file")) left by a killed run in $left"
  done
  rm -rf "$left"
done
cluster=$(mktemp -d /tmp/ketasim-slurm.XXXXXX) || exit 1
chmod 755 "$cluster" || exit 1
echo $$ > "$cluster/owner.pid"
munged_pid=
slurmctld_pid=
slurmd_pid=

# stop PID NAME: SIGTERM to a daemon this script started, and wait (at most 20 s) for it to end.
stop() {
  [ -n "$1" ] || return 0
  kill -TERM "$1" 2> /dev/null || return 0
  waited=0
  while kill -0 "$1" 2> /dev/null && [ $waited -lt 40 ]; do
    sleep 0.5
    waited=$((waited + 1))
  done
  kill -0 "$1" 2> /dev/null && { echo "FAIL: $2 (pid $1) still runs 20 s after SIGTERM: killed"; kill -KILL "$1"; }
  wait "$1" 2> /dev/null
}

# On every exit: cancel what is left of the jobs (a job step's slurmstepd outlives slurmd), stop the
# daemons, keep their logs in the work directory, remove the cluster's directory.
stop_cluster() {
  if [ -n "$slurmctld_pid" ]; then
    jobs=$(squeue -h -o %A 2> /dev/null)
    if [ -n "$jobs" ]; then
      echo "cancelling jobs left: $(echo "$jobs" | tr "\n" " ")"
      scancel $jobs
      waited=0
      while [ -n "$(squeue -h -o %A 2> /dev/null)" ] && [ $waited -lt 40 ]; do
        sleep 0.5
        waited=$((waited + 1))
      done
    fi
  fi
  stop "$slurmd_pid" slurmd
  stop "$slurmctld_pid" slurmctld
  stop "$munged_pid" munged
  mkdir -p cluster-logs && cp "$cluster"/*.log "$cluster"/munge/*.log cluster-logs/ 2> /dev/null
  rm -rf "$cluster"
}
trap stop_cluster EXIT
trap 'echo "FAIL: stopped by a signal"; exit 1' INT TERM HUP

# A TCP port free on this host now (the kernel's choice), for a daemon to listen on.
free_port() {
  /usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("", 0)); print(s.getsockname()[1])'
}

# --- munge: a key of our own, a daemon of our own on a socket of our own.
mkdir -m 755 "$cluster/munge" || exit 1
if command -v mungekey > /dev/null 2>&1; then
  mungekey --create --keyfile="$cluster/munge/munge.key" || exit 1
else
  dd if=/dev/urandom of="$cluster/munge/munge.key" bs=128 count=1 2> /dev/null || exit 1
fi
chmod 600 "$cluster/munge/munge.key"
socket=$cluster/munge/munge.socket
munged --foreground --socket="$socket" --key-file="$cluster/munge/munge.key" --log-file="$cluster/munge/munged.log" \
  --pid-file="$cluster/munge/munged.pid" --seed-file="$cluster/munge/munged.seed" > "$cluster/munge/stdout.log" 2>&1 &
munged_pid=$!
waited=0
until [ -S "$socket" ] || [ $waited -ge 40 ]; do
  sleep 0.25
  waited=$((waited + 1))
done
munge --socket="$socket" --no-input | unmunge --socket="$socket" > /dev/null ||
  { echo "FAIL: munged does not answer on $socket"; cat "$cluster/munge/"*.log; exit 1; }

# --- slurm.conf for this host: its real CPUs and memory (slurmd -C), one partition.
node_line=$(slurmd -C | grep '^NodeName=') || { echo "FAIL: slurmd -C printed no NodeName line"; exit 1; }
node=$(echo "$node_line" | sed 's/^NodeName=\([^ ]*\).*/\1/')
cpus=$(echo "$node_line" | sed -n 's/.* CPUs=\([0-9]*\).*/\1/p')
user=$(id -un)
cat > "$cluster/slurm.conf" << EOF
ClusterName=ketasim-test
SlurmctldHost=$node(127.0.0.1)
SlurmctldPort=$(free_port)
SlurmdPort=$(free_port)
SlurmUser=$user
SlurmdUser=$user
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$socket
StateSaveLocation=$cluster/state
SlurmdSpoolDir=$cluster/spool
SlurmctldPidFile=$cluster/slurmctld.pid
SlurmdPidFile=$cluster/slurmd.pid
SlurmctldLogFile=$cluster/slurmctld.log
SlurmdLogFile=$cluster/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
DependencyParameters=kill_invalid_depend
$node_line NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=test Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF
mkdir -p "$cluster/state" "$cluster/spool" || exit 1
export SLURM_CONF="$cluster/slurm.conf"

# --- the daemons, in the foreground of background jobs (so that $! is theirs).
slurmctld -D -c > "$cluster/slurmctld.stdout.log" 2>&1 &
slurmctld_pid=$!
slurmd -D > "$cluster/slurmd.stdout.log" 2>&1 &
slurmd_pid=$!
waited=0
state=
until [ "$state" = idle ] || [ $waited -ge 120 ]; do
  sleep 0.5
  waited=$((waited + 1))
  state=$(sinfo -h -n "$node" -o %t 2> /dev/null)
done
if [ "$state" != idle ]; then
  echo "FAIL: the node $node is not idle 60 s after the daemons started (sinfo: '$state')"
  tail -n 20 "$cluster"/*.log
  exit 1
fi
echo "cluster up: node $node, $cpus CPUs, SLURM_CONF=$SLURM_CONF"
# ketasim-shard.sbatch asks for 2 CPUs per task, and the MPI job for 2 tasks: a node of fewer CPUs
# could never start them (the test would only time out).
[ "${cpus:-0}" -ge 2 ] || { echo "FAIL: slurmd -C reports $cpus CPUs; the test's jobs need 2"; exit 1; }

attribute() {
  /usr/bin/python3 -c 'import sys, h5py; print(h5py.File(sys.argv[1], "r").attrs.get(sys.argv[2]))' "$1" "$2" 2>&1
}

# same_as_single FILE [SINGLE]: FILE has the datasets of the single-process run (single.h5 unless given).
same_as_single() {
  /usr/bin/python3 "$source_dir/tests/cli/same_datasets.py" "${2:-single.h5}" "$1" > same.log 2>&1 ||
    { fail "$1 differs from the single-process run ${2:-single.h5}"; cat same.log; }
}

# wait_job ID WHAT [STATE]: waits (at most 180 s) for job ID to end; fails, with its logs, unless it
# ended in STATE (COMPLETED unless given).
wait_job() {
  waited=0
  while :; do
    state=$(scontrol show job "$1" -o 2> /dev/null | sed -n 's/.*JobState=\([A-Z_]*\).*/\1/p' | sort -u | tr '\n' ' ')
    case $state in
      "${3:-COMPLETED} ") return 0 ;;
      "" | *FAILED* | *CANCELLED* | *TIMEOUT* | *NODE_FAIL* | *OUT_OF_MEMORY* | *BOOT_FAIL* | *DEADLINE*)
        fail "$2 (job $1) ended: '$state'"
        scontrol show job "$1" 2>&1 | grep -e JobState -e Reason
        tail -n 20 ./ketasim*.log 2> /dev/null
        return 1
        ;;
    esac
    if [ $waited -ge 360 ]; then
      fail "$2 (job $1) not finished 180 s after its submission: $state"
      return 1
    fi
    sleep 0.5
    waited=$((waited + 1))
  done
}

"$ketasim" run "$scenario" --subjects "$subjects" -o single.h5 --quiet || fail "the single-process run failed"
export KETASIM="$ketasim"
slurm="$source_dir/tools/slurm"

# (a) The job array of 3 shards and its merge, as a user submits them.
submitted=$(sh "$slurm/submit-shards.sh" "$scenario" array 3 --subjects "$subjects" 2>&1) ||
  fail "submit-shards.sh failed: $submitted"
echo "$submitted"
merge_job=$(echo "$submitted" | sed -n 's/.*merge: job \([0-9]*\) .*/\1/p')
# (b) The MPI job: 2 tasks of 1 CPU.
mpi_job=$(sbatch --parsable --ntasks=2 --cpus-per-task=1 "$slurm/ketasim.sbatch" "$scenario" mpi.h5 \
  --subjects "$subjects" 2>&1) || fail "sbatch ketasim.sbatch failed: $mpi_job"
mpi_job=${mpi_job%%;*}

if [ -n "$merge_job" ] && wait_job "$merge_job" "the merge of the job array"; then
  same_as_single array.h5
  files=$(attribute array.h5 merged_shard_files)
  case $files in
    *array.shard-1.h5*array.shard-2.h5*array.shard-3.h5*) ;;
    *) fail "array.h5's merged_shard_files are not the 3 array tasks' shards: $files" ;;
  esac
else
  [ -n "$merge_job" ] || fail "no merge job id in submit-shards.sh's output"
fi
if wait_job "$mpi_job" "the MPI job (ketasim.sbatch)"; then
  same_as_single mpi.h5
  [ "$(attribute mpi.h5 mpi_ranks)" = 2 ] || fail "mpi.h5's mpi_ranks is $(attribute mpi.h5 mpi_ranks), not 2"
  grep -q "on 2 MPI ranks" "ketasim-$mpi_job.log" || { fail "the MPI job's log does not say 2 ranks"; cat "ketasim-$mpi_job.log"; }
  leftovers=$(ls -A | grep -e '^mpi\.h5\.')
  [ -z "$leftovers" ] || fail "the MPI job left $leftovers"
fi
expect_no_temporaries .

# (c) SIGTERM to the MPI job's ranks, as Slurm sends before the time limit (ketasim.sbatch's
# --signal=TERM@120 goes to the job step; so does scancel --signal): every rank stops at a block
# boundary with its journal kept, the log shows how to resume; the same job submitted again goes on
# from the journals, is requeued, goes on again and writes the single-process file.
"$ketasim" run "$scenario" --subjects "$stopped_subjects" --block-size 16 -o stopped_single.h5 --quiet ||
  fail "the single-process run of $stopped_subjects subjects failed"
stopped_job=$(sbatch --parsable --ntasks=2 --cpus-per-task=1 "$slurm/ketasim.sbatch" "$scenario" stopped.h5 \
  --subjects "$stopped_subjects" --block-size 16 2>&1) || fail "sbatch ketasim.sbatch failed: $stopped_job"
stopped_job=${stopped_job%%;*}
wait_for_files 600 stopped.h5.rank-1-of-2.h5.journal stopped.h5.rank-2-of-2.h5.journal
sleep 1
scancel --signal=TERM "$stopped_job" || fail "scancel --signal=TERM $stopped_job failed"
if wait_job "$stopped_job" "the MPI job stopped by SIGTERM" FAILED; then
  log=ketasim-$stopped_job.log
  [ "$(grep -c 'stopped by SIGTERM' "$log")" = 2 ] || { fail "not both ranks stopped by SIGTERM"; cat "$log"; }
  grep -q -F "resume with: srun --mpi=pmix -n 2 ketasim run $scenario -o stopped.h5 --resume --subjects $stopped_subjects --block-size 16" "$log" ||
    { fail "the stopped job does not show the srun command that resumes it"; cat "$log"; }
  grep -q "under Slurm: submit the job again with --resume" "$log" || { fail "the stopped job does not say to submit it again"; cat "$log"; }
  [ -e stopped.h5 ] && fail "the stopped job wrote stopped.h5"
  journal_1=stopped.h5.rank-1-of-2.h5.journal
  journal_2=stopped.h5.rank-2-of-2.h5.journal
  stopped_sizes="$(wc -c < $journal_1) $(wc -c < $journal_2)"
  resumed_job=$(sbatch --parsable --ntasks=2 --cpus-per-task=1 "$slurm/ketasim.sbatch" "$scenario" stopped.h5 \
    --subjects "$stopped_subjects" --block-size 16 2>&1) || fail "sbatch ketasim.sbatch (again) failed: $resumed_job"
  resumed_job=${resumed_job%%;*}
  log=ketasim-$resumed_job.log
  # Both ranks have read their journal back and journaled a new block: both journals have grown.
  grown() { set -- $stopped_sizes; [ "$(wc -c < $journal_1)" -gt "$1" ] && [ "$(wc -c < $journal_2)" -gt "$2" ]; }
  waited=0
  until grown 2> /dev/null || [ $waited -ge 600 ]; do
    sleep 0.1
    waited=$((waited + 1))
  done
  grep -q "resuming from stopped.h5.rank-1-of-2.h5.journal" "$log" 2> /dev/null ||
    { fail "the job submitted again did not resume"; cat "$log"; }
  # A pre-emption: the job submitted again is requeued while it runs (scontrol requeue, what a
  # pre-emption with PreemptMode=REQUEUE does to a job submitted with --requeue). Slurm stops it with
  # SIGTERM and starts it again (after holding it back: StartTime is set to now here), and it goes
  # on from the journals by itself.
  scontrol requeue "$resumed_job" || fail "scontrol requeue $resumed_job failed"
  waited=0
  until scontrol show job "$resumed_job" -o 2> /dev/null | grep -q "JobState=PENDING" || [ $waited -ge 600 ]; do
    sleep 0.1
    waited=$((waited + 1))
  done
  cp "$log" requeued.log 2> /dev/null  # the log of the job's next start replaces it
  [ "$(grep -c 'stopped by SIGTERM' requeued.log)" = 2 ] ||
    { fail "the requeue did not stop both ranks by SIGTERM (did the job end before it?)"; cat requeued.log; }
  scontrol update jobid="$resumed_job" StartTime=now || fail "scontrol update StartTime=now failed"
  if wait_job "$resumed_job" "the requeued MPI job"; then
    grep -q "resuming from stopped.h5.rank-1-of-2.h5.journal" "$log" ||
      { fail "the requeued job did not resume"; cat "$log"; }
    same_as_single stopped.h5 stopped_single.h5
    leftovers=$(ls -A | grep -e '\.rank-' -e '\.journal')
    [ -z "$leftovers" ] || fail "the requeued job left $leftovers"
  fi
fi

# (d) srun without an MPI plugin starts plain processes: `run` refuses rather than have each task
# write the whole run into one file.
output=$(timeout 120 srun --mpi=none --ntasks=2 --cpus-per-task=1 "$ketasim" run "$scenario" \
  --subjects "$subjects" -o bare.h5 2>&1) && fail "srun --mpi=none -n 2 ketasim run exited 0"
case $output in
  *"srun started 2 tasks without an MPI plugin"*) ;;
  *) fail "srun --mpi=none -n 2: no clear refusal: $output" ;;
esac
[ -e bare.h5 ] && fail "srun --mpi=none -n 2 wrote bare.h5"
finish
