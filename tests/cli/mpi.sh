#!/bin/sh
# `mpirun -n R ketasim run` (docs/hpc.md, "MPI"): the ranks simulate interleaved blocks of the
# subjects into their journals beside the output, rank 0 writes the one result file from them.
#   identical SCENARIO SUBJECTS  mpirun -n 1, 2 and 3 (oversubscribed) each write the datasets of the
#                                single-process run, bit for bit (same_datasets.py); compare prints
#                                the same; mpi_ranks is recorded; no rank journal or temporary is left
#   failures SCENARIO SUBJECTS   an output directory that does not exist, a bad scenario, and one rank
#                                alone failing (its rank file's name taken by a directory): every
#                                rank exits non-zero, no output file; the rank that finished keeps its
#                                journal, and `--resume` then ends with the single-process file
#   sigterm SCENARIO SUBJECTS    SIGTERM to mpirun (as Slurm sends before a time limit) stops every
#                                rank with its journal kept and no output, each showing the command
#                                that resumes (mpirun -n 2 ketasim run ... --resume); `--resume` on
#                                the same ranks ends with the single-process file
#   progress SCENARIO SUBJECTS   mpirun -n 2 with --progress: one progress line for the whole job, on
#                                rank 0 alone (every count is of all ranks' subjects, and reaches
#                                that total), then the merge and summaries named; each rank's busy
#                                time in the summary and the file (mpi_rank_busy_seconds)
# Exits 77 (skipped) when mpirun is absent.
# usage: mpi.sh KETASIM SOURCE_DIR WORK_DIR MODE SCENARIO SUBJECTS
set -u
ketasim=$1
source_dir=$2
work=$3
mode=$4
scenario=$5
subjects=$6
. "$(dirname "$0")/lib.sh"
if ! command -v mpirun > /dev/null 2>&1; then
  echo "SKIP: mpirun is not installed (tools/install-deps.sh installs openmpi-bin)"
  exit 77
fi
rm -rf "$work" && mkdir -p "$work" && cd "$work" || exit 1

# As root (CI, containers) OpenMPI refuses to start without these; more ranks than cores need
# --oversubscribe.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
ranks_run() {
  ranks=$1
  shift
  mpirun --oversubscribe -n "$ranks" "$ketasim" "$@"
}

attribute() {
  /usr/bin/python3 -c 'import sys, h5py; print(h5py.File(sys.argv[1], "r").attrs.get(sys.argv[2]))' "$1" "$2" 2>&1
}

same_as_single() {
  /usr/bin/python3 "$source_dir/tests/cli/same_datasets.py" single.h5 "$1" > same.log 2>&1 ||
    { fail "$1 differs from the single-process run"; cat same.log; }
}

"$ketasim" run "$scenario" --subjects "$subjects" --block-size 16 -o single.h5 --quiet || fail "the single-process run failed"

