"""grubench on SLURM: the job's provenance and the time-limit rule (grubench/slurm.py), and,
marked `slurm`, sweeps on a real single-node cluster started by `scripts/slurm-local start`:
requeue, a time limit, scancel, a relaunch and a population over two srun tasks.

The cluster tests skip, saying why, where no such cluster answers. Each waits on events, never
on a guessed delay: a job held at a step (tests/faults, `hold@N`) is acted on once it says it
is there, and SLURM's own signals (a requeue, scancel, the time limit) release it."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from grubench import slurm
from grubench.cli import check_overrides
from grubench.errors import ConfigError
from helpers import POPULATION, fault_env, train_cli

SCRIPT = Path(__file__).parents[1] / "scripts" / "slurm-local"

ARGS = POPULATION  # 12 steps, checkpoints at 5, 10 and 12; 2 seeds x 2 learning rates

# One CPU and 1 GB a task, so two jobs share this machine's cores; 10 minutes each.
LAUNCHER = [
    "hydra/launcher=slurm",
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.mem_gb=1",
    "hydra.launcher.timeout_min=10",
]


# --- without a cluster ------------------------------------------------------------------


def test_the_job_is_read_from_slurms_environment(monkeypatch):
    for var in list(os.environ):
        if var.startswith("SLURM_"):
            monkeypatch.delenv(var)
    assert slurm.job() is None
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "40")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "2")
    monkeypatch.setenv("SLURM_JOB_NODELIST", "gpu[01-02]")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "3")
    assert slurm.job() == {
        "id": "40_2",
        "job_id": "42",
        "array_job_id": "40",
        "array_task_id": "2",
        "nodes": "gpu[01-02]",
        "partition": None,
        "tasks": 1,
        "requeues": 3,
    }


@pytest.mark.parametrize(("restarts", "why"), [(1, "requeued"), (0, "not requeued")])
def test_sigterm_is_told_apart_by_slurms_restart_count(restarts, why, monkeypatch, tmp_path):
    """scontrol requeue counts the restart before it signals the start; scancel does not."""
    fake = tmp_path / "scontrol"
    fake.write_text(f"#!/bin/sh\necho 'JobId=7 JobName=x Restarts={restarts} EndTime=Unknown'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("SLURM_JOB_ID", "7")
    monkeypatch.delenv("SLURM_RESTART_COUNT", raising=False)
    assert slurm.why_terminated() == why


def test_a_time_limit_that_leaves_no_work_is_refused_before_submission():
    short = ["hydra.launcher.timeout_min=1", "hydra.launcher.signal_delay_s=30"]
    with pytest.raises(ConfigError) as e:
        check_overrides(["-m", "hydra/launcher=slurm", *short, "model=gru,lstm"])
    assert str(e.value) == (
        "hydra.launcher.timeout_min=1 is not allowed with hydra.launcher.signal_delay_s=30: "
        "a start is sure of only -30 s before its pre-emption signal (SLURM may send it up to "
        "60 s early), less than trainer.start_allowance_s=60 + trainer.checkpoint_every_s=0 = "
        "60 s (docs/slurm.md)"
    )
    three = ["hydra.launcher.timeout_min=3", "hydra.launcher.signal_delay_s=60"]
    with pytest.raises(ConfigError, match=r"sure of only 60 s .* = 90 s"):
        check_overrides(["-m", "hydra/launcher=slurm", *three, "trainer.checkpoint_every_s=30"])
    for bad, why in (
        ("timeout_min=0", "minutes >= 1"),
        ("signal_delay_s=-5", "seconds in 1 .. 65535"),
        ("signal_delay_s=100000", "seconds in 1 .. 65535"),
        ("max_num_timeout=-1", "an integer >= 0"),
    ):
        with pytest.raises(ConfigError) as e:
            check_overrides(["-m", "hydra/launcher=slurm", f"hydra.launcher.{bad}"])
        assert str(e.value) == f"hydra.launcher.{bad} is not allowed: {why}"
    # 60 s of work: enough for the allowance; the launcher's default (240 min) always is.
    check_overrides(["-m", "hydra/launcher=slurm", *three])
    check_overrides(["-m", "hydra/launcher=slurm"])
    # Other launchers have no SLURM time limit to check.
    check_overrides(["-m", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=1"])


# --- on a local cluster -----------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster():
    """SLURM_CONF of a running local cluster (scripts/slurm-local), or the test skips."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    conf = os.environ.get("SLURM_CONF")
    if conf is None:
        found = subprocess.run([SCRIPT, "env"], capture_output=True, text=True)
        conf = found.stdout.strip().partition("=")[2]
    try:
        up = subprocess.run(
            [SCRIPT, "status"], capture_output=True, env={**os.environ, "SLURM_CONF": conf}
        )
    except OSError as e:
        pytest.skip(f"no local SLURM: {e}")
    if up.returncode:
        pytest.skip("no local SLURM cluster: start one with scripts/slurm-local start")
    cpus = subprocess.run(
        ["sinfo", "-h", "-o", "%c"],
        capture_output=True,
        text=True,
        env={**os.environ, "SLURM_CONF": conf},
    ).stdout.split()
    if not cpus or int(cpus[0].rstrip("+")) < 2:
        pytest.skip("the local SLURM node has fewer than 2 CPUs (2 jobs or tasks run at once)")
    return conf


