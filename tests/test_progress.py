"""What a run says while it trains: progress lines off a terminal, the console's filters."""

import io
import logging

import pytest

from grubench.progress import (
    FILE_ONLY,
    PROGRESS,
    ConsoleFormatter,
    ConsoleHandler,
    Progress,
    _duration,
)


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _said(stream: io.StringIO, *records: tuple[int, str, dict]) -> list[str]:
    handler = ConsoleHandler(stream)
    handler.setFormatter(ConsoleFormatter("%(message)s"))
    logger = logging.getLogger("grubench.test_progress")
    logger.propagate, logger.level = False, logging.INFO
    logger.addHandler(handler)
    try:
        for level, text, extra in records:
            logger.log(level, text, extra=extra)
    finally:
        logger.removeHandler(handler)
    return stream.getvalue().splitlines()


RECORDS = (
    (logging.INFO, "config: ...", FILE_ONLY),
    (logging.INFO, "step 3/6", PROGRESS),
    (logging.INFO, "evaluation at step 3", {}),
    (logging.WARNING, "few evaluations", {}),
)


def test_off_a_terminal_the_console_shows_progress_lines_but_not_the_config():
    assert _said(io.StringIO(), *RECORDS) == [
        "step 3/6",
        "evaluation at step 3",
        "warning: few evaluations",
    ]


def test_on_a_terminal_the_bar_stands_in_for_progress_lines(monkeypatch):
    from grubench import progress

    monkeypatch.setattr(progress, "_bars", ["a bar"])
    assert _said(Terminal(), *RECORDS) == ["evaluation at step 3", "warning: few evaluations"]
    # Without a bar (trainer.progress=false) the terminal gets the lines.
    monkeypatch.setattr(progress, "_bars", [])
    assert "step 3/6" in _said(Terminal(), *RECORDS)


def test_a_progress_line_has_step_loss_rate_and_eta(caplog):
    now = [50.0]
    progress = Progress(total=1000, start=100, bar=False, clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger="grubench.progress"):
        progress.report(100, "0.6", 5.0)  # no step done in this start yet
        now[0] += 60.0  # 300 steps in a minute, evaluations included: 0.2 s a step
        progress.report(400, "0.4521", 9.5)
        progress.report(500, "non-finite", 0.0)
    progress.close()
    assert [r.getMessage() for r in caplog.records] == [
        "step 100/1000  loss 0.6  5.0 steps/s  ETA unknown",
        "step 400/1000  loss 0.4521  9.5 steps/s  ETA 2m00s",
        "step 500/1000  loss non-finite  0.0 steps/s  ETA 1m15s",
    ]
    assert all(getattr(r, "grubench_progress", False) for r in caplog.records)


@pytest.mark.parametrize(
    "seconds, text", [(0, "0s"), (44.6, "45s"), (60, "1m00s"), (725, "12m05s"), (11220, "3h07m")]
)
def test_durations_read_as_a_person_writes_them(seconds, text):
    assert _duration(seconds) == text
