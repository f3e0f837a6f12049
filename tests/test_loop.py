"""The training program (grubench/program.py) and loop (grubench/loop.py) in-process: seeds
under vmap, determinism, results, divergence."""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from grubench import loop
from grubench.errors import CheckpointError, ConfigError
from grubench.program import DataOrder, Evaluator, build
from helpers import tiny_cfg


@pytest.fixture(scope="module")
def two_seeds(tmp_path_factory):
    out = tmp_path_factory.mktemp("two")
    return loop.train(tiny_cfg("trainer.seeds=2", "seed=0", "trainer.stream_repeats=5"), out), out


def test_results_and_curves_are_written(two_seeds):
    res, out = two_seeds
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk["status"] == "completed" and on_disk["error"] is None
    assert on_disk["seeds"] == [0, 1] and on_disk["model"] == "gru" and on_disk["task"] == "copy"
    for k in ("train_loss", "val_loss", "test_loss", "test_accuracy", "gap"):
        assert len(on_disk["metrics"][k]) == 2
    m = on_disk["metrics"]
    np.testing.assert_allclose(m["gap"], np.subtract(m["val_loss"], m["train_loss"]))
    assert on_disk["params"] == sum(
        x.size
        for x in jax.tree.leaves(
            build(tiny_cfg()).graphdef
            and jax.eval_shape(lambda: build(tiny_cfg()).init(jnp.int32(0))["params"])
        )
    )
    assert on_disk["speed"]["step_time_ms"] > 0 and on_disk["memory"]["train_step_bytes"] > 0
    assert on_disk["speed"]["stream_step_ms"] > 0
    assert "--xla_cpu_multi_thread_eigen=false" in on_disk["speed"]["xla_flags"]  # conftest's
    assert on_disk["memory"]["param_bytes"] == 4 * on_disk["params"]  # float32
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    # One row per logged step: the minibatch loss every log_every steps, the evaluated losses
    # every eval_every, the training seconds so far in each, increasing.
    assert [r["step"] for r in rows] == [3, 6]
    for key in ("train/loss_batch", "train/grad_norm", "val/loss", "train/loss", "train/accuracy"):
        assert all(len(r[key]) == 2 for r in rows), key
    seconds = [r["train/seconds"] for r in rows]
    assert 0 < seconds[0] < seconds[1] <= on_disk["wall_s"]
    # train/loss is evaluated on the training examples, not the last minibatch
    assert rows[-1]["train/loss"] != rows[-1]["train/loss_batch"]
    # Time to the copy task's target (val accuracy >= 0.99), read from those curves: NaN
    # (null) where a member never got there, as a 6-step run does not.
    from grubench.targets import Target, time_to_target

    assert on_disk["target"] == "val/accuracy >= 0.99"
    steps_to, seconds_to = time_to_target(rows, Target("val/accuracy", 0.99), 2)
    assert all(math.isnan(x) for x in steps_to + seconds_to)
    assert on_disk["metrics"]["steps_to_target"] == [None, None]


def test_seeds_under_vmap_match_each_seed_alone(two_seeds, tmp_path):
    together, _ = two_seeds
    alone = loop.train(tiny_cfg("trainer.seeds=1", "seed=1"), tmp_path)
    assert alone["seeds"] == [1]
    for k, v in alone["metrics"].items():
        np.testing.assert_allclose(together["metrics"][k][1], v[0], rtol=2e-5, atol=1e-6, err_msg=k)
    # And the two seeds really differ: each has its own init and data order.
    assert together["metrics"]["test_loss"][0] != together["metrics"]["test_loss"][1]


def test_same_config_and_seed_give_identical_metrics(two_seeds, tmp_path):
    again = loop.train(tiny_cfg("trainer.seeds=2", "seed=0", "trainer.stream_repeats=5"), tmp_path)
    # Every metric but the wall-clock seconds to target (NaN here: not reached) is identical.
    timing = ("seconds_to_target",)
    np.testing.assert_equal(
        {k: v for k, v in again["metrics"].items() if k not in timing},
        {k: v for k, v in two_seeds[0]["metrics"].items() if k not in timing},
    )


