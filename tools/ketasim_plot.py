#!/usr/bin/env python3
"""Figures from a ketasim result file (docs/hdf5-layout.md): `ketasim plot` runs this script.

    /usr/bin/python3 share/ketasim/ketasim_plot.py results.h5 [-o DIR] [--format png|svg]
                                                   [--arms A,B] [--variables NAME,NAME]
                                                   [--layout-versions 2,3]

writes three figures into DIR, named after the scenario:

  <scenario>_trajectories.<format>  median and 5th-95th percentile band over time, per arm, of the
                                    dosed drug's plasma concentration, dissociation and MADRS, read
                                    from the stored summaries (never the [N x T] matrices);
  <scenario>_relapse.<format>       Kaplan-Meier curves of the time to relapse of the responders
                                    at the end of treatment, per arm;
  <scenario>_outcomes.<format>      response and remission rates per arm at each assessment, with
                                    95% Wilson intervals.

In three steps, so that a bad file or a failure never leaves some figures new and others old:
everything the figures need is read from the file and checked (types, shapes, values) into plain
arrays, and the file is closed; then every figure is drawn in memory; only then are they written,
each to a temporary name in DIR, and renamed into place once all are written.

Without --layout-versions the script reads the layout versions of the ketasim it comes with, from
ketasim_layout.py beside it: CMake writes that file next to the copies of this script in share/ketasim
of the build folder and of the installation. The source tree's tools/ketasim_plot.py has none beside
it and needs --layout-versions.

Exit codes follow ketasim's (docs/cli.md): 2 command-line misuse (unknown arm or variable), 6 a file
that cannot be read or used (missing, not HDF5, a dataset or attribute missing or of the wrong type,
shape or values, an unsupported layout version, missing Python modules) or a figure that cannot be
written; 130 interrupted. Needs numpy, h5py and matplotlib: on Debian `apt-get install python3-h5py
python3-matplotlib`, then run it with /usr/bin/python3.
"""

import argparse
import io
import math
import os
import re
import signal
import sys
import textwrap
from dataclasses import dataclass, field

EXIT_USAGE = 2
EXIT_IO = 6
EXIT_INTERRUPTED = 130
DEBIAN_PYTHON = "/usr/bin/python3"
MISSING_MODULES_HINT = ("needs the Python modules numpy, h5py and matplotlib; on Debian: "
                        "apt-get install python3-h5py python3-matplotlib, then run with /usr/bin/python3")

try:
    import numpy as np
    import h5py
    import matplotlib
    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch, Rectangle
except ImportError as missing:
    # Run by an interpreter without the modules (e.g. a pyenv python3 first on PATH): Debian's may
    # have them. Try it once, then give up with what to install.
    if __name__ == "__main__" and os.path.realpath(sys.executable) != os.path.realpath(DEBIAN_PYTHON) \
            and os.access(DEBIAN_PYTHON, os.X_OK) and not os.environ.get("KETASIM_PLOT_REEXEC"):
        os.environ["KETASIM_PLOT_REEXEC"] = "1"
        os.execv(DEBIAN_PYTHON, [DEBIAN_PYTHON, os.path.abspath(__file__)] + sys.argv[1:])
    sys.stderr.write(f"ketasim plot: error: {sys.executable}: {missing}: {MISSING_MODULES_HINT}\n")
    sys.exit(EXIT_IO)

FIRST_LAYOUT_WITH_SUBJECT_DOSES = 3  # subjects/dose_time_h
HOURS_PER_DAY = 24.0  # the file's times are in hours, the figures' in days
QUANTILES = ("p05", "p50", "p95")
DEFAULT_VARIABLES = ("dissociation_score", "madrs")  # after the dosed drug's plasma concentration
PROVENANCE = ("scenario_name", "model", "ketasim_version", "source_revision")
# The parameter values an arm's model overrides in its card: written together, of one length.
MODEL_PARAMETER_ATTRIBUTES = ("model_parameters", "model_parameter_values", "model_parameter_units")
WILSON_Z = 1.959963984540054  # two-sided 95%
FIGURE_DPI = 120
# Figure sizes grow with the numbers of arms, variables and assessments; matplotlib refuses images
# of 2^16 pixels or more a side, and memory grows with the area. 100 in is 12,000 pixels at 120 dpi.
MAX_FIGURE_INCHES = 100.0
MAX_ASSESSMENT_LABELS = 60  # beyond, every k-th assessment is labelled
MAX_DOSE_STRIP_BINS = 2000  # one bin per day up to 2000 days, then wider bins
ROWS_PER_READ = 65536  # subjects/dose_time_h is read in slabs of rows: it may hold millions of subjects


class PlotError(Exception):
    """An error with the process exit code it maps to (ketasim's codes)."""

    def __init__(self, message, exit_code=EXIT_IO):
        super().__init__(message)
        self.exit_code = exit_code


class Interrupted(Exception):
    """SIGTERM, raised where the script is, so that its temporary files are removed on the way out."""


def note(message):
    print(f"ketasim plot: note: {message}", file=sys.stderr)


# ---------------------------------------------------------------------------------------------
# Statistics

@dataclass
class KaplanMeier:
    """The Kaplan-Meier estimate: S(t) drops to survival[k] at times[k] (event times only)."""
    times: "np.ndarray"     # distinct event times, increasing
    survival: "np.ndarray"  # S just after each event time
    at_risk: "np.ndarray"   # subjects at risk just before each event time
    events: "np.ndarray"    # events at each event time
    median: float           # R's survfit convention; NaN if S never reaches 0.5


