"""Delayed recall: output the symbol seen k steps back.

Input, length L = seq_len (k = lag, S = n_symbols):
    x_1 .. x_L                      tokens: symbols 0..S-1, uniform and independent
Target at step t: x_{t-k} for t > k (a class in 0..S-1); 0 before, where neither the loss nor
the accuracy looks. Every example has the one lag k, so per-lag accuracy is the accuracy.
Guessing gives ln S: the baseline.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from grubench.config import TaskConfig, require
from grubench.registry import TaskEntry, register_task
from grubench.targets import Target
from grubench.tasks.base import Split, TaskSpec, synthetic_splits


@dataclass
class DelayTaskConfig(TaskConfig):
    """Delayed recall: output the symbol seen `lag` steps back, over `seq_len` steps."""

    name: str = "delay"
    seq_len: int = 40
    lag: int = 20
    n_symbols: int = 8


def spec(cfg) -> TaskSpec:
    return TaskSpec("tokens", cfg.n_symbols, "classes", cfg.n_symbols, lags=(cfg.lag,))


def generate(cfg, n: int, rng: np.random.Generator) -> Split:
    L, k, S = cfg.seq_len, cfg.lag, cfg.n_symbols
    x = rng.integers(0, S, size=(n, L), dtype=np.int32)
    y = np.zeros((n, L), np.int32)
    y[:, k:] = x[:, : L - k]
    mask = np.zeros((n, L), np.float32)
    mask[:, k:] = 1.0
    return Split(x, y, mask, mask.copy(), np.zeros(n, np.int32))


def baseline(cfg) -> float:
    """Cross-entropy of a uniform guess over the S symbols: ln S."""
    return math.log(cfg.n_symbols)


def validate(cfg) -> None:
    """Raise ConfigError (one line) for a bad task.* value."""
    require(cfg.lag >= 1, "task.lag", cfg.lag, "an integer >= 1")
    require(
        cfg.seq_len > cfg.lag,
        "task.seq_len",
        cfg.seq_len,
        f"an integer > task.lag={cfg.lag} for delay (some steps must recall)",
    )
    require(cfg.n_symbols >= 2, "task.n_symbols", cfg.n_symbols, "an integer >= 2")


register_task(
    TaskEntry(
        "delay",
        "delayed recall: the symbol seen lag steps back",
        DelayTaskConfig,
        spec,
        synthetic_splits(generate),
        baseline,
        validate,
        target=Target("val/accuracy", 0.99),
    )
)
