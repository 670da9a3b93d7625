#!/usr/bin/env bash
# Workload W1 side by side: deSolve (lsoda, the model as an R function, one core) against ketasim
# (one thread, and all cores), on the same model, cohort and schedule. ketasim's figure includes
# writing every trajectory (3 variables x 6049 points per subject) to HDF5; deSolve's keeps them
# in memory.
#
#   bash benchmarks/compare_desolve.sh [BUILD_DIR] [DESOLVE_SUBJECTS] [KETASIM_SUBJECTS]
#
# Needs Debian's r-base-core and r-cran-desolve (apt-get install r-base-core r-cran-desolve) and a
# Python 3 with h5py (Debian's /usr/bin/python3 with python3-h5py).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=${1:-$here/../build}
desolve_subjects=${2:-100}
ketasim_subjects=${3:-20000}

if ! command -v Rscript >/dev/null || ! Rscript -e 'library(deSolve)' >/dev/null 2>&1; then
  echo "compare_desolve: needs R with deSolve: apt-get install r-base-core r-cran-desolve" >&2
  exit 2
fi
python=""
for candidate in /usr/bin/python3 $(which -a python3 2>/dev/null); do
  if "$candidate" -c 'import h5py, numpy' 2>/dev/null; then python=$candidate; break; fi
done
[ -n "$python" ] || { echo "compare_desolve: needs a python3 with h5py: apt-get install python3-h5py" >&2; exit 2; }

# The card's current dissociation link, so that both solve the same model.
card_value() { "$build/tools/ketasim" models show ketamine_domino_3cmt | awk -v name="$1" '$1 == name {print $2}'; }
Rscript "$here/desolve/w1.R" "$desolve_subjects" "$(card_value diss_emax)" "$(card_value diss_hill)" "$(card_value ec50_s)" \
  "$(card_value ke0)" "$(card_value s_fraction)"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for threads in 1 $(nproc); do
  start=$(date +%s.%N)
  "$build/tools/ketasim" run "$here/w1.yaml" --subjects "$ketasim_subjects" --threads "$threads" -o "$work/w1.h5" --quiet
  end=$(date +%s.%N)
  "$python" - "$work/w1.h5" "$ketasim_subjects" "$threads" "$start" "$end" <<'PY'
import sys, h5py, numpy as np
path, n, threads, start, end = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4]), float(sys.argv[5])
with h5py.File(path, "r") as f:
    m = f["arms/twice_weekly/metrics"]
    cmax = np.median(m["cmax_ng_per_ml"][:]); peak1 = np.median(m["peak_dissociation"][:, 0])
    version = f.attrs["ketasim_version"]
seconds = end - start
print("ketasim %s exact, %s thread(s), with HDF5 output  %d subjects in %.1f s: %.0f subjects/s; median Cmax %.0f ng/mL, median dose-1 peak dissociation %.1f"
      % (version, threads, n, seconds, n / seconds, cmax, peak1))
PY
done
