#!/bin/sh
# Where an output may go (docs/cli.md, "Output files"), checked before anything is simulated:
# an empty path, a device, a FIFO, a directory, a symbolic link, a read-only file or an input of
# the command is refused and left as it was; a 252-character name works (its temporary name is
# cut to fit), a name longer than the file system allows is refused up front.
# usage: output_path.sh KETASIM SCENARIO REPRODUCTION_TARGET WORK_DIR
set -u
ketasim=$1
scenario=$2
target=$3
work=$4
. "$(dirname "$0")/lib.sh"
rm -rf "$work" && mkdir -p "$work" && cd "$work" || exit 1
cp "$scenario" scenario.yaml

expect 2 "--output: '' is not allowed; expected a file name" run scenario.yaml --subjects 2 -q -o ""
expect 2 "--output: '' is not allowed; expected a file name" compare results.h5 -o ""

# A device node of our own (as /dev/null would be): refused, still a device afterwards.
if mknod null c 1 3 2>/dev/null; then
  expect 6 "null: is a character device, not a regular file" run scenario.yaml --subjects 2 -q -o null
  [ -c null ] || fail "the device node was replaced"
else
  echo "note: mknod is not allowed here: the device case is skipped"
fi
mkfifo fifo
expect 6 "fifo: is a FIFO (named pipe), not a regular file" run scenario.yaml --subjects 2 -q -o fifo
[ -p fifo ] || fail "the FIFO was replaced"

mkdir folder
expect 6 "folder: is a directory" run scenario.yaml --subjects 2 -q -o folder
[ -d folder ] || fail "the directory was replaced"

ln -s elsewhere.h5 link.h5
expect 6 "link.h5: is a symbolic link to 'elsewhere.h5'" run scenario.yaml --subjects 2 -q -o link.h5
[ -L link.h5 ] && [ ! -e elsewhere.h5 ] || fail "the symbolic link was replaced or followed"

echo "kept result" > read_only.h5
chmod 444 read_only.h5
expect 6 "read_only.h5: is read-only (mode 0444); ketasim does not replace a read-only file: remove it, or make it writable (chmod u+w" \
  run scenario.yaml --subjects 2 -q -o read_only.h5
[ "$(cat read_only.h5)" = "kept result" ] || fail "the read-only file was replaced"

cp scenario.yaml scenario.copy
expect 6 "scenario.yaml: is the same file as 'scenario.yaml', an input of this command" run scenario.yaml --subjects 2 -q -o scenario.yaml
ln scenario.yaml hard_link.yaml
expect 6 "hard_link.yaml: is the same file as 'scenario.yaml'" run scenario.yaml --subjects 2 -q -o hard_link.yaml
cmp -s scenario.yaml scenario.copy || fail "the scenario file was replaced"

# A table the scenario reads (cohort.from_csv) is an input too.
cp "$(dirname "$scenario")/example_patients.csv" patients.csv
cat > from_csv.yaml <<'YAML'
name: from_csv
model: {name: ketamine_venous}
cohort: {from_csv: patients.csv, seed: 1}
arms:
  - name: a
    regimen: {route: iv_infusion, dose: 0.5 mg/kg, infusion_duration: 40 min, schedule: [Mon 09:00], for: 1 week}
output:
  grid: {every: 30 min, for: 1 week}
YAML
cp patients.csv patients.copy
expect 6 "patients.csv: is the same file as" run from_csv.yaml -q -o patients.csv
cmp -s patients.csv patients.copy || fail "the cohort table was replaced"

long_name=$(printf '%0252d' 0)
expect 0 "" run scenario.yaml --subjects 2 -q -o "$long_name"
[ -f "$long_name" ] || fail "no result under a 252-character name"
too_long=$(printf '%0256d' 0)
expect 6 "its file name is 256 bytes long, and the file system of '.' allows at most 255" run scenario.yaml --subjects 2 -q -o "$too_long"

# The other commands that write files follow the same rules, before their work.
expect 0 "" run scenario.yaml --subjects 4 -q -o results.h5
expect 6 "results.h5: is the same file as 'results.h5', an input of this command" compare results.h5 --bootstrap 10 -o results.h5
expect 0 "response rate" compare results.h5 --bootstrap 10
expect 6 "results.h5: is the same file as 'results.h5', an input of this command" export results.h5 -o results.h5
expect 0 "response rate" compare results.h5 --bootstrap 10
mkfifo export.fifo
expect 6 "export.fifo: is a FIFO" export results.h5 -o export.fifo
ln -s results.h5 export-link.csv
expect 6 "export-link.csv: is a symbolic link" export results.h5 -o export-link.csv
cp "$target" target.yaml
expect 6 "target.yaml: is the same file as 'target.yaml', an input of this command" reproduce target.yaml --markdown target.yaml
expect 6 "folder: is a directory" reproduce target.yaml --markdown folder

expect_no_temporaries .
finish