def launch(cluster, sweep: Path, *args: str, fault: str | None = None, flag: Path | None = None):
    """`grubench-train -m hydra/launcher=slurm ... ARGS` started in the background."""
    extra = {"SLURM_CONF": cluster}
    if flag is not None:
        extra["GRUBENCH_FAULT_FLAG"] = str(flag)
    env = fault_env(fault, **extra)
    for name in ("XLA_FLAGS", "GRUBENCH_XLA_DEVICES_ADDED"):  # as from a user's shell
        env.pop(name, None)
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "grubench.train",
            "-m",
            *LAUNCHER,
            *args,
            f"hydra.sweep.dir={sweep}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=sweep.parent,
    )


def finish(p: subprocess.Popen, timeout: int = 300) -> str:
    """The launcher's output once it ends; killed (and the test failed) after `timeout` s."""
    try:
        out, _ = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        out, _ = p.communicate()
        pytest.fail(f"the sweep did not end in {timeout} s:\n{out[-3000:]}")
    return out


def wait_for(path: Path, p: subprocess.Popen, timeout: float = 300) -> None:
    """Until `path` exists (a held job says it is there); fails if the launcher ends first."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if p.poll() is not None:
            pytest.fail(f"the sweep ended before {path.name} appeared:\n{p.stdout.read()[-3000:]}")
        assert time.monotonic() < deadline, f"{path} did not appear in {timeout} s"
        time.sleep(0.2)


def job_of(run: Path) -> str:
    """SLURM's name of the job of a run's newest start ("ARRAY_TASK" in an array), from its
    start log."""
    starts = [json.loads(x) for x in (run / "starts.jsonl").read_text().splitlines()]
    return [e for e in starts if e["event"] == "start"][-1]["slurm"]["id"]


def scontrol(cluster, *args: str) -> None:
    subprocess.run(["scontrol", *args], check=True, env={**os.environ, "SLURM_CONF": cluster})


def result(run: Path) -> dict:
    return json.loads((run / "results.json").read_text())


def measured(res: dict) -> list:
    """Each member's record without what the clock measures."""
    out = []
    for m in res["members"]:
        metrics = {k: v for k, v in m["metrics"].items() if k != "seconds_to_target"}
        out.append({**m, "metrics": metrics})
    return out


def curves(run: Path) -> list:
    """metrics.jsonl without the wall-clock columns."""
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    clock = ("train/steps_per_s", "train/seconds")
    return [{k: v for k, v in r.items() if k not in clock} for r in rows]


