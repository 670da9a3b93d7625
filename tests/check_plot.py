"""Checks of `ketasim plot` and tools/ketasim_plot.py, run by ctest (tests/CMakeLists.txt):

    check_plot.py kaplan-meier                      the statistics against hand-computed values
    check_plot.py figures DIR FORMAT SCENARIO       the three figures exist and are valid images
    check_plot.py errors KETASIM RESULTS WORKDIR    malformed and unusable files (each exit 6 naming the object,
                                                    no traceback, no figure written), layout versions, unknown
                                                    arm, all three figures or none, titles naming arms' models
    check_plot.py arm-models RESULTS                a run of tests/scenarios/arm_models.yaml: each arm's dosed
                                                    drug in one panel, each arm's model in the title

Exits 1 with the failed checks listed. Needs numpy and h5py (Debian: /usr/bin/python3 with
python3-h5py and python3-matplotlib). The script under test is the one in the folder named by the
environment variable KETASIM_PLOT_DIR (ctest sets it to the build folder's share/ketasim, where CMake
puts the script with its ketasim_layout.py), else tools/ of the source tree (then the checks of the
script's default layout versions fail: that copy has none).
"""

import contextlib
import io
import math
import os
import shutil
import subprocess
import sys
import traceback
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import numpy as np

TOOLS = Path(os.environ.get("KETASIM_PLOT_DIR") or Path(__file__).resolve().parents[1] / "tools")
sys.path.insert(0, str(TOOLS))
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


def run_plot(ketasim, results, output, *options):
    process = subprocess.run([ketasim, "plot", results, "-o", output, *options], capture_output=True, text=True)
    return process.returncode, process.stderr


def run_in_process(arguments):
    """ketasim_plot.py's main in this process (importing matplotlib once, not per case): its exit
    code and standard error; an exception escaping main is what the user would see as a traceback."""
    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors), contextlib.redirect_stdout(io.StringIO()):
            code = ketasim_plot.main(arguments)
    except BaseException:  # SystemExit included: the script must return its code, not exit
        return "traceback", errors.getvalue() + traceback.format_exc()
    return code, errors.getvalue()


def edited_copy(results, path, edit):
    import h5py
    shutil.copyfile(results, path)
    with h5py.File(path, "r+") as f:
        edit(f)
    return str(path)


def figures_in(folder):
    """Files in the output folder (figures or temporaries); none if it does not exist."""
    return sorted(os.listdir(folder)) if os.path.isdir(folder) else []


# ---------------------------------------------------------------------------------------------
# The corpus of malformed files: each edit of the fixture run damages one object the script reads.

def replaced(path, transform):
    """Rewrites the dataset at `path` with transform(its values), keeping its attributes."""
    def edit(f):
        attributes = dict(f[path].attrs)
        values = transform(f[path][()])
        del f[path]
        f[path] = values
        for name, value in attributes.items():
            f[path].attrs[name] = value
    return edit


def with_value(index, value):
    def transform(values):
        values = values.astype(float)
        values[index] = value
        return values
    return transform


def texts(values):
    import h5py
    return np.full(np.shape(values) or (1,), "x", dtype=h5py.string_dtype())


def set_attribute(name, value, path="/"):
    return lambda f: f[path].attrs.__setitem__(name, value)


def delete_attribute(name, path="/"):
    return lambda f: f[path].attrs.__delitem__(name)


def delete(path):
    return lambda f: f.__delitem__(path)


def string_list(*names):
    import h5py
    return np.array(names, dtype=h5py.string_dtype())


