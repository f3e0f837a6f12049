"""The start log of a run (grubench/starts.py): one record per start, read back from the
events, however a start ended."""

import json

from grubench.starts import LOG, StartLog


def test_starts_read_back_with_their_steps_and_endings(tmp_path, monkeypatch):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    log = StartLog(tmp_path)
    log.begin(0)
    log.saved(5)
    log.step = 7  # killed here: no end event
    log = StartLog(tmp_path)
    log.begin(5)
    log.saved(10)
    log.step = 11
    log.end("preempted by SIGUSR2 at step 11")
    with open(tmp_path / LOG, "a") as f:
        f.write('{"event": "start", "st')  # a line cut short by a kill
    log = StartLog(tmp_path)
    log.begin(11)
    log.step = 12
    log.end("completed")
    got = [(s["from_step"], s["to_step"], s["ended"], s["slurm"]) for s in log.starts()]
    assert got == [
        (0, 5, None, None),
        (5, 11, "preempted by SIGUSR2 at step 11", None),
        (11, 12, "completed", None),
    ]
    assert all(s["host"] and s["time"] for s in log.starts())


def test_only_the_primary_process_writes(tmp_path):
    log = StartLog(tmp_path, primary=False)
    log.begin(0)
    log.end("completed")
    assert not (tmp_path / LOG).exists() and log.starts() == []


def test_a_start_records_its_slurm_job(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "9")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "2")
    monkeypatch.delenv("SLURM_ARRAY_JOB_ID", raising=False)
    StartLog(tmp_path).begin(3)
    (event,) = [json.loads(x) for x in (tmp_path / LOG).read_text().splitlines()]
    assert event["slurm"]["id"] == "9" and event["slurm"]["requeues"] == 2
