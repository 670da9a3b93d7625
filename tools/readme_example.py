"""The README's h5py example, kept runnable (ctest runs it): python3 readme_example.py results.h5"""
import sys

import h5py
import numpy as np

HOURS_PER_DAY = 24  # the file's times are in hours

path = sys.argv[1] if len(sys.argv) > 1 else "results.h5"
with h5py.File(path, "r") as f:
    print(f.attrs["ketasim_version"], f.attrs["source_revision"], f.attrs["model"], f.attrs["seed"])
    for arm in f.attrs["arms"]:
        g = f["arms"][arm]
        t = g["time_h"][:]
        median = g["summary/plasma_ketamine_ng_per_ml/p50"][:]
        peak = g["metrics/peak_dissociation"][:]          # [subject x dose]
        print(arm, "median Cmax %.0f ng/mL" % np.median(g["metrics/cmax_ng_per_ml"][:]),
              "| median peak of the summary curve %.0f ng/mL at %.2f h" % (median.max(), t[median.argmax()]),
              "| dose-1 peak dissociation %.1f" % np.median(peak[:, 0]))
        # MADRS at the assessments (hours after the first infusion): change from baseline, response.
        days = g["assessments_h"][:] / HOURS_PER_DAY
        change = g["metrics/madrs_observed_at"][:] - g["metrics/madrs_baseline"][:][:, None]
        response = g["metrics/response_at"][:]            # [subject x assessment], 1 = responder
        print("   MADRS change (median) and response by day:",
              ", ".join("%g d %.1f %.0f%%" % (d, c, 100 * r)
                        for d, c, r in zip(days, np.median(change, axis=0), response.mean(axis=0))))
