#!/usr/bin/env python3
"""Probes of the shipped response model (issue 11), printed as the table docs/model.md quotes.

    python3 benchmarks/probes/response_probes.py [KETASIM] [OUTDIR]

Runs benchmarks/probes/series_dose.yaml (six thrice-weekly infusions at 0.1 to 1.0 mg/kg) and
scenarios/once_vs_twice_weekly.yaml (metrics only), then reports per dose the observed response
rate 24 h after each infusion, the share of the end-of-series responders who already responded
24 h after the first infusion, the median infusions to a first response, and the overlap (Jaccard)
of the day-28 responders of the once- and twice-weekly arms. Needs h5py and numpy (Debian:
python3-h5py); if this interpreter lacks them it re-runs itself with /usr/bin/python3.
"""
import os
import subprocess
import sys

try:
    import h5py
    import numpy as np
except ImportError:
    if sys.executable != "/usr/bin/python3" and os.path.exists("/usr/bin/python3"):
        os.execv("/usr/bin/python3", ["/usr/bin/python3"] + sys.argv)
    sys.exit("response_probes.py needs h5py and numpy: apt-get install python3-h5py")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
KETASIM = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "build", "tools", "ketasim")
OUT = sys.argv[2] if len(sys.argv) > 2 else "probe-results"


def run(scenario, output, *extra):
    os.makedirs(OUT, exist_ok=True)
    path = os.path.join(OUT, output)
    subprocess.run([KETASIM, "run", os.path.join(ROOT, scenario), "-o", path, "--quiet", *extra],
                   check=True)
    return h5py.File(path, "r")


def series_table():
    with run("benchmarks/probes/series_dose.yaml", "series_dose.h5") as f:
        print("| dose (mg/kg) | response 24 h after infusion 1 … 6 (%) | end responders responding after the first | median infusions to a first response |")
        print("|---|---|---|---|")
        for arm in f["arms"]:
            r = f["arms"][arm]["metrics"]["response_24h_after_session"][:]
            rates = " / ".join(f"{100 * v:.1f}" for v in np.nanmean(r, axis=0))
            end = r[:, -1] == 1
            early = np.mean(r[end, 0] == 1) if end.any() else float("nan")
            first = [np.argmax(row == 1) + 1 for row in r if (row == 1).any()]
            print(f"| {arm.removeprefix('dose_').replace('_', '.')} | {rates} | {100 * early:.0f}% | {np.median(first):.0f} |")


def overlap():
    with run("scenarios/once_vs_twice_weekly.yaml", "once_vs_twice_metrics.h5", "--subjects", "2000") as f:
        arms = list(f["arms"])
        days = f["arms"][arms[0]]["assessments_h"][:] / 24.0
        column = int(np.argmin(np.abs(days - 28.0)))
        responders = [f["arms"][a]["metrics"]["response_at"][:, column] == 1 for a in arms]
        both = np.sum(responders[0] & responders[1])
        either = np.sum(responders[0] | responders[1])
        print(f"\nday-{days[column]:g} responders: {arms[0]} {responders[0].sum()}, {arms[1]} {responders[1].sum()}, "
              f"both {both}; Jaccard overlap {both / either:.3f}; "
              f"{arms[0]} responders who also respond in {arms[1]}: {both / responders[0].sum():.3f}")


series_table()
overlap()
