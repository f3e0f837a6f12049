"""grubench-report on fake sweeps (results.json and metrics.jsonl written by hand, no training):
the numbers in each format, pooling, bold, diverged and failed runs, papers, plots, bad input,
and the per-sweep summary kept as it was."""

import csv
import io
import json
import os
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from grubench.render import format_mean_std, summary_table
from grubench.report import SweepSummary, main
from grubench.runs import read_runs

RNG = np.random.default_rng(0)


def write_run(
    root: Path,
    name: str,
    *,
    model: str = "gru",
    task: str = "copy",
    seq_len: int = 20,
    seeds=(0, 1),
    status: str = "completed",
    diverged=None,
    train_size: int = 1000,
    lr: float = 0.01,
    hidden: int = 32,
    metrics=None,
    jsonl: bool = True,
    extra=None,
    old_keys: bool = False,
) -> dict:
    """One run directory as the trainer leaves it; returns the results written. `old_keys`:
    as an older version left it, with model.cell and model.reset_after in its config."""
    seeds = list(seeds)
    d = root / name
    d.mkdir(parents=True)
    if metrics is None and status != "failed":
        test = RNG.uniform(0.05, 0.5, len(seeds))
        train = test * RNG.uniform(0.7, 0.95, len(seeds))
        metrics = {
            "test_loss": test,
            "train_loss": train,
            "val_loss": test * 1.01,
            "test_accuracy": RNG.uniform(0.3, 0.99, len(seeds)),
            "gap": test * 1.01 - train,
            "best_step": np.full(len(seeds), 200.0),
        }
    metrics = {k: [float(x) for x in v] for k, v in (metrics or {}).items()}
    bad = {str(s) for s in (diverged or {})}
    for k, v in metrics.items():  # the trainer writes null for a diverged seed
        metrics[k] = [
            None if str(s) in bad and k != "best_step" else x for s, x in zip(seeds, v, strict=True)
        ]
    cfg = {
        "model": {"name": model, "hidden": hidden, "depth": 1, "dropout": 0.0},
        "task": {"name": task, "seq_len": seq_len, "train_size": train_size},
        "trainer": {"lr": lr, "seeds": len(seeds), "steps": 200, "progress": False},
        "logger": {"name": "none"},
        "seed": seeds[0],
    }
    if old_keys:
        cfg["model"] |= {"cell": model, "reset_after": True}
    res = {
        "schema": 1,
        "status": status,
        "config": cfg,
        "model": model,
        "task": task,
        "hidden": hidden,
        "depth": 1,
        "seq_len": seq_len,
        "train_size": train_size,
        "params": 1000 if model == "gru" else 1300,
        "seeds": seeds,
        "metrics": metrics,
        "baselines": {"loss": 0.5},
        "error": "RuntimeError: out of memory" if status == "failed" else None,
        "speed": {}
        if status == "failed"
        else {
            "step_time_ms": seq_len * (0.1 if model == "gru" else 0.13),
            "compile_s": 1.5,
            "tokens_per_s": 1e6 / seq_len,
            "timed_steps": 100,
            "device": "cpu",
        },
        "memory": {"train_step_bytes": seq_len * 2**20, "peak_bytes": None},
        "wall_s": 3.0,
    }
    if diverged:
        res["diverged"] = {str(s): st for s, st in diverged.items()}
        res["status"] = "diverged"
        res["error"] = "non-finite loss: " + ", ".join(
            f"seed {s} at step {st}" for s, st in diverged.items()
        )
    res.update(extra or {})
    (d / "results.json").write_text(json.dumps(res))
    if jsonl and status != "failed":
        test = metrics.get("test_loss") or [0.3] * len(seeds)
        rows = []
        for step in (50, 100, 150, 200):
            rows.append(
                {
                    "step": step,
                    "train/loss": [0.5] * len(seeds),
                    "train/grad_norm": [1.0] * len(seeds),
                    "steps_per_s": 10.0,
                }
            )
            rows.append(
                {
                    "step": step,
                    "val/loss": [None if x is None else x * 200 / step for x in test],
                    "val/accuracy": [0.5] * len(seeds),
                }
            )
        (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return res


@pytest.fixture
def sweep(tmp_path):
    """2 models x 2 seq_lens x 2 seeds; a second gru/20 run with seeds 2, 3 (pooled with the
    first); lstm/50 seeds 2, 3 with seed 2 diverged; gru/50 seeds 2, 3 failed."""
    root = tmp_path / "sweep"
    runs = {}
    for i, (model, seq_len) in enumerate([("gru", 20), ("lstm", 20), ("gru", 50), ("lstm", 50)]):
        runs[(model, seq_len)] = [
            write_run(root, f"{i}_{model}_{seq_len}", model=model, seq_len=seq_len)
        ]
    runs[("gru", 20)].append(write_run(root, "4_gru_20", seq_len=20, seeds=(2, 3)))
    runs[("lstm", 50)].append(
        write_run(root, "5_lstm_50", model="lstm", seq_len=50, seeds=(2, 3), diverged={2: 120})
    )
    runs[("gru", 50)].append(write_run(root, "6_gru_50", seq_len=50, seeds=(2, 3), status="failed"))
    return SimpleNamespace(root=root, runs=runs)


def pooled(runs, metric="test_loss"):
    return np.array([x for r in runs for x in r["metrics"].get(metric, []) if x is not None])


def run_main(capsys, *argv):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def table_rows(markdown: str) -> dict[tuple[str, ...], list[str]]:
    """{row key values: cells} of the first Markdown table in the text, header under ()."""
    lines = [ln for ln in markdown.split("\n\n")[0].splitlines() if ln.startswith("|")]
    parse = lambda ln: [c.strip() for c in ln.strip("|").split("|")]
    head = parse(lines[0])
    rows = {(): head}
    for ln in lines[2:]:
        cells = parse(ln)
        rows[tuple(cells[:2])] = cells[2:]
    return rows


CELL = re.compile(r"^(\*\*)?([-\d.e+]+)(?: ± ([-\d.e+]+))?(\*\*)? \(n=(\d+)(.*)\)$")


def close_to_print(text: str, value: float) -> bool:
    """`text` is `value` rounded to the decimals (or significant digits) it shows."""
    mantissa = text.split("e")[0]
    decimals = len(mantissa.split(".")[1]) if "." in mantissa else 0
    scale = 10 ** int(text.split("e")[1]) if "e" in text else 1.0
    return abs(float(text) - value) <= 0.5 * 10**-decimals * scale + 1e-12


def parse_cell(cell: str):
    m = CELL.match(cell)
    assert m, cell
    return SimpleNamespace(bold=bool(m[1]), mean=m[2], std=m[3], n=int(m[5]), rest=m[6])


def test_markdown_cells_are_mean_and_sample_std_over_pooled_seeds(sweep, capsys):
    rc, out, err = run_main(capsys, sweep.root)
    assert rc == 0, err
    rows = table_rows(out)
    assert rows[()] == ["task", "seq_len", "gru", "lstm"]
    assert list(rows)[1:] == [("copy", "20"), ("copy", "50")]
    for (model, seq_len), runs in sweep.runs.items():
        cell = parse_cell(rows[("copy", str(seq_len))][["gru", "lstm"].index(model)])
        values = pooled(runs)
        assert cell.n == len(values)
        assert close_to_print(cell.mean, values.mean()), (cell, values)
        assert close_to_print(cell.std, values.std(ddof=1)), (cell, values)
    # the two gru/20 runs (seeds 0, 1 and 2, 3) are one cell of four seeds
    assert parse_cell(rows[("copy", "20")][0]).n == 4


def test_runs_that_differ_only_in_seed_pool_and_other_differences_are_noted(tmp_path, capsys):
    root = tmp_path / "s"
    a = write_run(root, "a", seeds=(0, 1), metrics={"test_loss": [0.1, 0.2]})
    # b was written by an older version (model.cell, model.reset_after): the same experiment
    b = write_run(root, "b", seeds=(2, 3, 4), metrics={"test_loss": [0.3, 0.4, 0.5]}, old_keys=True)
    rc, out, _ = run_main(capsys, root, "--rows", "task", "--cols", "model")
    assert rc == 0
    assert "0.300 ± 0.158 (n=5)" in out
    assert np.isclose(
        np.std(a["metrics"]["test_loss"] + b["metrics"]["test_loss"], ddof=1), 0.158, atol=5e-4
    )
    assert "pooled:" not in out  # same experiment, more seeds
    write_run(root, "c", seeds=(5,), hidden=64, metrics={"test_loss": [0.6]})
    rc, out, _ = run_main(capsys, root, "--rows", "task", "--cols", "model")
    assert "(n=6)" in out and "differ in hidden" in out
    rc, out, _ = run_main(capsys, root, "--rows", "task,model.hidden", "--cols", "model")
    assert "(n=5)" in out and "(n=1)" in out and "pooled:" not in out


def test_best_cell_of_each_row_is_bold_lowest_loss_highest_accuracy(sweep, capsys):
    for metric, pick in (("test_loss", np.argmin), ("test_accuracy", np.argmax)):
        rc, out, _ = run_main(capsys, sweep.root, "--metric", metric)
        assert rc == 0
        rows = table_rows(out)
        for seq_len in (20, 50):
            cells = [parse_cell(c) for c in rows[("copy", str(seq_len))]]
            means = [pooled(sweep.runs[(m, seq_len)], metric).mean() for m in ("gru", "lstm")]
            assert [c.bold for c in cells] == [i == pick(means) for i in range(2)], metric
    rc, out, _ = run_main(capsys, sweep.root, "--metric", "best_step")
    assert "**" not in out.split("\n\n")[0]  # no direction: no bold


def test_latex_is_booktabs_with_escapes(sweep, capsys):
    rc, out, _ = run_main(capsys, sweep.root, "--format", "latex")
    assert rc == 0
    for rule in (r"\toprule", r"\midrule", r"\bottomrule", r"\begin{tabular}{llrr}"):
        assert rule in out
    assert r"task & seq\_len & gru & lstm \\" in out
    assert r"test\_loss" in out and r"$\pm$" in out and r"\textbf{" in out
    assert re.search(r"(?<!\\)_", out) is None  # every underscore escaped
    assert "±" not in out and "**" not in out


def test_csv_parses_back_to_the_numbers(sweep, capsys):
    rc, out, err = run_main(capsys, sweep.root, "--format", "csv")
    assert rc == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [(r["task"], r["seq_len"]) for r in rows] == [("copy", "20"), ("copy", "50")]
    for (model, seq_len), runs in sweep.runs.items():
        row = rows[[20, 50].index(seq_len)]
        values = pooled(runs)
        assert float(row[f"{model} mean"]) == pytest.approx(values.mean(), rel=1e-12)
        assert float(row[f"{model} std"]) == pytest.approx(values.std(ddof=1), rel=1e-12)
        assert int(row[f"{model} n"]) == len(values)
    assert rows[1]["lstm diverged"] == "1" and rows[1]["gru failed"] == "2"
    assert rows[0]["gru diverged"] == "0"
    assert "**" not in out
    assert "diverged: 1 run" in err and "failed: 1 run" in err  # the notes, beside the CSV


def test_diverged_and_failed_are_counted_not_dropped(sweep, capsys):
    rc, out, _ = run_main(capsys, sweep.root)
    rows = table_rows(out)
    gru50, lstm50 = (parse_cell(c) for c in rows[("copy", "50")])
    assert (gru50.n, gru50.rest) == (2, ", 2 failed")
    assert (lstm50.n, lstm50.rest) == (3, ", 1 diverged")
    assert "diverged: 1 run (task=copy, seq_len=50, model=lstm: seed 2 at step 120)" in out
    assert "failed: 1 run (task=copy, seq_len=50, model=gru: RuntimeError: out of memory)" in out


def test_run_level_metrics_pool_runs(sweep, capsys):
    rc, out, _ = run_main(capsys, sweep.root, "--metric", "speed.step_time_ms")
    assert rc == 0
    rows = table_rows(out)
    gru20 = parse_cell(rows[("copy", "20")][0])
    assert (gru20.n, gru20.mean, gru20.std) == (2, "2.00", "0.00")
    assert parse_cell(rows[("copy", "50")][0]).rest == ", 1 failed"  # a run, not its seeds
    assert "over runs" in out
    rc, out, _ = run_main(
        capsys, sweep.root, "--rows", "trainer.lr", "--cols", "model", "--metric", "params"
    )
    assert rc == 0 and "| trainer.lr |" in out and "**1000 ± 0**" in out


def test_paper_numbers_sit_beside_ours(tmp_path, capsys):
    root = tmp_path / "chorales"
    for i, model in enumerate(("rnn", "gru", "lstm")):
        write_run(
            root,
            model,
            model=model,
            task="chorales",
            seq_len=100,
            metrics={"test_loss": [8.6 + i, 8.8 + i], "train_loss": [7.0, 7.2]},
        )
    rc, out, err = run_main(capsys, root, "--paper", "chung2014")
    assert rc == 0, err
    rows = table_rows(out)
    head = rows[()]
    assert head == [
        "task",
        "seq_len",
        "gru",
        "gru (paper)",
        "lstm",
        "lstm (paper)",
        "rnn",
        "rnn (paper)",
    ]
    cells = dict(zip(head[2:], rows[("chorales", "100")], strict=True))
    assert cells["gru (paper)"] == "8.54" and cells["gru"] == "9.70 ± 0.14 (n=2)"
    assert cells["lstm (paper)"] == "8.67" and cells["rnn (paper)"] == "9.1"
    assert "Empirical Evaluation of Gated Recurrent Neural Networks" in out
    rc, out, _ = run_main(capsys, root, "--paper", "chung2014", "--metric", "train_loss")
    assert "| 6.94 " in out
    rc, out, _ = run_main(capsys, root, "--paper", "chung2014", "--format", "csv")
    assert float(next(csv.DictReader(io.StringIO(out)))["gru paper"]) == 8.54


def test_paper_values_match_seq_len_where_the_paper_fixes_one(tmp_path, capsys):
    root = tmp_path / "adding"
    for seq_len in (50, 600):
        write_run(root, f"gru_{seq_len}", task="adding", seq_len=seq_len)
    rc, out, _ = run_main(capsys, root, "--paper", "bai2018")
    rows = table_rows(out)
    assert rows[()] == ["task", "seq_len", "gru", "gru (paper)"]
    assert rows[("adding", "600")][1] == "5.3e-05" and rows[("adding", "50")][1] == "—"
    assert "Bai, J. Zico Kolter, Vladlen Koltun" in out


def full_sweep(root: Path) -> None:
    """Runs with every kind of plot data: seq_len and train_size sweeps, recall, grad norms."""
    for model in ("gru", "lstm"):
        for seq_len in (10, 100, 1000):
            lags = [1, 2, 4, 8]
            write_run(
                root,
                f"{model}_{seq_len}",
                model=model,
                seq_len=seq_len,
                extra={
                    "recall": {
                        "lags": lags,
                        "accuracy": [[1 - lag / 20 - s / 50 for lag in lags] for s in range(2)],
                    },
                    "grad_norms": {
                        "t": [0, 1, 2, 3],
                        "norm": [[10.0**-t * (1 + s) for t in range(4)] for s in range(2)],
                    },
                },
            )
        for size in (100, 1000):
            write_run(
                root, f"{model}_n{size}", model=model, seq_len=10, train_size=size, jsonl=False
            )
    write_run(root, "failed", seq_len=100, status="failed")


KINDS = [
    "learning_curves_copy",
    "step_time_vs_seq_len",
    "memory_vs_seq_len",
    "gap_vs_train_size",
    "recall_vs_lag",
    "grad_norm_vs_t",
]


def test_every_plot_kind_is_written_as_png_and_svg(tmp_path, capsys):
    full_sweep(tmp_path / "s")
    rc, _, err = run_main(capsys, tmp_path / "s", "--plots", tmp_path / "plots")
    assert rc == 0, err
    for stem in KINDS:
        png, svg = tmp_path / "plots" / f"{stem}.png", tmp_path / "plots" / f"{stem}.svg"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", stem
        assert b"<svg" in svg.read_bytes()[:1000], stem
        assert f"wrote {png}" in err and f"wrote {svg}" in err
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == sorted(
        f"{s}.{ext}" for s in KINDS for ext in ("png", "svg")
    )
    assert "left out 1 failed run" in err


def test_plots_are_skipped_without_their_data(sweep, capsys, tmp_path):
    # two seq_lens (speed and memory plots), metrics.jsonl (learning curves); one train_size,
    # no recall, no grad norms
    rc, _, err = run_main(capsys, sweep.root, "--plots", tmp_path / "plots")
    assert rc == 0
    names = sorted(p.stem for p in (tmp_path / "plots").iterdir())
    assert names == sorted(
        2 * ["learning_curves_copy", "memory_vs_seq_len", "step_time_vs_seq_len"]
    )
    assert "skipped generalisation gap" in err and "no run records recall" in err
    assert "no run records grad_norms" in err
    root = tmp_path / "one"
    write_run(root, "a", jsonl=False)
    write_run(root, "b", model="lstm", jsonl=False)
    rc, _, err = run_main(capsys, root, "--plots", tmp_path / "none")
    assert rc == 0 and list((tmp_path / "none").iterdir()) == []
    assert "skipped learning curves" in err and "skipped step time" in err


def test_plot_axes_are_labelled_with_units_and_log_where_wide(tmp_path):
    from grubench.plots import _memory, _step_time

    full_sweep(tmp_path / "s")
    runs = [r for r in read_runs([tmp_path / "s"]) if r["status"] != "failed"]
    ((_, fig),) = _step_time(runs)
    ax = fig.axes[0]
    assert ax.get_xlabel() == "sequence length (steps)" and ax.get_ylabel() == "step time (ms)"
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"  # 10..1000, 1..130 ms
    ((_, fig),) = _memory(runs)
    assert fig.axes[0].get_ylabel() == "train-step memory (MiB)"
    # one line per experiment: train_size varies in this sweep, so it splits the lines
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == [
        "gru, train_size=100 (n=1 run)",
        "gru, train_size=1000 (n=4 runs)",
        "lstm, train_size=100 (n=1 run)",
        "lstm, train_size=1000 (n=4 runs)",
    ]


def test_out_writes_the_file_not_stdout(sweep, capsys, tmp_path):
    rc, out, err = run_main(capsys, sweep.root, "--out", tmp_path / "t.md")
    assert rc == 0 and out == ""
    assert (tmp_path / "t.md").read_text().startswith("| task | seq_len | gru")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".t.md")]  # no temp left


