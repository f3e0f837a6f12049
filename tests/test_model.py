"""SequenceModel: streaming steps against the whole-sequence pass, parameter budgets."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from grubench.model import SequenceModel, count_params, hidden_for_budget, with_budget
from helpers import tiny_cfg


@pytest.mark.parametrize(
    "overrides",
    [
        ("model=gru", "model.depth=2"),
        ("model=lstm", "model.embed_dim=0"),
        ("model=minlstm",),
        ("model=rnn", "task=adding", "task.seq_len=5"),
    ],
)
def test_streaming_steps_equal_the_whole_sequence(overrides):
    cfg = tiny_cfg(*overrides)
    model = SequenceModel(cfg, rngs=nnx.Rngs(0))
    x = (
        jax.random.normal(jax.random.key(1), (2, 5, 2))
        if cfg.task.name == "adding"
        else jax.random.randint(jax.random.key(1), (2, 5), 0, model.spec.input_size)
    )
    whole = model(x)
    carries = model.initial_carries(2)
    for t in range(x.shape[1]):
        out, carries = model.step(x[:, t], carries)
        np.testing.assert_allclose(out, whole[:, t], rtol=1e-5, atol=1e-6)


def test_param_budget_matches_cells_at_equal_size():
    """Chung et al. 2014's setting: 88 binary inputs and outputs, ~20k parameters. Each cell gets
    the hidden size whose count is nearest the budget, so the three are within a few percent."""
    counts = {}
    for model in ("rnn", "gru", "lstm"):
        cfg = tiny_cfg(
            f"model={model}", "task=chorales", "model.embed_dim=0", "model.param_budget=20000"
        )
        h = hidden_for_budget(cfg, 20000)
        resolved = with_budget(cfg)
        assert resolved.model.hidden == h != cfg.model.hidden
        n = count_params(resolved)
        below = count_params(
            with_budget(
                tiny_cfg(
                    f"model={model}", "task=chorales", "model.embed_dim=0", f"model.hidden={h - 1}"
                )
            )
        )
        above = count_params(
            with_budget(
                tiny_cfg(
                    f"model={model}", "task=chorales", "model.embed_dim=0", f"model.hidden={h + 1}"
                )
            )
        )
        assert abs(n - 20000) <= min(abs(below - 20000), abs(above - 20000))
        counts[model] = (h, n)
    assert counts["rnn"][0] > counts["gru"][0] > counts["lstm"][0]
    sizes = [n for _, n in counts.values()]
    assert max(sizes) / min(sizes) < 1.05


def test_count_params_equals_an_initialised_model():
    cfg = tiny_cfg("model=lstm", "model.depth=2")
    _, state = nnx.split(SequenceModel(cfg, rngs=nnx.Rngs(0)), nnx.Param)
    assert count_params(cfg) == sum(int(jnp.size(x)) for x in jax.tree.leaves(state))


def test_without_budget_the_config_is_untouched():
    cfg = tiny_cfg()
    assert with_budget(cfg) is cfg


@pytest.mark.parametrize(
    "overrides",
    [
        ("model=gru", "model.depth=2", "task.seq_len=7"),  # 27 steps: chunks of 5, the last short
        ("model=lstm", "model.remat_chunk=4", "task=adding", "task.seq_len=9"),
    ],
)
@pytest.mark.slow
def test_remat_loss_equals_the_plain_loss_and_gradient(overrides):
    from grubench import tasks

    cfg = tiny_cfg(*overrides)
    model = SequenceModel(cfg, rngs=nnx.Rngs(0))
    g, params = nnx.split(model)
    batch = {k: jnp.asarray(v) for k, v in tasks.make_splits(cfg.task).val.take(6).arrays().items()}
    plain = lambda p: tasks.mean_loss(nnx.merge(g, p)(batch["x"]), batch, model.spec)
    remat = lambda p: nnx.merge(g, p).remat_loss(batch)
    (la, ga), (lb, gb) = jax.value_and_grad(plain)(params), jax.value_and_grad(remat)(params)
    np.testing.assert_allclose(la, lb, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(ga), jax.tree.leaves(gb), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_remat_training_memory_grows_sublinearly():
    """XLA's accounting of the gradient of the whole loss: 16x the length costs the plain model
    about 16x the bytes and the rematerialised one far less."""
    from grubench import tasks

    def step_bytes(t: int, remat: bool) -> int:
        cfg = tiny_cfg(
            "task=delay",
            "task.lag=2",
            f"task.seq_len={t}",
            "model.hidden=32",
            f"model.remat={str(remat).lower()}",
            "model.embed_dim=0",
        )
        g, params = nnx.split(SequenceModel(cfg, rngs=nnx.Rngs(0)))
        split = tasks.make_splits(cfg.task).val.take(8)
        batch = {k: jnp.asarray(v) for k, v in split.arrays().items()}
        spec = tasks.spec(cfg.task)
        loss = (
            (lambda p, b: nnx.merge(g, p).remat_loss(b))
            if remat
            else (lambda p, b: tasks.mean_loss(nnx.merge(g, p)(b["x"]), b, spec))
        )
        m = jax.jit(jax.grad(loss)).lower(params, batch).compile().memory_analysis()
        return m.temp_size_in_bytes + m.argument_size_in_bytes + m.output_size_in_bytes

    plain = [step_bytes(t, False) for t in (64, 1024)]
    remat = [step_bytes(t, True) for t in (64, 1024)]
    assert plain[1] / plain[0] > 10
    assert remat[1] / remat[0] < 6
