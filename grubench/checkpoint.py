"""Checkpoints of the whole train state, with orbax-checkpoint, behind save / restore / latest.

A checkpoint holds the vmapped train state of every seed (parameters, optimizer state, dropout
keys, divergence flags) as a flat list of arrays, and a JSON record of the host side: the step,
the best validation loss and step of each seed, the curve rows logged so far, and the config
that wrote it, and the SHA-256 of the arrays (orbax checksums only its index): a restore
verifies it and falls back to the newest intact checkpoint. Saves are synchronous: orbax writes
into a temporary directory and renames it when complete, so a kill mid-save leaves no
directory that `latest` would pick up.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import jax
import numpy as np

from grubench.config import config_difference
from grubench.errors import CheckpointError
from grubench.progress import tell
from grubench.results import atomic_write_text, jsonable

FILES = "grubench.sha256"  # in each step's directory: the SHA-256 of every file orbax wrote

__all__ = ["CheckpointError", "Checkpoints", "config_difference"]


def _to_leaves(state: Any) -> list[Any]:
    """PRNG keys become their raw uint32 data, on the host; orbax stores plain arrays (and,
    of several processes, takes no array that lives on one process's device)."""
    return [
        np.asarray(jax.random.key_data(x))
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)
        else x
        for x in jax.tree.leaves(state)
    ]


def _from_leaves(template: Any, leaves: list[Any]) -> Any:
    tmpl_leaves, treedef = jax.tree.flatten(template)
    out = [
        jax.random.wrap_key_data(v) if jax.dtypes.issubdtype(t.dtype, jax.dtypes.prng_key) else v
        for t, v in zip(tmpl_leaves, leaves, strict=True)
    ]
    return jax.tree.unflatten(treedef, out)


