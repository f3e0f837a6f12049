"""grubench-report --plots on fake sweeps (results.json and metrics.jsonl written by hand, no
training): every kind in PDF, PNG and SVG; text size at the printed width; the same colour per
model in every figure, line style and panels for the other keys; train and validation curves,
the baseline, bands only where values pool, seconds on x, gradient norms before and after."""

import json
from pathlib import Path

import numpy as np
import pytest
from matplotlib.collections import LineCollection, PolyCollection
from matplotlib.colors import to_rgb
from matplotlib.text import Text

from grubench.plots import FIGSIZES, MIN_FONT_PT, figures
from grubench.report import main
from grubench.runs import read_runs

EVERY = 10  # steps between evaluations in the fake metrics.jsonl


def val_loss(model: str, step: int, i: int) -> float:
    """The fake validation loss of seed index i at `step`: falling, seeds apart, LSTM higher."""
    return 2.0 * np.exp(-step / 40) + 0.05 * (1 + i) + (0.1 if model == "lstm" else 0.0)


def fake_run(
    root: Path,
    name: str,
    *,
    model: str = "gru",
    task: str = "copy",
    seq_len: int = 20,
    depth: int = 1,
    train_size: int = 1000,
    seeds=(0, 1),
    evals: int = 10,
    scheme: str = "new",
    baseline: float | None = 2.0,
    seconds_per_step: float = 0.01,
    diverged=None,
    status: str = "completed",
    extra=None,
) -> dict:
    """A run directory as the trainer leaves it. `scheme`: "new" (train/seconds, evaluated
    train/loss beside val/loss, the minibatch's as train/loss_batch), "old" (train/loss the
    minibatch's, no seconds) or None (no metrics.jsonl)."""
    seeds = list(seeds)
    d = root / name
    d.mkdir(parents=True)
    k = len(seeds)
    test = [val_loss(model, evals * EVERY, i) for i in range(k)]
    res = {
        "schema": 1,
        "status": status,
        "error": "RuntimeError: out of memory" if status == "failed" else None,
        "config": {
            "model": {"name": model, "hidden": 32, "depth": depth},
            "task": {"name": task, "seq_len": seq_len, "train_size": train_size},
            "trainer": {"lr": 0.01, "seeds": k, "steps": evals * EVERY},
            "logger": {"name": "none"},
            "seed": seeds[0],
        },
        "model": model,
        "task": task,
        "hidden": 32,
        "depth": depth,
        "seq_len": seq_len,
        "train_size": train_size,
        "params": 1000,
        "seeds": seeds,
        "metrics": {"test_loss": test, "val_loss": test, "gap": [0.1 * (1 + i) for i in range(k)]},
        "baselines": {"loss": baseline},
        "speed": {"step_time_ms": seq_len * (0.1 if model == "gru" else 0.13)},
        "memory": {"train_step_bytes": seq_len * 2**20},
    }
    if diverged:
        res["diverged"] = {str(s): st for s, st in diverged.items()}
        res["status"] = "diverged"
    res.update(extra or {})
    (d / "results.json").write_text(json.dumps(res))
    if scheme is None or status == "failed":
        return res
    rows = []
    for step in range(EVERY, (evals + 1) * EVERY, EVERY):
        val = {"val/loss": [val_loss(model, step, i) for i in range(k)], "val/accuracy": [0.5] * k}
        if scheme == "new":  # one row per step
            rows.append(
                {
                    "step": step,
                    "train/seconds": step * seconds_per_step,
                    "train/loss_batch": [9.0] * k,
                    "train/grad_norm": [1.0] * k,
                    "train/steps_per_s": 100.0,
                    **val,
                    "train/loss": [0.8 * v for v in val["val/loss"]],
                    "train/accuracy": [0.6] * k,
                }
            )
        else:  # the minibatch's loss as train/loss, evaluations in rows of their own
            rows.append({"step": step, "train/loss": [9.0] * k, "steps_per_s": 100.0})
            rows.append({"step": step, **val})
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return res


def grad_records(seq_len: int, k: int) -> dict:
    t = list(range(seq_len))
    return {
        "grad_norms_init": {"t": t, "step": 0, "norm": [[0.9**x + i for x in t] for i in range(k)]},
        "grad_norms": {
            "t": t,
            "step": 100,
            "norm": [[2.0 * 0.5**x + i for x in t] for i in range(k)],
        },
    }


def full_sweep(root: Path) -> None:
    """Runs with every kind of plot data: seq_len and train_size sweeps, recall, grad norms."""
    for model in ("gru", "lstm"):
        for seq_len in (10, 100, 1000):
            lags = [1, 2, 4, 8]
            extra = {
                "recall": {
                    "lags": lags,
                    "accuracy": [[1 - lag / 20 - s / 50 for lag in lags] for s in range(2)],
                },
                **grad_records(4, 2),
            }
            fake_run(root, f"{model}_{seq_len}", model=model, seq_len=seq_len, extra=extra)
        for size in (100, 1000):
            fake_run(
                root, f"{model}_n{size}", model=model, seq_len=10, train_size=size, scheme=None
            )
    fake_run(root, "failed", seq_len=100, status="failed")


