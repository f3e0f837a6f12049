"""Runs that survive: a real training process killed (SIGKILL) or pre-empted (SIGTERM) at
several points, started again with the same command, ends with the metrics of a run that was
never interrupted, member by member (the run is a population: two seeds x a grid)."""

import json
import subprocess
import sys

import pytest

from helpers import POPULATION, fault_env

# 12 steps, checkpoints at 5 and 10 (and 12), dropout and a population of two seeds x two
# learning rates x two dropout rates (8 members) so every key matters.
ARGS = [*POPULATION, "trainer.grid.dropout=[0.0,0.1]"]


def run(out, fault=None, *extra):
    env = fault_env(fault)
    return subprocess.run(
        [sys.executable, "-m", "grubench.train", *ARGS, *extra, f"hydra.run.dir={out}"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def measured(record: dict) -> dict:
    """`record` (metrics, or a member's record) without what the clock measures: the
    seconds to target differ run to run where the steps do not."""
    out = {k: v for k, v in record.items() if k != "seconds_to_target"}
    if isinstance(out.get("metrics"), dict):
        out["metrics"] = measured(out["metrics"])
    return out


def curves(out):
    """metrics.jsonl without the wall-clock columns."""
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    clock = ("train/steps_per_s", "train/seconds")
    return [{k: v for k, v in r.items() if k not in clock} for r in rows]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref")
    p = run(out)
    assert p.returncode == 0, p.stderr
    return json.loads((out / "results.json").read_text()), curves(out)


# kill@3: before the first checkpoint (starts over); kill@7: between checkpoints (resumes at
# 5); kill@10: right after a checkpoint; kill@end: after the last step, before the final test.
@pytest.mark.slow
@pytest.mark.parametrize("point", ["3", "7", "10", "end"])
def test_sigkill_then_rerun_equals_uninterrupted(point, reference, tmp_path):
    killed = run(tmp_path, f"kill@{point}")
    assert killed.returncode == -9
    assert not (tmp_path / "results.json").exists()  # nothing claims to be finished
    resumed = run(tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    res = json.loads((tmp_path / "results.json").read_text())
    want = {"3": None, "7": 5, "10": 10, "end": 12}[point]
    assert res.get("resumed_from_step") == want
    assert res["status"] == "completed"
    assert measured(res["metrics"]) == measured(reference[0]["metrics"])
    assert [measured(m) for m in res["members"]] == [
        measured(m) for m in reference[0]["members"]
    ] and len(res["members"]) == 8
    assert curves(tmp_path) == reference[1]


@pytest.mark.slow
def test_sigterm_checkpoints_exits_cleanly_and_resumes(reference, tmp_path):
    p = run(tmp_path, "term@7")
    assert p.returncode == 143
    assert p.stderr.strip().splitlines()[-1] == (
        "grubench-train: error: preempted by SIGTERM at step 7: run the same command to resume "
        f"(hydra.run.dir={tmp_path})"
    )
    assert "Traceback" not in p.stderr
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["status"] == "failed" and "preempted" in res["error"]
    assert (tmp_path / "checkpoints" / "7").is_dir()  # saved on the way out
    resumed = run(tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["resumed_from_step"] == 7 and measured(res["metrics"]) == measured(
        reference[0]["metrics"]
    )
    # Each start's steps and ending, in results.json; outside SLURM no job is named.
    assert [(s["from_step"], s["to_step"], s["ended"], s["slurm"]) for s in res["starts"]] == [
        (0, 7, "preempted by SIGTERM at step 7", None),
        (7, 12, "completed", None),
    ]
    assert res["slurm"] is None


@pytest.mark.slow
def test_a_killed_start_is_recorded_up_to_its_last_checkpoint(reference, tmp_path):
    """A start killed at step 7 (checkpoint at 5) left no word on how it ended: its record
    runs to 5, where the next start took over."""
    assert run(tmp_path, "kill@7").returncode == -9
    assert run(tmp_path).returncode == 0
    res = json.loads((tmp_path / "results.json").read_text())
    assert [(s["from_step"], s["to_step"], s["ended"]) for s in res["starts"]] == [
        (0, 5, None),
        (5, 12, "completed"),
    ]


@pytest.mark.slow
def test_checkpoints_on_time_as_well_as_on_steps(reference, tmp_path):
    """trainer.checkpoint_every_s: a checkpoint once that much time has passed since the last,
    here after every step; the numbers are those of the run that saved at 5 and 10."""
    p = run(tmp_path, None, "trainer.checkpoint_every=0", "trainer.checkpoint_every_s=1e-9")
    assert p.returncode == 0, p.stderr[-2000:]
    res = json.loads((tmp_path / "results.json").read_text())
    assert measured(res["metrics"]) == measured(reference[0]["metrics"])
    events = [json.loads(x) for x in (tmp_path / "starts.jsonl").read_text().splitlines()]
    assert [e["step"] for e in events if e["event"] == "checkpoint"] == list(range(1, 13))


@pytest.mark.slow
def test_resume_from_another_directory(reference, tmp_path):
    first = tmp_path / "first"
    assert run(first, "kill@7").returncode == -9
    second = tmp_path / "second"
    p = run(second, None, f"trainer.resume={first}")
    assert p.returncode == 0, p.stderr
    res = json.loads((second / "results.json").read_text())
    assert res["resumed_from_step"] == 5 and measured(res["metrics"]) == measured(
        reference[0]["metrics"]
    )


@pytest.mark.slow
def test_submitit_preemption_checkpoints_requeues_and_resumes(reference, tmp_path):
    """submitit's pre-emption signal (SIGUSR2, what SLURM sends before a time-out or a
    pre-emption) at step 7: the job checkpoints at 7, submitit requeues it, and the requeued
    job resumes there and ends as if never interrupted. submitit_local runs the requeue path a
    SLURM job takes."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    env = fault_env("usr2@7")
    sweep = tmp_path / "sweep"
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "grubench.train",
            "-m",
            "hydra/launcher=submitit_local",
            *ARGS,
            f"hydra.sweep.dir={sweep}",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        cwd=tmp_path,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    (job,) = sweep.glob("0_*")
    res = json.loads((job / "results.json").read_text())
    assert res["status"] == "completed" and res["resumed_from_step"] == 7
    assert measured(res["metrics"]) == measured(reference[0]["metrics"])
    assert curves(job) == reference[1]
    logs = "".join(f.read_text() for f in sweep.rglob("*_log.err"))
    assert "preempted by SIGUSR2 at step 7: checkpointed; submitit requeues the job" in logs
    assert "this job is preempted" in logs  # submitit's handler ran after ours


@pytest.mark.slow
def test_a_stuck_step_restarts_the_command_which_resumes(reference, tmp_path):
    """The XLA CPU hang, simulated at step 7: after trainer.hang_timeout_s without a finished
    step the watchdog re-executes the same command in the same directory, which resumes from
    the checkpoint at step 5 and ends as if never interrupted. The timeout is 5 s, not 1: no
    phase of this tiny run (a step, an evaluation, a checkpoint) comes near that even on a
    loaded machine, so only the injected hang fires the watchdog."""
    p = run(tmp_path, "hang@7", "trainer.hang_timeout_s=5")
    assert p.returncode == 0, p.stderr[-2000:]
    assert "the XLA runtime is stuck; restarting from the last checkpoint (1 of 3)" in p.stderr
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["status"] == "completed" and res["resumed_from_step"] == 5
    assert measured(res["metrics"]) == measured(reference[0]["metrics"])


@pytest.mark.slow
def test_a_stuck_step_past_the_restart_limit_exits_with_one_line(tmp_path):
    env = fault_env("stuck@3", GRUBENCH_RESTARTS="3")  # 3 restarts so far
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "grubench.train",
            *ARGS,
            "trainer.hang_timeout_s=1",
            f"hydra.run.dir={tmp_path}",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert p.returncode == 3
    assert (
        p.stderr.strip()
        .splitlines()[-1]
        .startswith("grubench-train: error: no training step finished for ")
    )
    assert p.stderr.strip().endswith("run the same command to resume from the last checkpoint")
    assert "Traceback" not in p.stderr
    res = json.loads((tmp_path / "results.json").read_text())  # the watchdog wrote the record
    assert res["status"] == "failed" and "the XLA runtime is stuck" in res["error"]


def test_restart_command_pins_the_output_directory():
    from grubench.process import restart_command

    assert restart_command(["py", "-m", "x", "hydra.run.dir=a", "k=1"], "hydra.run.dir", "b") == [
        "py",
        "-m",
        "x",
        "k=1",
        "hydra.run.dir=b",
    ]
