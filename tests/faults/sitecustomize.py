"""Fault injection for the tests of runs that survive, installed in every Python process the
tests start with `fault_env(FAULT)` (tests/helpers.py): this directory goes on PYTHONPATH, so
Python imports this module at start-up (see the `site` module), and with GRUBENCH_FAULT set it
appends a hook to `grubench.loop.AFTER_STEP`. grubench's own code never reads GRUBENCH_FAULT.

GRUBENCH_FAULT=kill@N sends the process SIGKILL at the end of step N (after its checkpoint, if
one falls there; `end`: after the last step, before the final evaluation), term@N SIGTERM
(pre-emption), usr2@N SIGUSR2 (submitit's pre-emption and time-out signal); hang@N blocks
forever as a wedged runtime would, in the first process of a command only (not after a
watchdog restart), stuck@N in every process. hold@N, in a job's first start only (not once
SLURM has requeued it), creates the file GRUBENCH_FAULT_FLAG names (with ".K" added in task K
of a job step of several srun tasks) and then waits until a signal arrives (SIGTERM or
SIGUSR2, from scancel, scontrol requeue or a time limit), which the run then handles as it
would at the end of any step: a test acts on a job known to be at step N.
"""

import os

FAULT = os.environ.get("GRUBENCH_FAULT", "")


def _inject(point: str) -> None:
    import signal
    import threading

    from grubench.process import RESTARTS_ENV

    if FAULT == f"stuck@{point}" or (FAULT == f"hang@{point}" and not os.environ.get(RESTARTS_ENV)):
        threading.Event().wait()
    if FAULT == f"hold@{point}" and not int(os.environ.get("SLURM_RESTART_COUNT") or 0):
        _hold_until_signalled()
    for name, sig in (("kill", signal.SIGKILL), ("term", signal.SIGTERM), ("usr2", signal.SIGUSR2)):
        if FAULT == f"{name}@{point}":
            os.kill(os.getpid(), sig)


def _hold_until_signalled() -> None:
    import pathlib
    import signal
    import time

    got: list[int] = []
    olds = {}
    for sig in (signal.SIGTERM, signal.SIGUSR2):
        olds[sig] = old = signal.getsignal(sig)

        def note(signum, frame, old=old):
            got.append(signum)
            if callable(old):
                old(signum, frame)

        signal.signal(sig, note)
    flag = os.environ["GRUBENCH_FAULT_FLAG"]
    if int(os.environ.get("SLURM_STEP_NUM_TASKS") or 1) > 1:
        flag += "." + os.environ.get("SLURM_PROCID", "0")
    pathlib.Path(flag).touch()
    while not got:
        time.sleep(0.05)
    for sig, old in olds.items():
        signal.signal(sig, old)


if FAULT:
    import importlib.abc
    import sys

    class _HookOnImport(importlib.abc.MetaPathFinder):
        """Install the hook when grubench.loop is first imported (not before: importing it
        here would import JAX into every process)."""

        def find_spec(self, name, path, target=None):
            if name != "grubench.loop":
                return None
            sys.meta_path.remove(self)
            import importlib.util

            spec = importlib.util.find_spec(name)
            exec_module = spec.loader.exec_module

            def exec_and_hook(module):
                exec_module(module)
                module.AFTER_STEP.append(_inject)

            spec.loader.exec_module = exec_and_hook
            return spec

    sys.meta_path.insert(0, _HookOnImport())
