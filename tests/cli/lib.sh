# Shared by the CLI test scripts (sourced): checks that count failures instead of stopping at the
# first, so one run shows everything that is wrong.
failures=0

fail() {
  echo "FAIL: $*"
  failures=$((failures + 1))
}

# expect CODE TEXT ARGS...: `ketasim ARGS` exits with CODE and its output (stdout and stderr)
# contains TEXT, a fixed string ("" for any output).
expect() {
  expected_code=$1
  expected_text=$2
  shift 2
  output=$("$ketasim" "$@" 2>&1)
  code=$?
  if [ "$code" -ne "$expected_code" ]; then
    fail "ketasim $*: exit $code, expected $expected_code"
    echo "$output"
    return
  fi
  case $output in
    *"$expected_text"*) ;;
    *) fail "ketasim $*: the output lacks '$expected_text'"; echo "$output" ;;
  esac
}

# No file whose name marks it as a ketasim temporary in directory $1.
expect_no_temporaries() {
  leftovers=$(ls -A "$1" | grep -e '\.ketasim-tmp\.' -e '\.tmp-')
  [ -z "$leftovers" ] || fail "temporary files left in $1: $leftovers"
}

# run_fixture DIR SUBJECTS: the one small run a group of tests shares, SUBJECTS subjects of the main
# scenario in DIR/results.h5 (DIR made afresh).
run_fixture() {
  rm -rf "$1" && mkdir -p "$1" || exit 1
  "$ketasim" run "$source_dir/scenarios/once_vs_twice_weekly.yaml" --subjects "$2" -o "$1/results.h5" --quiet ||
    fail "the run failed"
}

finish() {
  if [ "$failures" -ne 0 ]; then
    echo "$failures check(s) failed"
    exit 1
  fi
  echo "all checks passed"
  exit 0
}

# Waits until every FILE exists, polling every 0.1 s, at most TENTHS polls (the files may never
# come: the caller's next check then fails with its own message).
# usage: wait_for_files TENTHS FILE...
wait_for_files() {
  tenths=$1
  shift
  waited=0
  while [ $waited -lt "$tenths" ]; do
    missing=0
    for file in "$@"; do [ -e "$file" ] || missing=1; done
    [ $missing = 0 ] && return 0
    sleep 0.1
    waited=$((waited + 1))
  done
  return 1
}
