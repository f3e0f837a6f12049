"""Bad input, end to end: each is one line on stderr naming the problem, a non-zero exit, no
traceback, and no finished result overwritten.

The inputs tried (the BAD table below, then the tests after it):
 1 unknown key            2 unknown model          3 hidden 0               4 depth 0
 5 seeds 0                6 negative length        7 non-integer hidden     8 forget_bias on a GRU
 9 removed keys (model.cell, model.reset_after)   10 sweep without -m  11 output dir under a file
12 output dir unwritable 13 unknown logger        14 dropout out of range
15 a grid over a shape (also with +)  16 an empty grid  17 a grid value not a number, or
   not a list
18 corrupted checkpoint  19 checkpoint of another config  20 resume from nowhere
21 W&B online with no API key                     22 wandb not installed   23 torch not installed
24 rerun of a completed run (nothing overwritten) 25 corrupted checkpoint beside a finished run
"""

import json
import shutil
import sys

import pytest

from helpers import TINY, fault_env, train_cli

RUN = [*TINY, "trainer.steps=8", "trainer.checkpoint_every=5"]


def cli(*args, fault=None, home=None):
    env = {k: v for k, v in fault_env(fault).items() if k != "WANDB_API_KEY"}
    if home is not None:
        env["HOME"] = str(home)  # no ~/.netrc with a W&B key
    return train_cli(*args, env=env)


def assert_one_line(p, code, fragment):
    assert p.returncode == code, (p.returncode, p.stderr[-2000:])
    assert "Traceback" not in p.stderr + p.stdout
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    assert lines[0].startswith("grubench-train: error: ") and fragment in lines[0], lines[0]


BAD = [
    ("model.hiden=3", "model.hiden=3 is not allowed: no such key"),
    ("model=foo", "model=foo is not allowed: one of gru, gru_v1, lstm, mingru, minlstm, rnn"),
    ("model.hidden=0", "model.hidden=0 is not allowed: an integer >= 1"),
    ("model.depth=0", "model.depth=0 is not allowed: an integer >= 1"),
    ("trainer.seeds=0", "trainer.seeds=0 is not allowed: an integer >= 1"),
    ("task.seq_len=-5", "task.seq_len=-5 is not allowed: an integer >= 1"),
    ("model.hidden=abc", "model.hidden=abc is not allowed"),
    # model.forget_bias is the LSTM's own key: the GRU's config has no such key.
    ("model=gru model.forget_bias=2.0", "model.forget_bias=2.0 is not allowed: no such key"),
    # Removed keys: the GRU's form is its name (gru, gru_v1), the cell is the model.
    ("model=gru model.reset_after=false", "model.reset_after=false is not allowed: no such key"),
    ("model=gru model.cell=rnn", "model.cell=rnn is not allowed: no such key"),
    ("model=gru,lstm", "is a sweep: add -m"),
    ("logger=foo", "logger=foo is not allowed: one of none, wandb"),
    ("model.dropout=1.5", "model.dropout=1.5 is not allowed: a float in [0, 1)"),
    # A population varies values that keep shapes; the rest is a Hydra sweep.
    ("trainer.grid.hidden=[8,16]", "trainer.grid.hidden is not allowed: a population varies"),
    ("trainer.grid.lr=[]", "trainer.grid.lr=[] is not allowed: an empty grid trains nothing"),
    ("trainer.grid.lr=[0.1,fast]", "every value must be a number ('fast' is not)"),
    ("trainer.grid.lr=0.1", "trainer.grid.lr=0.1 is not allowed: a list in brackets"),
    ("+trainer.grid.hidden=[8,16]", "trainer.grid.hidden is not allowed: a population varies"),
]


@pytest.mark.parametrize("args,fragment", BAD, ids=[a for a, _ in BAD])
def test_bad_override(args, fragment, tmp_path):
    out = tmp_path / "run"
    assert_one_line(cli(*args.split(), f"hydra.run.dir={out}"), 2, fragment)
    assert not out.exists()


def test_output_dir_under_a_file(tmp_path):
    (tmp_path / "file").write_text("x")
    p = cli(f"hydra.run.dir={tmp_path / 'file' / 'run'}")
    assert_one_line(p, 2, "is not a directory")


def test_output_dir_that_cannot_be_written():
    p = cli("hydra.run.dir=/proc/grubench/run")
    assert_one_line(p, 2, "hydra.run.dir=/proc/grubench/run cannot be written")


@pytest.fixture(scope="module")
def killed(tmp_path_factory):
    """A run SIGKILLed at step 7: a checkpoint at step 5, no results."""
    out = tmp_path_factory.mktemp("killed")
    p = cli(*RUN, f"hydra.run.dir={out}", fault="kill@7")
    assert p.returncode == -9 and (out / "checkpoints" / "5").is_dir()
    return out


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("finished")
    assert cli(*RUN, f"hydra.run.dir={out}").returncode == 0
    return out


def corrupt(checkpoints):
    for f in checkpoints.rglob("*"):
        if f.is_file() and f.name != "_CHECKPOINT_METADATA":
            f.write_bytes(b"not a checkpoint")


@pytest.mark.slow
def test_corrupted_checkpoint(killed, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(killed, out)
    corrupt(out / "checkpoints")
    assert_one_line(cli(*RUN, f"hydra.run.dir={out}"), 2, "is unreadable")


@pytest.mark.slow
def test_checkpoint_of_another_config(killed, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(killed, out)
    p = cli(*RUN, "model.hidden=16", f"hydra.run.dir={out}")
    assert_one_line(p, 2, "belongs to another configuration: model.hidden=16 here, 8 in the")


@pytest.mark.slow
def test_resume_from_nowhere(tmp_path):
    p = cli(*RUN, f"trainer.resume={tmp_path / 'nothing'}", f"hydra.run.dir={tmp_path / 'r'}")
    assert_one_line(p, 2, "no checkpoint found there")


def test_wandb_online_without_an_api_key(tmp_path):
    p = cli(
        *RUN, "logger=wandb", "logger.mode=online", f"hydra.run.dir={tmp_path / 'r'}", home=tmp_path
    )
    assert_one_line(p, 2, "logger.mode=online needs a W&B API key")


def test_wandb_not_installed(monkeypatch, tmp_path):
    from grubench.tracking import Tracker, TrackingError
    from helpers import tiny_cfg

    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb now raises ImportError
    with pytest.raises(TrackingError, match=r"needs the wandb package: pip install wandb"):
        Tracker(tmp_path, tiny_cfg("logger=wandb"), {})


def test_torch_not_installed(monkeypatch):
    from flax import nnx

    from grubench.interop import to_torch
    from grubench.layers import stack

    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(ImportError, match=r"pip install -e '.\[torch\]'"):
        to_torch(stack("gru", 2, 3, 1, rngs=nnx.Rngs(0)))


@pytest.mark.slow
def test_rerun_of_a_completed_run_overwrites_nothing(finished):
    before = (finished / "results.json").read_bytes()
    p = cli(*RUN, f"hydra.run.dir={finished}")
    assert p.returncode == 0 and "completed before; not rerun" in p.stdout
    assert (finished / "results.json").read_bytes() == before


@pytest.mark.slow
def test_corrupted_checkpoint_beside_a_finished_run_loses_nothing(finished, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    corrupt(out / "checkpoints")
    before = (out / "results.json").read_bytes()
    assert json.loads(before)["status"] == "completed"
    p = cli(*RUN, f"hydra.run.dir={out}")
    assert p.returncode == 0
    assert (out / "results.json").read_bytes() == before
