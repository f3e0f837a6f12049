"""Tasks: one module per family.

Synthetic tasks (copy, adding, recall, delay, counting) provide `spec`, `generate` and
`baseline`; their splits are drawn from `task.data_seed`. A `generate` that takes `split` draws
a test split unlike train and val (counting: longer strings). Real-data tasks (chorales,
sunspots, digits) provide `spec`, `load_splits` and `baseline`: a fixed, documented split of
data a package ships (the `data` extra), checked on load, with `task.train_size` capping the
training set.
"""

from __future__ import annotations

import inspect
from types import ModuleType

from grubench.tasks import (
    adding,
    chorales,
    copy_memory,
    counting,
    delay,
    digits,
    recall,
    sunspots,
)
from grubench.tasks.base import (
    DataError,
    Split,
    Splits,
    TaskSpec,
    batch_sums,
    mean_loss,
    split_rng,
)
from grubench.tasks.data import REQUIRES, available, missing_message

TASKS: dict[str, ModuleType] = {
    "copy": copy_memory, "adding": adding, "recall": recall, "delay": delay,
    "counting": counting, "chorales": chorales, "sunspots": sunspots, "digits": digits,
}


def get(name: str) -> ModuleType:
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}: expected one of {', '.join(TASKS)}") from None


def check_available(cfg) -> None:
    """Raise ConfigError (one line naming the extra) if the package the task `cfg` reads its
    data from is missing; the synthetic tasks need nothing. Cheap: imports nothing."""
    from grubench.config import ConfigError

    if cfg.name in REQUIRES and not available(cfg.name):
        raise ConfigError(missing_message(cfg.name))


def spec(cfg) -> TaskSpec:
    """The input/output spec of the task configured by `cfg` (a task config node)."""
    return get(cfg.name).spec(cfg)


def baseline(cfg) -> float | None:
    """The loss of the task's trivial (memoryless) predictor, where it has one."""
    fn = getattr(get(cfg.name), "baseline", None)
    return None if fn is None else float(fn(cfg))


def make_splits(cfg) -> Splits:
    """Train/val/test. Synthetic tasks: from `cfg.data_seed`, each from its own stream; train
    has train_size; a `generate` taking `split` is told which split it draws. Real-data tasks:
    their fixed split (`load_splits`), train capped at train_size."""
    task = get(cfg.name)
    if hasattr(task, "load_splits"):
        return task.load_splits(cfg)
    by_split = "split" in inspect.signature(task.generate).parameters

    def draw(split: str, n: int) -> Split:
        kw = {"split": split} if by_split else {}
        return task.generate(cfg, n, split_rng(cfg.data_seed, split), **kw)

    return Splits(train=draw("train", cfg.train_size), val=draw("val", cfg.val_size),
                  test=draw("test", cfg.test_size))


__all__ = [
    "TASKS", "DataError", "Split", "Splits", "TaskSpec", "batch_sums", "mean_loss", "baseline",
    "check_available", "get", "make_splits", "spec",
]
