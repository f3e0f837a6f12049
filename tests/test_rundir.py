"""A run directory's guards: its config fingerprint (a relaunch with another config is refused
before anything is written) and its lock (one process at a time)."""

import json
import shutil
import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from grubench import loop, rundir
from grubench.cli import check_overrides
from grubench.errors import ConfigError, RunDirError
from helpers import TINY, tiny_cfg, train_cli


def resolved(*overrides: str) -> dict:
    return OmegaConf.to_container(tiny_cfg(*overrides), resolve=True)


@pytest.fixture(scope="module")
def done(tmp_path_factory):
    """A completed tiny run, made once; tests copy it before changing anything."""
    out = tmp_path_factory.mktemp("done") / "run"
    loop.train(tiny_cfg(), out)
    return out


def copy_of(done, tmp_path):
    return shutil.copytree(done, tmp_path / "run")


def test_the_fingerprint_ignores_process_keys_only():
    base = rundir.fingerprint(resolved())
    assert rundir.fingerprint(resolved("trainer.progress=true", "logger.mode=offline")) == base
    assert rundir.fingerprint(resolved("trainer.hang_timeout_s=5")) == base
    assert rundir.fingerprint(resolved("trainer.steps=7")) != base
    assert rundir.fingerprint(resolved("model.unroll=2")) != base


def test_a_run_records_its_fingerprint(done):
    record = json.loads((done / rundir.FINGERPRINT).read_text())
    results = json.loads((done / "results.json").read_text())
    assert record["fingerprint"] == results["fingerprint"] == rundir.fingerprint(resolved())
    assert record["config"] == resolved()


def test_a_completed_run_is_not_rerun_under_another_config(done, tmp_path):
    run = copy_of(done, tmp_path)
    rundir.check(run, resolved())  # the same config: fine (the run is returned as it is)
    with pytest.raises(RunDirError) as e:
        rundir.check(run, resolved("trainer.steps=7"))
    assert str(e.value) == (
        f"{run} holds a finished run of another configuration (trainer.steps=7 here, 6 in "
        "that run): run in a new directory"
    )
    # A finished run measured its speed under its own scan settings: those differ too.
    with pytest.raises(RunDirError, match=r"\(model.unroll=2 here, 0 in that run\): run in a"):
        rundir.check(run, resolved("model.unroll=2"))
    # The model's name is named first, not some key only one of the two cells has.
    with pytest.raises(RunDirError, match="model.name='lstm' here, 'gru' in that run"):
        rundir.check(run, resolved("model=lstm"))


def test_a_diverged_run_is_finished_too(done, tmp_path):
    run = copy_of(done, tmp_path)
    res = json.loads((run / "results.json").read_text())
    (run / "results.json").write_text(json.dumps({**res, "status": "diverged"}))
    assert loop.finished(run)["status"] == "diverged"  # returned as it is, never rewritten
    with pytest.raises(RunDirError, match="holds a finished run .*model.unroll=2 here"):
        rundir.check(run, resolved("model.unroll=2"))


def test_an_unfinished_run_resumes_under_keys_that_change_no_math(done, tmp_path):
    run = copy_of(done, tmp_path)
    (run / "results.json").unlink()  # as a killed run leaves it
    rundir.check(run, resolved("model.unroll=2", "trainer.progress=true"))
    with pytest.raises(RunDirError, match="holds a run of another configuration"):
        rundir.check(run, resolved("trainer.lr=0.5"))


def test_a_run_that_left_nothing_to_reuse_may_start_afresh_under_another_config(done, tmp_path):
    """A run that failed before its first checkpoint (a config too large, say): relaunching it
    with the fix in the same directory reuses nothing, so it is allowed."""
    run = copy_of(done, tmp_path)
    (run / "results.json").write_text('{"status": "failed", "config": {}}')
    shutil.rmtree(run / "checkpoints")
    rundir.check(run, resolved("trainer.batch_size=4"))


def test_a_sweep_whose_job_directories_only_the_jobs_know_is_checked_by_each_job(tmp_path):
    args = ["-m", *TINY, "model=lstm,gru", f"hydra.sweep.dir={tmp_path}"]
    check_overrides([*args, "hydra.sweep.subdir=${hydra.job.id}"])  # resolved only in the job
    with pytest.raises(ConfigError, match="hydra.sweep.subdir=.* is not allowed: Interpolation"):
        check_overrides([*args, "hydra.sweep.subdir=${oops}"])
    (tmp_path / "0_lstm_copy").mkdir(parents=True)
    with pytest.raises(ConfigError, match="sweep.subdir=.* cannot be created: File name too long"):
        check_overrides([*args, f"hydra.sweep.subdir={'s' * 300}"])


def test_a_preset_sweep_numbers_its_jobs_as_hydra_does(tmp_path):
    """A preset's own sweep (hydra.sweeper.params) numbers the jobs, before the command
    line's: job 0 of +experiment=data_size is the GRU on 100 sequences."""
    from grubench.cli import _jobs

    jobs = _jobs(["+experiment=data_size", f"hydra.sweep.dir={tmp_path}"], True)
    assert jobs[0][:2] == ["model=gru", "task.train_size=100"]
    assert len(jobs) == 8


