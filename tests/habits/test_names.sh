#!/bin/sh
# Catch2 test case names without ';': catch_discover_tests hands each name to ctest as a CMake list
# item, so a name with ';' is cut there, Catch matches no test case with the cut name, and the ctest
# passes without running anything (nine test cases were never run that way before issue 12). A
# name may be several string literals over several lines.
# usage: test_names.sh TESTS_DIR
set -u
exec /usr/bin/python3 - "$1" <<'PYTHON'
import glob
import re
import sys

found = []
for path in sorted(glob.glob(sys.argv[1] + "/*.cpp")):
    text = open(path, encoding="utf-8").read()
    for match in re.finditer(r'TEST_CASE\(\s*((?:"(?:[^"\\]|\\.)*"\s*)+)', text):
        name = "".join(re.findall(r'"((?:[^"\\]|\\.)*)"', match.group(1)))
        if ";" in name:
            found.append(f"{path}:{text.count(chr(10), 0, match.start()) + 1}: {name}")
if found:
    print("FAIL: test case names with ';' (ctest would run nothing for them; use ',' instead):")
    print("\n".join(found))
    sys.exit(1)
print("no test case name has ';'")
PYTHON
