"""A cell and a task from outside grubench, as a third-party package would write them: one
module that registers both (tests/test_registry.py loads it through an entry point or
GRUBENCH_PLUGINS, never by editing grubench)."""

import math
from dataclasses import dataclass
from typing import ClassVar

import jax.numpy as jnp
import numpy as np

from grubench.cells import RecurrentKernelCell
from grubench.config import ModelConfig, TaskConfig, require
from grubench.registry import CellEntry, TaskEntry, register_cell, register_task
from grubench.tasks import Split, TaskSpec, synthetic_splits


@dataclass
class LeakyConfig(ModelConfig):
    name: str = "leaky"
    leak: float = 0.5  # the cell's own option: model.leak


class LeakyCell(RecurrentKernelCell):
    """h' = leak ⊙ h + (1 - leak) ⊙ tanh(xp + h Wh + bh); wi [D, H], wh [H, H]."""

    gates: ClassVar[int] = 1

    def __init__(self, in_features, hidden, *, leak=0.5, **kw):
        super().__init__(in_features, hidden, **kw)
        self.leak = leak

    def recurrence(self):
        wh, bh, leak = self.wh[...], self.bh[...], self.leak

        def step(h, xp):
            h = leak * h + (1.0 - leak) * jnp.tanh(xp + h @ wh + bh)
            return h, h

        return step


register_cell(CellEntry("leaky", LeakyCell, "a leaky tanh RNN (a test plugin)", LeakyConfig))


@dataclass
class ParityConfig(TaskConfig):
    name: str = "parity"
    seq_len: int = 4


def spec(cfg):
    return TaskSpec("tokens", 2, "classes", 2)


def generate(cfg, n, rng):
    """Bits in, their running parity out."""
    x = rng.integers(0, 2, size=(n, cfg.seq_len)).astype(np.int32)
    y = (np.cumsum(x, axis=1) % 2).astype(np.int32)
    mask = np.ones((n, cfg.seq_len), np.float32)
    return Split(x, y, mask, mask.copy())


def validate(cfg):
    require(cfg.seq_len <= 64, "task.seq_len", cfg.seq_len, "an integer <= 64 for parity")


register_task(
    TaskEntry(
        "parity",
        "running parity of random bits (a test plugin)",
        ParityConfig,
        spec,
        synthetic_splits(generate),
        lambda cfg: math.log(2),
        validate,
    )
)
