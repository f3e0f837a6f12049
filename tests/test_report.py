"""grubench-report on fake sweeps (results.json and metrics.jsonl written by hand, no training):
the numbers in each format, pooling, bold, diverged and failed runs, papers, plots, bad input,
and the per-sweep summary kept as it was."""

import csv
import io
import json
import os
import re
import shutil
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
    depth: int = 1,
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
        "model": {"name": model, "hidden": hidden, "depth": depth, "dropout": 0.0},
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
        "depth": depth,
        "seq_len": seq_len,
        "train_size": train_size,
        "params": (1000 if model == "gru" else 1300) * depth,
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
        ([good, "--metric", "test_loss,nope"], "unknown metric 'nope'"),
        ([good, "--metric", ","], "--metric needs at least one metric"),
        ([good, "--caption", "GRU"], "--caption applies to --format latex only"),
        ([good, "--latex-siunitx"], "--latex-siunitx applies to --format latex only"),
        ([good, "--figsize", "column"], "--figsize applies to --plots only"),
        ([good, "--x", "seconds"], "--x applies to --plots only"),
        ([good, "--format", "latex", "--label", "tab:a b"], "--label 'tab:a b'"),
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


# ---------------------------------------------------------------------------------------------
# Several metrics in one table; LaTeX floats, captions and siunitx; the end-of-sweep summaries

MODELS = ("gru", "lstm")


