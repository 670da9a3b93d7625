"""Checks of `ketasim plot` and tools/ketasim_plot.py, run by ctest (tests/CMakeLists.txt):

    check_plot.py kaplan-meier                      the statistics against hand-computed values
    check_plot.py figures DIR FORMAT SCENARIO       the three figures exist and are valid images
    check_plot.py errors KETASIM RESULTS WORKDIR    missing file, missing dataset, layout versions, unknown arm

Exits 1 with the failed checks listed. Needs numpy and h5py (Debian: /usr/bin/python3 with
python3-h5py and python3-matplotlib).
"""

import math
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import ketasim_plot  # noqa: E402  (the module under test)

FIGURES = ("trajectories", "relapse", "outcomes")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SVG_ROOT = "{http://www.w3.org/2000/svg}svg"

failures = []


def check(condition, message):
    if not condition:
        failures.append(message)
    return condition


def close(actual, expected, what, tolerance=1e-12):
    both_nan = math.isnan(expected) and math.isnan(actual)
    check(both_nan or abs(actual - expected) <= tolerance, f"{what}: got {actual!r}, expected {expected!r}")


def check_curve(time, event, times, survival, at_risk, median, what):
    km = ketasim_plot.kaplan_meier(time, event)
    if check(len(km.times) == len(times), f"{what}: event times {list(km.times)}, expected {times}"):
        for k in range(len(times)):
            close(km.times[k], times[k], f"{what}: time {k}")
            close(km.survival[k], survival[k], f"{what}: S at {times[k]}")
            check(km.at_risk[k] == at_risk[k], f"{what}: at risk at {times[k]}: {km.at_risk[k]}, expected {at_risk[k]}")
    close(km.median, median, f"{what}: median")


def kaplan_meier_cases():
    # Ties: at t = 3 two events and one censoring; the censored subject is still at risk (7, not 6).
    # S: 7/8, then 7/8 * 5/7, then at t = 6 (3 at risk: 6, 7, 8) * 2/3, then at t = 8 (1 at risk) 0.
    check_curve([3, 2, 3, 8, 5, 3, 7, 6], [1, 1, 0, 1, 0, 1, 0, 1], times=[2, 3, 6, 8],
                survival=[7 / 8, 5 / 8, 5 / 12, 0.0], at_risk=[8, 7, 3, 1], median=6.0, what="ties and censoring")
    # S == 0.5 on [2, 6): the median is the midpoint with the next event time (6), not with the
    # censoring at 4.
    check_curve([1, 2, 4, 6], [1, 1, 0, 1], times=[1, 2, 6], survival=[0.75, 0.5, 0.0], at_risk=[4, 3, 1],
                median=4.0, what="S == 0.5, then an event")
    check_curve([1, 2, 3, 4], [1, 1, 1, 1], times=[1, 2, 3, 4], survival=[0.75, 0.5, 0.25, 0.0],
                at_risk=[4, 3, 2, 1], median=2.5, what="S == 0.5, no censoring")
    # S stays at 0.5 to the end: R gives the time it reached 0.5.
    check_curve([1, 2, 3, 4], [1, 1, 0, 0], times=[1, 2], survival=[0.75, 0.5], at_risk=[4, 3], median=2.0,
                what="S == 0.5 to the end")
    # S goes from 5/6 to 5/8 to 5/16 (< 0.5 at t = 7, where 2 are at risk).
    check_curve([1, 1, 2, 5, 7, 8], [1, 0, 1, 0, 1, 0], times=[1, 2, 7], survival=[5 / 6, 5 / 8, 5 / 16],
                at_risk=[6, 4, 2], median=7.0, what="first S < 0.5")
    # S = 11/12 * 6/11 is 0.49999999999999994 in floating point: still "S == 0.5", so the median is
    # the midpoint of 2 and the next event time 5, not 2.
    check_curve([1, 2, 2, 2, 2, 2, 3, 5, 6, 6, 8, 9], [1, 1, 1, 1, 1, 1, 0, 1, 0, 0, 1, 0], times=[1, 2, 5, 8],
                survival=[11 / 12, 0.5, 0.4, 0.2], at_risk=[12, 11, 5, 2], median=3.5, what="S == 0.5 up to rounding")
    check_curve([1, 2, 3], [1, 0, 0], times=[1], survival=[2 / 3], at_risk=[3], median=math.nan,
                what="median not reached")
    check_curve([], [], times=[], survival=[], at_risk=[], median=math.nan, what="no subjects")
    # Censoring marks sit on the curve: right-continuous, an event at t counts at t.
    km = ketasim_plot.kaplan_meier([1, 2, 4, 6], [1, 1, 0, 1])
    for t, expected in ((0.5, 1.0), (1.0, 0.75), (4.0, 0.5), (6.0, 0.0), (9.0, 0.0)):
        close(float(ketasim_plot.survival_at(km, t)), expected, f"S({t})")
    # Wilson 95% intervals: 5/10 is [0.2366, 0.7634]; 0/10 is [0, 0.2775]; n = 0 is NaN.
    low, high = ketasim_plot.wilson_interval([5, 0, 0], [10, 10, 0])
    close(low[0], 0.236593090512564, "Wilson 5/10 low", 1e-9)
    close(high[0], 0.763406909487436, "Wilson 5/10 high", 1e-9)
    close(low[1], 0.0, "Wilson 0/10 low", 1e-12)
    close(high[1], 0.277532799862838, "Wilson 0/10 high", 1e-9)
    check(math.isnan(low[2]) and math.isnan(high[2]), "Wilson with n = 0 is not NaN")


