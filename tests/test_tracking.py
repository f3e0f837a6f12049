"""Tracking: metrics.jsonl, and offline W&B runs, one per member, read back from their .wandb
files: names, groups, config, history, summaries, artifacts, the sweep's report run."""

import base64
import hashlib
import json
import logging
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from grubench import population
from grubench.results import new_record, write_json
from grubench.tracking import (
    IDS_FILE,
    JsonlSink,
    RunContext,
    Tracker,
    member_summary,
    run_spec,
    summary_key,
    wandb_mode,
)
from helpers import tiny_cfg

OVERRIDES = (
    "model=gru",
    "task=copy",
    "model.depth=2",
    "trainer.steps=6",
    "trainer.grid.lr=[0.001,0.003]",
    "trainer.seeds=2",
    "seed=1",
    "logger=wandb",
    "logger.mode=offline",
    "trainer.progress=false",
    "hydra.job.chdir=false",
    "+experiment=speed",
)


def test_jsonl_sink_rewrites_whole_rows_atomically(tmp_path):
    sink = JsonlSink(tmp_path / "metrics.jsonl")
    sink.log({"step": 1, "train/loss": np.array([0.5, float("nan")])})
    sink.flush()
    sink.log({"step": 2, "val/loss": [0.25]})
    sink.flush()
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rows == [{"step": 1, "train/loss": [0.5, None]}, {"step": 2, "val/loss": [0.25]}]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.jsonl"]  # no temp files


