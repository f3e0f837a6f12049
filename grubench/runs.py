"""Reading finished runs back: results.json files, their keys, metrics and samples.

A run is the dict of its results.json (`grubench.results.Results`) plus "path", its directory.
Rows and columns of a report are keyed by flat result keys (model, task, hidden, depth,
seq_len, train_size, params) or dotted config keys (trainer.lr, ...). The published reference
numbers of `--paper` (grubench/papers.json) are read here too.
"""

from __future__ import annotations

import copy
import difflib
import json
import math
import os
from collections.abc import Iterable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from omegaconf import OmegaConf

from grubench.config import ADDED_KEYS, LEGACY_KEYS, is_free_key
from grubench.errors import GrubenchError, ReportError
from grubench.population import Member
from grubench.population import members as population_members
from grubench.results import READABLE, SCHEMA, member_key, member_record, read
from grubench.rundir import FINGERPRINT

__all__ = ["ReportError"]  # re-exported: the error every reader of runs raises

FLAT_KEYS = ("model", "task", "hidden", "depth", "seq_len", "train_size", "params")
# The config key each flat key copies; `params` is counted, not configured.
FLAT_TO_CONFIG = {
    "model": "model.name",
    "task": "task.name",
    "hidden": "model.hidden",
    "depth": "model.depth",
    "seq_len": "task.seq_len",
    "train_size": "task.train_size",
}
CONFIG_TO_FLAT = {v: k for k, v in FLAT_TO_CONFIG.items()}
# Beyond config.FREE_KEYS, the keys whose values differ between runs of the same experiment.
_SEED_KEYS = {"seed", "trainer.seeds"}
_MISSING = object()


def read_runs(dirs: Sequence[str | Path]) -> list[dict[str, Any]]:
    """Every results.json below `dirs` (or named directly), sorted by path, each with its
    directory under "path"; and, as a failed run, every run directory that has started (its
    fingerprint.json) but holds no results.json: a run killed outright, or one still running,
    is counted and named by the report, never left out unseen. Raises ReportError for a
    missing or unreadable directory, an unreadable or foreign results.json, or when none is
    found."""
    found: set[Path] = set()
    unfinished: list[dict[str, Any]] = []
    for d in dirs:
        p = Path(d)
        if p.is_file() and p.name == "results.json":
            found.add(p)
            continue
        if not p.exists():
            raise ReportError(f"{d}: no such directory")
        if not p.is_dir():
            raise ReportError(f"{d}: not a directory (give sweep or run directories)")
        if not os.access(p, os.R_OK | os.X_OK):
            raise ReportError(f"{d}: directory not readable")

        def walk_error(e: OSError) -> None:
            raise ReportError(f"{e.filename}: directory not readable ({e.strerror})")

        for root, _, files in os.walk(p, onerror=walk_error):
            if "results.json" in files:
                found.add(Path(root) / "results.json")
            elif FINGERPRINT in files and (run := _unfinished(Path(root))) is not None:
                unfinished.append(run)
    if not found and not unfinished:
        raise ReportError(f"no results.json found under {', '.join(map(str, dirs))}")
    runs = [point for run in unfinished for point in grid_points(run)]
    for path in sorted(found):
        try:
            res = read(path)
        except (OSError, ValueError) as e:
            raise ReportError(f"{path}: unreadable ({str(e).splitlines()[0]})") from None
        if not isinstance(res, dict) or res.get("schema") not in READABLE:
            got = res.get("schema") if isinstance(res, dict) else type(res).__name__
            raise ReportError(
                f"{path}: not a grubench results file of schema "
                f"{' or '.join(map(str, READABLE))} (schema {got})"
            )
        if (problem := _malformed(res)) is not None:
            raise ReportError(f"{path}: not a grubench results file ({problem})")
        runs += grid_points(res | {"path": str(path.parent)})
    return sorted(runs, key=lambda r: r["path"])


def _malformed(res: dict[str, Any]) -> str | None:
    """What in a results record has not the shape the readers rely on; None when all has."""
    members = res.get("members")
    if members is not None and (
        not isinstance(members, list)
        or not all(isinstance(m, dict) and isinstance(m.get("values", {}), dict) for m in members)
    ):
        return "members is not a list of {seed, values, ...} records"
    for field in ("metrics", "config", "speed", "memory"):
        if not isinstance(res.get(field) or {}, dict):
            return f"{field} is not a mapping"
    for name, values in (res.get("metrics") or {}).items():
        if not isinstance(values, list):
            return f"metrics {name!r} is not a list of one value per member"
    return None


