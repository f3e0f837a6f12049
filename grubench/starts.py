"""Each start of a run, recorded in its directory: where it ran and which steps it trained.

A run may take several starts: resumed by hand, requeued by SLURM, restarted by the hang
watchdog. Each start appends events to `starts.jsonl` in the run directory, one JSON object a
line (an append of one short line, so a start killed mid-write loses at most that line):

    {"event": "start", "step": S, "time": ISO, "host": H, "pid": P, "slurm": {...} | null}
    {"event": "checkpoint", "step": D}
    {"event": "end", "step": D, "how": "completed" | "preempted by SIGUSR2 ..." | ...}

`StartLog.starts()` reads them back as one record per start (results.json: `starts`):
from_step, to_step (the end's step, else its last checkpoint's: a killed start's later steps
are trained again by the next), ended (None where the start was killed without a word), and
where it ran. Only the process that writes the run's files (`sharding.primary`) writes here.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from grubench import slurm

LOG = "starts.jsonl"


class StartLog:
    """The start log of the run in `out_dir`; `begin` once this start knows its first step."""

    def __init__(self, out_dir: str | Path, primary: bool = True):
        self.path = Path(out_dir) / LOG
        self.primary = primary
        self.step = 0  # the last step this start finished (the loop keeps it current)
        self.begun = False  # whether this start has written its start event

    def _append(self, event: dict[str, Any]) -> None:
        if not self.primary:
            return
        line = json.dumps(event, allow_nan=False) + "\n"
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":  # a line cut short by a kill
                line = "\n" + line
            os.write(fd, line.encode())
        finally:
            os.close(fd)

    def begin(self, step: int) -> None:
        self.step, self.begun = step, True
        self._append(
            {
                "event": "start",
                "step": step,
                "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "slurm": slurm.job(),
            }
        )

    def saved(self, step: int) -> None:
        self._append({"event": "checkpoint", "step": step})

    def end(self, how: str) -> None:
        self._append({"event": "end", "step": self.step, "how": how})

    def starts(self) -> list[dict[str, Any]]:
        """One record per start, oldest first (the shape in the module docstring)."""
        out: list[dict[str, Any]] = []
        if not self.path.exists():
            return out
        for line in self.path.read_text().splitlines():
            try:
                event = json.loads(line)
            except ValueError:  # a line cut short by a kill: the events around it stand
                continue
            if not isinstance(event, dict) or not isinstance(event.get("step"), int):
                continue
            kind = event.get("event")
            if kind == "start":
                out.append(
                    {
                        "from_step": event["step"],
                        "to_step": event["step"],
                        "ended": None,
                        "time": event.get("time"),
                        "host": event.get("host"),
                        "slurm": event.get("slurm"),
                    }
                )
            elif out and kind in ("checkpoint", "end"):
                out[-1]["to_step"] = event["step"]
                if kind == "end":
                    out[-1]["ended"] = event.get("how")
        return out
