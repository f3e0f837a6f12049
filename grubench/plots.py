"""Plots of a sweep for grubench-report --plots: PNG and SVG of each, drawn with Agg.

`write_plots(runs, out_dir)` draws each kind of plot for which the runs hold data, and says
why it skipped the others:

* learning_curves_TASK: validation loss against training step from each run's metrics.jsonl,
  one panel per seq_len, one line per model (and per any other key that varies among the
  runs drawn, e.g. hidden=64, so different experiments are never averaged together).
* step_time_vs_seq_len, memory_vs_seq_len: speed.step_time_ms and memory.train_step_bytes
  against seq_len, one panel per task; drawn when some line has two or more seq_lens.
* gap_vs_train_size: the generalisation gap (val - train loss) against training examples;
  drawn when some line has two or more train_sizes.
* recall_vs_lag: results["recall"] accuracy against lag; drawn when two or more lags exist.
* grad_norm_vs_t: results["grad_norms"] against time step t; drawn when two or more t exist.

Lines are the mean over seeds (per-seed quantities) or runs (speed, memory), pooled over runs
that differ only in seed; the band spans min to max, and the legend gives n. Diverged seeds
leave the learning curves from their divergence step on and the other plots altogether; failed
runs are left out (the table's notes list them). An axis is logarithmic when its values are
positive and span two decades or more (max/min >= 100), except the learning curves' step axis,
which stays linear; every axis names its unit.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import rc_context
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from grubench.errors import ReportError
from grubench.registry import TASKS
from grubench.runs import key_value, own_values, show, varying_keys

_BAND = "line: mean, band: min–max"  # the legend's title


@dataclass
class PlotResult:
    """The files written, and one line for each plot kind skipped and why."""

    files: list[Path] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def loss_unit(task: Any) -> str:
    """The loss's unit for an axis label: the registered task's `plot_unit` (nats if unknown)."""
    return TASKS.get(task).plot_unit if task in TASKS else "nats"


def write_plots(runs: list[dict[str, Any]], out_dir: str | Path) -> PlotResult:
    """Draw every plot kind the runs have data for into `out_dir` (created) as PNG and SVG."""
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ReportError(f"{out_dir}: cannot create the plots directory ({e.strerror})") from None
    result = PlotResult()
    usable = [r for r in runs if r.get("status") != "failed"]
    if len(usable) < len(runs):
        n = len(runs) - len(usable)
        result.skipped.append(f"left out {n} failed run{'s' if n > 1 else ''}")
    kinds: list[Callable[[list[dict[str, Any]]], list[tuple[str, Figure]] | str]] = [
        _learning_curves,
        _step_time,
        _memory,
        _gap,
        _recall,
        _grad_norms,
    ]
    for kind in kinds:
        made = kind(usable)
        if isinstance(made, str):
            result.skipped.append(made)
            continue
        for name, fig in made:
            result.files += _save(fig, out / name)
    return result


def _save(fig: Figure, stem: Path) -> list[Path]:
    FigureCanvasAgg(fig)
    paths = [stem.with_suffix(".png"), stem.with_suffix(".svg")]
    with rc_context({"svg.hashsalt": "grubench"}):  # stable SVG ids: reruns diff cleanly
        fig.savefig(paths[0], dpi=150)
        fig.savefig(paths[1], metadata={"Date": None})
    return paths


# ---------------------------------------------------------------------------------------------
# Grouping and drawing


def _label(run: dict[str, Any], vary: list[str], exclude: Iterable[str]) -> str:
    """The line a run belongs to: its model, then every other varying key not on an axis."""
    skip = {"model", *exclude}
    return ", ".join(
        [show(run.get("model"))] + [f"{k}={show(key_value(run, k))}" for k in vary if k not in skip]
    )


def _panels(n: int, width: float = 4.8, height: float = 3.6) -> tuple[Figure, list[Axes]]:
    ncols = min(n, 3)
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(width * ncols, height * nrows + 0.4), layout="constrained")
    axes = list(fig.subplots(nrows, ncols, squeeze=False).flat)
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def _log_if_wide(ax: Axes, axis: str, values: Iterable[float]) -> None:
    vals = np.array([v for v in values if np.isfinite(v)], dtype=float)
    if vals.size and (vals > 0).all() and vals.max() / vals.min() >= 100:
        (ax.set_xscale if axis == "x" else ax.set_yscale)("log")


Series = dict[float, list[float]]  # x -> the pooled values at x


def _add(series: Series, x: Any, y: Any) -> None:
    if x is None or y is None:
        return
    x, y = float(x), float(y)
    if math.isfinite(x) and math.isfinite(y):
        series.setdefault(x, []).append(y)


def _draw(
    ax: Axes, series: Series, label: str, style: tuple[Any, str], n: int, unit: str
) -> list[float]:
    """Mean line with a min-max band; returns every y drawn (for the scale decision)."""
    xs = sorted(series)
    ys = [np.array(series[x]) for x in xs]
    mean = np.array([y.mean() for y in ys])
    lo = np.array([y.min() for y in ys])
    hi = np.array([y.max() for y in ys])
    color, marker = style
    ax.plot(
        xs,
        mean,
        color=color,
        marker=marker if len(xs) <= 12 else None,
        markersize=4,
        label=f"{label} (n={n} {unit if n != 1 else unit.rstrip('s')})",
    )
    if any(len(y) > 1 for y in ys):
        ax.fill_between(xs, lo, hi, color=color, alpha=0.2, linewidth=0)
    return [*lo, *hi]


def _styles(labels: Iterable[str]) -> dict[str, tuple[Any, str]]:
    """A colour and a marker per line, so lines that overlap stay distinguishable."""
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    markers = "osD^vP*X"
    return {
        lab: (cmap(i % 10), markers[i % len(markers)]) for i, lab in enumerate(sorted(set(labels)))
    }


def _finish(
    ax: Axes,
    title: str,
    xlabel: str,
    ylabel: str,
    xs: list[float],
    ys: list[float],
    log_x: bool = True,
    log_y: bool = True,
) -> None:
    """Title, labels, log scales where the values span two decades, and integer x ticks
    (every x here counts something: steps, examples, lags)."""
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if log_x:
        _log_if_wide(ax, "x", xs)
    if log_y:
        _log_if_wide(ax, "y", ys)
    if ax.get_xscale() == "linear":
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(True, alpha=0.3, which="both")


def _title(fig: Figure, axes: list[Axes], title: str) -> None:
    """The figure's title, and each panel's legend: inside the panel for up to three lines,
    else to its right (the figure widens to make room) so it hides no data."""
    fig.suptitle(title)
    crowded = max(len(ax.get_legend_handles_labels()[1]) for ax in axes) > 3
    for ax in axes:
        if crowded:
            ax.legend(
                fontsize=8,
                title=_BAND,
                title_fontsize=8,
                loc="upper left",
                bbox_to_anchor=(1.02, 1.0),
                borderaxespad=0.0,
            )
        else:
            ax.legend(fontsize=8, title=_BAND, title_fontsize=8)
    if crowded:
        w, h = fig.get_size_inches()
        fig.set_size_inches(w * 1.7, h)


def _good_seeds(run: dict[str, Any]) -> list[int]:
    """Indices of the seeds that did not diverge."""
    bad = {str(s) for s in (run.get("diverged") or {})}
    return [i for i, s in enumerate(run.get("seeds") or []) if str(s) not in bad]


# ---------------------------------------------------------------------------------------------
# The plot kinds: each returns [(file stem, figure)] or why it drew nothing.


def read_metrics_jsonl(run: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The rows of the run's metrics.jsonl; None when there is none."""
    path = Path(run["path"]) / "metrics.jsonl"
    if not path.exists():
        return None
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except (OSError, ValueError) as e:
        raise ReportError(f"{path}: unreadable ({str(e).splitlines()[0]})") from None


