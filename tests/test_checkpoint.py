"""Checkpoints: round trip of the whole state, keep-last-k, and refusing bad checkpoints."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from grubench.checkpoint import CheckpointError, Checkpoints, config_difference

CONFIG = {"model": {"hidden": 8}, "trainer": {"steps": 10, "progress": True}}


def state(x: float):
    return {
        "params": {"w": jnp.full((2, 3), x), "b": jnp.arange(3.0) + x},
        "key": jax.random.split(jax.random.key(int(x)), 2),
        "flag": jnp.array([True, False]),
        "step": jnp.array([-1, 4], jnp.int32),
    }


def test_round_trip_keeps_every_leaf_and_the_prng_keys(tmp_path):
    ck = Checkpoints(tmp_path, keep=2)
    ck.save(3, state(1.0), {"step": 3, "config": CONFIG, "best_val": [np.inf, 0.5]})
    got, meta = ck.restore(state(0.0), CONFIG)
    want = state(1.0)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        if jax.dtypes.issubdtype(b.dtype, jax.dtypes.prng_key):
            a, b = jax.random.key_data(a), jax.random.key_data(b)
        np.testing.assert_array_equal(a, b)
    assert meta["step"] == 3 and meta["best_val"] == [None, 0.5]


def test_keeps_the_last_k_and_restores_the_newest(tmp_path):
    ck = Checkpoints(tmp_path, keep=2)
    for step in (2, 4, 6):
        ck.save(step, state(float(step)), {"step": step, "config": CONFIG})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["4", "6"]
    got, meta = ck.restore(state(0.0), CONFIG)
    assert meta["step"] == 6 and float(got["params"]["w"][0, 0]) == 6.0


def test_a_half_written_save_is_not_taken(tmp_path):
    ck = Checkpoints(tmp_path, keep=2)
    ck.save(2, state(2.0), {"step": 2, "config": CONFIG})
    # What a kill in the middle of orbax's save of step 4 leaves behind: a temporary directory.
    (tmp_path / "4.orbax-checkpoint-tmp-1234").mkdir()
    (tmp_path / "4.orbax-checkpoint-tmp-1234" / "junk").write_bytes(b"\x00" * 10)
    assert Checkpoints(tmp_path).latest() == 2


def test_none_when_there_is_no_checkpoint(tmp_path):
    assert Checkpoints(tmp_path / "absent").restore(state(0.0), CONFIG) is None


def test_a_corrupted_checkpoint_is_refused(tmp_path, capsys):
    Checkpoints(tmp_path).save(5, state(1.0), {"step": 5, "config": CONFIG})
    for f in (tmp_path / "5").rglob("*"):
        if f.is_file():
            f.write_bytes(b"garbage")
    with pytest.raises(
        CheckpointError, match="no intact checkpoint in .*: remove .* to start the run afresh"
    ):
        Checkpoints(tmp_path).restore(state(0.0), CONFIG)
    assert (tmp_path / "5").is_dir()  # nothing renamed when nothing is intact
    assert capsys.readouterr().err == ""  # the error is the one line


def flip_a_bit(path, where: float = 0.5) -> None:
    data = bytearray(path.read_bytes())
    data[int(len(data) * where)] ^= 0x10
    path.write_bytes(bytes(data))


def array_file(step_dir):
    """The file holding a checkpoint's array data (the largest of TensorStore's data files,
    in a `d/` directory)."""
    files = [
        f
        for f in step_dir.rglob("*")
        if f.is_file() and f.parent.name == "d" and "ocdbt.process" not in str(f)
    ]
    return max(files, key=lambda f: f.stat().st_size)


@pytest.mark.parametrize("where", ["arrays", "index"])
def test_a_flipped_bit_falls_back_to_the_newest_intact_checkpoint(tmp_path, capsys, where):
    """One bit flipped in the newest checkpoint's array data or its index (TensorStore's
    manifest): one warning line, the older checkpoint restored, the corrupt one renamed
    STEP.corrupt so the run can save that step again."""
    ck = Checkpoints(tmp_path, keep=2)
    for step in (2, 4):
        ck.save(step, state(float(step)), {"step": step, "config": CONFIG})
    target = (
        array_file(tmp_path / "4") if where == "arrays" else tmp_path / "4/state/manifest.ocdbt"
    )
    flip_a_bit(target)
    ck = Checkpoints(tmp_path, keep=2)
    got, meta = ck.restore(state(0.0), CONFIG)
    assert meta["step"] == 2 and float(got["params"]["w"][0, 0]) == 2.0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "checkpoint" in err and "is corrupt" in err
    assert "resuming from the older step 2; renamed 4.corrupt" in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["2", "4.corrupt"]
    assert ck.latest() == 2
    ck.save(4, state(5.0), {"step": 4, "config": CONFIG})  # the step saves again
    assert Checkpoints(tmp_path).restore(state(0.0), CONFIG)[1]["step"] == 4


def test_a_step_corrupted_twice_is_moved_aside_twice(tmp_path, capsys):
    ck = Checkpoints(tmp_path, keep=2)
    for step in (2, 4):
        ck.save(step, state(float(step)), {"step": step, "config": CONFIG})
    (tmp_path / "4.corrupt").mkdir()  # from an earlier fallback
    flip_a_bit(array_file(tmp_path / "4"))
    assert Checkpoints(tmp_path).restore(state(0.0), CONFIG)[1]["step"] == 2
    assert "renamed 4.corrupt2" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["2", "4.corrupt", "4.corrupt2"]


def test_a_fallback_leaves_logging_as_it_was(tmp_path):
    """Orbax's logs are held back while it reads a damaged checkpoint, and only then."""
    import logging

    from grubench.checkpoint import FILES

    ck = Checkpoints(tmp_path, keep=2)
    for step in (2, 4):
        ck.save(step, state(float(step)), {"step": step, "config": CONFIG})
    (tmp_path / "4" / FILES).unlink()  # so orbax itself reads the damaged file
    flip_a_bit(array_file(tmp_path / "4"))
    names = ("absl", "orbax", "asyncio", "jax")
    before = {n: logging.getLogger(n).level for n in names}
    assert Checkpoints(tmp_path).restore(state(0.0), CONFIG)[1]["step"] == 2
    assert {n: logging.getLogger(n).level for n in names} == before
    assert logging.raiseExceptions


