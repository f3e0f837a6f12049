"""Pooling runs into a comparison table: cells of n, mean, std and a confidence interval per
(row, column), the notes that say what was pooled or left out, papers' numbers, model
selection, and the tests between cells (the statistics themselves: grubench.inference): the
differences `--compare` asks for, the best-against-runner-up test that decides the bold, Holm's
correction across a table's tests, and a cross-task summary of wins, ties and losses."""

from __future__ import annotations

import itertools
import json
import math
import statistics
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from grubench.errors import ReportError
from grubench.inference import (
    BOOTSTRAP_SEED,
    CI_METHODS,
    bootstrap_interval,
    holm,
    mean_difference,
    mean_of,
    rank_test,
    summarize,
)
from grubench.runs import (
    canonical_key,
    cell_label,
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

TESTS = ("welch", "mwu")


@dataclass(frozen=True)
class StatsOptions:
    """How a table's cells are summarised and compared (grubench-report's --ci, --ci-method,
    --compare, --test, --paired, --alpha; `show_ci` is --ci given: intervals in the cells)."""

    level: float = 0.95  # of every confidence interval, cells' and differences'
    ci_method: Literal["t", "bootstrap"] = "t"
    compare: str | None = None  # a column key: differences between its values, per row
    test: Literal["welch", "mwu"] = "welch"
    paired: bool = False  # by seed (and task.data_seed): ttest_rel / wilcoxon
    alpha: float = 0.05
    show_ci: bool = False

    def __post_init__(self) -> None:
        if not 0 < self.level < 1:
            raise ReportError(f"--ci {100 * self.level:g}: the level must be in (0, 100)")
        if not 0 < self.alpha < 1:
            raise ReportError(f"--alpha {self.alpha:g}: must be in (0, 1)")
        if self.ci_method not in CI_METHODS:
            raise ReportError(f"--ci-method {self.ci_method!r}: one of {', '.join(CI_METHODS)}")
        if self.test not in TESTS:
            raise ReportError(f"--test {self.test!r}: one of {', '.join(TESTS)}")

    def test_name(self) -> str:
        """The test's name as the notes say it."""
        if self.paired:
            return "paired t-test" if self.test == "welch" else "Wilcoxon signed-rank test"
        return "Welch's t-test" if self.test == "welch" else "Mann–Whitney U test"

    def ci_name(self) -> str:
        pct = f"{100 * self.level:g}%"
        if self.ci_method == "bootstrap":
            return f"{pct} bootstrap interval (BCa, 9999 resamples, seed {BOOTSTRAP_SEED})"
        return f"{pct} Student-t interval"


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
    ci_low: float = math.nan  # the mean's confidence interval (StatsOptions); NaN when n < 2
    ci_high: float = math.nan
    values: tuple[float, ...] = ()  # the pooled values, for the tests
    # Per value: (seed, task.data_seed), what pairs it with a value of another cell; None for
    # a value measured once per run.
    pair_keys: tuple[tuple | None, ...] = ()


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
        return cell_label(self.col_keys, col)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def build_table(
    runs: list[dict[str, Any]],
    rows: Sequence[str],
    cols: Sequence[str],
    metric: str,
    paper: dict[str, Any] | None = None,
    options: StatsOptions | None = None,
) -> Table:
    """Pivot `metric` over `runs` into rows x cols (see the module docstring): each cell's n,
    mean, std and confidence interval (`options`, default 95% Student-t) and its values. No
    bold: that needs the tests of the whole table (`build_tables`)."""
    options = options or StatsOptions()
    rows, cols = list(rows), list(cols)
    if not rows or not cols:
        raise ReportError("--rows and --cols each need at least one key")
    both = {canonical_key(k) for k in rows} & {canonical_key(k) for k in cols}
    if both:
        raise ReportError(f"key {sorted(both)[0]!r} is in both --rows and --cols")
    check_keys(runs, rows, "--rows")
    check_keys(runs, cols, "--cols")
    check_metric(runs, metric)

    run_cell: list[tuple[tuple, tuple]] = []
    # Per cell: its values with their pairing keys, and the count of each state.
    pooled: dict[tuple[tuple, tuple], list[tuple[float, tuple | None]]] = {}
    states: dict[tuple[tuple, tuple], dict[str, int]] = {}
    counted: set[tuple] = set()
    for run in runs:
        row = tuple(key_value(run, k) for k in rows)
        col = tuple(key_value(run, k) for k in cols)
        run_cell.append((row, col))
        if is_run_level(metric) and run.get("members_index") is not None:
            # The grid points of one population share its run-level figures: count them once.
            shared = (run.get("path"), row, col)
            if shared in counted:
                continue
            counted.add(shared)
        data_seed = key_value(run, "task.data_seed")
        for seed, value, state in samples(run, metric):
            counts = states.setdefault((row, col), {})
            counts[state] = counts.get(state, 0) + 1
            if state == "ok" and value is not None:
                key = None if seed is None else (seed, data_seed)
                pooled.setdefault((row, col), []).append((float(value), key))
    cells: dict[tuple[tuple, tuple], Cell] = {}
    for rc, counts in states.items():
        got = pooled.get(rc, [])
        s = summarize([v for v, _ in got], options.level, options.ci_method)
        cells[rc] = Cell(
            s.mean,
            s.std,
            s.n,
            counts.get("diverged", 0),
            counts.get("failed", 0),
            counts.get("missing", 0),
            # One clock reading shared by a run's members has no interval to speak of.
            ci_low=math.nan if metric in UNTESTED else s.ci_low,
            ci_high=math.nan if metric in UNTESTED else s.ci_high,
            values=tuple(v for v, _ in got),
            pair_keys=tuple(k for _, k in got),
        )
    row_values = sorted({r for r, _ in cells}, key=sort_key)
    col_values = sorted({c for _, c in cells}, key=sort_key)

    table = Table(metric, rows, cols, row_values, col_values, cells)
    unit = "runs (measured once per run, all seeds together)" if is_run_level(metric) else "seeds"
    caption = f"{metric}: mean ± std (ddof=1) over {unit}; n = values pooled per cell"
    better = direction(metric)
    if better is not None:
        caption += f"; {better} is better, {bold_rule(options)}"
    if options.show_ci:
        caption += f"; [lo, hi]: the mean's {options.ci_name()}"
    table.description = caption + "."
    table.notes += _status_notes(runs, run_cell, rows + cols, metric)
    table.notes += _pooling_notes(runs, run_cell, rows + cols)
    if paper is not None:
        _add_paper(table, runs, run_cell, paper)
    return table


def bold_rule(options: StatsOptions) -> str:
    """What bold means, in words (captions)."""
    where = f"along {options.compare}" if options.compare else "of each row"
    return (
        f"the best {where} in bold only where it beats the runner-up at "
        f"α = {options.alpha:g} ({options.test_name()}, Holm-corrected)"
    )


@dataclass
class Comparison:
    """A test between two cells of one row of one metric: `a` − `b` (columns, `a` first in
    column order), its confidence interval and p-value (NaN where a cell has fewer than two
    values), and the p-value Holm-corrected across the table's tests. `shown`: asked for by
    --compare (otherwise only the bold needed it)."""

    metric: str
    row: tuple
    a: tuple
    b: tuple
    diff: float
    ci_low: float
    ci_high: float
    p_value: float
    n: tuple[int, int]  # the values each side (paired: the pairs, twice)
    # The test's own estimate of which side is larger: the difference of means (t-tests),
    # P(a > b) - 1/2 (Mann-Whitney U), the median difference (Wilcoxon).
    shift: float = math.nan
    p_adjusted: float = math.nan
    shown: bool = False

    def decided(self, alpha: float) -> bool:
        """Significant at `alpha` after the correction, with the test's own direction the
        same as the means' (a rank test can find the side with the lower mean larger)."""
        agree = self.diff != 0 and math.copysign(1, self.shift) == math.copysign(1, self.diff)
        return self.p_adjusted < alpha and agree and self.shift != 0


@dataclass
class CrossRow:
    """The cross-task summary of one pair of columns for one metric: over the rows where both
    cells were tested, how often `a` was significantly better (wins), not significantly
    different (ties) or significantly worse (losses) than `b`, and each one's mean normalised
    score (`normalised_score`)."""

    metric: str
    a: tuple
    b: tuple
    wins: int
    ties: int
    losses: int
    score_a: float
    score_b: float
    rows: int
    tasks: int


@dataclass
class MultiTable:
    """Several metrics of the same runs pivoted over the same rows x cols: one Table per
    metric, in the order asked, and the notes of all of them, each said once; the options
    they were built with, the comparisons --compare asked for (every test of the table in
    `tests`), and the cross-task summary."""

    tables: list[Table]
    notes: list[str] = field(default_factory=list)
    options: StatsOptions = field(default_factory=StatsOptions)
    tests: list[Comparison] = field(default_factory=list)
    cross: list[CrossRow] = field(default_factory=list)

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

    @property
    def comparisons(self) -> list[Comparison]:
        """The tests --compare asked for, in table order."""
        return [c for c in self.tests if c.shown]

    def table(self, metric: str) -> Table:
        return next(t for t in self.tables if t.metric == metric)

    def pair_label(self, a: tuple, b: tuple, sep: str = " − ") -> str:
        """ "gru − lstm"; with more column keys than the compared one, the others after it:
        "gru − lstm (depth=1)"."""
        t = self.tables[0]
        if self.options.compare is None or len(self.col_keys) == 1:
            return t.col_label(a) + sep + t.col_label(b)
        i = _compare_index(self.col_keys, self.options.compare)
        rest = [(k, v) for j, (k, v) in enumerate(zip(self.col_keys, a, strict=True)) if j != i]
        return (
            f"{show(a[i])}{sep}{show(b[i])} (" + ", ".join(f"{k}={show(v)}" for k, v in rest) + ")"
        )

    def all_notes(self) -> list[str]:
        """Each metric's description, then the notes: what a reader of the table needs."""
        return [t.description for t in self.tables] + self.notes


def as_multi(table: Table | MultiTable) -> MultiTable:
    """A MultiTable of one Table is that Table (renderers take either)."""
    return table if isinstance(table, MultiTable) else MultiTable([table], list(table.notes))


def _compare_index(col_keys: Sequence[str], key: str) -> int:
    canon = [canonical_key(k) for k in col_keys]
    if canonical_key(key) not in canon:
        raise ReportError(
            f"--compare {key}: not a column key (--cols {','.join(col_keys)}); "
            "the cells compared are the columns of a row"
        )
    return canon.index(canonical_key(key))


def build_tables(
    runs: list[dict[str, Any]],
    rows: Sequence[str],
    cols: Sequence[str],
    metrics: Sequence[str],
    paper: dict[str, Any] | None = None,
    options: StatsOptions | None = None,
) -> MultiTable:
    """`build_table` for each of `metrics` (at least one; each checked before any is built),
    then the tests (`analyse`): the bold, and --compare's comparisons. Notes that several
    metrics share (pooling, failed runs, a citation) are kept once."""
    options = options or StatsOptions()
    metrics = list(dict.fromkeys(metrics))
    if not metrics:
        raise ReportError("--metric needs at least one metric")
    for metric in metrics:
        check_metric(runs, metric)
    if options.compare is not None:
        _compare_index(list(cols), options.compare)
    if options.paired and (once := [m for m in metrics if is_run_level(m)]):
        raise ReportError(f"--paired: {once[0]} is measured once per run, not per seed")
    tables = [build_table(runs, rows, cols, m, paper, options) for m in metrics]
    notes = list(dict.fromkeys(n for t in tables for n in t.notes))
    multi = MultiTable(tables, notes, options)
    analyse(multi)
    return multi


def _groups(multi: MultiTable) -> list[list[tuple]]:
    """The columns that compete for bold (and are compared): all of them, or with --compare
    those that agree on every column key but the compared one."""
    if multi.options.compare is None:
        return [multi.cols]
    i = _compare_index(multi.col_keys, multi.options.compare)
    groups: dict[tuple, list[tuple]] = {}
    for col in multi.cols:
        groups.setdefault(col[:i] + col[i + 1 :], []).append(col)
    return list(groups.values())


def _where_row(multi: MultiTable, row: tuple) -> str:
    return cell_label(multi.row_keys, row)


def compare_cells(
    a: Cell, b: Cell, options: StatsOptions, where: str = "", names: tuple[str, str] = ("", "")
) -> tuple[float, float, float, float, tuple[int, int], float]:
    """(mean(a) − mean(b), its confidence interval, the two-sided p-value, the n each side,
    the test's own estimate of the direction: `Comparison.shift`)
    by `options`: Welch's t-test (scipy.stats.ttest_ind, equal_var=False; the interval by
    Welch–Satterthwaite) or Mann–Whitney U; paired by seed, the paired t-test (ttest_rel) or
    Wilcoxon's signed-rank test on the differences, which needs both cells to hold the same
    seeds (ReportError naming `where` and the cells `names` otherwise). With
    --ci-method bootstrap the interval is scipy.stats.bootstrap's (fixed seed). NaN where a
    side has fewer than two values."""
    import numpy as np
    from scipy import stats as st

    nan3 = (math.nan, math.nan, math.nan)
    if options.paired:
        ka, kb = (
            dict(zip(a.pair_keys, a.values, strict=True)),
            dict(zip(b.pair_keys, b.values, strict=True)),
        )
        keys_ok = (
            None not in ka
            and len(ka) == len(a.values)
            and len(kb) == len(b.values)
            and set(ka) == set(kb)
        )
        if not keys_ok:
            seeds = lambda c: ", ".join("-" if k is None else str(k[0]) for k in c.pair_keys)
            raise ReportError(
                f"--paired: {where}: {names[0]} and {names[1]} do not hold the same seeds "
                f"and data, each once ({names[0]}: seeds {seeds(a) or 'none'}; "
                f"{names[1]}: seeds {seeds(b) or 'none'})"
            )
        order = sorted(ka, key=str)
        xa = np.array([ka[k] for k in order])
        xb = np.array([kb[k] for k in order])
        n = (len(order), len(order))
        diff = float(np.mean(xa - xb))
        if len(order) < 2 or np.ptp(xa - xb) == 0:  # one pair, or every difference alike
            return (diff, *nan3, n, math.nan)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            t = st.ttest_rel(xa, xb)
            if options.test == "welch":
                p, shift = float(t.pvalue), diff
            else:
                shift = float(np.median(xa - xb))
                try:
                    p = float(st.wilcoxon(xa - xb).pvalue)
                except ValueError:  # every difference zero
                    p = math.nan
            if options.ci_method == "bootstrap":
                lo, hi = bootstrap_interval((xa - xb,), mean_of, options.level)
            else:
                ci = t.confidence_interval(options.level)
                lo, hi = float(ci.low), float(ci.high)
        return diff, lo, hi, p, n, shift
    xa, xb = np.array(a.values), np.array(b.values)
    n = (len(xa), len(xb))
    diff = float(xa.mean() - xb.mean()) if len(xa) and len(xb) else math.nan
    per_seed = any(k is not None for k in (*a.pair_keys, *b.pair_keys))
    if min(n) < 2:
        return (diff, *nan3, n, math.nan)
    if per_seed and np.ptp(xa) == 0 and np.ptp(xb) == 0:
        # Seeds alike within each cell (a metric counted in evaluation intervals, a 0/1 such
        # as `diverged`): no spread for a t-test. Alike across the cells too, nothing to test;
        # else the exact rank test, whose p for two cells set apart is 2 / C(n1 + n2, n1).
        # (A quantity measured once per run, such as the parameter count, is exact as it is.)
        if xa[0] == xb[0]:
            return (diff, *nan3, n, math.nan)
        p, shift = rank_test(xa, xb)
        return diff, math.nan, math.nan, p, n, shift
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        t = st.ttest_ind(xa, xb, equal_var=False)
        if options.test == "welch":
            p, shift = float(t.pvalue), diff
        else:
            p, shift = rank_test(xa, xb)
        if options.ci_method == "bootstrap":
            lo, hi = bootstrap_interval((xa, xb), mean_difference, options.level)
        else:
            ci = t.confidence_interval(options.level)
            lo, hi = float(ci.low), float(ci.high)
    return diff, lo, hi, p, n, shift


# Metrics whose values are not independent samples, so no test applies.
UNTESTED = {
    "seconds_to_target": "the members of a run share one clock, so their seconds are one "
    "measurement, not one per seed",
}


def analyse(multi: MultiTable) -> None:
    """The tests of a table, in place: --compare's comparisons (every pair of columns of a
    group, per row and metric), the best against the runner-up of each row (and group) of a
    metric with a direction, Holm's correction across all of them together (each pair tested
    once), the bold (the best, where its corrected p < alpha), the notes naming the test, the
    correction and the rows without a significant winner, and the cross-task summary."""
    opts = multi.options
    tests: dict[tuple[str, tuple, tuple, tuple], Comparison] = {}
    order = {c: i for i, c in enumerate(multi.cols)}

    def test(t: Table, row: tuple, a: tuple, b: tuple, shown: bool) -> Comparison:
        if order[a] > order[b]:
            a, b = b, a
        key = (t.metric, row, a, b)
        if key not in tests:
            names = (t.col_label(a), t.col_label(b))
            diff, lo, hi, p, n, shift = compare_cells(
                t.cells[(row, a)], t.cells[(row, b)], opts, _where_row(multi, row), names
            )
            tests[key] = Comparison(t.metric, row, a, b, diff, lo, hi, p, n, shift)
        tests[key].shown |= shown
        return tests[key]

    contests: list[tuple[Table, tuple, Cell, Comparison]] = []  # (table, row, best, its test)
    undecided: dict[str, list[str]] = {}
    for t in multi.tables:
        better = direction(t.metric)
        if t.metric in UNTESTED:
            multi.notes.append(f"{t.metric}: not tested, no bold ({UNTESTED[t.metric]}).")
            continue
        for row in t.rows:
            for group in _groups(multi):
                present = [c for c in group if (row, c) in t.cells and t.cells[(row, c)].n > 0]
                if opts.compare is not None:
                    for a, b in itertools.combinations(present, 2):
                        test(t, row, a, b, shown=True)
                if better is None or len(present) < 2:
                    continue
                ranked = sorted(
                    present, key=lambda c: t.cells[(row, c)].mean, reverse=better == "higher"
                )
                best, runner = ranked[0], ranked[1]
                contests.append((t, row, t.cells[(row, best)], test(t, row, best, runner, False)))
    ordered = sorted(
        tests.values(),
        key=lambda c: (multi.metrics.index(c.metric), sort_key(c.row), order[c.a], order[c.b]),
    )
    for c, adj in zip(ordered, holm([c.p_value for c in ordered]), strict=True):
        c.p_adjusted = adj
    multi.tests = ordered
    for t, row, winner, comp in contests:
        if comp.decided(opts.alpha):
            winner.best = True
        else:
            where = _where_row(multi, row)
            undecided.setdefault(t.metric, [])
            if where not in undecided[t.metric]:
                undecided[t.metric].append(where)
    if tests:
        multi.notes.append(_tests_note(multi, bool(contests)))
    for metric, rows in undecided.items():
        multi.notes.append(
            f"no bold: {metric} has no significant winner at α = {opts.alpha:g} in "
            f"{_plural(len(rows), 'row')} ({'; '.join(rows)})."
        )
    multi.cross = cross_task_summary(multi)
    if multi.cross:
        multi.notes.append(
            f"across tasks: a win is a row where the first column beats the second with "
            f"Holm-corrected p < α = {opts.alpha:g}, a loss the reverse, a tie anything else; "
            "normalised score: the row's best mean over the cell's mean where lower is better "
            "(the cell's over the best's where higher is), 1 for the best, averaged over rows."
        )


def _tests_note(multi: MultiTable, contests: bool) -> str:
    """The note naming the test, the interval and the correction."""
    opts = multi.options
    m = sum(math.isfinite(c.p_value) for c in multi.tests)
    what = (["the comparisons"] if multi.comparisons else []) + (
        ["each row's best against its runner-up"] if contests else []
    )
    if opts.ci_method == "bootstrap":
        ci = opts.ci_name()
    else:
        kind = "paired t" if opts.paired else "Welch–Satterthwaite t"
        ci = f"{100 * opts.level:g}% {kind} interval"
    diff = "mean difference of the pairs" if opts.paired else "difference of means"
    untested = len(multi.tests) - m
    # compare_cells gives a p without an interval only where it fell back to the rank test
    ranked = sum(math.isfinite(c.p_value) and not math.isfinite(c.ci_low) for c in multi.tests)
    few = opts.ci_method == "bootstrap" and any(
        0 < c.n < 20 for t in multi.tables for c in t.cells.values()
    )
    return (
        f"tests: {opts.test_name()}{' by seed' if opts.paired else ''}, two-sided; {diff} "
        f"with its {ci}; p-values Holm-corrected across the table's {_plural(m, 'test')} "
        f"({' and '.join(what)})"
        + (
            f"; {_plural(untested, 'pair')} untested (under two values a side, or every "
            "value the same)"
            if untested
            else ""
        )
        + (
            f"; {_plural(ranked, 'pair')} with every seed alike within each cell took the "
            "exact Mann–Whitney U test instead, without an interval"
            if ranked and opts.test == "welch" and not opts.paired
            else ""
        )
        + _unreachable(multi)
        + (
            "; bootstrap intervals of fewer than 20 values cover less than their level "
            "(--ci-method t does not)"
            if few
            else ""
        )
        + "."
    )


def _unreachable(multi: MultiTable) -> str:
    """'; at N values a side, TEST cannot reach α ...' where the smallest p a rank test can
    give at the table's smallest tested n is not below α (so "not significant" there says
    nothing about the difference); empty otherwise."""
    opts = multi.options
    if opts.test != "mwu":
        return ""
    sizes = [c.n for c in multi.tests if math.isfinite(c.p_value)]
    if not sizes:
        return ""
    n1, n2 = min(sizes, key=lambda n: n[0] + n[1])
    # Two-sided exact minima: Wilcoxon 2 / 2^n (n pairs), Mann-Whitney 2 / C(n1 + n2, n1).
    least = 2 / 2**n1 if opts.paired else 2 / math.comb(n1 + n2, n1)
    if least < opts.alpha:
        return ""
    size = f"{n1} pairs" if opts.paired else f"{n1} and {n2} values"
    return (
        f"; with {size}, {opts.test_name()} cannot give p below {least:.3g}, so it cannot "
        f"reach α = {opts.alpha:g} there: a tie says nothing about the difference (more "
        "seeds, or the t-test)"
    )


def normalised_score(mean: float, best: float, better: str) -> float:
    """A cell's mean relative to the best mean of its row: best / mean where lower is better,
    mean / best where higher is; 1 for the best, toward 0 the worse. Scale-free, so tasks of
    different losses average fairly, and informative with two cells (a min-max scaling would
    give only 0 or 1); NaN where a mean is not positive."""
    if not (mean > 0 and best > 0):
        return math.nan
    return best / mean if better == "lower" else mean / best


def cross_task_summary(multi: MultiTable) -> list[CrossRow]:
    """With --compare and rows over two or more tasks: per metric with a direction and pair
    of columns compared, the CrossRow over all rows. Empty otherwise."""
    opts = multi.options
    canon = [canonical_key(k) for k in multi.row_keys]
    if opts.compare is None or "task" not in canon:
        return []
    ti = canon.index("task")
    if len({r[ti] for r in multi.rows}) < 2:
        return []
    out = []
    for t in multi.tables:
        better = direction(t.metric)
        if better is None:
            continue
        pairs: dict[tuple[tuple, tuple], list[Comparison]] = {}
        for c in multi.comparisons:
            if c.metric == t.metric and math.isfinite(c.p_value):
                pairs.setdefault((c.a, c.b), []).append(c)
        for (a, b), comps in pairs.items():
            wins = ties = losses = 0
            sa, sb = [], []
            for c in comps:
                if c.decided(opts.alpha):
                    a_better = (c.diff < 0) == (better == "lower")
                    wins, losses = wins + a_better, losses + (not a_better)
                else:
                    ties += 1
                group = next(g for g in _groups(multi) if a in g)
                means = [
                    t.cells[(c.row, g)].mean
                    for g in group
                    if (c.row, g) in t.cells and t.cells[(c.row, g)].n > 0
                ]
                best = (min if better == "lower" else max)(means)
                score_a = normalised_score(t.cells[(c.row, a)].mean, best, better)
                score_b = normalised_score(t.cells[(c.row, b)].mean, best, better)
                if math.isfinite(score_a) and math.isfinite(score_b):
                    sa.append(score_a)
                    sb.append(score_b)
            out.append(
                CrossRow(
                    t.metric,
                    a,
                    b,
                    wins,
                    ties,
                    losses,
                    statistics.fmean(sa) if sa else math.nan,
                    statistics.fmean(sb) if sb else math.nan,
                    len(comps),
                    len({c.row[ti] for c in comps}),
                )
            )
    return out


def has_values(runs: list[dict[str, Any]], metric: str) -> bool:
    """Whether some run holds a finite value of `metric`."""
    return any(state == "ok" for r in runs for _, _, state in samples(r, metric))


def _status_notes(
    runs: list[dict[str, Any]], run_cell: list[tuple[tuple, tuple]], keys: list[str], metric: str
) -> list[str]:
    diverged, failed = [], []
    missing: dict[str, int] = {}
    for run, (row, col) in zip(runs, run_cell, strict=True):
        where = cell_label(keys, row + col)
        if run.get("status") == "failed":
            failed.append(f"{where}: {run.get('error') or 'no error recorded'}")
        elif run.get("diverged") or run.get("status") == "diverged":
            steps = run.get("diverged") or {}
            what = ", ".join(f"seed {s} at step {st}" for s, st in steps.items())
            diverged.append(f"{where}: {what or run.get('error') or 'seeds not recorded'}")
        if run.get("status") != "failed":
            gone = sum(st == "missing" for _, _, st in samples(run, metric))
            if gone:  # seeds (one per run for a run-level metric)
                missing[where] = missing.get(where, 0) + gone
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
        unit = "run" if is_run_level(metric) else "seed"
        where = "; ".join(f"{w}: {_plural(k, unit)}" for w, k in missing.items())
        if metric.endswith("_to_target"):
            targets = {r.get("task"): r["target"] for r in runs if r.get("target")}
            target = (
                next(iter(targets.values()))
                if len(set(targets.values())) == 1
                else "; ".join(f"{task}: {rule}" for task, rule in sorted(targets.items()))
                or "its target"
            )
            notes.append(
                f"not reached: {_plural(sum(missing.values()), unit)} never met the task's "
                f"target ({target}) and are left out of the mean, so a cell's mean is over "
                f"those that did; compare the counts ({where})."
            )
        else:
            notes.append(
                f"missing: {_plural(sum(missing.values()), unit)} finished without a finite "
                f"{metric} ({where})."
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
        where = cell_label(keys, row + col)
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
    protocol = f" Its protocol is not ours: {paper['protocol']}" if paper.get("protocol") else ""
    if used:
        details = list(dict.fromkeys(r["source"] for r in used if r.get("source")))
        table.notes.append(cite + (f" — {'; '.join(details)}." if details else "") + protocol)
    elif not paper["results"]:
        table.notes.append(f"{cite} — it publishes no figures for our tasks.{protocol}")
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
