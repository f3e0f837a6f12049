"""Tasks: one module per family, each with `spec`, `generate` and `baseline`."""

from __future__ import annotations

from types import ModuleType

from grubench.tasks import adding, copy_memory, recall
from grubench.tasks.base import Split, Splits, TaskSpec, batch_sums, mean_loss, split_rng

TASKS: dict[str, ModuleType] = {"copy": copy_memory, "adding": adding, "recall": recall}


def get(name: str) -> ModuleType:
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}: expected one of {', '.join(TASKS)}") from None


def spec(cfg) -> TaskSpec:
    """The input/output spec of the task configured by `cfg` (a task config node)."""
    return get(cfg.name).spec(cfg)


def baseline(cfg) -> float | None:
    """The loss of the task's trivial (memoryless) predictor, where it has one."""
    fn = getattr(get(cfg.name), "baseline", None)
    return None if fn is None else float(fn(cfg))


def make_splits(cfg) -> Splits:
    """Train/val/test from `cfg.data_seed`, each from its own stream; train has train_size."""
    task = get(cfg.name)
    return Splits(
        train=task.generate(cfg, cfg.train_size, split_rng(cfg.data_seed, "train")),
        val=task.generate(cfg, cfg.val_size, split_rng(cfg.data_seed, "val")),
        test=task.generate(cfg, cfg.test_size, split_rng(cfg.data_seed, "test")),
    )


__all__ = [
    "TASKS", "Split", "Splits", "TaskSpec", "batch_sums", "mean_loss", "baseline", "get",
    "make_splits", "spec",
]