def test_arrays_that_read_back_differently_are_corrupt(tmp_path, capsys):
    """The SHA-256 of the arrays themselves, checked after orbax has read them: the guard for a
    checkpoint whose per-file hashes are missing (killed before they were written)."""
    import json

    from grubench.checkpoint import FILES

    ck = Checkpoints(tmp_path, keep=2)
    for step in (2, 4):
        ck.save(step, state(float(step)), {"step": step, "config": CONFIG})
    (tmp_path / "4" / FILES).unlink()
    meta_file = tmp_path / "4/meta/metadata"
    meta = json.loads(meta_file.read_text())
    meta["sha256"] = "0" * 64  # what arrays changed after saving would compare against
    meta_file.write_text(json.dumps(meta))
    got, meta = Checkpoints(tmp_path).restore(state(0.0), CONFIG)
    assert meta["step"] == 2
    assert "SHA-256 mismatch" in capsys.readouterr().err


def test_a_failed_save_is_one_line(tmp_path, monkeypatch):
    import logging

    # A failed save leaves orbax's loggers quiet for the rest of the process (which is ending):
    # put them back for the tests that follow.
    for name in ("absl", "orbax", "asyncio", "jax"):
        monkeypatch.setattr(logging.getLogger(name), "level", logging.getLogger(name).level)
    monkeypatch.setattr(logging, "raiseExceptions", logging.raiseExceptions)
    (tmp_path / "checkpoints").write_text("a file where the directory should be")
    with pytest.raises(CheckpointError, match="cannot save checkpoint") as e:
        Checkpoints(tmp_path / "checkpoints" / "inner").save(1, state(1.0), {"step": 1})
    assert "\n" not in str(e.value)


