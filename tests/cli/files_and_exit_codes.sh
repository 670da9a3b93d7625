#!/bin/sh
# Exit codes and what a failed command leaves (docs/cli.md, "Exit codes"):
#   invalid_scenario   an invalid scenario: exit 3
#   compare_arguments  compare --reference with an unknown arm: exit 2; a missing file: exit 6
#   fifo_and_device    what is not a regular file is refused at once with exit 6, never read
#                      (/dev/zero never ends; opening a FIFO waits for a writer, hence the timeout)
#   failed_run         a run that fails keeps the file it would have replaced, and no temporary
# usage: files_and_exit_codes.sh KETASIM SOURCE_DIR WORK_DIR MODE   (work in WORK_DIR/<folder>)
set -u
ketasim=$1
source_dir=$2
work=$3
mode=$4
. "$(dirname "$0")/lib.sh"
scenario=$source_dir/scenarios/once_vs_twice_weekly.yaml
invalid=$source_dir/tests/invalid_scenarios

case $mode in
  invalid_scenario)
    expect 3 "" validate "$invalid/duration_given_as_weight_based_dose.yaml"
    ;;
  compare_arguments)
    run_fixture "$work/compare_arm" 4
    cd "$work/compare_arm" || exit 1
    expect 2 "" compare results.h5 --reference nope
    expect 6 "" compare missing.h5
    ;;
  fifo_and_device)
    rm -rf "$work/fifo" && mkdir -p "$work/fifo" && mkfifo "$work/fifo/scenario.yaml" || exit 1
    output=$(timeout 20 "$ketasim" validate "$work/fifo/scenario.yaml" 2>&1)
    code=$?
    [ "$code" -eq 6 ] || fail "validate on a FIFO: exit $code, expected 6"
    case $output in *"it is a FIFO (named pipe), not a regular file"*) ;; *) fail "validate on a FIFO: $output" ;; esac
    output=$(timeout 20 "$ketasim" validate /dev/zero 2>&1)
    code=$?
    [ "$code" -eq 6 ] || fail "validate /dev/zero: exit $code, expected 6"
    case $output in
      *"cannot read scenario file '/dev/zero': it is a character device"*) ;;
      *) fail "validate /dev/zero: $output" ;;
    esac
    ;;
  failed_run)
    rm -rf "$work/keep" && mkdir -p "$work/keep" && cd "$work/keep" || exit 1
    echo precious > keep.h5
    "$ketasim" run "$invalid/negative_dose.yaml" -o keep.h5 && fail "the run of an invalid scenario succeeded"
    [ "$(cat keep.h5)" = precious ] || fail "keep.h5 was changed"
    [ -z "$(ls | grep tmp)" ] || fail "a temporary file was left: $(ls)"
    ;;
  *) echo "unknown mode $mode"; exit 2 ;;
esac
finish
