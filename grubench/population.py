"""Populations: `trainer.seeds` seeds x a grid of hyperparameters, trained as one program.

`trainer.grid.lr=[1e-3,3e-3] trainer.seeds=3` makes six members. Every member is a (seed,
values) pair; its values are per-member arrays in the train state, traced by the one compiled
program rather than baked into it, so a member trains exactly as the same (seed, values) run
alone would (`grubench.program`). Only keys that change neither shapes nor the program can
vary inside a population: `GRID_KEYS`. The members are ordered grid point by grid point (the
grid's keys in `GRID_KEYS` order, the last varying fastest), seeds innermost.
"""

from __future__ import annotations

import itertools
import math
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from grubench.errors import ConfigError

# trainer.grid.NAME -> (the config key it varies, the values allowed, as config.validate says)
GRID_KEYS: dict[str, tuple[str, str]] = {
    "lr": ("trainer.lr", "a float > 0"),
    "weight_decay": ("trainer.weight_decay", "a float >= 0"),
    "clip_norm": ("trainer.clip_norm", "a float >= 0 (0 disables)"),
    "dropout": ("model.dropout", "a float in [0, 1)"),
}


def _allowed(name: str, v: float) -> bool:
    if name == "lr":
        return v > 0
    if name == "dropout":
        return 0 <= v < 1
    return v >= 0


@dataclass(frozen=True)
class Member:
    """One member of a population: its seed and its grid values, keyed by config key."""

    seed: int
    values: dict[str, float]

    def label(self) -> str:
        """'seed 3' or 'seed 3, trainer.lr=0.001': how messages name the member."""
        return ", ".join([f"seed {self.seed}", *(f"{k}={v:g}" for k, v in self.values.items())])


def not_a_grid_key(name: str) -> str:
    """The message for `trainer.grid.NAME` where NAME cannot vary inside a population."""
    return (
        f"trainer.grid.{name} is not allowed: a population varies only "
        f"{', '.join(GRID_KEYS)}, values that change neither shapes nor the program; sweep "
        "any other key with Hydra's -m (e.g. grubench-train -m model.hidden=64,128)"
    )


def grid(cfg: Any) -> dict[str, list[float]]:
    """{config key: values} of `cfg.trainer.grid`, keys in `GRID_KEYS` order; ConfigError (one
    line) for an empty grid, a value that is not a number, or one out of the key's range."""
    node = cfg.trainer.get("grid") or {}
    out: dict[str, list[float]] = {}
    for name in node:
        if name not in GRID_KEYS:
            raise ConfigError(not_a_grid_key(str(name)))
    for name, (key, allowed) in GRID_KEYS.items():
        values = node.get(name)
        if values is None:
            continue
        shown = f"trainer.grid.{name}"
        if isinstance(values, str) or not hasattr(values, "__len__"):
            raise ConfigError(f"{shown}={values} is not allowed: a list such as [0.001,0.003]")
        if len(values) == 0:
            raise ConfigError(f"{shown}=[] is not allowed: an empty grid trains nothing")
        got = []
        for v in values:
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                raise ConfigError(
                    f"{shown}={list(values)} is not allowed: every value must be a number ({v!r} "
                    "is not)"
                )
            if not _allowed(name, float(v)):
                raise ConfigError(f"{shown}={list(values)} is not allowed: {v} is not {allowed}")
            got.append(float(v))
        if len(set(got)) != len(got):
            raise ConfigError(f"{shown}={list(values)} is not allowed: a value is repeated")
        out[key] = got
    return out


def members(cfg: Any) -> list[Member]:
    """Every member of the population of `cfg`: grid points in order, seeds innermost."""
    g = grid(cfg)
    seeds = [cfg.seed + i for i in range(cfg.trainer.seeds)]
    points = [dict(zip(g, combo, strict=True)) for combo in itertools.product(*g.values())]
    return [Member(s, point) for point in points for s in seeds]


def value(cfg: Any, member: Member, key: str) -> float:
    """The member's value of the dotted config `key`: its grid value, else the config's."""
    if key in member.values:
        return member.values[key]
    group, name = key.split(".")
    return float(cfg[group][name])


def hyperparams(cfg: Any, population: list[Member]) -> dict[str, np.ndarray]:
    """{name: float32 [members]}: each member's lr, weight_decay, clip_norm and dropout, the
    values the program reads from the train state."""
    return {
        name: np.array([value(cfg, m, key) for m in population], np.float32)
        for name, (key, _) in GRID_KEYS.items()
    }


# Bytes per parameter a member holds while training: parameters, AdamW's two moments, the
# gradient and the update (float32), and the best parameters kept for early stopping.
_STATE_COPIES = 6


def estimated_bytes(params: int, cfg: Any, hidden_states: int) -> int:
    """A rough upper estimate of one member's training memory: its state (`_STATE_COPIES`
    float32 copies of the parameters) and the activations of a step, `hidden_states` floats
    per example and time step, kept for the backward pass."""
    tr, t = cfg.trainer, cfg.task.seq_len
    activations = 4 * tr.batch_size * t * hidden_states * cfg.model.depth
    return 4 * _STATE_COPIES * params + activations


def available_bytes() -> int | None:
    """The memory of the first device: its allocator's limit on an accelerator, the host's
    physical memory on CPU; None where neither is known."""
    import jax

    dev = jax.devices()[0]
    stats = dev.memory_stats() if dev.platform != "cpu" else None
    if stats and stats.get("bytes_limit"):
        return int(stats["bytes_limit"]) * jax.local_device_count()
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def check_fits(cfg: Any, n_members: int, params: int, hidden_states: int) -> None:
    """ConfigError (one line) when the population's estimated memory exceeds the devices'."""
    if n_members <= 1:
        return
    need = n_members * estimated_bytes(params, cfg, hidden_states)
    have = available_bytes()
    if have is not None and need > have:
        raise ConfigError(
            f"trainer.grid x trainer.seeds = {n_members} members is too large: about "
            f"{need / 2**30:.1f} GiB estimated, more than the {have / 2**30:.1f} GiB of "
            "memory here; use fewer members, or split the grid over a Hydra sweep (-m)"
        )
