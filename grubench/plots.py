"""Figures of a sweep for grubench-report --plots: PDF, PNG and SVG of each, drawn with Agg.

`figures(runs, figsize=, x=)` draws every kind of figure for which the runs hold data and says
why it skipped the others; `write_plots(runs, out_dir, ...)` writes what it draws. The kinds:

* learning_curves_TASK: loss against training step (`x="steps"`) or against train/seconds,
  the seconds spent in training steps (`x="seconds"`; compilation, evaluation and checkpoints
  excluded), from each run's metrics.jsonl: validation loss solid, the train loss evaluated on
  a fixed training subset (rows that also hold val/loss) in the same colour, lighter, and
  dotted (in its line's style where line styles tell a key apart); the task's baseline loss
  (results.json baselines.loss) as a grey dashed line. Runs pooled into one line may log
  different seconds: a point's x is their mean at that step. A run without train/seconds (an
  older metrics.jsonl) is left out under `x="seconds"`.
* step_time_vs_seq_len, memory_vs_seq_len: speed.step_time_ms and memory.train_step_bytes
  against seq_len; drawn when some line has two or more seq_lens.
* gap_vs_train_size: the generalisation gap (val - train loss) against training examples;
  drawn when some line has two or more train_sizes.
* recall_vs_lag: results["recall"] accuracy against lag; drawn when two or more lags exist.
* grad_norm_vs_t: |dL/dh_t| against time step t after training (results["grad_norms"], solid)
  and at initialisation (results["grad_norms_init"], lighter, drawn as the train loss is).

The same rules hold in every figure of a report:

* Width 3.3 in (`figsize="column"`, one column of a two-column paper) or 6.9 in ("page");
  every text is at least 7 pt at that size, and the height follows from the panels and legend.
* Colour is the model, the same model the same colour in every figure and every report. Line
  style and marker show the first other key that varies among a figure's runs; every further
  varying key makes panels (small multiples; seq_len first for learning curves, task
  elsewhere, then seq_len for gradient norms). So no two experiments share a line, and runs
  that differ only in seed are pooled into one.
* A line is the mean over seeds (per-seed quantities) or runs (speed, memory). Where it pools
  two or more values, their min-max is a band, or error bars on a line of fewer than five
  points; the legend says which and over how many. Lines of fewer than five points mark every
  point. One legend, under the panels, keys colours, styles, curves, baseline and band.
* Diverged seeds leave the learning curves from their divergence step on and the other figures
  altogether; failed runs are left out (the table's notes list them).
* An axis is logarithmic when its values are positive and span two decades or more
  (max/min >= 100), except the learning curves' x axis, which stays linear; every axis names
  its unit.
"""

from __future__ import annotations

import colorsys
import json
import math
import textwrap
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
from matplotlib import rc_context
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_hex, to_rgb
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from grubench.errors import ReportError
from grubench.registry import CELLS, TASKS
from grubench.results import atomic_write
from grubench.runs import key_value, own_values, show, varying_keys

FIGSIZES = {"column": 3.3, "page": 6.9}  # inches wide: one column, the whole text width
X_AXES = ("steps", "seconds")  # the learning curves' x: training step, train/seconds
FORMATS = ("pdf", "png", "svg")
MIN_FONT_PT = 7.0

_RC: dict[Any, Any] = {
    "font.size": 8,
    "axes.titlesize": 8,
    "axes.labelsize": 8,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "legend.fontsize": 7,
    "legend.title_fontsize": 7,
    "figure.titlesize": 9,
    "axes.linewidth": 0.6,
    "grid.linewidth": 0.4,
    "xtick.major.width": 0.6,
    "ytick.major.width": 0.6,
    "xtick.minor.width": 0.4,
    "ytick.minor.width": 0.4,
    "lines.linewidth": 1.2,
    "lines.markersize": 3.5,
    "pdf.fonttype": 42,  # TrueType in the PDF: publishers refuse Type 3 fonts
    "ps.fonttype": 42,
    "svg.hashsalt": "grubench",  # stable SVG ids: reruns diff cleanly
}
_LINESTYLES: list[Any] = ["-", "--", "-.", (0, (5, 1, 1, 1, 1, 1))]  # dotted is the secondary
_MARKERS = "osD^vPX*"
_SHORT = 5  # a line of fewer points marks each one, and shows its spread as bars
_BASELINE: dict[str, Any] = {"color": "0.45", "linestyle": (0, (4, 2)), "linewidth": 0.9}
_KEY = "0.2"  # the legend's colour for what is not a model: styles, curves


