#!/bin/sh
# A run whose disk fills up while it writes (issue 9: it printed 155 lines of HDF5 errors and
# crashed). Expected: exit 6 naming "No space left on device", one line on stderr, no temporary
# file left, no output file. The run's journal of the blocks it finished (issue 12) is kept, with a
# second line saying that --resume continues from it once there is room.
#
# The disk is a tmpfs (root only: the test is skipped, exit 77, where mount is not possible) of
# 256 MB, several times what the run writes (about 25 MB) or any estimate of it (77 MB
# uncompressed), so that a check of the free space before the run passes. It is filled only once
# the run is writing subjects (its temporary file has grown past 1 MB; the run is stopped
# meanwhile), so the failure happens during writing.
#
# usage: full_disk.sh KETASIM SCENARIO WORK_DIRECTORY
set -u
ketasim=$1
scenario=$2
work=$3
disk="$work/disk"

rm -rf "$work" && mkdir -p "$disk" || exit 1
mount -t tmpfs -o size=256m tmpfs "$disk" 2>/dev/null || { echo "cannot mount a tmpfs: skipped"; exit 77; }
pid=""
cleanup() {
  [ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null
  umount "$disk"
}
trap cleanup EXIT

"$ketasim" run "$scenario" --subjects 400 --threads 1 -o "$disk/results.h5" --quiet 2> "$work/stderr" &
pid=$!
waited=0
while [ "$(cat "$disk"/results.h5.ketasim-tmp.* 2>/dev/null | wc -c)" -lt 1000000 ]; do
  kill -0 "$pid" 2>/dev/null || { echo "the run ended before it wrote 1 MB"; cat "$work/stderr"; exit 1; }
  sleep 0.05
  waited=$((waited + 1))
  [ "$waited" -lt 2400 ] || { echo "the temporary file did not reach 1 MB in 120 s"; exit 1; }
done
kill -STOP "$pid"
dd if=/dev/zero of="$disk/filler" bs=1M > /dev/null 2>&1  # until the disk is full
kill -CONT "$pid"
wait "$pid"
status=$?
pid=""
rm -f "$disk/filler"

echo "exit status $status; stderr:"
cat "$work/stderr"
failed=0
[ "$status" -eq 6 ] || { echo "FAIL: expected exit status 6"; failed=1; }
grep -q "No space left on device" "$work/stderr" || { echo "FAIL: the message does not say 'No space left on device'"; failed=1; }
lines=1
if [ -e "$disk/results.h5.journal" ]; then
  lines=2
  grep -q "results.h5.journal keeps .* blocks: rerun with --resume" "$work/stderr" || { echo "FAIL: no word of the journal"; failed=1; }
fi
[ "$(wc -l < "$work/stderr")" -eq "$lines" ] || { echo "FAIL: expected exactly $lines line(s) on stderr"; failed=1; }
leftover=$(ls -A "$disk" | grep -v '^results\.h5\.journal$')
[ -z "$leftover" ] || { echo "FAIL: files left on the disk: $leftover"; failed=1; }
exit $failed