class Checkpoints:
    """The checkpoints of one run: a directory of numbered steps, the last `keep` kept. Of the
    processes of a multi-process run, only the `primary` one writes the file hashes and moves
    a corrupt checkpoint aside (orbax coordinates the saves themselves)."""

    def __init__(self, directory: str | Path, keep: int = 2, *, primary: bool = True):
        import orbax.checkpoint as ocp

        self.directory = Path(directory).resolve()
        self._ocp = ocp
        self._manager = None
        self.keep = keep
        self.primary = primary

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
        with _quiet():
            return self.manager.latest_step()

    def save(self, step: int, state: Any, meta: dict[str, Any]) -> None:
        """Save `state` and the JSON record `meta` as step `step`, with their hashes;
        CheckpointError (one line) if that fails (a full disk, a lost mount)."""
        ocp = self._ocp
        leaves = _to_leaves(state)
        shapes = [[list(np.shape(x)), np.dtype(x.dtype).str] for x in leaves]
        meta = {**meta, "sha256": digest(leaves), "shapes": shapes}
        where = self.directory / str(step)
        try:
            with _quiet(after_failure=True):
                self.manager.save(
                    step,
                    args=ocp.args.Composite(
                        state=ocp.args.StandardSave(leaves), meta=ocp.args.JsonSave(jsonable(meta))
                    ),
                    force=True,
                )
                self.manager.wait_until_finished()
                if self.primary:
                    atomic_write_text(where / FILES, json.dumps(_file_hashes(where), indent=0))
        except Exception as e:  # noqa: BLE001 - a full disk, a lost mount: one line
            raise CheckpointError(f"cannot save checkpoint {where} ({_line(e)})") from None

    def restore(
        self, template: Any, config: dict, *, quarantine: bool = True
    ) -> tuple[Any, dict[str, Any]] | None:
        """(state, meta) of the newest intact checkpoint, shaped like `template`; None if there
        is none. A checkpoint whose files or arrays fail their SHA-256 (or, without file
        hashes, that orbax cannot read) is skipped for the next older one; once one is intact,
        each skipped one is a warning line on stderr and (with `quarantine`, on the primary
        process) renamed STEP.corrupt, so the run can save that step again. Raises
        CheckpointError if none is intact (nothing renamed), or if one cannot be used: written
        by another configuration or for another model, or unreadable although intact."""
        steps: list[int] = []
        if self.directory.is_dir():
            with _quiet():  # orbax logs an error for a step whose metadata is damaged
                steps = sorted(self.manager.all_steps(), reverse=True)
        if not steps:
            return None
        corrupt: list[tuple[Path, str]] = []
        for step in steps:
            try:
                restored = self._restore(step, template, config)
            except _Corrupt as e:
                corrupt.append((self.directory / str(step), str(e)))
                continue
            for path, why in corrupt:  # one line each, once an intact one is found
                moved = self._move_aside(path) if quarantine and self.primary else None
                if quarantine and self.primary and moved is None:
                    raise CheckpointError(
                        f"checkpoint {path} is corrupt ({why}) and cannot be moved aside: "
                        f"remove it to resume from step {step}"
                    )
                tell(
                    f"grubench-train: warning: checkpoint {path} is corrupt ({why}); resuming "
                    f"from the older step {step}" + (f"; renamed {moved}" if moved else "")
                )
            if corrupt and quarantine:
                self.manager.reload()  # forget the renamed steps
            return restored
        raise CheckpointError(
            f"no intact checkpoint in {self.directory} ({corrupt[0][0].name}: {corrupt[0][1]}): "
            f"remove {self.directory} to start the run afresh"
        )

    @staticmethod
    def _move_aside(path: Path) -> str | None:
        """Rename a corrupt step's directory STEP.corrupt (STEP.corrupt2, ... if taken), kept
        for a look; the new name, or None where it cannot be renamed."""
        for n in range(1, 100):
            target = path.with_name(f"{path.name}.corrupt{n if n > 1 else ''}")
            if target.exists():
                continue
            try:
                path.rename(target)
            except OSError:
                return None
            return target.name
        return None

    def _restore(self, step: int, template: Any, config: dict) -> tuple[Any, dict[str, Any]]:
        ocp = self._ocp
        where = self.directory / str(step)
        # Files first: a damaged file never reaches orbax and TensorStore, whose failed reads
        # print a traceback per pending read from their own threads. Once the files are the
        # ones saved, a failure to read them is not corruption (a permission, a lost mount).
        hashed = _check_files(where)

        def unreadable(what: str, e: Exception) -> Exception:
            if hashed:
                return CheckpointError(f"checkpoint {where} is unreadable: {what} ({_line(e)})")
            return _Corrupt(f"unreadable {what}: {_line(e)}")

        try:
            with _quiet():
                meta = self.manager.restore(
                    step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())
                )["meta"]
        except Exception as e:  # noqa: BLE001 - any failure to read is one message
            raise unreadable("record", e) from None
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
        want = [[list(np.shape(x)), np.dtype(x.dtype).str] for x in tmpl]
        if "shapes" in meta and meta["shapes"] != want:
            saved = meta["shapes"]
            i = next((i for i, (g, w) in enumerate(zip(saved, want, strict=False)) if g != w), None)
            what = (
                f"an array of shape {tuple(saved[i][0])} where {tuple(want[i][0])} is expected"
                if i is not None
                else f"{len(saved)} arrays where {len(want)} are expected"
            )
            raise CheckpointError(f"checkpoint {where} does not match this model: {what}")
        abstract = [jax.ShapeDtypeStruct(x.shape, x.dtype) for x in tmpl]
        try:
            with _quiet():
                leaves = self.manager.restore(
                    step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract))
                )["state"]
        except Exception as e:  # noqa: BLE001
            raise unreadable("arrays", e) from None
        for got, want_leaf in zip(leaves, tmpl, strict=True):
            if got.shape != want_leaf.shape or got.dtype != want_leaf.dtype:
                raise CheckpointError(
                    f"checkpoint {where} does not match this model: an array of shape "
                    f"{tuple(got.shape)} where {tuple(want_leaf.shape)} is expected"
                )
        if "sha256" in meta and digest(leaves) != meta["sha256"]:
            raise _Corrupt("its arrays differ from what was saved: SHA-256 mismatch")
        return _from_leaves(template, leaves), meta

    def close(self) -> None:
        if self._manager is not None:
            self._manager.close()


