"""Fault injection for the tests of runs that survive, installed in every Python process the
tests start with `fault_env(FAULT)` (tests/helpers.py): this directory goes on PYTHONPATH, so
Python imports this module at start-up (see the `site` module), and with GRUBENCH_FAULT set it
appends a hook to `grubench.loop.AFTER_STEP`. grubench's own code never reads GRUBENCH_FAULT.

GRUBENCH_FAULT=kill@N sends the process SIGKILL at the end of step N (after its checkpoint, if
one falls there; `end`: after the last step, before the final evaluation), term@N SIGTERM
(pre-emption), usr2@N SIGUSR2 (submitit's pre-emption and time-out signal); hang@N blocks
forever as a wedged runtime would, in the first process of a command only (not after a
watchdog restart), stuck@N in every process.
"""

import os

FAULT = os.environ.get("GRUBENCH_FAULT", "")


def _inject(point: str) -> None:
    import signal
    import threading

    from grubench.process import RESTARTS_ENV

    if FAULT == f"stuck@{point}" or (FAULT == f"hang@{point}" and not os.environ.get(RESTARTS_ENV)):
        threading.Event().wait()
    for name, sig in (("kill", signal.SIGKILL), ("term", signal.SIGTERM), ("usr2", signal.SIGUSR2)):
        if FAULT == f"{name}@{point}":
            os.kill(os.getpid(), sig)


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