@pytest.fixture(scope="module")
def sweep(cluster, tmp_path_factory):
    """A 2-job sweep (GRU, LSTM) run uninterrupted: the reference of the tests below."""
    home = tmp_path_factory.mktemp("slurm") / "sweep"
    out = finish(launch(cluster, home, *ARGS, "model=gru,lstm"))
    return home, out


@pytest.mark.slow
@pytest.mark.slurm
def test_a_two_job_sweep_runs_as_a_slurm_array(sweep):
    home, out = sweep
    runs = sorted(home.glob("*_copy"))
    assert [r.name for r in runs] == ["0_gru_copy", "1_lstm_copy"], out[-3000:]
    records = [result(r) for r in runs]
    assert [r["status"] for r in records] == ["completed", "completed"]
    assert len({r["slurm"]["array_job_id"] for r in records}) == 1  # one array, two tasks
    assert [r["slurm"]["array_task_id"] for r in records] == ["0", "1"]
    for r in records:
        assert r["slurm"]["requeues"] == 0 and r["slurm"]["nodes"]
        assert [(s["from_step"], s["to_step"], s["ended"]) for s in r["starts"]] == [
            (0, 12, "completed")
        ]
    assert len((home / "summary.md").read_text().splitlines()) == 2 + 2 * 2  # a row per rate


@pytest.mark.slow
@pytest.mark.slurm
def test_scontrol_requeue_mid_run_resumes_to_the_uninterrupted_results(cluster, sweep, tmp_path):
    home = tmp_path / "sweep"
    flag = tmp_path / "at-step-7"
    p = launch(cluster, home, *ARGS, "model=gru", fault="hold@7", flag=flag)
    wait_for(flag, p)
    run = home / "0_gru_copy"
    scontrol(cluster, "requeue", job_of(run))
    out = finish(p)
    assert p.returncode == 0, out[-3000:]
    res = result(run)
    assert res["status"] == "completed" and res["resumed_from_step"] == 7
    assert measured(res) == measured(result(sweep[0] / "0_gru_copy"))
    starts = res["starts"]
    assert [(s["from_step"], s["to_step"]) for s in starts] == [(0, 7), (7, 12)]
    assert starts[0]["ended"] == "preempted by SIGTERM (SLURM requeued the job) at step 7"
    assert [s["slurm"]["requeues"] for s in starts] == [0, 1]
    assert res["slurm"]["job_id"] == starts[0]["slurm"]["job_id"]  # the same job, requeued


@pytest.mark.slow
@pytest.mark.slurm
def test_a_time_limit_signals_checkpoints_requeues_and_resumes(cluster, sweep, tmp_path):
    """Two minutes, with SIGUSR2 60 s before the end, which SLURM's 30 s timer check sends
    30 to 60 s after the start: the start held at step 3 is released by it, checkpoints, and
    submitit requeues the job, which resumes at 3 and finishes. The window, 120 - 60 - 60 s,
    is 0: allowed with no start allowance. Where SLURM sends it is SLURM's timing, so the
    test asserts what holds wherever it lands: a start still compiling takes it before step 3
    (the next starts over), and a slow requeued start may take one of its own."""
    home = tmp_path / "sweep"
    limit = [
        "hydra.launcher.timeout_min=2",
        "hydra.launcher.signal_delay_s=60",
        "trainer.start_allowance_s=0",
    ]
    p = launch(cluster, home, *ARGS, "model=gru", *limit, fault="hold@3", flag=tmp_path / "at-3")
    out = finish(p)
    assert p.returncode == 0, out[-3000:]
    res = result(home / "0_gru_copy")
    assert res["status"] == "completed"
    assert measured(res) == measured(result(sweep[0] / "0_gru_copy"))
    starts = res["starts"]
    assert len(starts) >= 2 and starts[-1]["ended"] == "completed" and starts[-1]["to_step"] == 12
    for before, after in zip(starts, starts[1:], strict=False):  # each resumed where the last
        assert before["ended"] == f"preempted by SIGUSR2 at step {before['to_step']}"
        assert after["from_step"] == before["to_step"]
        assert after["slurm"]["requeues"] > before["slurm"]["requeues"]
    assert starts[0]["to_step"] in (0, 3)  # released by the signal, or never held
    assert res["slurm"]["requeues"] == starts[-1]["slurm"]["requeues"] >= 1