def kaplan_meier(time, event):
    """Kaplan-Meier estimate of the survival function, as engine/ketasim/analysis/statistics.cpp.

    Ties: at a time with both events and censorings, the events come first (the censored subjects
    are still at risk). Median as R's survfit: the first time S(t) < 0.5; if S(t) equals 0.5
    exactly over an interval, the midpoint between the time it reached 0.5 and the next event time
    (the time it reached 0.5 if there is no later event)."""
    time = np.asarray(time, dtype=float)
    event = np.asarray(event, dtype=bool)
    if time.shape != event.shape or time.ndim != 1:
        raise ValueError("kaplan_meier: times and events must be 1-D arrays of the same length")
    if not np.all(np.isfinite(time)):
        raise ValueError("kaplan_meier: times must be finite")
    order = np.argsort(time, kind="stable")
    distinct, first, leaving = np.unique(time[order], return_index=True, return_counts=True)
    events_at = np.add.reduceat(event[order].astype(np.int64), first) if time.size else np.zeros(0, np.int64)
    # Everyone with a time >= t is at risk at t: the censored of a tied time leave after its events.
    at_risk = time.size - np.concatenate(([0], np.cumsum(leaving)[:-1]))
    has_event = events_at > 0
    survival = np.cumprod(1.0 - events_at[has_event] / at_risk[has_event])
    result = KaplanMeier(times=distinct[has_event], survival=survival, at_risk=at_risk[has_event],
                         events=events_at[has_event], median=math.nan)
    result.median = survival_median(result.times, result.survival)
    return result


def survival_median(times, survival, tolerance=1e-12):
    for k, s in enumerate(survival):
        if s < 0.5 - tolerance:
            return float(times[k])
        if abs(s - 0.5) <= tolerance:
            return float(0.5 * (times[k] + times[k + 1])) if k + 1 < len(times) else float(times[k])
    return math.nan


def survival_at(km, t):
    """S(t) of a Kaplan-Meier estimate (right-continuous: an event at t counts)."""
    steps = np.concatenate(([1.0], km.survival))
    return steps[np.searchsorted(km.times, t, side="right")]


def wilson_interval(successes, n, z=WILSON_Z):
    """95% Wilson score interval of a proportion; NaN where n == 0."""
    successes = np.asarray(successes, dtype=float)
    n = np.asarray(n, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = successes / n
        denominator = 1.0 + z * z / n
        centre = (p + z * z / (2.0 * n)) / denominator
        half_width = z / denominator * np.sqrt(p * (1.0 - p) / n + z * z / (4.0 * n * n))
    return centre - half_width, centre + half_width


# ---------------------------------------------------------------------------------------------
# Reading the result file: every problem of the file is a PlotError naming the file, the object
# and what was expected, never an exception from h5py or numpy.

# What h5py raises for an object or attribute it cannot open or read (a damaged file, a link that
# leads nowhere, external storage that is gone, a type numpy has no equivalent for).
HDF5_ERRORS = (OSError, KeyError, ValueError, TypeError, RuntimeError)


def shape_text(shape):
    return "a scalar" if len(shape) == 0 else "[" + " x ".join(str(size) for size in shape) + "]"


def value_text(value):
    text = repr(value.item() if isinstance(value, np.generic) else value)
    return text if len(text) <= 60 else text[:57] + "..."


def type_text(dtype):
    if h5py.check_string_dtype(dtype) is not None or dtype.kind in "SUO":
        return "text"
    return {"b": "booleans", "V": "compound or opaque values"}.get(dtype.kind, f"values of type {dtype}")


def reason(error):
    """h5py's message without the quotes a KeyError adds."""
    return str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)


def attribute_text(value):
    """An attribute's value in words, for a message: `a single 'CL'`, `[2] of text`."""
    if np.ndim(value) == 0:
        return f"a single {value_text(decoded(value))}"
    return f"{shape_text(np.shape(value))} of {type_text(np.asarray(value).dtype)}"


def decoded(value):
    return value.decode("utf-8", errors="replace") if isinstance(value, (bytes, np.bytes_)) else value


