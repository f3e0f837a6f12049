"""Pooling runs into a comparison table: cells of mean, std and n per (row, column), the
notes that say what was pooled or left out, papers' numbers, and model selection."""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from grubench.errors import ReportError
from grubench.runs import (
    canonical_key,
    check_keys,
    check_metric,
    direction,
    is_run_level,
    key_value,
    paper_value,
    run_description,
    samples,
    show,
    sort_key,
    varying_keys,
)


@dataclass(frozen=True)
class Summary:
    """n, mean, sample std (ddof=1) and a t-based confidence interval of some values."""

    n: int
    mean: float
    std: float  # NaN when n < 2
    ci_low: float  # NaN when n < 2
    ci_high: float


def summarize(values: Sequence[float | None], level: float = 0.95) -> Summary:
    """The finite `values`' n, mean, std (ddof=1) and the Student-t interval
    mean ± t_{(1+level)/2, n-1} · std / sqrt(n) (scipy.stats); NaN where n is too small."""
    from scipy import stats as st

    xs = [float(x) for x in values if x is not None and math.isfinite(x)]
    n = len(xs)
    if n == 0:
        return Summary(0, math.nan, math.nan, math.nan, math.nan)
    mean = statistics.fmean(xs)
    if n < 2:
        return Summary(1, mean, math.nan, math.nan, math.nan)
    std = statistics.stdev(xs)
    if std == 0:
        return Summary(n, mean, 0.0, mean, mean)
    lo, hi = st.t.interval(level, n - 1, loc=mean, scale=std / math.sqrt(n))
    return Summary(n, mean, std, float(lo), float(hi))


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
    # What a cell is (the metric, mean ± std over what, which way is better): a caption.
    description: str = ""
    notes: list[str] = field(default_factory=list)  # what was pooled, left out or cited

    def row_label(self, row: tuple) -> list[str]:
        return [show(v) for v in row]

    def uniform_n(self) -> int | None:
        """The n of every cell when all cells pool the same positive number of values,
        else None (then each cell must say its own n)."""
        ns = {c.n for c in self.cells.values()}
        return ns.pop() if len(ns) == 1 and min(ns) > 0 else None

    def col_label(self, col: tuple) -> str:
        if len(self.col_keys) == 1 and canonical_key(self.col_keys[0]) in ("model", "task"):
            return show(col[0])
        return ", ".join(f"{k}={show(v)}" for k, v in zip(self.col_keys, col, strict=True))


def _where(keys: Sequence[str], values: tuple) -> str:
    return ", ".join(f"{k}={show(v)}" for k, v in zip(keys, values, strict=True))


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def build_table(
    runs: list[dict[str, Any]],
    rows: Sequence[str],
    cols: Sequence[str],
    metric: str,
    paper: dict[str, Any] | None = None,
) -> Table:
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
    counted: set[tuple] = set()
    for i, run in enumerate(runs):
        row = tuple(key_value(run, k) for k in rows)
        col = tuple(key_value(run, k) for k in cols)
        run_cell.append((row, col))
        r, c = row_id.setdefault(row, len(row_id)), col_id.setdefault(col, len(col_id))
        if is_run_level(metric) and run.get("members_index") is not None:
            # The grid points of one population share its run-level figures: count them once.
            shared = (run.get("path"), r, c)
            if shared in counted:
                continue
            counted.add(shared)
        for _, value, state in samples(run, metric):
            records.append(
                {
                    "row": r,
                    "col": c,
                    "run": i,
                    "state": state,
                    "value": math.nan if value is None else value,
                }
            )
    df = pd.DataFrame.from_records(records)
    # Pivots: per cell, the statistics of the values that count, and the count of each state.
    stats = (
        df[df["state"] == "ok"]
        .groupby(["row", "col"])["value"]
        .agg(["mean", "std", "count"])
        .to_dict("index")
    )
    states = df.pivot_table(
        index=["row", "col"], columns="state", values="run", aggfunc="count", fill_value=0
    ).to_dict("index")
    rows_by_id = {v: k for k, v in row_id.items()}
    cols_by_id = {v: k for k, v in col_id.items()}
    cells: dict[tuple[tuple, tuple], Cell] = {}
    for (r, c), counts in states.items():
        st = stats.get((r, c), {"mean": math.nan, "std": math.nan, "count": 0})
        cells[(rows_by_id[r], cols_by_id[c])] = Cell(
            float(st["mean"]),
            float(st["std"]),
            int(st["count"]),
            int(counts.get("diverged", 0)),
            int(counts.get("failed", 0)),
            int(counts.get("missing", 0)),
        )
    row_values = sorted({r for r, _ in cells}, key=sort_key)
    col_values = sorted({c for _, c in cells}, key=sort_key)

    better = direction(metric)
    if better is not None:
        for row in row_values:
            scored = [x for col in col_values if (x := cells.get((row, col))) and x.n > 0]
            if len(scored) < 2:
                continue
            pick = min if better == "lower" else max
            best = pick(x.mean for x in scored)
            for x in scored:
                x.best = x.mean == best

    table = Table(metric, rows, cols, row_values, col_values, cells)
    unit = "runs (measured once per run, all seeds together)" if is_run_level(metric) else "seeds"
    caption = f"{metric}: mean ± std (ddof=1) over {unit}; n = values pooled per cell"
    if better is not None:
        caption += f"; {better} is better, best of each row in bold"
    table.description = caption + "."
    table.notes += _status_notes(runs, run_cell, rows + cols, metric)
    table.notes += _pooling_notes(runs, run_cell, rows + cols)
    if paper is not None:
        _add_paper(table, runs, run_cell, paper)
    return table