def bad_cases(tmp_path: Path) -> list[tuple[list, str]]:
    good = tmp_path / "good"
    write_run(good, "a")
    (tmp_path / "empty").mkdir()
    broken = tmp_path / "broken" / "run"
    broken.mkdir(parents=True)
    (broken / "results.json").write_text("{not json")
    return [
        ([tmp_path / "nowhere"], "no such directory"),
        ([tmp_path / "empty"], "no results.json found"),
        ([good / "a" / "metrics.jsonl"], "not a directory"),
        ([tmp_path / "broken"], "unreadable"),
        ([good, "--metric", "test_los"], "unknown metric 'test_los'"),
        ([good, "--metric", "speed.device"], "not numeric"),
        ([good, "--rows", "trainer.lrr"], "unknown key 'trainer.lrr'"),
        ([good, "--cols", "trainer"], "unknown key 'trainer'"),
        ([good, "--rows", "model", "--cols", "model"], "in both --rows and --cols"),
        ([good, "--paper", "nobody2020"], "known papers are bai2018, chung2014"),
        ([good, "--format", "xml"], "invalid choice"),
        ([good, "--out", tmp_path / "no" / "dir" / "t.md"], "cannot write"),
        ([good, "--plots", good / "a" / "results.json"], "cannot create the plots directory"),
        ([], "required: DIR"),
    ]


