"""Counting languages (Weiss, Goldberg & Yahav 2018): a^n b^n and a^n b^n c^n, next-symbol
prediction. An LSTM can learn to count and so accept longer strings than it was trained on;
a GRU cannot.

Input, length T = k M + 1 for every split (k = 2 letters for anbn, 3 for anbncn; M = test_max_n,
2 seq_len when 0), tokens: 0 pad, 1 start S, 2 a, 3 b, 4 c, 5 end E:
    S a^n b^n [c^n] 0 .. 0
Target at each real step: the next symbol, a^n b^n [c^n] E (a class in 0..5); 0 at the pads,
where nothing is scored. The loss scores every real step. Accuracy scores only the steps whose
next symbol is determined: S (n >= 1, so an a follows) and every step from the first b on; it
is per sequence, as in Weiss et al.: a string is accepted when all of those are right.
n is uniform in 1..seq_len for train and val, and in seq_len+1..M for test: the test strings
are all longer than any seen in training. The lag of an example is its n (lags 1..M), so the
accuracy is also reported against n.

Baseline: the loss of the best predictor that does not count. It knows the current symbol,
which fixes the phase (S, the a-run, the b-run, the c-run), but not how many symbols the run
has had, so at each letter it can only give the run's end a fixed probability; the best such
probability is 1/m, m = E[n] = (seq_len + 1) / 2 for train n. Each of the k runs then costs
(m - 1) ln(m / (m - 1)) + ln m nats in expectation, S costs nothing, and a string has 1 + k m
steps on average, so the baseline is k [(m - 1) ln(m / (m - 1)) + ln m] / (1 + k m) (0 when
seq_len = 1), the per-step loss on train and val. A model that counts reaches
ln(seq_len) / (1 + k m): the a-run is a guess however it predicts, and the rest is determined.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from grubench.config import TaskConfig, require
from grubench.registry import TaskEntry, register_task
from grubench.targets import Target
from grubench.tasks.base import Split, TaskSpec, synthetic_splits

PAD, START, A, B, C, END = range(6)
LETTERS = {"anbn": 2, "anbncn": 3}


@dataclass
class CountingTaskConfig(TaskConfig):
    """Counting languages a^n b^n (anbn) or a^n b^n c^n (anbncn): `seq_len` is the largest n of
    train and val; test draws n in seq_len+1..test_max_n (0: 2 * seq_len)."""

    name: str = "counting"
    language: str = "anbn"
    seq_len: int = 20
    test_max_n: int = 0


def max_n(cfg) -> int:
    """The largest n of any split: the test split's, `test_max_n` or 2 seq_len when it is 0."""
    return cfg.test_max_n or 2 * cfg.seq_len


def spec(cfg) -> TaskSpec:
    return TaskSpec(
        "tokens", 6, "classes", 6, lags=tuple(range(1, max_n(cfg) + 1)), accuracy="sequence"
    )


def strings(cfg, ns: np.ndarray) -> Split:
    """The split of one string per n in `ns` (ints >= 1), each padded to k max_n + 1 steps."""
    k = LETTERS[cfg.language]
    length = k * max_n(cfg) + 1
    ns = np.asarray(ns, np.int64)[:, None]
    letter = np.arange(length)[None, :] - 1  # -1 at S, then 0 .. k n - 1 over the letters
    real = letter < k * ns
    x = np.where(letter < 0, START, np.where(real, A + letter // ns, PAD)).astype(np.int32)
    y = np.zeros_like(x)
    y[:, :-1] = x[:, 1:]
    y[np.arange(len(ns)), k * ns[:, 0]] = END
    loss_mask = real.astype(np.float32)
    metric_mask = (real & ((letter < 0) | (letter >= ns))).astype(np.float32)
    return Split(x, y, loss_mask, metric_mask, (ns[:, 0] - 1).astype(np.int32))


def generate(cfg, n: int, rng: np.random.Generator, split: str = "train") -> Split:
    """n strings: n uniform in 1..seq_len, or in seq_len+1..max_n for split="test"."""
    lo, hi = (cfg.seq_len + 1, max_n(cfg)) if split == "test" else (1, cfg.seq_len)
    return strings(cfg, rng.integers(lo, hi + 1, size=n))


def baseline(cfg) -> float:
    """Per-step loss of the best non-counting predictor on train n (see the module doc)."""
    k, m = LETTERS[cfg.language], (cfg.seq_len + 1) / 2
    run = math.log(m) + ((m - 1) * math.log(m / (m - 1)) if m > 1 else 0.0)
    return k * run / (1 + k * m)


def validate(cfg) -> None:
    """Raise ConfigError (one line) for a bad task.* value."""
    require(cfg.language in ("anbn", "anbncn"), "task.language", cfg.language, "anbn or anbncn")
    require(
        cfg.test_max_n == 0 or cfg.test_max_n > cfg.seq_len,
        "task.test_max_n",
        cfg.test_max_n,
        f"0 (2 * seq_len) or an integer > task.seq_len={cfg.seq_len}, the largest train n",
    )


register_task(
    TaskEntry(
        "counting",
        "counting languages a^n b^n [c^n] (Weiss et al. 2018), tested on longer strings",
        CountingTaskConfig,
        spec,
        synthetic_splits(generate),
        baseline,
        validate,
        target=Target("val/accuracy", 0.99),
    )
)