@dataclass
class PlotResult:
    """The files written, and one line for each figure kind skipped (or run left out) and why."""

    files: list[Path] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def loss_unit(task: Any) -> str:
    """The loss's unit for an axis label: the registered task's `plot_unit` (nats if unknown)."""
    return TASKS.get(task).plot_unit if task in TASKS else "nats"


def figures(
    runs: list[dict[str, Any]], figsize: str = "page", x: str = "steps"
) -> tuple[list[tuple[str, Figure]], list[str]]:
    """Every figure the runs have data for, as (file stem, Figure) drawn at its final size,
    and one line for each kind skipped and why. `figsize`: a key of FIGSIZES; `x`: one of
    X_AXES. Raises ReportError for any other value."""
    if figsize not in FIGSIZES:
        raise ReportError(f"figsize {figsize!r}: use one of {', '.join(FIGSIZES)}")
    if x not in X_AXES:
        raise ReportError(f"x {x!r}: use one of {', '.join(X_AXES)}")
    usable = [r for r in runs if r.get("status") != "failed"]
    skipped = []
    if len(usable) < len(runs):
        n = len(runs) - len(usable)
        skipped.append(f"left out {n} failed run{'s' if n > 1 else ''}")
    look = _Look(FIGSIZES[figsize], _colours(usable))
    kinds: list[Callable[[list[dict[str, Any]], _Look], _Made]] = [
        lambda rs, lk: _learning_curves(rs, lk, x),
        _step_time,
        _memory,
        _gap,
        _recall,
        _grad_norms,
    ]
    made = []
    with rc_context(_RC):
        for kind in kinds:
            figs, notes = kind(usable, look)
            made += figs
            skipped += notes
    return made, skipped


def write_plots(
    runs: list[dict[str, Any]], out_dir: str | Path, figsize: str = "page", x: str = "steps"
) -> PlotResult:
    """Write every figure of `figures` into `out_dir` (created) as PDF, PNG and SVG, each
    file atomically."""
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ReportError(f"{out_dir}: cannot create the plots directory ({e.strerror})") from None
    made, skipped = figures(runs, figsize, x)
    result = PlotResult(skipped=skipped)
    for name, fig in made:
        result.files += _save(fig, out / name)
    return result


def _save(fig: Figure, stem: Path) -> list[Path]:
    metadata: dict[str, dict[str, Any]] = {
        "pdf": {"CreationDate": None},  # no dates: reruns write the same bytes
        "svg": {"Date": None},
        "png": {},
    }
    paths = []
    with rc_context(_RC):
        for ext in FORMATS:
            path = stem.parent / f"{stem.name}.{ext}"

            def write(f: IO, ext: str = ext) -> None:
                fig.savefig(f, format=ext, dpi=300, metadata=metadata[ext])

            try:
                atomic_write(path, write, binary=True)
            except OSError as e:
                raise ReportError(f"{path}: cannot write ({e.strerror})") from None
            paths.append(path)
    return paths


# ---------------------------------------------------------------------------------------------
# The look shared by a report's figures, and how a figure's runs map onto lines and panels