def test_wandb_mode(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    assert wandb_mode("auto") == "offline"
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    assert wandb_mode("auto") == "online"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert wandb_mode("auto") == "disabled"
    assert wandb_mode("offline") == "offline"


def _config(cfg) -> dict:
    return OmegaConf.to_container(cfg, resolve=True)


def test_run_spec_names_every_swept_key_and_groups_by_config_without_seed():
    cfg = tiny_cfg("model.depth=2", "trainer.seeds=2", "seed=1", "trainer.grid.lr=[0.001,0.003]")
    context = RunContext("sweep-a", OVERRIDES)
    specs = [run_spec(cfg, _config(cfg), m, context) for m in population.members(cfg)]
    assert [s.name for s in specs] == [
        "gru-copy-T3-d2-steps6-lr0.001-s1",
        "gru-copy-T3-d2-steps6-lr0.001-s2",
        "gru-copy-T3-d2-steps6-lr0.003-s1",
        "gru-copy-T3-d2-steps6-lr0.003-s2",
    ]
    # Seeds share a group (W&B draws their mean and band); grid points are other configs.
    # The group ends in a hash of the config without the seed.
    groups = [s.group.rsplit("-", 1) for s in specs]
    assert [g for g, _ in groups] == ["sweep-a-gru-copy-T3-d2-steps6-lr0.001"] * 2 + [
        "sweep-a-gru-copy-T3-d2-steps6-lr0.003"
    ] * 2
    assert groups[0][1] == groups[1][1] != groups[2][1] == groups[3][1]
    assert all(len(h) == 8 for _, h in groups)
    # A seed trained alone has the config hash of its population's grid point; a key no name
    # carries (not swept here) still parts the groups, so W&B never bands different configs.
    alone = tiny_cfg("model.depth=2", "seed=2", "trainer.lr=0.003")
    lone = run_spec(alone, _config(alone), population.members(alone)[0], context)
    assert lone.group.rsplit("-", 1)[1] == groups[3][1]
    other = tiny_cfg("model.depth=2", "seed=2", "trainer.lr=0.003", "model.hidden=16")
    assert run_spec(other, _config(other), population.members(other)[0], context).group not in {
        s.group for s in specs
    }
    assert {s.job_type for s in specs} == {"gru"}
    # Process settings (trainer.progress, logger.*, hydra.*), the seed and the population's
    # size are not swept keys; trainer.steps is.
    assert specs[0].tags == [
        "copy",
        "gru",
        "model.depth=2",
        "trainer.steps=6",
        "trainer.lr=0.001",
        "speed",
    ]
    c = specs[3].config
    assert c["seed"] == 2 and c["trainer"]["lr"] == 0.003 and "grid" not in c["trainer"]
    assert c["model.depth"] == 2 and c["trainer.lr"] == 0.003 and c["model"]["depth"] == 2
    assert c["trainer"]["seeds"] == 2  # the population it belongs to

    names = []
    for depth in (1, 2):
        one = tiny_cfg(f"model.depth={depth}", "model.backward=autodiff")
        context = RunContext("s", (f"model.depth={depth}", "model.backward=autodiff"))
        names.append(run_spec(one, _config(one), population.members(one)[0], context).name)
    assert names == ["gru-copy-T3-d1-backward_autodiff-s0", "gru-copy-T3-d2-backward_autodiff-s0"]
    alone = run_spec(one, _config(one), population.members(one)[0], None)
    assert alone.name == "gru-copy-T3-s0"  # nothing swept
    assert alone.group.rsplit("-", 1)[0] == "gru-copy-T3"


def test_long_names_are_clipped_to_wandb_limit_keeping_grid_values_and_seed():
    specs = []
    for n in (64, 65):
        cfg = tiny_cfg(f"task.train_size={n}", "trainer.grid.lr=[0.001,0.003]")
        context = RunContext("x" * 200, (f"task.train_size={n}",) + ("trainer.warmup_steps=2",) * 9)
        specs += [run_spec(cfg, _config(cfg), m, context) for m in population.members(cfg)]
    assert all(len(s.group) <= 128 and len(s.name) <= 128 for s in specs)
    assert len({s.group for s in specs}) == 4 and len({s.name for s in specs}) == 4
    assert [s.name[-10:] for s in specs[:2]] == ["lr0.001-s0", "lr0.003-s0"]
    assert "-lr0.001-" in specs[0].group[-17:] and specs[0].group.startswith("xxx")


def test_member_summary_names_final_numbers_one_way():
    assert summary_key("test_loss") == "test/loss"
    assert summary_key("test_bpc") == "test/bpc"
    assert summary_key("val_loss") == "final/val_loss"
    assert summary_key("best_val_loss") == "final/best_val_loss"
    results = {
        "status": "completed",
        "params": 10,
        "members": [
            {"seed": 1, "values": {}, "status": "completed", "metrics": {"test_loss": 0.5}},
            {"seed": 2, "values": {}, "status": "diverged", "metrics": {"test_loss": None}},
        ],
        "speed": {"step_time_ms": 3.0},
    }
    assert member_summary(results, 0) == {
        "test/loss": 0.5,
        "status": "completed",
        "params": 10,
        "speed/step_time_ms": 3.0,
    }
    assert member_summary(results, 1)["status"] == "diverged"
    assert "test/loss" not in member_summary(results, 1)  # not finite: left out
    failed = {**results, "status": "failed", "error": "Preempted: SIGTERM"}
    assert member_summary(failed, 0)["status"] == "failed"
    assert member_summary(failed, 0)["error"] == "Preempted: SIGTERM"


# ---------------------------------------------------------------------------------------------
# Offline W&B runs, driven with fake rows (no JAX)


def _offline(mp: pytest.MonkeyPatch, home: Path) -> None:
    pytest.importorskip("wandb")
    mp.setenv("WANDB_MODE", "offline")
    mp.setenv("WANDB_SILENT", "true")
    mp.delenv("WANDB_DIR", raising=False)
    # W&B's staging, cache and settings: never the user's.
    for var in ("WANDB_DATA_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_ARTIFACT_DIR"):
        mp.setenv(var, str(home / var.lower()))


@pytest.fixture
def offline(monkeypatch, tmp_path):
    _offline(monkeypatch, tmp_path / "wandb-home")


STEPS = (3, 6)


def _rows(step: int, n: int) -> dict:
    """The rows the loop logs at a step that is both a log and an eval step: scalars and one
    entry per member, distinct per member and step; member 3's val/loss not finite at 6."""
    i = np.arange(n, dtype=float)
    val = 1 + i + 1 / step
    if step == 6:
        val[3] = np.nan
    return {
        "train/seconds": 0.25 * step,
        "train/loss_batch": 2 + i - step / 10,
        "train/grad_norm": (10 + i) * step,
        "train/steps_per_s": 40.0 + step,
        "val/loss": val,
        "val/accuracy": (i + step) / 20,
        "train/loss": 0.5 + i + 1 / step,
        "train/accuracy": (i + step) / 30,
    }


def _results(cfg, members) -> dict:
    res = new_record(cfg, _config(cfg), members, 2.0)
    metrics = {
        "test_loss": [0.7, 0.8, 0.9, None],
        "test_accuracy": [0.6, 0.5, 0.4, None],
        "val_loss": [0.65, 0.75, 0.85, None],
        "train_loss": [0.6, 0.7, 0.8, None],
        "best_val_loss": [0.6, 0.7, 0.8, 3.0],
    }
    res.update(status="completed", params=1234, metrics=metrics, wall_s=5.0)
    res["members"] = [
        {
            "seed": m.seed,
            "values": m.values,
            "status": "diverged" if i == 3 else "completed",
            "metrics": {k: v[i] for k, v in metrics.items()},
        }
        for i, m in enumerate(members)
    ]
    res["speed"] = {"step_time_ms": 1.5, "device": "cpu"}
    res["memory"] = {"peak_bytes": 1000}
    return res


@pytest.fixture(scope="module")
def population_run(tmp_path_factory):
    """A 2-seed x 2-lr population tracked through Tracker with fake rows, its files (results,
    curves, Hydra's, two checkpoints) written before `finish`, as the loop does."""
    tmp = tmp_path_factory.mktemp("population")
    with pytest.MonkeyPatch.context() as mp:
        _offline(mp, tmp / "wandb-home")
        cfg = tiny_cfg(
            *(o for o in OVERRIDES if not o.startswith(("+", "hydra"))),
            "logger.log_checkpoints=true",
        )
        members = population.members(cfg)
        out = tmp / "sweep" / "0"
        out.mkdir(parents=True)
        root = tmp / "root"
        tracker = Tracker(
            out,
            cfg,
            _config(cfg),
            members=members,
            context=RunContext("sweep-a", OVERRIDES, root),
        )
        tracker.start()
        for step in STEPS:
            tracker.log(step, _rows(step, len(members)))
        tracker.flush()
        results = _results(cfg, members)
        write_json(out / "results.json", results)
        (out / ".hydra").mkdir()
        (out / ".hydra" / "overrides.yaml").write_text("- model.depth=2\n")
        (out / ".hydra" / "config.yaml").write_text("model:\n  depth: 2\n")
        for step in STEPS:  # orbax's layout: numbered step directories
            (out / "checkpoints" / str(step) / "state").mkdir(parents=True)
            (out / "checkpoints" / str(step) / "state" / "a.bin").write_bytes(bytes([step]) * 9)
        (out / "checkpoints" / "9.orbax-checkpoint-tmp-1").mkdir()  # unfinished: not logged
        tracker.finish(results)
        from wandb_records import by_name

        runs = by_name(root)
    return {"out": out, "root": root, "members": members, "results": results, "runs": runs}


def test_one_wandb_run_per_member_named_and_grouped_by_config(population_run):
    from wandb_records import config, exit_code, run_record

    runs, members = population_run["runs"], population_run["members"]
    assert sorted(runs) == [
        "gru-copy-T3-d2-steps6-lr0.001-s1",
        "gru-copy-T3-d2-steps6-lr0.001-s2",
        "gru-copy-T3-d2-steps6-lr0.003-s1",
        "gru-copy-T3-d2-steps6-lr0.003-s2",
    ]
    ids = json.loads((population_run["out"] / IDS_FILE).read_text())
    assert len(set(ids.values())) == 4
    for m in members:
        recs = runs[f"gru-copy-T3-d2-steps6-lr{m.values['trainer.lr']:g}-s{m.seed}"]
        run = run_record(recs)
        group = f"sweep-a-gru-copy-T3-d2-steps6-lr{m.values['trainer.lr']:g}"
        assert run.run_group.rsplit("-", 1)[0] == group
        assert run.job_type == "gru" and run.run_id == ids[m.label()]
        assert list(run.tags) == [
            "copy",
            "gru",
            "model.depth=2",
            "trainer.steps=6",
            f"trainer.lr={m.values['trainer.lr']:g}",
            "speed",
        ]
        c = config(recs)
        assert c["seed"] == m.seed and c["trainer"]["lr"] == m.values["trainer.lr"]
        assert c["model.depth"] == 2 and c["trainer.lr"] == m.values["trainer.lr"]
        assert "grid" not in c["trainer"] and c["model"]["hidden"] == 8
        assert exit_code(recs) == 0


def test_each_wandb_history_holds_its_members_own_values(population_run):
    from wandb_records import history

    for i, m in enumerate(population_run["members"]):
        recs = population_run["runs"][
            f"gru-copy-T3-d2-steps6-lr{m.values['trainer.lr']:g}-s{m.seed}"
        ]
        hist = history(recs)
        assert sorted(hist) == list(STEPS)
        for step in STEPS:
            got = hist[step]
            assert got["train/step"] == step
            for key, v in _rows(step, 4).items():
                want = v[i] if isinstance(v, np.ndarray) else v
                if math.isfinite(want):
                    assert got[key] == pytest.approx(want, rel=1e-12), (key, step, i)
                else:
                    assert key not in got  # the diverged member's loss: not plotted
        assert not any("seed" in k for row in hist.values() for k in row)  # no KEY_seedN


def test_wandb_runs_define_step_axes_and_best_value_summaries(population_run):
    from wandb_records import metrics

    for recs in population_run["runs"].values():
        defined = metrics(recs)
        assert "train/step" in defined and "train/seconds" in defined
        assert defined["*"].glob_name == "*" and defined["*"].step_metric == "train/step"
        for key in ("val/loss", "train/loss", "train/loss_batch"):
            assert defined[key].summary.min and defined[key].step_metric == "train/step"
        for key in ("val/accuracy", "train/accuracy"):
            assert defined[key].summary.max and not defined[key].summary.min


def test_wandb_summaries_hold_each_members_final_numbers(population_run):
    from wandb_records import summary

    results = population_run["results"]
    for i, m in enumerate(population_run["members"]):
        recs = population_run["runs"][
            f"gru-copy-T3-d2-steps6-lr{m.values['trainer.lr']:g}-s{m.seed}"
        ]
        s = summary(recs)
        own = results["members"][i]["metrics"]
        assert s["final/best_val_loss"] == own["best_val_loss"]
        assert s["status"] == results["members"][i]["status"]
        assert s["params"] == 1234 and s["speed/step_time_ms"] == 1.5
        assert s["memory/peak_bytes"] == 1000 and s["speed/device"] == "cpu"
        vals = [_rows(step, 4)["val/loss"][i] for step in STEPS]
        assert s["val/loss"] == {"min": pytest.approx(np.nanmin(vals))}
        accs = [_rows(step, 4)["val/accuracy"][i] for step in STEPS]
        assert s["val/accuracy"] == {"max": pytest.approx(max(accs))}
        if own["test_loss"] is None:  # the diverged member
            assert "test/loss" not in s and s["status"] == "diverged"
        else:
            assert s["test/loss"] == own["test_loss"]
            assert s["test/accuracy"] == own["test_accuracy"]
            assert s["final/val_loss"] == own["val_loss"]
            assert s["final/train_loss"] == own["train_loss"]


def _md5(path: Path) -> str:
    return base64.b64encode(hashlib.md5(path.read_bytes()).digest()).decode()


def test_wandb_runs_log_the_run_files_and_newest_checkpoint_as_artifacts(population_run):
    from wandb_records import artifacts, run_record, summary

    out = population_run["out"]
    ids = json.loads((out / IDS_FILE).read_text())
    first = ids[population_run["members"][0].label()]
    logged = {}
    for name, recs in population_run["runs"].items():
        logged[name] = artifacts(recs)
        # every member's summary names the artifacts the first member's run logged
        assert summary(recs)["artifacts"] == [f"run-files-{first}", f"model-{first}"]
    # Logged once, by the first member's run: a population's files are staged once.
    ((name, (files, model)),) = [(k, v) for k, v in logged.items() if v]
    assert run_record(population_run["runs"][name]).run_id == first
    assert (files.type, files.name) == ("run-files", f"run-files-{first}")
    assert (model.type, model.name) == ("model", f"model-{first}")
    assert set(model.aliases) == {"latest", "step-6"}
    want = {
        "results.json": out / "results.json",
        "metrics.jsonl": out / "metrics.jsonl",
        ".hydra/overrides.yaml": out / ".hydra" / "overrides.yaml",
        ".hydra/config.yaml": out / ".hydra" / "config.yaml",
    }
    got = {c.path: c for c in files.manifest.contents}
    assert set(got) == set(want)
    for name, c in got.items():
        assert c.digest == _md5(want[name])  # the file as written, staged for upload
        assert Path(c.local_path).read_bytes() == want[name].read_bytes()
    (ckpt,) = model.manifest.contents  # step 6's, not step 3's nor the unfinished one
    assert ckpt.path == "state/a.bin" and ckpt.digest == _md5(
        out / "checkpoints" / "6" / "state" / "a.bin"
    )


def _one(cfg_overrides=(), **kw):
    """A Tracker with logger=wandb for the population of `cfg_overrides`."""
    cfg = tiny_cfg("logger=wandb", "logger.mode=offline", *cfg_overrides)
    members = population.members(cfg)
    tracker = Tracker(kw.pop("out"), cfg, _config(cfg), members=members, **kw)
    tracker.start()
    return cfg, tracker


def test_wandb_root_is_logger_dir_else_env_else_the_sweeps_else_the_run_dir(
    offline, monkeypatch, tmp_path
):
    from wandb_records import run_files

    context = RunContext("s", (), tmp_path / "sweep")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "env"))
    (tmp_path / "a").mkdir()
    _, t = _one([f"logger.dir={tmp_path / 'logger'}"], out=tmp_path / "a", context=context)
    t.finish({"status": "completed"})
    _, t = _one(out=tmp_path / "a", context=context)
    t.finish({"status": "completed"})
    monkeypatch.delenv("WANDB_DIR")
    _, t = _one(out=tmp_path / "a", context=context)
    t.finish({"status": "completed"})
    _, t = _one(out=tmp_path / "a")
    t.finish({"status": "completed"})
    for where in ("logger", "env", "sweep", "a"):
        assert len(run_files(tmp_path / where)) == 1, where


