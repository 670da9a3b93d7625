#!/usr/bin/env python3
"""Figures from a ketasim result file (docs/hdf5-layout.md): `ketasim plot` runs this script.

    /usr/bin/python3 tools/ketasim_plot.py results.h5 [-o DIR] [--format png|svg]
                                           [--arms A,B] [--variables NAME,NAME]

writes three figures into DIR, named after the scenario:

  <scenario>_trajectories.<format>  median and 5th-95th percentile band over time, per arm, of the
                                    dosed drug's plasma concentration, dissociation and MADRS, read
                                    from the stored summaries (never the [N x T] matrices);
  <scenario>_relapse.<format>       Kaplan-Meier curves of the time to relapse of the responders
                                    at the end of treatment, per arm;
  <scenario>_outcomes.<format>      response and remission rates per arm at each assessment, with
                                    95% Wilson intervals.

Every figure is written to a temporary name in DIR and renamed when complete. Exit codes follow
ketasim's (docs/cli.md): 2 command-line misuse (unknown arm or variable), 6 a file that cannot be
read or written (missing file or dataset, unsupported layout version, missing Python modules).
Needs numpy, h5py and matplotlib: on Debian `apt-get install python3-h5py python3-matplotlib`,
then run it with /usr/bin/python3.
"""

import argparse
import math
import os
import re
import sys
import textwrap
from dataclasses import dataclass

EXIT_USAGE = 2
EXIT_IO = 6
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

SUPPORTED_LAYOUT_VERSIONS = (2, 3)  # 3 only adds datasets
QUANTILES = ("p05", "p50", "p95")
DEFAULT_VARIABLES = ("dissociation_score", "madrs")  # after the dosed drug's plasma concentration
WILSON_Z = 1.959963984540054  # two-sided 95%
FIGURE_DPI = 120


class PlotError(Exception):
    """An error with the process exit code it maps to (ketasim's codes)."""

    def __init__(self, message, exit_code=EXIT_IO):
        super().__init__(message)
        self.exit_code = exit_code


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
    """Kaplan-Meier estimate of the survival function, as engine/ketasim/statistics.cpp.

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
# Reading the result file

def text(value):
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


class ResultFile:
    """The parts of a result file the figures need, with errors naming the file and dataset."""

    def __init__(self, path):
        self.path = path
        if not os.path.isfile(path):
            raise PlotError(f"{path}: no such file")
        try:
            self.file = h5py.File(path, "r")
        except OSError as error:
            raise PlotError(f"{path}: cannot open as HDF5 ({error})") from None
        version = self.attribute("layout_version")
        if int(version) not in SUPPORTED_LAYOUT_VERSIONS:
            raise PlotError(f"{path}: layout_version {version} is not supported (this script reads "
                            f"{' and '.join(map(str, SUPPORTED_LAYOUT_VERSIONS))}); use the ketasim that wrote it")
        self.arm_names = [text(name) for name in self.attribute("arms")]
        self.subjects_per_arm = int(self.attribute("subjects_per_arm"))
        for arm in self.arm_names:
            if f"arms/{arm}" not in self.file:
                raise PlotError(f"{path}: missing group /arms/{arm} (named in the root attribute 'arms')")

    def close(self):
        self.file.close()

    def attribute(self, name):
        if name not in self.file.attrs:
            raise PlotError(f"{self.path}: missing root attribute '{name}'")
        return self.file.attrs[name]

    def has(self, arm, name):
        return f"arms/{arm}/{name}" in self.file

    def dataset(self, arm, name):
        """The h5py dataset /arms/<arm>/<name> (read lazily)."""
        full = f"arms/{arm}/{name}"
        if full not in self.file or not isinstance(self.file[full], h5py.Dataset):
            raise PlotError(f"{self.path}: missing dataset /{full}")
        return self.file[full]

    def read(self, arm, name):
        return self.dataset(arm, name)[()]

    def units(self, arm, name):
        return text(self.dataset(arm, name).attrs.get("units", ""))

    def solved(self, arm):
        """Mask of the subjects whose solve succeeded (metrics/status == 0)."""
        return self.read(arm, "metrics/status") == 0

    def provenance(self):
        return {key: text(self.attribute(key))
                for key in ("scenario_name", "model", "ketasim_version", "source_revision")}

    def arm_model(self, arm):
        """The model the arm simulated, e.g. `ketamine_venous (CL 60 L/h)`: its card (the root
        `model` in files without arm attributes) and the parameter values it overrides."""
        attrs = self.file[f"arms/{arm}"].attrs
        card = text(attrs["model"]) if "model" in attrs else text(self.attribute("model"))
        names = [text(name) for name in attrs.get("model_parameters", [])]
        values = list(attrs.get("model_parameter_values", []))
        units = [text(unit) for unit in attrs.get("model_parameter_units", [])]
        if not (len(names) == len(values) == len(units)):
            raise PlotError(f"{self.path}: /arms/{arm}: the attributes model_parameters, model_parameter_values and "
                            f"model_parameter_units differ in length")
        overrides = ", ".join(f"{name} {value:g}" + (f" {unit}" if unit else "")
                              for name, value, unit in zip(names, values, units))
        return f"{card} ({overrides})" if overrides else card


@dataclass(frozen=True)
class Panel:
    """One trajectory panel: the summary shown for each arm. The same trajectory in every arm,
    except the dosed drug's plasma concentration when arms simulate cards of different drugs."""
    label: str
    datasets: dict  # arm -> trajectory name

    @staticmethod
    def of(name, arms):
        return Panel(name, {arm: name for arm in arms})


