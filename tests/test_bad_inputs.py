"""Bad input, end to end: each is one line on stderr naming the problem, a non-zero exit, no
traceback, and no finished result overwritten.

The inputs tried (the BAD table below through the command, CHECKED in-process, then the tests
after them):
 1 unknown key            2 unknown model          3 hidden 0               4 depth 0
 5 seeds 0                6 negative length        7 non-integer hidden     8 forget_bias on a GRU
 9 removed keys (model.cell, model.reset_after)   10 sweep without -m  11 output dir under a file
12 output dir unwritable 13 unknown logger        14 dropout out of range
15 a grid over a shape (also with +)  16 an empty grid  17 a grid value not a number, or
   not a list
18 corrupted checkpoint  19 checkpoint of another config  20 resume from nowhere
21 W&B online with no API key                     22 wandb not installed   23 torch not installed
24 rerun of a completed run (nothing overwritten) 25 corrupted checkpoint beside a finished run
26 a misspelled key added with + (model, trainer, top level)   27 an unresolvable or mistyped
   interpolation, in a value or a directory      28 a directory name too long for the file
   system            29 non-finite values (lr, bias_init, a grid value)   30 a batch larger
   than the training set                         31 a group given a value that names no config
32 null after a value (the last one named)       33 a group value that is no name (logger=null)
34 a removed model, task or seed (~model)         35 an empty directory (hydra.run.dir=)
36 a name too long below a missing directory      37 a negative task.data_seed
38 trainer.resume where there is no checkpoint (refused before Hydra makes the directory)
39 a user-data task without task.path, or with a path that is not there
Elsewhere: the user's data files (wrong format, shapes, labels, NaN, empty splits: each one
line naming the file; tests/test_tasks_user_data.py), a directory of another config or in use
(tests/test_rundir.py), random override sets (tests/test_cli_properties.py), wrong shapes
through the Python API (tests/test_layers.py).
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
    ("+model.hiden=3", "model.hiden=3 is not allowed: no such key: keys of model are name,"),
    ("model.hidden=${oops}", "model.hidden=${oops} is not allowed: Interpolation key 'oops' not"),
    (f"hydra.run.dir={'d' * 300}", "cannot be created: File name too long"),
    ("trainer.lr=inf", "trainer.lr=inf is not allowed: a finite number"),
    ("task=polyphonic", "task=polyphonic reads your file: set task.path=FILE"),
    ("task=arrays task.path=missing.npz", "task.path=missing.npz: no such file or directory"),
]


@pytest.mark.parametrize("args,fragment", BAD, ids=[a for a, _ in BAD])
def test_bad_override(args, fragment, tmp_path):
    out = tmp_path / "run"
    assert_one_line(cli(f"hydra.run.dir={out}", *args.split()), 2, fragment)
    assert not out.exists()


# The same check in-process (`grubench.cli.check_overrides`, what the command runs before
# Hydra): the command prints its error in one line, as the cases above show.
CHECKED = [
    ("+trainer.foo=1", "trainer.foo=1 is not allowed: no such key: keys of trainer are steps,"),
    ("+foo=1", "foo=1 is not allowed: no such key: keys of the config are model, task,"),
    ("model.hidden=${task.name}", "model.hidden=${task.name} is not allowed: While dereferencing"),
    ("hydra.run.dir=${oops}", "hydra.run.dir=${oops} is not allowed: Interpolation key 'oops'"),
    ("model.bias_init=nan", "model.bias_init=nan is not allowed: a finite number"),
    ("trainer.grid.lr=[0.1,inf]", "trainer.grid.lr[1]=inf is not allowed: a finite number"),
    ("trainer.batch_size=10000000", "trainer.batch_size=10000000 is not allowed: at most task."),
    ("model=-1", "model=-1 is not allowed: one of gru, gru_v1, lstm, mingru, minlstm, rnn"),
    ("task=${oops}", "task=${oops} is not allowed: one of adding, arrays, chorales, copy,"),
    ("logger=null", "logger=null is not allowed: the name of one of its configs (none, wandb"),
    ("model.hidden=16 model.hidden=null", "model.hidden=null is not allowed: field 'model.hidden'"),
    ("~model", "~model is not allowed: every run needs its model"),
    ("hydra.run.dir=", "hydra.run.dir= is not allowed: a directory for the run's files"),
    (f"hydra.run.dir=missing/{'d' * 300}/run", "cannot be created: File name too long"),
    ("task.data_seed=-1", "task.data_seed=-1 is not allowed: an integer in [0, 2**32)"),
    ("trainer.resume=nowhere", "trainer.resume=nowhere is not allowed: no checkpoint found there"),
]


@pytest.mark.parametrize("args,fragment", CHECKED, ids=[a for a, _ in CHECKED])
def test_bad_override_checked(args, fragment, tmp_path):
    from grubench.cli import check_overrides
    from grubench.errors import GrubenchError

    out = tmp_path / "run"
    with pytest.raises(GrubenchError) as e:
        check_overrides([f"hydra.run.dir={out}", *args.split()])
    assert fragment in str(e.value) and "\n" not in str(e.value)
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
    assert_one_line(cli(*RUN, f"hydra.run.dir={out}"), 2, "no intact checkpoint in")


@pytest.mark.slow
def test_checkpoint_of_another_config(killed, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(killed, out)
    p = cli(*RUN, "model.hidden=16", f"hydra.run.dir={out}")
    assert_one_line(p, 2, "holds a run of another configuration (model.hidden=16 here, 8 in")


@pytest.mark.slow
def test_resume_from_nowhere(tmp_path):
    p = cli(*RUN, f"trainer.resume={tmp_path / 'nothing'}", f"hydra.run.dir={tmp_path / 'r'}")
    assert_one_line(p, 2, "no checkpoint found there")
    assert not (tmp_path / "r").exists()  # refused before Hydra makes the directory


def test_wandb_online_without_an_api_key(tmp_path):
    p = cli(
        *RUN, "logger=wandb", "logger.mode=online", f"hydra.run.dir={tmp_path / 'r'}", home=tmp_path
    )
    assert_one_line(p, 2, "logger.mode=online needs a W&B API key")
    assert not (tmp_path / "r").exists()  # refused before Hydra makes the directory


def test_a_wandb_root_that_is_a_file(tmp_path):
    (tmp_path / "afile").write_text("")
    p = cli(
        *RUN,
        "logger=wandb",
        "logger.mode=offline",
        f"logger.dir={tmp_path / 'afile'}",
        f"hydra.run.dir={tmp_path / 'r'}",
    )
    assert_one_line(p, 2, f"logger.dir={tmp_path / 'afile'} is not a directory")
    assert not (tmp_path / "r").exists()


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
