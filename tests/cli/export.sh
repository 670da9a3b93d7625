#!/bin/sh
# `ketasim export` on one small run shared by the tests (a fixture), each in a folder of its own;
# the test checks the printed output with a regular expression where one is given:
#   run_small     the fixture: 5 subjects of the main scenario in WORK_DIR/export_run/results.h5
#   unknown_arm   an unknown arm is a usage error (exit 2) naming the arms
#   dash          `-o -` writes to standard output (and no file named '-'); a scenario without
#                 output.observations gives dose rows only and says so (on standard error)
#   all_arms      --all-arms gives every arm, each subject of each arm its own ID (counted)
# usage: export.sh KETASIM SOURCE_DIR WORK_DIR MODE
set -u
ketasim=$1
source_dir=$2
work=$3
mode=$4
. "$(dirname "$0")/lib.sh"
results=$work/export_run/results.h5

case $mode in
  run_small)
    run_fixture "$work/export_run" 5
    ;;
  unknown_arm)
    expect 2 "once_weekly, twice_weekly" export "$results" --arm nope
    ;;
  dash)
    rm -rf "$work/export_dash" && mkdir -p "$work/export_dash" && cd "$work/export_dash" || exit 1
    "$ketasim" export "$results" -o - > out.csv 2> err.txt || fail "export -o - failed: $(cat err.txt)"
    [ ! -e ./- ] || fail "a file named '-' was written"
    head -1 out.csv
    cat err.txt
    ;;
  all_arms)
    rm -rf "$work/export_all" && mkdir -p "$work/export_all" && cd "$work/export_all" || exit 1
    "$ketasim" export "$results" --all-arms -o all.csv || fail "export --all-arms failed"
    /usr/bin/python3 -c "import csv; rows = list(csv.DictReader(open('all.csv'))); print('pairs', len({(r['ID'], r['ARM']) for r in rows}), 'ids', len({r['ID'] for r in rows}), 'subjects', len({r['SUBJ'] for r in rows}), 'arms', sorted({r['ARM'] for r in rows}))"
    ;;
  *) echo "unknown mode $mode"; exit 2 ;;
esac
finish
