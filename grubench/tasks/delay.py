"""Delayed recall: output the symbol seen k steps back.

Input, length L = seq_len (k = lag, S = n_symbols):
    x_1 .. x_L                      tokens: symbols 0..S-1, uniform and independent
Target at step t: x_{t-k} for t > k (a class in 0..S-1); 0 before, where neither the loss nor
the accuracy looks. Every example has the one lag k, so per-lag accuracy is the accuracy.
Guessing gives ln S: the baseline.
"""

from __future__ import annotations

import math

import numpy as np

from grubench.tasks.base import Split, TaskSpec


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