def _colours(runs: list[dict[str, Any]]) -> dict[Any, str]:
    """A colour per model, the same in every report: matplotlib's colour-blind-safe
    "petroff10" cycle without its greys (grey is the baseline's and the legend key's)."""
    from matplotlib import colormaps, style

    sheets: dict[str, Any] = dict(style.library)  # petroff10 is new in matplotlib 3.10
    cycle = sheets.get("petroff10", {}).get("axes.prop_cycle")
    palette = (
        [c["color"] for c in cycle]
        if cycle
        else [to_hex(c) for c in colormaps["tab10"](np.arange(10))]
    )
    palette = [c for c in palette if colorsys.rgb_to_hsv(*to_rgb(c))[1] >= 0.25]
    # Registered cells by their place in the registry: a model has its colour in every
    # report, whichever others it is drawn with; others (plugins since removed) after them.
    known = list(CELLS.names())
    models = sorted({key_value(r, "model") for r in runs}, key=_order)
    others = [m for m in models if m not in known]
    place = {m: known.index(m) if m in known else len(known) + others.index(m) for m in models}
    return {m: palette[place[m] % len(palette)] for m in models}


def _order(v: Any) -> tuple:
    """Sort key for key values: numbers by value, before anything else by its text."""
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return (0, float(v), "")
    return (1, 0.0, show(v))


def _lighter(colour: str) -> tuple[float, float, float]:
    r, g, b = to_rgb(colour)
    return (r + (1 - r) * 0.5, g + (1 - g) * 0.5, b + (1 - b) * 0.5)


@dataclass(frozen=True)
class _Look:
    width: float  # inches
    colours: dict[Any, str]  # model -> colour, for every figure of the report

    def columns(self, n: int) -> int:
        return min(n, 2 if self.width < 5 else 3)

    def panel_height(self, ncols: int) -> float:
        return min(2.6 if ncols == 1 and self.width > 5 else 2.2, 0.7 * self.width / ncols + 0.45)


@dataclass
class _Encoding:
    """How a figure shows its runs: colour = model, style = `style_key`, panels = `facets`."""

    style_key: str | None
    facets: list[str]
    fixed: list[tuple[str, Any]]  # keys the panels would show that are one value here

    @staticmethod
    def of(runs: list[dict[str, Any]], on_axis: Sequence[str], facets_first: Sequence[str]):
        vary = [k for k in varying_keys(runs) if k != "model" and k not in on_axis]
        facets = [k for k in facets_first if k in vary]
        rest = [k for k in vary if k not in facets]
        fixed = [
            (k, key_value(runs[0], k))
            for k in facets_first
            if k not in vary and k not in on_axis and runs
        ]
        return _Encoding(rest[0] if rest else None, facets + rest[1:], fixed)

    def line(self, run: dict[str, Any]) -> tuple[Any, Any]:
        style = key_value(run, self.style_key) if self.style_key else None
        return key_value(run, "model"), style

    def panel(self, run: dict[str, Any]) -> tuple:
        return tuple(key_value(run, k) for k in self.facets)

    def panel_title(self, panel: tuple) -> str:
        return ", ".join(f"{k}={show(v)}" for k, v in zip(self.facets, panel, strict=True))

    def context(self) -> str:
        return ", ".join(f"{k}={show(v)}" for k, v in self.fixed if v is not None)


Series = dict[float, list[float]]  # x -> the pooled values at x


@dataclass
class _Line:
    main: Series = field(default_factory=dict)
    second: Series = field(default_factory=dict)  # train loss, norm at init: lighter, dotted


Panels = dict[tuple, dict[tuple[Any, Any], _Line]]  # panel -> (model, style value) -> line
_Made = tuple[list[tuple[str, Figure]], list[str]]  # figures, and why any were skipped


def _line(panels: Panels, enc: _Encoding, run: dict[str, Any]) -> _Line:
    return panels.setdefault(enc.panel(run), {}).setdefault(enc.line(run), _Line())


def _add(series: Series, x: Any, y: Any) -> None:
    if x is None or y is None:
        return
    x, y = float(x), float(y)
    if math.isfinite(x) and math.isfinite(y):
        series.setdefault(x, []).append(y)


@dataclass
class _Spec:
    """What a figure says: titles, axis labels and scales, names of its curves."""

    title: str
    xlabel: str
    ylabel: str
    unit: str  # what a line pools: seeds or runs
    log_x: bool = True
    log_y: bool = True
    integer_x: bool = True
    main: str = ""  # the solid curve's name in the legend where there is a secondary
    second: str = ""  # the secondary curve's name
    ylim: tuple[float, float] | None = None
    baselines: dict[tuple, set[float]] = field(default_factory=dict)  # panel -> losses


