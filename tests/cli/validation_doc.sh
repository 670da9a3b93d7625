#!/bin/sh
# docs/validation.md is what `ketasim reproduce --markdown docs/validation.md` writes: the table
# (from its header line on) is the same as the committed one. Runs the whole suite (minutes).
# usage: validation_doc.sh KETASIM SOURCE_DIR WORK_DIR
set -u
ketasim=$1
source_dir=$2
work=$3/validation
. "$(dirname "$0")/lib.sh"
rm -rf "$work" && mkdir -p "$work" || exit 1
# The suite's own verdicts are the reproduction.* tests: only the table matters here.
"$ketasim" reproduce --markdown "$work/validation.md" > /dev/null
sed -n '/^| target/,$p' "$work/validation.md" > "$work/new"
sed -n '/^| target/,$p' "$source_dir/docs/validation.md" > "$work/committed"
diff "$work/committed" "$work/new" || fail "docs/validation.md differs from what reproduce writes (above)"
[ -s "$work/new" ] || fail "reproduce wrote no table"
finish
