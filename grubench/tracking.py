"""Where a run's curves go: metrics.jsonl always, Weights & Biases when `logger=wandb`."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from grubench.results import atomic_write_text, jsonable


class TrackingError(RuntimeError):
    """The tracker cannot start (missing package, no API key for online mode); one line."""


class JsonlSink:
    """metrics.jsonl: one JSON object per logged step. The whole file is rewritten atomically
    on each flush, so a killed run leaves a complete file (runs log O(steps / log_every) rows)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.rows: list[str] = []

    def log(self, row: dict[str, Any]) -> None:
        self.rows.append(json.dumps(jsonable(row), allow_nan=False))

    def flush(self) -> None:
        atomic_write_text(self.path, "".join(r + "\n" for r in self.rows))


def wandb_mode(requested: str) -> str:
    """`auto` is online when an API key is configured (env or ~/.netrc), else offline."""
    if requested != "auto":
        return requested
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    return "online" if _has_api_key() else "offline"


class Tracker:
    """One interface over the sinks: log(step, row), summary(results), close()."""

    def __init__(self, out_dir: Path, cfg, config_dict: dict[str, Any]):
        self.jsonl = JsonlSink(out_dir / "metrics.jsonl")
        self.run = None
        lg = cfg.logger
        if lg.name == "wandb":
            self.run = _start_wandb(out_dir, cfg, config_dict)

    def log(self, step: int, row: dict[str, Any]) -> None:
        self.jsonl.log({"step": step, **row})
        if self.run is not None:
            flat = {}
            for k, v in row.items():
                if isinstance(v, list):
                    flat[f"{k}/mean"] = _mean(v)
                    flat.update({f"{k}/seed{i}": x for i, x in enumerate(v)})
                else:
                    flat[k] = v
            self.run.log(jsonable(flat), step=step)

    def flush(self) -> None:
        self.jsonl.flush()

    def summary(self, results: dict[str, Any]) -> None:
        if self.run is not None:
            for k, v in results.get("metrics", {}).items():
                self.run.summary[k] = _mean(v)
            self.run.summary["status"] = results["status"]

    def close(self) -> None:
        self.flush()
        if self.run is not None:
            self.run.finish()


def _has_api_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path.home() / ".netrc"
    return netrc.exists() and "api.wandb.ai" in netrc.read_text(errors="ignore")


def _start_wandb(out_dir: Path, cfg, config_dict: dict[str, Any]):
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
            group=cfg.logger.group,
            job_type=cfg.model.name,
            tags=[cfg.task.name, f"seq_len={cfg.task.seq_len}"],
            config=config_dict,
            mode=mode,
            dir=str(out_dir),
            reinit="finish_previous",
        )
    except Exception as e:  # noqa: BLE001 - wandb raises many kinds; the run needs one line
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise TrackingError(f"W&B could not start ({first})") from None


def _mean(v: list) -> float | None:
    xs = [x for x in v if x is not None and x == x]
    return sum(xs) / len(xs) if xs else None
