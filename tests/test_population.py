"""Populations: seeds x a grid of hyperparameters trained as one program, each member equal to
the same (seed, values) trained alone; results per member; the report's model selection
inside one run; the member axis sharded over several (CPU) devices."""

import json

import numpy as np
import pytest

from grubench import report, tasks
from grubench.config import validate
from grubench.errors import ConfigError
from grubench.loop import train
from grubench.program import member_bytes
from grubench.runs import grid_points, read_runs
from helpers import TINY, fault_env, tiny_cfg, train_cli

GRID = [
    "trainer.grid.lr=[0.01,0.003]",
    "trainer.grid.dropout=[0.0,0.3]",
    "trainer.seeds=2",
    "seed=5",
]
# (lr, dropout) of each grid point, in the members' order; seeds 5 and 6 innermost.
POINTS = [(0.01, 0.0), (0.01, 0.3), (0.003, 0.0), (0.003, 0.3)]


@pytest.fixture(scope="module")
def pop(tmp_path_factory):
    out = tmp_path_factory.mktemp("pop")
    return out, train(tiny_cfg(*GRID), out)


def curves(out):
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if "val/loss" in r]


def test_members_are_every_grid_point_times_every_seed(pop):
    _, res = pop
    got = [(m["seed"], m["values"]) for m in res["members"]]
    want = [(s, {"trainer.lr": lr, "model.dropout": d}) for lr, d in POINTS for s in (5, 6)]
    assert got == want
    assert res["seeds"] == [s for s, _ in want]
    assert all(m["status"] == "completed" for m in res["members"])
    for i, m in enumerate(res["members"]):
        assert m["metrics"] == {k: v[i] for k, v in res["metrics"].items()}
    # Different learning rates train differently: the values reach the program.
    val = [m["metrics"]["val_loss"] for m in res["members"]]
    assert len(set(val)) == len(val)


# Member 2: seed 5, lr 0.01 and dropout 0 beside members with dropout (masks that keep all);
# member 7: seed 6, lr 0.003, dropout 0.3.
@pytest.mark.parametrize("i", [2, 7])
def test_a_member_equals_its_seed_and_values_trained_alone(pop, i, tmp_path):
    out, res = pop
    m = res["members"][i]
    lr, d = m["values"]["trainer.lr"], m["values"]["model.dropout"]
    alone = train(tiny_cfg(f"seed={m['seed']}", f"trainer.lr={lr}", f"model.dropout={d}"), tmp_path)
    for k, v in alone["metrics"].items():
        np.testing.assert_allclose(m["metrics"][k], v[0], rtol=2e-5, atol=1e-5, err_msg=k)
    for mine, theirs in zip(curves(out), curves(tmp_path), strict=True):
        np.testing.assert_allclose(mine["val/loss"][i], theirs["val/loss"][0], rtol=2e-5)


def test_early_stopping_a_member_keeps_what_it_would_alone(tmp_path):
    """With patience, a member that has stopped keeps its best parameters while the others
    train on, so its final metrics are those of the same (seed, lr) stopped alone."""
    early = ["trainer.patience=2", "trainer.eval_every=1", "trainer.steps=12"]
    together = train(tiny_cfg(*early, "trainer.grid.lr=[0.3,0.001]"), tmp_path / "pop")
    for m in together["members"]:
        lr = m["values"]["trainer.lr"]
        alone = train(tiny_cfg(*early, f"trainer.lr={lr}"), tmp_path / str(lr))
        for k, v in alone["metrics"].items():
            np.testing.assert_allclose(m["metrics"][k], v[0], rtol=2e-5, atol=1e-5, err_msg=k)


def test_report_reads_each_grid_point_as_a_run(pop):
    out, res = pop
    runs = read_runs([out])
    assert len(runs) == 4
    for run, (lr, d) in zip(runs, POINTS, strict=True):
        assert run["config"]["trainer"]["lr"] == lr
        assert run["config"]["model"]["dropout"] == d
        assert "grid" not in run["config"]["trainer"]
        assert run["seeds"] == [5, 6]
        assert len(run["metrics"]["test_loss"]) == 2