def _learning_curves(runs: list[dict[str, Any]]) -> list[tuple[str, Figure]] | str:
    logged = [(run, rows) for run in runs if (rows := read_metrics_jsonl(run))]
    curves: dict[Any, dict[Any, dict[str, tuple[Series, int]]]] = {}  # task -> seq_len -> line
    vary = {
        task: varying_keys(r for r, _ in logged if r.get("task") == task)
        for task in {r.get("task") for r, _ in logged}
    }
    for run, rows in logged:
        seeds = list(run.get("seeds") or [])
        stop = {str(s): int(st) for s, st in (run.get("diverged") or {}).items()}
        line = _label(run, vary[run.get("task")], ("task", "seq_len"))
        panel = curves.setdefault(run.get("task"), {}).setdefault(run.get("seq_len"), {})
        series, n = panel.get(line, ({}, 0))
        for row in rows:
            vals = row.get("val/loss")
            if not isinstance(vals, list):
                continue
            vals = own_values(run, vals)
            for s, v in zip(seeds, vals, strict=False):
                if str(s) not in stop or row["step"] < stop[str(s)]:
                    _add(series, row["step"], v)
        panel[line] = (series, n + len(seeds))
    figs = []
    for task, panels in sorted(curves.items(), key=lambda kv: str(kv[0])):
        panels = {k: v for k, v in panels.items() if any(s for s, _ in v.values())}
        if not panels:
            continue
        fig, axes = _panels(len(panels))
        styles = _styles(lab for p in panels.values() for lab in p)
        for ax, (seq_len, lines) in zip(
            axes, sorted(panels.items(), key=lambda kv: kv[0] or 0), strict=True
        ):
            xs, ys = _draw_lines(ax, lines, styles, "seeds")
            _finish(
                ax,
                f"task={show(task)}, seq_len={show(seq_len)}",
                "training step",
                f"validation loss ({loss_unit(task)})",
                xs,
                ys,
                log_x=False,
            )
        _title(fig, axes, "Validation loss during training")
        figs.append((f"learning_curves_{show(task)}", fig))
    return figs or "skipped learning curves: no run has a metrics.jsonl with val/loss"