class ResultReader:
    """One result file, open for reading: attributes and datasets as plain Python and numpy values."""

    def __init__(self, path):
        self.path = path
        if not os.path.lexists(path):
            raise PlotError(f"{path}: no such file")
        if os.path.islink(path) and not os.path.exists(path):
            raise PlotError(f"{path}: a symbolic link to {os.readlink(path)}, which does not exist")
        if not os.path.isfile(path):
            kind = "a folder" if os.path.isdir(path) else "not a regular file"
            raise PlotError(f"{path}: {kind}, expected a ketasim result file (HDF5)")
        try:
            self.file = h5py.File(path, "r")
        except HDF5_ERRORS as error:
            raise PlotError(f"{path}: cannot open as HDF5 ({reason(error)})") from None

    def close(self):
        self.file.close()

    def fail(self, where, problem):
        raise PlotError(f"{self.path}: {where}: {problem}")

    def get(self, path):
        """The group or dataset at `path`, None if there is none; a link that cannot be followed is an error."""
        link = None
        try:
            link = self.file.get(path, getlink=True)
            return None if link is None else self.file[path]
        except HDF5_ERRORS as error:
            target = ""
            if isinstance(link, h5py.ExternalLink):
                target = f" (a link to {link.path} in the file {link.filename})"
            elif isinstance(link, h5py.SoftLink):
                target = f" (a link to {link.path})"
            self.fail(path, f"cannot open{target}: {reason(error)}")

    def has(self, path):
        return self.get(path) is not None

    def group(self, path):
        node = self.get(path)
        if not isinstance(node, h5py.Group):
            self.fail(path, "group missing" if node is None else "expected a group, found a dataset")
        return node

    def names_in(self, path):
        """Names in the group at `path` (sorted), none if there is no such group."""
        node = self.get(path)
        return sorted(node.keys()) if isinstance(node, h5py.Group) else []

    def dataset(self, path):
        node = self.get(path)
        if not isinstance(node, h5py.Dataset):
            self.fail(path, "dataset missing" if node is None else "expected a dataset, found a group")
        return node

    # Attributes

    def attribute(self, path, name, required=True):
        """The attribute's value; None if it is missing and not `required`."""
        where = f"{path} attribute {name}"
        node = self.file if path == "/" else self.get(path)
        try:
            if node is None or name not in node.attrs:
                return self.fail(where, "missing") if required else None
            return node.attrs[name]
        except HDF5_ERRORS as error:
            self.fail(where, f"cannot read: {reason(error)}")

    def has_attribute(self, path, name):
        return self.attribute(path, name, required=False) is not None

    def integer_attribute(self, path, name):
        value = self.attribute(path, name)
        kind = np.asarray(value).dtype.kind
        if np.ndim(value) != 0 or kind not in "iuf" or not float(value).is_integer():
            found = shape_text(np.shape(value)) if np.ndim(value) else value_text(value)
            self.fail(f"{path} attribute {name}", f"expected a whole number, found {found}")
        return int(value)

    def text_attribute(self, path, name):
        value = decoded(self.attribute(path, name))
        if not isinstance(value, str):
            found = value_text(value) if np.ndim(value) == 0 else attribute_text(value)
            self.fail(f"{path} attribute {name}", f"expected text, found {found}")
        return value

    def text_list_attribute(self, path, name):
        value = self.attribute(path, name)
        items = [decoded(item) for item in np.asarray(value).ravel()] if np.ndim(value) == 1 else None
        if items is None or not all(isinstance(item, str) for item in items):
            self.fail(f"{path} attribute {name}", f"expected a list of text, found {attribute_text(value)}")
        return items

    def number_list_attribute(self, path, name):
        value = self.attribute(path, name)
        kind = np.asarray(value).dtype.kind
        if np.ndim(value) != 1 or kind not in "iuf":
            self.fail(f"{path} attribute {name}", f"expected a list of numbers, found {attribute_text(value)}")
        return np.asarray(value, dtype=np.float64)

    # Datasets of numbers

    def numbers(self, path, shapes, expected):
        """The dataset at `path` as float64. `shapes` is a list of accepted shapes, None standing for
        any size; `expected` says in words what they are, for the message."""
        dataset = self.dataset(path)
        if dataset.dtype.kind not in "iuf":
            self.fail(path, f"expected numbers, found {type_text(dataset.dtype)}")
        if not any(fits(dataset.shape, shape) for shape in shapes):
            self.fail(path, f"expected {expected}, found {shape_text(dataset.shape)}")
        return self.read_rows(dataset, path, slice(None))

    def read_rows(self, dataset, path, rows):
        try:
            return np.asarray(dataset[rows] if dataset.ndim else dataset[()], dtype=np.float64)
        except HDF5_ERRORS as error:
            self.fail(path, f"cannot read: {reason(error)}")

    def vector(self, path, length=None, of=""):
        """A [length] dataset (any length if None); `of` names what the length is, for the message."""
        expected = "a list of numbers [any length]" if length is None else f"[{length}] ({of})"
        return self.numbers(path, [(length,)], expected)

    def per_subject(self, path, subjects, width, of):
        """A [N] or [N x width] dataset as a [N x width] array (the layout stores width 1 as [N])."""
        shapes = [(subjects, width)] + ([(subjects,)] if width == 1 else [])
        expected = f"[{subjects}] or [{subjects} x 1]" if width == 1 else f"[{subjects} x {width}]"
        values = self.numbers(path, shapes, f"{expected} (subjects_per_arm x {of})")
        return values.reshape(subjects, width)

    def require(self, path, values, valid, expected, first_row=0):
        """Fails naming the first element of `values` where `valid` is false (`values` being the rows
        of the dataset from `first_row` on)."""
        bad = np.argwhere(~valid)
        if bad.size:
            index = [int(i) for i in bad[0]]
            index[0] += first_row
            where = index[0] if len(index) == 1 else index
            more = f" ({len(bad)} such values)" if len(bad) > 1 else ""
            self.fail(path, f"expected {expected}, found {value_text(values[tuple(bad[0])])} at index {where}{more}")


def fits(shape, accepted):
    return len(shape) == len(accepted) and all(want is None or size == want for size, want in zip(shape, accepted))


def check_times(reader, path, times, what):
    """Finite, not negative and strictly increasing: a time grid or list of assessments."""
    reader.require(path, times, np.isfinite(times), f"finite {what}")
    reader.require(path, times, times >= 0.0, f"{what} of 0 h or later")
    steps = np.diff(times)
    if np.any(steps <= 0):
        k = int(np.argmax(steps <= 0)) + 1
        reader.fail(path, f"expected strictly increasing {what}, found {value_text(times[k])} after "
                          f"{value_text(times[k - 1])} at index {k}")


def is_flag(values):
    return (values == 0) | (values == 1)


# ---------------------------------------------------------------------------------------------
# What the figures need, read and checked before any is drawn

@dataclass
class Band:
    """A trajectory's stored quantiles over an arm's time grid."""
    p05: "np.ndarray"
    p50: "np.ndarray"
    p95: "np.ndarray"


@dataclass
class GivenDoses:
    """Doses given to the subjects of an arm, counted in bins of `bin_days` days from day 0."""
    bin_days: int
    counts: "np.ndarray"


@dataclass(frozen=True)
class ArmModel:
    """The model an arm simulated: its card and the parameter values it overrides in it."""
    card: str
    overrides: tuple  # (name, value, units) in the file's order; units "" when dimensionless

    def __str__(self):
        """E.g. `ketamine_venous (CL 60 L/h)`."""
        values = ", ".join(f"{name} {value:g}" + (f" {units}" if units else "") for name, value, units in self.overrides)
        return f"{self.card} ({values})" if values else self.card


@dataclass(frozen=True)
class Panel:
    """One trajectory panel: the summary shown for each arm. The same trajectory in every arm,
    except the dosed drug's plasma concentration when arms simulate cards of different drugs."""
    label: str
    datasets: dict  # arm name -> trajectory name

    @staticmethod
    def of(name, arms):
        return Panel(name, {arm: name for arm in arms})


@dataclass
class ArmData:
    name: str
    model: ArmModel
    time_days: "np.ndarray"
    failed: int
    nominal_dose_days: "np.ndarray"
    given_doses: "GivenDoses | None"  # None when every subject got the nominal doses
    bands: dict = field(default_factory=dict)  # panel label -> Band
    relapse_time: "np.ndarray | None" = None   # days from the last session, responders only
    relapse_event: "np.ndarray | None" = None
    assessment_days: "np.ndarray | None" = None
    outcomes: dict = field(default_factory=dict)  # response_at / remission_at -> (successes, assessed)


@dataclass
class PlotData:
    path: str
    provenance: dict
    subjects_per_arm: int
    arms: list          # ArmData in scenario order
    panels: list        # Panel, each with a Band in every arm
    units: dict         # panel label -> units
    figures: list       # the kinds to draw, among "trajectories", "relapse", "outcomes"


