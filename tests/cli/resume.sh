#!/bin/sh
# Resuming an interrupted run from its journal (docs/hpc.md, "Resume"): whatever stopped it, the
# run continued with --resume writes the file an uninterrupted run writes, dataset for dataset and
# bit for bit (same_datasets.py). The scenario has as-needed dosing, trial replicates and
# observations (tests/scenarios/resume.yaml); blocks of 64 subjects make 25 blocks per run.
#   kill-loop  4 times: kill -9 at a random time after the first block is journaled (then, every
#              other time, --resume killed once more), then --resume to the end: the reference
#              file each time, no journal left; at least 2 of the 4 resume from journaled blocks
#   sigterm    SIGTERM at a block boundary: exit 143, the message says how to resume, the journal
#              is kept, no output; the command it prints gives the reference file
#   refusals   a journal of another scenario (another seed), of another --subjects and of another
#              --shard is refused with a clear message, writing nothing and leaving the journal as
#              it was; an existing journal without --resume is refused; --resume without a journal
#              starts afresh (and says so)
#   shard      a shard killed and resumed is the uninterrupted shard's file
# usage: resume.sh KETASIM SOURCE_DIR WORK_DIR MODE
set -u
ketasim=$1
source_dir=$2
work=$3
mode=$4
. "$(dirname "$0")/lib.sh"
rm -rf "$work" && mkdir -p "$work" && cd "$work" || exit 1
scenario="$source_dir/tests/scenarios/resume.yaml"
same="$source_dir/tests/cli/same_datasets.py"
set -- --subjects 200 --block-size 64 -t 2 -q

# A run of the resume scenario into $1 with the remaining arguments, in the background; its pid in
# run_pid.
start_run() {
  output=$1
  shift
  "$ketasim" run "$scenario" "$@" -o "$output" 2>"$output.stderr" &
  run_pid=$!
}

# Waits (at most 60 s) until $1 (a journal) holds more than its identity: a block is journaled.
wait_for_a_block() {
  for _ in $(seq 600); do
    [ -f "$1" ] && [ "$(wc -c < "$1")" -gt 100000 ] && return 0
    sleep 0.1
  done
  fail "no block in $1 after 60 s"
  return 1
}

# A delay in seconds between 0 and $1, from awk's random numbers with seed $2 (printed, to replay a
# failure).
random_delay() {
  awk -v most="$1" -v seed="$2" 'BEGIN { srand(seed); printf "%.2f", rand() * most }'
}

same_as() {
  /usr/bin/python3 "$same" "$1" "$2" > same.log 2>&1 || { fail "$2 differs from $1: $3"; cat same.log; }
}

"$ketasim" run "$scenario" "$@" -o reference.h5 || fail "the reference run failed"
expect_no_temporaries .