def present_in(result, arms, name):
    """Whether dataset `name` is in every arm (True), in none (False); an error if only in some."""
    present = [arm for arm in arms if result.has(arm, name)]
    if present and len(present) != len(arms):
        missing = next(arm for arm in arms if arm not in present)
        raise PlotError(f"{result.path}: missing dataset /arms/{missing}/{name} (present in arm {present[0]})")
    return bool(present)


def dosed_plasma_variables(result, arm):
    """The arm's trajectory of the dosed drug's plasma concentration, `plasma_<drug>_ng_per_ml`.

    Metabolites are recognised by their metric `cmax_<metabolite>_ng_per_ml` (the dosed drug's is
    plain `cmax_ng_per_ml`); when that does not settle it, every plasma trajectory is shown."""
    names = sorted(result.file[f"arms/{arm}/summary"].keys()) if result.has(arm, "summary") else []
    plasma = [name for name in names if re.fullmatch(r"plasma_(.+)_ng_per_ml", name)]
    return [name for name in plasma if not result.has(arm, "metrics/cmax_" + name[len("plasma_"):])]


def dosed_plasma_panels(result, arms):
    """The dosed drug's plasma concentration: one panel per trajectory when every arm has the same,
    one panel of each arm's own when arms simulate cards of different drugs."""
    per_arm = {arm: dosed_plasma_variables(result, arm) for arm in arms}
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


def choose_arms(result, requested):
    if not requested:
        return list(result.arm_names)
    unknown = [arm for arm in requested if arm not in result.arm_names]
    if unknown:
        raise PlotError(f"{result.path}: no arm {', '.join(map(repr, unknown))} "
                        f"(arms: {', '.join(result.arm_names)})", EXIT_USAGE)
    return [arm for arm in result.arm_names if arm in requested]  # scenario order


def choose_variables(result, arms, requested):
    """Trajectory panels to plot: those requested, or the defaults; those missing are skipped."""
    chosen = []
    wanted = requested
    if not requested:
        chosen = dosed_plasma_panels(result, arms)
        if not chosen:
            note(f"{result.path}: no summary plasma_<drug>_ng_per_ml of the dosed drug, skipped")
        wanted = list(DEFAULT_VARIABLES)
    for name in wanted:
        if present_in(result, arms, f"summary/{name}"):
            chosen.append(Panel.of(name, arms))
        else:
            note(f"{result.path}: no summary/{name} in the file, skipped")
    if requested and not chosen:
        available = sorted(result.file[f"arms/{arms[0]}/summary"].keys()) if result.has(arms[0], "summary") else []
        raise PlotError(f"{result.path}: none of the variables {', '.join(requested)} is in the file "
                        f"(summaries: {', '.join(available) or 'none'})", EXIT_USAGE)
    return chosen


# ---------------------------------------------------------------------------------------------
# Figures

def arm_colours(arms):
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    return {arm: cycle[index % len(cycle)] for index, arm in enumerate(arms)}


def variable_label(name, units):
    label = {"madrs": "MADRS", "dissociation_score": "dissociation score"}.get(name)
    if label is None:
        label = re.sub(r"_ng_per_ml$", "", name).replace("_", " ")
    return f"{label} ({units})" if units else label


