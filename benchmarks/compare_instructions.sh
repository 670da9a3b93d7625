#!/bin/sh
# Instructions executed by two builds of the ketasim CLI on the same metrics-only run of workload W1
# (valgrind's callgrind; Debian package valgrind). Instruction counts do not depend on the load of
# a shared machine, so they separate a small change in the work done from the noise of timings;
# they are not times (cache misses and branch mispredictions are not counted): quote them next to
# a side-by-side timing (benchmarks/compare_throughput.py), never instead of one.
#
#   sh benchmarks/compare_instructions.sh OLD/ketasim NEW/ketasim [SUBJECTS [trajectories]]
#
# With `trajectories`, W1 keeps its three output variables: the run also writes them (compressed)
# and their per-time quantiles to the file.
set -eu
if [ $# -lt 2 ]; then
  echo "usage: $0 OLD_KETASIM NEW_KETASIM [SUBJECTS (default 1000) [trajectories]]" >&2
  exit 2
fi
command -v valgrind >/dev/null || { echo "$0: valgrind is not installed (apt-get install valgrind)" >&2; exit 2; }
old=$1 new=$2 subjects=${3:-1000} mode=${4:-metrics}
case $mode in
  metrics) keep='s/^  variables: .*/  variables: []/' what="metrics only" ;;
  trajectories) keep='' what="trajectories and the HDF5 file" ;;
  *) echo "$0: the fourth argument is 'trajectories' or nothing, not '$mode'" >&2; exit 2 ;;
esac
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
sed -e "$keep" -e "s/^  size: .*/  size: $subjects/" "$here/w1.yaml" > "$work/w1.yaml"
count() {
  valgrind --tool=callgrind --callgrind-out-file="$work/callgrind.out" "$1" run "$work/w1.yaml" \
    -o "$work/out.h5" --threads 1 2>&1 >/dev/null | sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
  rm -f "$work/out.h5"
}
old_count=$(count "$old")
new_count=$(count "$new")
echo "W1 $what, $subjects subjects, 1 thread: instructions executed (whole process)"
echo "old $old_count"
echo "new $new_count"
awk -v a="$old_count" -v b="$new_count" 'BEGIN { printf "new/old %.3f\n", b / a }'