UNFINISHED = "no results.json: killed outright, or still running (its command resumes it)"


def _unfinished(path: Path) -> dict[str, Any] | None:
    """The record of a run directory that started (fingerprint.json: the config it runs) but
    has no results.json: a failed run of that config with nothing measured; None where the
    fingerprint cannot be read."""
    try:
        config = json.loads((path / FINGERPRINT).read_text())["config"]
        model, task = config["model"], config["task"]
        population = population_members(OmegaConf.create(config))  # seeds x grid points
    except (OSError, ValueError, KeyError, TypeError, AttributeError, GrubenchError):
        return None
    return {
        "schema": SCHEMA,
        "status": "failed",
        "error": UNFINISHED,
        "config": config,
        "model": model.get("name"),
        "task": task.get("name"),
        "hidden": model.get("hidden"),
        "depth": model.get("depth"),
        "seq_len": task.get("seq_len"),
        "train_size": task.get("train_size"),
        "params": None,
        "seeds": [m.seed for m in population],
        "members": [member_record(m, "failed", {}, i) for i, m in enumerate(population)],
        "metrics": {},
        "baselines": {"loss": None},
        "speed": {},
        "memory": {},
        "path": str(path),
    }


# Parts of results.json holding a list with one entry per member, under a key.
_PER_MEMBER_PARTS = (("recall", "accuracy"), ("grad_norms_init", "norm"), ("grad_norms", "norm"))


def grid_points(run: dict[str, Any]) -> list[dict[str, Any]]:
    """A run of a population with a grid as one run per grid point, as if each point had been
    trained alone: its config holds the point's values (and no grid), and its seeds, metrics,
    divergences and recall are the point's members'; "members_index" lists their positions in
    the run's per-member lists (metrics.jsonl: `own_values`). A run without a grid is returned
    as it is."""
    members = run.get("members") or []
    if not any(m.get("values") for m in members):
        return [run]
    points: dict[tuple, list[int]] = {}
    for i, m in enumerate(members):
        points.setdefault(tuple(sorted(m["values"].items())), []).append(i)
    out = []
    for values, index in points.items():
        config = copy.deepcopy(run.get("config") or {})
        config.get("trainer", {}).pop("grid", None)
        for key, v in values:
            group, name = key.split(".")
            config.setdefault(group, {})[name] = v
        point = {**run, "config": config, "members_index": index}
        point["members"] = [members[i] for i in index]
        point["seeds"] = [members[i]["seed"] for i in index]
        point["metrics"] = {
            k: [v[i] for i in index if i < len(v)] for k, v in (run.get("metrics") or {}).items()
        }
        failed = run.get("status") == "failed"
        diverged = [members[i] for i in index if members[i].get("status") == "diverged"]
        steps = run.get("diverged") or {}
        point["diverged"] = {
            str(m["seed"]): steps.get(_member_key(m)) for m in diverged if _member_key(m) in steps
        }
        point["status"] = "failed" if failed else "diverged" if diverged else "completed"
        for part, key in _PER_MEMBER_PARTS:
            if run.get(part):
                per = run[part].get(key)
                per = [] if per is None else list(per)  # numpy in a record not yet written
                point[part] = {**run[part], key: [per[i] for i in index if i < len(per)]}
        out.append(point)
    return out


def own_values(run: dict[str, Any], values: list) -> list:
    """The entries of a per-member list (a metrics.jsonl row's) that belong to `run`, a grid
    point of `grid_points` or a whole run."""
    index = run.get("members_index")
    return values if index is None else [values[i] for i in index if i < len(values)]


def _member_key(member: dict[str, Any]) -> str:
    return member_key(Member(member["seed"], member["values"]))


def canonical_key(key: str) -> str:
    """The flat name of a config key that has one (model.hidden -> hidden), else the key."""
    return CONFIG_TO_FLAT.get(key, key)


def _config_lookup(config: Any, key: str) -> Any:
    node = config
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return _MISSING
        node = node[part]
    return _MISSING if isinstance(node, dict) else node


def _hashable(v: Any) -> Any:
    return tuple(_hashable(x) for x in v) if isinstance(v, list) else v


def key_value(run: dict[str, Any], key: str) -> Any:
    """The value of a flat or dotted config key for `run`; None where the run lacks it."""
    key = canonical_key(key)
    if key in FLAT_KEYS and key in run:
        return _hashable(run[key])
    v = _config_lookup(run.get("config") or {}, FLAT_TO_CONFIG.get(key, key))
    return None if v is _MISSING else _hashable(v)