def decorate(figure, result, arms, what):
    info = result.provenance()
    models = {arm: result.arm_model(arm) for arm in arms}
    if len(set(models.values())) == 1:
        model = "model " + models[arms[0]]
    else:
        model = textwrap.fill("models: " + "; ".join(f"{arm} {models[arm]}" for arm in arms), 110)
    figure.suptitle(f"{info['scenario_name']}: {what}\n{model}", fontsize=11)
    failed = {arm: int(np.count_nonzero(~result.solved(arm))) for arm in arms}
    per_arm = ", ".join(f"{arm} {result.subjects_per_arm}" + (f" ({failed[arm]} failed)" if failed[arm] else "")
                        for arm in arms)
    figure.text(0.01, 0.005, f"ketasim {info['ketasim_version']} ({info['source_revision']}); "
                f"N per arm: {per_arm}; {os.path.basename(result.path)}",
                fontsize=7, color="0.35", ha="left", va="bottom")


def plot_trajectories(result, arms, panels):
    colours = arm_colours(arms)
    heights = [0.25 + 0.18 * len(arms)] + [2.4] * len(panels)
    figure, axes = plt.subplots(len(heights), 1, sharex=True, figsize=(9.0, 1.2 + sum(heights)),
                                gridspec_kw={"height_ratios": heights})
    mark_doses(axes[0], result, arms, colours)
    end_day = 0.0
    for ax, panel in zip(axes[1:], panels):
        units = result.units(arms[0], f"summary/{panel.datasets[arms[0]]}/p50")
        for arm in arms:
            name = panel.datasets[arm]
            days = result.read(arm, "time_h") / 24.0
            p05, p50, p95 = (result.read(arm, f"summary/{name}/{q}") for q in QUANTILES)
            if not (len(p05) == len(p50) == len(p95) == len(days)):
                raise PlotError(f"{result.path}: /arms/{arm}/summary/{name} has {len(p50)} times, "
                                f"time_h has {len(days)}")
            ax.fill_between(days, p05, p95, color=colours[arm], alpha=0.25, linewidth=0)
            ax.plot(days, p50, color=colours[arm], linewidth=1.2)
            if days.size:
                end_day = max(end_day, float(days[-1]))
        ax.set_ylabel(variable_label(panel.label, units))
        ax.grid(True, linewidth=0.3, alpha=0.5)
    axes[-1].set_xlabel("time (days from the start of the simulation)")
    axes[-1].set_xlim(0.0, end_day if end_day > 0 else None)
    handles = [(Patch(color=colours[arm], alpha=0.25, linewidth=0), plt.Line2D([], [], color=colours[arm]))
               for arm in arms]
    axes[1].legend(handles, arms, title="median, 5th-95th percentile", fontsize=8, title_fontsize=8,
                   loc="upper right")
    decorate(figure, result, arms, "trajectories")
    figure.tight_layout(rect=(0, 0.03, 1, 1))
    return figure


def per_subject_dose_days(result, arm, rows_per_read=65536):
    """Start days of every dose every subject was given (`subjects/dose_time_h`, layout 3), or None
    when the arm's doses are the same for every subject (then its nominal `doses/time_h` says it
    all). Read in slabs of rows, so a file of millions of subjects is never loaded whole."""
    if not result.has(arm, "subjects/dose_time_h"):
        return None
    nominal = np.sort(result.read(arm, "doses/time_h"))
    dataset = result.dataset(arm, "subjects/dose_time_h")
    width = dataset.shape[1] if dataset.ndim == 2 else 1
    expected = np.full(width, np.nan)
    expected[:min(width, nominal.size)] = nominal[:width]
    days, varies = [], nominal.size > width
    for start in range(0, dataset.shape[0], rows_per_read):
        slab = np.asarray(dataset[start:start + rows_per_read]).reshape(-1, width)
        same = (slab == expected) | (np.isnan(slab) & np.isnan(expected))
        varies = varies or not bool(np.all(same))
        days.append(slab[np.isfinite(slab)] / 24.0)
    return np.concatenate(days) if varies and days else None


def mark_doses(ax, result, arms, colours):
    """A strip above the panels, one row per arm: ticks at its nominal dose times; for an arm whose
    doses differ between subjects (as-needed doses, missed sessions, dosing tables), a histogram of
    the doses given, shaded by the share of subjects dosed per day."""
    rows = list(range(len(arms)))[::-1]  # first arm on top
    for row, arm in zip(rows, arms):
        given = per_subject_dose_days(result, arm)
        if given is None:
            ax.eventplot([result.read(arm, "doses/time_h") / 24.0], lineoffsets=[row], linelengths=0.7,
                         linewidths=1.5, colors=[colours[arm]])
            continue
        subjects = max(1, result.dataset(arm, "subjects/id").shape[0])
        end = max(1.0, float(np.nanmax(given)) + 1.0)
        counts, edges = np.histogram(given, bins=np.arange(0.0, np.ceil(end) + 1.0, 1.0))
        share = np.minimum(counts / subjects, 1.0)
        for left, value in zip(edges[:-1], share):
            if value > 0:
                ax.add_patch(Rectangle((left, row - 0.35), 1.0, 0.7, color=colours[arm], alpha=0.15 + 0.85 * value,
                                       linewidth=0))
    ax.set_yticks(rows, arms, fontsize=8)
    ax.set_ylim(-0.6, len(arms) - 0.4)
    ax.set_ylabel("doses", fontsize=9)
    ax.tick_params(axis="y", length=0)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def relapse_data(result, arm):
    """Times (days from the last session) and events of the responders at the end of treatment."""
    relapse_day = result.read(arm, "metrics/relapse_day")
    observed = result.read(arm, "metrics/relapse_observed")
    keep = result.solved(arm) & np.isfinite(relapse_day)
    return relapse_day[keep], observed[keep] == 1


