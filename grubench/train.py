"""`grubench-train [overrides]`: the Hydra entry point.

Checks the command line first (one line and exit 2 for a bad value, before any JAX work),
then runs each job through `grubench.loop.train` and prints its summary. The program, the loop
and the process concerns live in grubench/program.py, loop.py and process.py.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any, cast

from omegaconf import DictConfig, OmegaConf

from grubench import rundir, runtime
from grubench.cli import CONF_DIR, check_overrides, usage
from grubench.config import store, validate
from grubench.errors import (
    CheckpointError,
    ConfigError,
    DataError,
    GrubenchError,
    RunDirError,
    TrackingError,
)
from grubench.loop import finished, train
from grubench.process import Preempted, restart_command
from grubench.progress import tell
from grubench.render import format_summary
from grubench.sharding import initialize_distributed, primary
from grubench.tracking import RunContext, sweep_name

log = logging.getLogger("grubench.train")


def _hydra_app(cfg: DictConfig) -> None:
    """One job. A launcher's worker process (joblib, submitit) starts here, not in `main`: it
    applies the process settings itself."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    runtime.configure()
    initialize_distributed()  # several SLURM tasks: one JAX program over all their devices
    if not primary():  # of several processes, the first says what the run does
        logging.getLogger("grubench").setLevel(logging.WARNING)
    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    out_dir = Path(hc.runtime.output_dir)
    log.info("output directory: %s", out_dir)
    try:
        validate(cfg)
    except (ConfigError, DataError) as e:
        _fail(str(e), 2, job=True)
    try:  # grubench-train checked this before Hydra ran; a launcher's worker checks it here
        asked = cast(dict[str, Any], OmegaConf.to_container(cfg, resolve=True))
        rundir.check(out_dir, rundir.request(asked, cfg.task), lock=False)
    except (RunDirError, ConfigError, DataError) as e:
        _fail_job(str(e), 2, multirun)
        return
    previous = finished(out_dir)
    if previous is not None:
        _print_finished(out_dir, previous)
        return
    try:
        results = train(
            cfg,
            out_dir,
            context=_context(cfg, hc, multirun),
            restart_argv=_restart_argv(hc, multirun),
        )
    except Preempted as e:
        if e.requeue is not None:  # under submitit: the checkpoint is safe, requeue now
            print(
                f"grubench-train: preempted by {e.signal_name} at step {e.step}: checkpointed; "
                "submitit requeues the job",
                file=sys.stderr,
                flush=True,
            )
            e.requeue()
        # A pre-empted sweep stops too: its launcher requeues it. Ctrl-C: the shell's status.
        where = "hydra.sweep.dir" if multirun else "hydra.run.dir"
        home = hc.sweep.dir if multirun else out_dir
        _fail(f"{e} ({where}={home})", 130 if e.signal_name == "SIGINT" else 143, job=True)
    except KeyboardInterrupt:
        _fail("interrupted; results.json records the run as failed", 130, job=True)
    except (CheckpointError, TrackingError, ConfigError, DataError, RunDirError) as e:
        # ConfigError here: a population too large for memory, found before any compilation;
        # DataError: a data file that changed since the command line was checked.
        _fail_job(str(e), 2, multirun)
        return
    except Exception as e:  # noqa: BLE001 - one line; results.json already says failed
        _fail_job(f"run failed ({type(e).__name__}: {e})".splitlines()[0], 1, multirun)
        return
    log.info(format_summary(results))


def _context(cfg: DictConfig, hc, multirun: bool) -> RunContext:
    """The run's place for W&B: a sweep is one W&B root and prefixes each group, named after
    its directory unless logger.group says; a single run is a sweep of one."""
    home = Path(hc.sweep.dir if multirun else hc.runtime.output_dir)
    swept = _swept_keys(hc, home) if multirun else set()
    own = [str(o) for o in hc.overrides.task]
    return RunContext(
        sweep=sweep_name(cfg.logger.group, home),
        overrides=tuple(
            o for o in own if _key(o) in swept or _key(o) in ("experiment", "+experiment")
        ),
        wandb_dir=home,  # unless logger.dir or $WANDB_DIR say (grubench.tracking.wandb_root)
    )


def _key(override: str) -> str:
    return override.partition("=")[0].lstrip("~")


def _swept_keys(hc, sweep_dir: Path) -> set[str]:
    """The keys a sweep varies: its preset's `hydra.sweeper.params`, and the command line's
    overrides with several values (as Hydra recorded them in the sweep's multirun.yaml)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    keys = {str(k) for k in (hc.sweeper.get("params") or {})}
    try:
        recorded = OmegaConf.load(sweep_dir / "multirun.yaml").hydra.overrides.task
        parsed = OverridesParser.create().parse_overrides([str(o) for o in recorded])
    except Exception:  # noqa: BLE001 - names only: without the file, the preset's keys
        return keys
    return keys | {o.key_or_group for o in parsed if o.is_sweep_override()}


def _print_finished(out_dir: Path | None, previous: Any) -> None:
    print(f"{out_dir}: {previous['status']} before; not rerun (to train it again, remove it)")
    print(format_summary(previous), flush=True)


def _restart_argv(hc, multirun: bool) -> list[str] | None:
    """This command, pinned to its output directory, for the hang watchdog; None where this
    process is a launcher's worker (joblib, submitit), whose command is not the user's."""
    if "BasicLauncher" not in str(hc.launcher.get("_target_", "")):
        return None
    key, where = (
        ("hydra.sweep.dir", hc.sweep.dir) if multirun else ("hydra.run.dir", hc.runtime.output_dir)
    )
    return restart_command([sys.executable, *sys.orig_argv[1:]], key, str(where))


def _fail(message: str, code: int, *, job: bool = False) -> None:
    """One line on stderr and exit `code`; a job's error also goes into its train.log."""
    _say_error(message, job)
    raise SystemExit(code)


def _fail_job(message: str, code: int, multirun: bool) -> None:
    """A failed job ends a single run; in a sweep it is reported and the sweep goes on."""
    if not multirun:
        _fail(message, code, job=True)
    _say_error(message, job=True)


def _say_error(message: str, job: bool) -> None:
    if job:  # on stderr and in the job's train.log
        tell(f"grubench-train: error: {message}", logging.ERROR)
    else:  # before Hydra: there is no run yet
        print(f"grubench-train: error: {message}", file=sys.stderr)


def main() -> None:
    """Console entry point: process settings, then the overrides checked (one line, exit 2),
    then Hydra runs the job(s). `--help` lists models, tasks and presets from the registries."""
    import hydra

    runtime.configure()
    argv = sys.argv[1:]
    try:
        store()  # loads the registries, plugins included
        if any(a in ("-h", "--help") for a in argv):
            print(usage())
            return
        run_dirs: list[Path | None] = []
        for note in check_overrides(argv, run_dirs):
            print(f"grubench-train: note: {note}", file=sys.stderr)
    except GrubenchError as e:
        _fail(str(e), 2)
    # Every job finished before (under the same config: checked): say so without starting
    # Hydra, which would rewrite each job's .hydra/ with this command's process-only keys.
    done = [finished(d) if d is not None else None for d in run_dirs]
    if done and all(r is not None for r in done):
        for d, r in zip(run_dirs, done, strict=True):
            _print_finished(d, r)
        return
    app = hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")(
        _hydra_app
    )
    app()


if __name__ == "__main__":
    main()