case $mode in
  identical)
    "$ketasim" compare single.h5 --format csv --bootstrap 100 > single.csv || fail "compare of the single run failed"
    for ranks in 1 2 3; do
      ranks_run "$ranks" run "$scenario" --subjects "$subjects" --block-size 16 -t 1 -o mpi$ranks.h5 > run$ranks.log 2>&1 ||
        { fail "mpirun -n $ranks failed"; cat run$ranks.log; }
      same_as_single mpi$ranks.h5
      "$ketasim" compare mpi$ranks.h5 --format csv --bootstrap 100 > mpi$ranks.csv || fail "compare of mpi$ranks.h5 failed"
      [ -s single.csv ] && cmp -s single.csv mpi$ranks.csv || fail "compare prints other figures for mpirun -n $ranks"
      leftovers=$(ls -A | grep -e '\.rank-' -e '\.journal')
      [ -z "$leftovers" ] || fail "mpirun -n $ranks left $leftovers"
    done
    expect_no_temporaries .
    [ "$(attribute mpi1.h5 mpi_ranks)" = None ] || fail "mpirun -n 1 (a plain run): mpi_ranks $(attribute mpi1.h5 mpi_ranks)"
    [ "$(attribute mpi3.h5 mpi_ranks)" = 3 ] || fail "mpirun -n 3: mpi_ranks $(attribute mpi3.h5 mpi_ranks)"
    grep -q "on 3 MPI ranks" run3.log || { fail "mpirun -n 3 does not say it ran on 3 ranks"; cat run3.log; }
    # Rank 0 alone prints: one results line, not one per rank.
    [ "$(grep -c '^results: ' run3.log)" = 1 ] || { fail "mpirun -n 3 printed other than one results line"; cat run3.log; }
    ;;
  failures)
    # The output's directory does not exist: every rank refuses before simulating.
    ranks_run 2 run "$scenario" --subjects "$subjects" -o absent/out.h5 > absent.log 2>&1 &&
      fail "mpirun -n 2 into a missing directory exited 0"
    grep -q "absent" absent.log || { fail "the missing directory is not named"; cat absent.log; }
    [ -e absent ] && fail "the missing directory was made"
    # A scenario that does not load.
    printf 'name: broken\ncohort: {size: -3}\n' > broken.yaml
    ranks_run 2 run broken.yaml -o broken.h5 > broken.log 2>&1 && fail "mpirun -n 2 of a bad scenario exited 0"
    grep -q "broken.yaml" broken.log || { fail "the bad scenario is not named"; cat broken.log; }
    [ -e broken.h5 ] && fail "a bad scenario wrote broken.h5"
    # One rank alone fails: rank 1's shard file cannot be written (a directory has its name).
    mkdir out.h5.rank-2-of-2.h5
    ranks_run 2 run "$scenario" --subjects "$subjects" --block-size 16 -o out.h5 > one.log 2>&1 &&
      fail "mpirun -n 2 with one rank failing exited 0"
    grep -q "another MPI rank failed" one.log || { fail "rank 0 does not say that another rank failed"; cat one.log; }
    grep -q "MPI rank 1: ketasim: error: .*out.h5.rank-2-of-2.h5" one.log || { fail "rank 1's error is not shown"; cat one.log; }
    [ -e out.h5 ] && fail "a run with a failed rank wrote out.h5"
    [ -f out.h5.rank-1-of-2.h5.journal ] || fail "rank 0's journal was not kept"
    expect_no_temporaries .
    # Once the cause is gone, --resume reads rank 0's journal back and ends with the single-process file.
    rmdir out.h5.rank-2-of-2.h5
    ranks_run 2 run "$scenario" --subjects "$subjects" --block-size 16 -o out.h5 --resume > resumed.log 2>&1 ||
      { fail "--resume after the failed rank failed"; cat resumed.log; }
    grep -q "resuming from out.h5.rank-1-of-2.h5.journal: [1-9][0-9]* of [1-9][0-9]* blocks of this rank" resumed.log ||
      { fail "rank 0's journal was not read back"; cat resumed.log; }
    same_as_single out.h5
    leftovers=$(ls -A | grep -e '\.rank-' -e '\.journal')
    [ -z "$leftovers" ] || fail "the resumed run left $leftovers"
    # Other commands refuse to run on several ranks (each rank would write the same file).
    ranks_run 2 merge single.h5 -o merged.h5 > merge.log 2>&1 && fail "mpirun -n 2 ketasim merge exited 0"
    grep -q "only \`ketasim run\` runs on several MPI ranks" merge.log || { fail "merge on 2 ranks: no clear refusal"; cat merge.log; }
    ;;
  sigterm)
    # mpirun itself in the background (not a shell function, whose subshell $! would name).
    mpirun --oversubscribe -n 2 "$ketasim" run "$scenario" --subjects "$subjects" --block-size 16 -t 1 -o out.h5 \
      > stopped.log 2>&1 &
    launcher=$!
    wait_for_files 300 out.h5.rank-1-of-2.h5.journal out.h5.rank-2-of-2.h5.journal
    sleep 0.2  # a rank that has done all its blocks would not be stopped by SIGTERM
    kill -TERM $launcher
    wait $launcher && fail "mpirun stopped by SIGTERM exited 0 (did the run end before the signal?)"
    [ "$(grep -c 'stopped by SIGTERM' stopped.log)" = 2 ] || { fail "not both ranks stopped by SIGTERM"; cat stopped.log; }
    # The command each rank shows to resume is the whole job's: mpirun with the ranks, then --resume.
    hint="resume with: mpirun -n 2 ketasim run $scenario --subjects $subjects --block-size 16 -t 1 -o out.h5 --resume"
    [ "$(grep -F "$hint" stopped.log | grep -c -e '^ketasim: stopped by SIGTERM after ')" = 2 ] ||
      { fail "not both ranks show the resume command '$hint'"; cat stopped.log; }
    # Outside Slurm, no word of it (tests/cli/slurm_cluster.sh checks the note a Slurm job shows).
    if [ -z "${SLURM_JOB_ID:-}" ] && grep -q "under Slurm" stopped.log; then
      fail "a run outside Slurm speaks of Slurm"
      cat stopped.log
    fi
    [ -e out.h5 ] && fail "a stopped run wrote out.h5"
    [ -e out.h5.rank-1-of-2.h5.journal ] && [ -e out.h5.rank-2-of-2.h5.journal ] || fail "the ranks' journals were not kept"
    expect_no_temporaries .
    ranks_run 2 run "$scenario" --subjects "$subjects" --block-size 16 -t 1 -o out.h5 --resume > resumed.log 2>&1 ||
      { fail "--resume after SIGTERM failed"; cat resumed.log; }
    grep -q "resuming from out.h5.rank-1-of-2.h5.journal" resumed.log || { fail "rank 0 did not resume"; cat resumed.log; }
    same_as_single out.h5
    leftovers=$(ls -A | grep -e '\.rank-' -e '\.journal')
    [ -z "$leftovers" ] || fail "the resumed run left $leftovers"
    ;;
  progress)
    ranks_run 2 run "$scenario" --subjects "$subjects" --block-size 16 -t 1 -o out.h5 --progress > run.log 2> shown.raw ||
      { fail "mpirun -n 2 --progress failed"; cat run.log shown.raw; }
    tr '\r' '\n' < shown.raw > shown.txt
    same_as_single out.h5
    total=$(/usr/bin/python3 -c 'import sys, h5py; print(int(h5py.File(sys.argv[1], "r").attrs["subjects_per_arm"]))' single.h5)
    # Every count shown is out of the whole job's subjects: a rank showing its own shard's progress
    # (rank 1, or rank 0 without the others' counts) would show another total.
    counts=$(grep -o 'simulating: [0-9]*/[0-9]* subjects' shown.txt | sed 's/simulating: //; s/ subjects//' | sort -u)
    [ -n "$counts" ] || { fail "no progress line shown"; cat shown.txt; }
    others=$(printf '%s\n' "$counts" | grep -v "/$total\$")
    [ -z "$others" ] || fail "progress lines out of another total than the job's $total: $others"
    printf '%s\n' "$counts" | grep -q "^$total/$total\$" || fail "the progress never reached $total/$total: $counts"
    for text in "merging 2 rank journals: " "summaries: " "over $total subjects" "renaming: flushing the file"; do
      grep -q -F "$text" shown.txt || { fail "the progress lacks '$text'"; cat shown.txt; }
    done
    grep -q "ranks busy [0-9.]* s, [0-9.]* s (idle [0-9]*% of the ranks' time)" run.log ||
      { fail "the summary does not give each rank's busy time"; cat run.log; }
    busy=$(/usr/bin/python3 -c 'import sys, h5py; b = h5py.File(sys.argv[1], "r").attrs["mpi_rank_busy_seconds"]; print(len(b), all(x > 0 for x in b))' out.h5 2>&1)
    [ "$busy" = "2 True" ] || fail "mpi_rank_busy_seconds: '$busy', not 2 positive values"
    # Without --progress nothing is shown (the ranks write to pipes, not a terminal).
    ranks_run 2 run "$scenario" --subjects "$subjects" --block-size 16 -t 1 -o quiet.h5 > quiet.log 2> quiet.err ||
      fail "mpirun -n 2 without --progress failed"
    grep -q "simulating:" quiet.err && fail "a progress line without --progress and without a terminal"
    ;;
  *)
    echo "unknown mode $mode"
    exit 2
    ;;
esac
finish
