"""Reading finished runs back: per-sweep summaries and paper-style comparison tables.

Two entry points:

* `summary_table` / `SweepSummary`: one Markdown row per run, written to `summary.md` at the end
  of a Hydra multirun.
* `grubench-report DIR...` (`main`): every results.json below the given directories, pivoted
  into one table of a single metric. Rows and columns are keyed by flat result keys (model,
  task, hidden, depth, seq_len, train_size, params) or dotted config keys (trainer.lr, ...).

The table's contract:

* A cell pools every run whose row and column keys match; runs that differ only in seed are
  pooled as more seeds. If the pooled runs differ in anything else, a note under the table says
  which keys, so nothing is averaged over unknowingly.
* A cell shows mean ± sample std (ddof=1) over the pooled values and `n`, the number of values.
  Per-seed metrics (`metrics.*`) pool seeds; per-run quantities (speed.*, memory.*, params,
  wall_s) pool runs, one value each, and say so under the table.
* Diverged seeds and failed runs never enter a mean and are never dropped silently: the cell
  counts them beside n (n + diverged + failed + missing = every seed the cell's runs tried) and a
  note under the table names each such run.
* The best cell of each row (two or more cells with values) is bold: lower is better for losses,
  gaps, MSE, times, bytes, compile time and parameter counts; higher for accuracies and
  tokens/s; a metric of neither kind gets no bold.
* `--paper NAME` adds the published number (grubench/papers.json) beside each cell whose task,
  model, metric and seq_len the paper reports, and prints the citation under the table.
* Bad input (no results.json, an unreadable directory or file, an unknown key, metric or paper)
  ends with one line `grubench-report: error: ...` on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import csv
import difflib
import io
import json
import math
import os
import statistics
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from grubench.results import SCHEMA, atomic_write_text, read


def _mean_std(xs: list) -> str:
    xs = [x for x in xs if x is not None and math.isfinite(x)]
    if not xs:
        return "n/a"
    if len(xs) == 1:
        return f"{xs[0]:.4f}"
    return f"{statistics.fmean(xs):.4f} ± {statistics.stdev(xs):.4f}"


def _markdown_grid(cells: list[list[str]]) -> str:
    """A padded Markdown table: the first row is the header."""
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    fmt = lambda row: "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([fmt(cells[0]), sep, *map(fmt, cells[1:])])


def summary_table(runs: list[dict[str, Any]]) -> str:
    """One Markdown row per run: what it was, its test numbers (mean ± std over seeds), speed."""
    head = ["model", "task", "seq_len", "hidden", "depth", "params", "seeds", "status",
            "test_loss", "baseline", "test_accuracy", "step_ms"]
    rows = []
    for r in runs:
        m, sp = r.get("metrics", {}), r.get("speed", {})
        base = r.get("baselines", {}).get("loss")
        rows.append([
            r.get("model"), r.get("task"), r.get("seq_len"), r.get("hidden"), r.get("depth"),
            r.get("params"), len(r.get("seeds", [])), r.get("status"),
            _mean_std(m.get("test_loss", [])), "n/a" if base is None else f"{base:.4f}",
            _mean_std(m.get("test_accuracy", [])),
            f"{sp['step_time_ms']:.2f}" if "step_time_ms" in sp else "n/a",
        ])
    return _markdown_grid([head] + [[str(c) for c in row] for row in rows])


try:
    from hydra.experimental.callback import Callback
except ImportError:  # pragma: no cover - hydra is a dependency; keep report importable alone
    Callback = object  # type: ignore[misc,assignment]


class SweepSummary(Callback):
    """Hydra callback: at the end of a multirun, print the sweep's runs side by side and write
    them to summary.md in the sweep directory; write report.md, the default comparison table
    (test_loss by task, seq_len x model); and with `logger=wandb`, log the table and the plots
    to W&B in the sweep's group."""

    def on_multirun_end(self, config, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        try:
            runs = read_runs([sweep_dir])
        except ReportError:
            return
        table = summary_table(runs)
        atomic_write_text(sweep_dir / "summary.md", table + "\n")
        print(f"\n{table}\n(written to {sweep_dir / 'summary.md'})", flush=True)
        if "test_loss" in available_metrics(runs):
            pivot = build_table(runs, ["task", "seq_len"], ["model"], "test_loss", None)
            atomic_write_text(sweep_dir / "report.md", render_markdown(pivot) + "\n")
        logger = getattr(config, "logger", None)
        if logger is not None and logger.name == "wandb":
            from grubench.plots import write_plots
            from grubench.tracking import log_sweep

            plots = write_plots(runs, sweep_dir / "plots")
            log_sweep(logger, logger.group or sweep_dir.name, sweep_dir, runs, plots.files)


# ---------------------------------------------------------------------------------------------
# Runs and their keys


class ReportError(Exception):
    """Bad input to the report: the message is one line, printed without a traceback."""


FLAT_KEYS = ("model", "task", "hidden", "depth", "seq_len", "train_size", "params")
# The config key each flat key copies; `params` is counted, not configured.
FLAT_TO_CONFIG = {"model": "model.name", "task": "task.name", "hidden": "model.hidden",
                  "depth": "model.depth", "seq_len": "task.seq_len",
                  "train_size": "task.train_size"}
CONFIG_TO_FLAT = {v: k for k, v in FLAT_TO_CONFIG.items()}
# Config keys that change nothing measured, or follow from another key: two runs differing only
# in these (and the seed) are the same experiment.
_SAME_EXPERIMENT = {"seed", "trainer.seeds", "trainer.progress", "trainer.resume",
                    "trainer.checkpoint_every", "trainer.keep_checkpoints",
                    "trainer.eval_batch_size", "model.cell", "model.reset_after"}
_MISSING = object()


def read_runs(dirs: Sequence[str | Path]) -> list[dict[str, Any]]:
    """Every results.json below `dirs` (or named directly), sorted by path, each with its
    directory under "path". Raises ReportError for a missing or unreadable directory, an
    unreadable or foreign results.json, or when none is found."""
    found: set[Path] = set()
    for d in dirs:
        p = Path(d)
        if p.is_file() and p.name == "results.json":
            found.add(p)
            continue
        if not p.exists():
            raise ReportError(f"{d}: no such directory")
        if not p.is_dir():
            raise ReportError(f"{d}: not a directory (give sweep or run directories)")
        if not os.access(p, os.R_OK | os.X_OK):
            raise ReportError(f"{d}: directory not readable")

        def walk_error(e: OSError) -> None:
            raise ReportError(f"{e.filename}: directory not readable ({e.strerror})")

        for root, _, files in os.walk(p, onerror=walk_error):
            if "results.json" in files:
                found.add(Path(root) / "results.json")
    if not found:
        raise ReportError(f"no results.json found under {', '.join(map(str, dirs))}")
    runs = []
    for path in sorted(found):
        try:
            res = read(path)
        except (OSError, ValueError) as e:
            raise ReportError(f"{path}: unreadable ({str(e).splitlines()[0]})") from None
        if not isinstance(res, dict) or res.get("schema") != SCHEMA:
            got = res.get("schema") if isinstance(res, dict) else type(res).__name__
            raise ReportError(f"{path}: not a grubench results file of schema {SCHEMA} "
                              f"(schema {got})")
        runs.append(res | {"path": str(path.parent)})
    return runs


def canonical_key(key: str) -> str:
    """The flat name of a config key that has one (model.hidden -> hidden), else the key."""
    return CONFIG_TO_FLAT.get(key, key)


def _config_lookup(config: Any, key: str) -> Any:
    node = config
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return _MISSING
        node = node[part]
    return _MISSING if isinstance(node, dict) else node


def _hashable(v: Any) -> Any:
    return tuple(_hashable(x) for x in v) if isinstance(v, list) else v


def key_value(run: dict[str, Any], key: str) -> Any:
    """The value of a flat or dotted config key for `run`; None where the run lacks it."""
    key = canonical_key(key)
    if key in FLAT_KEYS and key in run:
        return _hashable(run[key])
    v = _config_lookup(run.get("config") or {}, FLAT_TO_CONFIG.get(key, key))
    return None if v is _MISSING else _hashable(v)


def flat_config(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config as {dotted.key: value}, lists as tuples."""
    out: dict[str, Any] = {}
    for k, v in config.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict):
            out |= flat_config(v, name + ".")
        else:
            out[name] = _hashable(v)
    return out


def run_description(run: dict[str, Any]) -> dict[str, Any]:
    """What makes `run` the experiment it is: the flat keys (except params) and every other
    config key that changes a measurement; seeds, logging and checkpointing left out."""
    desc = {k: key_value(run, k) for k in FLAT_KEYS if k != "params"}
    for k, v in flat_config(run.get("config") or {}).items():
        if k in CONFIG_TO_FLAT or k in _SAME_EXPERIMENT or k.startswith("logger."):
            continue
        desc[k] = v
    return desc


def varying_keys(runs: Iterable[dict[str, Any]]) -> list[str]:
    """The description keys whose values differ between `runs`, flat keys first."""
    descs = [run_description(r) for r in runs]
    keys = list(dict.fromkeys(k for d in descs for k in d))
    return [k for k in keys if len({d.get(k, _MISSING) for d in descs}) > 1]


def check_keys(runs: list[dict[str, Any]], keys: Sequence[str], option: str) -> None:
    """ReportError unless every key is a flat key or a config key some run has."""
    for key in keys:
        if canonical_key(key) in FLAT_KEYS:
            continue
        if any(_config_lookup(r.get("config") or {}, key) is not _MISSING for r in runs):
            continue
        known = sorted(set(FLAT_KEYS) | {k for r in runs for k in flat_config(r.get("config")
                                                                                  or {})})
        close = difflib.get_close_matches(key, known, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ReportError(f"unknown key {key!r} in {option}: use one of {', '.join(FLAT_KEYS)} "
                          f"or a dotted config key such as trainer.lr{hint}")


def show(v: Any) -> str:
    """A key value as a table shows it."""
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, tuple):
        return "[" + ", ".join(map(show, v)) + "]"
    return str(v)


def _sort_key(values: tuple) -> tuple:
    def one(v: Any) -> tuple:
        if isinstance(v, bool):
            return (1, str(v))
        if isinstance(v, int | float):
            return (0, v, "")
        return (2, "") if v is None else (1, str(v))

    return tuple(one(v) for v in values)


# ---------------------------------------------------------------------------------------------
# Metrics

RUN_LEVEL_PREFIXES = ("speed.", "memory.")
_RUN_LEVEL_NAMES = ("params", "wall_s")


def direction(metric: str) -> Literal["lower", "higher"] | None:
    """Which way is better for `metric`, by its name; None when the name does not say."""
    name = metric.lower()
    if any(s in name for s in ("accuracy", "tokens_per_s", "solved")):
        return "higher"
    if any(s in name for s in ("loss", "gap", "mse", "time", "bytes", "compile", "params",
                               "wall", "diverged", "_ms")):
        return "lower"
    return None


def is_run_level(metric: str) -> bool:
    """Measured once per run (all seeds together) rather than once per seed."""
    return metric.startswith(RUN_LEVEL_PREFIXES) or metric in _RUN_LEVEL_NAMES


def _raw_metric(run: dict[str, Any], metric: str) -> Any:
    if metric.startswith(RUN_LEVEL_PREFIXES):
        group, name = metric.split(".", 1)
        return (run.get(group) or {}).get(name, _MISSING)
    if metric in _RUN_LEVEL_NAMES:
        return run.get(metric, _MISSING)
    return (run.get("metrics") or {}).get(metric, _MISSING)


def available_metrics(runs: Iterable[dict[str, Any]]) -> list[str]:
    """Every metric name some run records."""
    names: set[str] = set(_RUN_LEVEL_NAMES)
    for r in runs:
        names |= set(r.get("metrics") or {})
        for group in ("speed", "memory"):
            names |= {f"{group}.{k}" for k in (r.get(group) or {})}
    return sorted(names)


def _number(v: Any) -> float | None:
    if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
        return float(v)
    return None


def _is_numeric(v: Any) -> bool:
    return v is None or (isinstance(v, int | float) and not isinstance(v, bool))


def check_metric(runs: list[dict[str, Any]], metric: str) -> None:
    """ReportError unless some run records `metric` and its values are numbers."""
    if metric not in available_metrics(runs):
        raise ReportError(f"unknown metric {metric!r}: choose from "
                          f"{', '.join(available_metrics(runs))}")
    raws = [v for r in runs if (v := _raw_metric(r, metric)) is not _MISSING]
    values = [x for v in raws for x in (v if isinstance(v, list) else [v])]
    if not all(_is_numeric(x) for x in values):
        raise ReportError(f"metric {metric!r} is not numeric")


def samples(run: dict[str, Any], metric: str) -> list[tuple[int | None, float | None, str]]:
    """(seed, value, state) for each value `run` contributes to `metric`: one per seed, or one
    per run for run-level metrics (seed None). state is ok, diverged (the seed's loss went
    non-finite), failed (the run raised; it contributes no numbers) or missing (a finished
    run without a finite value); value is None unless state is ok."""
    seeds = list(run.get("seeds") or [])
    if is_run_level(metric):
        if run.get("status") == "failed":
            return [(None, None, "failed")]
        v = _number(_raw_metric(run, metric))
        return [(None, v, "ok" if v is not None else "missing")]
    if run.get("status") == "failed":
        return [(s, None, "failed") for s in seeds] or [(None, None, "failed")]
    if not seeds:
        return [(None, None, "missing")]
    # `diverged` (1 per diverged seed, 0 per other) is about divergence: every seed counts.
    diverged = set() if metric == "diverged" else {str(s) for s in (run.get("diverged") or {})}
    raw = _raw_metric(run, metric)
    values = raw if isinstance(raw, list) else []
    out = []
    for i, s in enumerate(seeds):
        v = _number(values[i]) if i < len(values) else None
        state = "diverged" if str(s) in diverged else "ok" if v is not None else "missing"
        out.append((s, v if state == "ok" else None, state))
    return out


# ---------------------------------------------------------------------------------------------
# Papers


def load_papers() -> dict[str, dict[str, Any]]:
    """The published reference numbers shipped in grubench/papers.json, by short name."""
    text = resources.files("grubench").joinpath("papers.json").read_text()
    return json.loads(text)["papers"]


def load_paper(name: str) -> dict[str, Any]:
    """One paper's entry; ReportError naming the known ones when there is no such paper."""
    papers = load_papers()
    if name not in papers:
        raise ReportError(f"unknown paper {name!r}: known papers are {', '.join(sorted(papers))}")
    return papers[name] | {"name": name}


def paper_value(paper: dict[str, Any], task: Any, model: Any, metric: str,
                seq_len: Any) -> dict[str, Any] | None:
    """The paper's result for this task/model/metric (and seq_len, where it states one)."""
    for r in paper["results"]:
        if (r["task"], r["model"], r["metric"]) != (task, model, metric):
            continue
        if r.get("seq_len") is None or r["seq_len"] == seq_len:
            return r
    return None


# ---------------------------------------------------------------------------------------------
# The table


@dataclass
class Cell:
    """The pooled values of one (row, column)."""

    mean: float
    std: float  # NaN when n < 2
    n: int
    diverged: int = 0
    failed: int = 0
    missing: int = 0
    best: bool = False
    paper: float | None = None


@dataclass
class Table:
    """A pivoted metric: rows x cols of Cells (None where no run falls), and notes to print."""

    metric: str
    row_keys: list[str]
    col_keys: list[str]
    rows: list[tuple]
    cols: list[tuple]
    cells: dict[tuple[tuple, tuple], Cell]
    paper_cols: list[tuple] = field(default_factory=list)  # cols that get a paper column
    notes: list[str] = field(default_factory=list)

    def row_label(self, row: tuple) -> list[str]:
        return [show(v) for v in row]

    def col_label(self, col: tuple) -> str:
        if len(self.col_keys) == 1 and canonical_key(self.col_keys[0]) in ("model", "task"):
            return show(col[0])
        return ", ".join(f"{k}={show(v)}" for k, v in zip(self.col_keys, col, strict=True))


def _where(keys: Sequence[str], values: tuple) -> str:
    return ", ".join(f"{k}={show(v)}" for k, v in zip(keys, values, strict=True))


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def build_table(runs: list[dict[str, Any]], rows: Sequence[str], cols: Sequence[str],
                metric: str, paper: dict[str, Any] | None = None) -> Table:
    """Pivot `metric` over `runs` into rows x cols (see the module docstring)."""
    import pandas as pd

    rows, cols = list(rows), list(cols)
    if not rows or not cols:
        raise ReportError("--rows and --cols each need at least one key")
    both = {canonical_key(k) for k in rows} & {canonical_key(k) for k in cols}
    if both:
        raise ReportError(f"key {sorted(both)[0]!r} is in both --rows and --cols")
    check_keys(runs, rows, "--rows")
    check_keys(runs, cols, "--cols")
    check_metric(runs, metric)

    records = []
    run_cell: list[tuple[tuple, tuple]] = []
    row_id: dict[tuple, int] = {}
    col_id: dict[tuple, int] = {}
    for i, run in enumerate(runs):
        row = tuple(key_value(run, k) for k in rows)
        col = tuple(key_value(run, k) for k in cols)
        run_cell.append((row, col))
        r, c = row_id.setdefault(row, len(row_id)), col_id.setdefault(col, len(col_id))
        for _, value, state in samples(run, metric):
            records.append({"row": r, "col": c, "run": i, "state": state,
                            "value": math.nan if value is None else value})
    df = pd.DataFrame.from_records(records)
    # Pivots: per cell, the statistics of the values that count, and the count of each state.
    stats = (df[df["state"] == "ok"].groupby(["row", "col"])["value"]
             .agg(["mean", "std", "count"]).to_dict("index"))
    states = (df.pivot_table(index=["row", "col"], columns="state", values="run",
                             aggfunc="count", fill_value=0).to_dict("index"))
    rows_by_id = {v: k for k, v in row_id.items()}
    cols_by_id = {v: k for k, v in col_id.items()}
    cells: dict[tuple[tuple, tuple], Cell] = {}
    for (r, c), counts in states.items():
        st = stats.get((r, c), {"mean": math.nan, "std": math.nan, "count": 0})
        cells[(rows_by_id[r], cols_by_id[c])] = Cell(
            float(st["mean"]), float(st["std"]), int(st["count"]),
            int(counts.get("diverged", 0)), int(counts.get("failed", 0)),
            int(counts.get("missing", 0)))
    row_values = sorted({r for r, _ in cells}, key=_sort_key)
    col_values = sorted({c for _, c in cells}, key=_sort_key)

    better = direction(metric)
    if better is not None:
        for row in row_values:
            scored = [c for col in col_values if (c := cells.get((row, col))) and c.n > 0]
            if len(scored) < 2:
                continue
            pick = min if better == "lower" else max
            best = pick(c.mean for c in scored)
            for c in scored:
                c.best = c.mean == best

    table = Table(metric, rows, cols, row_values, col_values, cells)
    unit = "runs (measured once per run, all seeds together)" if is_run_level(metric) \
        else "seeds"
    caption = f"{metric}: mean ± std (ddof=1) over {unit}; n = values pooled per cell"
    if better is not None:
        caption += f"; {better} is better, best of each row in bold"
    table.notes.append(caption + ".")
    table.notes += _status_notes(runs, run_cell, rows + cols, metric)
    table.notes += _pooling_notes(runs, run_cell, rows + cols)
    if paper is not None:
        _add_paper(table, runs, run_cell, paper)
    return table


def _status_notes(runs: list[dict[str, Any]], run_cell: list[tuple[tuple, tuple]],
                  keys: list[str], metric: str) -> list[str]:
    diverged, failed = [], []
    missing: dict[str, int] = {}
    for run, (row, col) in zip(runs, run_cell, strict=True):
        where = _where(keys, row + col)
        if run.get("status") == "failed":
            failed.append(f"{where}: {run.get('error') or 'no error recorded'}")
        elif run.get("diverged") or run.get("status") == "diverged":
            steps = run.get("diverged") or {}
            what = ", ".join(f"seed {s} at step {st}" for s, st in steps.items())
            diverged.append(f"{where}: {what or run.get('error') or 'seeds not recorded'}")
        if run.get("status") != "failed" and any(st == "missing"
                                                 for _, _, st in samples(run, metric)):
            missing[where] = missing.get(where, 0) + 1
    notes = []
    if diverged:
        how = (f"they still count here: {metric} is measured once per run"
               if is_run_level(metric) else "diverged seeds are left out of the means")
        notes.append(f"diverged: {_plural(len(diverged), 'run')} ({'; '.join(diverged)}); "
                     f"{how}.")
    if failed:
        notes.append(f"failed: {_plural(len(failed), 'run')} ({'; '.join(failed)}).")
    if missing:
        where = "; ".join(w if k == 1 else f"{w}: {k} runs" for w, k in missing.items())
        notes.append(f"missing: {_plural(sum(missing.values()), 'run')} finished without a "
                     f"finite {metric} ({where}).")
    return notes


def _pooling_notes(runs: list[dict[str, Any]], run_cell: list[tuple[tuple, tuple]],
                   keys: list[str]) -> list[str]:
    by_cell: dict[tuple[tuple, tuple], list[int]] = {}
    for i, rc in enumerate(run_cell):
        by_cell.setdefault(rc, []).append(i)
    shown = {canonical_key(k) for k in keys}
    mixed: dict[tuple[str, ...], list[str]] = {}  # differing keys -> the cells
    reran: list[str] = []
    for (row, col), idx in by_cell.items():
        if len(idx) < 2:
            continue
        where = _where(keys, row + col)
        differ = tuple(k for k in varying_keys(runs[i] for i in idx) if k not in shown)
        if differ:
            mixed.setdefault(differ, []).append(where)
        seen: dict[Any, int] = {}
        for i in idx:
            for s in runs[i].get("seeds") or []:
                seen[s] = seen.get(s, 0) + 1
        dup = sorted(s for s, k in seen.items() if k > 1)
        if dup:
            reran.append(f"{where}: seed {', '.join(map(str, dup))}")
    notes = [f"pooled: {_plural(len(cells), 'cell')} ({'; '.join(cells)}) "
             f"{'mixes' if len(cells) == 1 else 'mix'} runs that differ in {', '.join(differ)}; "
             "add the keys to --rows or --cols to separate them."
             for differ, cells in mixed.items()]
    if reran:
        notes.append(f"pooled: the same seed in more than one run of a cell, each copy counted "
                     f"in n (a rerun?): {'; '.join(reran)}.")
    return notes


def _add_paper(table: Table, runs: list[dict[str, Any]],
               run_cell: list[tuple[tuple, tuple]], paper: dict[str, Any]) -> None:
    by_cell: dict[tuple[tuple, tuple], list[dict[str, Any]]] = {}
    for run, rc in zip(runs, run_cell, strict=True):
        by_cell.setdefault(rc, []).append(run)
    used = []
    for rc, members in by_cell.items():
        ident = {(r.get("task"), r.get("model"), r.get("seq_len")) for r in members}
        if len(ident) != 1:
            continue
        task, model, seq_len = ident.pop()
        ref = paper_value(paper, task, model, table.metric, seq_len)
        if ref is not None:
            table.cells[rc].paper = float(ref["value"])
            used.append(ref)
    table.paper_cols = [c for c in table.cols
                        if any(table.cells.get((r, c)) and table.cells[(r, c)].paper is not None
                               for r in table.rows)]
    cite = f"paper ({paper['name']}): {paper['citation']}"
    if used:
        details = list(dict.fromkeys(r["source"] for r in used if r.get("source")))
        table.notes.append(cite + (f" — {'; '.join(details)}." if details else ""))
    else:
        has = sorted({f"{r['task']} {r['metric']}"
                      + (f" at seq_len={r['seq_len']}" if r.get("seq_len") else "")
                      for r in paper["results"]})
        table.notes.append(f"{cite} — it reports no {table.metric} for these runs' "
                           f"task/model/seq_len (it has: {', '.join(has)}).")


def select_best(runs: list[dict[str, Any]], keys: Sequence[str], select: str,
                by: str) -> tuple[list[dict[str, Any]], str]:
    """Model selection: in each cell of `keys`, keep only the runs whose `select` value (e.g.
    trainer.lr) has the best mean `by` (e.g. best_val_loss) over its seeds; and a note saying
    what was chosen where. Failed runs and diverged seeds do not score."""
    better = direction(by)
    if better is None:
        raise ReportError(f"--by {by}: cannot tell whether lower or higher is better")
    cells: dict[tuple, dict[Any, list[dict[str, Any]]]] = {}
    for r in runs:
        cell = tuple(key_value(r, k) for k in keys)
        cells.setdefault(cell, {}).setdefault(key_value(r, select), []).append(r)
    kept: list[dict[str, Any]] = []
    chosen = []
    for cell in sorted(cells, key=_sort_key):
        scores = {}
        for value, members in cells[cell].items():
            got = [v for r in members for _, v, st in samples(r, by) if st == "ok"]
            if got:
                scores[value] = statistics.fmean(got)
        if not scores:
            continue
        pick = (min if better == "lower" else max)(scores, key=scores.get)
        kept += cells[cell][pick]
        chosen.append(f"{_where(list(keys), cell)}: {show(pick)}")
    note = (f"selected: in each cell the {select} with the {better} mean {by} over seeds — "
            + "; ".join(chosen) + ".")
    return kept, note


# ---------------------------------------------------------------------------------------------
# Rendering


def format_mean_std(mean: float, std: float) -> str:
    """`mean ± std` to three significant digits of the mean, std to the same decimals;
    scientific notation below 1e-3; just the mean when std is NaN (one value)."""
    if not math.isfinite(mean):
        return "n/a"
    scale = abs(mean) if mean != 0 else abs(std) if math.isfinite(std) else 0.0
    if 0 < scale < 1e-3:
        body = f"{mean:.2e}"
        return body if not math.isfinite(std) else f"{body} ± {std:.1e}"
    decimals = 0 if scale == 0 else max(0, 2 - math.floor(math.log10(scale)))
    body = f"{mean:.{decimals}f}"
    return body if not math.isfinite(std) else f"{body} ± {std:.{decimals}f}"


def _counts(cell: Cell) -> str:
    parts = [f"n={cell.n}"] + [f"{k} {name}" for name, k in (
        ("diverged", cell.diverged), ("failed", cell.failed), ("missing", cell.missing)) if k]
    return f"({', '.join(parts)})"


def _layout(table: Table) -> tuple[list[str], list[tuple[tuple, bool]]]:
    """The header and, for each data column, (col, is_paper_column)."""
    head = [*table.row_keys]
    columns: list[tuple[tuple, bool]] = []
    for col in table.cols:
        head.append(table.col_label(col))
        columns.append((col, False))
        if col in table.paper_cols:
            head.append(f"{table.col_label(col)} (paper)")
            columns.append((col, True))
    return head, columns


def _paper_text(cell: Cell | None) -> str:
    return "—" if cell is None or cell.paper is None else f"{cell.paper:g}"


def render_markdown(table: Table) -> str:
    """A padded Markdown table, then the notes as paragraphs."""
    head, columns = _layout(table)
    grid = [head]
    for row in table.rows:
        line = table.row_label(row)
        for col, is_paper in columns:
            cell = table.cells.get((row, col))
            if is_paper:
                line.append(_paper_text(cell))
            elif cell is None:
                line.append("—")
            else:
                body = format_mean_std(cell.mean, cell.std)
                line.append(f"{f'**{body}**' if cell.best else body} {_counts(cell)}")
        grid.append([c.replace("|", r"\|") for c in line])
    return "\n\n".join([_markdown_grid(grid), *table.notes])


def latex_escape(text: str) -> str:
    """Text safe in LaTeX: special characters escaped, ± and — as math and dashes."""
    out = []
    for ch in text:
        out.append({"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$",
                    "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
                    "^": r"\textasciicircum{}", "±": r"$\pm$", "—": "---", "–": "--",
                    "≥": r"$\geq$", "×": r"$\times$"}.get(ch, ch))
    return "".join(out)


def render_latex(table: Table) -> str:
    """A booktabs tabular, then the notes in small print."""
    head, columns = _layout(table)
    spec = "l" * len(table.row_keys) + "r" * len(columns)
    lines = [rf"\begin{{tabular}}{{{spec}}}", r"\toprule",
             " & ".join(latex_escape(h) for h in head) + r" \\", r"\midrule"]
    for row in table.rows:
        line = [latex_escape(v) for v in table.row_label(row)]
        for col, is_paper in columns:
            cell = table.cells.get((row, col))
            if is_paper:
                line.append(latex_escape(_paper_text(cell)))
            elif cell is None:
                line.append("---")
            else:
                body = latex_escape(format_mean_std(cell.mean, cell.std))
                body = rf"\textbf{{{body}}}" if cell.best else body
                line.append(f"{body} {latex_escape(_counts(cell))}")
        lines.append(" & ".join(line) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    notes = [latex_escape(n) + r"\par" for n in table.notes]
    return "\n".join(lines + ["", r"\smallskip", r"{\footnotesize", *notes, "}"])


def _csv_number(x: float | None) -> str:
    return "" if x is None or not math.isfinite(x) else repr(float(x))


def render_csv(table: Table) -> str:
    """One line per row: the row keys, then per column mean, std, n, diverged, failed, missing
    (and the paper's value where --paper gives one); full precision, empty where none."""
    head = [*table.row_keys]
    for col in table.cols:
        label = table.col_label(col)
        head += [f"{label} {s}" for s in ("mean", "std", "n", "diverged", "failed", "missing")]
        if col in table.paper_cols:
            head.append(f"{label} paper")
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(head)
    for row in table.rows:
        line = ["" if v is None else show(v) for v in row]
        for col in table.cols:
            c = table.cells.get((row, col))
            if c is None:
                line += ["", "", "0", "0", "0", "0"]
            else:
                line += [_csv_number(c.mean), _csv_number(c.std), str(c.n), str(c.diverged),
                         str(c.failed), str(c.missing)]
            if col in table.paper_cols:
                line.append(_csv_number(c.paper if c else None))
        writer.writerow(line)
    return buf.getvalue().rstrip("\n")


RENDERERS = {"markdown": render_markdown, "latex": render_latex, "csv": render_csv}


# ---------------------------------------------------------------------------------------------
# The command


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, no usage block
        raise ReportError(message)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="grubench-report",
        description="Tables (and plots) comparing runs: every results.json below DIR..., one "
                    "metric pivoted over rows x cols, mean ± std over seeds per cell.",
    )
    p.add_argument("dirs", nargs="+", metavar="DIR", help="sweep or run directories")
    p.add_argument("--rows", default="task,seq_len",
                   help="comma-separated row keys: flat (model, task, hidden, depth, seq_len, "
                        "train_size, params) or dotted config keys (default: task,seq_len)")
    p.add_argument("--cols", default="model", help="column key(s) (default: model)")
    p.add_argument("--metric", default="test_loss",
                   help="a metrics key (test_loss, val_accuracy, gap, ...), speed.KEY, "
                        "memory.KEY, params or wall_s (default: test_loss)")
    p.add_argument("--format", default="markdown", choices=sorted(RENDERERS))
    p.add_argument("--out", metavar="FILE", help="write the table here (default: stdout)")
    p.add_argument("--plots", metavar="DIR", help="also write PNG and SVG plots into DIR")
    p.add_argument("--select", metavar="KEY",
                   help="model selection: per cell keep only the runs with the best value of "
                        "KEY (e.g. trainer.lr), judged by --by")
    p.add_argument("--by", metavar="METRIC", default="best_val_loss",
                   help="the metric --select judges by (default: best_val_loss)")
    p.add_argument("--paper", metavar="NAME",
                   help="put a paper's published numbers beside ours (grubench/papers.json: "
                        + ", ".join(sorted(_paper_names())) + ")")
    return p


def _paper_names() -> list[str]:
    try:
        return list(load_papers())
    except (OSError, ValueError, KeyError):  # pragma: no cover - a broken install
        return []


def _keys(text: str) -> list[str]:
    return [k.strip() for k in text.split(",") if k.strip()]


def main(argv: Sequence[str] | None = None) -> int:
    """grubench-report: 0 on success, 2 (one line on stderr) on bad input."""
    try:
        args = _parser().parse_args(argv)
        paper = load_paper(args.paper) if args.paper else None
        runs = read_runs(args.dirs)
        selected = None
        if args.select:
            check_keys(runs, [args.select], "--select")
            check_metric(runs, args.by)
            runs, selected = select_best(runs, _keys(args.rows) + _keys(args.cols),
                                         args.select, args.by)
        table = build_table(runs, _keys(args.rows), _keys(args.cols), args.metric, paper)
        if selected:
            table.notes.append(selected)
        text = RENDERERS[args.format](table)
        if args.out:
            try:
                atomic_write_text(args.out, text + "\n")
            except OSError as e:
                raise ReportError(f"{args.out}: cannot write ({e.strerror})") from None
            print(f"wrote {args.out}", file=sys.stderr)
        else:
            print(text)
        if args.format == "csv":  # the notes have no place in the CSV itself
            for note in table.notes:
                print(note, file=sys.stderr)
        if args.plots:
            from grubench.plots import write_plots

            result = write_plots(runs, args.plots)
            for line in result.skipped:
                print(f"plots: {line}", file=sys.stderr)
            for path in result.files:
                print(f"wrote {path}", file=sys.stderr)
    except ReportError as e:
        print(f"grubench-report: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