def test_param_budget_sets_hidden_in_the_results(tmp_path, monkeypatch):
    points = []  # and the AFTER_STEP hooks (fault injection) run after each step, then "end"
    monkeypatch.setattr(loop, "AFTER_STEP", [points.append])
    res = loop.train(
        tiny_cfg(
            "model=lstm", "model.param_budget=2000", "trainer.steps=2", "trainer.stream_repeats=0"
        ),
        tmp_path,
    )
    assert points == ["start", "1", "2", "end"]
    assert res["hidden"] == res["config"]["model"]["hidden"] != 8
    assert abs(res["params"] - 2000) < 0.05 * 2000
    assert res["speed"]["stream_step_ms"] is None


def test_a_run_that_fails_part_way_records_what_it_measured(tmp_path, monkeypatch):
    """The set-up's fields (parameters, data size, memory) reach results.json of a run that
    fails after step 2, beside status failed and the error."""

    def fail(point):
        if point == "2":
            raise RuntimeError("injected")

    monkeypatch.setattr(loop, "AFTER_STEP", [fail])
    with pytest.raises(RuntimeError, match="injected"):
        loop.train(tiny_cfg("trainer.steps=4", "task.train_size=48"), tmp_path)
    res = json.loads((tmp_path / "results.json").read_text())
    assert (res["status"], res["error"]) == ("failed", "RuntimeError: injected")
    assert res["params"] > 0 and res["train_size"] == 48
    assert res["memory"]["train_step_bytes"] > 0 and res["metrics"] == {}


def test_a_failed_write_of_the_curves_still_writes_the_record(tmp_path):
    (tmp_path / "metrics.jsonl").mkdir()  # metrics.jsonl cannot be written
    with pytest.raises(OSError):
        loop.train(tiny_cfg(), tmp_path)
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["status"] == "failed" and res["error"].startswith("IsADirectoryError")


@pytest.mark.parametrize("point", ["start", "end"])
def test_a_signal_at_either_end_of_training_leaves_a_record(tmp_path, monkeypatch, point):
    """SIGTERM while setting up (compiling: the handler runs once XLA returns) ends the run
    before its first step with a record saying so; after the last step, the run finishes its
    evaluation (seconds) and completes."""
    import os
    import signal

    from grubench.process import Preempted

    def term(at):
        if at == point:
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(loop, "AFTER_STEP", [term])
    if point == "start":
        with pytest.raises(Preempted):
            loop.train(tiny_cfg(), tmp_path)
        res = json.loads((tmp_path / "results.json").read_text())
        assert res["status"] == "failed"
        assert res["error"] == (
            "Preempted: preempted by SIGTERM at step 0: run the same command to resume"
        )
    else:
        assert loop.train(tiny_cfg(), tmp_path)["status"] == "completed"
        assert json.loads((tmp_path / "results.json").read_text())["status"] == "completed"


def test_ctrl_c_checkpoints_the_step_and_the_same_command_resumes_there(tmp_path, monkeypatch):
    import os
    import signal

    from grubench.process import Preempted

    def interrupt(point):
        if point == "2":
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(loop, "AFTER_STEP", [interrupt])
    with pytest.raises(Preempted) as e:
        loop.train(tiny_cfg(), tmp_path)
    assert e.value.signal_name == "SIGINT"
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["error"] == (
        "Preempted: interrupted (Ctrl-C) at step 2: run the same command to resume"
    )
    monkeypatch.setattr(loop, "AFTER_STEP", [])
    assert loop.train(tiny_cfg(), tmp_path)["resumed_from_step"] == 2