def check_figures(folder, file_format, scenario):
    folder = Path(folder)
    for figure in FIGURES:
        path = folder / f"{scenario}_{figure}.{file_format}"
        if not check(path.is_file(), f"{path}: missing"):
            continue
        data = path.read_bytes()
        if file_format == "png":
            check(data.startswith(PNG_SIGNATURE) and data[12:16] == b"IHDR" and data.endswith(b"IEND\xaeB`\x82"),
                  f"{path}: not a complete PNG")
        else:
            try:
                root = ElementTree.fromstring(data)
                check(root.tag == SVG_ROOT, f"{path}: root element {root.tag}, expected {SVG_ROOT}")
            except ElementTree.ParseError as error:
                check(False, f"{path}: not XML ({error})")
    leftovers = [name for name in os.listdir(folder) if ".tmp-" in name]
    check(not leftovers, f"{folder}: temporary files left: {leftovers}")


def run_plot(ketasim, results, output):
    process = subprocess.run([ketasim, "plot", results, "-o", output], capture_output=True, text=True)
    return process.returncode, process.stderr


def edited_copy(results, path, edit):
    import h5py
    shutil.copyfile(results, path)
    with h5py.File(path, "r+") as f:
        edit(f)
    return str(path)


def check_errors(ketasim, results, workdir):
    work = Path(workdir)
    import h5py
    with h5py.File(results, "r") as f:
        arm = str(f.attrs["arms"][0])

    code, message = run_plot(ketasim, str(work / "no_such_file.h5"), str(work / "missing_file"))
    check(code == 6 and "no_such_file.h5: no such file" in message, f"missing file: exit {code}, {message!r}")
    check(not (work / "missing_file").exists(), "missing file: output folder created")

    broken = edited_copy(results, work / "no_doses.h5", lambda f: f.__delitem__(f"arms/{arm}/doses/time_h"))
    code, message = run_plot(ketasim, broken, str(work / "missing_dataset"))
    check(code == 6 and f"no_doses.h5: missing dataset /arms/{arm}/doses/time_h" in message,
          f"missing dataset: exit {code}, {message!r}")
    check(not (work / "missing_dataset").exists() or not os.listdir(work / "missing_dataset"),
          "missing dataset: a figure was written")

    broken = edited_copy(results, work / "no_observed.h5", lambda f: f.__delitem__(f"arms/{arm}/metrics/relapse_observed"))
    code, message = run_plot(ketasim, broken, str(work / "missing_metric"))
    check(code == 6 and f"missing dataset /arms/{arm}/metrics/relapse_observed" in message,
          f"missing relapse_observed: exit {code}, {message!r}")
    check(not (work / "missing_metric").exists() or not os.listdir(work / "missing_metric"),
          "missing relapse_observed: a figure was written")

    newer = edited_copy(results, work / "layout3.h5", lambda f: f.attrs.modify("layout_version", 3))
    code, message = run_plot(ketasim, newer, str(work / "layout3"))
    check(code == 0, f"layout_version 3: exit {code}, {message!r}")
    check(len(list((work / "layout3").glob("*.png"))) == 3, "layout_version 3: not three figures")

    unknown = edited_copy(results, work / "layout4.h5", lambda f: f.attrs.modify("layout_version", 4))
    code, message = run_plot(ketasim, unknown, str(work / "layout4"))
    check(code == 6 and "layout_version 4 is not supported" in message, f"layout_version 4: exit {code}, {message!r}")

    # The dose strip: doses the same for every subject need no per-subject histogram; a subject
    # whose doses differ (here: its first dose a day later) makes the arm's doses vary.
    result = ketasim_plot.ResultFile(results)
    check(ketasim_plot.per_subject_dose_days(result, arm) is None, "nominal doses: a per-subject histogram")
    nominal = result.read(arm, "doses/time_h")
    result.close()

    def shift_first_dose(f):
        times = f[f"arms/{arm}/subjects/dose_time_h"]
        row = times[0, :]
        row[0] += 24.0
        times[0, :] = row

    varied = ketasim_plot.ResultFile(edited_copy(results, work / "varied.h5", shift_first_dose))
    days = ketasim_plot.per_subject_dose_days(varied, arm, rows_per_read=7)
    varied.close()
    check(days is not None and any(abs(day - (nominal[0] + 24.0) / 24.0) < 1e-12 for day in days),
          "a shifted dose: not seen in the per-subject doses")
    check(days is not None and len(days) == len(nominal) * result.subjects_per_arm,
          f"per-subject doses: {None if days is None else len(days)} days, expected one per dose and subject")

    process = subprocess.run([ketasim, "plot", results, "-o", str(work / "arm"), "--arms", "no_such_arm"],
                             capture_output=True, text=True)
    check(process.returncode == 2 and "no arm 'no_such_arm'" in process.stderr,
          f"unknown arm: exit {process.returncode}, {process.stderr!r}")


def main(argv):
    if argv[:1] == ["kaplan-meier"] and len(argv) == 1:
        kaplan_meier_cases()
    elif argv[:1] == ["figures"] and len(argv) == 4:
        check_figures(*argv[1:])
    elif argv[:1] == ["errors"] and len(argv) == 4:
        check_errors(*argv[1:])
    else:
        print(__doc__, file=sys.stderr)
        return 2
    for failure in failures:
        print(f"FAILED: {failure}", file=sys.stderr)
    print(f"{argv[0]}: {'FAILED' if failures else 'passed'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
