#!/bin/sh
# habits.sanitizers: the `asan` preset (g++, AddressSanitizer and UndefinedBehaviorSanitizer, Debug)
# configured and built in a folder of its own, then a subset of the Catch2 tests run under it; any
# report fails the test (UBSan's reports too: halt_on_error). The subset (tests/CMakeLists.txt says
# which and why) is what fits CI's time budget on a 2-core machine; run the whole suite with
# `cmake --preset asan && cmake --build --preset asan && ctest --preset asan -E "calibration|reproduction"`.
# usage: sanitizers.sh SOURCE_DIR BUILD_DIR TEST_SPEC   (TEST_SPEC: Catch2 tags or names)
set -u
source_dir=$1
build=$2
spec=$3
started=$(date +%s)
cmake -S "$source_dir" -B "$build" --preset asan -DKETASIM_BUILD_BENCHMARKS=OFF > "$build.configure.log" 2>&1 ||
  { cat "$build.configure.log"; echo "FAIL: configuring the asan preset"; exit 1; }
# Only the test binary: the CLI and the fuzz replays are not run here.
cmake --build "$build" --target ketasim_tests -j2 > "$build.build.log" 2>&1 ||
  { tail -50 "$build.build.log"; echo "FAIL: building the asan preset"; exit 1; }
built=$(date +%s)
echo "asan build: $((built - started)) s"
ASAN_OPTIONS=detect_leaks=1:strict_string_checks=1:detect_stack_use_after_return=1 \
UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  "$build/tests/ketasim_tests" "$spec" --durations yes
code=$?
echo "asan tests ($spec): $(($(date +%s) - built)) s"
[ "$code" -eq 0 ] || { echo "FAIL: the tests under ASan and UBSan (exit $code)"; exit 1; }
