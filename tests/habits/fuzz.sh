#!/bin/sh
# habits.fuzz: the `fuzz` preset (clang 14, libFuzzer, ASan and UBSan) configured and built in a
# folder of its own, then each fuzz target of tests/fuzz run for SECONDS from its seed corpus (the
# same folders as fuzz.replay_*). Any finding (crash, sanitizer report, an exception other than a
# ketasim::Error, a timeout of one input, out of memory, a leak) fails the test, with libFuzzer's
# report and the input saved as WORK_DIR/<target>/crash-* (or timeout-*, oom-*, leak-*): add it to
# tests/fuzz/seeds/<target>/ once fixed (docs/testing.md). New inputs found go to WORK_DIR only.
# Exit 77 (skipped) without clang 14 (tools/install-deps.sh installs it).
# usage: fuzz.sh SOURCE_DIR BUILD_DIR WORK_DIR SECONDS
set -u
source_dir=$1
build=$2
work=$3
seconds=$4
command -v clang++-14 > /dev/null || { echo "clang++-14 is not installed: skipped"; exit 77; }
started=$(date +%s)
cmake -S "$source_dir" -B "$build" --preset fuzz > "$build.configure.log" 2>&1 ||
  { cat "$build.configure.log"; echo "FAIL: configuring the fuzz preset"; exit 1; }
targets="scenario covariate_table dosing_table"
for target in $targets; do set -- "$@" "ketasim_fuzz_$target"; done
shift 4
cmake --build "$build" --target "$@" -j2 > "$build.build.log" 2>&1 ||
  { tail -50 "$build.build.log"; echo "FAIL: building the fuzz targets"; exit 1; }
echo "fuzz build: $(($(date +%s) - started)) s"

s=$source_dir
failures=0
for target in $targets; do
  case $target in
    scenario) seeds="$s/tests/fuzz/seeds/scenario $s/scenarios $s/tests/scenarios $s/tests/invalid_scenarios $s/benchmarks/reproduction" ;;
    covariate_table) seeds="$s/tests/fuzz/seeds/covariate_table $s/scenarios" ;;
    dosing_table) seeds="$s/tests/fuzz/seeds/dosing_table" ;;
  esac
  rm -rf "$work/$target" && mkdir -p "$work/$target/new" || exit 1
  # In the target's folder: the scenario target reads the files a scenario names, relative to it,
  # and libFuzzer writes its findings there. One process, one job: the budget is the time given.
  (cd "$work/$target" && "$build/tests/fuzz/ketasim_fuzz_$target" new $seeds -max_total_time="$seconds" \
     -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 > log.txt 2>&1)
  code=$?
  grep -E "^(stat::number_of_executed_units|stat::new_units_added)|^Done [0-9]+ runs" "$work/$target/log.txt" | tr '\n' ' '
  echo
  if [ "$code" -ne 0 ]; then
    tail -60 "$work/$target/log.txt"
    echo "FAIL: ketasim_fuzz_$target found a problem (exit $code): $(ls "$work/$target" | grep -E '^(crash|timeout|oom|leak|slow-unit)-')"
    failures=$((failures + 1))
  fi
done
echo "fuzz build and runs: $(($(date +%s) - started)) s"
[ "$failures" -eq 0 ]