def plot_relapse(result, arms):
    colours = arm_colours(arms)
    figure, ax = plt.subplots(figsize=(8.0, 5.6))
    curves = {}
    for arm in arms:
        time, event = relapse_data(result, arm)
        if time.size == 0:
            note(f"{result.path}: arm {arm}: no responders at the end of treatment, no relapse curve")
            ax.plot([], [], color=colours[arm], label=f"{arm}: no responders at the end of treatment")
            continue
        km = kaplan_meier(time, event)
        curves[arm] = (time, event, km)
        end = float(time.max())
        steps = np.concatenate(([1.0], km.survival))
        ax.step(np.concatenate(([0.0], km.times, [end])), np.concatenate((steps, steps[-1:])), where="post",
                color=colours[arm],
                label=f"{arm}: n = {time.size}, {int(event.sum())} relapses, median "
                      + ("not reached" if math.isnan(km.median) else f"{km.median:.3g} d"))
        censored = time[~event]
        ax.plot(censored, survival_at(km, censored), linestyle="none", marker="+", markersize=7,
                color=colours[arm])
    ax.axhline(0.5, color="0.6", linewidth=0.6, linestyle=":")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlim(left=0.0)
    ax.set_xlabel("days since the last session")
    ax.set_ylabel("fraction still in response")
    ax.grid(True, linewidth=0.3, alpha=0.5)
    ax.legend(title="responders at the end of treatment (+ censored)", fontsize=8, title_fontsize=8, loc="upper right")
    at_risk_table(ax, curves, colours)
    decorate(figure, result, arms, "time to relapse (Kaplan-Meier)")
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
    for row, (arm, (time, _, _)) in enumerate(curves.items(), start=1):
        for tick in ticks:
            ax.text(tick, -0.16 - 0.05 * row, str(int(np.count_nonzero(time >= tick))), transform=transform,
                    ha="center", va="top", fontsize=7, color=colours[arm])


def outcome_rates(result, arm, name):
    """Per assessment: subjects with outcome 1 and subjects assessed (failed subjects excluded)."""
    dataset = result.dataset(arm, f"metrics/{name}")
    values = dataset[()]
    values = values.reshape(values.shape[0], -1)  # [N] when A == 1
    values = values[result.solved(arm)]
    assessed = np.isfinite(values)
    return np.count_nonzero(assessed & (values == 1), axis=0), np.count_nonzero(assessed, axis=0)


def plot_outcomes(result, arms):
    colours = arm_colours(arms)
    days_of = {arm: result.read(arm, "assessments_h") / 24.0 for arm in arms}
    all_days = np.unique(np.round(np.concatenate(list(days_of.values())), 9))
    figure, axes = plt.subplots(1, 2, sharey=True, figsize=(max(8.0, 3.0 + 0.7 * all_days.size * len(arms)), 4.8))
    width = 0.8 / len(arms)
    for ax, name, title in zip(axes, ("response_at", "remission_at"), ("response", "remission")):
        for index, arm in enumerate(arms):
            successes, assessed = outcome_rates(result, arm, name)
            if successes.size != days_of[arm].size:
                raise PlotError(f"{result.path}: /arms/{arm}/metrics/{name} has {successes.size} assessments, "
                                f"assessments_h has {days_of[arm].size}")
            with np.errstate(invalid="ignore", divide="ignore"):
                rate = successes / assessed
            low, high = wilson_interval(successes, assessed)
            x = np.searchsorted(all_days, np.round(days_of[arm], 9)) + (index - (len(arms) - 1) / 2) * width
            ax.bar(x, 100 * rate, width=width, color=colours[arm], alpha=0.85,
                   label=f"{arm} (n = {int(assessed.max()) if assessed.size else 0})")
            shown = assessed > 0  # no bar and no interval where nobody was assessed
            ax.errorbar(x[shown], 100 * rate[shown], yerr=100 * np.abs(np.vstack((rate - low, high - rate))[:, shown]),
                        fmt="none", ecolor="0.15", elinewidth=0.9, capsize=2.5)
        ax.set_xticks(np.arange(all_days.size), [f"{day:g}" for day in all_days])
        ax.set_xlabel("days after the first session")
        ax.set_title(f"{title} rate", fontsize=10)
        ax.set_ylim(0.0, 100.0)
        ax.grid(True, axis="y", linewidth=0.3, alpha=0.5)
    axes[0].set_ylabel("subjects (%), 95% Wilson interval")
    axes[0].legend(fontsize=8, loc="upper left")
    decorate(figure, result, arms, "response and remission (observed MADRS)")
    figure.tight_layout(rect=(0, 0.03, 1, 1))
    return figure


