"""Adding problem (Hochreiter & Schmidhuber 1997; Le et al. 2015).

Input [T, 2]: a value drawn from U[0, 1] and a marker; exactly two steps are marked, one in
each half. Target: the sum of the two marked values, read at the last step (squared error).
Predicting the mean sum, 1, gives MSE 1/6: the baseline. Accuracy counts |error| < tolerance.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from grubench.config import TaskConfig, require
from grubench.registry import TaskEntry, register_task
from grubench.targets import Target
from grubench.tasks.base import Split, TaskSpec, synthetic_splits


@dataclass
class AddingTaskConfig(TaskConfig):
    """Adding problem: `seq_len` is the sequence length T."""

    name: str = "adding"
    seq_len: int = 50
    tolerance: float = 0.04  # |error| below this counts as correct for accuracy


def spec(cfg) -> TaskSpec:
    return TaskSpec("real", 2, "real", 1, tolerance=cfg.tolerance)


def generate(cfg, n: int, rng: np.random.Generator) -> Split:
    T = cfg.seq_len
    half = T // 2
    values = rng.uniform(0.0, 1.0, size=(n, T)).astype(np.float32)
    first = rng.integers(0, half, size=n)
    second = rng.integers(half, T, size=n)
    markers = np.zeros((n, T), np.float32)
    rows = np.arange(n)
    markers[rows, first] = 1.0
    markers[rows, second] = 1.0
    x = np.stack([values, markers], axis=-1)
    y = np.zeros((n, T, 1), np.float32)
    y[:, -1, 0] = values[rows, first] + values[rows, second]
    mask = np.zeros((n, T), np.float32)
    mask[:, -1] = 1.0
    return Split(x, y, mask, mask.copy())


def baseline(cfg) -> float:
    """MSE of always answering 1, the mean of the sum of two U[0, 1] values: 1/6."""
    return 1.0 / 6.0


def validate(cfg) -> None:
    """Raise ConfigError (one line) for a bad task.* value."""
    require(cfg.seq_len >= 2, "task.seq_len", cfg.seq_len, "an integer >= 2 for adding")
    require(cfg.tolerance > 0, "task.tolerance", cfg.tolerance, "a float > 0")


register_task(
    TaskEntry(
        "adding",
        "adding problem (Hochreiter & Schmidhuber 1997): the sum of two marked values (MSE)",
        AddingTaskConfig,
        spec,
        synthetic_splits(generate),
        baseline,
        validate,
        plot_unit="MSE",
        target=Target("val/loss", 0.01),
    )
)
