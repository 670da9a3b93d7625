#!/bin/sh
# Outputs stay byte for byte the same: runs every scenario of scenarios/ (and the test and
# benchmark scenarios that reach other paths: arm models, replicates, long subjects, the ODE
# solver) with a small cohort and compares a digest of all datasets (dataset_digest.py) with the
# committed one in datasets.txt. A change of results that is meant (a model or numerical change)
# regenerates the file with --update and says why in its commit.
# usage: check.sh KETASIM SOURCE_DIR WORK_DIR [--update]
set -u
ketasim=$1
source=$2
work=$3
update=${4:-}
expected="$source/tests/digests/datasets.txt"
rm -rf "$work" && mkdir -p "$work" || exit 1
actual="$work/datasets.txt"
: > "$actual"
status=0
cd "$source" || exit 1
for scenario in scenarios/*.yaml tests/scenarios/*.yaml benchmarks/w1.yaml tests/digests/paths.yaml; do
  name=$(echo "$scenario" | tr '/' '_')
  subjects=100
  [ "$scenario" = tests/digests/paths.yaml ] && subjects=20  # the 20 patients of its CSV file
  if ! "$ketasim" run "$source/$scenario" --subjects $subjects --threads 2 --quiet -o "$work/$name.h5"; then
    echo "FAIL: ketasim run $scenario"
    status=1
    continue
  fi
  echo "$scenario $(/usr/bin/python3 "$source/tests/digests/dataset_digest.py" "$work/$name.h5")" >> "$actual"
  rm -f "$work/$name.h5"
done
if [ "$update" = "--update" ]; then
  cp "$actual" "$expected" && echo "wrote $expected" && exit $status
fi
if ! diff -u "$expected" "$actual"; then
  echo "FAIL: the datasets differ from tests/digests/datasets.txt (lines marked + are this build's)"
  status=1
fi
[ $status -eq 0 ] && echo "all $(wc -l < "$actual") scenario digests match"
exit $status
