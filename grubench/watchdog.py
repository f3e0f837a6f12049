"""A watchdog for runs whose device work stops making progress.

XLA's CPU runtime can, rarely, wedge: `block_until_ready` waits forever with the CPU idle (see
the README's known issue). No state can be saved from a wedged runtime, but the last checkpoint
is on disk, so the cure is a fresh process: `Watchdog` notices that no step has finished for
`timeout_s` seconds and calls `on_hang` from its own thread (the main thread is blocked).
`restart_command` builds the re-execution the command line uses: the same command, pinned to
the same output directory, which resumes from the newest checkpoint.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

RESTARTS_ENV = "GRUBENCH_RESTARTS"  # how many times this command has restarted itself
MAX_RESTARTS = 3
HANG_EXIT = 3


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
        print(f"grubench-train: {message}; restarting from the last checkpoint "
              f"({restarts + 1} of {MAX_RESTARTS})", file=sys.stderr, flush=True)
        sys.stdout.flush()
        os.environ[RESTARTS_ENV] = str(restarts + 1)
        os.execv(argv[0], list(argv))
    print(f"grubench-train: error: {message}; run the same command to resume from the last "
          "checkpoint", file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(HANG_EXIT)