def draw(root: Path, figsize: str = "page", x: str = "steps"):
    runs = read_runs([root])
    made, skipped = figures(runs, figsize, x)
    return dict(made), skipped


def curves(ax, suffix: str = "") -> dict:
    """{label: Line2D} of the data lines of a panel whose label ends with `suffix`."""
    return {
        ln.get_label(): ln
        for ln in ax.get_lines()
        if ln.get_label().endswith(suffix)
        and ln.get_label() != "baseline"
        and not ln.get_label().startswith("_")  # error bars' caps
    }


def legend_texts(fig) -> list[str]:
    return [t.get_text() for leg in fig.legends for t in leg.get_texts()]


def bands(ax) -> list:
    return [c for c in ax.collections if isinstance(c, PolyCollection)]


def run_main(capsys, *argv):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_every_kind_is_written_as_pdf_png_and_svg(tmp_path, capsys):
    full_sweep(tmp_path / "s")
    plots = tmp_path / "plots"
    rc, _, err = run_main(capsys, tmp_path / "s", "--plots", plots, "--figsize", "column")
    assert rc == 0, err
    kinds = [
        "learning_curves_copy",
        "step_time_vs_seq_len",
        "memory_vs_seq_len",
        "gap_vs_train_size",
        "recall_vs_lag",
        "grad_norm_vs_t",
    ]
    magic = {"pdf": b"%PDF-", "png": b"\x89PNG\r\n\x1a\n", "svg": b"<?xml"}
    for stem in kinds:
        for ext, head in magic.items():
            path = plots / f"{stem}.{ext}"
            assert path.read_bytes().startswith(head), path
            assert f"wrote {path}" in err
    assert sorted(p.name for p in plots.iterdir()) == sorted(
        f"{s}.{ext}" for s in kinds for ext in magic
    )
    assert "left out 1 failed run" in err


@pytest.mark.parametrize("figsize", ["column", "page"])
def test_text_is_at_least_7_pt_and_inside_the_figure_at_its_printed_width(tmp_path, figsize):
    full_sweep(tmp_path / "s")
    for x in ("steps", "seconds"):
        figs, _ = draw(tmp_path / "s", figsize, x)
        assert len(figs) == 6
        for name, fig in figs.items():
            assert fig.get_size_inches()[0] == pytest.approx(FIGSIZES[figsize]), name
            texts = [t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()]
            assert len(texts) > 10, name  # titles, labels, ticks and legend all walked
            for t in texts:
                assert t.get_fontsize() >= MIN_FONT_PT, (name, t.get_text(), t.get_fontsize())
            # everything drawn (legend, titles, tick labels in view) lies inside the figure
            drawn = fig.get_tightbbox(fig.canvas.get_renderer())  # inches
            width, height = fig.get_size_inches()
            assert drawn.x0 >= -0.01 and drawn.x1 <= width + 0.01, (name, drawn)
            assert drawn.y0 >= -0.01 and drawn.y1 <= height + 0.01, (name, drawn)


def grid_sweep(root: Path) -> None:
    """model x depth x seq_len, two seeds each; recall recorded for the LSTM only."""
    for model in ("gru", "lstm"):
        for depth in (1, 2):
            for seq_len in (10, 20):
                extra = {}
                if model == "lstm":
                    extra = {"recall": {"lags": [1, 2, 3], "accuracy": [[0.9, 0.8, 0.7]] * 2}}
                fake_run(
                    root,
                    f"{model}_{depth}_{seq_len}",
                    model=model,
                    depth=depth,
                    seq_len=seq_len,
                    extra=extra,
                )


def test_one_colour_per_model_style_per_second_key_panels_for_the_third(tmp_path):
    grid_sweep(tmp_path / "s")
    figs, _ = draw(tmp_path / "s")
    lc = figs["learning_curves_copy"]
    assert [ax.get_title() for ax in lc.axes] == ["seq_len=10", "seq_len=20"]
    colour: dict[str, tuple] = {}
    style: dict[str, object] = {}
    for name in ("learning_curves_copy", "step_time_vs_seq_len", "recall_vs_lag"):
        for ax in figs[name].axes:
            for label, ln in curves(ax).items():
                if label.endswith(": train"):
                    continue
                model, depth = label.split(": ")[0].split(", ")
                colour.setdefault(model, to_rgb(ln.get_color()))
                assert to_rgb(ln.get_color()) == colour[model], (name, label)
                style.setdefault(depth, ln.get_linestyle())
                assert ln.get_linestyle() == style[depth], (name, label)
    # the recall figure has the LSTM alone, in the LSTM's colour of the other figures
    assert set(colour) == {"gru", "lstm"} and colour["gru"] != colour["lstm"]
    assert style["depth=1"] != style["depth=2"]
    recall = {lab.split(",")[0] for lab in curves(figs["recall_vs_lag"].axes[0])}
    assert recall == {"lstm"}
    texts = legend_texts(lc)
    assert texts[:4] == ["gru", "lstm", "depth=1", "depth=2"]