def _draw_lines(ax, lines: dict, styles: dict, unit: str) -> tuple[list, list]:
    """Draw every labelled series of a panel; the x and y values drawn, for the axis scales."""
    xs: list = []
    ys: list = []
    for lab, (series, n) in sorted(lines.items()):
        if series:
            ys += _draw(ax, series, lab, styles[lab], n, unit)
            xs += list(series)
    return xs, ys


def _run_level_vs(
    runs: list[dict[str, Any]],
    x_key: str,
    value: Callable[[dict[str, Any]], float | None],
    what: str,
    stem: str,
    xlabel: str,
    ylabel: str,
) -> list[tuple[str, Figure]] | str:
    """One value per run against `x_key`, one panel per task."""
    return _vs(
        runs,
        x_key,
        lambda r: [value(r)],
        "runs",
        what,
        stem,
        xlabel,
        lambda task: ylabel,
        log_y=True,
    )


def _vs(
    runs: list[dict[str, Any]],
    x_key: str,
    values: Callable[[dict[str, Any]], list[float | None]],
    unit: str,
    what: str,
    stem: str,
    xlabel: str,
    ylabel: Callable[[Any], str],
    log_y: bool,
) -> list[tuple[str, Figure]] | str:
    """Values of each run (one per run or per seed) against `x_key`, one panel per task."""
    measured = [
        (run, ys)
        for run in runs
        if (ys := [y for y in values(run) if y is not None and math.isfinite(y)])
    ]
    vary = varying_keys(run for run, _ in measured)
    tasks: dict[Any, dict[str, tuple[Series, int]]] = {}
    for task in sorted({run.get("task") for run, _ in measured}, key=str):
        lines: dict[str, tuple[Series, int]] = {}
        for run, ys in measured:
            if run.get("task") != task:
                continue
            lab = _label(run, vary, ("task", x_key))
            series, n = lines.get(lab, ({}, 0))
            for y in ys:
                _add(series, key_value(run, x_key), y)
            lines[lab] = (series, n + len(ys))
        if any(len(s) >= 2 for s, _ in lines.values()):
            tasks[task] = lines
    if not tasks:
        return f"skipped {what}: no line has two or more {x_key} values"
    fig, axes = _panels(len(tasks))
    styles = _styles(lab for lines in tasks.values() for lab in lines)
    for ax, (task, lines) in zip(axes, tasks.items(), strict=True):
        xs, ys = _draw_lines(ax, lines, styles, unit)
        _finish(ax, f"task={show(task)}", xlabel, ylabel(task), xs, ys, log_y=log_y)
    _title(fig, axes, what[0].upper() + what[1:])
    return [(stem, fig)]


