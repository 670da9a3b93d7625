#!/bin/sh
# clang-tidy 14 with the checks of .clang-tidy over the engine and the tool (or the files given),
# through the compile commands of a configured and built folder (CMAKE_EXPORT_COMPILE_COMMANDS is
# on; the build makes the generated headers). Warnings about function size for the functions listed
# as known exceptions in .clang-tidy ("# function-size-exception: FILE FUNCTION (reason)") are left
# out; anything else fails. Not a ctest: over the whole tree it takes about 25 minutes on a loaded
# 2-core machine (docs/testing.md), too much for CI's budget; run it on the files you changed.
# usage: tidy.sh SOURCE_DIR BUILD_DIR [FILE...]   (files relative to SOURCE_DIR)
set -u
source_dir=$(cd "$1" && pwd) || exit 1
build=$(cd "$2" && pwd) || exit 1
shift 2
cd "$source_dir" || exit 1
command -v clang-tidy-14 > /dev/null || { echo "clang-tidy-14 is not installed (tools/install-deps.sh)"; exit 1; }
[ -f "$build/compile_commands.json" ] || { echo "no $build/compile_commands.json: configure that folder first"; exit 1; }
if [ "$#" -eq 0 ]; then
  set -- $(git ls-files 'engine/*.cpp' 'tools/*.cpp')
fi
exceptions=$(sed -n 's/^# function-size-exception: \([^ ]*\) \([^ ]*\).*/\1 \2/p' .clang-tidy)
output=$(printf '%s\n' "$@" | xargs -P2 -n1 clang-tidy-14 -p "$build" --quiet 2> /dev/null)
# A warning with the notes and source lines under it is kept or dropped as a whole.
report=$(printf '%s\n' "$output" | awk -v root="$source_dir/" -v exceptions="$exceptions" '
  BEGIN { n = split(exceptions, e, "\n"); for (i = 1; i <= n; i++) { split(e[i], p, " "); skip[p[1] " " p[2]] = 1 } }
  / (warning|error): / {
    file = $0; sub(/:.*/, "", file); sub(root, "", file)
    name = ""
    if ($0 ~ /\[readability-function-size\]/) { name = $0; sub(/^[^\047]*\047/, "", name); sub(/\047.*/, "", name) }
    keep = !((file " " name) in skip)
    if (keep && seen[$0]++) keep = 0  # a header warning reported once, not per file that includes it
  }
  keep')
if [ -n "$report" ]; then
  printf '%s\n' "$report"
  echo "FAIL: $(printf '%s\n' "$report" | grep -cE ' (warning|error): ') clang-tidy warning(s) or error(s) (checks in .clang-tidy)"
  exit 1
fi
echo "clang-tidy: $# files, no warnings (known function-size exceptions: $(printf '%s\n' "$exceptions" | grep -c .))"