def test_train_and_validation_curves_share_the_colour_train_lighter_and_dotted(tmp_path):
    fake_run(tmp_path / "s", "gru", model="gru")
    fake_run(tmp_path / "s", "lstm", model="lstm")
    figs, skipped = draw(tmp_path / "s")
    fig = figs["learning_curves_copy"]
    ax = fig.axes[0]
    lines = curves(ax)
    assert set(lines) == {"gru: validation", "gru: train", "lstm: validation", "lstm: train"}
    for model in ("gru", "lstm"):
        val, train = lines[f"{model}: validation"], lines[f"{model}: train"]
        assert train.get_linestyle() == ":" and val.get_linestyle() == "-"
        lighter = (np.array(to_rgb(val.get_color())) + 1) / 2
        assert np.allclose(to_rgb(train.get_color()), lighter)
        steps = np.arange(EVERY, 11 * EVERY, EVERY)
        mean_val = [np.mean([val_loss(model, s, i) for i in range(2)]) for s in steps]
        assert np.allclose(val.get_xdata(), steps) and np.allclose(val.get_ydata(), mean_val)
        assert np.allclose(train.get_ydata(), 0.8 * np.array(mean_val))
    assert {"validation", "train"} <= set(legend_texts(fig))
    assert "train" in fig.get_suptitle().lower()
    assert not [s for s in skipped if "learning curves" in s]


def test_an_older_metrics_file_draws_validation_only_and_says_so(tmp_path):
    fake_run(tmp_path / "s", "gru", scheme="old")
    figs, skipped = draw(tmp_path / "s")
    # its train/loss is a minibatch's (no val/loss beside it): not drawn as a train curve
    assert set(curves(figs["learning_curves_copy"].axes[0])) == {"gru: validation"}
    assert any("without an evaluated train loss" in s for s in skipped)
    figs, skipped = draw(tmp_path / "s", x="seconds")
    assert "learning_curves_copy" not in figs
    assert any("no metrics.jsonl has train/seconds" in s for s in skipped)


def test_the_baseline_is_a_grey_dashed_line_at_its_value(tmp_path):
    fake_run(tmp_path / "s", "a", seq_len=10, baseline=1.25)
    fake_run(tmp_path / "s", "b", seq_len=20, baseline=None)
    figs, _ = draw(tmp_path / "s")
    fig = figs["learning_curves_copy"]
    with_base, without = fig.axes
    (base,) = [ln for ln in with_base.get_lines() if ln.get_label() == "baseline"]
    assert np.allclose(base.get_ydata(), 1.25)
    assert base.get_linestyle() == "--"
    r, g, b = to_rgb(base.get_color())
    assert r == g == b  # grey
    assert not [ln for ln in without.get_lines() if ln.get_label() == "baseline"]
    assert "baseline" in legend_texts(fig)


def test_bands_only_where_two_or_more_values_pool(tmp_path):
    root = tmp_path / "s"
    fake_run(root, "gru", model="gru", seeds=(0, 1), diverged={1: 55})
    fake_run(root, "lstm", model="lstm", seeds=(0,))
    figs, _ = draw(root)
    fig = figs["learning_curves_copy"]
    (band,) = bands(fig.axes[0])
    assert np.allclose(
        band.get_facecolor()[0][:3], to_rgb(curves(fig.axes[0])["gru: validation"].get_color())
    )
    xs = np.concatenate([p.vertices[:, 0] for p in band.get_paths()])
    assert xs.min() == EVERY and xs.max() == 50  # seed 1 diverged at step 55
    assert "band: min–max, 2 seeds" in legend_texts(fig)

    one = tmp_path / "one"
    fake_run(one, "gru", model="gru", seeds=(0,))
    fake_run(one, "lstm", model="lstm", seeds=(0,))
    figs, _ = draw(one)
    fig = figs["learning_curves_copy"]
    assert not bands(fig.axes[0])
    assert not [t for t in legend_texts(fig) if "min–max" in t or "band" in t]


