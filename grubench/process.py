"""Process concerns of a training run: pre-emption signals and the hang watchdog.

Signals. `StopSignals` turns SIGTERM (SLURM pre-emption) and submitit's pre-emption signal into
a flag the loop reads at the end of each step: it checkpoints and raises `Preempted`.

Watchdog. XLA's CPU runtime can, rarely, wedge: `block_until_ready` waits forever with the CPU
idle (docs/reliability.md). No state can be saved from a wedged runtime, but the last checkpoint
is on disk, so the cure is a fresh process: `Watchdog` notices that no step has finished for
`timeout_s` seconds and calls `on_hang` from its own thread (the main thread is blocked).
`restart_command` builds the re-execution the command line uses: the same command, pinned to
the same output directory, which resumes from the newest checkpoint.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from grubench.progress import tell

RESTARTS_ENV = "GRUBENCH_RESTARTS"  # how many times this command has restarted itself
MAX_RESTARTS = 3
HANG_EXIT = 3


def srun_task() -> tuple[int, int]:
    """(index, count) of this process among the tasks srun started for this job step: (0, 1)
    outside SLURM, in a batch script or salloc shell of one process, and under one task."""
    # SLURM_STEP_NUM_TASKS: the tasks of this step (submitit runs each job under srun);
    # SLURM_NTASKS alone is also set in a batch script or salloc shell of one process.
    count = int(os.environ.get("SLURM_STEP_NUM_TASKS", "1") or 1)
    return (int(os.environ.get("SLURM_PROCID", "0") or 0), count) if count > 1 else (0, 1)


class Watchdog:
    """`start()`, then `tick()` after each unit of work, then `stop()`. `on_hang(stalled_s)`
    runs once, on the watchdog's thread, after `timeout_s` seconds without a tick; timeout_s = 0
    disables the watchdog. Inside `with paused():` (compiling: slow, but it cannot wedge) the
    clock does not run."""

    def __init__(self, timeout_s: float, on_hang: Callable[[float], None]):
        self.timeout_s = timeout_s
        self.on_hang = on_hang
        self._last = time.monotonic()
        self._stop = threading.Event()
        self._paused = False

    def tick(self) -> None:
        self._last = time.monotonic()

    def _watch(self) -> None:
        while not self._stop.wait(min(5.0, self.timeout_s / 4)):
            if self._paused:  # read first: paused() ticks before it clears the flag
                continue
            stalled = time.monotonic() - self._last
            if stalled > self.timeout_s:
                self.on_hang(stalled)
                return

    def start(self) -> None:
        self.tick()
        if self.timeout_s > 0:
            threading.Thread(target=self._watch, name="grubench-watchdog", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    @contextmanager
    def paused(self) -> Iterator[None]:
        self._paused = True
        try:
            yield
        finally:
            self.tick()
            self._paused = False


def restart_command(argv: Sequence[str], dir_key: str, out_dir: str) -> list[str]:
    """`argv` (sys.orig_argv) with any `dir_key=` override replaced by `dir_key=out_dir`, so the
    restarted command writes where this one did and resumes there."""
    kept = [a for a in argv if not a.startswith(f"{dir_key}=")]
    return [*kept, f"{dir_key}={out_dir}"]


def exit_or_restart(message: str, argv: Sequence[str] | None) -> None:
    """Print `message`; then re-execute `argv` (at most MAX_RESTARTS times per command, counted
    in GRUBENCH_RESTARTS) or, without argv or past the limit, end the process with HANG_EXIT.
    Called from the watchdog's thread: nothing else in this process can run any more."""
    restarts = int(os.environ.get(RESTARTS_ENV, "0"))
    if argv is not None and restarts < MAX_RESTARTS:
        tell(
            f"grubench-train: {message}; restarting from the last checkpoint "
            f"({restarts + 1} of {MAX_RESTARTS})"
        )
        sys.stdout.flush()
        os.environ[RESTARTS_ENV] = str(restarts + 1)
        os.execv(argv[0], list(argv))
    tell(
        f"grubench-train: error: {message}; run the same command to resume from the last "
        "checkpoint",
        logging.ERROR,
    )
    sys.stdout.flush()
    os._exit(HANG_EXIT)


class Preempted(BaseException):
    """A pre-emption signal (or Ctrl-C) arrived; the state was checkpointed at `step`.
    `requeue`, when set, is the job scheduler's handler (submitit's): it requeues the job and
    exits. `why`, for SIGTERM under SLURM: "requeued" or "not requeued" (`grubench.slurm`). A
    BaseException, like KeyboardInterrupt: a request to stop, which an `except Exception`
    around a run must not swallow."""

    def __init__(
        self, step: int, signal_name: str = "SIGTERM", requeue: Any = None, why: str | None = None
    ):
        how = "interrupted (Ctrl-C)" if signal_name == "SIGINT" else f"preempted by {signal_name}"
        if why == "requeued":
            how += " (SLURM requeued the job)"
        elif why == "not requeued":
            how = (
                f"stopped by {signal_name} (not a SLURM requeue: scancel, the time limit or "
                "another sender)"
            )
        self.what = f"{how} at step {step}"  # what happened, without the advice
        super().__init__(f"{self.what}: run the same command to resume")
        self.step = step
        self.signal_name = signal_name
        self.requeue = requeue


class StopSignals:
    """While active, SIGTERM (SLURM pre-emption), Ctrl-C (SIGINT) and, under submitit, its
    pre-emption signal (SIGUSR2 unless SUBMITIT_PREEMPT_SIGNAL says otherwise) only raise a
    flag; the loop checkpoints at the end of the step and stops. submitit's own handler for its
    signal is kept as `requeue`, to be called once the checkpoint is safe: it requeues the job
    and exits. A second signal before the step ends stops the process at once, as usual
    (KeyboardInterrupt for a second Ctrl-C)."""

    def __init__(self):
        self.raised: str | None = None
        self.requeue: Any = None

    def __enter__(self):
        self.raised, self.requeue = None, None
        self._old: dict[int, Any] = {}
        names = {"SIGTERM", "SIGINT", "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2")}
        try:
            for name in sorted(names):
                sig = getattr(signal, name, None)
                if sig is None:
                    continue
                old = signal.getsignal(sig)
                if sig == signal.SIGINT and old is signal.SIG_IGN:
                    continue  # Ctrl-C is ignored here (a background job): leave it so
                if sig not in (signal.SIGTERM, signal.SIGINT) and not callable(old):
                    continue  # nobody asked for this signal: leave its default alone
                self._old[sig] = old
                signal.signal(sig, self._handle)
        except ValueError:  # not the main thread: leave signals alone
            self._restore()
        return self

    def _handle(self, signum, frame):
        if self.raised:  # a second signal: the step did not end (a hang?) or the user insists
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
        self.raised = signal.Signals(signum).name
        old = self._old.get(signum)
        if signum == signal.SIGINT:  # os.write: print() may be inside a write of its own
            os.write(
                2,
                b"grubench-train: interrupted: stopping with a checkpoint once this step (or "
                b"the compilation) ends; Ctrl-C again to stop at once\n",
            )
        elif signum != signal.SIGTERM and callable(old):
            self.requeue = lambda: old(signum, None)

    def _restore(self):
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old = {}

    def __exit__(self, *exc):
        self._restore()