case $mode in
  kill-loop)
    started=$(date +%s.%N)
    "$ketasim" run "$scenario" "$@" -o timed.h5 || fail "the timed run failed"
    # Kills land between the first journaled block and about the end of the run.
    run_seconds=$(echo "$started $(date +%s.%N)" | awk '{ printf "%.2f", 0.8 * ($2 - $1) }')
    rm -f timed.h5
    seed=$(date +%s)
    resumed=0
    echo "random seed $seed, delays up to $run_seconds s"
    for iteration in 1 2 3 4; do
      delay=$(random_delay "$run_seconds" $((seed + iteration)))
      start_run out.h5 "$@"
      wait_for_a_block out.h5.journal
      sleep "$delay"
      kill -KILL "$run_pid" 2>/dev/null
      wait "$run_pid"
      status=$?
      [ -e out.h5.journal ] && blocks="a journal of $(wc -c < out.h5.journal) bytes" || blocks="no journal"
      echo "iteration $iteration: killed after $delay s (exit $status, $blocks)"
      # The machine is shared: a run can go faster than the timed one, and a kill then comes after
      # it has finished. The later delays are then made shorter.
      finished_first=$([ "$status" -eq 0 ] && echo 1 || echo 0)
      resumed_here=0
      if [ $((iteration % 2)) -eq 0 ] && [ -e out.h5.journal ]; then
        delay=$(random_delay "$run_seconds" $((seed + 10 + iteration)))
        start_run out.h5 "$@" --resume
        sleep "$delay"
        kill -KILL "$run_pid" 2>/dev/null
        wait "$run_pid"
        status=$?
        echo "iteration $iteration: the resumed run killed after $delay s (exit $status)"
        [ "$status" -eq 0 ] && finished_first=1
        grep -q "resuming from out.h5.journal: [1-9]" out.h5.stderr && resumed_here=1
      fi
      if [ "$finished_first" = 1 ]; then
        run_seconds=$(echo "$run_seconds" | awk '{ printf "%.2f", $1 / 2 }')
        echo "a run finished before its kill: delays now up to $run_seconds s"
      fi
      "$ketasim" run "$scenario" "$@" --resume -o out.h5 2> resume.stderr || { fail "--resume failed"; cat resume.stderr; }
      cat resume.stderr
      grep -q "resuming from out.h5.journal: [1-9]" resume.stderr && resumed_here=1
      resumed=$((resumed + resumed_here))
      same_as reference.h5 out.h5 "iteration $iteration"
      [ -e out.h5.journal ] && fail "iteration $iteration: the journal was left after the run finished"
      rm -f out.h5
      "$ketasim" clean . > /dev/null  # the temporaries kill -9 left
    done
    [ "$resumed" -ge 2 ] || fail "only $resumed of 4 iterations resumed from journaled blocks: the kills came too late"
    ;;
  sigterm)
    start_run out.h5 "$@"
    wait_for_a_block out.h5.journal
    kill -TERM "$run_pid"
    wait "$run_pid"
    status=$?
    cat out.h5.stderr
    [ "$status" -eq 143 ] || fail "exit $status after SIGTERM, expected 143 (128 + 15)"
    grep -q "stopped by SIGTERM after [1-9][0-9]* of 25 blocks" out.h5.stderr || fail "no 'stopped by SIGTERM after N of 25 blocks'"
    [ -e out.h5.journal ] || fail "SIGTERM removed the journal"
    [ -e out.h5 ] && fail "SIGTERM left an output file"
    expect_no_temporaries .
    # The command the message gives, as printed, with this build's ketasim.
    command=$(sed -n 's/.*resume with: ketasim //p' out.h5.stderr)
    case $command in
      *--resume*) ;;
      *) fail "the message gives no command with --resume: '$command'" ;;
    esac
    eval "\"\$ketasim\" $command" 2> resume.stderr || { fail "the printed resume command failed"; cat resume.stderr; }
    cat resume.stderr
    grep -q "resuming from out.h5.journal: [1-9][0-9]* of 25 blocks" resume.stderr || fail "the resume did not read blocks back"
    same_as reference.h5 out.h5 "after SIGTERM and --resume"
    [ -e out.h5.journal ] && fail "the journal was left after the resumed run finished"
    ;;
  refusals)
    start_run out.h5 "$@"
    wait_for_a_block out.h5.journal
    kill -KILL "$run_pid"
    wait "$run_pid"
    "$ketasim" clean . > /dev/null
    cp out.h5.journal journal.before
    sed 's/seed: 20261206/seed: 20261207/' "$scenario" > other_seed.yaml
    expect 6 "out.h5.journal: the journal is of another run: the scenario differs" \
      run other_seed.yaml "$@" --resume -o out.h5
    expect 6 "(its seed is 20261206, this one's 20261207)" run other_seed.yaml "$@" --resume -o out.h5
    expect 6 "the cohort (--subjects) is 1600 subjects per arm (8 x 200) in the journal, 800 subjects per arm (8 x 100)" \
      run "$scenario" --subjects 100 --block-size 64 -q --resume -o out.h5
    expect 6 "the part of the cohort is the whole run (no --shard) in the journal, shard 1/2 in this run" \
      run "$scenario" "$@" --shard 1/2 --resume -o out.h5
    expect 6 "out.h5.journal: the journal of an interrupted run of out.h5 exists: pass --resume" \
      run "$scenario" "$@" -o out.h5
    [ -e out.h5 ] && fail "a refused run wrote out.h5"
    cmp -s journal.before out.h5.journal || fail "a refused run changed the journal"
    expect_no_temporaries .
    rm out.h5.journal
    expect 0 "no journal out.h5.journal: starting afresh" run "$scenario" "$@" --resume -o out.h5
    same_as reference.h5 out.h5 "--resume without a journal"
    [ -e out.h5.journal ] && fail "the journal was left after the run finished"
    ;;
  shard)
    "$ketasim" run "$scenario" "$@" --shard 2/3 -o reference.shard-2.h5 || fail "the reference shard failed"
    start_run part.shard-2.h5 "$@" --shard 2/3
    wait_for_a_block part.shard-2.h5.journal
    kill -KILL "$run_pid"
    wait "$run_pid"
    "$ketasim" run "$scenario" "$@" --shard 2/3 --resume -o part.shard-2.h5 2> resume.stderr || fail "--resume of the shard failed"
    cat resume.stderr
    grep -q "resuming from part.shard-2.h5.journal: [1-9][0-9]* of 9 blocks" resume.stderr ||
      fail "the shard did not resume from its journaled blocks"
    same_as reference.shard-2.h5 part.shard-2.h5 "the resumed shard"
    [ -e part.shard-2.h5.journal ] && fail "the shard's journal was left after it finished"
    ;;
  *)
    echo "unknown mode $mode"
    exit 2
    ;;
esac
finish
