"""The command line of grubench-train before Hydra runs: composing, checking, `--help`.

Hydra's own errors span several lines and exit 1. `check_overrides` composes the config the
way Hydra will (every job of a `-m` sweep), validates it, and turns any failure into a
`ConfigError` whose message names the key, the value and what is allowed. `compose` is the
same composition for Python code and tests; `usage` is `--help`, listing the registered
models and tasks and the shipped presets.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Any, cast

from omegaconf import DictConfig, OmegaConf, open_dict

from grubench import population, rundir, slurm
from grubench.config import ConfigError, no_such_key, store, validate
from grubench.process import srun_task
from grubench.registry import CELLS, TASKS

CONF_DIR = Path(__file__).resolve().parent / "conf"  # shipped inside the package

# Flags that make Hydra print or do something other than run jobs: leave those to Hydra.
_FLAGS_WITH_VALUE = {"-c", "--cfg", "-p", "--package"}  # checked: their value is no override
_PASS_THROUGH = {
    "-h",
    "--help",
    "--hydra-help",
    "--version",
    "-i",
    "--info",
    "--shell-completion",
    "-sc",
    "-cp",
    "--config-path",
    "-cn",
    "--config-name",
    "-cd",
    "--config-dir",
    "--experimental-rerun",
}


def check_overrides(argv: list[str], run_dirs: list[Path | None] | None = None) -> list[str]:
    """Raise ConfigError (one line) if any job the command line asks for is misconfigured;
    else return notes for the user (e.g. a sweep preset run without -m). `run_dirs`, if given,
    receives each job's directory (None where only the launched job knows it)."""
    if any(a.split("=")[0] in _PASS_THROUGH for a in argv):
        return []
    multirun = any(a in ("-m", "--multirun") for a in argv)
    prints_only = any(a.split("=")[0] in _FLAGS_WITH_VALUE for a in argv)
    overrides, value_of_flag = [], False
    for a in argv:  # overrides only: flags, and the value of --cfg / --package, left out
        if not value_of_flag and not a.startswith("-"):
            overrides.append(a)
        value_of_flag = a in _FLAGS_WITH_VALUE
    for o in overrides:
        key, _, value = o.lstrip("+~").partition("=")
        if o.startswith("~") and key in ("model", "task", "seed"):
            raise ConfigError(f"{o} is not allowed: every run needs its {key}")
        if key in ("model.name", "task.name"):
            group = key.split(".")[0]
            raise ConfigError(
                f"{key}={value} is not allowed: choose the {group} with "
                f"{group}=NAME ({key} is the name of the {group} chosen)"
            )
    notes = []
    for num, job in enumerate(_jobs(overrides, multirun)):
        _check_groups(job)
        cfg = _compose(job)
        if multirun:  # the job's number, as Hydra's basic sweeper gives it
            with open_dict(cfg):
                cfg.hydra.job.num = num
        asked = _resolved(cfg, job)
        _validate(cfg, job)
        if multirun:  # before anything is submitted: each start must be able to progress
            slurm.check_launcher(cfg.hydra.launcher, cfg.trainer)
        request = rundir.request(asked, cfg.task)
        population.check_not_shadowed(cfg, job)
        key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
        where = _select(cfg, key, job)
        check_writable(key, where)
        resume = cfg.trainer.resume
        if resume and rundir.checkpoints_in(resume) is None:
            raise ConfigError(f"trainer.resume={resume} is not allowed: no checkpoint found there")
        if prints_only:  # --cfg / --package print the config: no directory is touched
            continue
        out_dir: Path | None = Path(where)
        if multirun:  # the job's directory
            try:
                out_dir = Path(where) / _select(cfg, "hydra.sweep.subdir", job)
            except ConfigError as e:  # named after what only the launched job knows (its id)
                if "hydra.job." not in str(e):
                    raise
                out_dir = None  # the job checks its directory itself when it starts
        # Before Hydra writes the job's .hydra/: a directory of another run stays as it was.
        if out_dir is not None:
            check_names("hydra.sweep.subdir" if multirun else key, out_dir)
            rundir.check(out_dir, request, lock=srun_task()[0] == 0)
        if run_dirs is not None:
            run_dirs.append(out_dir)
        if not multirun and OmegaConf.select(cfg, "hydra.sweeper.params"):
            notes.append(
                "this preset is a sweep: without -m it runs one job, with its first "
                "values; add -m to run them all"
            )
    return notes


