#!/bin/sh
# Submits a ketasim run as a Slurm job array of COUNT shards and its merge, which starts when every
# shard succeeded (docs/hpc.md):
#
#   sh tools/slurm/submit-shards.sh big.yaml big 100      # -> big.shard-1.h5 ... big.shard-100.h5 -> big.h5
#
# Extra arguments go to `ketasim run` (e.g. --subjects 1000000). Set KETASIM to the ketasim
# executable if it is not on PATH on the compute nodes.
# usage: submit-shards.sh SCENARIO OUTPUT_PREFIX COUNT [KETASIM_RUN_OPTIONS...]
set -eu
[ "$#" -ge 3 ] || { echo "usage: $0 SCENARIO OUTPUT_PREFIX COUNT [OPTIONS...]" >&2; exit 2; }
scenario=$1
prefix=$2
count=$3
shift 3
here=$(dirname "$0")
array=$(sbatch --parsable --array="1-$count" "$here/ketasim-shard.sbatch" "$scenario" "$prefix" "$@")
array=${array%%;*}  # --parsable prints "JOBID" or "JOBID;CLUSTER"
merge=$(sbatch --parsable --dependency="afterok:$array" "$here/ketasim-merge.sbatch" "$prefix")
echo "shards: job array $array (1-$count); merge: job ${merge%%;*} -> $prefix.h5"
