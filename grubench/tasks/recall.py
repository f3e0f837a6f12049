"""Associative recall (Ba et al. 2016): key-value pairs, then a query key; answer its value.

Input, length L = 2P + 2 (P = (seq_len - 2) / 2 pairs, distinct keys):
    k_1 v_1 .. k_P v_P ? k_q        tokens: keys 0..K-1, values K..K+V-1, query marker K+V
Target at the last step: v_q (a class in 0..V-1). Guessing gives ln V: the baseline.
The recall lag of an example is the distance from v_q to the answer, L - 2 - 2q for pair q:
2, 4, .., 2P steps; accuracy is also reported per lag.
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
class RecallTaskConfig(TaskConfig):
    """Associative recall: (seq_len - 2) / 2 key-value pairs, then a query marker and a key."""

    name: str = "recall"
    seq_len: int = 22
    n_keys: int = 16
    n_values: int = 16


def spec(cfg) -> TaskSpec:
    n_pairs = (cfg.seq_len - 2) // 2
    return TaskSpec(
        "tokens",
        cfg.n_keys + cfg.n_values + 1,
        "classes",
        cfg.n_values,
        lags=tuple(2 + 2 * k for k in range(n_pairs)),
    )


def generate(cfg, n: int, rng: np.random.Generator) -> Split:
    L, K, V = cfg.seq_len, cfg.n_keys, cfg.n_values
    P = (L - 2) // 2
    keys = np.argsort(rng.random((n, K)), axis=1)[:, :P].astype(np.int32)
    values = rng.integers(0, V, size=(n, P), dtype=np.int32)
    query = rng.integers(0, P, size=n)
    rows = np.arange(n)
    x = np.zeros((n, L), np.int32)
    x[:, 0 : 2 * P : 2] = keys
    x[:, 1 : 2 * P : 2] = K + values
    x[:, -2] = K + V
    x[:, -1] = keys[rows, query]
    y = np.zeros((n, L), np.int32)
    y[:, -1] = values[rows, query]
    mask = np.zeros((n, L), np.float32)
    mask[:, -1] = 1.0
    lag_index = (P - 1 - query).astype(np.int32)  # lag L - 2 - 2q is lags[P - 1 - q]
    return Split(x, y, mask, mask.copy(), lag_index)


def baseline(cfg) -> float:
    """Cross-entropy of a uniform guess over the V values: ln V."""
    return math.log(cfg.n_values)


def validate(cfg) -> None:
    """Raise ConfigError (one line) for a bad task.* value."""
    n_pairs = (cfg.seq_len - 2) // 2
    require(
        cfg.seq_len >= 4 and cfg.seq_len % 2 == 0,
        "task.seq_len",
        cfg.seq_len,
        "an even integer >= 4 for recall (pairs, then a query marker and a key)",
    )
    require(
        cfg.n_keys >= n_pairs,
        "task.n_keys",
        cfg.n_keys,
        f"an integer >= {n_pairs}, the number of pairs at seq_len={cfg.seq_len}",
    )
    require(cfg.n_values >= 2, "task.n_values", cfg.n_values, "an integer >= 2")


register_task(
    TaskEntry(
        "recall",
        "associative recall (Ba et al. 2016): the value of a queried key",
        RecallTaskConfig,
        spec,
        synthetic_splits(generate),
        baseline,
        validate,
        target=Target("val/accuracy", 0.99),
    )
)
