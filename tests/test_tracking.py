"""Tracking: metrics.jsonl, and an offline W&B run whose logged history is what the run
computed (read back from the .wandb file)."""

import json

import numpy as np
import pytest

from grubench.tracking import JsonlSink, wandb_mode
from helpers import tiny_cfg


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


@pytest.mark.slow
def test_offline_wandb_history_holds_what_the_run_computed(monkeypatch, tmp_path):
    pytest.importorskip("wandb")
    from grubench import loop
    from wandb_records import flush, history, records, run_record, summary

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = tiny_cfg("logger=wandb", "logger.mode=offline", "trainer.seeds=2", "seed=3")
    res = loop.train(cfg, tmp_path, group="sweep-x")
    flush()
    files = list(tmp_path.glob("wandb/offline-run-*/run-*.wandb"))
    assert len(files) == 1
    recs = records(files[0])

    run = run_record(recs)
    assert run.run_group == "sweep-x" and run.job_type == "gru"
    assert run.display_name == "gru-copy-T3-seed3"
    assert set(run.tags) == {"copy", "seq_len=3"}
    logged_cfg = {i.key: json.loads(i.value_json) for i in run.config.update}
    assert logged_cfg["model"]["hidden"] == 8 and logged_cfg["trainer"]["seeds"] == 2

    hist = history(recs)
    curves = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    for row in curves:
        for key in ("train/loss", "val/loss", "val/accuracy"):
            if key in row:
                got = hist[row["step"]]
                assert got[f"{key}_seed3"] == pytest.approx(row[key][0], rel=1e-6)
                assert got[f"{key}_seed4"] == pytest.approx(row[key][1], rel=1e-6)
                assert got[key] == pytest.approx(np.mean(row[key]), rel=1e-6)
    assert sorted(hist) == sorted({r["step"] for r in curves})

    summ = summary(recs)
    test_loss = res["metrics"]["test_loss"]
    assert summ["test_loss"] == pytest.approx(np.mean(test_loss), rel=1e-6)
    assert summ["test_loss_seed4"] == pytest.approx(test_loss[1], rel=1e-6)
    assert summ["status"] == "completed" and summ["params"] == res["params"]
    assert summ["speed/step_time_ms"] == pytest.approx(res["speed"]["step_time_ms"])


@pytest.mark.slow
def test_end_of_sweep_logs_the_table_and_plots_to_wandb(monkeypatch, tmp_path):
    """The multirun callback puts the comparison table and the plots in the sweep's group."""
    pytest.importorskip("wandb")
    from types import SimpleNamespace

    from grubench import loop
    from grubench.report import SweepSummary
    from wandb_records import flush, history, records, run_record

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = tiny_cfg("trainer.seeds=2")
    loop.train(cfg, tmp_path / "0_gru_copy")
    logger = tiny_cfg("logger=wandb", "logger.mode=offline", "logger.group=sweep-y").logger
    SweepSummary().on_multirun_end(
        SimpleNamespace(
            hydra=SimpleNamespace(sweep=SimpleNamespace(dir=str(tmp_path))), logger=logger
        )
    )
    assert (tmp_path / "summary.md").exists() and (tmp_path / "report.md").exists()
    assert any((tmp_path / "plots").glob("learning_curves_*.png"))
    flush()
    files = list(tmp_path.glob("wandb/offline-run-*/run-*.wandb"))
    assert len(files) == 1
    recs = records(files[0])
    run = run_record(recs)
    assert run.run_group == "sweep-y" and run.job_type == "report"
    (row,) = history(recs).values()
    assert row["comparison/_type"] == "table-file" and row["comparison/nrows"] == 1
    assert row["plots/learning_curves_copy/_type"] == "image-file"
    table = json.loads((files[0].parent / "files" / row["comparison/path"]).read_text())
    got = dict(zip(table["columns"], table["data"][0], strict=True))
    result = json.loads((tmp_path / "0_gru_copy" / "results.json").read_text())
    assert got["model"] == "gru" and got["seeds"] == 2
    assert got["test_loss"] == pytest.approx(np.mean(result["metrics"]["test_loss"]))


def test_atomic_writes_get_the_usual_file_mode(tmp_path):
    import os

    from grubench.results import atomic_write_text

    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "results.json", "{}\n")
    finally:
        os.umask(old)
    assert (tmp_path / "results.json").stat().st_mode & 0o777 == 0o644