def malformed_cases(arm, other_arm):
    """(name, edit, the object the error must name). Two arms: `arm` is damaged, `other_arm` is not."""
    import h5py
    a = f"/arms/{arm}"

    def dataset_for_group(f):
        del f[a]
        f[a] = [1.0]

    def external_link(f):
        del f[f"{a}/time_h"]
        f[f"{a}/time_h"] = h5py.ExternalLink("no_such_file.h5", "/time_h")

    def dangling_link(f):
        del f[f"{a}/doses/time_h"]
        f[f"{a}/doses/time_h"] = h5py.SoftLink("/no/such/object")

    def external_storage_gone(f):
        path = f"{a}/summary/madrs/p50"
        shape, dtype = f[path].shape, f[path].dtype
        del f[path]
        storage = Path(f.filename).with_suffix(".raw")
        f.create_dataset(path, shape=shape, dtype=dtype, external=[(str(storage), 0, h5py.h5f.UNLIMITED)])

    def no_subjects(f):
        f.attrs["subjects_per_arm"] = 0
        for name in (arm, other_arm):
            for group in ("subjects", "metrics", "trajectories"):
                for column in list(f[f"/arms/{name}/{group}"]):
                    replaced(f"/arms/{name}/{group}/{column}", lambda values: values[:0])(f)

    def summary_as_dataset(f):
        del f[f"{a}/summary/madrs"]
        f[f"{a}/summary/madrs"] = [1.0]

    def no_summaries_in_one_arm(f):
        for name in list(f[f"{a}/summary"]):
            del f[f"{a}/summary/{name}"]

    def overrides(parameters=("CL", "V1"), values=(60.0, 120.0), units=("L/h", "L")):
        """The arm's model_parameter* attributes, valid unless a case passes one of another kind."""
        def edit(f):
            attributes = f[a].attrs
            attributes["model_parameters"] = string_list(*parameters) if isinstance(parameters, tuple) else parameters
            attributes["model_parameter_values"] = np.array(values) if isinstance(values, tuple) else values
            attributes["model_parameter_units"] = string_list(*units) if isinstance(units, tuple) else units
        return edit

    first_row = (0, 0)  # of a [N x width] dataset
    return [
        # Root attributes
        ("layout_version_missing", delete_attribute("layout_version"), "/ attribute layout_version"),
        ("layout_version_text", set_attribute("layout_version", "3"), "/ attribute layout_version"),
        ("layout_version_fraction", set_attribute("layout_version", 3.5), "/ attribute layout_version"),
        ("layout_version_vector", set_attribute("layout_version", np.array([3, 3])), "/ attribute layout_version"),
        ("arms_missing", delete_attribute("arms"), "/ attribute arms"),
        ("arms_empty", set_attribute("arms", string_list()), "/ attribute arms"),
        ("arms_a_single_text", set_attribute("arms", arm), "/ attribute arms"),
        ("arms_numbers", set_attribute("arms", np.array([1, 2])), "/ attribute arms"),
        ("arms_repeated", set_attribute("arms", string_list(arm, arm)), "/ attribute arms"),
        ("arms_empty_name", set_attribute("arms", string_list("")), "/ attribute arms"),
        ("arms_name_with_slash", set_attribute("arms", string_list(f"{arm}/doses")), "/ attribute arms"),
        ("arm_without_group", set_attribute("arms", string_list(arm, "no_such_arm")), "/arms/no_such_arm"),
        ("arm_group_is_a_dataset", dataset_for_group, a),
        ("arms_group_missing", delete("/arms"), a),
        ("subjects_per_arm_missing", delete_attribute("subjects_per_arm"), "/ attribute subjects_per_arm"),
        ("subjects_per_arm_text", set_attribute("subjects_per_arm", "40"), "/ attribute subjects_per_arm"),
        ("subjects_per_arm_negative", set_attribute("subjects_per_arm", -1), "/ attribute subjects_per_arm"),
        ("subjects_per_arm_vector", set_attribute("subjects_per_arm", np.array([40, 40])), "/ attribute subjects_per_arm"),
        ("subjects_per_arm_not_the_rows", lambda f: f.attrs.__setitem__("subjects_per_arm", f.attrs["subjects_per_arm"] + 1),
         f"{a}/metrics/status"),
        ("no_subjects", no_subjects, "/ attribute subjects_per_arm"),
        ("scenario_name_missing", delete_attribute("scenario_name"), "/ attribute scenario_name"),
        ("scenario_name_a_number", set_attribute("scenario_name", 5), "/ attribute scenario_name"),
        ("source_revision_missing", delete_attribute("source_revision"), "/ attribute source_revision"),
        # The arm's model: its card and the parameter values it overrides
        ("arm_model_a_number", set_attribute("model", 5, a), f"{a} attribute model"),
        ("arm_model_a_list", set_attribute("model", string_list("ketamine_venous", "x"), a), f"{a} attribute model"),
        ("model_parameter_values_shorter", overrides(values=(60.0,)), f"{a} attribute model_parameter_values"),
        ("model_parameter_values_longer", overrides(values=(60.0, 120.0, 1.0)), f"{a} attribute model_parameter_values"),
        ("model_parameter_units_shorter", overrides(units=("L/h",)), f"{a} attribute model_parameter_units"),
        ("model_parameters_numbers", overrides(parameters=np.array([1.0, 2.0])), f"{a} attribute model_parameters"),
        ("model_parameters_a_single_text", overrides(parameters="CL"), f"{a} attribute model_parameters"),
        ("model_parameter_values_text", overrides(values=string_list("60", "120")), f"{a} attribute model_parameter_values"),
        ("model_parameter_values_a_single_number", overrides(values=60.0), f"{a} attribute model_parameter_values"),
        ("model_parameter_values_a_matrix", overrides(values=np.array([[60.0, 120.0]])),
         f"{a} attribute model_parameter_values"),
        ("model_parameter_values_nan", overrides(values=(60.0, np.nan)), f"{a} attribute model_parameter_values"),
        ("model_parameter_units_numbers", overrides(units=np.array([1, 2])), f"{a} attribute model_parameter_units"),
        ("model_parameter_units_missing", delete_attribute("model_parameter_units", a), f"{a} attribute model_parameter_units"),
        ("model_parameters_missing", delete_attribute("model_parameters", a), f"{a} attribute model_parameters"),
        # The time grid
        ("time_h_missing", delete(f"{a}/time_h"), f"{a}/time_h"),
        ("time_h_text", replaced(f"{a}/time_h", texts), f"{a}/time_h"),
        ("time_h_scalar", replaced(f"{a}/time_h", lambda values: values[0]), f"{a}/time_h"),
        ("time_h_a_matrix", replaced(f"{a}/time_h", lambda values: values.reshape(-1, 1)), f"{a}/time_h"),
        ("time_h_nan", replaced(f"{a}/time_h", with_value(5, np.nan)), f"{a}/time_h"),
        ("time_h_inf", replaced(f"{a}/time_h", with_value(-1, np.inf)), f"{a}/time_h"),
        ("time_h_negative", replaced(f"{a}/time_h", with_value(0, -5.0)), f"{a}/time_h"),
        ("time_h_decreasing", replaced(f"{a}/time_h", lambda values: values[::-1].copy()), f"{a}/time_h"),
        ("time_h_external_link_to_a_missing_file", external_link, f"{a}/time_h"),
        ("time_h_shorter_than_the_summaries", replaced(f"{a}/time_h", lambda values: values[:-1]),
         f"{a}/summary/"),
        # Doses
        ("doses_time_h_missing", delete(f"{a}/doses/time_h"), f"{a}/doses/time_h"),
        ("doses_time_h_nan", replaced(f"{a}/doses/time_h", with_value(0, np.nan)), f"{a}/doses/time_h"),
        ("doses_time_h_negative", replaced(f"{a}/doses/time_h", with_value(0, -24.0)), f"{a}/doses/time_h"),
        ("doses_time_h_text", replaced(f"{a}/doses/time_h", texts), f"{a}/doses/time_h"),
        ("doses_time_h_a_matrix", replaced(f"{a}/doses/time_h", lambda values: values.reshape(-1, 1)), f"{a}/doses/time_h"),
        ("doses_time_h_scalar", replaced(f"{a}/doses/time_h", lambda values: values[0]), f"{a}/doses/time_h"),
        ("doses_time_h_dangling_link", dangling_link, f"{a}/doses/time_h"),
        ("dose_time_h_missing", delete(f"{a}/subjects/dose_time_h"), f"{a}/subjects/dose_time_h"),
        ("dose_time_h_rows", replaced(f"{a}/subjects/dose_time_h", lambda values: values[:-1]), f"{a}/subjects/dose_time_h"),
        ("dose_time_h_rank_3", replaced(f"{a}/subjects/dose_time_h", lambda values: values[..., None]),
         f"{a}/subjects/dose_time_h"),
        ("dose_time_h_scalar", replaced(f"{a}/subjects/dose_time_h", lambda values: values.flat[0]),
         f"{a}/subjects/dose_time_h"),
        ("dose_time_h_text", replaced(f"{a}/subjects/dose_time_h", texts), f"{a}/subjects/dose_time_h"),
        ("dose_time_h_inf", replaced(f"{a}/subjects/dose_time_h", with_value(first_row, np.inf)), f"{a}/subjects/dose_time_h"),
        ("dose_time_h_negative", replaced(f"{a}/subjects/dose_time_h", with_value(first_row, -48.0)),
         f"{a}/subjects/dose_time_h"),
        # Status
        ("status_missing", delete(f"{a}/metrics/status"), f"{a}/metrics/status"),
        ("status_rows", replaced(f"{a}/metrics/status", lambda values: values[:-1]), f"{a}/metrics/status"),
        ("status_scalar", replaced(f"{a}/metrics/status", lambda values: values[0]), f"{a}/metrics/status"),
        ("status_2", replaced(f"{a}/metrics/status", with_value(0, 2)), f"{a}/metrics/status"),
        ("status_nan", replaced(f"{a}/metrics/status", with_value(0, np.nan)), f"{a}/metrics/status"),
        ("status_text", replaced(f"{a}/metrics/status", texts), f"{a}/metrics/status"),
        # Summaries
        ("p50_missing", delete(f"{a}/summary/madrs/p50"), f"{a}/summary/madrs/p50"),
        ("p50_shorter_than_time_h", replaced(f"{a}/summary/madrs/p50", lambda values: values[:-1]),
         f"{a}/summary/madrs/p50"),
        ("p50_text", replaced(f"{a}/summary/madrs/p50", texts), f"{a}/summary/madrs/p50"),
        ("p50_a_matrix", replaced(f"{a}/summary/madrs/p50", lambda values: values.reshape(-1, 1)), f"{a}/summary/madrs/p50"),
        ("p50_scalar", replaced(f"{a}/summary/madrs/p50", lambda values: values[0]), f"{a}/summary/madrs/p50"),
        ("p50_inf", replaced(f"{a}/summary/madrs/p50", with_value(3, np.inf)), f"{a}/summary/madrs/p50"),
        ("p50_external_storage_gone", external_storage_gone, f"{a}/summary/madrs/p50"),
        ("p50_units_missing", delete_attribute("units", f"{a}/summary/madrs/p50"), f"{a}/summary/madrs/p50 attribute units"),
        ("p50_units_a_number", set_attribute("units", 5, f"{a}/summary/madrs/p50"), f"{a}/summary/madrs/p50 attribute units"),
        ("p50_units_differ_between_arms", set_attribute("units", "mg", f"{a}/summary/madrs/p50"),
         f"/arms/{other_arm}/summary/madrs/p50 attribute units"),
        ("summary_a_dataset", summary_as_dataset, f"{a}/summary/madrs"),
        ("summaries_missing_in_one_arm", no_summaries_in_one_arm, f"{a}/summary/"),
        # Relapse
        ("relapse_day_rows", replaced(f"{a}/metrics/relapse_day", lambda values: values[:-1]), f"{a}/metrics/relapse_day"),
        ("relapse_day_a_matrix", replaced(f"{a}/metrics/relapse_day", lambda values: values.reshape(-1, 1)),
         f"{a}/metrics/relapse_day"),
        ("relapse_day_text", replaced(f"{a}/metrics/relapse_day", texts), f"{a}/metrics/relapse_day"),
        ("relapse_day_negative", replaced(f"{a}/metrics/relapse_day", with_value(0, -3.0)), f"{a}/metrics/relapse_day"),
        ("relapse_day_inf", replaced(f"{a}/metrics/relapse_day", with_value(0, np.inf)), f"{a}/metrics/relapse_day"),
        ("relapse_observed_rows", replaced(f"{a}/metrics/relapse_observed", lambda values: values[:-1]),
         f"{a}/metrics/relapse_observed"),
        ("relapse_observed_text", replaced(f"{a}/metrics/relapse_observed", texts), f"{a}/metrics/relapse_observed"),
        ("relapse_observed_2", relapse_observed_at_a_responder(arm, 2.0), f"{a}/metrics/relapse_observed"),
        ("relapse_observed_nan", relapse_observed_at_a_responder(arm, np.nan), f"{a}/metrics/relapse_observed"),
        # Response and remission
        ("response_at_columns", replaced(f"{a}/metrics/response_at", lambda values: values[:, :-1]), f"{a}/metrics/response_at"),
        ("response_at_rows", replaced(f"{a}/metrics/response_at", lambda values: values[:-1]), f"{a}/metrics/response_at"),
        ("response_at_rank_3", replaced(f"{a}/metrics/response_at", lambda values: values[..., None]),
         f"{a}/metrics/response_at"),
        ("response_at_scalar", replaced(f"{a}/metrics/response_at", lambda values: values.flat[0]), f"{a}/metrics/response_at"),
        ("response_at_text", replaced(f"{a}/metrics/response_at", texts), f"{a}/metrics/response_at"),
        ("response_at_2", response_at_a_solved_subject(arm, 2.0), f"{a}/metrics/response_at"),
        ("remission_at_missing", delete(f"{a}/metrics/remission_at"), f"{a}/metrics/remission_at"),
        ("remission_at_columns", replaced(f"{a}/metrics/remission_at", lambda values: values[:, :-1]),
         f"{a}/metrics/remission_at"),
        ("assessments_h_missing", delete(f"{a}/assessments_h"), f"{a}/assessments_h"),
        ("assessments_h_nan", replaced(f"{a}/assessments_h", with_value(0, np.nan)), f"{a}/assessments_h"),
        ("assessments_h_decreasing", replaced(f"{a}/assessments_h", lambda values: values[::-1].copy()), f"{a}/assessments_h"),
        ("assessments_h_repeated", replaced(f"{a}/assessments_h", lambda values: np.repeat(values[:1], values.size)),
         f"{a}/assessments_h"),
        ("assessments_h_a_matrix", replaced(f"{a}/assessments_h", lambda values: values.reshape(-1, 1)), f"{a}/assessments_h"),
        ("assessments_h_scalar", replaced(f"{a}/assessments_h", lambda values: values[0]), f"{a}/assessments_h"),
        ("assessments_h_text", replaced(f"{a}/assessments_h", texts), f"{a}/assessments_h"),
    ]


