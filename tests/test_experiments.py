"""Every sweep preset in grubench/conf/experiment/ at tiny size, through the command line.

Each preset is run with its swept keys pinned to tiny values (a command-line value replaces the
preset's list) and with tiny shapes and step counts; the full sizes are in the README. Each test
checks the measurement its preset exists for. chung2014 on Bach chorales (the data extra) is
composed in-process, not trained; on a small polyphonic file of the published format it runs.
"""

import csv
import io
import json
import math
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from grubench.cli import CONF_DIR, check_overrides, compose
from grubench.model import count_params, with_budget
from grubench.report import main as report_main
from grubench.tasks.data import available

SMALL = [
    "model.hidden=8",
    "trainer.steps=4",
    "trainer.batch_size=8",
    "trainer.eval_every=2",
    "trainer.log_every=2",
    "trainer.eval_batch_size=16",
    "trainer.warmup_steps=1",
    "trainer.timing_warmup=1",
    "trainer.stream_repeats=5",
    "trainer.progress=false",
]
SYNTHETIC = ["task.train_size=32", "task.val_size=16", "task.test_size=16"]


def sweep(name: str, tmp_path: Path, *overrides: str) -> list[dict]:
    out = tmp_path / name
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "grubench.train",
            "-m",
            f"+experiment={name}",
            *SMALL,
            *overrides,
            f"hydra.sweep.dir={out}",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=600,
    )
    assert p.returncode == 0, p.stderr[-2000:]
    assert (out / "summary.md").exists()
    jobs = sorted(out.glob("*/results.json"), key=lambda r: int(r.parent.name.split("_")[0]))
    return [json.loads(r.read_text()) for r in jobs]


def test_every_preset_is_tested_here():
    presets = {p.stem for p in (CONF_DIR / "experiment").glob("*.yaml")}
    tested = {n[len("test_") :] for n in globals() if n.startswith("test_")} & presets
    assert presets == tested


