"""The command line end to end at tiny size, and bad overrides: one line, exit 2."""

import json

import pytest

from grubench.cli import check_overrides
from grubench.config import ConfigError
from helpers import TINY, train_cli


def run_cli(*args, cwd):
    return train_cli(*args, cwd=cwd)


@pytest.mark.slow
def test_single_run_writes_results_and_prints_summary(tmp_path):
    out = tmp_path / "run"
    p = run_cli(
        *TINY, "model=lstm", "task=adding", "task.seq_len=6", f"hydra.run.dir={out}", cwd=tmp_path
    )
    assert p.returncode == 0, p.stderr
    res = json.loads((out / "results.json").read_text())
    assert res["status"] == "completed" and res["model"] == "lstm" and res["task"] == "adding"
    assert res["config"]["task"]["seq_len"] == 6
    assert "lstm on adding (seq_len=6" in p.stdout and "baseline 0.167" in p.stdout
    assert (out / "metrics.jsonl").exists()
    # The run talks: where its outputs go first; off a terminal a progress line every
    # log_every steps (TINY: 3 of 6) and each evaluation; a warning for a sparse curve.
    lines = p.stdout.splitlines()
    assert lines[0] == f"output directory: {out}"
    steps = [x for x in lines if x.startswith("step ")]
    assert [x.split()[1] for x in steps] == ["3/6", "6/6"]
    assert all("steps/s" in x and "ETA" in x for x in steps)
    assert sum(x.startswith("evaluation at step") for x in lines) == 2
    assert "warning: trainer.eval_every=3 gives 2 evaluation(s) in 6 steps" in p.stdout
    assert "config:" not in p.stdout  # the config goes to train.log only
    # train.log holds all of it, and the config and checkpoint saves.
    log = (out / "train.log").read_text()
    for said in (
        "output directory:",
        "config:\nmodel:\n  name: lstm",
        "step 3/6",
        "evaluation at step 6",
        "checkpoint saved at step 6",
        "[WARNING] trainer.eval_every=3",
        "lstm on adding (seq_len=6",
    ):
        assert said in log, said


@pytest.mark.slow
def test_sweep_runs_every_job_and_summarises_side_by_side(tmp_path):
    sweep = tmp_path / "sweep"
    p = run_cli(
        "-m", "model=gru,lstm", *TINY, "trainer.steps=3", f"hydra.sweep.dir={sweep}", cwd=tmp_path
    )
    assert p.returncode == 0, p.stderr
    runs = sorted(sweep.glob("*/results.json"))
    assert [json.loads(r.read_text())["model"] for r in runs] == ["gru", "lstm"]
    table = (sweep / "summary.md").read_text().splitlines()
    assert table[0].startswith("| model") and len(table) == 4
    assert table[2].startswith("| gru ") and table[3].startswith("| lstm")
    assert "| lstm" in p.stdout


@pytest.mark.slow
def test_a_sweep_goes_on_past_a_diverged_run(tmp_path):
    sweep = tmp_path / "sweep"
    p = run_cli(
        "-m",
        *TINY,
        "task=adding",
        "task.seq_len=6",
        "trainer.clip_norm=0",
        "trainer.lr=1e30,1e-2",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
    )
    assert p.returncode == 0, p.stderr
    runs = [json.loads(r.read_text()) for r in sorted(sweep.glob("*/results.json"))]
    assert [r["status"] for r in runs] == ["diverged", "completed"]
    assert "non-finite loss: seed 0 at step" in p.stdout


BAD = [
    (["model.hiden=3"], "model.hiden=3 is not allowed: no such key"),
    (["model=foo"], "model=foo is not allowed: one of gru, gru_v1, lstm, mingru, minlstm, rnn"),
    (
        ["task=nope"],
        "task=nope is not allowed: one of adding, arrays, chorales, copy, counting, delay, digits, "
        "polyphonic, recall, smnist, sunspots, text",
    ),
    (["model.hidden=0"], "model.hidden=0 is not allowed: an integer >= 1"),
    (["model.hidden=abc"], "model.hidden=abc is not allowed"),
    (["model.depth=0"], "model.depth=0 is not allowed"),
    (["trainer.seeds=0"], "trainer.seeds=0 is not allowed"),
    (["task.seq_len=-1"], "task.seq_len=-1 is not allowed"),
    (["trainer.lr=-1"], "trainer.lr=-1 is not allowed"),  # as typed, not -1.0
    (["trainer.lr=-0.5"], "trainer.lr=-0.5 is not allowed"),
    (
        ["trainer.checkpoint_every_s=-2"],
        "trainer.checkpoint_every_s=-2 is not allowed: a number of seconds >= 0",
    ),
    (["model.dropout=1.5"], "model.dropout=1.5 is not allowed"),
    (
        ["model.backward=cudnn"],
        "model.backward=cudnn is not allowed: one of fused, autodiff, persistent",
    ),
    (
        ["model.backward=autodiff", "model.matmul_dtype=bfloat16"],
        "model.matmul_dtype=bfloat16 is not allowed: float32 for model=gru with "
        "model.backward=autodiff (bfloat16 needs the fused backward, or a cell linear in h)",
    ),
    (
        ["model=mingru", "model.scan=fast"],
        "model.scan=fast is not allowed: auto, parallel or sequential",
    ),
    (
        ["model.scan=parallel"],
        "model.scan=parallel is not allowed: parallel and sequential apply "
        "to cells linear in h only (model=mingru, minlstm)",
    ),
    (["model=gru", "model.forget_bias=2.0"], "model.forget_bias=2.0 is not allowed: no such key"),
    (
        ["model=gru", "model.reset_after=false"],
        "model.reset_after=false is not allowed: no such key",
    ),
    (["logger=foo"], "logger=foo is not allowed"),
    (["task=adding", "task.n_symbols=4"], "task.n_symbols=4 is not allowed: no such key"),
    (["task=recall", "task.n_keys=2"], "task.n_keys=2 is not allowed"),
    (["model=gru,lstm"], "is a sweep: add -m"),
    (["-m", "model=gru,foo"], "model=foo is not allowed"),
    (["model.hidden=[1"], "cannot parse override"),
    (["seed=-1"], "seed=-1 is not allowed: an integer in [0, 2147483647]"),
    (["trainer.seeds=4", "seed=2147483645"], "seed=2147483645 is not allowed"),
    (["trainer.optimizer=sgd"], "trainer.optimizer=sgd is not allowed: one of adamw, rmsprop"),
    (["model=gru", "model.forget_bias=1"], "(a key of model=lstm)"),
    (["--cfg", "job", "model.hidden=-3"], "model.hidden=-3 is not allowed"),  # printing checks
]


