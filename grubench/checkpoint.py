"""Checkpoints of the whole train state, with orbax-checkpoint, behind save / restore / latest.

A checkpoint holds the vmapped train state of every seed (parameters, optimizer state, dropout
keys, divergence flags) as a flat list of arrays, and a JSON record of the host side: the step,
the best validation loss and step of each seed, the curve rows logged so far, and the config
that wrote it. Saves are synchronous: orbax writes into a temporary directory and renames it
when complete, so a kill mid-save leaves no directory that `latest` would pick up.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax

from grubench.config import ADDED_KEYS, FREE_KEYS, LEGACY_KEYS, SAME_MATH_KEYS, is_free_key
from grubench.errors import CheckpointError
from grubench.results import jsonable

__all__ = ["CheckpointError", "Checkpoints", "config_difference"]


def _to_leaves(state: Any) -> list[Any]:
    """PRNG keys become their raw uint32 data; orbax stores plain arrays."""
    return [
        jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else x
        for x in jax.tree.leaves(state)
    ]


def _from_leaves(template: Any, leaves: list[Any]) -> Any:
    tmpl_leaves, treedef = jax.tree.flatten(template)
    out = [
        jax.random.wrap_key_data(v) if jax.dtypes.issubdtype(t.dtype, jax.dtypes.prng_key) else v
        for t, v in zip(tmpl_leaves, leaves, strict=True)
    ]
    return jax.tree.unflatten(treedef, out)


def config_difference(a: dict, b: dict, prefix: tuple = ()) -> str | None:
    """The first key where two resolved configs differ, as 'key=a here, b in the checkpoint';
    keys that may differ on resume (config.FREE_KEYS, config.SAME_MATH_KEYS) are skipped."""
    for k in sorted(set(a) | set(b)):
        path = (*prefix, k)
        if is_free_key(".".join(path), FREE_KEYS + SAME_MATH_KEYS) or (
            ".".join(path) in LEGACY_KEYS and k not in a
        ):
            continue
        added = ADDED_KEYS.get(".".join(path))
        va, vb = a.get(k, added), b.get(k, added)
        if isinstance(va, dict) and isinstance(vb, dict):
            diff = config_difference(va, vb, path)
            if diff:
                return diff
        elif va != vb:
            return f"{'.'.join(path)}={va!r} here, {vb!r} in the checkpoint"
    return None


class Checkpoints:
    """The checkpoints of one run: a directory of numbered steps, the last `keep` kept."""

    def __init__(self, directory: str | Path, keep: int = 2):
        import orbax.checkpoint as ocp

        self.directory = Path(directory).resolve()
        self._ocp = ocp
        self._manager = None
        self.keep = keep

    @property
    def manager(self):
        if self._manager is None:
            ocp = self._ocp
            opts = ocp.CheckpointManagerOptions(
                max_to_keep=self.keep, enable_async_checkpointing=False, create=True
            )
            self._manager = ocp.CheckpointManager(self.directory, options=opts)
        return self._manager

    def latest(self) -> int | None:
        """The newest complete checkpoint's step, or None."""
        if not self.directory.is_dir():
            return None
        return self.manager.latest_step()

    def save(self, step: int, state: Any, meta: dict[str, Any]) -> None:
        ocp = self._ocp
        self.manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(_to_leaves(state)),
                meta=ocp.args.JsonSave(jsonable(meta)),
            ),
            force=True,
        )
        self.manager.wait_until_finished()

    def restore(self, template: Any, config: dict) -> tuple[Any, dict[str, Any]] | None:
        """(state, meta) of the newest checkpoint, shaped like `template`; None if there is none.
        Raises CheckpointError if it is unreadable or was written by another configuration."""
        step = self.latest()
        if step is None:
            return None
        ocp = self._ocp
        where = self.directory / str(step)
        try:
            meta = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))[
                "meta"
            ]
        except Exception as e:  # noqa: BLE001 - any failure to read is one message
            raise CheckpointError(f"checkpoint {where} is unreadable ({_line(e)})") from None
        if not isinstance(meta, dict) or "config" not in meta or "step" not in meta:
            raise CheckpointError(f"checkpoint {where} was not written by grubench-train")
        if "grid" in (config.get("trainer") or {}) and "grid" not in (
            meta["config"].get("trainer") or {}
        ):
            raise CheckpointError(
                f"checkpoint {where} was written by a grubench without populations, whose "
                "train state differs: start the run in a new directory"
            )
        diff = config_difference(config, meta["config"])
        if diff:
            raise CheckpointError(f"checkpoint {where} belongs to another configuration: {diff}")
        tmpl = _to_leaves(template)
        abstract = [jax.ShapeDtypeStruct(x.shape, x.dtype) for x in tmpl]
        try:
            leaves = self.manager.restore(
                step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract))
            )["state"]
        except Exception as e:  # noqa: BLE001
            raise CheckpointError(f"checkpoint {where} is unreadable ({_line(e)})") from None
        for got, want in zip(leaves, tmpl, strict=True):
            if got.shape != want.shape or got.dtype != want.dtype:
                raise CheckpointError(
                    f"checkpoint {where} does not match this model: an array of shape "
                    f"{tuple(got.shape)} where {tuple(want.shape)} is expected"
                )
        return _from_leaves(template, leaves), meta

    def close(self) -> None:
        if self._manager is not None:
            self._manager.close()


def _line(e: BaseException) -> str:
    text = f"{type(e).__name__}: {e}".strip()
    return text.splitlines()[0] if text else type(e).__name__
