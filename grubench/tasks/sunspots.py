"""Sunspots: one-year-ahead forecasting of the yearly sunspot numbers statsmodels ships.

Data. `statsmodels.datasets.sunspots`: the yearly mean sunspot number (SUNACTIVITY) for the
309 years 1700..2008 (statsmodels 0.15.0), nothing downloaded.

Split, fixed and chronological, by the year being forecast: the first round(0.70 n) years are
train, the next round(0.15 n) validation, the rest test (rounding half up): 1700..1915 (216
years), 1916..1961 (46), 1962..2008 (47). `task.data_seed`, `task.val_size` and
`task.test_size` are ignored.

Examples. One per forecast year t that has `task.seq_len` = L earlier years: the input is the
L years t-L .. t-1 (x [N, L, 1]); the target at step k is the following year, so the last step
holds year t (y [N, L, 1]); the loss and the accuracy score the last step only, so every year
of a split is forecast exactly once, from the L years before it. The inputs of the first
validation and test examples reach back into the previous split: those years are past, known
when forecasting, and never scored there. Train therefore has 216 - L examples (196 at the
default L = 20; validation requires 1 <= L <= 100), val 46, test 47; `task.train_size` caps
train to its first (earliest) train_size examples (larger values mean all of it).

Scale. Inputs and targets are standardised with the mean and (population) std of the 216
train years (42.90 and 34.20 at statsmodels 0.15.0), so the loss the trainer optimises is MSE
in train-std units; `TaskSpec.loss_scale` = std**2 (1169.46) turns it into MSE in original
units (sunspot number squared). Accuracy counts |error| < `task.tolerance` (standardised
units; the default 0.25 is 8.5 sunspots).

Baseline: persistence, forecasting each year as the year before, MSE on the test split (the
same 47 years whatever seq_len): 0.7238 standardised = 846.5 in original units (RMSE 29.1).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from grubench.config import TaskConfig, require
from grubench.registry import TaskEntry, register_task
from grubench.tasks.base import Split, Splits, TaskSpec
from grubench.tasks.data import cap_train, check, check_split, import_package, round_half_up

TASK = "sunspots"
TRAIN_FRACTION, VAL_FRACTION = 0.70, 0.15
MAX_SEQ_LEN = 100  # keeps at least 116 train examples
MIN_YEARS = 300


@lru_cache(maxsize=1)
@dataclass
class SunspotsTaskConfig(TaskConfig):
    """Yearly sunspots (statsmodels): forecast the next year from `seq_len` years, on a fixed
    chronological 70/15/15 split; train_size caps train (the default means all); val_size,
    test_size and data_seed are ignored. See grubench/tasks/sunspots.py."""

    name: str = "sunspots"
    seq_len: int = 20
    tolerance: float = 0.25  # |error| below this (in train stds) counts as correct


def load_series() -> tuple[np.ndarray, np.ndarray]:
    """(years, sunspot numbers) as shipped, checked: consecutive years, finite values >= 0."""
    ds = import_package(TASK, "statsmodels.datasets.sunspots")
    df = ds.load_pandas().data
    check({"YEAR", "SUNACTIVITY"} <= set(df.columns), TASK, "no YEAR and SUNACTIVITY columns")
    years = df["YEAR"].to_numpy(np.float64)
    values = df["SUNACTIVITY"].to_numpy(np.float64)
    check(len(values) >= MIN_YEARS, TASK, f"{len(values)} years, expected at least {MIN_YEARS}")
    check(
        bool((years == np.round(years)).all() and (np.diff(years) == 1).all()),
        TASK,
        "the years are not consecutive",
    )
    check(
        bool(np.isfinite(values).all() and (values >= 0).all()),
        TASK,
        "sunspot numbers must be finite and >= 0",
    )
    years_int = years.astype(np.int64)
    years_int.flags.writeable = values.flags.writeable = False
    return years_int, values


def boundaries(n: int) -> tuple[int, int]:
    """(first val year index, first test year index) of n years: 70/15/15 rounded half up."""
    n_train = round_half_up(TRAIN_FRACTION * n)
    return n_train, n_train + round_half_up(VAL_FRACTION * n)


def scale() -> tuple[float, float]:
    """Mean and population std of the train years."""
    _, values = load_series()
    train = values[: boundaries(len(values))[0]]
    return float(train.mean()), float(train.std())


def spec(cfg) -> TaskSpec:
    _, std = scale()
    return TaskSpec("real", 1, "real", 1, tolerance=cfg.tolerance, loss_scale=std**2)


def _windows(z: np.ndarray, targets: range, length: int) -> Split:
    n = len(targets)
    x = np.zeros((n, length, 1), np.float32)
    y = np.zeros((n, length, 1), np.float32)
    for i, t in enumerate(targets):
        x[i, :, 0] = z[t - length : t]
        y[i, :, 0] = z[t - length + 1 : t + 1]
    mask = np.zeros((n, length), np.float32)
    mask[:, -1] = 1.0
    return Split(x, y, mask, mask.copy())


def full_splits(cfg) -> Splits:
    """The three fixed splits, train not yet capped by task.train_size, checked."""
    length = int(cfg.seq_len)
    _, values = load_series()
    n = len(values)
    val_start, test_start = boundaries(n)
    check(1 <= length < val_start, TASK, f"seq_len {length} leaves no train example")
    mean, std = scale()
    z = (values - mean) / std
    splits = Splits(
        train=_windows(z, range(length, val_start), length),
        val=_windows(z, range(val_start, test_start), length),
        test=_windows(z, range(test_start, n), length),
    )
    sizes = (val_start - length, test_start - val_start, n - test_start)
    for name, size in zip(("train", "val", "test"), sizes, strict=True):
        s = getattr(splits, name)
        check_split(TASK, s, n=size, name=name)
        check(s.x.shape[2] == 1 and s.y.shape[2] == 1, TASK, f"{name}: expected one value a step")
        check(bool(np.abs(s.y).max() < 10), TASK, f"{name}: a value beyond 10 train stds")
    return splits


def load_splits(cfg) -> Splits:
    s = full_splits(cfg)
    return Splits(train=cap_train(s.train, cfg.train_size), val=s.val, test=s.test)


def baseline(cfg) -> float:
    """Persistence (next year = this year) MSE on the test split, standardised units; times
    spec(cfg).loss_scale it is in sunspots**2."""
    test = full_splits(cfg).test
    return float(np.mean((test.x[:, -1, 0].astype(np.float64) - test.y[:, -1, 0]) ** 2))


def validate(cfg) -> None:
    """Raise ConfigError (one line) for a bad task.* value."""
    require(cfg.seq_len <= 100, "task.seq_len", cfg.seq_len, "an integer in [1, 100] for sunspots")
    require(cfg.tolerance > 0, "task.tolerance", cfg.tolerance, "a float > 0")


register_task(
    TaskEntry(
        "sunspots",
        "yearly sunspots (statsmodels): next-year forecast (MSE)",
        SunspotsTaskConfig,
        spec,
        load_splits,
        baseline,
        validate,
        requires=("statsmodels", "statsmodels"),
        plot_unit="MSE",
    )
)
