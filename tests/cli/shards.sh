#!/bin/sh
# Shards of a run and their merge (docs/hpc.md): `run --shard I/N` computes one shard, `merge`
# makes the file of the whole run, dataset for dataset and bit for bit, and refuses what it cannot
# merge, writing nothing.
#   identical SCENARIO SUBJECTS  a run done whole and in 3 shards merged (given in shuffled order)
#                                hold the same datasets (same_datasets.py); compare prints the same
#                                on both, export writes the same data set; compare and export
#                                (and plot) refuse a shard file
#   refusals SCENARIO            wrong --shard values; merges of a non-shard file, another scenario,
#                                another cohort size, another build, a missing, duplicated or
#                                overlapping shard, shards of different splits, an input as the
#                                output: each a clear error, no output file, no temporary left
#   slurm_scripts SCENARIO SUBJECTS  tools/slurm's array task and merge job, with Slurm's variables
#                                set by hand, give the whole run's file; an array not 1-COUNT is refused
# usage: shards.sh KETASIM SOURCE_DIR WORK_DIR MODE SCENARIO [SUBJECTS]
set -u
ketasim=$1
source_dir=$2
work=$3
mode=$4
scenario=$5
subjects=${6:-12}
. "$(dirname "$0")/lib.sh"
rm -rf "$work" && mkdir -p "$work" && cd "$work" || exit 1

# A root attribute of a file, printed by h5py.
attribute() {
  /usr/bin/python3 -c 'import sys, h5py; print(h5py.File(sys.argv[1], "r").attrs[sys.argv[2]])' "$1" "$2" 2>&1
}

# tampered_copy FILE ATTRIBUTE VALUE COPY: COPY is FILE with root attribute ATTRIBUTE set to the
# Python value VALUE (an integer keeps the attribute's int64 type).
tampered_copy() {
  cp "$1" "$4" && /usr/bin/python3 - "$4" "$2" "$3" <<'EOF'
import sys

import h5py
import numpy as np

with h5py.File(sys.argv[1], "r+") as f:
    value = eval(sys.argv[3])
    if isinstance(value, int):
        f.attrs.modify(sys.argv[2], np.int64(value))
    else:
        f.attrs[sys.argv[2]] = value
EOF
}

# `merge ARGS... -o out.h5` exits with CODE saying TEXT and leaves neither out.h5 nor a temporary.
refused() {
  code=$1
  text=$2
  shift 2
  expect "$code" "$text" merge "$@" -o out.h5 --quiet
  [ -e out.h5 ] && fail "merge $*: out.h5 was written" && rm -f out.h5
  expect_no_temporaries .
}

