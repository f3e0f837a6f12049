"""The registries: every list of cells and tasks reads them, and a cell and a task from a
module outside grubench train end to end through grubench-train without editing grubench."""

import json
import os
from pathlib import Path

import pytest
from flax import nnx

from grubench.errors import RegistryError
from grubench.layers import Recurrent
from grubench.registry import CELLS, TASKS, CellEntry, Registry
from helpers import TINY, train_cli

PLUGIN_DIR = Path(__file__).parent / "plugin"


def test_builtin_cells_and_tasks_are_registered_with_their_properties():
    assert {"gru", "gru_v1", "lstm", "rnn", "mingru", "minlstm"} <= set(CELLS.names())
    assert {
        "copy",
        "adding",
        "recall",
        "delay",
        "counting",
        "chorales",
        "sunspots",
        "digits",
    } <= set(TASKS.names())
    gru, lstm, mingru = CELLS.get("gru"), CELLS.get("lstm"), CELLS.get("mingru")
    assert (gru.gates, lstm.gates, mingru.gates) == (3, 4, 2)
    assert gru.fused and lstm.fused and not mingru.fused
    assert mingru.linear_in_h and mingru.scans == ("parallel", "sequential") and not gru.scans
    assert CELLS.get("gru_v1").defaults == {"reset_after": False}
    assert all(t.description and t.config for t in TASKS)


def test_a_registered_name_cannot_be_taken_twice():
    reg = Registry("model", "grubench.cells", "no.such.group")
    reg.add(CellEntry("x", int, "one", object))
    with pytest.raises(RegistryError, match="registered twice"):
        reg.add(CellEntry("x", str, "another", object))


def test_unknown_names_list_the_registered_ones():
    with pytest.raises(RegistryError, match="unknown model 'gruu': one of gru"):
        Recurrent("gruu", 2, 3, rngs=nnx.Rngs(0))


def _fake_install(tmp_path: Path) -> Path:
    """A site directory holding the plugin module and a dist-info that declares it under the
    grubench.cells and grubench.tasks entry-point groups, as `pip install` would leave it."""
    site = tmp_path / "site"
    (site / "toyplug-0.1.dist-info").mkdir(parents=True)
    (site / "toyplug.py").write_text((PLUGIN_DIR / "toyplug.py").read_text())
    (site / "toyplug-0.1.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: toyplug\nVersion: 0.1\n"
    )
    (site / "toyplug-0.1.dist-info" / "entry_points.txt").write_text(
        "[grubench.cells]\nleaky = toyplug\n\n[grubench.tasks]\nparity = toyplug\n"
    )
    return site


def _cli(*args, env_extra):
    return train_cli(*args, env={**os.environ, **env_extra})


def test_help_lists_registered_cells_and_tasks_plugins_included():
    p = _cli("--help", env_extra={"PYTHONPATH": str(PLUGIN_DIR), "GRUBENCH_PLUGINS": "toyplug"})
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    for name in ("gru", "gru_v1", "lstm", "rnn", "mingru", "minlstm", "leaky"):
        assert any(ln.split()[:1] == [name] for ln in lines), name
    assert any(ln.split()[:1] == ["parity"] and "running parity" in ln for ln in lines)
    assert any(ln.split()[:1] == ["copy"] for ln in lines)  # presets and tasks
    assert "schema_" not in p.stdout


def test_a_broken_plugin_is_one_line():
    p = _cli("trainer.steps=1", env_extra={"GRUBENCH_PLUGINS": "no_such_plugin_module"})
    assert p.returncode == 2
    assert p.stderr.strip().splitlines() == [
        "grubench-train: error: GRUBENCH_PLUGINS: cannot import 'no_such_plugin_module' "
        "(ModuleNotFoundError: No module named 'no_such_plugin_module')"
    ]


@pytest.mark.slow
def test_a_plugin_cell_and_task_train_end_to_end(tmp_path):
    """Installed as entry points (a dist-info on the path, nothing pip-installed): the cell's
    own option reaches the cell, the task's validation runs before any JAX work, and the run
    completes with the plugin's names in results.json."""
    site = _fake_install(tmp_path)
    env = {"PYTHONPATH": str(site)}
    bad = _cli("model=leaky", "task=parity", "task.seq_len=100", env_extra=env)
    assert bad.returncode == 2
    assert bad.stderr.strip() == (
        "grubench-train: error: task.seq_len=100 is not allowed: an integer <= 64 for parity"
    )
    out = tmp_path / "run"
    p = _cli(
        *TINY,
        "model=leaky",
        "task=parity",
        "model.leak=0.25",
        "task.seq_len=5",
        f"hydra.run.dir={out}",
        env_extra=env,
    )
    assert p.returncode == 0, p.stderr[-2000:]
    res = json.loads((out / "results.json").read_text())
    assert (res["status"], res["model"], res["task"]) == ("completed", "leaky", "parity")
    assert res["config"]["model"]["leak"] == 0.25
    # wi [4, 8] + bi, wh [8, 8] + bh (embed 2 -> 4, head 8 -> 2 around them)
    assert res["params"] == (2 * 4) + (4 * 8 + 8 + 8 * 8 + 8) + (8 * 2 + 2)
    assert res["baselines"]["loss"] == pytest.approx(0.6931, abs=1e-4)