def relapse_observed_at_a_responder(arm, value):
    """relapse_observed set to `value` for a solved subject with a relapse_day (whose flag is used)."""
    def edit(f):
        metrics = f[f"/arms/{arm}/metrics"]
        row = int(np.flatnonzero((metrics["status"][()] == 0) & np.isfinite(metrics["relapse_day"][()]))[0])
        replaced(f"/arms/{arm}/metrics/relapse_observed", with_value(row, value))(f)
    return edit


def response_at_a_solved_subject(arm, value):
    def edit(f):
        row = int(np.flatnonzero(f[f"/arms/{arm}/metrics/status"][()] == 0)[0])
        replaced(f"/arms/{arm}/metrics/response_at", with_value((row, 0), value))(f)
    return edit


def raw_cases(results):
    """(name, how to make the file, what the message says) for files that are not result files at all."""
    content = Path(results).read_bytes()
    return [
        ("a_text_file", lambda path: path.write_text("ID,TIME,DV\n1,0,0\n"), "cannot open as HDF5"),
        ("an_empty_file", lambda path: path.write_bytes(b""), "cannot open as HDF5"),
        ("truncated_to_its_start", lambda path: path.write_bytes(content[:4096]), "cannot open as HDF5"),
        ("truncated_by_a_tenth", lambda path: path.write_bytes(content[:len(content) * 9 // 10]), "cannot open as HDF5"),
        ("a_folder", lambda path: path.mkdir(), "a folder"),
        ("a_fifo", lambda path: os.mkfifo(path), "not a regular file"),  # opening it would block
        ("a_dangling_symbolic_link", lambda path: path.symlink_to(path.parent / "no_such_target.h5"), "a symbolic link to"),
    ]


def check_refused(name, path, output, what):
    code, message = run_in_process([str(path), "-o", str(output)])
    check("Traceback" not in message, f"{name}: a traceback: {message}")
    check(code == 6 and f"{path}: {what}" in message,
          f"{name}: exit {code}, expected 6 and an error naming '{what}': {message.strip()!r}")
    check(not figures_in(output), f"{name}: written before failing: {figures_in(output)}")
    return code == 6 and "Traceback" not in message and not figures_in(output)


def check_malformed_files(results, work):
    """Every damage of the corpus is an error naming the file and the object, exit 6, before any figure."""
    import h5py
    with h5py.File(results, "r") as f:
        arm, other_arm = (str(name) for name in f.attrs["arms"][:2])
    folder = work / "malformed"
    folder.mkdir()
    for name, edit, what in malformed_cases(arm, other_arm):
        path = edited_copy(results, folder / f"{name}.h5", edit)
        if check_refused(name, path, folder / f"{name}_figures", what):
            os.remove(path)  # the failures stay for a look
    for name, make, what in raw_cases(results):
        path = folder / f"{name}.h5"
        make(path)
        check_refused(name, path, folder / f"{name}_figures", what)


def check_unusual_but_valid_files(results, work):
    """Files the layout allows that used to end in a traceback: an arm without doses (no dose columns),
    doses all missed (NaN), so many assessments that the figure outgrew matplotlib's limit."""
    import h5py
    with h5py.File(results, "r") as f:
        arm = str(f.attrs["arms"][0])
        subjects = int(f.attrs["subjects_per_arm"])
    a = f"/arms/{arm}"

    def no_doses(f):
        for dataset in ("subjects/dose_time_h", "subjects/dose_duration_h", "subjects/dose_amount_mg"):
            replaced(f"{a}/{dataset}", lambda values: values[:, :0])(f)
        for dataset in ("doses/time_h", "doses/duration_h"):
            replaced(f"{a}/{dataset}", lambda values: values[:0])(f)

    def attributes_of_an_earlier_build(f):
        for name in f.attrs["arms"]:
            for attribute in ("model_parameters", "model_parameter_values", "model_parameter_units"):
                del f[f"/arms/{name}"].attrs[attribute]

    def arms_without_a_model(f):
        attributes_of_an_earlier_build(f)
        for name in f.attrs["arms"]:
            del f[f"/arms/{name}"].attrs["model"]

    def many_assessments(f):
        count = 800  # 0.7 in per bar: over 2^16 pixels at 120 dpi
        replaced(f"{a}/assessments_h", lambda values: 24.0 * np.arange(1.0, count + 1.0))(f)
        for name in ("response_at", "remission_at"):
            replaced(f"{a}/metrics/{name}", lambda values: np.tile(values[:, :1], (1, count)))(f)

    cases = [
        ("no_doses", no_doses),
        ("every_dose_missed", replaced(f"{a}/subjects/dose_time_h", lambda values: np.full_like(values, np.nan))),
        ("arm_model_attributes_of_an_earlier_build", attributes_of_an_earlier_build),
        ("arms_without_a_model", arms_without_a_model),
        ("many_assessments", many_assessments),
    ]
    folder = work / "valid"
    folder.mkdir()
    for name, edit in cases:
        path = edited_copy(results, folder / f"{name}.h5", edit)
        output = folder / f"{name}_figures"
        code, message = run_in_process([path, "-o", str(output), *quick(arm)])
        check(code == 0 and len([f for f in figures_in(output) if f.endswith(".png")]) == 3,
              f"{name} ({subjects} subjects): exit {code}, figures {figures_in(output)}: {message.strip()[-600:]!r}")


def check_model_titles(results, work):
    """The title names the model every arm simulated, or each arm's card and parameter values when
    they differ; arms of a file from an earlier build (without the attributes) have the root model."""
    import h5py
    with h5py.File(results, "r") as f:
        first, second = (str(name) for name in f.attrs["arms"][:2])
        card = f[f"/arms/{second}"].attrs["model"]

    def own_model(f):
        attributes = f[f"/arms/{first}"].attrs
        attributes["model"] = "own_card"
        attributes["model_parameters"] = string_list("CL", "F")
        attributes["model_parameter_values"] = np.array([60.0, 0.5])
        attributes["model_parameter_units"] = string_list("L/h", "")

    def earlier_build(f):
        f.attrs["model"] = "root_card"
        for name in (first, second):
            for attribute in ("model", "model_parameters", "model_parameter_values", "model_parameter_units"):
                del f[f"/arms/{name}"].attrs[attribute]

    for name, edit, expected in (
            ("own_model", own_model, f"models: {first} own_card (CL 60 L/h, F 0.5); {second} {card}"),
            ("earlier_build", earlier_build, "model root_card")):
        path = edited_copy(results, work / f"title_{name}.h5", edit)
        title = ketasim_plot.model_title(read(path, [first, second]).arms)
        check(title == expected, f"title of {name}: {title!r}, expected {expected!r}")


def read(path, arms=(), variables=("madrs",)):
    """The plot data of a file, as ketasim plot reads it."""
    return ketasim_plot.read_plot_data(str(path), list(arms), list(variables),
                                       ketasim_plot.LayoutVersions(ketasim_plot.default_layout_versions(), True))


def check_arm_models(results):
    """tests/scenarios/arm_models.yaml: the IV arms show plasma ketamine and the intranasal arm plasma
    esketamine in one panel; the title names each arm's model."""
    data = read(results, variables=())
    panel = data.panels[0] if data.panels else None
    expected = {"iv": "plasma_ketamine_ng_per_ml", "iv_slow_clearance": "plasma_ketamine_ng_per_ml",
                "nasal": "plasma_esketamine_ng_per_ml"}
    check(panel is not None and panel.label == "plasma_esketamine_or_ketamine_ng_per_ml" and panel.datasets == expected,
          f"the dosed drug's panel: {panel}, expected each arm's own plasma trajectory: {expected}")
    title = " ".join(ketasim_plot.model_title(data.arms).split())  # wrapped to the figure's width
    expected = ("models: iv ketamine_venous (V1 120 L); iv_slow_clearance ketamine_venous (V1 120 L, CL 60 L/h); "
                "nasal esketamine_intranasal")
    check(title == expected, f"title: {title!r}, expected {expected!r}")


def quick(arm):
    """Options for three figures that draw quickly: one arm, one trajectory."""
    return ["--arms", arm, "--variables", "madrs"]


# ---------------------------------------------------------------------------------------------
# All three figures or none

def check_all_or_nothing(results, work):
    """A figure that cannot be written leaves the folder as it was: the previous figures untouched,
    no temporary left."""
    import h5py
    with h5py.File(results, "r") as f:
        stem, arm = str(f.attrs["scenario_name"]), str(f.attrs["arms"][0])

    def previous_figures(folder):
        folder.mkdir()
        for kind in FIGURES:
            (folder / f"{stem}_{kind}.png").write_bytes(b"previous " + kind.encode())

    def untouched(folder, what, planted):
        for kind in FIGURES:
            path = folder / f"{stem}_{kind}.png"
            if path != planted:
                check(path.is_file() and path.read_bytes() == b"previous " + kind.encode(), f"{what}: {path.name} replaced")
        extra = [name for name in figures_in(folder) if ".tmp-" in name and folder / name != planted]
        check(not extra, f"{what}: temporaries left: {extra}")

    # The last figure's name taken by a folder: found before anything is drawn.
    folder = work / "target_is_a_folder"
    previous_figures(folder)
    taken = folder / f"{stem}_outcomes.png"
    taken.unlink()
    taken.mkdir()
    code, message = run_in_process([results, "-o", str(folder), *quick(arm)])
    check(code == 6 and f"{taken}" in message and "Traceback" not in message,
          f"a figure's name taken by a folder: exit {code}, {message.strip()!r}")
    untouched(folder, "a figure's name taken by a folder", taken)

    # The last figure's temporary cannot be created (its name taken by a folder): the first two are
    # written to their temporaries, then removed; none is renamed.
    folder = work / "temporary_cannot_be_written"
    previous_figures(folder)
    blocked = folder / f"{stem}_outcomes.png.tmp-{os.getpid()}"
    blocked.mkdir()
    code, message = run_in_process([results, "-o", str(folder), *quick(arm)])
    check(code == 6 and f"cannot write {folder / (stem + '_outcomes.png')}" in message and "Traceback" not in message,
          f"a temporary that cannot be written: exit {code}, {message.strip()[-600:]!r}")
    untouched(folder, "a temporary that cannot be written", blocked)

    # SIGTERM while the second figure is drawn, and while the second is written: exit 130, the
    # folder as it was. In a child process, whose signal handling is the script's own.
    for when, hook in (("drawing", "matplotlib.figure.Figure.savefig"), ("writing", "os.fsync")):
        folder = work / f"sigterm_while_{when}"
        previous_figures(folder)
        code, message = run_with_sigterm_at_second_call(hook, [results, "-o", str(folder), *quick(arm)])
        check(code == 130 and "Traceback" not in message, f"SIGTERM while {when}: exit {code}, {message.strip()[-600:]!r}")
        untouched(folder, f"SIGTERM while {when}", None)


SIGTERM_CHILD = """
import importlib, os, signal, sys
sys.path.insert(0, sys.argv[1])
import ketasim_plot
module_name, _, attribute = sys.argv[2].rpartition(".")
owner = importlib.import_module(module_name) if module_name == "os" else ketasim_plot.matplotlib.figure.Figure
original, calls = getattr(owner, attribute), []
def hooked(*arguments, **options):
    calls.append(1)
    if len(calls) == 2:
        os.kill(os.getpid(), signal.SIGTERM)
    return original(*arguments, **options)
setattr(owner, attribute, hooked)
sys.exit(ketasim_plot.main(sys.argv[3:]))
"""


def run_with_sigterm_at_second_call(hook, arguments):
    process = subprocess.run([sys.executable, "-c", SIGTERM_CHILD, str(TOOLS), hook, *arguments],
                             capture_output=True, text=True)
    return process.returncode, process.stderr


# ---------------------------------------------------------------------------------------------

def check_cli_errors(ketasim, results, work):
    """Through `ketasim plot`, as a user runs it."""
    import h5py
    with h5py.File(results, "r") as f:
        arm = str(f.attrs["arms"][0])

    code, message = run_plot(ketasim, str(work / "no_such_file.h5"), str(work / "missing_file"))
    check(code == 6 and "no_such_file.h5: no such file" in message, f"missing file: exit {code}, {message!r}")
    check(not (work / "missing_file").exists(), "missing file: output folder created")

    broken = edited_copy(results, work / "no_doses.h5", lambda f: f.__delitem__(f"arms/{arm}/doses/time_h"))
    code, message = run_plot(ketasim, broken, str(work / "missing_dataset"))
    check(code == 6 and f"no_doses.h5: /arms/{arm}/doses/time_h: dataset missing" in message,
          f"missing dataset: exit {code}, {message!r}")
    check(not figures_in(work / "missing_dataset"), "missing dataset: a figure was written")

    broken = edited_copy(results, work / "no_observed.h5", lambda f: f.__delitem__(f"arms/{arm}/metrics/relapse_observed"))
    code, message = run_plot(ketasim, broken, str(work / "missing_metric"))
    check(code == 6 and f"/arms/{arm}/metrics/relapse_observed: dataset missing" in message,
          f"missing relapse_observed: exit {code}, {message!r}")
    check(not figures_in(work / "missing_metric"), "missing relapse_observed: a figure was written")

    broken = edited_copy(results, work / "status_rows.h5", replaced(f"/arms/{arm}/metrics/status", lambda v: v[:-1]))
    code, message = run_plot(ketasim, broken, str(work / "status_rows"))
    check(code == 6 and f"/arms/{arm}/metrics/status: expected [" in message and "Traceback" not in message,
          f"status of another length: exit {code}, {message!r}")
    check(not figures_in(work / "status_rows"), "status of another length: a figure was written")

    newer = edited_copy(results, work / "layout3.h5", lambda f: f.attrs.modify("layout_version", 3))
    code, message = run_plot(ketasim, newer, str(work / "layout3"))
    check(code == 0, f"layout_version 3: exit {code}, {message!r}")
    check(len(list((work / "layout3").glob("*.png"))) == 3, "layout_version 3: not three figures")

    # The versions come from ketasim (--layout-versions); the script on its own says it uses its default.
    unknown = edited_copy(results, work / "layout4.h5", lambda f: f.attrs.modify("layout_version", 4))
    code, message = run_plot(ketasim, unknown, str(work / "layout4"))
    check(code == 6 and "layout_version 4 is not supported (this ketasim reads layout versions 2 and 3)" in message,
          f"layout_version 4: exit {code}, {message!r}")
    code, message = run_in_process([unknown, "-o", str(work / "layout4")])
    check(code == 6 and "run without ketasim, this script reads layout versions 2 and 3 by default" in message,
          f"layout_version 4, the script on its own: exit {code}, {message!r}")
    code, message = run_in_process([newer, "-o", str(work / "layout4"), "--layout-versions", "4"])
    check(code == 6 and "layout_version 3 is not supported (this ketasim reads layout versions 4)" in message,
          f"--layout-versions 4 and a file of version 3: exit {code}, {message!r}")
    # The source tree's copy has no ketasim_layout.py beside it: without --layout-versions it says so.
    source_copy = Path(__file__).resolve().parents[1] / "tools" / "ketasim_plot.py"
    process = subprocess.run([sys.executable, str(source_copy), newer, "-o", str(work / "source_copy")],
                             capture_output=True, text=True)
    check(process.returncode == 2 and "no ketasim_layout.py beside this script" in process.stderr
          and "--layout-versions" in process.stderr and "Traceback" not in process.stderr,
          f"the source tree's script without --layout-versions: exit {process.returncode}, {process.stderr!r}")
    check(not (work / "source_copy").exists(), "the source tree's script without --layout-versions: folder created")

    process = subprocess.run([ketasim, "plot", results, "-o", str(work / "arm"), "--arms", "no_such_arm"],
                             capture_output=True, text=True)
    check(process.returncode == 2 and "no arm 'no_such_arm'" in process.stderr,
          f"unknown arm: exit {process.returncode}, {process.stderr!r}")


def check_dose_strip(results, work):
    """Doses the same for every subject need no per-subject histogram; a subject whose doses differ
    (here: its first dose a day later) makes the arm's doses vary."""
    import h5py
    with h5py.File(results, "r") as f:
        arm = str(f.attrs["arms"][0])
        subjects = int(f.attrs["subjects_per_arm"])
        nominal = f[f"arms/{arm}/doses/time_h"][()]

    def given_doses(path):
        reader = ketasim_plot.ResultReader(str(path))
        try:
            return ketasim_plot.read_given_doses(reader, arm, subjects, 3, nominal, rows_per_read=7)
        finally:
            reader.close()

    check(given_doses(results) is None, "nominal doses: a per-subject histogram")

    def shift_first_dose(f):
        times = f[f"arms/{arm}/subjects/dose_time_h"]
        row = times[0, :]
        row[0] += 24.0
        times[0, :] = row

    given = given_doses(edited_copy(results, work / "varied.h5", shift_first_dose))
    shifted_day = int((nominal[0] + 24.0) // 24.0)
    if check(given is not None, "a shifted dose: the doses do not vary"):
        check(given.bin_days == 1 and given.counts[shifted_day] >= 1, f"a shifted dose: not counted on day {shifted_day}")
        check(int(given.counts.sum()) == len(nominal) * subjects,
              f"per-subject doses: {int(given.counts.sum())} counted, expected one per dose and subject")

    # A bad value is reported at its row in the file, whichever slab it was read in.
    negative = edited_copy(results, work / "negative_dose_row_20.h5",
                           replaced(f"/arms/{arm}/subjects/dose_time_h", with_value((20, 0), -48.0)))
    try:
        given_doses(negative)
        check(False, "a negative dose time in row 20: accepted")
    except ketasim_plot.PlotError as error:
        check("found -48.0 at index [20, 0]" in str(error), f"a negative dose time in row 20: {error}")


def check_errors(ketasim, results, workdir):
    work = Path(workdir)
    check_cli_errors(ketasim, results, work)
    check_dose_strip(results, work)
    check_malformed_files(results, work)
    check_unusual_but_valid_files(results, work)
    check_model_titles(results, work)
    check_all_or_nothing(results, work)


def main(argv):
    if argv[:1] == ["kaplan-meier"] and len(argv) == 1:
        kaplan_meier_cases()
    elif argv[:1] == ["figures"] and len(argv) == 4:
        check_figures(*argv[1:])
    elif argv[:1] == ["errors"] and len(argv) == 4:
        check_errors(*argv[1:])
    elif argv[:1] == ["arm-models"] and len(argv) == 2:
        check_arm_models(argv[1])
    else:
        print(__doc__, file=sys.stderr)
        return 2
    for failure in failures:
        print(f"FAILED: {failure}", file=sys.stderr)
    print(f"{argv[0]}: {'FAILED' if failures else 'passed'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