def _draw(look: _Look, enc: _Encoding, panels: Panels, spec: _Spec) -> Figure:
    """One figure: a panel per key of `panels`, a line per model and style value, one legend."""
    order = sorted(panels, key=lambda p: tuple(map(_order, p)))
    ncols = look.columns(len(order))
    nrows = math.ceil(len(order) / ncols)
    fig = Figure(figsize=(look.width, nrows * look.panel_height(ncols)), layout="constrained")
    FigureCanvasAgg(fig)
    axes = list(fig.subplots(nrows, ncols, squeeze=False).flat)
    for ax in axes[len(order) :]:
        fig.delaxes(ax)
    styles = {
        v: (_LINESTYLES[i % len(_LINESTYLES)], _MARKERS[i % len(_MARKERS)])
        for i, v in enumerate(sorted({s for p in panels.values() for _, s in p}, key=_order))
    }
    spread: dict[str, set[int]] = {}  # "band" / "bars" -> how many values its points pool
    drew_second = drew_baseline = False
    panel_w = look.width / ncols
    everything = [ln for p in panels.values() for ln in p.values()]
    log_x = spec.log_x and _wide(x for ln in everything for s in (ln.main, ln.second) for x in s)
    log_y = spec.log_y and _wide(
        y for ln in everything for s in (ln.main, ln.second) for v in s.values() for y in v
    )
    for i, (ax, panel) in enumerate(zip(axes, order, strict=False)):
        for (model, style), line in sorted(
            panels[panel].items(), key=lambda kv: (_order(kv[0][0]), _order(kv[0][1]))
        ):
            ls, marker = styles[style]
            colour = look.colours.get(model, "k")
            name = show(model) + (f", {enc.style_key}={show(style)}" if enc.style_key else "")
            kind, counts = _curve(
                ax,
                line.main,
                label=f"{name}: {spec.main}" if spec.main else name,
                colour=colour,
                linestyle=ls,
                marker=marker,
                marked=enc.style_key is not None,
                spread=True,
            )
            if kind:
                spread.setdefault(kind, set()).update(counts)
            if line.second:
                _curve(
                    ax,
                    line.second,
                    label=f"{name}: {spec.second}",
                    colour=_lighter(colour),
                    # Dotted, or where line styles tell a key apart, that line's style.
                    linestyle=ls if enc.style_key else ":",
                    marker=marker,
                    marked=False,
                    spread=False,
                )
                drew_second = True
        if log_x:
            ax.set_xscale("log")
        if log_y:
            ax.set_yscale("log")
        for base in sorted(spec.baselines.get(panel, ())):
            if ax.get_yscale() == "linear" or base > 0:
                ax.axhline(base, label="baseline", **_BASELINE)
                drew_baseline = True
        if spec.ylim:
            ax.set_ylim(*spec.ylim)
        if ax.get_xscale() == "linear":
            ax.xaxis.set_major_locator(
                MaxNLocator(nbins=5 if ncols > 1 else 7, integer=spec.integer_x)
            )
        ax.grid(True, alpha=0.3)
        ax.tick_params(labelsize=7)
        if enc.facets:
            ax.set_title(_wrap(enc.panel_title(panel), panel_w, 8))
        if i + ncols >= len(order):  # no panel below: label the x axis
            ax.set_xlabel(_wrap(spec.xlabel, panel_w, 8))
        if i % ncols == 0:
            ax.set_ylabel(_wrap(spec.ylabel, look.panel_height(ncols), 8))
    handles: list[Artist] = [
        Line2D([], [], color=look.colours.get(m, "k"), linewidth=2)
        for m in sorted({m for p in panels.values() for m, _ in p}, key=_order)
    ]
    labels = [show(m) for m in sorted({m for p in panels.values() for m, _ in p}, key=_order)]
    if enc.style_key:
        for v, (ls, marker) in styles.items():
            handles.append(Line2D([], [], color=_KEY, linestyle=ls, marker=marker))
            labels.append(f"{enc.style_key}={show(v)}")
    if drew_second:
        handles += [
            Line2D([], [], color=_KEY),
            Line2D([], [], color=_lighter(_KEY), linestyle="-" if enc.style_key else ":"),
        ]
        labels += [spec.main, spec.second]
    if drew_baseline:
        handles.append(Line2D([], [], **_BASELINE))
        labels.append("baseline")
    if spread:
        ns = sorted(set().union(*spread.values()))
        n = str(ns[0]) if len(ns) == 1 else f"{ns[0]}–{ns[-1]}"
        what = " or ".join(sorted(spread))
        if "band" in spread:
            handles.append(Patch(facecolor=_KEY, alpha=0.25, linewidth=0))
        else:
            handles.append(Line2D([], [], color=_KEY, marker="|", markersize=7, linestyle=""))
        labels.append(f"{what}: min–max, {n} {spec.unit}")
    title = spec.title + (f" ({enc.context()})" if enc.context() else "")
    _finish(fig, look, _wrap(title, look.width, 9), handles, labels, nrows, ncols)
    return fig


