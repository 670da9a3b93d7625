#!/usr/bin/env bash
# Installs everything ketasim needs from Debian 12's packages (run as root). Idempotent.
set -euo pipefail
packages=(
  build-essential cmake git pkg-config
  libboost-dev libeigen3-dev libhdf5-dev hdf5-tools libyaml-cpp-dev
  catch2 libcli11-dev librandom123-dev libbenchmark-dev libnlopt-cxx-dev
  libopenmpi-dev openmpi-bin
  # Slurm and its authentication (docs/hpc.md): the test cli.slurm_cluster starts a one-node cluster
  # on this host (munged, slurmctld, slurmd) to run tools/slurm's scripts for real. Debian 12 has
  # Slurm 22.05, whose srun --mpi=pmix starts Debian's OpenMPI ranks.
  slurm-wlm munge
  # GNU time (/usr/bin/time -f '%e %M': wall time and peak resident memory of each process) for
  # benchmarks/scaling/run.sh and benchmarks/load_balance/run.sh.
  time
  python3 python3-h5py python3-matplotlib
  python3-pandas r-cran-hdf5r  # readers of the result file in the tests of docs/hdf5-layout.md
  # The clang and fuzz presets (docs/testing.md): clang 14, and its runtimes for the sanitizers and
  # libFuzzer (-fsanitize=fuzzer needs libclang-rt-14-dev only, not libfuzzer-14-dev).
  clang-14 libclang-rt-14-dev
  # The habits checks (docs/testing.md): formatting (ctest habits.format) and tests/habits/tidy.sh.
  clang-format-14 clang-tidy-14
)
missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "all ${#packages[@]} Debian packages already installed"
fi
