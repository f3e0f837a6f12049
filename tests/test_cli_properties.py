"""Property: whatever overrides a user types (values of the schema's keys, right or wrong, keys
added with `+`, interpolations), grubench-train either runs or refuses in one line, exit 2,
before any training, writing nothing outside the run directory.

The fast test checks the command line's check (`grubench.cli.check_overrides`, no JAX) on 40
drawn override sets; the slow one runs 3 through the real command. Both are derandomised: the
same sets on every run."""

import subprocess
import sys

import pytest

pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from grubench.cli import check_overrides
from grubench.errors import GrubenchError
from helpers import TINY, fault_env

# Keys of the schema with values a tiny run takes (the run stays small whatever is drawn).
GOOD = {
    "model": st.sampled_from(["gru", "gru_v1", "lstm", "rnn", "mingru", "minlstm"]),
    "model.hidden": st.integers(1, 8).map(str),
    "model.depth": st.integers(1, 2).map(str),
    "model.dropout": st.sampled_from(["0.0", "0.1", "0.5"]),
    "model.bias_init": st.sampled_from(["0.0", "-1", "0.5"]),
    "task": st.sampled_from(["copy", "adding", "delay", "counting"]),
    "task.seq_len": st.integers(2, 6).map(str),
    "trainer.lr": st.sampled_from(["1e-3", "0.01", "0.3"]),
    "trainer.batch_size": st.integers(1, 8).map(str),
    "trainer.steps": st.integers(1, 3).map(str),
    "trainer.seeds": st.integers(1, 2).map(str),
    "trainer.clip_norm": st.sampled_from(["0", "1.0"]),
    "trainer.grid.lr": st.sampled_from(["[1e-3,1e-2]", "[0.01]"]),
    "seed": st.integers(0, 3).map(str),
}
# Values that are wrong for most keys: out of range, non-finite, the wrong type, missing,
# unresolvable or mistyped interpolations.
BAD_VALUES = [
    "-1",
    "0",
    "inf",
    "nan",
    "-inf",
    "1e400",
    "abc",
    "null",
    "''",
    "[1,2]",
    "[]",
    "${oops}",
    "${task.name}",
    "${model.hidden}",
    "${model.nope}",
]
ADDED_KEYS = ["+model.hiden", "+trainer.foo", "+foo", "+task.lenght", "+logger.x", "++trainer.bar"]


@st.composite
def override(draw) -> str:
    kind = draw(st.sampled_from(["good", "bad", "added"]))
    if kind == "added":
        return f"{draw(st.sampled_from(ADDED_KEYS))}={draw(st.sampled_from(['1', 'x']))}"
    key = draw(st.sampled_from(sorted(GOOD)))
    value = draw(GOOD[key]) if kind == "good" else draw(st.sampled_from(BAD_VALUES))
    return f"{key}={value}"


overrides = st.lists(override(), min_size=1, max_size=3)


@settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(drawn=overrides)
def test_the_command_line_check_accepts_or_refuses_in_one_line(drawn, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    try:
        check_overrides([*TINY, *drawn, f"hydra.run.dir={out}"])
    except GrubenchError as e:
        message = str(e)
        assert message and "\n" not in message, message
        keys = [d.lstrip("+").split("=")[0] for d in drawn]
        assert any(k in message for k in keys), message  # it names what was wrong
    assert list(out.iterdir()) == []  # the check writes nothing


@pytest.mark.slow
@settings(
    max_examples=3,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(drawn=overrides)
def test_the_command_runs_or_refuses_in_one_line_and_writes_only_its_directory(
    drawn, tmp_path_factory
):
    cwd = tmp_path_factory.mktemp("cwd")
    p = subprocess.run(
        [sys.executable, "-m", "grubench.train", *TINY, *drawn, "hydra.run.dir=run"],
        capture_output=True,
        text=True,
        env=fault_env(),
        cwd=cwd,
        timeout=300,
    )
    assert "Traceback" not in p.stderr + p.stdout, p.stderr[-3000:]
    if p.returncode == 0:
        assert '"status": "completed"' in (cwd / "run/results.json").read_text()
    else:
        assert p.returncode == 2, p.stderr[-3000:]
        lines = p.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("grubench-train: error: "), p.stderr
    assert [x.name for x in cwd.iterdir()] in ([], ["run"])