def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys):
    for argv, message in bad_cases(tmp_path):
        rc, out, err = run_main(capsys, *argv)
        assert rc == 2, argv
        assert err.count("\n") == 1 and err.startswith("grubench-report: error: "), err
        assert message in err, (argv, err)
        assert "Traceback" not in err
        if "--out" not in argv and "--plots" not in argv:
            assert out == ""


def test_unreadable_directories_are_errors(tmp_path, capsys, monkeypatch):
    # Simulated: the tests may run as root, who reads everything.
    write_run(tmp_path / "s", "a")
    write_run(tmp_path / "s" / "locked", "b")
    real_access, real_scandir = os.access, os.scandir
    locked = str(tmp_path / "s" / "locked")
    monkeypatch.setattr(
        os, "access", lambda p, mode: str(p) != str(tmp_path / "s") and real_access(p, mode)
    )
    rc, _, err = run_main(capsys, tmp_path / "s")
    assert rc == 2 and err == f"grubench-report: error: {tmp_path / 's'}: directory not readable\n"
    monkeypatch.setattr(os, "access", real_access)

    def scandir(path="."):
        if str(path) == locked:
            raise PermissionError(13, "Permission denied", locked)
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    rc, _, err = run_main(capsys, tmp_path / "s")
    assert rc == 2 and err.count("\n") == 1 and f"{locked}: directory not readable" in err