def md_table(text: str) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the first Markdown table in the text."""
    lines = [ln for ln in text.split("\n\n")[0].splitlines() if ln.startswith("|")]
    parse = lambda ln: [c.strip() for c in ln.strip("|").split("|")]
    return parse(lines[0]), [parse(ln) for ln in lines[2:]]


def latex_rows(tex: str) -> list[list[str]]:
    """The cells of each data row of the (one) tabular."""
    body = tex.split(r"\midrule")[1].split(r"\bottomrule")[0]
    return [
        [c.strip() for c in ln.rstrip().removesuffix(r"\\").split(" & ")]
        for ln in body.strip().splitlines()
    ]


def expected(runs, metric):
    """The values a cell of `metric` pools: per seed, or per run for params."""
    if metric == "params":
        return np.array([float(r["params"]) for r in runs if r["status"] != "failed"])
    return pooled(runs, metric)


def check_number(mean: str, std: str | None, values: np.ndarray) -> None:
    assert close_to_print(mean, values.mean()), (mean, values)
    if len(values) > 1:
        assert std is not None and close_to_print(std, values.std(ddof=1)), (std, values)


LATEX_CELL = re.compile(
    r"^(\\textbf\{)?([-\d.e+]+)(?: \$\\pm\$ ([-\d.e+]+))?\}?(?: \((n=(\d+))?(?:, )?(.*)\))?$"
)
# One number of an S column: bold or not, the mantissa (its decimals), the exponent.
SIUNITX_NUMBER = re.compile(r"^(\\bfseries )?(-?\d+(?:\.(\d+))?)(?:e(-?\d+))?$")


def test_several_metrics_share_one_table_a_block_of_columns_each(sweep, capsys):
    metrics = ["test_loss", "test_accuracy", "params"]
    rc, out, err = run_main(capsys, sweep.root, "--metric", ",".join(metrics))
    assert rc == 0, err
    head, rows = md_table(out)
    assert head == ["task", "seq_len", *(f"{m} {model}" for m in metrics for model in MODELS)]
    assert [r[:2] for r in rows] == [["copy", "20"], ["copy", "50"]]
    for row in rows:
        for j, metric in enumerate(metrics):
            cells = [parse_cell(c) for c in row[2 + 2 * j : 4 + 2 * j]]
            means = []
            for cell, model in zip(cells, MODELS, strict=True):
                values = expected(sweep.runs[(model, int(row[1]))], metric)
                assert cell.n == len(values), (metric, model, row)
                check_number(cell.mean, cell.std, values)
                means.append(values.mean())
            pick = np.argmax if metric == "test_accuracy" else np.argmin
            assert [c.bold for c in cells] == [i == pick(means) for i in range(2)], metric
    notes = out.split("\n\n")[1:]
    for metric in metrics:  # each metric says what its cells are; shared notes said once
        assert sum(n.startswith(f"{metric}: mean ± std") for n in notes) == 1
    assert sum(n.startswith("failed: 1 run") for n in notes) == 1


def test_several_metrics_in_csv_parse_back(sweep, capsys):
    rc, out, err = run_main(capsys, sweep.root, "--metric", "test_loss,params", "--format", "csv")
    assert rc == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    for (model, seq_len), runs in sweep.runs.items():
        row = rows[[20, 50].index(seq_len)]
        for metric in ("test_loss", "params"):
            values = expected(runs, metric)
            assert float(row[f"{metric} {model} mean"]) == pytest.approx(values.mean(), rel=1e-12)
            assert int(row[f"{metric} {model} n"]) == len(values)
            if len(values) > 1:
                std = float(row[f"{metric} {model} std"])
                assert std == pytest.approx(values.std(ddof=1), rel=1e-12, abs=1e-12)
    assert rows[1]["test_loss lstm diverged"] == "1" and rows[1]["params lstm diverged"] == "0"
    assert "test_loss: mean ± std" in err and "params: mean ± std" in err


def test_latex_is_a_table_float_with_a_header_per_metric(sweep, capsys):
    rc, out, _ = run_main(
        capsys, sweep.root, "--metric", "test_loss,test_accuracy", "--format", "latex"
    )
    assert rc == 0
    lines = out.splitlines()
    assert lines[1:4] == [r"\begin{table}[t]", r"\centering", r"\begin{tabular}{llrrrr}"]
    assert lines[-1] == r"\end{table}"
    assert lines[-2] == r"\label{tab:grubench-test-loss-test-accuracy}"
    assert r" &  & \multicolumn{2}{c}{test\_loss} & \multicolumn{2}{c}{test\_accuracy} \\" in lines
    assert r"\cmidrule(lr){3-4} \cmidrule(lr){5-6}" in lines
    assert r"task & seq\_len & gru & lstm & gru & lstm \\" in lines
    caption = next(ln for ln in lines if ln.startswith(r"\caption{"))
    assert r"test\_loss and test\_accuracy: mean $\pm$ std (ddof=1) over seeds" in caption
    assert "n in each cell" in caption  # n differs between cells: each cell says it
    for row in latex_rows(out):
        for j, (metric, model) in enumerate(
            (m, x) for m in ("test_loss", "test_accuracy") for x in MODELS
        ):
            cell = LATEX_CELL.match(row[2 + j])
            assert cell and cell[4], row[2 + j]
            values = expected(sweep.runs[(model, int(row[1]))], metric)
            assert int(cell[5]) == len(values)
            check_number(cell[2], cell[3], values)
    assert re.search(r"(?<!\\)_", out) is None  # every underscore escaped


@pytest.fixture
def even(tmp_path):
    """gru and lstm on copy/20, 3 finite seeds each (lstm tried a 4th, which diverged)."""
    root = tmp_path / "even"
    runs = {
        "gru": [write_run(root, "gru", seeds=(0, 1, 2))],
        "lstm": [write_run(root, "lstm", model="lstm", seeds=(0, 1, 2, 3), diverged={3: 50})],
    }
    return SimpleNamespace(root=root, runs=runs)


def test_latex_n_is_in_the_caption_when_every_cell_has_the_same(even, sweep, capsys):
    rc, out, _ = run_main(capsys, even.root, "--format", "latex", "--metric", "test_loss,params")
    assert rc == 0
    caption = next(ln for ln in out.splitlines() if ln.startswith(r"\caption{"))
    assert r"test\_loss: mean $\pm$ std (ddof=1) over seeds, n = 3 per cell" in caption
    assert (
        "params: mean $\\pm$ std (ddof=1) over runs (each measured once), n = 1 per cell" in caption
    )
    (row,) = latex_rows(out)
    assert "n=" not in " ".join(row)
    assert row[3].endswith("(1 diverged)") and not row[2].endswith(")")  # what was left out
    for j, model in enumerate(MODELS):
        cell = LATEX_CELL.match(row[2 + j])
        assert cell, row
        check_number(cell[2], cell[3], pooled(even.runs[model]))
    # n differs (4, 2, 2, 3): every cell keeps its own
    rc, out, _ = run_main(capsys, sweep.root, "--format", "latex")
    assert all(re.search(r"\(n=\d", c) for row in latex_rows(out) for c in row[2:])
    assert "n in each cell" in out


def test_caption_and_label_options(even, capsys):
    rc, out, _ = run_main(
        capsys,
        even.root,
        "--format",
        "latex",
        "--caption",
        r"GRU vs.\ LSTM, \emph{copy}",
        "--label",
        "tab:copy_20",
    )
    assert rc == 0
    assert r"\caption{GRU vs.\ LSTM, \emph{copy}}" in out and r"\label{tab:copy_20}" in out
    # our caption, with n, then opens the notes: a custom caption loses nothing
    notes = out.split(r"{\footnotesize\raggedright")[1]
    assert notes.lstrip().startswith(r"test\_loss: mean $\pm$ std (ddof=1) over seeds, n = 3")


def test_latex_siunitx_puts_numbers_in_s_columns(sweep, capsys):
    metrics = ("test_loss", "test_accuracy")
    rc, out, _ = run_main(
        capsys, sweep.root, "--format", "latex", "--latex-siunitx", "--metric", ",".join(metrics)
    )
    assert rc == 0
    assert r"\sisetup{detect-weight, group-digits=none}" in out
    assert r"and \usepackage{siunitx}" in out.splitlines()[0]
    spec = re.search(r"\\begin\{tabular\}\{(.*)\}", out)[1]
    formats = re.findall(r"S\[table-format=([^\]]+)\]", spec)
    # per metric and model: the mean's S column, "±", the std's S column, and (n differs) a
    # text column of counts beside them
    pm = r"@{${}\pm{}$}"
    assert spec == "ll" + "".join(
        rf"S[table-format={m}]{pm}S[table-format={d}]@{{\,}}l"
        for m, d in zip(formats[::2], formats[1::2], strict=True)
    )
    assert len(formats) == 8
    assert r"task & seq\_len & \multicolumn{3}{c}{gru} & \multicolumn{3}{c}{lstm}" in out
    assert r"\pm" not in out.split(r"\midrule")[1].split(r"\bottomrule")[0]
    for row in latex_rows(out):
        for j, (metric, model) in enumerate((m, x) for m in metrics for x in MODELS):
            mean, std, counts = row[2 + 3 * j : 5 + 3 * j]
            m, d = SIUNITX_NUMBER.match(mean), SIUNITX_NUMBER.match(std)
            assert m and d, (mean, std)
            assert bool(m[1]) == bool(d[1])  # bold together
            values = expected(sweep.runs[(model, int(row[1]))], metric)
            assert counts.startswith(f"(n={len(values)}")
            check_number(m[2], d[2], values)
            # each column's table-format holds its numbers: integer digits and decimals
            for number, fmt in ((m[2], formats[2 * j]), (d[2], formats[2 * j + 1])):
                f = re.fullmatch(r"\+?(\d+)\.(\d+)", fmt)
                assert f, fmt
                whole, _, frac = number.lstrip("-").partition(".")
                assert len(whole) <= int(f[1]) and len(frac) <= int(f[2])
    bold = [c for row in latex_rows(out) for c in row if c.startswith(r"\bfseries")]
    assert len(bold) == 8  # the best of each row, per metric: its mean and its std


def test_siunitx_cells_of_small_and_negative_numbers(tmp_path, capsys):
    root = tmp_path / "s"
    write_run(
        root,
        "a",
        metrics={"test_loss": [5.3e-5, 5.5e-5, 5.1e-5], "gap": [-0.012, -0.02, 0.001]},
        seeds=(0, 1, 2),
    )
    write_run(
        root,
        "b",
        model="lstm",
        metrics={"test_loss": [0.3, 0.31, 0.32], "gap": [0.1, 0.2, 0.3]},
        seeds=(0, 1, 2),
    )
    rc, out, _ = run_main(
        capsys, root, "--format", "latex", "--latex-siunitx", "--metric", "test_loss,gap"
    )
    assert rc == 0
    (row,) = latex_rows(out)
    small, small_std = SIUNITX_NUMBER.match(row[2]), SIUNITX_NUMBER.match(row[3])
    assert small and small[1] and small[4] == small_std[4] == "-5"  # bold, in units of 1e-5
    assert float(small[2]) * 1e-5 == pytest.approx(5.3e-5, abs=0.005e-5)
    assert float(small_std[2]) * 1e-5 == pytest.approx(
        np.std([5.3e-5, 5.5e-5, 5.1e-5], ddof=1), rel=0.05
    )
    negative = SIUNITX_NUMBER.match(row[6])  # after lstm's mean and std: gru's gap
    assert negative and float(negative[2]) == pytest.approx(
        np.mean([-0.012, -0.02, 0.001]), abs=5e-4
    )
    formats = re.findall(r"S\[table-format=([^\]]+)\]", out)
    assert formats[0].endswith("e-1") and formats[1].endswith("e-1")  # exponents
    assert formats[4].startswith("+")  # the gap's sign


def latex_document(fragment: str) -> str:
    return "\n".join(
        [
            r"\documentclass{article}",
            r"\usepackage{booktabs}",
            r"\usepackage{siunitx}",
            r"\begin{document}",
            fragment,
            r"\end{document}",
        ]
    )


@pytest.mark.skipif(
    shutil.which("pdflatex") is None or shutil.which("kpsewhich") is None,
    reason="pdflatex is not installed",
)
def test_latex_outputs_compile(sweep, tmp_path, capsys):
    import subprocess

    if subprocess.run(["kpsewhich", "siunitx.sty"], capture_output=True).returncode != 0:
        pytest.skip("siunitx is not installed")
    write_run(
        sweep.root,
        "7_small",
        task="adding",
        metrics={"test_loss": [5.3e-5, 5.9e-5], "gap": [-1e-3, 2e-3]},
    )
    for extra in ([], ["--latex-siunitx"], ["--caption", r"\emph{GRU} vs.\ LSTM"]):
        rc, out, _ = run_main(
            capsys, sweep.root, "--format", "latex", "--metric", "test_loss,gap,params", *extra
        )
        assert rc == 0
        tex = tmp_path / "doc.tex"
        tex.write_text(latex_document(out))
        p = subprocess.run(
            ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", tex.name],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert p.returncode == 0, (extra, p.stdout[-3000:])
        assert (tmp_path / "doc.pdf").stat().st_size > 0


def two_by_two_by_two(root: Path) -> dict:
    """A Hydra sweep model=gru,lstm model.depth=1,2 task.seq_len=10,20: every job the same
    two seeds, as `trainer.seeds=2` gives each."""
    runs = {}
    for i, (model, depth, seq_len) in enumerate(
        (m, d, t) for m in MODELS for d in (1, 2) for t in (10, 20)
    ):
        runs[(model, depth, seq_len)] = write_run(
            root, f"{i}", model=model, depth=depth, seq_len=seq_len, seeds=(0, 1)
        )
    return runs


def sweep_end(root: Path) -> None:
    cfg = SimpleNamespace(hydra=SimpleNamespace(sweep=SimpleNamespace(dir=str(root))))
    SweepSummary().on_multirun_end(cfg)


def test_sweep_report_separates_every_key_that_varies(tmp_path, capsys):
    root = tmp_path / "sweep"
    runs = two_by_two_by_two(root)
    sweep_end(root)
    report = (root / "report.md").read_text()
    head, rows = md_table(report)
    assert head == ["task", "seq_len", "depth"] + [
        f"{m} {model}" for m in ("test_loss", "test_accuracy") for model in MODELS
    ]
    assert [r[:3] for r in rows] == [["copy", str(t), str(d)] for t in (10, 20) for d in (1, 2)]
    for row in rows:
        seq_len, depth = int(row[1]), int(row[2])
        for j, (metric, model) in enumerate(
            (m, x) for m in ("test_loss", "test_accuracy") for x in MODELS
        ):
            cell = parse_cell(row[3 + j])
            values = np.array(runs[(model, depth, seq_len)]["metrics"][metric])
            assert cell.n == 2  # one run's two seeds, never depth 1 and 2 together
            check_number(cell.mean, cell.std, values)
    assert "pooled:" not in report and "rerun" not in report
    # summary.md: a row per run, every varying key shown, no two rows alike
    lines = (root / "summary.md").read_text().splitlines()
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    key = [head.index(k) for k in ("model", "depth", "seq_len")]
    described = {tuple(ln.strip("|").split("|")[i].strip() for i in key) for ln in lines[2:]}
    assert len(described) == len(lines) - 2 == 8


def test_sweep_summary_shows_keys_beyond_the_usual_columns(tmp_path):
    root = tmp_path / "lr"
    grid = [(m, lr, n) for m in MODELS for lr in (1e-3, 1e-2) for n in (500, 1000)]
    for i, (model, lr, size) in enumerate(grid):
        write_run(root, f"{i}", model=model, lr=lr, train_size=size)
    sweep_end(root)
    lines = (root / "summary.md").read_text().splitlines()
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    cols = [head.index(k) for k in ("model", "trainer.lr", "train_size")]
    shown = [tuple(ln.strip("|").split("|")[i].strip() for i in cols) for ln in lines[2:]]
    assert sorted(shown) == sorted((m, f"{lr:g}", str(n)) for m, lr, n in grid)
    head, rows = md_table((root / "report.md").read_text())
    assert head[:4] == ["task", "seq_len", "train_size", "trainer.lr"] and len(rows) == 4
    assert all(parse_cell(c).n == 2 for row in rows for c in row[4:])


def test_sweep_report_keeps_a_key_fixed_per_model_out_of_the_rows(tmp_path):
    # parameter-matched sizes: hidden is set by the model, so it pools nothing in a model column
    root = tmp_path / "matched"
    write_run(root, "gru", model="gru", hidden=46)
    write_run(root, "lstm", model="lstm", hidden=36)
    sweep_end(root)
    report = (root / "report.md").read_text()
    head, rows = md_table(report)
    assert head[:2] == ["task", "seq_len"] and "hidden" not in head and len(rows) == 1
    assert "pooled:" not in report


def test_rerun_note_only_for_the_same_config_and_seed(tmp_path, capsys):
    root = tmp_path / "s"
    write_run(root, "a", seeds=(0, 1))
    write_run(root, "b", seeds=(0, 1), hidden=64)  # another config, the same seeds by design
    rc, out, _ = run_main(capsys, root, "--rows", "task", "--cols", "model")
    assert rc == 0 and "differ in hidden" in out and "rerun" not in out
    write_run(root, "c", seeds=(1, 2))  # a's config again: seed 1 twice
    rc, out, _ = run_main(capsys, root, "--rows", "task", "--cols", "model")
    assert "differ in hidden" in out
    assert "(a rerun): task=copy, model=gru: seed 1." in out


def test_sweep_report_of_populations_picks_each_cells_rate_on_validation(tmp_path):
    root = tmp_path / "pop"
    chosen = {}
    for model, best in (("gru", 1e-3), ("lstm", 1e-2)):
        rates = [1e-3, 1e-3, 1e-2, 1e-2]  # two seeds at each grid point
        val = [0.1 if lr == best else 0.3 for lr in rates]
        test = RNG.uniform(0.1, 0.5, 4)
        write_run(
            root,
            model,
            model=model,
            seeds=(0, 1, 0, 1),
            metrics={"test_loss": test, "best_val_loss": val, "test_accuracy": 1 - test},
            extra={
                "members": [
                    {"seed": s, "values": {"trainer.lr": lr}, "status": "completed"}
                    for s, lr in zip((0, 1, 0, 1), rates, strict=True)
                ]
            },
        )
        chosen[model] = np.array([x for x, lr in zip(test, rates, strict=True) if lr == best])
    sweep_end(root)
    report = (root / "report.md").read_text()
    head, (row,) = md_table(report)
    assert head[:2] == ["task", "seq_len"] and "trainer.lr" not in head
    for model, cell in zip(MODELS, row[2:4], strict=True):
        cell = parse_cell(cell)
        assert cell.n == 2
        check_number(cell.mean, cell.std, chosen[model])
    assert "selected: in each cell the trainer.lr" in report and "pooled:" not in report


def test_a_run_killed_before_its_results_is_counted_and_named(tmp_path, capsys):
    """A job killed outright (SIGKILL, out of memory) leaves its fingerprint.json but no
    results.json: the report counts it as failed in its cell and names it, never drops it."""
    done = write_run(tmp_path, "0_gru")
    killed = tmp_path / "1_lstm"
    killed.mkdir()
    config = {**done["config"], "model": {**done["config"]["model"], "name": "lstm"}}
    (killed / "fingerprint.json").write_text(json.dumps({"fingerprint": "f", "config": config}))
    rc, out, _ = run_main(capsys, tmp_path)
    assert rc == 0
    row = next(line for line in out.splitlines() if line.startswith("| copy"))
    assert "n/a (n=0, 2 failed)" in row  # both seeds of the lstm run
    assert "model=lstm: no results.json: killed outright, or still running" in out
    rc, out, _ = run_main(capsys, tmp_path, "--format", "csv")
    lstm = next(csv.DictReader(io.StringIO(out)))
    assert (lstm["lstm n"], lstm["lstm failed"]) == ("0", "2")


def test_which_way_is_better_by_the_metrics_name():
    from grubench.runs import direction

    assert direction("test_loss") == direction("speed.step_time_ms") == "lower"
    assert direction("test_accuracy") == "higher"
    assert direction("gap") is None  # a negative gap is not better than a small one