def test_a_model_too_large_for_memory_is_refused_before_anything_is_made(tmp_path):
    with pytest.raises(ConfigError, match="this model is too large to train: about"):
        loop.train(tiny_cfg("model.hidden=100000000"), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_what_a_run_recorded_survives_a_resume_and_a_failed_relaunch(tmp_path, monkeypatch):
    """The gradient profile at step 0 comes back from the checkpoint on resume; a relaunch
    that fails before training (every checkpoint damaged) leaves metrics.jsonl and
    results.json as they were."""
    import shutil

    args = ("trainer.grad_probe=true", "trainer.checkpoint_every=3")

    def fail(point):
        if point == "4":
            raise RuntimeError("injected")

    monkeypatch.setattr(loop, "AFTER_STEP", [fail])
    with pytest.raises(RuntimeError):
        loop.train(tiny_cfg(*args), tmp_path / "run")
    monkeypatch.setattr(loop, "AFTER_STEP", [])
    first = json.loads((tmp_path / "run/results.json").read_text())["grad_norms_init"]
    curves = (tmp_path / "run/metrics.jsonl").read_text()
    assert curves  # rows up to step 3 (logged every 3 steps)

    damaged = shutil.copytree(tmp_path / "run", tmp_path / "damaged")
    for f in (damaged / "checkpoints").rglob("*"):
        if f.is_file() and f.name != "grubench.sha256":
            f.write_bytes(b"damaged")
    record = (damaged / "results.json").read_bytes()
    with pytest.raises(CheckpointError, match="no intact checkpoint"):
        loop.train(tiny_cfg(*args), damaged)
    assert (damaged / "metrics.jsonl").read_text() == curves
    assert (damaged / "results.json").read_bytes() == record  # a refusal: no record of its own

    res = loop.train(tiny_cfg(*args), tmp_path / "run")
    assert res["resumed_from_step"] == 3 and res["grad_norms_init"] == first


def test_training_lowers_the_loss(tmp_path):
    """Adding problem: 60 steps move the test MSE from the untrained model's well below it."""
    cfg = tiny_cfg(
        "task=adding",
        "task.seq_len=6",
        "trainer.steps=60",
        "trainer.lr=1e-2",
        "trainer.eval_every=60",
        "trainer.log_every=60",
    )
    prog = build(cfg)
    state = jax.vmap(prog.init)(jnp.arange(1))
    from grubench import tasks

    ev = Evaluator(prog, 32)
    before = ev(state["params"], tasks.make_splits(cfg.task).test)["loss"][0]
    res = loop.train(cfg, tmp_path)
    assert res["metrics"]["test_loss"][0] < 0.5 * before


@pytest.mark.parametrize("batch,n", [(8, 20), (8, 16), (32, 12)])
def test_batches_visit_every_example_once_per_epoch(batch, n):
    order = DataOrder([0, 5], n, batch)
    steps = 2 * np.lcm(batch, n) // batch  # a whole number of epochs
    idx = np.concatenate([order.indices(s) for s in range(steps)], axis=1)
    for seed_rows in idx:
        epochs = seed_rows.reshape(-1, n)
        for e in epochs:
            np.testing.assert_array_equal(np.sort(e), np.arange(n))
        assert not np.array_equal(epochs[0], epochs[1])  # reshuffled each epoch
    assert not np.array_equal(idx[0], idx[1])  # each seed its own order
    # The rows of a step depend only on (seed, step), not on what was asked before.
    np.testing.assert_array_equal(
        DataOrder([5], n, batch).indices(steps - 1)[0], order.indices(steps - 1)[1]
    )


def test_seeds_initialised_one_by_one_equal_vmapped_init():
    """init_members sidesteps an XLA CPU deadlock in batched QR; it must change nothing."""
    prog = build(tiny_cfg("model.depth=2"))
    got = prog.init_members([3, 7])
    want = jax.vmap(prog.init)(jnp.asarray([3, 7], jnp.int32))

    def data(a):
        return jax.random.key_data(a) if jnp.issubdtype(a.dtype, jax.dtypes.prng_key) else a

    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_array_equal(data(g), data(w))


def test_non_finite_loss_marks_only_that_seed_diverged():
    cfg = tiny_cfg("trainer.seeds=2")
    prog = build(cfg)
    state = prog.init_members([0, 1])
    # Poison seed 1's head so its loss is NaN; seed 0 must train on untouched.
    state["params"]["head"]["kernel"][...] = (
        state["params"]["head"]["kernel"][...].at[1].set(jnp.nan)
    )
    from grubench import tasks

    data = tasks.make_splits(cfg.task).train.arrays()
    step = jax.jit(jax.vmap(prog.train_step, in_axes=(0, None, 0, None)))
    before = jax.tree.map(lambda a: np.array(a), state["params"])
    idx = DataOrder([0, 1], len(data["x"]), 8)
    state, out = step(state, jnp.int32(4), idx.indices(4), data)
    state, _ = step(state, jnp.int32(5), idx.indices(5), data)  # warm-up's first lr is 0
    assert np.isfinite(out["loss"][0]) and not np.isfinite(out["loss"][1])
    np.testing.assert_array_equal(state["diverged"], [False, True])
    np.testing.assert_array_equal(state["diverged_step"], [-1, 4])
    wi_before = before["rnn"]["layers"][0]["cell"]["wi"][...]
    wi_after = np.asarray(state["params"]["rnn"]["layers"][0]["cell"]["wi"][...])
    assert not np.array_equal(wi_after[0], wi_before[0])  # seed 0 stepped
    np.testing.assert_array_equal(wi_after[1], wi_before[1])  # seed 1 frozen


def test_a_diverging_run_says_which_seeds_and_when(tmp_path):
    """An absurd learning rate sends the loss to inf; the run ends 'diverged', not failed."""
    res = loop.train(
        tiny_cfg(
            "task=adding",
            "task.seq_len=6",
            "trainer.seeds=2",
            "trainer.lr=1e30",
            "trainer.clip_norm=0",
        ),
        tmp_path,
    )
    assert res["status"] == "diverged"
    assert set(res["diverged"]) == {"0", "1"} and all(1 <= s <= 6 for s in res["diverged"].values())
    assert "seed 0 at step" in res["error"]
    on_disk = json.loads((tmp_path / "results.json").read_text())
    assert on_disk["status"] == "diverged" and on_disk["metrics"]["test_loss"] == [None, None]


def test_early_stopping_keeps_the_best_validation_parameters(tmp_path):
    """lr so small nothing improves after the first evaluation: with patience 2 the run stops
    two evaluations later and is scored with the parameters of the first one."""
    res = loop.train(
        tiny_cfg(
            "trainer.lr=1e-12",
            "trainer.patience=2",
            "trainer.eval_every=2",
            "trainer.steps=40",
            "trainer.seeds=2",
        ),
        tmp_path,
    )
    m = res["metrics"]
    assert res["stopped_early_at"] == 6  # evaluations at 2 (best), 4 and 6 (no better)
    assert m["best_step"] == [2.0, 2.0]
    np.testing.assert_allclose(m["val_loss"], m["best_val_loss"], rtol=1e-6)


def test_rmsprop_trains(tmp_path):
    res = loop.train(tiny_cfg("trainer.optimizer=rmsprop", "trainer.lr=1e-2"), tmp_path)
    assert res["status"] == "completed"
    assert res["config"]["trainer"]["optimizer"] == "rmsprop"


def test_gradient_probe_records_dL_dh_t_at_start_and_end(tmp_path):
    res = loop.train(
        tiny_cfg("task=adding", "task.seq_len=6", "trainer.grad_probe=true", "trainer.seeds=2"),
        tmp_path,
    )
    init, end = res["grad_norms_init"], res["grad_norms"]
    assert init["t"] == end["t"] == list(range(6)) and end["step"] == 6
    norms = np.asarray(end["norm"])
    assert norms.shape == (2, 6) and np.isfinite(norms).all() and (norms > 0).all()
    assert not np.allclose(norms, np.asarray(init["norm"]))  # training changed the profile
    on_disk = json.loads((tmp_path / "results.json").read_text())
    np.testing.assert_allclose(on_disk["grad_norms"]["norm"], norms, rtol=1e-6)
    for when, profile in (("init", init), ("end", end)):  # log10(|dL/dh_1| / |dL/dh_T|)
        n = np.asarray(profile["norm"])
        expected = np.log10(n[:, 0] / n[:, -1])
        np.testing.assert_allclose(res["metrics"][f"grad_retained_{when}"], expected, rtol=1e-6)


def test_recall_accuracy_is_recorded_per_lag(tmp_path):
    res = loop.train(
        tiny_cfg(
            "task=recall", "task.seq_len=8", "task.n_keys=4", "task.n_values=4", "trainer.seeds=2"
        ),
        tmp_path,
    )
    rec = res["recall"]
    assert rec["lags"] == [2, 4, 6] and np.asarray(rec["accuracy"]).shape == (2, 3)
    # Weighted by how many test examples each lag has, the per-lag accuracies are the accuracy.
    from grubench import tasks

    counts = np.bincount(
        tasks.make_splits(
            tiny_cfg("task=recall", "task.seq_len=8", "task.n_keys=4", "task.n_values=4").task
        ).test.lag,
        minlength=3,
    )
    overall = np.asarray(rec["accuracy"]) @ counts / counts.sum()
    np.testing.assert_allclose(overall, res["metrics"]["test_accuracy"], rtol=1e-5)


@pytest.mark.slow
def test_train_step_memory_is_positive_with_remat_at_a_long_length(tmp_path):
    """XLA drops arguments a program does not read: the step's memory is counted from the
    state and rows it holds, never by subtracting the training set (which went negative)."""
    cfg = tiny_cfg(
        "task=copy", "task.seq_len=2048", "model.remat=true", "trainer.steps=2", "trainer.seeds=1"
    )
    res = loop.train(cfg, tmp_path)
    assert res["memory"]["train_step_bytes"] > res["memory"]["param_bytes"] > 0