def test_summary_table_and_sweep_callback_unchanged(sweep, capsys):
    runs = read_runs([sweep.root])
    assert [Path(r["path"]).name for r in runs] == sorted(p.name for p in sweep.root.iterdir())
    lines = summary_table(runs).splitlines()
    assert lines[0].startswith("| model") and len(lines) == 2 + len(runs)
    assert lines[2].startswith("| gru ") and lines[3].startswith("| lstm")
    cfg = SimpleNamespace(hydra=SimpleNamespace(sweep=SimpleNamespace(dir=str(sweep.root))))
    SweepSummary().on_multirun_end(cfg)
    assert (sweep.root / "summary.md").read_text().splitlines() == lines
    assert "| lstm" in capsys.readouterr().out


def test_format_mean_std():
    f = format_mean_std
    assert f(0.0123, 0.0004) == "0.0123 ± 0.0004"
    assert f(8.54, float("nan")) == "8.54"
    assert f(5.3e-5, 1.2e-6) == "5.30e-05 ± 1.2e-06"
    assert f(53124.0, 0.0) == "53124 ± 0"
    assert f(float("nan"), float("nan")) == "n/a"


def test_select_keeps_the_learning_rate_with_the_best_validation_loss(tmp_path, capsys):
    root = tmp_path / "s"
    picks = {}
    for model in ("gru", "lstm"):
        for i, lr in enumerate((1e-3, 1e-2)):
            # gru is best at 1e-3, lstm at 1e-2 (lower best_val_loss)
            good = (model == "gru") == (lr == 1e-3)
            val = [0.1, 0.12] if good else [0.3, 0.32]
            test = [0.2 + i, 0.22 + i]
            write_run(
                root,
                f"{model}-{i}",
                model=model,
                lr=lr,
                metrics={"best_val_loss": val, "test_loss": test, "val_loss": val},
            )
            if good:
                picks[model] = (lr, np.mean(test))
    rc = main(
        [
            str(root),
            "--rows",
            "task",
            "--cols",
            "model",
            "--select",
            "trainer.lr",
            "--by",
            "best_val_loss",
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0
    row = next(line for line in out.splitlines() if line.startswith("| copy"))
    assert f"{picks['gru'][1]:.3g}" in row and f"{picks['lstm'][1]:.3g}" in row
    assert "(n=2)" in row  # only the chosen runs are pooled
    assert "selected: in each cell the trainer.lr with the lower mean best_val_loss" in out
    assert "model=gru: 0.001" in out and "model=lstm: 0.01" in out
