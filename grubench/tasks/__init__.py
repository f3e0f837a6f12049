"""Tasks, one module per family, each registering itself in `grubench.registry.TASKS`.

A task module owns its config dataclass (a `grubench.config.TaskConfig`), its validation, its
`TaskSpec`, its splits and its baseline, and registers them as a `TaskEntry`. Generated tasks
(copy, adding, recall, delay, counting) draw fixed splits from `task.data_seed`; real-data
tasks (chorales, sunspots, digits) read a fixed, documented split of data a package ships (the
`data` extra), checked on load, with `task.train_size` capping the training set; user-data
tasks (polyphonic, text, smnist, arrays) read the file `task.path` names (docs/data.md). A new
task is one module that registers itself (docs/extending.md).
"""

from __future__ import annotations

from typing import Any

from omegaconf import OmegaConf

from grubench.registry import TASKS
from grubench.targets import Target
from grubench.tasks import (  # noqa: F401 - imported to register the built-in tasks
    adding,
    arrays,
    chorales,
    copy_memory,
    counting,
    delay,
    digits,
    polyphonic,
    recall,
    smnist,
    sunspots,
    text,
)
from grubench.tasks.base import (
    DataError,
    Split,
    Splits,
    TaskSpec,
    batch_sums,
    mean_loss,
    split_rng,
    synthetic_splits,
)


def spec(cfg: Any) -> TaskSpec:
    """The input/output spec of the task configured by `cfg` (a task config node)."""
    return TASKS.get(cfg.name).spec(cfg)


def baseline(cfg: Any) -> float | None:
    """The loss of the task's trivial (memoryless) predictor, where it has one."""
    fn = TASKS.get(cfg.name).baseline
    value = None if fn is None else fn(cfg)
    return None if value is None else float(value)


def target(cfg: Any) -> Target | None:
    """When a run has learned the task configured by `cfg` (`grubench.targets`), if the task
    says."""
    return TASKS.get(cfg.name).target


def complete(cfg: Any) -> Any:
    """The run config `cfg` (with a `task` node) with the task keys its data decides set
    (`TaskEntry.completion`: a file's data set, length, content hash); `cfg` itself where the
    task decides none."""
    keys = TASKS.get(cfg.task.name).completion(cfg.task)
    return OmegaConf.merge(cfg, {"task": keys}) if keys else cfg


def make_splits(cfg: Any) -> Splits:
    """Train/val/test of the task configured by `cfg`: deterministic, train capped at
    train_size."""
    return TASKS.get(cfg.name).splits(cfg)


__all__ = [
    "TASKS",
    "DataError",
    "Split",
    "Splits",
    "TaskSpec",
    "baseline",
    "batch_sums",
    "complete",
    "make_splits",
    "mean_loss",
    "spec",
    "split_rng",
    "synthetic_splits",
    "target",
]