@pytest.mark.parametrize("args,message", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_overrides_are_one_clear_line(args, message):
    with pytest.raises(ConfigError) as e:
        check_overrides(args)
    assert message in str(e.value)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(
    "args,message",
    [
        (["model=gru", "model.name=lstm"], "model.name=lstm is not allowed"),
        (["task=copy", "task.name=adding"], "task.name=adding is not allowed"),
    ],
    ids=["model", "task"],
)
def test_a_name_of_another_entry_is_one_clear_line(args, message):
    """model=gru composes the GRU's keys (no forget_bias): naming another model or task there
    must be refused before training, not fail in it."""
    with pytest.raises(ConfigError) as e:
        check_overrides(args)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_a_sweep_preset_without_m_is_noted_and_a_plain_run_is_not():
    assert check_overrides(["+experiment=depth"]) == [
        "this preset is a sweep: without -m it runs one job, with its first values; add -m to "
        "run them all"
    ]
    assert check_overrides(["-m", "+experiment=depth"]) == check_overrides(["model=lstm"]) == []


def test_copy_keys_are_fine_on_copy():
    check_overrides(["task.n_symbols=4", "model=lstm", "trainer.seeds=3"])
    check_overrides(["-m", "model=gru,lstm", "task.seq_len=5,10"])
    check_overrides(["model=lstm", "model.forget_bias=2.0"])  # the LSTM's own key


@pytest.mark.parametrize("args", [["model.hiden=3"], ["trainer.seeds=0"], ["model=foo"]])
def test_cli_exits_2_with_one_line_and_no_traceback(args, tmp_path):
    p = run_cli(*args, f"hydra.run.dir={tmp_path / 'never'}", cwd=tmp_path)
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("grubench-train: error: ")
    assert "Traceback" not in p.stderr + p.stdout
    assert not (tmp_path / "never").exists()


@pytest.mark.slow
def test_a_2x2_sweep_through_the_submitit_launcher(tmp_path):
    """submitit_local runs the same path a SLURM job does: pickled jobs in worker processes."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    sweep = tmp_path / "sweep"
    p = run_cli(
        "-m",
        "hydra/launcher=submitit_local",
        *TINY,
        "trainer.steps=3",
        "model=gru,lstm",
        "task.seq_len=3,4",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    runs = [json.loads(r.read_text()) for r in sorted(sweep.glob("*/results.json"))]
    assert sorted((r["model"], r["seq_len"]) for r in runs) == [
        ("gru", 3),
        ("gru", 4),
        ("lstm", 3),
        ("lstm", 4),
    ]
    assert all(r["status"] == "completed" for r in runs)
    assert len((sweep / "summary.md").read_text().splitlines()) == 6


def test_the_slurm_launcher_config_composes():
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    from hydra import compose, initialize_config_dir

    from grubench.cli import CONF_DIR
    from grubench.config import store

    store()  # the model and task groups come from the registries, not from yaml files
    check_overrides(["-m", "hydra/launcher=slurm", "model=gru,lstm"])
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            config_name="config",
            overrides=["hydra/launcher=slurm", "hydra.launcher.partition=gpu"],
            return_hydra_config=True,
        )
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert launcher.partition == "gpu" and launcher.max_num_timeout == 3


def test_a_preset_of_ones_own_is_found_and_checked(tmp_path):
    """A user's DIR/experiment/NAME.yaml, through hydra.searchpath, composes like a shipped
    preset, and a bad value in it is the usual one line."""
    (tmp_path / "experiment").mkdir()
    preset = "# @package _global_\ndefaults:\n  - override /task: delay\ntrainer:\n  seeds: {}\n"
    (tmp_path / "experiment" / "mine.yaml").write_text(preset.format(2))
    search = f"hydra.searchpath=[file://{tmp_path}]"
    check_overrides([search, "+experiment=mine"])
    (tmp_path / "experiment" / "mine.yaml").write_text(preset.format(0))
    with pytest.raises(ConfigError, match="trainer.seeds=0 is not allowed"):
        check_overrides([search, "+experiment=mine"])
    (tmp_path / "experiment" / "mine.yaml").write_text(":not yaml\n  - x: [\n")
    with pytest.raises(ConfigError) as e:
        check_overrides([search, "+experiment=mine"])
    assert str(e.value).startswith("cannot compose the config (ScannerError: ")
    assert "experiment/mine.yaml" in str(e.value) and "\n" not in str(e.value)
