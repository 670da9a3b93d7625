#!/bin/sh
# The load balance of `mpirun -n 2 ketasim run` on a cohort whose cost is uneven along the subject
# index (uneven.yaml: the first quarter of the subjects costs several times what the others do;
# docs/hpc.md "Load balance"). For ROUNDS rounds, alternating, it measures each rank's busy time
# and the idle share of the ranks' time (1 - sum of busy / (2 x the slowest)) for:
#   contiguous   the two halves of the cohort at once, `run --shard 1/2` and `--shard 2/2`, 1 thread
#                each: the split of the ranks before issue 12's remedy (a rank was that shard run);
#                busy = each process's wall time (/usr/bin/time)
#   interleaved  `mpirun -n 2 ketasim run -t 1`: rank r simulates the blocks b with b mod 2 = r;
#                busy = the file's mpi_rank_busy_seconds (each rank, start to journal complete)
# Both write the metrics only. Not a test: timings, on whatever else the machine is doing.
# usage: sh benchmarks/load_balance/run.sh KETASIM WORK_DIR [SUBJECTS (40000)] [ROUNDS (3)]
set -eu
ketasim=$(realpath "$1")
work=$2
subjects=${3:-40000}
rounds=${4:-3}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$work" && cd "$work"
cp "$here/uneven.yaml" uneven.yaml
# The first quarter of the subjects (IDs 1 ... SUBJECTS/4) get 400 boluses of 1 mg, 1.5 h apart.
awk -v heavy=$((subjects / 4)) 'BEGIN { print "ID,TIME,AMT,ADDL,II"; for (i = 1; i <= heavy; i++) print i ",0.25,1,399,1.5" }' \
  > heavy_doses.csv
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

idle() {  # busy seconds of rank 0 and rank 1 -> "a s, b s, idle p%"
  awk -v a="$1" -v b="$2" 'BEGIN { m = a > b ? a : b; printf "%.1f s, %.1f s, idle %.0f%%\n", a, b, 100 * (1 - (a + b) / (2 * m)) }'
}

contiguous() {
  rm -f c1.h5 c2.h5
  /usr/bin/time -f %e -o c1.time "$ketasim" run uneven.yaml --subjects "$subjects" --shard 1/2 -t 1 -q -o c1.h5 &
  first=$!
  /usr/bin/time -f %e -o c2.time "$ketasim" run uneven.yaml --subjects "$subjects" --shard 2/2 -t 1 -q -o c2.h5
  wait $first
  echo "contiguous:  $(idle "$(cat c1.time)" "$(cat c2.time)")"
}

interleaved() {
  rm -f m.h5
  /usr/bin/time -f %e -o m.time mpirun --oversubscribe -n 2 "$ketasim" run uneven.yaml --subjects "$subjects" -t 1 -q -o m.h5
  busy=$(/usr/bin/python3 -c 'import sys, h5py; print(*h5py.File(sys.argv[1], "r").attrs["mpi_rank_busy_seconds"])' m.h5)
  echo "interleaved: $(idle ${busy% *} ${busy#* }) (mpirun wall $(cat m.time) s, the file's writing included)"
}

echo "uneven.yaml, $subjects subjects, $((subjects / 4)) of them heavy; $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
round=1
while [ $round -le "$rounds" ]; do
  if [ $((round % 2)) = 1 ]; then contiguous; interleaved; else interleaved; contiguous; fi
  round=$((round + 1))
done
