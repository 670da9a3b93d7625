#!/bin/sh
# `ketasim plot` (tools/ketasim_plot.py), checked by tests/check_plot.py with Debian's interpreter:
#   run_small         the fixture: 40 subjects of the main scenario in WORK_DIR/plot_run/results.h5
#   figures FORMAT    the three figures of the fixture as png or svg, checked as images
#   errors            the error paths, on malformed copies of the fixture (check_plot.py errors)
#   arm_models        arms with models of their own (tests/scenarios/arm_models.yaml): each arm's
#                     dosed drug and model in the figures and the file
# usage: plot.sh KETASIM SOURCE_DIR WORK_DIR MODE [FORMAT]
set -u
ketasim=$1
source_dir=$2
work=$3
mode=$4
. "$(dirname "$0")/lib.sh"
check_plot="$source_dir/tests/check_plot.py"
results=$work/plot_run/results.h5

case $mode in
  run_small)
    run_fixture "$work/plot_run" 40
    ;;
  figures)
    format=$5
    rm -rf "$work/plot_$format"
    "$ketasim" plot "$results" -o "$work/plot_$format" --format "$format" || fail "plot failed"
    /usr/bin/python3 "$check_plot" figures "$work/plot_$format" "$format" once_vs_twice_weekly ||
      fail "the $format figures are wrong"
    ;;
  errors)
    rm -rf "$work/plot_errors" && mkdir -p "$work/plot_errors" || exit 1
    /usr/bin/python3 "$check_plot" errors "$ketasim" "$results" "$work/plot_errors" || fail "an error path is wrong"
    ;;
  arm_models)
    rm -rf "$work/plot_arm_models" && mkdir -p "$work/plot_arm_models" && cd "$work/plot_arm_models" || exit 1
    "$ketasim" run "$source_dir/tests/scenarios/arm_models.yaml" -o results.h5 --quiet || fail "the run failed"
    "$ketasim" plot results.h5 -o figures || fail "plot failed"
    /usr/bin/python3 "$check_plot" figures figures png arm_models || fail "the figures are wrong"
    /usr/bin/python3 "$check_plot" arm-models results.h5 || fail "the arms' models are wrong in the file"
    ;;
  *) echo "unknown mode $mode"; exit 2 ;;
esac
finish