def test_a_new_config_in_a_directory_that_left_nothing_keeps_the_old_curves_aside(tmp_path):
    rundir.record(tmp_path, resolved())
    (tmp_path / "metrics.jsonl").write_text('{"step": 3}\n')
    rundir.record(tmp_path, resolved("trainer.batch_size=4"))
    assert not (tmp_path / "metrics.jsonl").exists()
    assert (tmp_path / "metrics.previous.jsonl").read_text() == '{"step": 3}\n'
    (tmp_path / "metrics.jsonl").write_text('{"step": 1}\n')
    rundir.record(tmp_path, resolved("trainer.batch_size=4"))  # the same config: left as it is
    assert (tmp_path / "metrics.jsonl").exists()


def test_a_speed_key_changed_on_resume_does_not_borrow_the_old_step_times(done, tmp_path):
    """A new directory resumed from a finished run under another model.unroll has nothing to
    train: it times no step, so it reports no speed rather than the old run's."""
    res = loop.train(tiny_cfg("model.unroll=2", f"trainer.resume={done}"), tmp_path / "b")
    assert res["status"] == "completed" and res["speed"]["timed_steps"] == 0
    assert res["speed"]["step_time_ms"] != res["speed"]["step_time_ms"]  # NaN: not measured


def test_a_directory_from_before_fingerprints_is_compared_with_its_results(done, tmp_path):
    run = copy_of(done, tmp_path)
    (run / rundir.FINGERPRINT).unlink()
    rundir.check(run, resolved())
    with pytest.raises(RunDirError, match="trainer.steps=7 here, 6 in that run"):
        rundir.check(run, resolved("trainer.steps=7"))


def test_the_command_line_refuses_a_changed_single_run_and_sweep(done, tmp_path):
    """Checked while checking the command line, before Hydra writes anything: a single run, and
    every job of a sweep before any runs."""
    run = copy_of(done, tmp_path)
    with pytest.raises(RunDirError, match="trainer.steps=7 here"):
        check_overrides([*TINY, "trainer.steps=7", f"hydra.run.dir={run}"])
    sweep = tmp_path / "sweep"
    shutil.copytree(done, sweep / "1_gru_copy")  # job 1 of the sweep below, done before
    args = ["-m", *TINY, "model=lstm,gru", f"hydra.sweep.dir={sweep}"]
    check_overrides(args)  # as it was: job 1 is reported completed, job 0 runs
    with pytest.raises(RunDirError, match="1_gru_copy holds a finished run .*steps=7 here"):
        check_overrides([*args, "trainer.steps=7"])
    check_overrides([*args, "trainer.steps=7", "--cfg", "job"])  # prints only: nothing checked


def test_a_relaunch_with_another_config_changes_nothing_in_the_directory(done, tmp_path):
    run = copy_of(done, tmp_path)
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    p = train_cli(*TINY, "model=lstm", f"hydra.run.dir={run}")
    assert p.returncode == 2
    assert p.stderr.strip().splitlines() == [
        f"grubench-train: error: {run} holds a finished run of another configuration "
        "(model.name='lstm' here, 'gru' in that run): run in a new directory"
    ]
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


def test_a_finished_run_resumed_in_a_new_directory_keeps_its_curves(done, tmp_path):
    """trainer.resume from a finished run: nothing left to train, the curves come from the
    checkpoint and are written to the new directory, with a checkpoint of its own."""
    res = loop.train(tiny_cfg(f"trainer.resume={done}"), tmp_path / "b")
    assert res["resumed_from_step"] == 6 and res["status"] == "completed"
    assert (tmp_path / "b/metrics.jsonl").read_text() == (done / "metrics.jsonl").read_text()
    assert rundir.checkpoints_in(tmp_path / "b") is not None  # itself a source to resume from


def test_the_lock_admits_one_holder_and_names_it(tmp_path):
    import os

    with rundir.locked(tmp_path):
        with pytest.raises(RunDirError) as e:
            with rundir.locked(tmp_path):
                pass
        assert str(e.value) == (
            f"{tmp_path} is in use by another grubench-train (PID {os.getpid()}): wait for it "
            "to end, or choose another directory"
        )
        with pytest.raises(RunDirError, match="in use"):
            rundir.check(tmp_path, resolved())
    with rundir.locked(tmp_path):  # released
        pass


def test_a_run_into_a_directory_in_use_writes_nothing(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    with rundir.locked(out):
        with pytest.raises(RunDirError, match="in use by another grubench-train"):
            loop.train(tiny_cfg(), out)
    assert sorted(p.name for p in out.iterdir()) == [rundir.LOCK]


def test_the_lock_is_released_when_its_holder_is_killed(tmp_path):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from grubench import rundir\n"
            f"with rundir.locked({str(tmp_path)!r}):\n"
            "    print('held', flush=True); time.sleep(600)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"  # waits for the lock, not a clock
        with pytest.raises(RunDirError, match=f"PID {holder.pid}"):
            with rundir.locked(tmp_path):
                pass
    finally:
        holder.kill()
        holder.wait()
    with rundir.locked(tmp_path):
        pass
