#!/bin/sh
# SIGTERM during long solves (issue 9: it took 110-516 s to act on large grids, because the run
# looked at it only between blocks of subjects). Each subject of the scenario takes about a
# second, and the 64 subjects run as one block on one thread (before: the signal acted after the
# block, some 20-60 s later). The run must end with exit 143 (128 + SIGTERM; 130 before issue 12's
# resume) and no file left (no journal either: no block was finished), within the 10 s
# allowed: the run checks between subjects and within their solves.
#
# usage: sigterm_in_long_solves.sh KETASIM SCENARIO WORK_DIRECTORY
set -u
ketasim=$1
scenario=$2
work=$3
rm -rf "$work" && mkdir -p "$work" || exit 1

"$ketasim" run "$scenario" --subjects 64 --threads 1 -o "$work/results.h5" --quiet 2> "$work/stderr" &
pid=$!
waited=0
until ls "$work"/results.h5.ketasim-tmp.* > /dev/null 2>&1; do
  kill -0 "$pid" 2>/dev/null || { echo "the run ended before it started writing"; cat "$work/stderr"; exit 1; }
  sleep 0.1
  waited=$((waited + 1))
  [ "$waited" -lt 600 ] || { echo "no temporary file after 60 s"; kill -KILL "$pid"; exit 1; }
done
sleep 2  # inside the first subjects' solves
kill -TERM "$pid"
waited=0
while kill -0 "$pid" 2>/dev/null; do
  sleep 0.1
  waited=$((waited + 1))
  if [ "$waited" -ge 100 ]; then
    echo "FAIL: still running 10 s after SIGTERM"
    kill -KILL "$pid"
    exit 1
  fi
done
wait "$pid"
status=$?
echo "exit status $status after about $((waited / 10)) s; stderr:"
cat "$work/stderr"
failed=0
[ "$status" -eq 143 ] || { echo "FAIL: expected exit status 143"; failed=1; }
leftover=$(ls -A "$work" | grep -v '^stderr$')
[ -z "$leftover" ] || { echo "FAIL: files left: $leftover"; failed=1; }
exit $failed
