#!/bin/sh
# A run whose result file cannot fit is refused before anything is simulated, with exit 6, a
# message that gives the sizes, the free space and `variables: []`, and nothing left behind; the
# same run with `variables: []` fits and runs; a run whose file fits but not its journal beside it
# is refused, and runs with --no-journal. On a 2 MB tmpfs: skipped (exit 77) where mounting
# is not allowed (not root, no tmpfs).
# usage: space_check.sh KETASIM SCENARIO WORK_DIR
set -u
ketasim=$1
scenario=$2
work=$3
. "$(dirname "$0")/lib.sh"
mkdir -p "$work" && cd "$work" || exit 1
umount small 2>/dev/null
rm -rf small && mkdir small
if ! mount -t tmpfs -o size=2m ketasim-test small 2>/dev/null; then
  echo "cannot mount a tmpfs here (not root?): skipped"
  exit 77
fi
trap 'umount small' EXIT

# 200 subjects of the default scenario: 39 MB of trajectories before compression, about 11 MB.
expect 6 "small/results.h5: not enough space: the result file needs at least" run "$scenario" --subjects 200 -q -o small/results.h5
expect 6 "free in 'small'" run "$scenario" --subjects 200 -q -o small/results.h5
expect 6 "\`variables: []\` under \`output:\` in the scenario" run "$scenario" --subjects 200 -q -o small/results.h5
[ -z "$(ls -A small)" ] || fail "the refused run left files: $(ls -A small)"

# 10 subjects: the file fits (at least 1.65 MB), but not with its journal beside it (issue 12).
expect 6 "and its journal as much again while the run goes" run "$scenario" --subjects 10 -q -o small/results.h5
[ -z "$(ls -A small)" ] || fail "the refused run left files: $(ls -A small)"
expect 0 "" run "$scenario" --subjects 10 -q --no-journal -o small/results.h5
[ -f small/results.h5 ] || fail "the run without a journal wrote no file"
rm -f small/results.h5

sed 's/^output:$/output:\n  variables: []/' "$scenario" > metrics_only.yaml
grep -q 'variables: \[\]' metrics_only.yaml || fail "could not make the metrics-only scenario"
expect 0 "" run metrics_only.yaml --subjects 200 -q -o small/results.h5
[ -f small/results.h5 ] || fail "the metrics-only run wrote no file"
expect_no_temporaries small
finish