def test_a_checkpoint_of_another_config_is_refused(tmp_path):
    Checkpoints(tmp_path).save(5, state(1.0), {"step": 5, "config": CONFIG})
    other = {"model": {"hidden": 16}, "trainer": {"steps": 10, "progress": False}}
    with pytest.raises(CheckpointError, match="model.hidden=16 here, 8 in the checkpoint"):
        Checkpoints(tmp_path).restore(state(0.0), other)


def test_a_checkpoint_of_another_shape_is_refused(tmp_path):
    Checkpoints(tmp_path).save(5, state(1.0), {"step": 5, "config": CONFIG})
    bigger = state(0.0) | {"params": {"w": jnp.zeros((4, 3)), "b": jnp.zeros(3)}}
    with pytest.raises(CheckpointError, match=r"does not match this model: an array of shape"):
        Checkpoints(tmp_path).restore(bigger, CONFIG)  # checked before orbax reads: not corrupt
    assert (tmp_path / "5").is_dir()


def test_a_checkpoint_without_grubench_metadata_is_refused(tmp_path):
    Checkpoints(tmp_path).save(5, state(1.0), {"something": "else"})
    with pytest.raises(CheckpointError, match="not written by grubench-train"):
        Checkpoints(tmp_path).restore(state(0.0), CONFIG)


def test_config_difference_ignores_free_keys():
    a = {
        "trainer": {
            "steps": 5,
            "progress": True,
            "resume": None,
            "hang_timeout_s": 600.0,
            "eval_batch_size": 500,
        },
        "logger": {"name": "none"},
    }
    b = {
        "trainer": {
            "steps": 5,
            "progress": False,
            "resume": "x",
            "hang_timeout_s": 0.0,
            "eval_batch_size": 500,
        },
        "logger": {"name": "wandb"},
    }
    assert config_difference(a, b) is None
    # The evaluation batch is also the gradient probe's batch: it changes what a run measures.
    small = {**b, "trainer": {**b["trainer"], "eval_batch_size": 32}}
    assert config_difference(a, small) == "trainer.eval_batch_size=500 here, 32 in the checkpoint"
    assert (
        config_difference(a, {**b, "trainer": {**b["trainer"], "steps": 6}})
        == "trainer.steps=5 here, 6 in "
        "the checkpoint"
    )


def test_checkpoints_from_before_the_fused_backward_still_resume():
    """Older checkpoints have no model.backward / model.matmul_dtype and unroll 1: the first two
    compute the same gradients, a missing matmul_dtype was float32."""
    old = {"model": {"hidden": 8, "unroll": 1}}
    new = {"model": {"hidden": 8, "unroll": 0, "backward": "fused", "matmul_dtype": "float32"}}
    assert config_difference(new, old) is None
    bf16 = {"model": {**new["model"], "matmul_dtype": "bfloat16"}}
    assert config_difference(bf16, old) == (
        "model.matmul_dtype='bfloat16' here, 'float32' in the checkpoint"
    )


def test_checkpoints_from_before_the_registries_still_resume():
    """Older checkpoints hold model.cell and model.reset_after, keys configs no longer have (the
    cell is the model's name; a GRU's form is gru or gru_v1)."""
    old = {"model": {"name": "gru_v1", "cell": "gru", "reset_after": False, "hidden": 8}}
    new = {"model": {"name": "gru_v1", "hidden": 8}}
    assert config_difference(new, old) is None
    assert config_difference({"model": {**new["model"], "name": "gru"}}, old) == (
        "model.name='gru' here, 'gru_v1' in the checkpoint"
    )


def test_a_gru_checkpoint_from_before_the_registries_still_resumes():
    old = {"model": {"name": "gru", "cell": "gru", "reset_after": True, "forget_bias": 1.0}}
    assert config_difference({"model": {"name": "gru"}}, old) is None


def test_a_checkpoint_from_before_populations_is_refused_in_one_line(tmp_path):
    Checkpoints(tmp_path).save(5, state(1.0), {"step": 5, "config": CONFIG})
    now = {**CONFIG, "trainer": {**CONFIG["trainer"], "grid": {"lr": None}}}
    with pytest.raises(CheckpointError, match="written by a grubench without populations"):
        Checkpoints(tmp_path).restore(state(0.0), now)