# ---------------------------------------------------------------------------------------------
# Output

def save_atomically(figure, path, file_format):
    """Writes the figure to a temporary name in the target directory and renames it when complete."""
    temporary = f"{path}.tmp-{os.getpid()}"
    metadata = {"Date": None} if file_format == "svg" else {}  # reproducible SVG
    try:
        with open(temporary, "wb") as out:
            figure.savefig(out, format=file_format, dpi=FIGURE_DPI, metadata=metadata)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except OSError as error:
        raise PlotError(f"cannot write {path}: {error.strerror or error}") from None
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
        plt.close(figure)


def file_stem(result):
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", result.provenance()["scenario_name"]) or "ketasim"


def comma_list(values):
    return [item for value in values or [] for item in value.split(",") if item]


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
    return parser.parse_args(argv)


def main(argv=None):
    arguments = parse_arguments(argv)
    plt.rcParams["svg.hashsalt"] = "ketasim"  # stable SVG element ids
    try:
        result = ResultFile(arguments.results)
        try:
            arms = choose_arms(result, comma_list(arguments.arms))
            if not arms:
                raise PlotError(f"{result.path}: the file has no arms")
            figures = plan_figures(result, arms, comma_list(arguments.variables))
            try:
                os.makedirs(arguments.output_dir, exist_ok=True)
            except OSError as error:
                raise PlotError(f"cannot create the folder {arguments.output_dir}: {error.strerror or error}") from None
            stem = file_stem(result)
            for kind, make in figures:
                path = os.path.join(arguments.output_dir, f"{stem}_{kind}.{arguments.format}")
                save_atomically(make(), path, arguments.format)
                print(f"written: {path}")
        finally:
            result.close()
    except PlotError as error:
        print(f"ketasim plot: error: {error}", file=sys.stderr)
        return error.exit_code
    except OSError as error:
        print(f"ketasim plot: error: {error}", file=sys.stderr)
        return EXIT_IO
    return 0


def plan_figures(result, arms, requested_variables):
    """The figures the file has data for, checked before any is drawn: a missing dataset stops the
    command before the first file is written."""
    for arm in arms:
        for name in ("time_h", "doses/time_h", "metrics/status"):
            result.dataset(arm, name)
    figures = []
    panels = choose_variables(result, arms, requested_variables)
    if panels:
        for panel in panels:
            for arm, name in panel.datasets.items():
                for q in QUANTILES:
                    result.dataset(arm, f"summary/{name}/{q}")
        figures.append(("trajectories", lambda: plot_trajectories(result, arms, panels)))
    else:
        note(f"{result.path}: no trajectory summaries to show, no trajectories figure")
    if present_in(result, arms, "metrics/relapse_day"):
        for arm in arms:
            result.dataset(arm, "metrics/relapse_observed")
        figures.append(("relapse", lambda: plot_relapse(result, arms)))
    else:
        note(f"{result.path}: no metrics/relapse_day (model without a depression score, or output.metrics "
             "without response), no relapse figure")
    if present_in(result, arms, "metrics/response_at"):
        for arm in arms:
            for name in ("metrics/remission_at", "assessments_h"):
                result.dataset(arm, name)
        if sum(result.dataset(arm, "assessments_h").size for arm in arms) == 0:
            note(f"{result.path}: no MADRS assessments, no outcomes figure")
        else:
            figures.append(("outcomes", lambda: plot_outcomes(result, arms)))
    else:
        note(f"{result.path}: no metrics/response_at, no outcomes figure")
    if not figures:
        raise PlotError(f"{result.path}: nothing to plot (no trajectory summaries, relapse or response metrics)")
    return figures


if __name__ == "__main__":
    sys.exit(main())
