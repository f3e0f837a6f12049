"""A run directory's guards: the config it belongs to, and one process at a time.

Fingerprint. A run writes `fingerprint.json` (the SHA-256 of its resolved config without the
process-only keys, `config.FREE_KEYS`, and that config) into its directory before it trains.
`check` refuses to run a config in a directory whose fingerprint is another's, naming the first
key that differs, so a relaunch with a changed setting never reuses or mixes in results of
the old one (a run that failed before its first checkpoint left nothing to reuse: a relaunch
under another config starts it afresh). An unfinished run may resume under other values of
the keys that change no math (`config.SAME_MATH_KEYS`), as its checkpoints do; a completed
run may not, since its results measured the old ones. A directory written before
fingerprints existed is compared with the config its results.json holds. The config recorded is
`request`: the one asked for, plus what the data decides (a user file's content hash).

Lock. `locked(out_dir)` holds an exclusive `fcntl.flock` on `out_dir/.lock` (holding the
owner's PID) for a run's lifetime; a second process gets `RunDirError` naming the holder. The
kernel releases the lock when the holder exits, however it ends, so a killed run leaves no
stale lock behind.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from grubench.config import FREE_KEYS, SAME_MATH_KEYS, config_difference
from grubench.errors import RunDirError
from grubench.progress import tell
from grubench.registry import TASKS
from grubench.results import atomic_write_text

FINGERPRINT = "fingerprint.json"
LOCK = ".lock"
FINISHED = ("completed", "diverged")  # statuses of a run that trained every step

__all__ = [
    "FINGERPRINT",
    "FINISHED",
    "LOCK",
    "RunDirError",
    "check",
    "checkpoints_in",
    "fingerprint",
    "locked",
    "record",
]


def _without_free(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    from grubench.config import is_free_key

    out = {}
    for k, v in config.items():
        key = f"{prefix}{k}"
        if is_free_key(key, FREE_KEYS) or k == "hydra":
            continue
        out[k] = _without_free(v, f"{key}.") if isinstance(v, dict) else v
    return out


def request(resolved: dict[str, Any], task_cfg: Any) -> dict[str, Any]:
    """The config a run directory belongs to: `resolved` (the run's config as asked, resolved)
    with the task keys its data decides (`TaskEntry.completion`: for a task reading the user's
    file, its content hash), so that a relaunch on changed data is another config. `task_cfg`
    must have passed validation."""
    keys = TASKS.get(task_cfg.name).completion(task_cfg)
    return {**resolved, "task": {**resolved["task"], **keys}}


def fingerprint(config: dict[str, Any]) -> str:
    """SHA-256 (hex) of the resolved `config` without its process-only keys (FREE_KEYS): equal
    for two configs exactly when they ask for the same computation and measurements."""
    text = json.dumps(_without_free(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _recorded(out_dir: Path) -> tuple[dict[str, Any] | None, bool]:
    """(the config the directory belongs to, whether its results say finished); None where it
    holds no run. results.json's config stands in where fingerprint.json does not exist."""
    config, done = None, False
    try:
        res = json.loads((out_dir / "results.json").read_text())
        done = res.get("status") in FINISHED
        config = res.get("config")
    except (OSError, ValueError, AttributeError):
        pass
    try:
        config = json.loads((out_dir / FINGERPRINT).read_text())["config"]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return (config if isinstance(config, dict) else None), done


def check(out_dir: str | Path, config: dict[str, Any], *, lock: bool = True) -> None:
    """RunDirError (one line) if `out_dir` holds a run of another config than `config` (the
    resolved config of the run about to start), or, with `lock`, if another process is
    running in it. Reads only: call it before anything is written."""
    out_dir = Path(out_dir)
    try:
        if not out_dir.is_dir():
            return
    except OSError as e:  # e.g. a name longer than the file system allows
        raise RunDirError(f"{out_dir} cannot be a run directory: {e.strerror}") from None
    recorded, done = _recorded(out_dir)
    # A run that neither finished nor left a checkpoint has nothing a relaunch would reuse.
    if recorded is not None and (done or checkpoints_in(out_dir / "checkpoints")):
        # A finished run measured its speed under its settings: only process keys may differ.
        free: tuple[str, ...] = FREE_KEYS if done else FREE_KEYS + SAME_MATH_KEYS
        if recorded.get("model", {}).get("param_budget"):  # hidden was derived from the budget
            free = (*free, "model.hidden")
        diff = config_difference(config, recorded, free, there="in that run")
        if diff is not None:
            raise RunDirError(
                f"{out_dir} holds a {'finished ' if done else ''}run of another configuration "
                f"({diff}): run in a new directory"
            )
    if lock:
        _probe(out_dir)


def checkpoints_in(path: str | Path) -> Path | None:
    """The directory of numbered checkpoints at `path` (a run directory or its checkpoints/),
    or None where there is none (what `trainer.resume` must point at)."""
    path = Path(path)
    ckpts = path / "checkpoints" if (path / "checkpoints").is_dir() else path
    try:
        return ckpts if any(p.name.isdigit() for p in ckpts.iterdir()) else None
    except OSError:
        return None


def record(out_dir: str | Path, config: dict[str, Any]) -> str:
    """Write `out_dir/fingerprint.json` for `config` (atomically) and return the fingerprint.
    Where the directory held a run of another config (one that left nothing to resume: `check`
    allowed it), its curves are kept aside as metrics.previous.jsonl, not mixed with these."""
    out_dir = Path(out_dir)
    fp = fingerprint(config)
    try:
        before = json.loads((out_dir / FINGERPRINT).read_text()).get("fingerprint")
    except (OSError, ValueError, AttributeError):
        before = None
    if before is not None and before != fp and (out_dir / "metrics.jsonl").exists():
        (out_dir / "metrics.jsonl").replace(out_dir / "metrics.previous.jsonl")
    text = json.dumps({"fingerprint": fp, "config": config}, indent=1, sort_keys=True)
    atomic_write_text(Path(out_dir) / FINGERPRINT, text + "\n")
    return fp


def _in_use(out_dir: Path, fd: int) -> RunDirError:
    holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
    return RunDirError(
        f"{out_dir} is in use by another grubench-train (PID {holder}): wait for it to end, "
        "or choose another directory"
    )


def _probe(out_dir: Path) -> None:
    """RunDirError if a process holds `out_dir`'s lock; creates nothing (a holder has made the
    lock file)."""
    try:
        fd = os.open(out_dir / LOCK, os.O_RDONLY)
    except OSError:  # no lock file: no holder (or one this user cannot read: the run says)
        return
    try:
        try:  # shared: conflicts with a holder's exclusive lock only (and works on NFS)
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            raise _in_use(out_dir, fd) from None
        except OSError:  # a file system without locks: `locked` says so when the run starts
            return
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


@contextmanager
def locked(out_dir: str | Path) -> Iterator[None]:
    """Hold the exclusive lock of `out_dir` (which must exist) inside the block; RunDirError at
    once if another process holds it."""
    path = Path(out_dir) / LOCK
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise RunDirError(f"{out_dir} cannot be locked: {e.strerror} ({path})") from None
    try:
        unlocked = None
        for attempt in range(20):  # another command's `check` holds it for an instant
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if attempt == 19:
                    raise _in_use(Path(out_dir), fd) from None
                time.sleep(0.05)
            except OSError as e:  # e.g. Lustre mounted without flock, some NFS set-ups
                unlocked = e.strerror
                break
        if unlocked is not None:
            tell(
                f"grubench-train: warning: {out_dir} cannot be locked ({unlocked}): nothing "
                "stops a second process from running in it"
            )
            yield
            return
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