def test_a_resumed_run_continues_its_wandb_runs_with_the_whole_history(offline, tmp_path):
    from wandb_records import history, run_files, run_record

    out, root = tmp_path / "run", tmp_path / "root"
    out.mkdir()
    cfg, t = _one(["trainer.seeds=2"], out=out, context=RunContext("s", (), root))
    for step in STEPS:
        t.log(step, {"val/loss": [step, step + 10]})
    rows = list(t.jsonl.rows)
    t.finish({"status": "failed", "error": "Preempted: SIGTERM"})
    ids = json.loads((out / IDS_FILE).read_text())

    (out / "checkpoints" / "6").mkdir(parents=True)  # the checkpoint the restart resumes
    _, t = _one(["trainer.seeds=2"], out=out, context=RunContext("s", (), root))
    t.jsonl.rows = list(rows)  # as the loop restores them from the checkpoint
    t.log(9, {"val/loss": [9, 19]})
    t.finish({"status": "completed"})
    assert json.loads((out / IDS_FILE).read_text()) == ids  # the same W&B runs

    files = run_files(root)
    assert len(files) == 4  # offline: a new directory per start, with the same id
    starts: dict[str, list] = {}
    for _, recs in files:
        starts.setdefault(run_record(recs).run_id, []).append(history(recs))
    assert set(starts) == set(ids.values()) and all(len(h) == 2 for h in starts.values())
    # The restart's file holds the whole history: whichever `wandb sync` keeps is complete.
    first, restart = sorted(starts[ids["seed 0"]], key=len)
    assert sorted(first) == [3, 6] and sorted(restart) == [3, 6, 9]
    assert [restart[s]["val/loss"] for s in (3, 6, 9)] == [3, 6, 9]
    first, restart = sorted(starts[ids["seed 1"]], key=len)
    assert [restart[s]["val/loss"] for s in (3, 6, 9)] == [13, 16, 19]

    shutil.rmtree(out / "checkpoints")  # nothing to resume: a new start, new W&B runs
    _, t = _one(["trainer.seeds=2"], out=out, context=RunContext("s", (), root))
    t.finish({"status": "completed"})
    assert set(json.loads((out / IDS_FILE).read_text()).values()).isdisjoint(ids.values())


