#!/bin/sh
# The scaling benchmark of issue 12 (docs/hpc.md "Measured"): scenarios/once_vs_twice_weekly.yaml,
# metrics only (the scenario with `variables: []` added under `output:`, written to
# WORK_DIR/metrics.yaml), SUBJECTS_PER_ARM subjects in each of its 2 arms, on 2 cores. For ROUNDS
# rounds, in alternating order (D A B C, then C B A D, ...), it runs:
#   D  1 process x 1 thread    `ketasim run -t 1`                       (the reference of the efficiency)
#   A  1 process x 2 threads   `ketasim run -t 2`
#   B  2 ranks x 1 thread      `mpirun -n 2 ketasim run -t 1`           (each rank under its own /usr/bin/time)
#   C  2 shards + merge        `run --shard 1/2` and `--shard 2/2` at once, 1 thread each, then
#                              `ketasim merge -t 2`; wall time from the shards' start to the merge's end
# and measures the wall time and every process's peak resident memory with GNU time
# (`/usr/bin/time -f '%e %M'`, Debian package `time`). Each round checks that A, B, C (and D) wrote
# the same datasets (tests/cli/same_datasets.py). Then a table: wall time min / median over rounds,
# subject-arms per second (at the median), peak RSS of each process (max over rounds) and the
# parallel efficiency on 2 cores, wall(D) / (2 x wall(X)) of the same round, median [min, max].
# Not a test: timings, on whatever else the machine is doing (the load is printed with each round).
# usage: sh benchmarks/scaling/run.sh KETASIM WORK_DIR SUBJECTS_PER_ARM [ROUNDS (2)]
set -eu
ketasim=$(realpath "$1")
work=$2
subjects=$3
rounds=${4:-2}
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$(dirname "$here")")
same="/usr/bin/python3 $root/tests/cli/same_datasets.py"
[ -x /usr/bin/time ] || { echo "needs GNU time (/usr/bin/time): apt-get install time" >&2; exit 2; }
mkdir -p "$work" && cd "$work"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

{
  echo "# Derived by benchmarks/scaling/run.sh from scenarios/once_vs_twice_weekly.yaml: metrics only."
  awk '{ print } /^output:/ { print "  variables: []" }' "$root/scenarios/once_vs_twice_weekly.yaml"
} > metrics.yaml
grep -q '^  variables: \[\]' metrics.yaml || { echo "no output: section in the scenario" >&2; exit 2; }
arms=2
: > results.txt  # one line per configuration and round: round config wall_s rss_kib...

load() { cut -d' ' -f1-3 /proc/loadavg; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }

single() {  # config threads
  rm -f "$1.h5"
  /usr/bin/time -f '%e %M' -o "$1.time" "$ketasim" run metrics.yaml --subjects "$subjects" -t "$2" -q -o "$1.h5"
  set -- "$1" $(cat "$1.time")
  echo "$round $1 $2 $3" >> results.txt
}

ranks() {
  rm -f B.h5 B.rank-*.time
  /usr/bin/time -f '%e %M' -o B.time mpirun --oversubscribe -n 2 \
    sh -c 'exec /usr/bin/time -f "%e %M" -o B.rank-$OMPI_COMM_WORLD_RANK.time "$@"' sh \
    "$ketasim" run metrics.yaml --subjects "$subjects" -t 1 -q -o B.h5
  echo "$round B $(cut -d' ' -f1 B.time) $(cut -d' ' -f2 B.rank-0.time) $(cut -d' ' -f2 B.rank-1.time)" >> results.txt
}

shards() {
  rm -f C.h5 C.shard-1.h5 C.shard-2.h5
  start=$(now)
  /usr/bin/time -f '%e %M' -o C.shard-1.time "$ketasim" run metrics.yaml --subjects "$subjects" --shard 1/2 -t 1 -q -o C.shard-1.h5 &
  first=$!
  /usr/bin/time -f '%e %M' -o C.shard-2.time "$ketasim" run metrics.yaml --subjects "$subjects" --shard 2/2 -t 1 -q -o C.shard-2.h5
  wait $first
  /usr/bin/time -f '%e %M' -o C.merge.time "$ketasim" merge C.shard-1.h5 C.shard-2.h5 -o C.h5 -t 2 -q
  echo "$round C $(elapsed "$start" "$(now)") $(cut -d' ' -f2 C.shard-1.time) $(cut -d' ' -f2 C.shard-2.time) $(cut -d' ' -f2 C.merge.time)" >> results.txt
}

echo "once_vs_twice_weekly.yaml, metrics only, $subjects subjects x $arms arms, $rounds rounds; $(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo)"
round=1
while [ "$round" -le "$rounds" ]; do
  echo "round $round: load $(load) at the start"
  if [ $((round % 2)) = 1 ]; then
    single D 1; single A 2; ranks; shards
  else
    shards; ranks; single A 2; single D 1
  fi
  for x in B C D; do $same A.h5 $x.h5 > same.txt || { cat same.txt; echo "A and $x differ" >&2; exit 1; }; done
  echo "round $round: load $(load) at the end; A, B, C, D: $(tail -n 1 same.txt)"
  round=$((round + 1))
done

awk -v n="$subjects" -v arms="$arms" '
  function sorted(s, a,   k, i, j, t) { k = split(s, a, " "); for (i = 2; i <= k; i++) for (j = i; j > 1 && a[j - 1] > a[j]; j--) { t = a[j]; a[j] = a[j - 1]; a[j - 1] = t } return k }
  function median(s,   a, k) { k = sorted(s, a); return k % 2 ? a[(k + 1) / 2] : (a[k / 2] + a[k / 2 + 1]) / 2 }
  function least(s,   a) { sorted(s, a); return a[1] }
  function most(s,   a, k) { k = sorted(s, a); return a[k] }
  { wall[$1, $2] = $3; walls[$2] = walls[$2] " " $3
    for (i = 4; i <= NF; i++) if ($i > rss[$2, i - 3]) rss[$2, i - 3] = $i; processes[$2] = NF - 3
    if ($1 > rounds) rounds = $1 }
  END {
    split("D A B C", order, " ")
    label["D"] = "D 1 process x 1 thread"; label["A"] = "A 1 process x 2 threads"
    label["B"] = "B 2 ranks x 1 thread"; label["C"] = "C 2 shards + merge"
    who["D"] = "process"; who["A"] = "process"; who["B"] = "rank 0, rank 1"; who["C"] = "shard 1, shard 2, merge"
    printf "%-26s %-16s %-15s %-40s %s\n", "config", "wall s min/med", "subject-arms/s", "peak RSS MiB per process", "efficiency 1 -> 2 (median [range])"
    for (o = 1; o <= 4; o++) {
      c = order[o]; m = median(walls[c]); r = ""
      for (i = 1; i <= processes[c]; i++) r = r (i > 1 ? ", " : "") sprintf("%.0f", rss[c, i] / 1024)
      e = ""
      for (k = 1; k <= rounds; k++) e = e " " wall[k, "D"] / (2 * wall[k, c])
      eff = c == "D" ? "(reference)" : sprintf("%.2f [%.2f, %.2f]", median(e), least(e), most(e))
      printf "%-26s %-16s %-15.0f %-40s %s\n", label[c], sprintf("%.1f / %.1f", least(walls[c]), m), n * arms / m, r " (" who[c] ")", eff
    }
  }' results.txt
echo "load $(load) at the end"
