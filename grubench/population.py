"""Populations: `trainer.seeds` seeds x a grid of hyperparameters, trained as one program.

`trainer.grid.lr=[1e-3,3e-3] trainer.seeds=3` makes six members. Every member is a (seed,
values) pair; its values are per-member arrays in the train state, traced by the one compiled
program rather than baked into it, so a member trains as the same (seed, values) run alone
would, to float32 rounding (`grubench.program`). Only keys that change neither shapes nor the
program can vary inside a population: `GRID_KEYS`. The members are ordered grid point by grid
point (the grid's keys in `GRID_KEYS` order, the last varying fastest), seeds innermost.
Members that share a seed share their initialisation, data order and dropout masks: the grid
points are compared on the same draws (a paired design).
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
        return ", ".join([f"seed {self.seed}", *(f"{k}={v!r}" for k, v in self.values.items())])

    def series(self) -> str:
        """A short name for the member's own series (W&B): seed3, or seed3_lr0.001_dropout0.3."""
        short = {key: name for name, (key, _) in GRID_KEYS.items()}
        return "_".join([f"seed{self.seed}", *(f"{short[k]}{v!r}" for k, v in self.values.items())])


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
    # The schema (config.GridConfig) has made every value None or a list; a key added with
    # `+trainer.grid.NAME=` gets past it.
    node = cfg.trainer.get("grid") or {}
    for name in node:
        if name not in GRID_KEYS:
            raise ConfigError(not_a_grid_key(str(name)))
    out: dict[str, list[float]] = {}
    for name, (key, allowed) in GRID_KEYS.items():
        values = node.get(name)
        if values is None:
            continue
        shown = f"trainer.grid.{name}"
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


def check_not_shadowed(cfg: Any, overrides: list[str]) -> None:
    """ConfigError (one line) for an override of a key the grid varies (`trainer.lr=1e-3`
    beside a preset's `trainer.grid.lr`): the grid's values would be trained instead."""
    g = grid(cfg)
    for o in overrides:
        key, _, value = o.lstrip("+~").partition("=")
        name = next((n for n, (k, _) in GRID_KEYS.items() if k == key), None)
        if name is not None and key in g:
            raise ConfigError(
                f"{key}={value} is not allowed beside trainer.grid.{name}={g[key]}, which sets "
                f"{key} for every member: drop {key}=, or put the value in the grid"
            )


def size(cfg: Any) -> int:
    """How many members `members(cfg)` has, without making them."""
    return math.prod(len(v) for v in grid(cfg).values()) * cfg.trainer.seeds


def members(cfg: Any) -> list[Member]:
    """Every member of the population of `cfg`: grid points in order, seeds innermost."""
    g = grid(cfg)
    seeds = [cfg.seed + i for i in range(cfg.trainer.seeds)]
    points = [dict(zip(g, combo, strict=True)) for combo in itertools.product(*g.values())]
    return [Member(s, point) for point in points for s in seeds]


def config_values(cfg: Any) -> dict[str, float]:
    """{name: value} of the `GRID_KEYS` in `cfg` itself: a member's values off the grid."""
    out = {}
    for name, (key, _) in GRID_KEYS.items():
        group, field = key.split(".")
        out[name] = float(cfg[group][field])
    return out


def hyperparams(cfg: Any, population: list[Member]) -> dict[str, np.ndarray]:
    """{name: float32 [members]}: each member's lr, weight_decay, clip_norm and dropout (its
    grid values, else the config's), the values the program reads from the train state."""
    base = config_values(cfg)
    return {
        name: np.array([m.values.get(key, base[name]) for m in population], np.float32)
        for name, (key, _) in GRID_KEYS.items()
    }


# Bytes per parameter a member holds while training: parameters, AdamW's two moments, the
# gradient and the update (float32), and the best parameters kept for early stopping.
_STATE_COPIES = 6


# The estimate's margin over the arithmetic below, which leaves out XLA's temporaries; the
# test of the estimate (tests/test_population.py) checks it stays above XLA's own figure.
_MARGIN = 2


def estimated_bytes(params: int, batch: int, steps_kept: int, per_step: int) -> int:
    """An estimate, erring high, of one member's training memory: its state (`_STATE_COPIES`
    float32 copies of the parameters) and the activations of a step, `per_step` floats per
    example and time step for the `steps_kept` time steps the backward pass keeps."""
    return _MARGIN * 4 * (_STATE_COPIES * params + batch * steps_kept * per_step)


def device_bytes() -> tuple[int | None, bool]:
    """(the memory of one device, whether the devices share it): an accelerator's allocator
    limit, each its own; on CPU the host's physical memory, shared by every CPU device."""
    import jax

    dev = jax.local_devices()[0]
    stats = dev.memory_stats() if dev.platform != "cpu" else None
    if stats and stats.get("bytes_limit"):
        return int(stats["bytes_limit"]), False
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), True
    except (ValueError, OSError, AttributeError):
        return None, True


def check_fits(n_members: int, per_member: int, on_one_device: int) -> None:
    """ConfigError (one line) when a device would need more memory than it has: the members
    it holds (`on_one_device` of the `n_members`) at `per_member` bytes each, or all of them
    where the devices share the memory (CPU). A single member is checked too, against its
    estimate without the margin (which errs high by up to about 2x): a model surely too large
    is refused at once, not left to stall or fail in XLA."""
    have, shared = device_bytes()
    need = per_member * (n_members if shared else on_one_device)
    if n_members == 1:  # alone, refused only where even the estimate without its margin is
        need //= _MARGIN
    if have is not None and need > have:
        where = "the memory here" if shared else "one device's memory"
        if n_members == 1:
            raise ConfigError(
                f"this model is too large to train: about {need / 2**30:.1f} GiB estimated, "
                f"more than the {have / 2**30:.1f} GiB of {where}; reduce model.hidden, "
                "model.depth, trainer.batch_size or task.seq_len, or set model.remat=true"
            )
        raise ConfigError(
            f"a population of {n_members} members (trainer.seeds x the grid) is too large: about "
            f"{need / 2**30:.1f} GiB estimated, more than the {have / 2**30:.1f} GiB of "
            f"{where}; use fewer members, or split the grid over a Hydra sweep (-m)"
        )
