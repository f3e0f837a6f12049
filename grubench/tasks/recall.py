"""Associative recall (Ba et al. 2016): key-value pairs, then a query key; answer its value.

Input, length L = 2P + 2 (P = (seq_len - 2) / 2 pairs, distinct keys):
    k_1 v_1 .. k_P v_P ? k_q        tokens: keys 0..K-1, values K..K+V-1, query marker K+V
Target at the last step: v_q (a class in 0..V-1). Guessing gives ln V: the baseline.
The recall lag of an example is the distance from v_q to the answer, L - 2 - 2q for pair q:
2, 4, .., 2P steps; accuracy is also reported per lag.
"""

from __future__ import annotations

import math

import numpy as np

from grubench.tasks.base import Split, TaskSpec


def spec(cfg) -> TaskSpec:
    n_pairs = (cfg.seq_len - 2) // 2
    return TaskSpec("tokens", cfg.n_keys + cfg.n_values + 1, "classes", cfg.n_values,
                    lags=tuple(2 + 2 * k for k in range(n_pairs)))


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
