"""Model selection and tuning budgets: which of a cell's runs a table scores, and what each
cell was given to find them.

A comparison is fair only when every cell had the same chance: the same grid of learning
rates, the same seeds and the same steps, with each cell's rate chosen on validation and scored
on test. `select_best` makes that choice; `default_select` says when a report makes it without
being asked; `budget_note` states what each cell got.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

from grubench.errors import ReportError
from grubench.runs import canonical_key, cell_label, direction, key_value, samples, show, sort_key

# The key a report selects on by default (the one every comparison preset tunes per cell) and
# the validation metric it judges by.
TUNED = "trainer.lr"
BY = "best_val_loss"


def default_select(runs: list[dict[str, Any]], keys: Sequence[str]) -> str | None:
    """TUNED when the runs hold more than one value of it and it is not one of the table's
    own keys (a table over learning rates shows them instead), else None."""
    if canonical_key(TUNED) in {canonical_key(k) for k in keys}:
        return None
    return TUNED if len({key_value(r, TUNED) for r in runs}) > 1 else None


def _cells(
    runs: list[dict[str, Any]], keys: Sequence[str], select: str | None
) -> dict[tuple, dict[Any, list[dict[str, Any]]]]:
    """cell (values of `keys`) -> value of `select` (None without one) -> its runs."""
    cells: dict[tuple, dict[Any, list[dict[str, Any]]]] = {}
    for r in runs:
        cell = tuple(key_value(r, k) for k in keys)
        value = key_value(r, select) if select else None
        cells.setdefault(cell, {}).setdefault(value, []).append(r)
    return cells


def select_best(
    runs: list[dict[str, Any]], keys: Sequence[str], select: str, by: str
) -> tuple[list[dict[str, Any]], str]:
    """Model selection: in each cell of `keys`, keep only the runs whose `select` value (e.g.
    trainer.lr) has the best mean `by` (e.g. best_val_loss) over its seeds; and a note saying
    what was chosen where. A value some of whose seeds diverged, failed or have no `by` ranks
    after every value whose seeds all have one (its survivors alone would flatter it); a cell
    where no value has any keeps all its runs, so the table still counts them."""
    better = direction(by)
    if better is None:
        raise ReportError(f"--by {by}: cannot tell whether lower or higher is better")
    cells = _cells(runs, keys, select)
    kept: list[dict[str, Any]] = []
    chosen = []
    edge = 0  # cells whose pick is the grid's smallest or largest value (of three or more)
    for where in sorted(cells, key=sort_key):
        scores: dict[Any, tuple[int, float]] = {}  # value -> (seeds without `by`, ranked mean)
        for value, members in cells[where].items():
            got = [(v, st) for r in members for _, v, st in samples(r, by)]
            ok = [v for v, _ in got if v is not None]
            if ok:
                mean = statistics.fmean(ok)
                scores[value] = (len(got) - len(ok), mean if better == "lower" else -mean)
        if not scores:
            kept += [r for members in cells[where].values() for r in members]
            continue
        pick = min(scores, key=lambda k: scores[k])
        by_mean = min(scores, key=lambda k: scores[k][1])
        kept += cells[where][pick]
        chosen.append(
            f"{cell_label(list(keys), where)}: {show(pick)}"
            + (
                f" (not {show(by_mean)}, whose mean is better but {scores[by_mean][0]} of "
                "whose seeds diverged, failed or lack it)"
                if by_mean != pick
                else ""
            )
        )
        ends = sorted(cells[where], key=lambda v: sort_key((v,)))
        edge += len(ends) >= 3 and pick in (ends[0], ends[-1])
    note = (
        f"selected: in each cell the {select} with the {better.replace('er', 'est')} mean "
        f"{by} over seeds — " + "; ".join(chosen) + "."
    )
    if edge:
        cells_at = "every cell" if edge == len(chosen) else f"{edge} of the {len(chosen)} cells"
        note += (
            f" The choice is at the end of the grid in {cells_at}: a wider grid might do better."
        )
    return kept, note


def _budget(groups: dict[Any, list[dict[str, Any]]], select: str | None) -> str:
    """One cell's budget: '4 values of trainer.lr (0.0003 … 0.01) × 5 seeds × 1500 steps'."""
    runs = [r for members in groups.values() for r in members]
    seeds = sorted({len(r.get("seeds") or []) for r in runs})
    steps = sorted({key_value(r, "trainer.steps") for r in runs}, key=lambda v: (v is None, v))
    patience = {key_value(r, "trainer.patience") for r in runs} - {None, 0}
    parts = []
    if select is not None:
        values = sorted(groups, key=lambda v: sort_key((v,)))
        span = f"{show(values[0])} … {show(values[-1])}" if len(values) > 1 else show(values[0])
        parts.append(f"{len(values)} value{'' if len(values) == 1 else 's'} of {select} ({span})")
    elif len(runs) > 1:
        parts.append(f"{len(runs)} runs")
    parts.append(" or ".join(map(str, seeds)) + (" seed" if seeds == [1] else " seeds"))
    parts.append(
        " or ".join(show(s) for s in steps) + " steps" + (" (early stopping)" if patience else "")
    )
    return " × ".join(parts)


def budget_note(runs: list[dict[str, Any]], keys: Sequence[str], select: str | None) -> str:
    """What each cell of `keys` was given, before selection: the values of `select` it was
    tuned over, its seeds per value and its steps; one line when every cell got the same,
    else each cell's with a warning that the comparison is not at equal budgets. Runs that did
    not finish (failed, killed, still running) are counted apart: they were given nothing yet."""
    finished = [r for r in runs if r.get("status") != "failed"]
    cells = _cells(finished, keys, select)
    for where in _cells(runs, keys, select):
        cells.setdefault(where, {})
    budgets = {
        where: _budget(groups, select) if groups else "no finished run"
        for where, groups in cells.items()
    }
    failed = len(runs) - len(finished)
    unfinished = (
        f" ({failed} run{'' if failed == 1 else 's'} that did not finish not counted)"
        if failed
        else ""
    )
    if len(set(budgets.values())) == 1:
        return f"budget: every cell the same — {next(iter(budgets.values()))}{unfinished}."
    listed = "; ".join(
        f"{cell_label(list(keys), where)}: {budgets[where]}"
        for where in sorted(budgets, key=sort_key)
    )
    return (
        f"budget: cells differ, so the comparison is not at equal budgets — {listed}{unfinished}."
    )