@pytest.mark.slow
@pytest.mark.slurm
def test_scancel_leaves_a_resumable_run_and_a_relaunch_finishes_only_it(cluster, tmp_path):
    """Of a 2-job sweep, the job of 4 steps finishes and the one of 12 is cancelled at step 7;
    the same command again leaves the first as it was and resumes the second at 7."""
    home = tmp_path / "sweep"
    flag = tmp_path / "at-step-7"
    args = [*ARGS, "model=gru", "trainer.steps=4,12"]
    p = launch(cluster, home, *args, fault="hold@7", flag=flag)
    wait_for(flag, p)
    (short,) = home.glob("0_*")
    (long,) = home.glob("1_*")
    subprocess.run(["scancel", job_of(long)], check=True, env={**os.environ, "SLURM_CONF": cluster})
    finish(p)
    res = result(long)
    assert res["status"] == "failed"
    assert res["error"] == (
        "Preempted: stopped by SIGTERM (not a SLURM requeue: scancel, the time limit or "
        "another sender) at step 7: run the same command to resume"
    )
    assert (long / "checkpoints" / "7").is_dir()
    first = (short / "results.json").read_bytes()
    assert json.loads(first)["status"] == "completed"

    again = launch(cluster, home, *args)
    out = finish(again)
    assert again.returncode == 0, out[-3000:]
    assert (short / "results.json").read_bytes() == first  # finished before: not rerun
    res = result(long)
    assert res["status"] == "completed" and res["resumed_from_step"] == 7
    assert [(s["from_step"], s["to_step"]) for s in res["starts"]] == [(0, 7), (7, 12)]
    assert res["starts"][0]["slurm"]["id"] != res["starts"][1]["slurm"]["id"]  # a new array


@pytest.mark.slow
@pytest.mark.slurm
def test_a_population_over_two_srun_tasks_equals_one_process(cluster, tmp_path):
    """Two tasks of one job step, a CPU device each: jax.distributed joins them (CPU
    collectives), each trains two of the four members, and process 0 writes the results of
    all four. Requeued at step 7, both processes checkpoint and the job resumes there; its
    results are those of one process with two devices, to the bit."""
    home = tmp_path / "sweep"
    flag = tmp_path / "at-step-7"
    two = "hydra.launcher.tasks_per_node=2"
    p = launch(cluster, home, *ARGS, "model=gru", two, fault="hold@7", flag=flag)
    one = tmp_path / "one-process"
    alone = train_cli(
        *ARGS, "model=gru", f"hydra.run.dir={one}", env=fault_env(None, GRUBENCH_CPU_DEVICES="2")
    )
    assert alone.returncode == 0, alone.stderr[-3000:]
    for task in (0, 1):  # both processes at step 7, before either is signalled
        wait_for(flag.with_name(f"{flag.name}.{task}"), p)
    scontrol(cluster, "requeue", job_of(home / "0_gru_copy"))
    out = finish(p)
    assert p.returncode == 0, out[-3000:]
    res = result(home / "0_gru_copy")
    assert res["status"] == "completed"
    assert res["slurm"]["tasks"] == 2 and res["speed"]["devices"] == 2
    assert res["resumed_from_step"] == 7 and res["slurm"]["requeues"] == 1
    assert result(one)["speed"]["devices"] == 2
    assert measured(res) == measured(result(one))
    assert curves(home / "0_gru_copy") == curves(one)