@dataclass
class MultiTable:
    """Several metrics of the same runs pivoted over the same rows x cols: one Table per
    metric, in the order asked, and the notes of all of them, each said once."""

    tables: list[Table]
    notes: list[str] = field(default_factory=list)

    @property
    def metrics(self) -> list[str]:
        return [t.metric for t in self.tables]

    @property
    def row_keys(self) -> list[str]:
        return self.tables[0].row_keys

    @property
    def col_keys(self) -> list[str]:
        return self.tables[0].col_keys

    @property
    def rows(self) -> list[tuple]:
        return sorted({r for t in self.tables for r in t.rows}, key=sort_key)

    @property
    def cols(self) -> list[tuple]:
        return sorted({c for t in self.tables for c in t.cols}, key=sort_key)

    def all_notes(self) -> list[str]:
        """Each metric's description, then the notes: what a reader of the table needs."""
        return [t.description for t in self.tables] + self.notes


def as_multi(table: Table | MultiTable) -> MultiTable:
    """A MultiTable of one Table is that Table (renderers take either)."""
    return table if isinstance(table, MultiTable) else MultiTable([table], list(table.notes))


def build_tables(
    runs: list[dict[str, Any]],
    rows: Sequence[str],
    cols: Sequence[str],
    metrics: Sequence[str],
    paper: dict[str, Any] | None = None,
) -> MultiTable:
    """`build_table` for each of `metrics` (at least one; each checked before any is built).
    Notes that several metrics share (pooling, failed runs, a citation) are kept once."""
    metrics = list(dict.fromkeys(metrics))
    if not metrics:
        raise ReportError("--metric needs at least one metric")
    for metric in metrics:
        check_metric(runs, metric)
    tables = [build_table(runs, rows, cols, m, paper) for m in metrics]
    notes = list(dict.fromkeys(n for t in tables for n in t.notes))
    return MultiTable(tables, notes)


def has_values(runs: list[dict[str, Any]], metric: str) -> bool:
    """Whether some run holds a finite value of `metric`."""
    return any(state == "ok" for r in runs for _, _, state in samples(r, metric))


def _status_notes(
    runs: list[dict[str, Any]], run_cell: list[tuple[tuple, tuple]], keys: list[str], metric: str
) -> list[str]:
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
        if run.get("status") != "failed" and any(
            st == "missing" for _, _, st in samples(run, metric)
        ):
            missing[where] = missing.get(where, 0) + 1
    notes = []
    if diverged:
        how = (
            f"they still count here: {metric} is measured once per run"
            if is_run_level(metric)
            else "diverged seeds are left out of the means"
        )
        notes.append(f"diverged: {_plural(len(diverged), 'run')} ({'; '.join(diverged)}); {how}.")
    if failed:
        notes.append(f"failed: {_plural(len(failed), 'run')} ({'; '.join(failed)}).")
    if missing:
        where = "; ".join(w if k == 1 else f"{w}: {k} runs" for w, k in missing.items())
        notes.append(
            f"missing: {_plural(sum(missing.values()), 'run')} finished without a "
            f"finite {metric} ({where})."
        )
    return notes


