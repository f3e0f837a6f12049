"""Composing tiny configs the way the CLI does, and the environment of fault-injection runs."""

import os
import subprocess
import sys
from pathlib import Path

from grubench.cli import compose

TINY = [
    "model.hidden=8",
    "model.embed_dim=4",
    "task.seq_len=3",
    "task.train_size=64",
    "task.val_size=32",
    "task.test_size=32",
    "trainer.steps=6",
    "trainer.batch_size=8",
    "trainer.eval_every=3",
    "trainer.log_every=3",
    "trainer.eval_batch_size=32",
    "trainer.warmup_steps=2",
    "trainer.timing_warmup=1",
    "trainer.progress=false",
    "trainer.stream_repeats=0",  # its own jitted step: measured only where a test checks it
]

# A tiny population that checkpoints mid-run: 12 steps with checkpoints at 5, 10 and 12, and
# 2 seeds x 2 learning rates. The resume and SLURM tests interrupt it and compare.
POPULATION = [
    *TINY,
    "trainer.steps=12",
    "trainer.checkpoint_every=5",
    "trainer.eval_every=4",
    "trainer.log_every=2",
    "trainer.seeds=2",
    "trainer.grid.lr=[0.01,0.003]",
]

FAULTS_DIR = Path(__file__).parent / "faults"


def tiny_cfg(*overrides: str):
    return compose(*TINY, *overrides)


def fault_env(fault: str | None = None, **extra: str) -> dict[str, str]:
    """os.environ for a child process, without SLURM's job variables, with GRUBENCH_FAULT=
    `fault` injected through tests/faults/sitecustomize.py (none when `fault` is None), and
    `extra` set."""
    # Not SLURM's job variables: a suite run inside an allocation starts plain processes.
    env = {
        k: v
        for k, v in os.environ.items()
        if k != "GRUBENCH_FAULT" and (not k.startswith("SLURM_") or k == "SLURM_CONF")
    }
    if fault:
        env["GRUBENCH_FAULT"] = fault
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(FAULTS_DIR), env.get("PYTHONPATH")) if p
        )
    env.update(extra)
    return env


def train_cli(*args: str, env: dict[str, str] | None = None, cwd=None, timeout: int = 300):
    """`grubench-train ARGS...` in a child process (as `python -m grubench.train`), its output
    captured: the command a user runs, with `env` (default: this process's) and `cwd`."""
    return subprocess.run(
        [sys.executable, "-m", "grubench.train", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=timeout,
    )