def _check_files(step_dir: Path) -> bool:
    """Whether `step_dir` has its file hashes (a checkpoint killed before they were written,
    or an older one, has none); _Corrupt if a saved file is missing or differs."""
    try:
        saved = json.loads((step_dir / FILES).read_text())
    except FileNotFoundError:
        return False
    except (OSError, ValueError) as e:
        raise _Corrupt(f"unreadable {FILES}: {_line(e)}") from None
    if not isinstance(saved, dict):
        raise _Corrupt(f"unreadable {FILES}: not a mapping")
    for name, want in sorted(saved.items()):  # files written later (.nfsXXXX) are not checked
        try:
            got = _sha256(step_dir / name)
        except OSError as e:
            raise _Corrupt(f"{name}: {e.strerror}") from None
        if got != want:
            raise _Corrupt(f"{name} differs from what was saved (SHA-256)")
    return True


def _file_hashes(step_dir: Path) -> dict[str, str]:
    """{path relative to `step_dir`: SHA-256 (hex)} of every file orbax wrote there."""
    out = {}
    for path in sorted(step_dir.rglob("*")):
        if path.is_file() and path.name != FILES:
            out[str(path.relative_to(step_dir))] = _sha256(path)
    return out


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


class _Corrupt(Exception):
    """A checkpoint whose files cannot be read back as they were written."""


def digest(leaves: list[Any]) -> str:
    """SHA-256 (hex) of arrays' dtypes, shapes and bytes, in order: what a checkpoint's
    arrays must hash to when read back (orbax checksums only its index)."""
    h = hashlib.sha256()
    for x in leaves:
        a = np.ascontiguousarray(np.asarray(x))
        h.update(f"{a.dtype.str}{a.shape};".encode())
        h.update(a.tobytes())
    return h.hexdigest()


@contextmanager
def _quiet(after_failure: bool = False) -> Iterator[None]:
    """Orbax and TensorStore log whole tracebacks for a file they cannot read or write; the
    caller turns the failure into one line, so those are held back here. TensorStore's
    threads also report each operation still pending when orbax's event loop closed, via
    `sys.unraisablehook`: those are dropped from then on. With `after_failure` (a save, whose
    failure ends the run), a failure leaves the loggers quiet for the rest of the process,
    since orbax's threads go on reporting it while the process ends with its one line."""
    sys.unraisablehook = _without_closed_loop(sys.unraisablehook)
    loggers = [logging.getLogger(n) for n in ("absl", "orbax", "asyncio", "jax")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    failed = False
    try:
        yield
    except BaseException:
        failed = True
        if after_failure:
            logging.raiseExceptions = False  # a full disk: the log file fails too; say it once
        raise
    finally:
        if not (failed and after_failure):
            for lg, level in zip(loggers, levels, strict=True):
                lg.setLevel(level)


def _without_closed_loop(hook: Any) -> Any:
    """`hook` (sys.unraisablehook) without RuntimeError('Event loop is closed'): TensorStore's
    threads report each operation still pending when orbax's event loop closed."""
    if getattr(hook, "grubench", False):
        return hook

    def unraisable(info: Any) -> None:
        if not (
            isinstance(info.exc_value, RuntimeError)
            and "Event loop is closed" in str(info.exc_value)
        ):
            hook(info)

    unraisable.grubench = True  # type: ignore[attr-defined]
    return unraisable


def _line(e: BaseException, width: int = 160) -> str:
    """The first line of `e`'s message, at most `width` characters (TensorStore's are long)."""
    text = f"{type(e).__name__}: {e}".strip()
    line = text.splitlines()[0] if text else type(e).__name__
    return line if len(line) <= width else line[: width - 1] + "…"
