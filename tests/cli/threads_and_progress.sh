#!/bin/sh
# The default thread count follows the CPU affinity mask (taskset, Slurm's binding), and the
# progress line on a terminal shows each phase of a run in one unit, subject-arms/s, as the
# summary does.
# usage: threads_and_progress.sh KETASIM SCENARIO WORK_DIR affinity|progress
set -u
ketasim=$1
scenario=$2
work=$3
mode=$4
. "$(dirname "$0")/lib.sh"
rm -rf "$work" && mkdir -p "$work" && cd "$work" || exit 1

# The root attribute `threads` of a result file.
threads_of() {
  /usr/bin/python3 -c 'import sys, h5py; print(int(h5py.File(sys.argv[1], "r").attrs["threads"]))' "$1" 2>&1
}

case $mode in
  affinity)
    command -v taskset >/dev/null || { echo "no taskset: skipped"; exit 77; }
    output=$(taskset -c 0 "$ketasim" run "$scenario" --subjects 4 -o results.h5 2>&1)
    case $output in
      *" on 1 thread ("*) ;;
      *) fail "taskset -c 0: the run does not say 'on 1 thread': $output" ;;
    esac
    # The file records the threads the run used (workers and summary pass): its provenance.
    [ "$(threads_of results.h5)" = 1 ] || fail "taskset -c 0: the attribute threads is '$(threads_of results.h5)', not 1"
    taskset -c 0 "$ketasim" run "$scenario" --subjects 4 --threads 3 -o given.h5 --quiet || fail "--threads 3 failed"
    [ "$(threads_of given.h5)" = 3 ] || fail "--threads 3: the attribute threads is '$(threads_of given.h5)'"
    # A Slurm job step without CPU binding: SLURM_CPUS_PER_TASK caps the default.
    SLURM_CPUS_PER_TASK=1 "$ketasim" run "$scenario" --subjects 4 -o slurm.h5 --quiet || fail "the Slurm run failed"
    [ "$(threads_of slurm.h5)" = 1 ] || fail "SLURM_CPUS_PER_TASK=1: the attribute threads is '$(threads_of slurm.h5)'"
    export SLURM_CPUS_PER_TASK=two  # exported: an assignment before a shell function may persist or not
    expect 2 "SLURM_CPUS_PER_TASK is 'two'" run "$scenario" --subjects 4 -o wrong.h5 --quiet
    unset SLURM_CPUS_PER_TASK
    [ -e wrong.h5 ] && fail "a run refused for SLURM_CPUS_PER_TASK wrote wrong.h5"
    ;;
  progress)
    # `script` gives the run a terminal, where it shows its progress.
    command -v script >/dev/null || { echo "no script(1): skipped"; exit 77; }
    script -qec "\"$ketasim\" run \"$scenario\" --subjects 70 --threads 2 -o results.h5" /dev/null | tr '\r' '\n' > shown.txt
    for text in "simulating: 70/70 subjects" "subject-arms/s" "summaries: 0/" "variables (per-time quantiles over 70 subjects)" \
      "renaming: flushing the file to disk" "summarising 70 subjects x 2 arms: the end-of-run statistics"; do
      grep -q -F "$text" shown.txt || fail "the progress lacks '$text'"
    done
    # The phases in the order the run goes through them, the end-of-run statistics last.
    grep -o -e "simulating: 70/70" -e "summaries: 0/" -e "renaming: " -e "summarising 70" shown.txt | uniq | tr '\n' ';' > order.txt
    [ "$(cat order.txt)" = "simulating: 70/70;summaries: 0/;renaming: ;summarising 70;" ] ||
      fail "the phases came in another order: $(cat order.txt)"
    # --progress shows it where stderr is not a terminal (a batch job's log, mpirun's pipes);
    # without it, nothing.
    "$ketasim" run "$scenario" --subjects 70 --threads 2 -o forced.h5 --progress 2> forced.txt > /dev/null || fail "--progress failed"
    tr '\r' '\n' < forced.txt | grep -q -F "simulating: 70/70 subjects" || fail "--progress shows no progress in a file"
    "$ketasim" run "$scenario" --subjects 70 --threads 2 -o plain.h5 2> plain.txt > /dev/null || fail "the run failed"
    grep -q "simulating:" plain.txt && fail "a progress line in a file without --progress"
    # A merge names what it merges.
    "$ketasim" run "$scenario" --subjects 70 --shard 1/2 -o s1.h5 -q && "$ketasim" run "$scenario" --subjects 70 --shard 2/2 -o s2.h5 -q ||
      fail "the shard runs failed"
    "$ketasim" merge s1.h5 s2.h5 -o merged.h5 --progress 2> merged.txt > /dev/null || fail "merge --progress failed"
    tr '\r' '\n' < merged.txt | grep -q -F "merging 2 shard files: " || fail "the merge's progress does not say what it merges"
    grep -q -e "subjects/s" shown.txt && fail "a rate in subjects/s"
    grep -q -E "[0-9.]+ s on 2 threads \([0-9]+ subject-arms/s\)" shown.txt || fail "the summary's rate is not in subject-arms/s"
    ;;
  *)
    echo "unknown mode $mode"
    exit 2
    ;;
esac
finish