def test_a_short_line_marks_its_points_and_shows_its_spread_as_bars(tmp_path):
    fake_run(tmp_path / "s", "gru", seeds=(0, 1), evals=3)
    figs, _ = draw(tmp_path / "s")
    fig = figs["learning_curves_copy"]
    ax = fig.axes[0]
    val = curves(ax)["gru: validation"]
    assert len(val.get_xdata()) == 3 and val.get_marker() not in (None, "None", "")
    assert not bands(ax)
    bars = [c for c in ax.collections if isinstance(c, LineCollection)]
    assert bars and len(bars[0].get_segments()) == 3
    assert "bars: min–max, 2 seeds" in legend_texts(fig)


def test_x_seconds_is_train_seconds_averaged_over_pooled_runs(tmp_path):
    root = tmp_path / "s"
    fake_run(root, "gru_a", seeds=(0, 1), seconds_per_step=0.01)
    fake_run(root, "gru_b", seeds=(2, 3), seconds_per_step=0.03)  # pooled: differs in seed only
    fake_run(root, "lstm_old", model="lstm", scheme="old")
    figs, skipped = draw(root, x="seconds")
    ax = figs["learning_curves_copy"].axes[0]
    assert ax.get_xlabel() == "training time (s)"
    lines = curves(ax)
    assert set(lines) == {"gru: validation", "gru: train"}  # the old LSTM file has no seconds
    steps = np.arange(EVERY, 11 * EVERY, EVERY)
    assert np.allclose(lines["gru: validation"].get_xdata(), steps * 0.02)
    assert np.allclose(lines["gru: train"].get_xdata(), steps * 0.02)
    assert any("left out 1 run without train/seconds" in s and "lstm_old" in s for s in skipped)


def test_gradient_norms_at_init_and_after_training_share_a_figure(tmp_path):
    fake_run(tmp_path / "s", "gru", extra=grad_records(6, 2))
    figs, _ = draw(tmp_path / "s")
    fig = figs["grad_norm_vs_t"]
    ax = fig.axes[0]
    lines = curves(ax)
    final, init = lines["gru: final (step 100)"], lines["gru: initial (step 0)"]
    t = np.arange(6)
    assert np.allclose(final.get_ydata(), 2.0 * 0.5**t + 0.5)  # mean over seeds 0 and 1
    assert np.allclose(init.get_ydata(), 0.9**t + 0.5)
    assert init.get_linestyle() == ":" and final.get_linestyle() == "-"
    assert ax.get_yscale() == "linear"  # 0.53 .. 2.5: not two decades
    assert {"final (step 100)", "initial (step 0)"} <= set(legend_texts(fig))


def test_plots_are_skipped_without_their_data(tmp_path, capsys):
    root = tmp_path / "s"
    for model in ("gru", "lstm"):
        for seq_len in (20, 50):
            fake_run(root, f"{model}_{seq_len}", model=model, seq_len=seq_len)
    rc, _, err = run_main(capsys, root, "--plots", tmp_path / "plots")
    assert rc == 0
    names = sorted({p.stem for p in (tmp_path / "plots").iterdir()})
    assert names == ["learning_curves_copy", "memory_vs_seq_len", "step_time_vs_seq_len"]
    assert "skipped generalisation gap" in err and "no run records recall" in err
    assert "no run records grad_norms" in err
    one = tmp_path / "one"
    fake_run(one, "a", scheme=None)
    fake_run(one, "b", model="lstm", scheme=None)
    rc, _, err = run_main(capsys, one, "--plots", tmp_path / "none")
    assert rc == 0 and list((tmp_path / "none").iterdir()) == []
    assert "skipped learning curves" in err and "skipped step time" in err


def test_axes_are_labelled_with_units_and_log_where_wide(tmp_path):
    full_sweep(tmp_path / "s")
    figs, _ = draw(tmp_path / "s")
    ax = figs["step_time_vs_seq_len"].axes[0]
    assert ax.get_xlabel() == "sequence length (steps)" and ax.get_ylabel() == "step time (ms)"
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"  # 10..1000, 1..130 ms
    fig = figs["memory_vs_seq_len"]
    assert fig.axes[0].get_ylabel() == "train-step memory (MiB)"
    # one line per experiment: train_size varies in this sweep, so it is the line style
    assert legend_texts(fig) == [
        "gru",
        "lstm",
        "train_size=100",
        "train_size=1000",
        "bars: min–max, 2 runs",
    ]
    assert figs["learning_curves_copy"].axes[0].get_ylabel() == "loss (nats)"


@pytest.mark.parametrize("option", ["--figsize", "--x"])
def test_a_bad_figsize_or_x_is_one_line_and_exit_2(tmp_path, capsys, option):
    fake_run(tmp_path / "s", "a", scheme=None)
    rc, out, err = run_main(capsys, tmp_path / "s", "--plots", tmp_path / "p", option, "foo")
    assert rc == 2 and out == ""
    assert err.startswith("grubench-report: error: ") and err.count("\n") == 1
    assert "invalid choice: 'foo'" in err and "Traceback" not in err