def test_wandb_trouble_at_the_end_is_a_warning_and_failed_runs_exit_1(
    offline, monkeypatch, tmp_path, caplog
):
    import wandb

    from wandb_records import exit_code, run_files, summary

    out = tmp_path / "run"
    out.mkdir()
    write_json(out / "results.json", {"status": "completed"})
    _, t = _one(out=out, context=RunContext("s", (), tmp_path / "done"))
    t.log(3, {"val/loss": [1.0]})

    def broken(*a, **k):
        raise RuntimeError("artifact storage unavailable")

    with monkeypatch.context() as m, caplog.at_level(logging.WARNING, "grubench.tracking"):
        m.setattr(wandb, "Artifact", broken)
        t.finish({"status": "completed", "params": 7})
    assert "artifact storage unavailable" in caplog.text
    ((_, recs),) = run_files(tmp_path / "done")
    assert exit_code(recs) == 0
    # A failed run logs no files (it has no final results to log) and exits 1.
    _, t = _one(out=out, context=RunContext("s", (), tmp_path / "root"))
    t.log(3, {"val/loss": [1.0]})
    t.finish({"status": "failed", "error": "ValueError: boom", "params": 7})
    ((_, recs),) = run_files(tmp_path / "root")
    s = summary(recs)
    assert s["status"] == "failed" and s["error"] == "ValueError: boom" and s["params"] == 7
    assert exit_code(recs) == 1