def default_layout_versions():
    """The layout versions read when ketasim does not pass them (--layout-versions): those of the ketasim
    this script comes with, from ketasim::kOldestReadableLayoutVersion to kLayoutVersion. CMake writes
    them from engine/ketasim/base/version.hpp.in, where the numbers are written, into ketasim_layout.py
    beside the copies of this script it makes (the build folder's share/ketasim, the installed one)."""
    try:
        import ketasim_layout
    except ImportError:
        raise PlotError("no ketasim_layout.py beside this script to say which layout versions to read (the "
                        "copy in tools/ of the source tree has none): pass --layout-versions, or run the copy in "
                        "share/ketasim of the build folder or of the installation", EXIT_USAGE) from None
    return tuple(range(ketasim_layout.OLDEST_READABLE_LAYOUT_VERSION, ketasim_layout.LAYOUT_VERSION + 1))


@dataclass
class LayoutVersions:
    """The layout versions to read, and whether ketasim passed them or they are the script's default."""
    versions: tuple
    from_ketasim: bool

    def __str__(self):
        listed = ", ".join(map(str, self.versions[:-1])) + " and " if len(self.versions) > 1 else ""
        listed += str(self.versions[-1])
        return (f"this ketasim reads layout versions {listed}" if self.from_ketasim else
                f"run without ketasim, this script reads layout versions {listed} by default")


def read_plot_data(path, requested_arms, requested_variables, layout_versions):
    reader = ResultReader(path)
    try:
        return collect_plot_data(reader, requested_arms, requested_variables, layout_versions)
    finally:
        reader.close()


def collect_plot_data(reader, requested_arms, requested_variables, layout_versions):
    version = reader.integer_attribute("/", "layout_version")
    if version not in layout_versions.versions:
        raise PlotError(f"{reader.path}: layout_version {version} is not supported ({layout_versions}); "
                        "use the ketasim that wrote it")
    provenance = {key: reader.text_attribute("/", key) for key in PROVENANCE}
    arm_names = read_arm_names(reader)
    if "shard_index" in reader.file.attrs:
        raise PlotError(f"{reader.path}: one shard of a split run (`ketasim run --shard`), with some of the subjects "
                        "and no summaries; merge the shards first: ketasim merge SHARD_FILES... -o RESULTS.h5")
    subjects = reader.integer_attribute("/", "subjects_per_arm")
    if subjects <= 0:
        reader.fail("/ attribute subjects_per_arm", f"expected at least 1 subject, found {subjects}: nothing to plot")
    arms = choose_arms(reader.path, arm_names, requested_arms)
    panels = choose_panels(reader, arms, requested_variables)
    figures = plan_figures(reader, arms, panels)
    data = [read_arm(reader, arm, subjects, version, provenance["model"], panels, figures) for arm in arms]
    units = {panel.label: read_units(reader, arms, panel) for panel in panels}
    return PlotData(reader.path, provenance, subjects, data, panels, units, figures)


def read_arm_names(reader):
    names = reader.text_list_attribute("/", "arms")
    where = "/ attribute arms"
    if not names:
        reader.fail(where, "the file has no arms (an empty list)")
    for name in names:
        if name in ("", ".") or "/" in name:
            reader.fail(where, f"expected arm names, found {name!r}, which cannot be the name of a group")
        if names.count(name) > 1:
            reader.fail(where, f"arm {name!r} is listed {names.count(name)} times")
        if not isinstance(reader.get(f"/arms/{name}"), h5py.Group):
            reader.fail(f"/arms/{name}", "group missing (the root attribute arms lists it)"
                        if reader.get(f"/arms/{name}") is None else "expected a group, found a dataset")
    return names


def choose_arms(path, arm_names, requested):
    if not requested:
        return list(arm_names)
    unknown = [arm for arm in requested if arm not in arm_names]
    if unknown:
        raise PlotError(f"{path}: no arm {', '.join(map(repr, unknown))} (arms: {', '.join(arm_names)})", EXIT_USAGE)
    return [arm for arm in arm_names if arm in requested]  # scenario order


def present_in(reader, arms, name):
    """Whether `name` is in every arm (True), in none (False); an error if only in some."""
    present = [arm for arm in arms if reader.has(f"/arms/{arm}/{name}")]
    if present and len(present) != len(arms):
        missing = next(arm for arm in arms if arm not in present)
        reader.fail(f"/arms/{missing}/{name}", f"missing (present in arm {present[0]})")
    return bool(present)


def dosed_plasma_variables(reader, arm):
    """The arm's trajectory of the dosed drug's plasma concentration, `plasma_<drug>_ng_per_ml`.

    Metabolites are recognised by their metric `cmax_<metabolite>_ng_per_ml` (the dosed drug's is
    plain `cmax_ng_per_ml`); when that does not settle it, every plasma trajectory is shown."""
    plasma = [name for name in reader.names_in(f"/arms/{arm}/summary") if re.fullmatch(r"plasma_(.+)_ng_per_ml", name)]
    return [name for name in plasma if not reader.has(f"/arms/{arm}/metrics/cmax_" + name[len("plasma_"):])]


def dosed_plasma_panels(reader, arms):
    """The dosed drug's plasma concentration: one panel per trajectory when every arm has the same,
    one panel of each arm's own when arms simulate cards of different drugs."""
    per_arm = {arm: dosed_plasma_variables(reader, arm) for arm in arms}
    names = per_arm[arms[0]]
    if all(per_arm[arm] == names for arm in arms):
        if len(names) > 1:
            note(f"cannot tell the dosed drug's plasma trajectory apart, showing all of: {', '.join(names)}")
        return [Panel.of(name, arms) for name in names]
    if all(len(per_arm[arm]) == 1 for arm in arms):
        drugs = sorted({per_arm[arm][0][len("plasma_"):-len("_ng_per_ml")] for arm in arms})
        return [Panel("plasma_" + "_or_".join(drugs) + "_ng_per_ml", {arm: per_arm[arm][0] for arm in arms})]
    shared = [name for name in names if all(name in per_arm[arm] for arm in arms)]
    note(f"cannot tell each arm's dosed drug's plasma trajectory apart, showing those of every arm: "
         f"{', '.join(shared) or 'none'}")
    return [Panel.of(name, arms) for name in shared]


