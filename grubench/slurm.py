"""What a run knows of SLURM: the job it runs in (for its provenance), how SLURM ended a start
that got SIGTERM, and whether a launcher's time limit lets every start make progress.

Time limit. Under `hydra/launcher=slurm` submitit asks SLURM for `timeout_min` minutes and for
its pre-emption signal (SIGUSR2) `signal_delay_s` seconds before the end; on that signal the run
checkpoints at the end of its step and submitit requeues the job, at most `max_num_timeout`
times. SLURM checks its timers periodically and may send the signal up to 60 s early (sbatch's
manual, --signal), so a start is only sure of

    window = 60 * timeout_min - signal_delay_s - 60        seconds,

of which the first go to starting up and compiling. `check_launcher` refuses, before anything
is submitted, a window shorter than `trainer.start_allowance_s` (start-up and compilation) plus
`trainer.checkpoint_every_s` (one checkpoint interval, where the run checkpoints on time): a job
whose starts could end before training a step would be requeued until SLURM gives up on it.
"""

from __future__ import annotations

import os
import re
import subprocess
from typing import Any

from grubench.errors import ConfigError

SIGNAL_EARLY_S = 60  # how early SLURM may send a job's --signal (sbatch's manual)

# The environment SLURM gives a job, and the names results.json records them under.
_JOB_ENV = {
    "job_id": "SLURM_JOB_ID",
    "array_job_id": "SLURM_ARRAY_JOB_ID",
    "array_task_id": "SLURM_ARRAY_TASK_ID",
    "nodes": "SLURM_JOB_NODELIST",
    "partition": "SLURM_JOB_PARTITION",
    "tasks": "SLURM_STEP_NUM_TASKS",
}


def job() -> dict[str, Any] | None:
    """This process's SLURM job, from its environment; None outside SLURM.

    Keys: id (what squeue, scancel and sacct call the job: "ARRAY_TASK" for a task of an
    array, since an array's last task has the array's own job id, and scancel of that id ends
    every task), job_id, array_job_id and array_task_id (None outside an array), nodes
    (SLURM's node list, e.g. "gpu[01-02]"), partition, tasks (of this job step), requeues (how
    many times SLURM has started this job before: SLURM_RESTART_COUNT)."""
    if "SLURM_JOB_ID" not in os.environ:
        return None
    out: dict[str, Any] = {key: os.environ.get(var) or None for key, var in _JOB_ENV.items()}
    array = out["array_job_id"] is not None and out["array_task_id"] is not None
    out = {"id": f"{out['array_job_id']}_{out['array_task_id']}" if array else out["job_id"], **out}
    out["tasks"] = int(out["tasks"] or 1)
    out["requeues"] = int(os.environ.get("SLURM_RESTART_COUNT") or 0)
    return out


def why_terminated(timeout_s: float = 5.0) -> str | None:
    """Whether SLURM requeued this job, asked of `scontrol` once SIGTERM has arrived:
    "requeued" (scontrol requeue or pre-emption: the job will start again) or "not requeued"
    (scancel, the time limit, or a SIGTERM from elsewhere). None outside SLURM or when
    scontrol does not answer in `timeout_s`."""
    me = job()
    if me is None:
        return None
    try:
        shown = subprocess.run(
            ["scontrol", "show", "job", "-o", str(me["id"])],  # this task, not its array
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    restarts = re.search(r"\bRestarts=(\d+)", shown)
    if restarts is None:
        return None
    # SLURM counts the requeue before it signals the start it ends.
    return "requeued" if int(restarts.group(1)) > me["requeues"] else "not requeued"


def is_slurm_launcher(launcher: Any) -> bool:
    return str(getattr(launcher, "_target_", "") or "").endswith("SlurmLauncher")


MAX_SIGNAL_DELAY_S = 65535  # the most sbatch's --signal takes


def check_launcher(launcher: Any, trainer: Any) -> None:
    """ConfigError (one line, with the numbers) for a SLURM launcher sbatch would refuse
    (timeout_min < 1, signal_delay_s outside 1 .. 65535, max_num_timeout < 0), or whose time
    limit leaves a start less than `trainer.start_allowance_s + trainer.checkpoint_every_s`
    seconds of work before its pre-emption signal (the rule in this module's docstring)."""
    if not is_slurm_launcher(launcher):
        return
    for key, low, high, what in (
        ("timeout_min", 1, None, "minutes >= 1"),
        ("signal_delay_s", 1, MAX_SIGNAL_DELAY_S, f"seconds in 1 .. {MAX_SIGNAL_DELAY_S}"),
        ("max_num_timeout", 0, None, "an integer >= 0"),
    ):
        value = launcher[key]
        if value < low or (high is not None and value > high):
            raise ConfigError(f"hydra.launcher.{key}={value} is not allowed: {what}")
    timeout_min, delay = float(launcher.timeout_min), float(launcher.signal_delay_s)
    window = 60 * timeout_min - delay - SIGNAL_EARLY_S
    needed = float(trainer.start_allowance_s) + float(trainer.checkpoint_every_s)
    if window < needed:
        raise ConfigError(
            f"hydra.launcher.timeout_min={timeout_min:g} is not allowed with "
            f"hydra.launcher.signal_delay_s={delay:g}: a start is sure of only {window:g} s "
            f"before its pre-emption signal (SLURM may send it up to {SIGNAL_EARLY_S} s early), "
            f"less than trainer.start_allowance_s="
            f"{float(trainer.start_allowance_s):g} + trainer.checkpoint_every_s="
            f"{float(trainer.checkpoint_every_s):g} = {needed:g} s (docs/slurm.md)"
        )