def _step_time(runs: list[dict[str, Any]]) -> list[tuple[str, Figure]] | str:
    return _run_level_vs(
        runs,
        "seq_len",
        lambda r: (r.get("speed") or {}).get("step_time_ms"),
        "step time vs sequence length",
        "step_time_vs_seq_len",
        "sequence length (steps)",
        "step time (ms)",
    )


def _memory(runs: list[dict[str, Any]]) -> list[tuple[str, Figure]] | str:
    def mib(r: dict[str, Any]) -> float | None:
        b = (r.get("memory") or {}).get("train_step_bytes")
        return None if b is None else b / 2**20

    return _run_level_vs(
        runs,
        "seq_len",
        mib,
        "train-step memory vs sequence length",
        "memory_vs_seq_len",
        "sequence length (steps)",
        "train-step memory (MiB)",
    )


def _gap(runs: list[dict[str, Any]]) -> list[tuple[str, Figure]] | str:
    def gaps(r: dict[str, Any]) -> list[float | None]:
        vals = (r.get("metrics") or {}).get("gap") or []
        return [vals[i] for i in _good_seeds(r) if i < len(vals)]

    return _vs(
        runs,
        "train_size",
        gaps,
        "seeds",
        "generalisation gap vs training set size",
        "gap_vs_train_size",
        "training examples",
        lambda task: f"generalisation gap, val − train loss ({loss_unit(task)})",
        log_y=False,
    )


def _per_seed_curves(
    runs: list[dict[str, Any]],
    field_: str,
    x_name: str,
    y_name: str,
    what: str,
    stem: str,
    xlabel: str,
    ylabel: str,
    log_y: bool,
) -> list[tuple[str, Figure]] | str:
    """results[field_] = {x_name: [...], y_name: [[per x] per seed]}, one panel per task."""
    recorded = [(run, rec) for run in runs if isinstance(rec := run.get(field_), dict)]
    vary = varying_keys(run for run, _ in recorded)
    tasks: dict[Any, dict[str, tuple[Series, int]]] = {}
    xs_seen: set[float] = set()
    for run, rec in recorded:
        xs, per_seed = rec.get(x_name) or [], rec.get(y_name) or []
        good = [per_seed[i] for i in _good_seeds(run) if i < len(per_seed)]
        lab = _label(run, vary, ("task",))
        lines = tasks.setdefault(run.get("task"), {})
        series, n = lines.get(lab, ({}, 0))
        for seed_values in good:
            for x, y in zip(xs, seed_values or [], strict=False):
                _add(series, x, y)
        xs_seen |= set(series)
        lines[lab] = (series, n + len(good))
    if not tasks:
        return f"skipped {what}: no run records {field_}"
    if len(xs_seen) < 2:
        return f"skipped {what}: fewer than two {x_name} values"
    fig, axes = _panels(len(tasks))
    styles = _styles(lab for lines in tasks.values() for lab in lines)
    for ax, (task, lines) in zip(
        axes, sorted(tasks.items(), key=lambda kv: str(kv[0])), strict=True
    ):
        xs, ys = _draw_lines(ax, lines, styles, "seeds")
        _finish(ax, f"task={show(task)}", xlabel, ylabel, xs, ys, log_y=log_y)
    _title(fig, axes, what[0].upper() + what[1:])
    return [(stem, fig)]


def _recall(runs: list[dict[str, Any]]) -> list[tuple[str, Figure]] | str:
    made = _per_seed_curves(
        runs,
        "recall",
        "lags",
        "accuracy",
        "recall accuracy vs lag",
        "recall_vs_lag",
        "lag (steps)",
        "recall accuracy (fraction correct)",
        log_y=False,
    )
    if not isinstance(made, str):
        for ax in made[0][1].axes:
            if ax.get_visible():
                ax.set_ylim(-0.02, 1.02)
    return made


def _grad_norms(runs: list[dict[str, Any]]) -> list[tuple[str, Figure]] | str:
    return _per_seed_curves(
        runs,
        "grad_norms",
        "t",
        "norm",
        "gradient norm vs time step",
        "grad_norm_vs_t",
        "time step t",
        "‖dL/dh_t‖ at layer 1 (per example)",
        log_y=True,
    )
