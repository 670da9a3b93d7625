#!/bin/sh
# A ketasim built without MPI (KETASIM_WITH_MPI=OFF, or the build's ketasim_without_mpi: the same
# command-line sources compiled without it; the engine does not depend on the option): it links no
# MPI library, runs plain, and under `mpirun -n 2` every rank refuses the run (exit 2) naming the
# option, writing nothing; `mpirun -n 1` is a plain run. The mpirun checks are skipped without mpirun.
# usage: without_mpi.sh KETASIM SCENARIO WORK_DIR [CMAKE_BUILD_DIR TARGET]
#   with CMAKE_BUILD_DIR and TARGET, builds TARGET there first (cmake --build) and checks it.
set -u
ketasim=$1
scenario=$2
work=$3
. "$(dirname "$0")/lib.sh"
if [ $# -ge 5 ]; then
  mkdir -p "$(dirname "$work")"
  cmake --build "$4" --target "$5" > "$work.build.log" 2>&1 || { cat "$work.build.log"; echo "FAIL: cmake --build --target $5"; exit 1; }
fi
rm -rf "$work" && mkdir -p "$work" && cd "$work" || exit 1

if ldd "$ketasim" | grep -q -e 'libmpi' -e 'libopen-rte' -e 'libopen-pal'; then
  fail "$ketasim links an MPI library: $(ldd "$ketasim" | grep -e libmpi -e libopen)"
fi
"$ketasim" run "$scenario" --subjects 4 -o plain.h5 -q || fail "a plain run failed"
[ -f plain.h5 ] || fail "a plain run wrote no plain.h5"

if command -v mpirun > /dev/null 2>&1; then
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
  mpirun --oversubscribe -n 2 "$ketasim" run "$scenario" --subjects 4 -o two.h5 > two.log 2>&1
  code=$?
  [ $code = 2 ] || { fail "mpirun -n 2: exit $code, expected 2"; cat two.log; }
  [ "$(grep -c 'built without MPI (KETASIM_WITH_MPI=OFF)' two.log)" = 2 ] ||
    { fail "mpirun -n 2: not both ranks refused naming KETASIM_WITH_MPI=OFF"; cat two.log; }
  leftovers=$(ls -A | grep -v -e '^plain.h5$' -e '^two.log$')
  [ -z "$leftovers" ] || fail "the refused run left $leftovers"
  mpirun -n 1 "$ketasim" run "$scenario" --subjects 4 -o one.h5 -q > one.log 2>&1 || { fail "mpirun -n 1 failed"; cat one.log; }
  [ -f one.h5 ] || fail "mpirun -n 1 wrote no one.h5"
else
  echo "no mpirun: the checks under mpirun skipped"
fi
finish