def _validate(cfg: DictConfig, overrides: list[str]) -> None:
    """`validate`, with what OmegaConf raises for a node the overrides removed or emptied
    turned into one line naming the key."""
    from omegaconf.errors import OmegaConfBaseException

    try:
        validate(cfg)
    except OmegaConfBaseException as e:
        raise _not_allowed(e, overrides) from None


def _check_groups(overrides: list[str]) -> None:
    """ConfigError naming the options for `GROUP=VALUE` where GROUP is a config group and VALUE
    cannot name one of its configs (`model=-1`, `logger=null`, `task=${x}`), which Hydra
    reports without naming either. Models and tasks are the registered ones; other groups
    (`+experiment=`) may also come from the user's search path, so there only a value that
    Hydra does not read as a name (a number, null, a boolean) is refused."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    parser = OverridesParser.create()
    for o in overrides:
        key, sep, value = o.partition("=")
        group = key.lstrip("+~")
        if not sep or not group or "." in group or "/" in group:
            continue
        registered = {"model": CELLS.names(), "task": TASKS.names()}.get(group)
        shipped = sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))
        if registered is not None and value not in registered:
            raise ConfigError(f"{key}={value} is not allowed: one of {', '.join(registered)}")
        try:
            parsed = parser.parse_override(o).value()
        except OverrideParseException:
            continue  # Hydra says what is wrong with it
        if shipped and not isinstance(parsed, str):
            raise ConfigError(
                f"{key}={value} is not allowed: the name of one of its configs "
                f"({', '.join(shipped)} ship with grubench)"
            )


def _resolved(cfg: DictConfig, overrides: list[str]) -> dict[str, Any]:
    """The job's config without Hydra's node, every interpolation resolved (what the job gets);
    ConfigError (one line) naming the key whose interpolation fails."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf.errors import OmegaConfBaseException

    job = OmegaConf.masked_copy(cfg, [str(k) for k in cfg.keys() if k != "hydra"])
    try:
        HydraConfig.instance().set_config(cfg)  # for ${hydra:...} interpolations
        return cast(dict[str, Any], OmegaConf.to_container(job, resolve=True))
    except OmegaConfBaseException as e:
        raise _not_allowed(e, overrides) from None


def _select(cfg: DictConfig, key: str, overrides: list[str]) -> str:
    """The resolved string value of `key` (a Hydra directory); ConfigError where it does not
    resolve (`hydra.run.dir=${oops}`)."""
    from omegaconf.errors import OmegaConfBaseException

    try:
        return str(OmegaConf.select(cfg, key, throw_on_missing=True))
    except OmegaConfBaseException as e:
        raise _not_allowed(e, overrides, key) from None


def _not_allowed(e: Exception, overrides: list[str], key: str | None = None) -> ConfigError:
    """OmegaConf's error `e` as one line: KEY=VALUE (as the command line gave it) is not
    allowed: its message. `key` defaults to the key the error names."""
    key = key or getattr(e, "full_key", None) or "?"
    msg = _first_line(getattr(e, "msg", None) or str(e))
    return ConfigError(f"{key}={_value_of(key, overrides)} is not allowed: {msg}")


def check_writable(key: str, directory: str) -> None:
    """Raise ConfigError unless `directory` exists as a writable directory or can be made.

    Only the nearest existing ancestor is probed (with a scratch directory removed at once):
    the run directory itself is Hydra's to create."""
    if not str(directory).strip():
        raise ConfigError(f"{key}={directory} is not allowed: a directory for the run's files")
    path = Path(directory).absolute()
    probe = path
    try:
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
    except OSError as e:  # e.g. a name longer than the file system allows
        raise ConfigError(f"{key}={directory} cannot be created: {e.strerror}") from None
    if not probe.is_dir():
        raise ConfigError(f"{key}={directory} cannot be created: {probe} is not a directory")
    check_names(key, path)
    try:
        Path(tempfile.mkdtemp(prefix=".grubench-probe-", dir=probe)).rmdir()
    except OSError as e:
        raise ConfigError(f"{key}={directory} cannot be written: {e.strerror} ({probe})") from None


