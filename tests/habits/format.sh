#!/bin/sh
# habits.format: every tracked C++ file is formatted as .clang-format says (clang-format 14, the
# version Debian 12 has: another version formats some constructs differently).
# usage: format.sh SOURCE_DIR   (fix with: git ls-files -z '*.cpp' '*.hpp' | xargs -0 clang-format-14 -i)
set -u
cd "$1" || exit 1
command -v clang-format-14 > /dev/null || { echo "clang-format-14 is not installed (tools/install-deps.sh)"; exit 1; }
if git rev-parse --is-inside-work-tree > /dev/null 2>&1; then
  files=$(git ls-files --cached --others --exclude-standard '*.cpp' '*.hpp')  # new files too
else  # an unpacked source archive: the same folders
  files=$(find engine tools tests benchmarks -name '*.cpp' -o -name '*.hpp')
fi
[ -n "$files" ] || { echo "no C++ files found under $1"; exit 1; }
echo "$files" | tr '\n' '\0' | xargs -0 clang-format-14 --dry-run -Werror || {
  echo "files above differ from .clang-format; fix with: git ls-files -z '*.cpp' '*.hpp' | xargs -0 clang-format-14 -i"
  exit 1
}
echo "$(echo "$files" | wc -l) files formatted"