def choose_panels(reader, arms, requested):
    """Trajectory panels to plot: those requested, or the defaults; those missing are skipped."""
    chosen = []
    wanted = requested
    if not requested:
        chosen = dosed_plasma_panels(reader, arms)
        if not chosen:
            note(f"{reader.path}: no summary plasma_<drug>_ng_per_ml of the dosed drug, skipped")
        wanted = list(DEFAULT_VARIABLES)
    for name in wanted:
        if present_in(reader, arms, f"summary/{name}"):
            chosen.append(Panel.of(name, arms))
        else:
            note(f"{reader.path}: no summary/{name} in the file, skipped")
    if requested and not chosen:
        available = reader.names_in(f"/arms/{arms[0]}/summary")
        raise PlotError(f"{reader.path}: none of the variables {', '.join(requested)} is in the file "
                        f"(summaries: {', '.join(available) or 'none'})", EXIT_USAGE)
    return chosen


def plan_figures(reader, arms, panels):
    """The figures the file has data for; a figure whose data is absent is skipped with a note."""
    figures = []
    if panels:
        figures.append("trajectories")
    else:
        note(f"{reader.path}: no trajectory summaries to show, no trajectories figure")
    if present_in(reader, arms, "metrics/relapse_day"):
        figures.append("relapse")
    else:
        note(f"{reader.path}: no metrics/relapse_day (model without a depression score, or output.metrics "
             "without response), no relapse figure")
    if not present_in(reader, arms, "metrics/response_at"):
        note(f"{reader.path}: no metrics/response_at, no outcomes figure")
    elif sum(reader.dataset(f"/arms/{arm}/assessments_h").size for arm in arms) == 0:
        note(f"{reader.path}: no MADRS assessments, no outcomes figure")
    else:
        figures.append("outcomes")
    if not figures:
        raise PlotError(f"{reader.path}: nothing to plot (no trajectory summaries, relapse or response metrics)")
    return figures


def read_arm(reader, arm, subjects, version, root_model, panels, figures):
    base = f"/arms/{arm}"
    model = read_arm_model(reader, arm, root_model)
    time_h = reader.vector(f"{base}/time_h")
    check_times(reader, f"{base}/time_h", time_h, "times")
    status = reader.vector(f"{base}/metrics/status", subjects, "subjects_per_arm")
    reader.require(f"{base}/metrics/status", status, is_flag(status), "0 (solved) or 1 (failed)")
    solved = status == 0
    nominal = reader.vector(f"{base}/doses/time_h")
    reader.require(f"{base}/doses/time_h", nominal, np.isfinite(nominal) & (nominal >= 0.0), "dose times of 0 h or later")
    data = ArmData(arm, model, time_h / HOURS_PER_DAY, int(np.count_nonzero(~solved)), nominal / HOURS_PER_DAY,
                   read_given_doses(reader, arm, subjects, version, nominal))
    for panel in panels:
        data.bands[panel.label] = read_band(reader, arm, panel.datasets[arm], time_h.size)
    if "relapse" in figures:
        data.relapse_time, data.relapse_event = read_relapse(reader, arm, subjects, solved)
    if "outcomes" in figures:
        read_outcomes(reader, data, subjects, solved)
    return data


def read_arm_model(reader, arm, root_model):
    """The arm's card (attribute `model`) and the parameter values it overrides (`model_parameter*`).
    Files of earlier builds lack the `model_parameter*` attributes (the oldest the arm's `model`
    too): the arm simulated its `model` (the root one if it has none), with values the file does
    not record."""
    path = f"/arms/{arm}"
    card = reader.text_attribute(path, "model") if reader.has_attribute(path, "model") else root_model
    present = [name for name in MODEL_PARAMETER_ATTRIBUTES if reader.has_attribute(path, name)]
    if not present:
        return ArmModel(card, ())
    if len(present) < len(MODEL_PARAMETER_ATTRIBUTES):
        missing = next(name for name in MODEL_PARAMETER_ATTRIBUTES if name not in present)
        reader.fail(f"{path} attribute {missing}", f"missing (the arm has {present[0]}; they are written together)")
    names = reader.text_list_attribute(path, "model_parameters")
    values = reader.number_list_attribute(path, "model_parameter_values")
    units = reader.text_list_attribute(path, "model_parameter_units")
    for attribute, items in (("model_parameter_values", values), ("model_parameter_units", units)):
        if len(items) != len(names):
            reader.fail(f"{path} attribute {attribute}",
                        f"expected [{len(names)}] (the length of model_parameters), found [{len(items)}]")
    reader.require(f"{path} attribute model_parameter_values", values, np.isfinite(values), "finite parameter values")
    return ArmModel(card, tuple(zip(names, (float(value) for value in values), units)))


def read_band(reader, arm, name, times):
    """The stored quantiles: NaN where no subject was solved, but never infinite."""
    reader.group(f"/arms/{arm}/summary/{name}")
    values = []
    for q in QUANTILES:
        path = f"/arms/{arm}/summary/{name}/{q}"
        quantile = reader.vector(path, times, f"the length of /arms/{arm}/time_h")
        reader.require(path, quantile, ~np.isinf(quantile), "finite values or NaN (no solved subject)")
        values.append(quantile)
    return Band(*values)


def read_units(reader, arms, panel):
    """The units of a panel, the same in every arm (they share one axis)."""
    p50 = {arm: f"/arms/{arm}/summary/{panel.datasets[arm]}/p50" for arm in arms}
    units = {arm: reader.text_attribute(p50[arm], "units") for arm in arms}
    first = arms[0]
    for arm in arms[1:]:
        if units[arm] != units[first]:
            reader.fail(f"{p50[arm]} attribute units", f"expected the units of {p50[first]} ({units[first]!r}), "
                                                       f"found {units[arm]!r}")
    return units[first]


