"""Shared plumbing of the real-data tasks: optional packages, the user cache, checks.

The real data come from packages (the `data` extra), never from the network:
music21 (Bach chorales), statsmodels (sunspots) and scikit-learn (8x8 digits). A missing
package is one line naming the extra: `task=chorales needs music21: pip install -e '.[data]'`.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import IO

import numpy as np

from grubench.errors import ConfigError, DataError
from grubench.registry import TASKS, TaskEntry
from grubench.results import atomic_write
from grubench.tasks.base import Split


def missing_message(task: TaskEntry) -> str:
    """The one line that says which extra a task needs."""
    assert task.requires is not None
    return f"task={task.name} needs {task.requires[1]}: pip install -e '.[data]'"


def _importable(module: str) -> bool:
    top = module.split(".")[0]
    if top in sys.modules:  # None there means "import blocked" (and how tests fake absence)
        return sys.modules[top] is not None
    try:
        return importlib.util.find_spec(top) is not None
    except (ImportError, ValueError):
        return False


def available(task: str) -> bool:
    """True if the package `task` reads its data from can be imported (without importing it)."""
    entry = TASKS.get(task)
    return entry.requires is None or _importable(entry.requires[0])


def check_requires(task: TaskEntry) -> None:
    """Raise ConfigError (one line naming the extra) if the package the task reads its data
    from is missing; cheap: imports nothing."""
    if not available(task.name):
        raise ConfigError(missing_message(task))


def import_package(task: str, module: str) -> ModuleType:
    """Import `module` for `task`, or raise ConfigError naming the extra to install."""
    entry = TASKS.get(task)
    check_requires(entry)
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(missing_message(entry)) from None


def cache_dir() -> Path:
    """The user cache: $XDG_CACHE_HOME/grubench, by default ~/.cache/grubench."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "grubench"


def save_npz_atomic(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write an .npz so that readers see the old file or the whole new one, never a part:
    a temporary file in the same directory, then os.replace."""
    path.parent.mkdir(parents=True, exist_ok=True)

    def write(f: IO) -> None:
        np.savez(f, **arrays)  # type: ignore[arg-type]  # numpy's stub misreads **kwds

    atomic_write(path, write, binary=True)


def check(ok: bool, task: str, what: str) -> None:
    """Raise DataError('task=TASK data: WHAT') unless `ok`."""
    if not ok:
        raise DataError(f"task={task} data: {what}")


def round_half_up(x: float) -> int:
    return int(np.floor(x + 0.5))


def cap_train(split: Split, train_size: int) -> Split:
    """The documented cap of every real-data task: the first min(train_size, len) examples of
    the fixed train order (task.train_size larger than the split means all of it)."""
    return split.take(min(int(train_size), len(split)))


def check_split(task: str, split: Split, *, n: int, name: str) -> None:
    """Shapes agree, the size is the expected one, masks are 0/1, the values are finite."""
    check(len(split) == n, task, f"the {name} split has {len(split)} examples, expected {n}")
    N, T = split.x.shape[:2]
    check(split.y.shape[:2] == (N, T), task, f"{name}: y shape {split.y.shape} != x {(N, T)}")
    for mask in (split.loss_mask, split.metric_mask):
        check(mask.shape == (N, T), task, f"{name}: mask shape {mask.shape} != {(N, T)}")
        check(bool(np.isin(mask, (0.0, 1.0)).all()), task, f"{name}: masks must be 0 or 1")
    check(bool(np.isfinite(split.x).all()), task, f"{name}: non-finite inputs")
    check(bool(np.isfinite(split.y).all()), task, f"{name}: non-finite targets")
    if N:
        check(bool((split.loss_mask.sum(1) > 0).all()), task, f"{name}: an example scores no step")


def prior_nll(train_labels: np.ndarray, test_labels: np.ndarray, classes: int) -> float:
    """Mean NLL (nats) on `test_labels` of the train split's class frequencies (add-one
    smoothed over `classes`): the memoryless baseline of a classification task."""
    counts = np.bincount(np.asarray(train_labels).ravel(), minlength=classes).astype(np.float64)
    p = (counts + 1.0) / (counts.sum() + classes)
    return float(-np.mean(np.log(p[np.asarray(test_labels).ravel()])))