case $mode in
  identical)
    "$ketasim" run "$scenario" --subjects "$subjects" -o whole.h5 --quiet || fail "the whole run failed"
    for i in 1 2 3; do
      "$ketasim" run "$scenario" --subjects "$subjects" --shard $i/3 -o part.shard-$i.h5 --quiet ||
        fail "shard $i/3 failed"
    done
    [ "$(attribute part.shard-2.h5 shard_index)" = 2 ] || fail "shard 2's shard_index: $(attribute part.shard-2.h5 shard_index)"
    "$ketasim" merge part.shard-3.h5 part.shard-1.h5 part.shard-2.h5 -o merged.h5 --threads 2 || fail "the merge failed"
    expect_no_temporaries .
    /usr/bin/python3 "$source_dir/tests/cli/same_datasets.py" whole.h5 merged.h5 || fail "the merged file differs"
    files=$(attribute merged.h5 merged_shard_files)
    case $files in
      *part.shard-1.h5*part.shard-2.h5*part.shard-3.h5*) ;;
      *) fail "merged_shard_files, in subject order: $files" ;;
    esac
    "$ketasim" compare whole.h5 --format csv --bootstrap 100 > whole.csv || fail "compare of the whole run failed"
    "$ketasim" compare merged.h5 --format csv --bootstrap 100 > merged.csv || fail "compare of the merged file failed"
    [ -s whole.csv ] && cmp -s whole.csv merged.csv || fail "compare prints other figures for the merged file"
    "$ketasim" export whole.h5 --all-arms -o whole_nonmem.csv > /dev/null || fail "export of the whole run failed"
    "$ketasim" export merged.h5 --all-arms -o merged_nonmem.csv > /dev/null || fail "export of the merged file failed"
    cmp -s whole_nonmem.csv merged_nonmem.csv || fail "export writes another data set for the merged file"
    expect 6 "one shard of a split run" compare part.shard-1.h5
    expect 6 "one shard of a split run" export part.shard-1.h5
    if /usr/bin/python3 -c "import matplotlib" 2>/dev/null; then
      expect 6 "one shard of a split run" plot part.shard-1.h5 -o figures
      [ -e figures ] && fail "plot of a shard file made the folder figures"
    fi
    ;;
  refusals)
    run() { "$ketasim" run "${scenario_of_run:-$scenario}" --quiet "$@" || fail "ketasim run $*: failed"; }
    # --shard values that cannot be honoured: nothing runs, nothing is written.
    for wrong in 0/3 4/3 3 3/0 -1/3 a/b 1/3/4; do
      expect 2 "expected INDEX/COUNT" run "$scenario" --subjects "$subjects" --shard "$wrong" -o wrong.h5 --quiet
    done
    expect 2 "would leave shards without subjects" run "$scenario" --subjects 4 --shard 5/5 -o wrong.h5 --quiet
    [ -e wrong.h5 ] && fail "a refused --shard wrote wrong.h5"

    run --subjects "$subjects" -o whole.h5
    for i in 1 2 3; do run --subjects "$subjects" --shard $i/3 -o s$i.h5; done
    echo "not hdf5" > text.h5
    refused 6 "whole.h5: not a shard file (a result file of a whole run" s1.h5 s2.h5 s3.h5 whole.h5
    refused 6 "cannot open shard 'text.h5': not an HDF5 file" s1.h5 s2.h5 text.h5
    refused 6 "cannot open shard 'absent.h5': no such file" s1.h5 s2.h5 absent.h5
    scenario_of_run="$source_dir/tests/cli/one_arm_one_dose.yaml"
    run --subjects "$subjects" --shard 2/3 -o other_scenario.h5
    scenario_of_run=
    refused 6 "other_scenario.h5: its scenario (attribute scenario_yaml) differs from that of s1.h5" \
      s1.h5 other_scenario.h5 s3.h5
    run --subjects $((subjects + 3)) --shard 2/3 -o other_size.h5
    refused 6 "other_size.h5: the cohort is $((subjects + 3)) subjects per arm" s1.h5 other_size.h5 s3.h5
    tampered_copy s2.h5 ketasim_version "'0.0.0-elsewhere'" other_build.h5
    refused 6 "other_build.h5: written by ketasim 0.0.0-elsewhere" s1.h5 other_build.h5 s3.h5
    refused 2 "shard 2 of 3 missing" s1.h5 s3.h5
    refused 2 "shards 2-3 of 3 missing" s1.h5
    refused 2 "shard 2/3 is given twice: s2.h5 and s2.h5" s1.h5 s2.h5 s2.h5 s3.h5
    cp s2.h5 s2_copy.h5
    refused 2 "shard 2/3 is given twice: s2.h5 and s2_copy.h5" s1.h5 s2.h5 s3.h5 s2_copy.h5
    tampered_copy s2.h5 shard_first_subject 1 overlapping.h5
    refused 6 "which overlap those of s1.h5 (shard 1/3)" s1.h5 overlapping.h5 s3.h5
    run --subjects "$subjects" --shard 1/2 -o half.h5
    refused 2 "come from splits into different numbers of shards" half.h5 s2.h5 s3.h5
    expect 6 "s2.h5" merge s1.h5 s2.h5 s3.h5 -o s2.h5 --quiet  # an input is never the output
    [ "$(attribute s2.h5 shard_index)" = 2 ] || fail "the refused merge touched s2.h5"
    expect 2 "merge: missing option --output" merge s1.h5 s2.h5 s3.h5
    # The shards themselves merge (the refusals above were for what was wrong, not for these).
    "$ketasim" merge s2.h5 s1.h5 s3.h5 -o out.h5 --quiet || fail "the good shards do not merge"
    [ -f out.h5 ] || fail "the good merge wrote no out.h5"
    ;;
  slurm_scripts)
    # tools/slurm's scripts as a job array's tasks see them (Slurm's variables set by hand; a real
    # cluster is not needed to check what they run), then the merge job.
    slurm="$source_dir/tools/slurm"
    export KETASIM="$ketasim"
    "$ketasim" run "$scenario" --subjects "$subjects" -o whole.h5 --quiet || fail "the whole run failed"
    for i in 1 2 3; do
      SLURM_ARRAY_TASK_ID=$i SLURM_ARRAY_TASK_COUNT=3 SLURM_ARRAY_TASK_MIN=1 SLURM_ARRAY_TASK_MAX=3 \
        sh "$slurm/ketasim-shard.sbatch" "$scenario" big --subjects "$subjects" || fail "array task $i failed"
    done
    [ "$(attribute big.shard-3.h5 shard_index)" = 3 ] || fail "task 3 did not write shard 3: $(ls)"
    sh "$slurm/ketasim-merge.sbatch" big > /dev/null || fail "the merge job failed"
    /usr/bin/python3 "$source_dir/tests/cli/same_datasets.py" whole.h5 big.h5 || fail "the merged file differs"
    output=$(SLURM_ARRAY_TASK_ID=2 SLURM_ARRAY_TASK_COUNT=3 SLURM_ARRAY_TASK_MIN=2 SLURM_ARRAY_TASK_MAX=4 \
      sh "$slurm/ketasim-shard.sbatch" "$scenario" wrong 2>&1) && fail "an array 2-4 was accepted"
    case $output in
      *"submit it as --array=1-COUNT"*) ;;
      *) fail "an array 2-4: $output" ;;
    esac
    [ -e wrong.shard-2.h5 ] && fail "an array 2-4 wrote a shard"
    ;;
  *)
    echo "unknown mode $mode"
    exit 2
    ;;
esac
finish