def test_a_preempted_run_finishes_its_wandb_runs_marked_and_without_files(offline, tmp_path):
    from wandb_records import artifacts, exit_code, run_files

    out = tmp_path / "run"
    out.mkdir()
    write_json(out / "results.json", {"status": "failed"})
    _, t = _one(["logger.log_checkpoints=true"], out=out, context=RunContext("s", (), tmp_path))
    t.log(3, {"val/loss": [1.0]})
    t.finish({"status": "failed", "error": "Preempted: SIGTERM at step 3"}, preempted=True)
    ((_, recs),) = run_files(tmp_path)
    kinds = {r.WhichOneof("record_type") for r in recs}
    assert "preempting" in kinds and not artifacts(recs) and exit_code(recs) == 1


def test_only_the_primary_process_logs_to_wandb(offline, tmp_path):
    _, t = _one(out=tmp_path, context=RunContext("s", (), tmp_path / "root"), primary=False)
    t.log(3, {"val/loss": [1.0]})
    t.flush()
    t.finish({"status": "completed"})
    assert t.jsonl.rows and not (tmp_path / "root").exists() and not (tmp_path / IDS_FILE).exists()
    assert not (tmp_path / "metrics.jsonl").exists()


def test_report_run_holds_the_comparison_with_confidence_intervals(offline, tmp_path):
    from PIL import Image

    from grubench.inference import summarize
    from grubench.runs import read_runs
    from grubench.tracking import log_sweep
    from wandb_records import by_name, history, run_record

    sweep = tmp_path / "sweep"
    cfg = tiny_cfg("trainer.seeds=2", "trainer.grid.lr=[0.001,0.003]")
    members = population.members(cfg)
    (sweep / "0").mkdir(parents=True)
    write_json(sweep / "0" / "results.json", _results(cfg, members))
    Image.new("RGB", (4, 4)).save(sweep / "learning_curves_copy.png")
    logger = tiny_cfg("logger=wandb", "logger.mode=offline", "logger.group=sweep-y").logger
    runs = read_runs([sweep])
    assert len(runs) == 2  # one per grid point
    log_sweep(logger, "sweep-y", sweep, runs, [sweep / "learning_curves_copy.png"])

    recs = by_name(sweep)["sweep-y-report"]
    run = run_record(recs)
    assert run.run_group == "sweep-y" and run.job_type == "report"
    (row,) = history(recs).values()
    assert row["comparison/_type"] == "table-file" and row["comparison/nrows"] == 2
    assert row["plots/learning_curves_copy/_type"] == "image-file"
    table_file = next(sweep.glob("wandb/offline-run-*/files")) / row["comparison/path"]
    table = json.loads(table_file.read_text())
    got = [dict(zip(table["columns"], r, strict=True)) for r in table["data"]]
    assert [g["trainer.lr"] for g in got] == [0.001, 0.003]
    # lr 0.001: seeds 0 and 1, both finished; lr 0.003: seed 1 diverged, so n = 1.
    want = summarize([0.7, 0.8])
    assert got[0]["test_loss_n"] == 2 and got[0]["run"] == "0" and got[0]["seeds"] == 2
    assert got[0]["test_loss_mean"] == pytest.approx(want.mean)
    assert got[0]["test_loss_std"] == pytest.approx(want.std)
    assert got[0]["test_loss_ci_low"] == pytest.approx(want.ci_low)
    assert got[0]["test_loss_ci_high"] == pytest.approx(want.ci_high)
    assert want.ci_low < want.mean < want.ci_high
    assert got[1]["test_loss_n"] == 1 and got[1]["test_loss_mean"] == pytest.approx(0.9)
    assert got[1]["test_loss_std"] is None and got[1]["status"] == "diverged"
    assert got[0]["model"] == "gru" and got[0]["step_time_ms"] == 1.5


