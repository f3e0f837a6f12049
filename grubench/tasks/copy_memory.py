"""Copy memory (Arjovsky et al. 2016): remember n_copy symbols across a delay of T blanks.

Input, length T + 2K (K = n_copy, symbols 1..S, blank 0, delimiter S+1):
    s_1 .. s_K, 0 x (T-1), S+1, 0 x K
Target: 0 x (T+K), s_1 .. s_K.
The loss is cross-entropy averaged over all T + 2K steps; accuracy scores the K recalled
symbols. A memoryless model can do no better than K ln S / (T + 2K) (blanks, then a uniform
guess), the baseline reported beside the loss.
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
class CopyTaskConfig(TaskConfig):
    """Copy memory: `seq_len` is the delay T; sequences are T + 2 * n_copy long."""

    name: str = "copy"
    n_symbols: int = 8
    n_copy: int = 10


def spec(cfg) -> TaskSpec:
    return TaskSpec("tokens", cfg.n_symbols + 2, "classes", cfg.n_symbols + 1)


def generate(cfg, n: int, rng: np.random.Generator) -> Split:
    T, K, S = cfg.seq_len, cfg.n_copy, cfg.n_symbols
    length = T + 2 * K
    symbols = rng.integers(1, S + 1, size=(n, K), dtype=np.int32)
    x = np.zeros((n, length), np.int32)
    x[:, :K] = symbols
    x[:, T + K - 1] = S + 1
    y = np.zeros((n, length), np.int32)
    y[:, T + K :] = symbols
    loss_mask = np.ones((n, length), np.float32)
    metric_mask = np.zeros((n, length), np.float32)
    metric_mask[:, T + K :] = 1.0
    return Split(x, y, loss_mask, metric_mask)


def baseline(cfg) -> float:
    """Loss of the best memoryless predictor: K ln S / (T + 2K)."""
    return cfg.n_copy * math.log(cfg.n_symbols) / (cfg.seq_len + 2 * cfg.n_copy)


def validate(cfg) -> None:
    """Raise ConfigError (one line) for a bad task.* value."""
    require(cfg.n_symbols >= 2, "task.n_symbols", cfg.n_symbols, "an integer >= 2")
    require(cfg.n_copy >= 1, "task.n_copy", cfg.n_copy, "an integer >= 1")


register_task(
    TaskEntry(
        "copy",
        "copy memory (Arjovsky et al. 2016): recall n_copy symbols after seq_len blanks",
        CopyTaskConfig,
        spec,
        synthetic_splits(generate),
        baseline,
        validate,
        target=Target("val/accuracy", 0.99),
    )
)
