"""Time to a target: when a run has learned its task, in steps and in training seconds.

A task registers a `Target` (grubench.registry.TaskEntry.target): a validation curve of
metrics.jsonl (`val/accuracy`, `val/loss`) and the threshold that says the task is learned
(copy: val accuracy >= 0.99; adding: val MSE <= 0.01). `time_to_target` reads the curves a run
logged and gives, per member, the first evaluated step at which the target holds and the
training seconds (`train/seconds`: steps alone, no compilation or evaluation) spent to get
there; NaN where the member never got there.

The threshold is absolute, the same for every model, so the times compare across models. A
target relative to a run's own best (e.g. within 1% of it) would not: a model that never
learns meets its own best at once.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Target", "time_to_target"]


@dataclass(frozen=True)
class Target:
    """`metric` (a per-member curve of metrics.jsonl) reaching `value`: at least `value` for an
    accuracy, at most `value` otherwise (a loss)."""

    metric: str
    value: float

    @property
    def higher(self) -> bool:
        """Whether higher is better for the metric (an accuracy)."""
        return "accuracy" in self.metric

    def describe(self) -> str:
        """'val/accuracy >= 0.99', 'val/loss <= 0.01'."""
        return f"{self.metric} {'>=' if self.higher else '<='} {self.value:g}"

    def met(self, v: float) -> bool:
        """Whether the value `v` of the metric meets the target."""
        return v >= self.value if self.higher else v <= self.value


def time_to_target(
    rows: Iterable[Mapping[str, Any]], target: Target, members: int
) -> tuple[list[float], list[float]]:
    """([steps] per member, [seconds] per member): the first logged step whose `target.metric`
    meets the target, and `train/seconds` at that row (NaN where a row has none, as in files
    written before that column); NaN for a member that never met it. One evaluation meeting
    the target counts (the resolution is the evaluation interval)."""
    steps = [math.nan] * members
    times = [math.nan] * members
    for row in rows:
        values = row.get(target.metric)
        if not isinstance(values, list):
            continue
        seconds = row.get("train/seconds")
        for i, v in enumerate(values[:members]):
            if math.isnan(steps[i]) and v is not None and math.isfinite(v) and target.met(v):
                steps[i] = float(row["step"])
                times[i] = math.nan if seconds is None else float(seconds)
    return steps, times