def test_select_inside_one_run_picks_the_best_validation_value(pop, capsys):
    out, res = pop
    by_lr: dict[float, list[float]] = {}
    for m in res["members"]:
        if m["values"]["model.dropout"] == 0.0:
            by_lr.setdefault(m["values"]["trainer.lr"], []).append(m["metrics"]["best_val_loss"])
    best = min(by_lr, key=lambda lr: np.mean(by_lr[lr]))
    args = [str(out), "--rows", "model.dropout", "--select", "trainer.lr"]
    assert report.main(args) == 0
    assert f"model.dropout=0, model=gru: {best:g};" in capsys.readouterr().out
    # The chosen value's seeds are scored on test.
    chosen = [
        m["metrics"]["test_loss"]
        for m in res["members"]
        if m["values"] == {"trainer.lr": best, "model.dropout": 0.0}
    ]
    assert report.main([*args, "--format", "csv"]) == 0
    row = capsys.readouterr().out.splitlines()[1].split(",")
    assert row[0] == "0" and float(row[1]) == pytest.approx(np.mean(chosen), rel=1e-12)


def test_old_results_without_members_are_read_as_they_were(tmp_path):
    old = {
        "schema": 1,
        "status": "completed",
        "config": {"model": {"name": "gru"}, "trainer": {"lr": 0.01}},
        "model": "gru",
        "task": "copy",
        "seeds": [0, 1],
        "metrics": {"test_loss": [1.0, 2.0]},
    }
    (tmp_path / "results.json").write_text(json.dumps(old))
    (run,) = read_runs([tmp_path])
    assert run["metrics"] == old["metrics"] and run["seeds"] == [0, 1]
    assert grid_points(run) == [run]


def test_a_divergent_member_is_named_and_the_others_complete(tmp_path):
    res = train(tiny_cfg("trainer.grid.lr=[0.01,1e30]", "trainer.warmup_steps=0"), tmp_path)
    good, bad = res["members"]
    assert good["status"] == "completed" and bad["status"] == "diverged"
    assert res["status"] == "diverged"
    assert "seed 0, trainer.lr=1e+30 at step" in res["error"]
    assert np.isfinite(good["metrics"]["test_loss"]) and np.isnan(bad["metrics"]["test_loss"])
    point = grid_points({**res, "path": str(tmp_path)})[1]
    assert point["status"] == "diverged" and list(point["diverged"]) == ["0"]


@pytest.mark.parametrize(
    "override,fragment",
    [
        ("trainer.grid.lr=[]", "trainer.grid.lr=[] is not allowed: an empty grid"),
        ("trainer.grid.lr=[0.1,abc]", "every value must be a number"),
        ("trainer.grid.dropout=[0.5,1.0]", "1.0 is not a float in [0, 1)"),
        ("trainer.grid.lr=[0.1,0.1]", "a value is repeated"),
        ("trainer.shard=rows", "trainer.shard=rows is not allowed: one of members, batch"),
    ],
)
def test_bad_grids_are_config_errors(override, fragment):
    with pytest.raises(ConfigError) as e:
        validate(tiny_cfg(override))
    assert fragment in str(e.value)


def test_the_memory_estimate_errs_high(pop):
    """The size check must not let through what XLA then needs more for: its estimate of a
    member is above XLA's own accounting of the compiled step."""
    out, res = pop
    length = int(tasks.make_splits(tiny_cfg(*GRID).task).train.x.shape[1])
    estimate = member_bytes(tiny_cfg(*GRID), length)
    assert estimate > res["memory"]["train_step_bytes_per_member"] > 0


def test_a_population_too_large_for_memory_is_refused_before_compiling(tmp_path):
    # 4096 members of a 4096-unit GRU: terabytes, on any machine that runs this suite.
    p = train_cli(
        "model.hidden=4096",
        "trainer.seeds=4096",
        "trainer.progress=false",
        f"hydra.run.dir={tmp_path}",
    )
    assert p.returncode == 2, p.stderr[-2000:]
    assert "Traceback" not in p.stderr
    (line,) = p.stderr.strip().splitlines()
    assert (
        "population of 4096 members (trainer.seeds x the grid) is too large" in line
        and "GiB" in line
    )
    assert not (tmp_path / "results.json").exists()


