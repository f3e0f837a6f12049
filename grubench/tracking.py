"""Where a run's curves go: metrics.jsonl always, Weights & Biases when `logger=wandb`."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

from grubench.errors import TrackingError
from grubench.results import atomic_write_text, jsonable

__all__ = ["JsonlSink", "Tracker", "TrackingError", "log_sweep", "wandb_mode"]


class JsonlSink:
    """metrics.jsonl: one JSON object per logged step. The whole file is rewritten atomically
    on each flush, so a killed run leaves a complete file (runs log O(steps / log_every) rows).
    Nothing is written while there are no rows: a run that fails or is refused before it
    trains or resumes leaves the file of an earlier start as it was (on resume the rows come
    back from the checkpoint)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.rows: list[str] = []

    def log(self, row: dict[str, Any]) -> None:
        self.rows.append(json.dumps(jsonable(row), allow_nan=False))

    def flush(self) -> None:
        if self.rows:
            atomic_write_text(self.path, "".join(r + "\n" for r in self.rows))


def wandb_mode(requested: str) -> str:
    """`auto` is online when an API key is configured (env or ~/.netrc), else offline."""
    if requested != "auto":
        return requested
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    return "online" if _has_api_key() else "offline"


class Tracker:
    """One interface over the sinks: log(step, row), summary(results), close().

    Rows hold per-member lists (or arrays). metrics.jsonl keeps them as they are; W&B gets, for
    each, the mean over finite members under the key itself and one series per member under
    `KEY_LABEL` (`labels`: seedN, or seedN_lrV... for a member of a grid), since W&B charts
    plot scalars. `group` (the sweep) groups runs on W&B. With `primary=False` (a process other
    than the first of a multi-process run) rows are kept in memory, for checkpoints, and
    nothing is written or logged.
    """

    def __init__(
        self,
        out_dir: Path,
        cfg,
        config_dict: dict[str, Any],
        *,
        group: str | None = None,
        labels: list[str] | None = None,
        primary: bool = True,
    ):
        self.jsonl = JsonlSink(out_dir / "metrics.jsonl")
        self.labels = labels or [f"seed{cfg.seed}"]
        self.primary = primary  # of several processes, only the first writes or logs
        self.run = None
        if cfg.logger.name == "wandb" and primary:
            self.run = _start_wandb(out_dir, cfg, config_dict, group or cfg.logger.group)

    def _scalars(self, row: dict[str, Any]) -> dict[str, Any]:
        flat: dict[str, Any] = {}
        for k, v in jsonable(row).items():
            if isinstance(v, list):
                flat[k] = _mean(v)
                flat.update({f"{k}_{s}": x for s, x in zip(self.labels, v, strict=False)})
            else:
                flat[k] = v
        return flat

    def log(self, step: int, row: dict[str, Any]) -> None:
        self.jsonl.log({"step": step, **row})
        if self.run is not None:
            self.run.log(self._scalars(row), step=step)

    def flush(self) -> None:
        if self.primary:
            self.jsonl.flush()

    def summary(self, results: Mapping[str, Any]) -> None:
        if self.run is None:
            return
        summary = self._scalars(results.get("metrics", {}))
        for part in ("speed", "memory"):
            summary.update({f"{part}/{k}": v for k, v in results.get(part, {}).items()})
        summary.update(status=results["status"], params=results.get("params"))
        self.run.summary.update(jsonable(summary))

    def close(self) -> None:
        self.flush()
        if self.run is not None:
            self.run.finish()


def _has_api_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path.home() / ".netrc"
    return netrc.exists() and "api.wandb.ai" in netrc.read_text(errors="ignore")


def _start_wandb(out_dir: Path, cfg, config_dict: dict[str, Any], group: str | None):
    try:
        import wandb
    except ImportError:
        raise TrackingError("logger=wandb needs the wandb package: pip install wandb") from None
    mode = wandb_mode(cfg.logger.mode)
    if mode == "online" and not _has_api_key():
        raise TrackingError(
            "logger.mode=online needs a W&B API key: set WANDB_API_KEY or run `wandb login`, "
            "or use logger.mode=offline (sync later with `wandb sync`)"
        )
    try:
        return wandb.init(
            project=cfg.logger.project,
            entity=cfg.logger.entity,
            group=group,
            job_type=cfg.model.name,
            name=f"{cfg.model.name}-{cfg.task.name}-T{cfg.task.seq_len}-seed{cfg.seed}",
            tags=[cfg.task.name, f"seq_len={cfg.task.seq_len}"],
            config=config_dict,
            mode=cast(Any, mode),
            dir=str(out_dir),
            reinit="finish_previous",
        )
    except Exception as e:  # noqa: BLE001 - wandb raises many kinds; the run needs one line
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise TrackingError(f"W&B could not start ({first})") from None


def _mean(v: list) -> float | None:
    xs = [x for x in v if x is not None and x == x]
    return sum(xs) / len(xs) if xs else None


def log_sweep(
    logger_cfg, group: str, sweep_dir: Path, runs: list[dict[str, Any]], images: list[Path]
) -> None:
    """At the end of a sweep: one W&B run (job_type "report") in the sweep's group holding the
    comparison table (a wandb.Table, one row per run and seed summary) and the plots."""
    import wandb

    columns = [
        "model",
        "task",
        "seq_len",
        "hidden",
        "depth",
        "train_size",
        "params",
        "seeds",
        "status",
        "test_loss",
        "test_accuracy",
        "gap",
        "step_time_ms",
    ]
    table = wandb.Table(columns=cast(Any, columns))
    for r in runs:
        m, sp = r.get("metrics", {}), r.get("speed", {})
        table.add_data(
            r.get("model"),
            r.get("task"),
            r.get("seq_len"),
            r.get("hidden"),
            r.get("depth"),
            r.get("train_size"),
            r.get("params"),
            len(r.get("seeds", [])),
            r.get("status"),
            _mean(m.get("test_loss", [])),
            _mean(m.get("test_accuracy", [])),
            _mean(m.get("gap", [])),
            sp.get("step_time_ms"),
        )
    mode = wandb_mode(logger_cfg.mode)
    run = wandb.init(
        project=logger_cfg.project,
        entity=logger_cfg.entity,
        group=group,
        job_type="report",
        name=f"{group}-report",
        mode=cast(Any, mode),
        dir=str(sweep_dir),
        reinit="finish_previous",
    )
    payload: dict[str, Any] = {"comparison": table}
    payload.update({f"plots/{p.stem}": wandb.Image(str(p)) for p in images if p.suffix == ".png"})
    run.log(payload)
    run.finish()
