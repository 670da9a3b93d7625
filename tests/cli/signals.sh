#!/bin/sh
# Interrupting a run never leaves its temporary file behind (docs/cli.md, "Interruption"):
#   int-twice     Ctrl-C, then Ctrl-C again while the run is still cleaning up: exit 130
#   term-group    SIGTERM to the process group twice (as `kill -- -PGID` and `timeout` do), and
#                 `timeout` itself: exit 130, or 143 if the first stopped it (timeout: 124)
#   kill-then-run kill -9 leaves the temporary file; the next run into the directory names it,
#                 `ketasim clean` removes it, and leaves the temporary of a run still going alone
# The run interrupted is tests/cli/slow_to_stop.yaml on one thread: it would take minutes, and
# after a first signal it takes seconds to stop, so that the second signal comes while it stops.
# usage: signals.sh KETASIM SCENARIO WORK_DIR MODE
set -u
ketasim=$1
scenario=$2
work=$3
mode=$4
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
slow="$here/slow_to_stop.yaml"
rm -rf "$work" && mkdir -p "$work" && cd "$work" || exit 1

# In a session of its own (setsid does not fork here: a background job of a shell without job
# control is not a group leader), so that its process group is its own and the pid is ketasim's.
start_run() {
  setsid "$ketasim" run "$slow" --threads 1 -q -o "$1" 2>"$1.stderr" &
  run_pid=$!
}

# Waits (at most 60 s) until the run has created its temporary file, then one second more, for
# its worker to be inside its first block.
wait_for_temporary() {
  for _ in $(seq 600); do
    if ls | grep -q -e "^$1\.ketasim-tmp\." -e "^$1\.tmp-"; then  # .tmp-PID: the names of ketasim 0.x
      sleep 1
      return 0
    fi
    sleep 0.1
  done
  fail "no temporary file of $1 after 60 s"
  return 1
}

# Waits (at most 60 s) for the run to end; its exit code in run_status.
wait_for_end() {
  for _ in $(seq 600); do
    if ! kill -0 "$run_pid" 2>/dev/null; then
      wait "$run_pid"
      run_status=$?
      return 0
    fi
    sleep 0.1
  done
  fail "the run did not stop within 60 s of the signal"
  kill -KILL "$run_pid"
  wait "$run_pid"
  run_status=$?
}

case $mode in
  int-twice)
    start_run out.h5
    wait_for_temporary out.h5
    kill -INT "$run_pid"
    sleep 0.5  # the first signal's handler has run: the run is finishing its block, not gone
    kill -INT "$run_pid"
    wait_for_end
    [ "$run_status" -eq 130 ] || fail "exit $run_status after two SIGINTs, expected 130"
    ;;
  term-group)
    start_run out.h5
    wait_for_temporary out.h5
    [ "$(ps -o pgid= -p "$run_pid" | tr -d ' ')" = "$run_pid" ] || fail "the run is not the leader of its process group"
    /bin/kill -s TERM -- "-$run_pid"
    sleep 0.5
    /bin/kill -s TERM -- "-$run_pid"
    wait_for_end
    # 130: the second signal came while the run stopped; 143 (128 + SIGTERM): the first had stopped
    # it already (it stops at the next block boundary, or within a solve, and keeps its journal).
    [ "$run_status" -eq 130 ] || [ "$run_status" -eq 143 ] ||
      fail "exit $run_status after SIGTERM to the group twice, expected 130 or 143"
    # timeout signals the run, then its own process group (the run again): the default scenario,
    # which stops within a block of 64 subjects.
    timeout -s TERM 3 "$ketasim" run "$scenario" --subjects 4000 --threads 1 -q -o timeout.h5
    status=$?
    [ "$status" -eq 124 ] || fail "timeout: exit $status, expected 124 (timed out)"
    [ ! -e timeout.h5 ] || fail "timeout.h5 exists"
    ;;
  kill-then-run)
    start_run killed.h5
    wait_for_temporary killed.h5
    kill -KILL "$run_pid"
    wait_for_end
    left=$(ls | grep -e '^killed\.h5\.ketasim-tmp\.' -e '^killed\.h5\.tmp-')
    [ -n "$left" ] || fail "kill -9 left no temporary file: nothing to test"
    expect 0 "note: '.' holds 1 temporary file of ketasim runs on this host that were killed before they finished" \
      run "$scenario" --subjects 2 -q -o small.h5
    expect 0 "\`ketasim clean .\` removes them" run "$scenario" --subjects 2 -q -o small.h5
    start_run running.h5  # a live run's temporary is not stale
    wait_for_temporary running.h5
    expect 0 "removed ./$left" clean .
    ls | grep -q -e '^running\.h5\.ketasim-tmp\.' -e '^running\.h5\.tmp-' || fail "clean removed the temporary file of a run still going"
    kill -INT "$run_pid"
    sleep 0.5
    kill -INT "$run_pid"  # the second stops it at once
    wait_for_end
    expect 0 "no temporary files of killed ketasim runs" clean .
    ;;
  *)
    echo "unknown mode $mode"
    exit 2
    ;;
esac
[ ! -e out.h5 ] || fail "out.h5 exists after the interruption"
expect_no_temporaries .
finish
