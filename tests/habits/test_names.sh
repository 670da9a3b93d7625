#!/bin/sh
# Catch2 test case names without ';': catch_discover_tests hands each name to ctest as a CMake list
# item, so a name with ';' is cut there, Catch matches no test case with the cut name, and the ctest
# passes without running anything (seven test cases were never run that way before issue 12).
# usage: test_names.sh TESTS_DIR
set -u
found=$(grep -n 'TEST_CASE("[^"]*;' "$1"/*.cpp)
if [ -n "$found" ]; then
  echo "FAIL: test case names with ';' (ctest would run nothing for them; use ',' instead):"
  echo "$found"
  exit 1
fi
echo "no test case name has ';'"
