"""results.json: the record of one run, its typed schema, and atomic writes.

`Results` is the schema (DESIGN.md, "results.json"); `SCHEMA` its version. `new_record` makes
the record's header from the config; the training loop returns the measured fields, which
`grubench.loop.train` merges into it before `write_json` writes it atomically.
"""

from __future__ import annotations

import importlib.metadata
import json
import math
import os
import platform
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, Literal, TypedDict

from grubench.population import Member

SCHEMA = 2  # 2: populations (`members`); readers accept READABLE
READABLE = (1, 2)  # schema 1 is a population of seeds alone, without `members`

Status = Literal["completed", "diverged", "failed"]


class MemberRecord(TypedDict, total=False):
    """One member of a population: its seed, grid values (dotted config keys), status and
    final metrics; with trainer.patience, the step it stopped early at (None: it did not)."""

    seed: int
    values: dict[str, float]
    status: Status
    metrics: dict[str, float | None]
    stopped_at: int | None


class Results(TypedDict, total=False):
    """One run's record. Per-member values are lists in the order of `members` (and `seeds`,
    each member's seed): one per seed when the population has no grid."""

    schema: int
    status: Status
    error: str | None  # one line, when failed or diverged
    config: dict[str, Any]  # the resolved config
    fingerprint: str | None  # of the config as asked (grubench.rundir); None: not the writer
    model: str  # flat copies of config keys, for grouping
    task: str
    hidden: int
    depth: int
    seq_len: int
    train_size: int  # what the task had, not just what was asked
    params: int | None
    seeds: list[int]  # each member's seed
    members: list[MemberRecord]
    metrics: dict[str, list[float]]  # name -> one value per member
    baselines: dict[str, float | None]
    speed: dict[str, Any]  # step_time_ms, compile_s, tokens_per_s, timed_steps, ..., device
    memory: dict[str, Any]  # train_step_bytes, peak_bytes (None where unknown), param_bytes
    recall: dict[str, Any]  # tasks with lags: lags, split, accuracy [member][lag], solved_at
    grad_norms_init: dict[str, Any]  # trainer.grad_probe: |dL/dh_t| at step 0 and at the end
    grad_norms: dict[str, Any]
    target: str  # the task's target (grubench.targets), where it has one: "val/accuracy >= 0.99"
    diverged: dict[str, int]  # member_key -> the step its loss went non-finite
    resumed_from_step: int
    stopped_early_at: int
    wall_s: float
    versions: dict[str, str]  # python and PACKAGES, as installed where the run trained
    # Each start of the run (grubench.starts): from_step, to_step, ended, time, host, slurm.
    starts: list[dict[str, Any]]
    # The SLURM job of the last start (grubench.slurm.job): id, job_id, array_job_id,
    # array_task_id, nodes, partition, tasks, requeues; None outside SLURM.
    slurm: dict[str, Any] | None


def member_key(member: Member) -> str:
    """How `diverged` names a member: its seed, with its grid values when it has any."""
    return member.label().removeprefix("seed ") if member.values else str(member.seed)


def member_record(
    member: Member, status: Status, metrics: dict[str, list[float]], i: int
) -> MemberRecord:
    """Member `i`'s entry of `members`, its metrics taken from the per-member lists."""
    return {
        "seed": member.seed,
        "values": dict(member.values),
        "status": status,
        "metrics": {k: v[i] for k, v in metrics.items()},
    }


def new_record(
    cfg: Any, config: dict[str, Any], members: list[Member], baseline: float | None
) -> Results:
    """The header of a run's record: a failed run with nothing measured yet."""
    return {
        "schema": SCHEMA,
        "status": "failed",
        "error": None,
        "config": config,
        "model": cfg.model.name,
        "task": cfg.task.name,
        "hidden": cfg.model.hidden,
        "depth": cfg.model.depth,
        "seq_len": cfg.task.seq_len,
        "train_size": cfg.task.train_size,
        "params": None,
        "seeds": [m.seed for m in members],
        "members": [member_record(m, "failed", {}, i) for i, m in enumerate(members)],
        "metrics": {},
        "baselines": {"loss": baseline},
        "speed": {},
        "memory": {},
        "versions": versions(),
    }


# The packages whose versions decide a run's numbers (results.json "versions").
PACKAGES = ("grubench", "jax", "jaxlib", "flax", "optax", "numpy")


def versions() -> dict[str, str]:
    """Python's and each of PACKAGES' installed version ("not installed" where absent)."""
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def atomic_write(path: str | Path, write: Callable[[IO], object], binary: bool = False) -> None:
    """Call `write(f)` on a temporary file in the same directory, fsync, then rename it over
    `path`, so a reader sees the old file or the new one, never a partial one."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp makes the file owner-only; give it the mode a plain open() would have.
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb" if binary else "w") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def jsonable(x: Any) -> Any:
    """Plain JSON values: numpy scalars and arrays become floats and lists, NaN/inf null."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [jsonable(v) for v in x]
    if hasattr(x, "tolist"):
        return jsonable(x.tolist())
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(jsonable(obj), indent=2, allow_nan=False) + "\n")


def read(path: str | Path) -> dict:
    with open(path) as f:
        return json.load(f)