def check_names(key: str, directory: str | Path) -> None:
    """ConfigError where a name in `directory` is longer than its file system allows (stat()
    of a path below a missing directory stops at the first missing name, so each is checked)."""
    path = Path(directory).absolute()
    probe = path
    while not os.path.isdir(probe) and probe != probe.parent:
        probe = probe.parent
    try:
        longest = os.pathconf(probe, "PC_NAME_MAX")
    except (OSError, ValueError):
        longest = 255
    if any(len(part.encode()) > longest for part in path.parts):
        raise ConfigError(f"{key}={directory} cannot be created: File name too long")


def _jobs(overrides: list[str], multirun: bool) -> list[list[str]]:
    """The overrides of each job the command runs, in the order Hydra numbers them: with -m,
    the preset's `hydra.sweeper.params` first, then the command line's, as Hydra's basic
    sweeper combines them."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    parser = OverridesParser.create()
    try:
        parsed = parser.parse_overrides(overrides)
    except OverrideParseException as e:
        raise ConfigError(f"cannot parse override: {_first_line(str(e))}") from None
    sweeps = [o for o in parsed if o.is_sweep_override() and not o.is_hydra_override()]
    if not multirun:
        if sweeps:
            raise ConfigError(
                f"{sweeps[0].input_line} is a sweep: add -m (--multirun) to run every value"
            )
        return [overrides]
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    fixed = [str(o.input_line) for o in parsed if not o.is_sweep_override()]
    _check_groups(fixed)
    base = _compose(fixed)
    if "BasicSweeper" not in str(OmegaConf.select(base, "hydra.sweeper._target_")):
        return [fixed]  # another sweeper (Optuna, ...) draws its own jobs: check the fixed part
    params = OmegaConf.select(base, "hydra.sweeper.params") or {}
    preset = [f"{k}={v}" for k, v in params.items()]
    try:
        parsed = parser.parse_overrides([*preset, *overrides])
    except OverrideParseException as e:
        raise ConfigError(f"cannot parse the preset's sweep: {_first_line(str(e))}") from None
    batches = BasicSweeper.split_arguments(parsed, None)
    return [job for batch in batches for job in batch]


def compose(*overrides: str) -> DictConfig:
    """The job config `grubench-train OVERRIDES...` would run (without Hydra's own node);
    ConfigError (one line) where the command line would fail."""
    cfg = _compose(list(overrides))
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


def _compose(overrides: list[str]) -> DictConfig:
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException, MissingConfigException
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

    store()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose(config_name="config", overrides=overrides, return_hydra_config=True)
    except MissingConfigException as e:
        raise ConfigError(_missing_option(e, overrides)) from None
    except Exception as e:  # noqa: BLE001 - Hydra, OmegaConf or a preset's YAML: one line
        cause = e.__cause__ or e
        missing_key = isinstance(cause, ConfigKeyError | ConfigAttributeError)
        full_key = getattr(cause, "full_key", None)
        if missing_key and full_key:
            raise ConfigError(_unknown_key(full_key, overrides)) from None
        if isinstance(cause, OmegaConfBaseException) and full_key:
            if full_key.startswith("trainer.grid."):
                value = _value_of(full_key, overrides)
                msg = f"a list in brackets, e.g. '{full_key}=[1e-3,1e-2]' (quoted in the shell)"
                raise ConfigError(f"{full_key}={value} is not allowed: {msg}") from None
            raise _not_allowed(cause, overrides) from None
        if isinstance(e, HydraException | OmegaConfBaseException):
            raise ConfigError(_first_line(str(e))) from None
        # Anything else, e.g. a preset's YAML that does not parse: name the type and where.
        text = str(cause)
        where = [ln.strip() for ln in text.splitlines() if ln.strip().startswith('in "')]
        detail = f"{_first_line(text)}{f', {where[0]}' if where else ''}"
        raise ConfigError(f"cannot compose the config ({type(cause).__name__}: {detail})") from None


def _missing_option(e, overrides: list[str]) -> str:
    """`model=foo`: name the group, the value and the options that exist."""
    missing = getattr(e, "missing_cfg_file", "") or ""
    group, _, name = missing.rpartition("/")
    options = sorted(getattr(e, "options", None) or [])
    if group and options:
        return f"{group}={name} is not allowed: one of {', '.join(options)}"
    return _first_line(str(e))


def _unknown_key(full_key: str, overrides: list[str]) -> str:
    if full_key.startswith("trainer.grid."):  # e.g. trainer.grid.hidden: a shape, not a value
        given = [k for o in overrides if (k := o.lstrip("+~").split("=")[0]).startswith(full_key)]
        return population.not_a_grid_key((given or [full_key])[0].removeprefix("trainer.grid."))
    parent, _, _ = full_key.rpartition(".")
    keys: list[str] = []
    try:  # list the keys that do exist under the parent, from the config without overrides
        base = _compose([o for o in overrides if not o.lstrip("+~").startswith(full_key)])
        node = OmegaConf.select(base, parent) if parent else base
        if node is not None and OmegaConf.is_dict(node):
            keys = [str(k) for k in node.keys() if k != "hydra"]
    except ConfigError:
        pass
    return no_such_key(full_key, _value_of(full_key, overrides), keys)


def _value_of(key: str, overrides: list[str]) -> str:
    """The value the command line gives `key` (its last override: that is the one Hydra
    applies), or "?" where no override sets it."""
    for o in reversed(overrides):
        k, sep, v = o.lstrip("+~").partition("=")
        if sep and k == key:
            return v
    return "?"


def _first_line(text: str) -> str:
    """The first line of a message; with the next one where the first only introduces it
    ("... raised while composing config:")."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    if not lines:
        return text
    return f"{lines[0]} {lines[1]}" if lines[0].endswith(":") and len(lines) > 1 else lines[0]


def presets() -> dict[str, str]:
    """The shipped presets (`+experiment=NAME`): name -> the first sentence of its header
    comment (the comment lines before its example commands), at most about 90 characters."""
    out = {}
    for path in sorted((CONF_DIR / "experiment").glob("*.yaml")):
        words: list[str] = []
        for line in path.read_text().splitlines():
            if not line.startswith("#"):
                break
            text = line[1:]
            if "@package" in text:
                continue
            if text.startswith("   ") or text.strip().startswith("grubench-"):
                break  # an example command: the description is above it
            words += text.split()
        # The first sentence: a full stop before a capital, not "et al." or "10 .. 100".
        sentence = re.split(r"(?<!al)(?<!\.)\. (?=[A-Z])", " ".join(words))[0].rstrip(".")
        out[path.stem] = sentence if len(sentence) <= 90 else sentence[:89].rsplit(" ", 1)[0] + " …"
    return out


def usage() -> str:
    """`grubench-train --help`: usage, then models, tasks and presets, one line each."""

    def block(title: str, rows: dict[str, str]) -> list[str]:
        width = max(map(len, rows)) + 2
        return [title, *(f"  {name.ljust(width)}{text}" for name, text in rows.items()), ""]

    return "\n".join(
        [
            "usage: grubench-train [-m] [KEY=VALUE ...]",
            "",
            "Train one configuration (or, with -m, sweep every combination of comma-separated",
            "values). Every config key can be overridden: see them with --cfg job; Hydra's own",
            "options with --hydra-help.",
            "",
            *block("models (model=NAME):", {c.name: c.description for c in CELLS}),
            *block("tasks (task=NAME):", {t.name: t.description for t in TASKS}),
            *block("presets (-m +experiment=NAME):", presets()),
            "common keys: model.hidden model.depth task.seq_len task.train_size trainer.steps",
            "  trainer.seeds trainer.lr seed logger=none|wandb hydra.run.dir hydra.sweep.dir",
            "docs: README.md and docs/ of the grubench repository",
        ]
    )