@pytest.mark.slow
def test_end_to_end_population_and_sweep_report_on_wandb(monkeypatch, tmp_path):
    """grubench.loop.train with 2 seeds x 2 learning rates: four W&B runs whose histories and
    summaries are what metrics.jsonl and results.json hold for each member; then the sweep's
    callback logs the report run beside them, under the same root."""
    _offline(monkeypatch, tmp_path / "wandb-home")
    from types import SimpleNamespace

    from grubench import loop
    from grubench.report import SweepSummary
    from wandb_records import by_name, history, run_record, summary

    sweep = tmp_path / "sweep"
    cfg = tiny_cfg(
        "logger=wandb",
        "logger.mode=offline",
        "trainer.seeds=2",
        "seed=3",
        "trainer.grid.lr=[0.01,0.003]",
    )
    context = RunContext(sweep.name, ("trainer.grid.lr=[0.01,0.003]", "seed=3"), sweep)
    res = loop.train(cfg, sweep / "0", context=context)
    runs = by_name(sweep)
    assert len(runs) == 4
    curves = [json.loads(x) for x in (sweep / "0" / "metrics.jsonl").read_text().splitlines()]
    for i, m in enumerate(population.members(cfg)):
        recs = runs[f"gru-copy-T3-lr{m.values['trainer.lr']:g}-s{m.seed}"]
        group = run_record(recs).run_group.rsplit("-", 1)[0]
        assert group == f"sweep-gru-copy-T3-lr{m.values['trainer.lr']:g}"
        hist = history(recs)
        assert sorted(hist) == sorted({r["step"] for r in curves})
        for row in curves:
            for key, v in row.items():
                own = v[i] if isinstance(v, list) else v
                if key != "step" and own is not None:
                    assert hist[row["step"]][key] == pytest.approx(own, rel=1e-6), key
        s = summary(recs)
        record = res["members"][i]
        assert s["status"] == record["status"] and s["params"] == res["params"]
        assert s["test/loss"] == pytest.approx(record["metrics"]["test_loss"], rel=1e-6)
        assert s["final/gap"] == pytest.approx(record["metrics"]["gap"], rel=1e-6)

    logger = cfg.logger
    SweepSummary().on_multirun_end(
        SimpleNamespace(hydra=SimpleNamespace(sweep=SimpleNamespace(dir=str(sweep))), logger=logger)
    )
    report = by_name(sweep)["sweep-report"]
    assert run_record(report).job_type == "report" and run_record(report).run_group == "sweep"
    (row,) = history(report).values()
    assert row["comparison/nrows"] == 2  # one row per learning rate
    assert any(k.startswith("plots/learning_curves") for k in row)


def test_atomic_writes_get_the_usual_file_mode(tmp_path):
    import os

    from grubench.results import atomic_write_text

    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "results.json", "{}\n")
    finally:
        os.umask(old)
    assert (tmp_path / "results.json").stat().st_mode & 0o777 == 0o644