@pytest.mark.parametrize("name", sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml")))
def test_every_job_of_a_preset_at_full_size_is_valid(name):
    """The checks grubench-train makes before it starts, on each job of the preset's sweep as
    shipped (e.g. a batch no larger than the smallest training set swept)."""
    check_overrides(["-m", f"+experiment={name}"])


@pytest.mark.slow
def test_copy(tmp_path):
    runs = sweep("copy", tmp_path, *SYNTHETIC, "task.seq_len=3", "task.n_copy=2")
    assert [r["model"] for r in runs] == ["gru", "lstm"]  # the preset's sweep
    for r in runs:
        assert r["task"] == "copy" and r["seq_len"] == 3 and r["status"] == "completed"
        assert r["config"]["model"]["embed_dim"] == 0
        # every cell tuned over the same learning rates, as one population
        assert r["config"]["trainer"]["grid"]["lr"] == [3e-4, 1e-3, 3e-3, 1e-2]
        assert [m["values"]["trainer.lr"] for m in r["members"]] == [3e-4, 1e-3, 3e-3, 1e-2]
        # the memoryless baseline the losses are read against: K ln S / (T + 2K)
        assert r["baselines"]["loss"] == pytest.approx(2 * math.log(8) / (3 + 2 * 2))
    # The sweep's report.md scores each cell's rate chosen on validation, never a mean over
    # the rates; summary.md has a row per grid point, naming it.
    report = (tmp_path / "copy" / "report.md").read_text()
    assert "selected: in each cell the trainer.lr with the lowest mean best_val_loss" in report
    assert "(n=1)" in report  # one seed of the chosen rate, not four rates pooled
    assert "trainer.lr=0.0003" in (tmp_path / "copy" / "summary.md").read_text()


def test_chung2014():
    """Parameter-matched cells (100, 46, 36 units), RMSProp, early stopping, 3 seeds."""
    params = {}
    for model, hidden in (("rnn", 100), ("gru", 46), ("lstm", 36)):
        cfg = compose("+experiment=chung2014", f"+chung2014={model}")
        assert (cfg.model.name, cfg.model.hidden, cfg.model.embed_dim) == (model, hidden, 0)
        assert cfg.task.name == "chorales"
        tr = cfg.trainer
        assert (tr.optimizer, tr.clip_norm, tr.seeds, tr.patience) == ("rmsprop", 1.0, 3, 5)
        assert list(tr.grid.lr) == [3e-4, 1e-3, 3e-3]  # chosen on validation per cell
        params[model] = count_params(cfg)
    # equal sizes within the few units' granularity of each cell (~20k; the RNN's head is
    # wider with 100 units)
    assert max(params.values()) < 1.4 * min(params.values())
    assert params["gru"] > params["lstm"] > 20_000


def test_bai2018():
    """Table 1's tasks and model sizes: adding at T = 600 (~70k parameters), copy at T = 1000
    (~16k), each cell sized to its budget."""
    for task, seq_len, budget in (("adding", 600, 70_000), ("copy", 1000, 16_000)):
        for model in ("gru", "lstm"):
            cfg = compose("+experiment=bai2018", f"+bai2018={task}", f"model={model}")
            assert (cfg.task.name, cfg.task.seq_len, cfg.model.name) == (task, seq_len, model)
            assert abs(count_params(with_budget(cfg)) - budget) < 0.05 * budget


@pytest.mark.slow
def test_jozefowicz2015(tmp_path, capsys):
    runs = sweep("jozefowicz2015", tmp_path, *SYNTHETIC, "task=adding", "task.seq_len=4")
    cells = [(r["model"], r["config"]["model"].get("forget_bias")) for r in runs]
    assert cells == [("gru", None), ("lstm", 0.0), ("lstm", 1.0)]
    argv = [str(tmp_path / "jozefowicz2015"), "--rows", "task", "--cols", "model,model.forget_bias"]
    assert report_main([*argv, "--budget"]) == 0
    out = capsys.readouterr().out
    assert "model=lstm, model.forget_bias=0" in out and "model=lstm, model.forget_bias=1" in out
    assert "budget: every cell the same — 4 values of trainer.lr (0.0003 … 0.01) × 5 seeds" in out


@pytest.mark.slow
def test_chung2014_on_a_polyphonic_file_beside_the_paper(tmp_path, capsys):
    """The preset on the user's file of the Boulanger-Lewandowski format (task=polyphonic):
    three cells, and the report puts Chung et al.'s JSB numbers beside each."""
    rng = np.random.default_rng(0)

    def songs(n):
        return [
            [tuple(int(p) for p in rng.choice(range(48, 80), 3, replace=False)) for _ in range(9)]
            for _ in range(n)
        ]

    music = {"train": songs(12), "valid": songs(4), "test": songs(4)}
    (tmp_path / "JSB Chorales.pickle").write_bytes(pickle.dumps(music, protocol=2))
    runs = sweep("chung2014", tmp_path, "task=polyphonic", "task.path=JSB Chorales.pickle")
    assert [r["model"] for r in runs] == ["rnn", "gru", "lstm"]
    assert {r["config"]["task"]["dataset"] for r in runs} == {"jsb"}
    argv = [str(tmp_path / "chung2014"), "--rows", "task.dataset", "--cols", "model"]
    argv += ["--metric", "test_loss", "--paper", "chung2014", "--select", "trainer.lr"]
    assert report_main([*argv, "--by", "best_val_loss"]) == 0
    table = capsys.readouterr().out
    assert "| jsb " in table and "8.54" in table and "8.67" in table and "9.1" in table


@pytest.mark.slow
def test_speed(tmp_path):
    (r,) = sweep(
        "speed",
        tmp_path,
        *SYNTHETIC,
        "model=mingru",
        "model.hidden=8",
        "task.seq_len=12",
        "task.lag=3",
        "trainer.steps=12",
        "trainer.timing_warmup=2",
    )
    sp = r["speed"]
    assert r["model"] == "mingru" and r["seq_len"] == 12 and sp["timed_steps"] == 10
    assert sp["step_time_ms"] > 0 and sp["stream_step_ms"] > 0 and sp["compile_s"] > 0
    np.testing.assert_allclose(sp["tokens_per_s"], 8 * 12 / (sp["step_time_ms"] / 1e3))
    assert r["memory"]["param_bytes"] == 4 * r["params"]


@pytest.mark.slow
def test_memory(tmp_path):
    plain, remat = sweep(
        "memory", tmp_path, *SYNTHETIC, "model=lstm", "task.seq_len=256", "trainer.steps=2"
    )
    assert (plain["config"]["model"]["remat"], remat["config"]["model"]["remat"]) == (False, True)
    assert remat["memory"]["train_step_bytes"] < plain["memory"]["train_step_bytes"] / 2
    # Rematerialising changes the memory, not the arithmetic.
    np.testing.assert_allclose(
        remat["metrics"]["test_loss"], plain["metrics"]["test_loss"], rtol=1e-5
    )


@pytest.mark.slow
def test_data_size(tmp_path):
    runs = sweep(
        "data_size",
        tmp_path,
        "task.val_size=16",
        "task.test_size=16",
        "model=gru",
        "task.seq_len=6",
        "task.n_keys=4",
        "task.train_size=10,1000",
        "trainer.seeds=2",
    )
    assert [r["train_size"] for r in runs] == [10, 1000]
    for r in runs:
        m = r["metrics"]
        np.testing.assert_allclose(m["gap"], np.subtract(m["val_loss"], m["train_loss"]))
        assert all(s in (2, 4) for s in m["best_step"])


@pytest.mark.slow
def test_seq_len(tmp_path):
    (r,) = sweep("seq_len", tmp_path, *SYNTHETIC, "model=rnn", "task.seq_len=10")
    assert len(r["grad_norms"]["norm"][0]) == len(r["grad_norms_init"]["norm"][1]) == 10
    assert r["recall"]["lags"] == [2, 4, 6, 8]
    assert all(lag in (0, 2, 4, 6, 8) for lag in r["metrics"]["solved_lag"])


@pytest.mark.slow
def test_recall(tmp_path):
    (r,) = sweep("recall", tmp_path, *SYNTHETIC, "model=lstm", "task.seq_len=8", "task.lag=3")
    assert r["recall"]["lags"] == [3] and r["config"]["task"]["n_symbols"] == 4
    m = r["metrics"]
    for acc, total, solved in zip(
        r["recall"]["accuracy"], m["test_accuracy"], m["solved_lag"], strict=True
    ):
        np.testing.assert_allclose(acc[0], total)  # one lag: its accuracy is the accuracy
        assert solved == (3 if acc[0] >= 0.99 else 0)


@pytest.mark.slow
def test_counting(tmp_path):
    (r,) = sweep(
        "counting",
        tmp_path,
        *SYNTHETIC,
        "model=lstm",
        "task.language=anbncn",
        "task.seq_len=3",
        "task.test_max_n=5",
    )
    assert r["recall"]["lags"] == [1, 2, 3, 4, 5]
    acc = np.array(r["recall"]["accuracy"], float)  # [seeds, n]: the test has only n = 4, 5
    assert np.isnan(acc[:, :3]).all() and not np.isnan(acc[:, 3:]).any()


@pytest.mark.slow
def test_depth(tmp_path):
    (r,) = sweep(
        "depth",
        tmp_path,
        *SYNTHETIC,
        "model=gru",
        "model.depth=2",
        "task.seq_len=6",
        "task.n_keys=4",
    )
    assert r["depth"] == 2 and r["params"] > 2 * 3 * 8 * 8  # two layers' recurrent kernels


@pytest.mark.slow
def test_lr_sensitivity(tmp_path, capsys):
    runs = sweep(
        "lr_sensitivity",
        tmp_path,
        *SYNTHETIC,
        "model=gru",
        "task.seq_len=6",
        "trainer.grid.lr=[1e30,1e-3]",
        "trainer.seeds=2",
    )
    (run,) = runs  # the rates and seeds of a cell are one population
    assert run["metrics"]["diverged"] == [1.0, 1.0, 0.0, 0.0]
    assert run["status"] == "diverged" and run["config"]["trainer"]["clip_norm"] == 0
    # The report's mean of `diverged` is the divergence rate; diverged seeds count in it.
    code = report_main(
        [
            str(tmp_path / "lr_sensitivity"),
            "--rows",
            "trainer.lr",
            "--cols",
            "model",
            "--metric",
            "diverged",
            "--format",
            "csv",
        ]
    )
    assert code in (None, 0)
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [(float(r["trainer.lr"]), float(r["gru mean"]), r["gru n"]) for r in rows] == [
        (1e-3, 0.0, "2"),
        (1e30, 1.0, "2"),
    ]


@pytest.mark.slow
@pytest.mark.skipif(not available("digits"), reason="needs the data extra (scikit-learn)")
def test_dropout(tmp_path):
    (r,) = sweep("dropout", tmp_path, "model=gru", "trainer.grid.dropout=[0.0,0.5]")
    assert r["train_size"] == 200
    by_point = {}
    for m in r["members"]:
        by_point.setdefault(m["values"]["model.dropout"], []).append(m["metrics"]["train_loss"])
    assert list(by_point) == [0.0, 0.5] and all(len(v) == 4 * 5 for v in by_point.values())
    # Dropout changes training, not evaluation: the members differ.
    assert by_point[0.0] != by_point[0.5]