def read_given_doses(reader, arm, subjects, version, nominal, rows_per_read=ROWS_PER_READ):
    """The doses given (`subjects/dose_time_h`, layout 3), counted per day, or None when every subject
    was given the arm's nominal doses (`doses/time_h` says it all then). Read in slabs of rows, so a
    file of millions of subjects is never loaded whole: once to check it and see whether the doses
    vary, once more to count them in bins that suit their range."""
    path = f"/arms/{arm}/subjects/dose_time_h"
    if version < FIRST_LAYOUT_WITH_SUBJECT_DOSES and not reader.has(path):
        return None
    dataset = reader.dataset(path)
    if dataset.dtype.kind not in "iuf":
        reader.fail(path, f"expected numbers, found {type_text(dataset.dtype)}")
    if not (fits(dataset.shape, (subjects,)) or fits(dataset.shape, (subjects, None))):
        reader.fail(path, f"expected [{subjects}] or [{subjects} x doses] (subjects_per_arm x most doses), "
                          f"found {shape_text(dataset.shape)}")
    width = dataset.shape[1] if dataset.ndim == 2 else 1
    nominal = np.sort(nominal)
    expected = np.full(width, np.nan)
    expected[:min(width, nominal.size)] = nominal[:width]
    varies, last_day = nominal.size > width, 0.0
    for start in range(0, subjects, rows_per_read):
        slab = reader.read_rows(dataset, path, slice(start, start + rows_per_read))
        slab = slab.reshape(slab.shape[0], width)
        valid = np.isnan(slab) | (np.isfinite(slab) & (slab >= 0.0))
        reader.require(path, slab, valid, "dose times of 0 h or later, or NaN (no dose)", first_row=start)
        same = (slab == expected) | (np.isnan(slab) & np.isnan(expected))
        varies = varies or not bool(np.all(same))
        if np.any(np.isfinite(slab)):
            last_day = max(last_day, float(np.nanmax(slab)) / HOURS_PER_DAY)
    if not varies:
        return None
    bin_days = max(1, math.ceil((last_day + 1.0) / MAX_DOSE_STRIP_BINS))
    counts = np.zeros(int(last_day // bin_days) + 1, dtype=np.int64)
    for start in range(0, subjects, rows_per_read):
        slab = reader.read_rows(dataset, path, slice(start, start + rows_per_read)).ravel()
        days = slab[np.isfinite(slab)] / HOURS_PER_DAY
        counts += np.bincount((days // bin_days).astype(np.int64), minlength=counts.size)[:counts.size]
    return GivenDoses(bin_days, counts)


def read_relapse(reader, arm, subjects, solved):
    """Times (days from the last session) and events of the solved responders at the end of treatment."""
    day_path, observed_path = f"/arms/{arm}/metrics/relapse_day", f"/arms/{arm}/metrics/relapse_observed"
    relapse_day = reader.vector(day_path, subjects, "subjects_per_arm")
    reader.require(day_path, relapse_day, np.isnan(relapse_day) | (np.isfinite(relapse_day) & (relapse_day >= 0.0)),
                   "days of 0 or more, or NaN (not a responder)")
    observed = reader.vector(observed_path, subjects, "subjects_per_arm")
    keep = solved & np.isfinite(relapse_day)
    reader.require(observed_path, observed, is_flag(observed) | ~keep,
                   f"1 (relapse) or 0 (censored) where {day_path} is a number")
    return relapse_day[keep], observed[keep] == 1


def read_outcomes(reader, data, subjects, solved):
    """Per assessment: subjects with outcome 1 and subjects assessed, failed subjects left out."""
    base = f"/arms/{data.name}"
    assessments_h = reader.vector(f"{base}/assessments_h")
    check_times(reader, f"{base}/assessments_h", assessments_h, "assessment times")
    data.assessment_days = assessments_h / HOURS_PER_DAY
    for name in ("response_at", "remission_at"):
        path = f"{base}/metrics/{name}"
        values = reader.per_subject(path, subjects, assessments_h.size, f"the length of {base}/assessments_h")
        reader.require(path, values, is_flag(values) | np.isnan(values) | ~solved[:, None],
                       "1, 0 or NaN (not assessed)")
        values = values[solved]
        assessed = np.isfinite(values)
        data.outcomes[name] = (np.count_nonzero(assessed & (values == 1), axis=0), np.count_nonzero(assessed, axis=0))


# ---------------------------------------------------------------------------------------------
# Figures, drawn from the data read above (the file is closed by then)

def arm_colours(arms):
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    return {arm.name: cycle[index % len(cycle)] for index, arm in enumerate(arms)}


def bounded_size(width, height):
    return min(width, MAX_FIGURE_INCHES), min(height, MAX_FIGURE_INCHES)


def variable_label(name, units):
    label = {"madrs": "MADRS", "dissociation_score": "dissociation score"}.get(name)
    if label is None:
        label = re.sub(r"_ng_per_ml$", "", name).replace("_", " ")
    return f"{label} ({units})" if units else label


def model_title(arms):
    """The model every arm simulated, or each arm's when they differ."""
    models = [str(arm.model) for arm in arms]
    if len(set(models)) == 1:
        return "model " + models[0]
    return textwrap.fill("models: " + "; ".join(f"{arm.name} {model}" for arm, model in zip(arms, models)), 110)


def decorate(figure, data, what):
    info = data.provenance
    figure.suptitle(f"{info['scenario_name']}: {what}\n{model_title(data.arms)}", fontsize=11)
    per_arm = ", ".join(f"{arm.name} {data.subjects_per_arm}" + (f" ({arm.failed} failed)" if arm.failed else "")
                        for arm in data.arms)
    figure.text(0.01, 0.005, f"ketasim {info['ketasim_version']} ({info['source_revision']}); "
                f"N per arm: {per_arm}; {os.path.basename(data.path)}",
                fontsize=7, color="0.35", ha="left", va="bottom")


def plot_trajectories(data):
    colours = arm_colours(data.arms)
    heights = [min(0.25 + 0.18 * len(data.arms), 10.0)] + [2.4] * len(data.panels)
    figure, axes = plt.subplots(len(heights), 1, sharex=True, figsize=bounded_size(9.0, 1.2 + sum(heights)),
                                gridspec_kw={"height_ratios": heights})
    mark_doses(axes[0], data, colours)
    end_day = 0.0
    for ax, panel in zip(axes[1:], data.panels):
        for arm in data.arms:
            band = arm.bands[panel.label]
            ax.fill_between(arm.time_days, band.p05, band.p95, color=colours[arm.name], alpha=0.25, linewidth=0)
            ax.plot(arm.time_days, band.p50, color=colours[arm.name], linewidth=1.2)
            if arm.time_days.size:
                end_day = max(end_day, float(arm.time_days[-1]))
        ax.set_ylabel(variable_label(panel.label, data.units[panel.label]))
        ax.grid(True, linewidth=0.3, alpha=0.5)
    axes[-1].set_xlabel("time (days from the start of the simulation)")
    axes[-1].set_xlim(0.0, end_day if end_day > 0 else None)
    handles = [(Patch(color=colours[arm.name], alpha=0.25, linewidth=0), plt.Line2D([], [], color=colours[arm.name]))
               for arm in data.arms]
    axes[1].legend(handles, [arm.name for arm in data.arms], title="median, 5th-95th percentile", fontsize=8,
                   title_fontsize=8, loc="upper right")
    decorate(figure, data, "trajectories")
    figure.tight_layout(rect=(0, 0.03, 1, 1))
    return figure


def mark_doses(ax, data, colours):
    """A strip above the panels, one row per arm: ticks at its nominal dose times; for an arm whose
    doses differ between subjects (as-needed doses, missed sessions, dosing tables), a histogram of
    the doses given, shaded by the doses per subject and day (the share of subjects dosed that day,
    with one-day bins)."""
    rows = list(range(len(data.arms)))[::-1]  # first arm on top
    for row, arm in zip(rows, data.arms):
        given = arm.given_doses
        if given is None:
            ax.eventplot([arm.nominal_dose_days], lineoffsets=[row], linelengths=0.7, linewidths=1.5,
                         colors=[colours[arm.name]])
            continue
        share = np.minimum(given.counts / (data.subjects_per_arm * given.bin_days), 1.0)
        for index in np.flatnonzero(share > 0):
            ax.add_patch(Rectangle((index * given.bin_days, row - 0.35), given.bin_days, 0.7, color=colours[arm.name],
                                   alpha=0.15 + 0.85 * share[index], linewidth=0))
    ax.set_yticks(rows, [arm.name for arm in data.arms], fontsize=8)
    ax.set_ylim(-0.6, len(data.arms) - 0.4)
    ax.set_ylabel("doses", fontsize=9)
    ax.tick_params(axis="y", length=0)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def plot_relapse(data):
    colours = arm_colours(data.arms)
    figure, ax = plt.subplots(figsize=(8.0, 5.6))
    curves = {}
    for arm in data.arms:
        time, event, colour = arm.relapse_time, arm.relapse_event, colours[arm.name]
        if time.size == 0:
            note(f"{data.path}: arm {arm.name}: no responders at the end of treatment, no relapse curve")
            ax.plot([], [], color=colour, label=f"{arm.name}: no responders at the end of treatment")
            continue
        km = kaplan_meier(time, event)
        curves[arm.name] = time
        end = float(time.max())
        steps = np.concatenate(([1.0], km.survival))
        ax.step(np.concatenate(([0.0], km.times, [end])), np.concatenate((steps, steps[-1:])), where="post",
                color=colour,
                label=f"{arm.name}: n = {time.size}, {int(event.sum())} relapses, median "
                      + ("not reached" if math.isnan(km.median) else f"{km.median:.3g} d"))
        censored = time[~event]
        ax.plot(censored, survival_at(km, censored), linestyle="none", marker="+", markersize=7, color=colour)
    ax.axhline(0.5, color="0.6", linewidth=0.6, linestyle=":")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlim(left=0.0)
    ax.set_xlabel("days since the last session")
    ax.set_ylabel("fraction still in response")
    ax.grid(True, linewidth=0.3, alpha=0.5)
    ax.legend(title="responders at the end of treatment (+ censored)", fontsize=8, title_fontsize=8, loc="upper right")
    at_risk_table(ax, curves, colours)
    decorate(figure, data, "time to relapse (Kaplan-Meier)")
    figure.tight_layout(rect=(0, 0.03, 1, 1))
    return figure


def at_risk_table(ax, curves, colours):
    """Numbers at risk at the x ticks, one row per arm, under the axis."""
    if not curves:
        return
    ax.figure.canvas.draw()  # fixes the ticks
    ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
    transform = ax.get_xaxis_transform()
    ax.text(0.0, -0.16, "number at risk", transform=ax.transAxes, ha="left", va="top", fontsize=7, color="0.3")
    for row, (arm, time) in enumerate(curves.items(), start=1):
        for tick in ticks:
            ax.text(tick, -0.16 - 0.05 * row, str(int(np.count_nonzero(time >= tick))), transform=transform,
                    ha="center", va="top", fontsize=7, color=colours[arm])


def plot_outcomes(data):
    colours = arm_colours(data.arms)
    all_days = np.unique(np.round(np.concatenate([arm.assessment_days for arm in data.arms]), 9))
    n_arms = len(data.arms)
    figure, axes = plt.subplots(1, 2, sharey=True, figsize=bounded_size(max(8.0, 3.0 + 0.7 * all_days.size * n_arms), 4.8))
    width = 0.8 / n_arms
    for ax, name, title in zip(axes, ("response_at", "remission_at"), ("response", "remission")):
        for index, arm in enumerate(data.arms):
            successes, assessed = arm.outcomes[name]
            with np.errstate(invalid="ignore", divide="ignore"):
                rate = successes / assessed
            low, high = wilson_interval(successes, assessed)
            x = np.searchsorted(all_days, np.round(arm.assessment_days, 9)) + (index - (n_arms - 1) / 2) * width
            ax.bar(x, 100 * rate, width=width, color=colours[arm.name], alpha=0.85,
                   label=f"{arm.name} (n = {int(assessed.max()) if assessed.size else 0})")
            shown = assessed > 0  # no bar and no interval where nobody was assessed
            ax.errorbar(x[shown], 100 * rate[shown], yerr=100 * np.abs(np.vstack((rate - low, high - rate))[:, shown]),
                        fmt="none", ecolor="0.15", elinewidth=0.9, capsize=2.5)
        every = math.ceil(all_days.size / MAX_ASSESSMENT_LABELS)
        ax.set_xticks(np.arange(all_days.size)[::every], [f"{day:g}" for day in all_days[::every]])
        ax.set_xlabel("days after the first session")
        ax.set_title(f"{title} rate", fontsize=10)
        ax.set_ylim(0.0, 100.0)
        ax.grid(True, axis="y", linewidth=0.3, alpha=0.5)
    axes[0].set_ylabel("subjects (%), 95% Wilson interval")
    axes[0].legend(fontsize=8, loc="upper left")
    decorate(figure, data, "response and remission (observed MADRS)")
    figure.tight_layout(rect=(0, 0.03, 1, 1))
    return figure


DRAW = {"trajectories": plot_trajectories, "relapse": plot_relapse, "outcomes": plot_outcomes}


# ---------------------------------------------------------------------------------------------
# Output: all figures or none

def render(data, kind, file_format):
    """The figure as the bytes of its file."""
    figure = DRAW[kind](data)
    try:
        buffer = io.BytesIO()
        metadata = {"Date": None} if file_format == "svg" else {}  # reproducible SVG
        figure.savefig(buffer, format=file_format, dpi=FIGURE_DPI, metadata=metadata)
        return buffer.getvalue()
    finally:
        plt.close(figure)


def check_targets(paths):
    """A figure's name taken by a folder (or a device, a FIFO) would stop the renames halfway."""
    for path in paths:
        if os.path.lexists(path) and not os.path.islink(path) and not os.path.isfile(path):
            kind = "a folder" if os.path.isdir(path) else "not a regular file"
            raise PlotError(f"cannot write {path}: it exists and is {kind}")


def make_folder(folder):
    """Creates the folder if missing; True if it did."""
    if os.path.isdir(folder):
        return False
    try:
        os.makedirs(folder)
    except OSError as error:
        raise PlotError(f"cannot create the folder {folder}: {error.strerror or error}") from None
    return True


def write_all_or_nothing(contents):
    """Writes every file of `contents` (path -> bytes) to a temporary name next to it, then renames them
    all. If any cannot be written, none is renamed and the temporaries are removed: the folder stays
    as it was. (A rename can only fail if the folder changes meanwhile; the message then says which
    figures were already replaced.)"""
    temporaries = {path: f"{path}.tmp-{os.getpid()}" for path in contents}
    current, created, replaced = None, [], []
    try:
        for current, content in contents.items():
            with open(temporaries[current], "xb") as out:
                created.append(temporaries[current])
                out.write(content)
                out.flush()
                os.fsync(out.fileno())
        for current in contents:
            os.replace(temporaries[current], current)
            replaced.append(current)
    except OSError as error:
        already = f"; already replaced: {', '.join(replaced)}" if replaced else "; no figure was replaced"
        raise PlotError(f"cannot write {current}: {error.strerror or error}{already}") from None
    finally:
        for temporary in created:
            try:
                os.remove(temporary)
            except FileNotFoundError:
                pass  # renamed


def write_figures(data, output_dir, file_format):
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", data.provenance["scenario_name"]) or "ketasim"
    paths = {kind: os.path.join(output_dir, f"{stem}_{kind}.{file_format}") for kind in data.figures}
    check_targets(paths.values())
    contents = {paths[kind]: render(data, kind, file_format) for kind in data.figures}
    created = make_folder(output_dir)
    try:
        write_all_or_nothing(contents)
    except PlotError:
        if created:
            try:
                os.rmdir(output_dir)  # empty again: the temporaries are gone
            except OSError:
                pass  # something else appeared in it meanwhile: not ours to remove
        raise
    return list(contents)


# ---------------------------------------------------------------------------------------------
# Command line

def comma_list(values):
    return [item for value in values or [] for item in value.split(",") if item]


def layout_version_list(text):
    try:
        versions = tuple(int(item) for item in text.split(",") if item.strip())
    except ValueError:
        versions = ()
    if not versions:
        raise argparse.ArgumentTypeError(f"expected whole numbers separated by commas, found {text!r}")
    return versions


def parse_arguments(argv):
    parser = argparse.ArgumentParser(
        prog="ketasim plot", description="Figures from a ketasim result file: trajectories, relapse (Kaplan-Meier), "
                                         "response and remission rates.")
    parser.add_argument("results", help="result file written by `ketasim run`")
    parser.add_argument("-o", "--output-dir", default=".", help="folder for the figures (created if missing; default: .)")
    parser.add_argument("--format", choices=("png", "svg"), default="png", help="image format (default: png)")
    parser.add_argument("--arms", action="append", metavar="A,B", help="arms to show (default: all, in scenario order)")
    parser.add_argument("--variables", action="append", metavar="NAME,NAME",
                        help="trajectories to show, by dataset name (default: the dosed drug's plasma "
                             "concentration, dissociation_score, madrs)")
    parser.add_argument("--layout-versions", type=layout_version_list, metavar="V,V",
                        help="layout versions to read; `ketasim plot` passes those its own readers accept. "
                             "Run on its own, the script reads those of the ketasim it comes with by default "
                             "(ketasim_layout.py beside it)")
    return parser.parse_args(argv)


def interrupt(signal_number, frame):
    raise Interrupted()


def main(argv=None):
    arguments = parse_arguments(argv)
    plt.rcParams["svg.hashsalt"] = "ketasim"  # stable SVG element ids
    previous_handler = signal.signal(signal.SIGTERM, interrupt)
    try:
        layout_versions = LayoutVersions(arguments.layout_versions or default_layout_versions(),
                                         from_ketasim=arguments.layout_versions is not None)
        data = read_plot_data(arguments.results, comma_list(arguments.arms), comma_list(arguments.variables),
                              layout_versions)
        for path in write_figures(data, arguments.output_dir, arguments.format):
            print(f"written: {path}")
    except PlotError as error:
        print(f"ketasim plot: error: {error}", file=sys.stderr)
        return error.exit_code
    except (Interrupted, KeyboardInterrupt):
        print("ketasim plot: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        signal.signal(signal.SIGTERM, previous_handler)
        plt.close("all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
