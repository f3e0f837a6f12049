"""Where a run's curves go: metrics.jsonl always, Weights & Biases when `logger=wandb`.

W&B gets one run per population member (seed x grid point), all live in this process
(`wandb.init(reinit="create_new")`), each logging its member's own values:

- `group`: the sweep, then the config without the seed (`SWEEP-gru-recall-T20-d2-lr0.001-HASH`,
  HASH naming the whole config but the seed, so configs that differ in a key no name carries
  never share a group), so W&B's grouping draws each config's mean and min-max band over
  seeds; `job_type`: the model; `name`: the group's config part and the seed
  (`gru-recall-T20-d2-lr0.001-s1`); `tags`: the task, the model, `key=value` for each swept
  key and grid value, the experiment preset.
- config: the resolved config as this member alone would have it (its seed, its grid values,
  no grid), plus each swept key flat (`"model.depth": 2`).
- history: each row at W&B step = training step, with `train/step` (the x axis of every
  metric) and `train/seconds`; losses keep their minimum in the summary, accuracies their
  maximum. Non-finite values (a diverged member) are left out.
- summary (`member_summary`): `test/NAME` for results.json's `test_NAME` metrics, `final/NAME`
  for the member's other metrics (`final/val_loss`, `final/gap`, `final/best_val_loss`, ...),
  `status`, `error`, `params`, `wall_s`, `speed/*`, `memory/*`.
- artifacts, once a run that trained every step has written results.json: `run-files-ID`
  (type "run-files": results.json, metrics.jsonl, .hydra/overrides.yaml and config.yaml) and,
  with `logger.log_checkpoints`, `model-ID` (type "model": the final checkpoint), logged once,
  by the first member's run (ID is its W&B run id; every member's summary names them). A run
  that failed or was pre-empted logs none: it finishes its W&B runs at once (pre-empted:
  marked so), leaving the time to the requeue.
- every run writes under one root, `logger.dir`, else $WANDB_DIR, else the sweep's directory
  (`RunContext.wandb_dir`): `wandb sync ROOT/wandb/offline-run-*` uploads a whole sweep.
- resuming: the members' W&B ids are kept in the run directory (`IDS_FILE`); a start that will
  resume a checkpoint reuses them with `resume="allow"`, so online the W&B runs continue
  (steps W&B already has are not sent again: where it has steps past the checkpoint, from a
  start that crashed before saving them, those stay and a warning says so); offline a new
  directory with the same id is written, holding the whole history again (the rows the
  checkpoint restored are replayed), so whichever `wandb sync` keeps is complete. A start
  with nothing to resume gets new ids.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import os
import secrets
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from grubench.config import is_free_key
from grubench.errors import TrackingError
from grubench.population import Member
from grubench.results import atomic_write_text, jsonable
from grubench.rundir import FINISHED, fingerprint

__all__ = [
    "IDS_FILE",
    "JsonlSink",
    "RunContext",
    "RunSpec",
    "Tracker",
    "TrackingError",
    "log_sweep",
    "member_summary",
    "run_spec",
    "summary_key",
    "wandb_mode",
]

log = logging.getLogger(__name__)

IDS_FILE = "wandb-runs.json"  # in the run directory: {member label: W&B run id}

# The x axes every run defines, and the curves whose best value the summary keeps.
STEP_AXIS = "train/step"
TIME_AXIS = "train/seconds"
_SUMMARIES = {
    "train/loss": "min",
    "train/loss_batch": "min",
    "val/loss": "min",
    "train/accuracy": "max",
    "val/accuracy": "max",
}

# Overrides that the name, group and tags carry otherwise (model, task, T=seq_len, s=seed) or
# not at all (process settings, the population's size, the grid: its values are the member's).
_NOT_SWEPT = {"model", "task", "task.seq_len", "seed", "trainer.seeds", "experiment", "logger"}
_NOT_SWEPT_PREFIXES = ("logger.", "hydra.", "hydra/", "trainer.grid")
_ABBREVIATIONS = {"model.depth": "d", "model.hidden": "h", "trainer.lr": "lr"}
_MAX_NAME = 128  # W&B's limit on groups, artifact names and display names
_MAX_TAG = 64


@dataclass(frozen=True)
class RunContext:
    """Where a run sits, for W&B: `sweep` (logger.group, else the sweep directory's name, else
    the run directory's name) prefixes each W&B group; `overrides` are this job's values of
    the keys its sweep varies ("key=value": the command line's overrides with several values,
    a preset's sweep keys) and any `+experiment=NAME`, which the W&B names and tags carry;
    `wandb_dir` is where W&B writes unless logger.dir or $WANDB_DIR say (the sweep's
    directory, or a single run's own)."""

    sweep: str | None = None
    overrides: tuple[str, ...] = ()
    wandb_dir: Path | None = None


def sweep_name(group: str | None, directory: Path) -> str:
    """A sweep's name in W&B, which prefixes each of its groups: `logger.group`, else the
    sweep directory's name (a single run's own directory: a sweep of one)."""
    return group or directory.name


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


# ---------------------------------------------------------------------------------------------
# Names


@dataclass(frozen=True)
class RunSpec:
    """How one member's W&B run is named and configured (see the module's docstring)."""

    name: str
    group: str
    job_type: str
    tags: list[str]
    config: dict[str, Any]


def _show(v: Any) -> str:
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def _short(key: str, value: Any) -> str:
    """model.depth=2 -> d2, trainer.lr=0.001 -> lr0.001, model.backward=autodiff ->
    backward_autodiff: the abbreviation (else the key's last part) and the value."""
    abbr = _ABBREVIATIONS.get(key, key.rsplit(".", 1)[-1])
    shown = _show(value)
    return f"{abbr}{shown}" if shown[:1] in set("0123456789.-") else f"{abbr}_{shown}"


def _clip(text: str, limit: int = _MAX_NAME) -> str:
    """`text`, or where longer than `limit`, its start and a hash of the whole (unique)."""
    if len(text) <= limit:
        return text
    return text[: limit - 9] + "-" + hashlib.sha256(text.encode()).hexdigest()[:8]


def _lookup(config: Mapping[str, Any], key: str) -> Any:
    node: Any = config
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return None if isinstance(node, Mapping) else node


def swept_values(overrides: Sequence[str], config: Mapping[str, Any]) -> dict[str, Any]:
    """{dotted key: resolved value} of the overrides that name, group and tags carry: every
    "key=value" but model, task, task.seq_len, seed, trainer.seeds, the grid, the experiment
    preset, logger.* and hydra.* keys and the other process settings (`config.FREE_KEYS`),
    in the order given. A value is the resolved config's (the override's text where the
    config has no such key)."""
    out: dict[str, Any] = {}
    for o in overrides:
        if o.startswith("~"):  # a deletion sets nothing
            continue
        key, sep, raw = o.lstrip("+").partition("=")
        if (
            not sep
            or key in _NOT_SWEPT
            or key.startswith(_NOT_SWEPT_PREFIXES)
            or "/" in key  # a config group other than model and task (a launcher, ...)
            or is_free_key(key)
        ):
            continue
        value = _lookup(config, key)
        out[key] = raw if value is None else value
    return out


def experiment_name(overrides: Sequence[str]) -> str | None:
    """The preset of `+experiment=NAME`, if given."""
    for o in overrides:
        key, _, value = o.lstrip("+").partition("=")
        if key == "experiment":
            return value
    return None


def member_config(config: Mapping[str, Any], member: Member) -> dict[str, Any]:
    """The resolved `config` as `member` alone would have it: its seed and grid values, and no
    grid (what grubench-report's `grid_points` records for a grid point)."""
    out = copy.deepcopy(dict(config))
    out["seed"] = member.seed
    trainer = out.get("trainer")
    if isinstance(trainer, dict):
        trainer.pop("grid", None)
    for key, v in member.values.items():
        group, name = key.split(".")
        out.setdefault(group, {})[name] = v
    return out


def run_spec(
    cfg: Any, config: Mapping[str, Any], member: Member, context: RunContext | None = None
) -> RunSpec:
    """The W&B name, group, job_type, tags and config of `member`'s run (module docstring):
    `cfg` is the run's config, `config` its resolved dict, `context` where the run sits."""
    context = context or RunContext()
    swept = swept_values(context.overrides, config)
    grid = {k: v for k, v in member.values.items() if k not in swept}
    described = "-".join(
        [cfg.model.name, cfg.task.name, f"T{cfg.task.seq_len}"]
        + [_short(k, v) for k, v in swept.items()]
    )
    sweep = context.sweep or cfg.logger.group
    point = "".join(f"-{_short(k, v)}" for k, v in grid.items())
    seed = f"-s{member.seed}"
    tags = [cfg.task.name, cfg.model.name]
    tags += [f"{k}={_show(v)}" for k, v in {**swept, **grid}.items()]
    experiment = experiment_name(context.overrides)
    if experiment:
        tags.append(experiment)
    wandb_config = member_config(config, member)
    # The group holds this config's seeds and nothing else: runs of a sweep that differ only
    # in a key not swept (or single runs under one logger.group) never share a band.
    # (Nor the population's size: a seed trained in a population is the same as alone.)
    alike = copy.deepcopy({k: v for k, v in wandb_config.items() if k != "seed"})
    alike.get("trainer", {}).pop("seeds", None)
    same = fingerprint(alike)[:8]
    wandb_config.update({**swept, **grid})
    # Clipped to W&B's limit, the grid values and the seed stay whole, the rest is hashed.
    return RunSpec(
        name=_clip(described, _MAX_NAME - len(point + seed)) + point + seed,
        group=_clip(f"{sweep}-{described}" if sweep else described, _MAX_NAME - 9 - len(point))
        + f"{point}-{same}",
        job_type=cfg.model.name,
        tags=list(dict.fromkeys(t[:_MAX_TAG] for t in tags)),
        config=wandb_config,
    )


def summary_key(metric: str) -> str:
    """Where results.json's per-member metric goes in W&B's summary: test_loss -> test/loss
    (test_accuracy, test_bpc, ... likewise), any other -> final/NAME (final/val_loss,
    final/train_loss, final/gap, final/best_val_loss, final/best_step, final/diverged)."""
    if metric.startswith("test_"):
        return "test/" + metric.removeprefix("test_")
    return "final/" + metric


def member_summary(results: Mapping[str, Any], i: int) -> dict[str, Any]:
    """The W&B summary of member `i` of the run recorded in `results`: its metrics (keys by
    `summary_key`), its status (the run's when the run failed), the run's error, params,
    wall_s, resumed_from_step and stopped_early_at, and the run's `speed/*` and `memory/*`.
    Values that are not finite are left out."""
    members = results.get("members") or []
    record = members[i] if i < len(members) else {}
    metrics = record.get("metrics") or {
        k: v[i] for k, v in (results.get("metrics") or {}).items() if i < len(v)
    }
    out: dict[str, Any] = {summary_key(k): v for k, v in metrics.items()}
    run_status = results.get("status")
    out["status"] = run_status if run_status == "failed" else record.get("status", run_status)
    for key in ("error", "params", "wall_s", "resumed_from_step", "stopped_early_at"):
        out[key] = results.get(key)
    out["stopped_at"] = record.get("stopped_at")
    for part in ("speed", "memory"):
        out.update({f"{part}/{k}": v for k, v in (results.get(part) or {}).items()})
    return {k: v for k, v in jsonable(out).items() if v is not None}


# ---------------------------------------------------------------------------------------------
# The tracker


class Tracker:
    """One interface over the sinks: `log(step, row)`, `flush()` (metrics.jsonl), `finish`.

    Rows hold scalars or per-member lists (arrays), in the order of `members`;
    metrics.jsonl keeps them as they are, and with `logger=wandb` each member's W&B run gets
    its own entry of each (the module's docstring). `context` places the run (its sweep,
    overrides and W&B root). With `primary=False` (a process other than the first of a
    multi-process run) rows are kept in memory, for checkpoints, and nothing is written or
    logged. `jsonl.rows` may be replaced (a resumed checkpoint's rows): rows not yet sent to
    W&B are sent with the next `log` or at `finish`.
    """

    def __init__(
        self,
        out_dir: Path,
        cfg,
        config_dict: dict[str, Any],
        *,
        members: list[Member] | None = None,
        context: RunContext | None = None,
        primary: bool = True,
    ):
        self.out_dir = Path(out_dir)
        self.jsonl = JsonlSink(self.out_dir / "metrics.jsonl")
        self.members = members or [Member(cfg.seed, {})]
        self.primary = primary  # of several processes, only the first writes or logs
        self.log_checkpoints = bool(cfg.logger.get("log_checkpoints", False))
        self.runs: list[Any] = []  # one W&B run per member; None where it stopped logging
        self._sent_rows: list[str] | None = None  # the rows list (of jsonl) being sent
        self._sent = 0  # how many of its rows W&B has
        self._cfg, self._config, self._context = cfg, config_dict, context
        # W&B is checked now (installed, a key for online), before any compilation; its runs
        # start with `start`, once the run has set up and resumed what it resumes.
        self.wandb = cfg.logger.name == "wandb" and primary
        if self.wandb:
            _import_wandb(cfg.logger)

    def start(self, resumed_step: int = 0) -> None:
        """Open the members' W&B runs (with `logger=wandb`); the rows logged so far, a resumed
        checkpoint's among them, are sent with the next `log` or at `finish`."""
        if not self.wandb or self.runs:
            return
        self.runs = _start_runs(self.out_dir, self._cfg, self._config, self.members, self._context)
        ahead = [r.name for r in self.runs if r.starting_step > resumed_step + 1]
        if resumed_step and ahead:
            log.warning(
                "W&B already holds steps past the checkpoint resumed (step %d) for %s: an "
                "earlier start got further without saving them; W&B keeps those and gets "
                "this start's from its last step on (metrics.jsonl holds this start's)",
                resumed_step,
                ", ".join(ahead),
            )

    def log(self, step: int, row: dict[str, Any]) -> None:
        """Record `row` (scalars or one entry per member) as training step `step`."""
        self.jsonl.log({"step": step, **row})
        if self.runs:
            self._send()

    def flush(self) -> None:
        """Write metrics.jsonl (the primary process only)."""
        if self.primary:
            self.jsonl.flush()

    def _send(self) -> None:
        rows = self.jsonl.rows
        if rows is not self._sent_rows:  # replaced by a checkpoint's: all of them are new
            self._sent_rows, self._sent = rows, 0
        for line in rows[self._sent :]:
            row = json.loads(line)
            step = int(row.pop("step"))
            for i, run in enumerate(self.runs):
                # A resumed online run has the steps before starting_step already.
                if run is None or step < run.starting_step:
                    continue
                values = {k: v for k, v in ((k, _entry(v, i)) for k, v in row.items()) if _ok(v)}
                try:
                    run.log({STEP_AXIS: step, **values}, step=step)
                except Exception as e:  # noqa: BLE001 - W&B must not stop the training
                    log.warning("W&B run %s stopped logging (%s)", run.name, _line(e))
                    self.runs[i] = None
        self._sent = len(rows)

    def finish(self, results: Mapping[str, Any], *, preempted: bool = False) -> None:
        """Once results.json and metrics.jsonl are written (also after a failure): each
        member's final numbers into its W&B run's summary, the artifacts (a run that trained
        every step only), then close the runs; `preempted` marks them so and logs no files.
        W&B trouble is a warning, never an exception (this runs inside the loop's finally)."""
        if not self.runs:
            return
        try:
            self._send()
        except Exception as e:  # noqa: BLE001
            log.warning("W&B: could not send the last rows (%s)", _line(e))
        finished = results.get("status") in FINISHED and not preempted
        artifacts: list[str] = []
        for i, run in enumerate(self.runs):
            if run is None:
                continue
            try:
                if finished and not artifacts:  # once, by the first run that can
                    artifacts = self._log_artifacts(run, results)
                run.summary.update({**member_summary(results, i), "artifacts": artifacts})
                if preempted:
                    run.mark_preempting()
            except Exception as e:  # noqa: BLE001
                log.warning("W&B run %s: summary or artifacts not logged (%s)", run.name, _line(e))
            try:
                run.finish(exit_code=0 if finished else 1)
            except Exception as e:  # noqa: BLE001
                log.warning("W&B run %s could not be finished (%s)", run.name, _line(e))
        self.runs = []

    def _log_artifacts(self, run: Any, results: Mapping[str, Any]) -> list[str]:
        """Log the run's files (and its final checkpoint) to `run`; their artifact names."""
        import wandb

        pop_id = run.id
        names = []

        files = [
            (self.out_dir / name, name)
            for name in (
                "results.json",
                "metrics.jsonl",
                ".hydra/overrides.yaml",
                ".hydra/config.yaml",
            )
            if (self.out_dir / name).is_file()
        ]
        if files:
            art = wandb.Artifact(
                f"run-files-{pop_id}", type="run-files", metadata={"status": results.get("status")}
            )
            for path, name in files:
                art.add_file(str(path), name=name)
            run.log_artifact(art)
            names.append(art.name)
        step_dir = newest_checkpoint(self.out_dir / "checkpoints")
        if self.log_checkpoints and step_dir is not None:
            art = wandb.Artifact(
                f"model-{pop_id}", type="model", metadata={"step": int(step_dir.name)}
            )
            art.add_dir(str(step_dir))
            run.log_artifact(art, aliases=["latest", f"step-{step_dir.name}"])
            names.append(art.name)
        return names


def newest_checkpoint(directory: Path) -> Path | None:
    """The newest complete step directory of an orbax checkpoint directory (its names are
    step numbers; orbax's temporary and quarantined ones are not), or None."""
    try:
        steps = [p for p in directory.iterdir() if p.name.isdigit() and p.is_dir()]
    except OSError:
        return None
    return max(steps, key=lambda p: int(p.name), default=None)


def _entry(v: Any, i: int) -> Any:
    if isinstance(v, list):
        return v[i] if i < len(v) else None
    return v


def _ok(v: Any) -> bool:
    """A value W&B can plot: a finite number (rows hold None where it was not finite)."""
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def _has_api_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path.home() / ".netrc"
    return netrc.exists() and "api.wandb.ai" in netrc.read_text(errors="ignore")


def _import_wandb(logger_cfg: Any):
    try:
        import wandb
    except ImportError:
        raise TrackingError("logger=wandb needs the wandb package: pip install wandb") from None
    mode = wandb_mode(logger_cfg.mode)
    if mode == "online" and not _has_api_key():
        raise TrackingError(
            "logger.mode=online needs a W&B API key: set WANDB_API_KEY or run `wandb login`, "
            "or use logger.mode=offline (sync later with `wandb sync`)"
        )
    return wandb, mode


def check_logger(logger_cfg: Any) -> None:
    """TrackingError (one line) for a W&B logger that cannot start: wandb not installed,
    `logger.mode=online` without an API key, a W&B root (logger.dir, $WANDB_DIR) that is not a
    directory. `config.validate` calls it, before any run directory or compilation."""
    if logger_cfg.name != "wandb":
        return
    _import_wandb(logger_cfg)
    for where, root in (
        ("logger.dir", logger_cfg.get("dir")),
        ("$WANDB_DIR", os.environ.get("WANDB_DIR")),
    ):
        if root:
            if Path(root).exists() and not Path(root).is_dir():
                raise TrackingError(f"{where}={root} is not a directory: W&B writes its runs there")
            break  # the root W&B uses (wandb_root): logger.dir first


def wandb_root(logger_cfg: Any, context: RunContext | None, home: Path) -> Path:
    """Where W&B writes (ROOT/wandb/...): logger.dir, else $WANDB_DIR, else the context's
    directory (the sweep's), else `home` (the run's directory)."""
    fallback = context.wandb_dir if context is not None and context.wandb_dir else home
    return Path(logger_cfg.get("dir") or os.environ.get("WANDB_DIR") or fallback)


def _new_id() -> str:
    # W&B's own form: 8 base-36 characters.
    return "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))


def _run_ids(out_dir: Path, cfg: Any, members: list[Member]) -> list[str]:
    """Each member's W&B run id: the ones `IDS_FILE` holds when this start will resume a
    checkpoint (its own, or trainer.resume's), else new ones; written back to `IDS_FILE`."""
    from grubench.rundir import checkpoints_in

    path = out_dir / IDS_FILE
    resuming = checkpoints_in(cfg.trainer.resume or out_dir) is not None
    stored: dict[str, str] = {}
    if resuming and path.is_file():
        try:
            stored = {str(k): str(v) for k, v in json.loads(path.read_text()).items()}
        except (OSError, ValueError, AttributeError):
            stored = {}
    ids = {m.label(): stored.get(m.label()) or _new_id() for m in members}
    atomic_write_text(path, json.dumps(ids, indent=1) + "\n")
    return list(ids.values())


def _start_runs(
    out_dir: Path,
    cfg: Any,
    config: dict[str, Any],
    members: list[Member],
    context: RunContext | None,
) -> list[Any]:
    """One live W&B run per member; TrackingError (one line) if W&B cannot start (the runs
    already started are closed)."""
    wandb, mode = _import_wandb(cfg.logger)
    root = wandb_root(cfg.logger, context, out_dir)
    # Disabled: W&B keeps nothing, so there is nothing to continue later either.
    ids = [_new_id() for _ in members] if mode == "disabled" else _run_ids(out_dir, cfg, members)
    runs: list[Any] = []
    try:
        root.mkdir(parents=True, exist_ok=True)
        for i, (member, run_id) in enumerate(zip(members, ids, strict=True)):
            spec = run_spec(cfg, config, member, context)
            run = wandb.init(
                project=cfg.logger.project,
                entity=cfg.logger.entity,
                group=spec.group,
                job_type=spec.job_type,
                name=spec.name,
                tags=spec.tags,
                config=spec.config,
                id=run_id,
                resume="allow",
                mode=cast(Any, mode),
                dir=str(root),
                reinit="create_new",
                # The members share the process: its console output and system metrics are
                # recorded once, by the first member's run, and W&B's own banner is said
                # once (quiet: its warnings and errors still show).
                settings=wandb.Settings(
                    console="auto" if i == 0 else "off", x_disable_stats=i > 0, quiet=i > 0
                ),
            )
            runs.append(run)
            run.define_metric(STEP_AXIS)
            run.define_metric(TIME_AXIS)
            run.define_metric("*", step_metric=STEP_AXIS)
            for key, best in _SUMMARIES.items():  # exact names: W&B's globs match suffixes only
                run.define_metric(key, step_metric=STEP_AXIS, summary=best)
    except Exception as e:  # noqa: BLE001 - wandb raises many kinds; the run needs one line
        for run in runs:
            try:
                run.finish(exit_code=1)
            except Exception:  # noqa: BLE001, S110 - the error to report is the first one
                pass
        raise TrackingError(f"W&B could not start ({_line(e)})") from None
    return runs


# ---------------------------------------------------------------------------------------------
# The end of a sweep

_TABLE_METRICS = ("test_loss", "test_accuracy", "val_loss", "train_loss", "gap", "best_val_loss")


def sweep_table(runs: list[dict[str, Any]], sweep_dir: Path) -> tuple[list[str], list[list[Any]]]:
    """(columns, rows) of a sweep's comparison: one row per run or grid point (`runs` as
    grubench.runs.read_runs gives them), its description (the flat keys, and the config keys
    that vary between the runs), its seeds, status and step time, and for each metric of
    `_TABLE_METRICS` and any other test_* metric its mean, std, 95% Student-t interval and n
    over the seeds that did not diverge (grubench.inference.summarize); None where undefined."""
    from grubench.inference import summarize
    from grubench.runs import FLAT_KEYS, canonical_key, key_value, samples, varying_keys

    present = {k for r in runs for k in r.get("metrics") or {}}
    extra = sorted(k for k in present if k.startswith("test_") and k not in _TABLE_METRICS)
    metrics = [m for m in (*_TABLE_METRICS, *extra) if m in present]
    keys = [k for k in varying_keys(runs) if canonical_key(k) not in FLAT_KEYS]
    columns = ["run", *FLAT_KEYS, *keys, "seeds", "status", "step_time_ms"]
    for m in metrics:
        columns += [f"{m}_mean", f"{m}_std", f"{m}_ci_low", f"{m}_ci_high", f"{m}_n"]
    rows = []
    for r in runs:
        path = Path(r.get("path", "."))
        where = str(path.relative_to(sweep_dir)) if path.is_relative_to(sweep_dir) else str(path)
        row: list[Any] = [where, *(key_value(r, k) for k in (*FLAT_KEYS, *keys))]
        row += [
            len(r.get("seeds") or []),
            r.get("status"),
            (r.get("speed") or {}).get("step_time_ms"),
        ]
        for m in metrics:
            s = summarize([v for _, v, state in samples(r, m) if state == "ok"])
            row += [s.mean, s.std, s.ci_low, s.ci_high, s.n]
        rows.append([list(v) if isinstance(v, tuple) else v for v in jsonable(row)])
    return columns, rows


def log_sweep(
    logger_cfg: Any, group: str, sweep_dir: Path, runs: list[dict[str, Any]], images: list[Path]
) -> None:
    """At the end of a sweep: one W&B run (job_type "report", group `group`, under the
    sweep's W&B root: logger.dir, else $WANDB_DIR, else `sweep_dir`) holding the comparison
    table (`sweep_table`, a wandb.Table "comparison") and the PNG plots (`plots/STEM`).
    W&B trouble is a warning: the sweep has finished."""
    try:
        wandb, mode = _import_wandb(logger_cfg)
        columns, rows = sweep_table(runs, Path(sweep_dir))
        table = wandb.Table(columns=cast(Any, columns), data=rows, allow_mixed_types=True)
        root = wandb_root(logger_cfg, None, Path(sweep_dir))
        root.mkdir(parents=True, exist_ok=True)
        run = wandb.init(
            project=logger_cfg.project,
            entity=logger_cfg.entity,
            group=_clip(group),
            job_type="report",
            name=_clip(f"{group}-report"),
            tags=["report"],
            mode=cast(Any, mode),
            dir=str(root),
            reinit="create_new",
        )
        try:
            payload: dict[str, Any] = {"comparison": table}
            payload.update(
                {f"plots/{p.stem}": wandb.Image(str(p)) for p in images if p.suffix == ".png"}
            )
            run.log(payload)
        finally:
            run.finish()
    except Exception as e:  # noqa: BLE001 - wandb raises many kinds; the sweep is done
        log.warning("W&B: the sweep's report was not logged (%s)", _line(e))
