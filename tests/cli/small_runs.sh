#!/bin/sh
# Small runs end to end, each in WORK_DIR/<folder>; the test (tests/CMakeLists.txt) checks the
# printed output with a regular expression where one is given:
#   h5py SCENARIO        40 subjects, nothing but results.h5 written, read by the README's h5py example
#   compare SCENARIO     40 subjects, compare with 200 bootstrap resamples
#   ready SCENARIO       a scenario of scenarios/ at 24 subjects, and compare reads its result (CSV)
#   replicates SCENARIO  20 trials of 30 patients, compare with a margin (the spread, P(beating))
#   export SCENARIO      5 subjects exported to a NONMEM-style CSV (header and the first row)
#   esketamine SCENARIO  20 subjects of the esketamine induction
# usage: small_runs.sh KETASIM SOURCE_DIR WORK_DIR MODE SCENARIO
set -u
ketasim=$1
source_dir=$2
work=$3
mode=$4
scenario=$5
. "$(dirname "$0")/lib.sh"

in_folder() {
  rm -rf "$work/$1" && mkdir -p "$work/$1" && cd "$work/$1" || exit 1
}

case $mode in
  h5py)
    in_folder run
    "$ketasim" run "$scenario" --subjects 40 -o results.h5 --quiet || fail "the run failed"
    [ -z "$(ls | grep -v '^results.h5$')" ] || fail "files besides results.h5: $(ls)"
    /usr/bin/python3 "$source_dir/tools/readme_example.py" results.h5 || fail "the h5py example failed"
    ;;
  compare)
    in_folder compare
    "$ketasim" run "$scenario" --subjects 40 -o results.h5 --quiet || fail "the run failed"
    "$ketasim" compare results.h5 --bootstrap 200 || fail "compare failed"
    ;;
  ready)
    in_folder "$(basename "$scenario" .yaml)"
    "$ketasim" run "$scenario" --subjects 24 -o results.h5 --quiet || fail "the run failed"
    "$ketasim" compare results.h5 --bootstrap 200 --format csv || fail "compare failed"
    ;;
  replicates)
    in_folder replicates
    "$ketasim" run "$scenario" -o results.h5 --quiet || fail "the run failed"
    "$ketasim" compare results.h5 --margin 10 --bootstrap 200 || fail "compare failed"
    ;;
  export)
    in_folder export
    "$ketasim" run "$scenario" --subjects 5 -o results.h5 --quiet || fail "the run failed"
    "$ketasim" export results.h5 --arm twice_weekly -o data.csv || fail "export failed"
    head -2 data.csv
    [ -z "$(ls | grep tmp)" ] || fail "a temporary file was left: $(ls)"
    ;;
  esketamine)
    in_folder esketamine
    "$ketasim" run "$scenario" --subjects 20 -o results.h5 --quiet || fail "the run failed"
    [ -f results.h5 ] || fail "no results.h5"
    ;;
  *) echo "unknown mode $mode"; exit 2 ;;
esac
finish