def devices(n, fault=None):
    """The environment of a child process with `n` CPU devices (this process's flags name its
    own count, which a child would inherit)."""
    env = fault_env(fault)
    flags = [f for f in env.get("XLA_FLAGS", "").split() if "device_count" not in f]
    return env | {"XLA_FLAGS": " ".join([*flags, f"--xla_force_host_platform_device_count={n}"])}


# Five members: on four devices, two to a device on three of them, the sixth slot padding.
SHARDED = [*TINY, "trainer.grid.lr=[0.01,0.003,0.001,0.3,0.03]", "seed=5"]


@pytest.fixture(scope="module")
def one_device(tmp_path_factory):
    out = tmp_path_factory.mktemp("one")
    p = train_cli(*SHARDED, f"hydra.run.dir={out}", env=devices(1))
    assert p.returncode == 0, p.stderr[-2000:]
    return json.loads((out / "results.json").read_text())


def assert_same_members(a, b):
    assert len(a["members"]) == len(b["members"])
    for x, y in zip(a["members"], b["members"], strict=True):
        assert (x["seed"], x["values"]) == (y["seed"], y["values"])
        for k, v in x["metrics"].items():
            if k == "seconds_to_target":  # wall-clock
                continue
            got = np.nan if y["metrics"][k] is None else y["metrics"][k]  # null: not finite
            want = np.nan if v is None else v
            np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-5, err_msg=k)


def test_members_sharded_over_four_devices_equal_one_device(one_device, tmp_path):
    """Five members on four CPU devices, two to a device on three of them (one padding
    member, never reported): the same numbers as on one device."""
    p = train_cli(*SHARDED, f"hydra.run.dir={tmp_path}", env=devices(4))
    assert p.returncode == 0, p.stderr[-2000:]
    four = json.loads((tmp_path / "results.json").read_text())
    assert four["speed"]["devices"] == 3 and one_device["speed"]["devices"] == 1
    assert len(four["metrics"]["test_loss"]) == len(four["members"]) == 5
    assert_same_members(one_device, four)


@pytest.mark.slow
def test_a_sharded_run_killed_resumes_on_one_device(one_device, tmp_path):
    """The checkpoint holds the members alone: a run killed on several devices resumes on one
    and ends where a one-device run does."""
    args = [*SHARDED, "trainer.checkpoint_every=3", f"hydra.run.dir={tmp_path}"]
    p = train_cli(*args, env=devices(4, "kill@4"))
    assert p.returncode == -9, p.stderr[-2000:]
    p = train_cli(*args, env=devices(1))
    assert p.returncode == 0, p.stderr[-2000:]
    resumed = json.loads((tmp_path / "results.json").read_text())
    assert resumed["resumed_from_step"] == 3 and resumed["speed"]["devices"] == 1
    assert_same_members(one_device, resumed)


@pytest.mark.slow
def test_data_parallel_batch_over_four_devices_equals_one_device(tmp_path):
    """trainer.shard=batch: one member, its batch of 8 split over four devices; the gradient
    is summed across them, so the numbers are one device's up to summation order."""
    args = [*TINY, "trainer.shard=batch", "seed=3"]
    got = {}
    for n in (1, 4):
        p = train_cli(*args, f"hydra.run.dir={tmp_path / str(n)}", env=devices(n))
        assert p.returncode == 0, p.stderr[-2000:]
        got[n] = json.loads((tmp_path / str(n) / "results.json").read_text())
        assert got[n]["speed"]["devices"] == n
    assert_same_members(got[1], got[4])


def test_shard_batch_needs_a_batch_divisible_by_the_devices(tmp_path):
    args = [*TINY, "trainer.shard=batch", "trainer.batch_size=6", f"hydra.run.dir={tmp_path}"]
    p = train_cli(*args, env=devices(4))
    assert p.returncode == 2, p.stderr[-2000:]
    (line,) = p.stderr.strip().splitlines()
    assert "trainer.batch_size=6 is not allowed with trainer.shard=batch" in line
    assert not (tmp_path / "results.json").exists()
