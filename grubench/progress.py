"""How a run reports while it trains: a tqdm bar on a terminal, a log line every `log_every`
steps off one (SLURM, nohup, a pipe), and the console side of its logging.

Everything a run says goes through Python logging (logger `grubench`): `grubench-train`'s
Hydra job logging (grubench/conf/config.yaml) sends it to the run's train.log and, through
`ConsoleHandler`, to the console. Two kinds of record stay out of the console: those logged
with `extra=FILE_ONLY` (the resolved config) and, while a bar is drawn on a terminal, the
progress lines (`extra=PROGRESS`), which the bar shows instead (with `trainer.progress=false`
there is no bar, and the lines show).
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Callable
from typing import IO, Any

log = logging.getLogger("grubench.progress")

FILE_ONLY = {"grubench_file_only": True}
_bars: list[Any] = []  # the bars drawn now (a bar shows only on a terminal)
PROGRESS = {"grubench_progress": True}

__all__ = ["FILE_ONLY", "PROGRESS", "ConsoleFormatter", "ConsoleHandler", "Progress", "tell"]


def tell(line: str, level: int = logging.WARNING) -> None:
    """`line` on stderr (a command's own warnings and errors, "grubench-train: ..."), and into
    the run's train.log where logging is set up (the console has it already)."""
    print(line, file=sys.stderr, flush=True)
    logger = logging.getLogger("grubench")
    if logger.hasHandlers():  # else Python's last-resort handler would print it again
        logger.log(level, line, extra=FILE_ONLY)


def _is_terminal(stream: IO[str] | None) -> bool:
    try:
        return bool(stream is not None and stream.isatty())
    except (AttributeError, ValueError):  # a closed or unusual stream
        return False


class ConsoleHandler(logging.StreamHandler):
    """A stream handler (stdout unless given) that writes through `tqdm.write`, so a line
    printed under a progress bar does not tear it, and that drops file-only records, and
    progress lines while a bar is drawn and its stream is a terminal (the bar shows them)."""

    def __init__(self, stream: IO[str] | None = None):
        super().__init__(stream if stream is not None else sys.stdout)

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "grubench_file_only", False):
            return False
        if getattr(record, "grubench_progress", False) and _bars and _is_terminal(self.stream):
            return False
        return bool(super().filter(record))

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm

        try:
            tqdm.write(self.format(record), file=self.stream)
            self.flush()
        except Exception:  # noqa: BLE001 - logging's own contract: report, never raise
            self.handleError(record)


class ConsoleFormatter(logging.Formatter):
    """The message alone; warnings and errors prefixed with their level, in lower case."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if record.levelno >= logging.WARNING:
            return f"{record.levelname.lower()}: {text}"
        return text


def _duration(seconds: float) -> str:
    """'45s', '12m05s', '3h07m'."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class Progress:
    """The progress of steps `start + 1 .. total`: on a terminal (and with `bar`) a tqdm bar;
    always, every call of `report`, one INFO line "step 300/2000  loss 0.4521  12.3 steps/s
    ETA 2m18s" (train.log; the console off a terminal). The rate is the training steps'; the
    ETA is the wall-clock time per step since `begin` (evaluations and saving included), read
    from `clock`."""

    def __init__(
        self, total: int, start: int, bar: bool, clock: Callable[[], float] = time.monotonic
    ):
        from tqdm.auto import tqdm

        self.total, self.start, self.clock = total, start, clock
        self.t0 = clock()
        # disable=None: a bar on a terminal, nothing in logs and pipes.
        self.bar: Any = tqdm(
            total=total, disable=None if bar else True, unit="step", dynamic_ncols=True
        )
        self.bar.update(start)
        if not self.bar.disable:
            _bars.append(self.bar)

    def begin(self) -> None:
        """Start the ETA's clock: the first step is about to run (set-up, compilation and
        W&B's start are behind)."""
        self.t0 = self.clock()

    def advance(self) -> None:
        self.bar.update(1)

    def report(self, done: int, loss: str, steps_per_s: float) -> None:
        """A progress line at step `done`: the mean minibatch loss (text), the training rate
        over the last log interval, and the time left."""
        self.bar.set_postfix(loss=loss, steps_s=f"{steps_per_s:.1f}")
        elapsed, steps = self.clock() - self.t0, done - self.start
        eta = (self.total - done) * elapsed / steps if steps > 0 and elapsed > 0 else math.inf
        log.info(
            "step %d/%d  loss %s  %.1f steps/s  ETA %s",
            done,
            self.total,
            loss,
            steps_per_s,
            _duration(eta) if math.isfinite(eta) else "unknown",
            extra=PROGRESS,
        )

    def close(self) -> None:
        self.bar.close()
        if self.bar in _bars:
            _bars.remove(self.bar)