def _pooling_notes(
    runs: list[dict[str, Any]], run_cell: list[tuple[tuple, tuple]], keys: list[str]
) -> list[str]:
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
        # A rerun: the same seed in two runs (two paths) of one experiment (one description).
        # Runs that differ in some key reuse seeds by design (the note above names the keys),
        # and so do the grid points of one population (one path).
        seen: dict[tuple[str, Any], set] = {}
        for i in idx:
            same = _description_key(runs[i])
            for s in runs[i].get("seeds") or []:
                seen.setdefault((same, s), set()).add(runs[i].get("path", i))
        dup = sorted({s for (_, s), paths in seen.items() if len(paths) > 1}, key=str)
        if dup:
            reran.append(f"{where}: seed {', '.join(map(str, dup))}")
    notes = [
        f"pooled: {_plural(len(cells), 'cell')} ({'; '.join(cells)}) "
        f"{'mixes' if len(cells) == 1 else 'mix'} runs that differ in {', '.join(differ)}; "
        "add the keys to --rows or --cols to separate them."
        for differ, cells in mixed.items()
    ]
    if reran:
        notes.append(
            f"pooled: the same seed in more than one run of the same config in a cell, each "
            f"copy counted in n (a rerun): {'; '.join(reran)}."
        )
    return notes


def _description_key(run: dict[str, Any]) -> str:
    """`run_description` as a comparable string: equal for runs of the same experiment."""
    return json.dumps(run_description(run), sort_keys=True, default=repr)


def _add_paper(
    table: Table,
    runs: list[dict[str, Any]],
    run_cell: list[tuple[tuple, tuple]],
    paper: dict[str, Any],
) -> None:
    by_cell: dict[tuple[tuple, tuple], list[dict[str, Any]]] = {}
    for run, rc in zip(runs, run_cell, strict=True):
        by_cell.setdefault(rc, []).append(run)
    used = []
    for rc, members in by_cell.items():
        ident = {
            (r.get("task"), r.get("model"), r.get("seq_len"), key_value(r, "task.dataset"))
            for r in members
        }
        if len(ident) != 1:
            continue
        task, model, seq_len, dataset = ident.pop()
        ref = paper_value(paper, task, model, table.metric, seq_len, dataset)
        if ref is not None:
            table.cells[rc].paper = float(ref["value"])
            used.append(ref)
    table.paper_cols = [
        c
        for c in table.cols
        if any(
            table.cells.get((r, c)) and table.cells[(r, c)].paper is not None for r in table.rows
        )
    ]
    cite = f"paper ({paper['name']}): {paper['citation']}"
    if used:
        details = list(dict.fromkeys(r["source"] for r in used if r.get("source")))
        table.notes.append(cite + (f" — {'; '.join(details)}." if details else ""))
    else:
        has = sorted(
            {
                f"{r['task']}{'/' + r['dataset'] if r.get('dataset') else ''} {r['metric']}"
                + (f" at seq_len={r['seq_len']}" if r.get("seq_len") else "")
                for r in paper["results"]
            }
        )
        table.notes.append(
            f"{cite} — it reports no {table.metric} for these runs' "
            f"task/model/seq_len/dataset (it has: {', '.join(has)})."
        )


def select_best(
    runs: list[dict[str, Any]], keys: Sequence[str], select: str, by: str
) -> tuple[list[dict[str, Any]], str]:
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
    for where in sorted(cells, key=sort_key):
        scores: dict[Any, float] = {}
        for value, members in cells[where].items():
            got = [v for r in members for _, v, st in samples(r, by) if v is not None]
            if got:
                scores[value] = statistics.fmean(got)
        if not scores:
            continue
        pick = (min if better == "lower" else max)(scores, key=lambda k: scores[k])
        kept += cells[where][pick]
        chosen.append(f"{_where(list(keys), where)}: {show(pick)}")
    note = (
        f"selected: in each cell the {select} with the {better} mean {by} over seeds — "
        + "; ".join(chosen)
        + "."
    )
    return kept, note
