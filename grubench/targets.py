"""Time to a target: when a run has learned its task, in steps and in training seconds.

A task registers a `Target` (grubench.registry.TaskEntry.target): a validation curve of
metrics.jsonl (`val/accuracy`, `val/loss`) and the threshold that says the task is learned.
`time_to_target` reads the curves a run logged and gives, per member, the first evaluated step
at which the target holds and the training seconds (`train/seconds`: steps alone, no
compilation or evaluation) spent to get there; NaN where the member never got there.

Two kinds of threshold:
- absolute, the same for every model (copy: val accuracy >= 0.99; adding: val MSE <= 0.01), so
  the times compare across models as "time to learn the task";
- relative to the member's own best value of the curve (chorales: val NLL within 1% of its
  best), for tasks with no level every model reaches. This is time to converge, to the
  member's own plateau: it compares across models only beside their best values, since a model
  that learns little reaches its own best early.
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
    accuracy, at most `value` otherwise (a loss). `relative`: `value` is a fraction of the
    member's own best instead, the target being within it (loss <= best + value * |best|,
    accuracy >= best - value * |best|)."""

    metric: str
    value: float
    relative: bool = False

    @property
    def higher(self) -> bool:
        """Whether higher is better for the metric (an accuracy)."""
        return "accuracy" in self.metric

    def describe(self) -> str:
        """'val/accuracy >= 0.99', 'val/loss <= 0.01', 'val/loss within 1% of its best'."""
        if self.relative:
            return f"{self.metric} within {100 * self.value:g}% of its best"
        return f"{self.metric} {'>=' if self.higher else '<='} {self.value:g}"

    def threshold(self, best: float) -> float:
        """The value to reach, for a member whose best value of the metric is `best`."""
        if not self.relative:
            return self.value
        margin = self.value * abs(best)  # a negative loss (a log-density) works too
        return best - margin if self.higher else best + margin

    def met(self, v: float, threshold: float) -> bool:
        """Whether the value `v` of the metric meets `threshold`."""
        return v >= threshold if self.higher else v <= threshold


def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and math.isfinite(v)


def time_to_target(
    rows: Iterable[Mapping[str, Any]], target: Target, members: int
) -> tuple[list[float], list[float]]:
    """([steps] per member, [seconds] per member): the first logged step whose `target.metric`
    meets the target, and `train/seconds` at that row (NaN where a row has none, as in files
    written before that column); NaN for a member that never met it. One evaluation meeting
    the target counts (the resolution is the evaluation interval)."""
    curves = [r for r in rows if isinstance(r.get(target.metric), list)]
    pick = max if target.higher else min
    thresholds = []
    for i in range(members):
        seen = [r[target.metric][i] for r in curves if i < len(r[target.metric])]
        finite = [v for v in seen if _finite(v)]
        thresholds.append(target.threshold(pick(finite)) if finite else math.nan)
    steps = [math.nan] * members
    times = [math.nan] * members
    for row in curves:
        seconds = row.get("train/seconds")
        for i, v in enumerate(row[target.metric][:members]):
            if math.isnan(steps[i]) and _finite(v) and target.met(v, thresholds[i]):
                steps[i] = float(row["step"])
                times[i] = math.nan if seconds is None else float(seconds)
    return steps, times
