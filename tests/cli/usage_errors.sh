#!/bin/sh
# Command-line errors in ketasim's words: each names the option, the value and what is allowed,
# suggests the closest name for a typo, and exits with 2; `help` is a command; usage lines say
# `ketasim`, not the path of the binary.
# usage: usage_errors.sh KETASIM SCENARIO ONE_ARM_SCENARIO
set -u
ketasim=$1
scenario=$2
one_arm=$3
. "$(dirname "$0")/lib.sh"

expect 2 "unknown command 'rnu'; did you mean 'run'?" rnu x
expect 2 "missing command; expected one of run, merge, validate" 
expect 2 "run: unknown option '--subjcts'; did you mean '--subjects'?" run "$scenario" --subjcts 3
expect 2 "run: --subjects: '0' is not allowed; expected a whole number from 1 to 1099511627776" run "$scenario" --subjects 0
expect 2 "run: --subjects: 'many' is not allowed; expected a whole number" run "$scenario" --subjects many
expect 2 "run: --subjects: expects a value after it: a whole number" run "$scenario" --subjects
expect 2 "run: --threads: '0' is not allowed; expected a whole number from 1 to 1024" run "$scenario" --threads 0
expect 2 "run: missing scenario" run
expect 2 "run: unexpected argument 'extra.yaml'" run "$scenario" extra.yaml
expect 2 "usage: ketasim run [OPTIONS] scenario" run "$scenario" --subjects 0
expect 2 "plot: --format: 'pgn' is not allowed; expected png or svg; did you mean 'png'?" plot results.h5 --format pgn
expect 2 "compare: --format: 'jsn' is not allowed; expected table, csv, markdown or json; did you mean 'json'?" compare results.h5 --format jsn
expect 2 "compare: --bootstrap: '-1' is not allowed" compare results.h5 --bootstrap -1
expect 2 "usage: ketasim models [show] NAME: got 2 names" models show a b
expect 2 "usage: ketasim models [show] NAME: \`show\` needs a NAME" models show
expect 6 "no_such_folder: not a directory" clean no_such_folder
expect 2 "no model 'ketamine_venus' (did you mean 'ketamine_venous'?)" models show ketamine_venus
expect 0 "ketamine_venous: Racemic ketamine IV" models show ketamine_venous
expect 0 "Subcommands:" help
expect 0 "Usage: ketasim run [OPTIONS] scenario" help run
expect 0 "Usage: ketasim models [OPTIONS] [NAME]" models --help
expect 2 "help: unknown command 'rnu'; did you mean 'run'?" help rnu

# CLI11's own wording never reaches the user.
for arguments in "rnu x" "run $scenario --subjects 0" "models show a b" "plot r.h5 --format pgn" "models --help" "run"; do
  # shellcheck disable=SC2086 # split on purpose
  output=$("$ketasim" $arguments 2>&1)
  case $output in
    *"Run with --help"* | *"not in range"* | *"At Most"* | *"(0x)"* | *"/ketasim "* | *"A subcommand is required"*)
      fail "ketasim $arguments: CLI11's own message or the binary's path: $output" ;;
  esac
done

# validate: singular for one arm and one dose, and the size of the result file of a run.
expect 0 "1 arm (only: 1 dose)" validate "$one_arm"
expect 0 "result file of a run: about" validate "$one_arm"
finish