def _curve(
    ax: Axes,
    series: Series,
    *,
    label: str,
    colour: Any,
    linestyle: Any,
    marker: str,
    marked: bool,
    spread: bool,
) -> tuple[str | None, set[int]]:
    """The mean of `series` as a line (called `label`; markers at every point of a short line,
    and spaced along a long one where `marked`); with `spread`, its min-max as a band (bars on
    a short line) at the points where two or more values pool. Returns "band", "bars" or
    None, as drawn, and how many values pool at the points it spans."""
    xs = np.array(sorted(series))
    if not xs.size:
        return None, set()
    vals = [np.array(series[x]) for x in xs]
    mean = np.array([v.mean() for v in vals])
    short = xs.size < _SHORT
    ax.plot(
        xs,
        mean,
        color=colour,
        linestyle=linestyle,
        marker=marker if short or marked else None,
        markevery=None if short else max(1, xs.size // 6),
        linewidth=1.2 if spread else 1.0,
        label=label,
    )
    counts = np.array([v.size for v in vals])
    ok = counts >= 2
    if not spread or not ok.any():
        return None, set()
    lo = np.array([v.min() for v in vals])
    hi = np.array([v.max() for v in vals])
    if short:
        ax.errorbar(
            xs[ok],
            mean[ok],
            yerr=[mean[ok] - lo[ok], hi[ok] - mean[ok]],
            fmt="none",
            ecolor=colour,
            elinewidth=0.8,
            capsize=2,
        )
        return "bars", set(counts[ok].tolist())
    ax.fill_between(xs, lo, hi, where=ok, color=colour, alpha=0.2, linewidth=0)
    return "band", set(counts[ok].tolist())


def _wrap(text: str, inches: float, points: float) -> str:
    """`text` broken into lines that fit `inches` at `points` (a generous glyph width)."""
    return textwrap.fill(text, max(12, int((inches - 0.2) * 72 / (0.6 * points))))


def _finish(
    fig: Figure,
    look: _Look,
    title: str,
    handles: list[Artist],
    labels: list[str],
    nrows: int,
    ncols: int,
) -> None:
    """Title, the legend under the panels in as many columns as fit the width, and the height
    that gives each panel row its height beside them."""
    suptitle = fig.suptitle(title)
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    legend = None
    for cols in range(min(len(handles), 6), 0, -1):
        legend = fig.legend(
            handles,
            labels,
            loc="outside lower center",
            ncols=cols,
            frameon=False,
            handlelength=2.6,
            columnspacing=1.2,
        )
        if legend.get_window_extent(renderer).width <= 0.97 * look.width * fig.dpi or cols == 1:
            break
        legend.remove()
    extra = suptitle.get_window_extent(renderer).height / fig.dpi + 0.2
    if legend is not None:
        extra += legend.get_window_extent(renderer).height / fig.dpi
    fig.set_size_inches(look.width, nrows * look.panel_height(ncols) + extra)
    fig.draw_without_rendering()  # lay out at the final size (and make the tick labels)


def _wide(values: Iterable[float]) -> bool:
    """Whether `values` are all positive and span two decades or more: a log axis (the same
    for every panel of a figure, so panels compare at a glance)."""
    vals = np.array([v for v in values if np.isfinite(v)], dtype=float)
    return bool(vals.size and (vals > 0).all() and vals.max() / vals.min() >= 100)


def _good_seeds(run: dict[str, Any]) -> list[int]:
    """Indices of the seeds that did not diverge."""
    bad = {str(s) for s in (run.get("diverged") or {})}
    return [i for i, s in enumerate(run.get("seeds") or []) if str(s) not in bad]


def _by_task(runs: list[dict[str, Any]]) -> dict[Any, list[dict[str, Any]]]:
    out: dict[Any, list[dict[str, Any]]] = {}
    for r in sorted(runs, key=lambda r: str(r.get("task"))):
        out.setdefault(r.get("task"), []).append(r)
    return out


# ---------------------------------------------------------------------------------------------
# The figure kinds: each returns its figures [(file stem, figure)] and why it drew none.


def read_metrics_jsonl(run: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The rows of the run's metrics.jsonl; None when there is none."""
    path = Path(run["path"]) / "metrics.jsonl"
    if not path.exists():
        return None
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except (OSError, ValueError) as e:
        raise ReportError(f"{path}: unreadable ({str(e).splitlines()[0]})") from None


@dataclass
class _RunCurves:
    """One run's learning curves by step: per-member losses, and train/seconds."""

    val: dict[int, list] = field(default_factory=dict)
    train: dict[int, list] = field(default_factory=dict)
    seconds: dict[int, float] = field(default_factory=dict)


def _run_curves(run: dict[str, Any], rows: list[dict[str, Any]]) -> _RunCurves:
    c = _RunCurves()
    for row in rows:
        step = row.get("step")
        if not isinstance(step, int):
            continue
        if isinstance(row.get("train/seconds"), (int, float)):
            c.seconds[step] = float(row["train/seconds"])
        if isinstance(row.get("val/loss"), list):
            c.val[step] = own_values(run, row["val/loss"])
            # train/loss beside val/loss is evaluated like it; alone (an older file) it is a
            # minibatch's loss, not comparable, and not drawn
            if isinstance(row.get("train/loss"), list):
                c.train[step] = own_values(run, row["train/loss"])
    return c


def _learning_curves(runs: list[dict[str, Any]], look: _Look, x: str) -> _Made:
    cache: dict[str, list[dict[str, Any]] | None] = {}
    logged = []
    untimed = []
    for run in runs:
        if run["path"] not in cache:  # a population's grid points share one file
            cache[run["path"]] = read_metrics_jsonl(run)
        rows = cache[run["path"]]
        if not rows:
            continue
        curves = _run_curves(run, rows)
        if not curves.val:
            continue
        if x == "seconds" and not all(s in curves.seconds for s in curves.val):
            untimed.append(run)
            continue
        logged.append((run, curves))
    notes = []
    if untimed and not logged:
        return [], [
            "skipped learning curves against seconds: no metrics.jsonl has train/seconds "
            "(files written before it was logged)"
        ]
    if untimed:
        names = sorted({Path(r["path"]).name for r in untimed})
        more = f", … ({len(names)} in all)" if len(names) > 3 else ""
        notes.append(
            f"learning curves: left out {len(untimed)} run{'s' if len(untimed) > 1 else ''} "
            f"without train/seconds (an older metrics.jsonl): {', '.join(names[:3])}{more}"
        )
    untrained = [r for r, c in logged if not c.train]
    if untrained:
        notes.append(
            f"learning curves: {len(untrained)} run{'s' if len(untrained) > 1 else ''} without "
            "an evaluated train loss (an older metrics.jsonl): validation only"
        )
    if not logged:
        return [], ["skipped learning curves: no run has a metrics.jsonl with val/loss"]
    figs = []
    for task, task_runs in _by_task([r for r, _ in logged]).items():
        enc = _Encoding.of(task_runs, (), ("seq_len",))
        panels: Panels = {}
        steps: dict[tuple, tuple[dict, dict, dict]] = {}  # line -> by step: val, train, secs
        baselines: dict[tuple, set[float]] = {}
        for run, curves in logged:
            if run.get("task") != task:
                continue
            line = _line(panels, enc, run)
            val, train, secs = steps.setdefault((enc.panel(run), enc.line(run)), ({}, {}, {}))
            stop = {
                str(s): int(st) for s, st in (run.get("diverged") or {}).items() if st is not None
            }
            for src, dst in ((curves.val, val), (curves.train, train)):
                for step, values in src.items():
                    for s, v in zip(run.get("seeds") or [], values, strict=False):
                        if str(s) not in stop or step < stop[str(s)]:
                            _add(dst, step, v)
            for step, sec in curves.seconds.items():
                secs.setdefault(step, []).append(sec)
            base = (run.get("baselines") or {}).get("loss")
            if isinstance(base, (int, float)) and math.isfinite(base):
                baselines.setdefault(enc.panel(run), set()).add(float(base))
        for (panel, key), (val, train, secs) in steps.items():
            line = panels[panel][key]
            if x == "seconds":  # pooled runs' seconds differ: a step's x is their mean
                at = {s: float(np.mean(t)) for s, t in secs.items()}
                val = {at[s]: v for s, v in val.items()}
                train = {at[s]: v for s, v in train.items() if s in at}
            line.main, line.second = val, train
        panels = {p: ls for p, ls in panels.items() if any(ln.main for ln in ls.values())}
        if not panels:
            continue
        has_train = any(ln.second for ls in panels.values() for ln in ls.values())
        spec = _Spec(
            title=f"{'Validation and train' if has_train else 'Validation'} loss during training",
            xlabel="training step" if x == "steps" else "training time (s)",
            ylabel=f"loss ({loss_unit(task)})",
            unit="seeds",
            log_x=False,
            integer_x=x == "steps",
            main="validation",
            second="train",
            baselines=baselines,
        )
        enc.fixed = [("task", task), *enc.fixed]
        figs.append((f"learning_curves_{show(task)}", _draw(look, enc, panels, spec)))
    return figs, notes


def _vs(
    runs: list[dict[str, Any]],
    look: _Look,
    x_key: str,
    values: Callable[[dict[str, Any]], list[float | None]],
    what: str,
    stem: str,
    spec: Callable[[Any], _Spec],
) -> _Made:
    """Values of each run (one per run or per seed) against `x_key`, one figure; panels per
    task first. `spec(task)` says what to write (task None: several tasks)."""
    measured = [
        (run, ys)
        for run in runs
        if (ys := [y for y in values(run) if y is not None and math.isfinite(y)])
    ]
    enc = _Encoding.of([r for r, _ in measured], (x_key,), ("task",))
    panels: Panels = {}
    for run, ys in measured:
        line = _line(panels, enc, run)
        for y in ys:
            _add(line.main, key_value(run, x_key), y)
    if not any(len(ln.main) >= 2 for ls in panels.values() for ln in ls.values()):
        return [], [f"skipped {what}: no line has two or more {x_key} values"]
    tasks = {r.get("task") for r, _ in measured}
    return [(stem, _draw(look, enc, panels, spec(tasks.pop() if len(tasks) == 1 else None)))], []


def _run_level(
    runs: list[dict[str, Any]],
    look: _Look,
    value: Callable[[dict[str, Any]], float | None],
    what: str,
    stem: str,
    ylabel: str,
) -> _Made:
    """One value per run against seq_len."""
    return _vs(
        runs,
        look,
        "seq_len",
        lambda r: [value(r)],
        what,
        stem,
        lambda task: _Spec(what[0].upper() + what[1:], "sequence length (steps)", ylabel, "runs"),
    )


def _step_time(runs: list[dict[str, Any]], look: _Look) -> _Made:
    return _run_level(
        runs,
        look,
        lambda r: (r.get("speed") or {}).get("step_time_ms"),
        "step time vs sequence length",
        "step_time_vs_seq_len",
        "step time (ms)",
    )


def _memory(runs: list[dict[str, Any]], look: _Look) -> _Made:
    def mib(r: dict[str, Any]) -> float | None:
        b = (r.get("memory") or {}).get("train_step_bytes")
        return None if b is None else b / 2**20

    return _run_level(
        runs,
        look,
        mib,
        "train-step memory vs sequence length",
        "memory_vs_seq_len",
        "train-step memory (MiB)",
    )


def _gap(runs: list[dict[str, Any]], look: _Look) -> _Made:
    def gaps(r: dict[str, Any]) -> list[float | None]:
        vals = (r.get("metrics") or {}).get("gap") or []
        return [vals[i] for i in _good_seeds(r) if i < len(vals)]

    def spec(task: Any) -> _Spec:
        unit = loss_unit(task) if task is not None else "loss units of each task"
        return _Spec(
            "Generalisation gap vs training set size",
            "training examples",
            f"gap, val − train loss ({unit})",
            "seeds",
            log_y=False,
        )

    return _vs(runs, look, "train_size", gaps, "generalisation gap", "gap_vs_train_size", spec)


def _per_seed(
    runs: list[dict[str, Any]],
    look: _Look,
    parts: Sequence[str],
    x_name: str,
    y_name: str,
    what: str,
    facets_first: Sequence[str],
) -> tuple[_Encoding, Panels] | str:
    """results[part] = {x_name: [...], y_name: [[per x] per seed]} for each of `parts` (the
    first solid, a second lighter): the panels, or why there is nothing to draw."""
    recorded = [r for r in runs if any(isinstance(r.get(p), dict) for p in parts)]
    if not recorded:
        return f"skipped {what}: no run records {parts[0]}"
    enc = _Encoding.of(recorded, (), facets_first)
    panels: Panels = {}
    xs_seen: set[float] = set()
    for run in recorded:
        line = _line(panels, enc, run)
        good = _good_seeds(run)
        for part, series in zip(parts, (line.main, line.second), strict=False):
            rec = run.get(part)
            if not isinstance(rec, dict):
                continue
            xs, per_seed = rec.get(x_name) or [], rec.get(y_name) or []
            for i in good:
                for x, y in zip(xs, per_seed[i] if i < len(per_seed) else [], strict=False):
                    _add(series, x, y)
            xs_seen |= set(series)
    if len(xs_seen) < 2:
        return f"skipped {what}: fewer than two {x_name} values"
    return enc, panels


def _recall(runs: list[dict[str, Any]], look: _Look) -> _Made:
    got = _per_seed(runs, look, ["recall"], "lags", "accuracy", "recall accuracy vs lag", ["task"])
    if isinstance(got, str):
        return [], [got]
    enc, panels = got
    spec = _Spec(
        "Recall accuracy vs lag",
        "lag (steps)",
        "recall accuracy (fraction correct)",
        "seeds",
        log_y=False,
        ylim=(-0.02, 1.02),
    )
    return [("recall_vs_lag", _draw(look, enc, panels, spec))], []


def _grad_norms(runs: list[dict[str, Any]], look: _Look) -> _Made:
    got = _per_seed(
        runs,
        look,
        ["grad_norms", "grad_norms_init"],
        "t",
        "norm",
        "gradient norm vs time step",
        ["task", "seq_len"],
    )
    if isinstance(got, str):
        return [], [got]
    enc, panels = got
    steps = {(r.get("grad_norms") or {}).get("step") for r in runs if r.get("grad_norms")}
    after = f"final (step {steps.pop()})" if len(steps) == 1 and None not in steps else "final"
    spec = _Spec(
        "Gradient norm vs time step",
        "time step t",
        "‖dL/dh_t‖, layer 1 (per example)",
        "seeds",
        main=after,
        second="initial (step 0)",
    )
    return [("grad_norm_vs_t", _draw(look, enc, panels, spec))], []