def flat_config(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config as {dotted.key: value}, lists as tuples."""
    out: dict[str, Any] = {}
    for k, v in config.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict):
            out |= flat_config(v, name + ".")
        else:
            out[name] = _hashable(v)
    return out


def run_description(run: dict[str, Any]) -> dict[str, Any]:
    """What makes `run` the experiment it is: the flat keys (except params, and hidden where
    model.param_budget chose it: the budget describes the run) and every other config key
    that changes a measurement; seeds, logging and checkpointing left out."""
    derived = {"params"} | (
        {"hidden"}
        if _config_lookup(run.get("config") or {}, "model.param_budget") not in (_MISSING, None, 0)
        else set()
    )
    desc = {k: key_value(run, k) for k in FLAT_KEYS if k not in derived}
    for k, v in flat_config(run.get("config") or {}).items():
        if k in CONFIG_TO_FLAT or k in _SEED_KEYS or is_free_key(k) or _implied(k, v):
            continue
        desc[k] = v
    return desc


def _implied(key: str, value: Any) -> bool:
    """A key at the value a run without it implies: one older results hold that today's would
    not (config.LEGACY_KEYS), one added since (config.ADDED_KEYS), or the grid of a run with
    none (`grid_points` writes a grid's values into the keys it varies)."""
    if key.startswith("trainer.grid."):
        return True
    if key in ADDED_KEYS and ADDED_KEYS[key] == value:
        return True
    return key in LEGACY_KEYS and LEGACY_KEYS[key] in (None, value)


def varying_keys(runs: Iterable[dict[str, Any]]) -> list[str]:
    """The description keys whose values differ between `runs`, flat keys first."""
    descs = [run_description(r) for r in runs]
    keys = list(dict.fromkeys(k for d in descs for k in d))
    return [k for k in keys if len({d.get(k, _MISSING) for d in descs}) > 1]


def check_keys(runs: list[dict[str, Any]], keys: Sequence[str], option: str) -> None:
    """ReportError unless every key is a flat key or a config key some run has."""
    for key in keys:
        if canonical_key(key) in FLAT_KEYS:
            continue
        if any(_config_lookup(r.get("config") or {}, key) is not _MISSING for r in runs):
            continue
        known = sorted(
            set(FLAT_KEYS) | {k for r in runs for k in flat_config(r.get("config") or {})}
        )
        close = difflib.get_close_matches(key, known, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ReportError(
            f"unknown key {key!r} in {option}: use one of {', '.join(FLAT_KEYS)} "
            f"or a dotted config key such as trainer.lr{hint}"
        )


def show(v: Any) -> str:
    """A key value as a table shows it."""
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, tuple):
        return "[" + ", ".join(map(show, v)) + "]"
    return str(v)


def cell_label(keys: Sequence[str], values: tuple) -> str:
    """`key=value, ...` for a table cell's keys and values."""
    return ", ".join(f"{k}={show(v)}" for k, v in zip(keys, values, strict=True))


def sort_key(values: tuple) -> tuple:
    def one(v: Any) -> tuple:
        if isinstance(v, bool):
            return (1, str(v))
        if isinstance(v, int | float):
            return (0, v, "")
        return (2, "") if v is None else (1, str(v))

    return tuple(one(v) for v in values)


# ---------------------------------------------------------------------------------------------
# Metrics

RUN_LEVEL_PREFIXES = ("speed.", "memory.")
_RUN_LEVEL_NAMES = ("params", "wall_s")


def direction(metric: str) -> Literal["lower", "higher"] | None:
    """Which way is better for `metric`, by its name; None when the name does not say (the
    generalisation gap among them: a negative gap is not better than a small one)."""
    name = metric.lower()
    if name == "gap" or name.endswith("_gap"):
        return None
    if any(s in name for s in ("accuracy", "tokens_per_s", "solved", "retained")):
        return "higher"
    if any(
        s in name
        for s in (
            "loss",
            "mse",
            "time",
            "bytes",
            "compile",
            "params",
            "wall",
            "diverged",
            "_ms",
            "_bpc",
            "perplexity",
            "to_target",
        )
    ):
        return "lower"
    return None


def is_run_level(metric: str) -> bool:
    """Measured once per run (all seeds together) rather than once per seed."""
    return metric.startswith(RUN_LEVEL_PREFIXES) or metric in _RUN_LEVEL_NAMES


def _raw_metric(run: dict[str, Any], metric: str) -> Any:
    if metric.startswith(RUN_LEVEL_PREFIXES):
        group, name = metric.split(".", 1)
        return (run.get(group) or {}).get(name, _MISSING)
    if metric in _RUN_LEVEL_NAMES:
        return run.get(metric, _MISSING)
    return (run.get("metrics") or {}).get(metric, _MISSING)


def available_metrics(runs: Iterable[dict[str, Any]]) -> list[str]:
    """Every metric name some run records."""
    names: set[str] = set(_RUN_LEVEL_NAMES)
    for r in runs:
        names |= set(r.get("metrics") or {})
        for group in ("speed", "memory"):
            names |= {f"{group}.{k}" for k in (r.get(group) or {})}
    return sorted(names)


def _number(v: Any) -> float | None:
    if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
        return float(v)
    return None


def _is_numeric(v: Any) -> bool:
    return v is None or (isinstance(v, int | float) and not isinstance(v, bool))


def check_metric(runs: list[dict[str, Any]], metric: str) -> None:
    """ReportError unless some run records `metric` and its values are numbers."""
    if metric not in available_metrics(runs) and all(r.get("status") == "failed" for r in runs):
        first = runs[0]
        raise ReportError(
            f"no run finished: {len(runs)} failed (the first, {first.get('path')}: "
            f"{first.get('error') or 'no error recorded'})"
        )
    if metric not in available_metrics(runs):
        raise ReportError(
            f"unknown metric {metric!r}: choose from {', '.join(available_metrics(runs))}"
        )
    raws = [v for r in runs if (v := _raw_metric(r, metric)) is not _MISSING]
    values = [x for v in raws for x in (v if isinstance(v, list) else [v])]
    if not all(_is_numeric(x) for x in values):
        raise ReportError(f"metric {metric!r} is not numeric in every run that records it")


def samples(run: dict[str, Any], metric: str) -> list[tuple[int | None, float | None, str]]:
    """(seed, value, state) for each value `run` contributes to `metric`: one per seed, or one
    per run for run-level metrics (seed None). state is ok, diverged (the seed's loss went
    non-finite), failed (the run raised; it contributes no numbers) or missing (a finished
    run without a finite value); value is None unless state is ok."""
    seeds = list(run.get("seeds") or [])
    if is_run_level(metric):
        if run.get("status") == "failed":
            return [(None, None, "failed")]
        v = _number(_raw_metric(run, metric))
        return [(None, v, "ok" if v is not None else "missing")]
    if run.get("status") == "failed":
        return [(s, None, "failed") for s in seeds] or [(None, None, "failed")]
    if not seeds:
        return [(None, None, "missing")]
    # `diverged` (1 per diverged seed, 0 per other) is about divergence: every seed counts.
    diverged = set() if metric == "diverged" else {str(s) for s in (run.get("diverged") or {})}
    raw = _raw_metric(run, metric)
    values = raw if isinstance(raw, list) else []
    out = []
    for i, s in enumerate(seeds):
        v = _number(values[i]) if i < len(values) else None
        state = "diverged" if str(s) in diverged else "ok" if v is not None else "missing"
        out.append((s, v if state == "ok" else None, state))
    return out


# ---------------------------------------------------------------------------------------------
# Papers


def load_papers() -> dict[str, dict[str, Any]]:
    """The published reference numbers shipped in grubench/papers.json, by short name."""
    text = resources.files("grubench").joinpath("papers.json").read_text()
    return json.loads(text)["papers"]


def load_paper(name: str) -> dict[str, Any]:
    """One paper's entry; ReportError naming the known ones when there is no such paper."""
    papers = load_papers()
    if name not in papers:
        raise ReportError(f"unknown paper {name!r}: known papers are {', '.join(sorted(papers))}")
    return papers[name] | {"name": name}


def paper_value(
    paper: dict[str, Any],
    task: Any,
    model: Any,
    metric: str,
    seq_len: Any,
    dataset: Any = None,
) -> dict[str, Any] | None:
    """The paper's result for this task/model/metric (and seq_len and data set, where it
    states them: `task.dataset` of a user-data task)."""
    for r in paper["results"]:
        if (r["task"], r["model"], r["metric"]) != (task, model, metric):
            continue
        if r.get("seq_len") not in (None, seq_len) or r.get("dataset") not in (None, dataset):
            continue
        return r
    return None
