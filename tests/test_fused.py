"""The hand-written layer backward (grubench/fused.py) against JAX's own transpose of the scan."""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from grubench import fused
from grubench.cells import GRUKernel, LSTMKernel
from grubench.layers import Recurrent
from grubench.ops import outer_sum

T, B, D, H = 6, 3, 4, 5
CELLS = [("gru", {}), ("gru", {"reset_after": False}), ("lstm", {}), ("rnn", {})]


def _loss_and_grads(layer_kw: dict, cell: str, cell_kw: dict, xs, carry0):
    """Gradients of a loss that reads every output and the final carry, for all inputs."""
    layer = Recurrent(cell, D, H, rngs=nnx.Rngs(0), **layer_kw, **cell_kw)
    graphdef, params = nnx.split(layer)

    def loss(params, xs, carry0):
        ys, carry = nnx.merge(graphdef, params)(xs, carry0)
        final = sum(jnp.sum(jnp.cos(c)) for c in jax.tree.leaves(carry))
        return jnp.sum(jnp.sin(ys) * jnp.arange(H)) + final

    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))(params, xs, carry0)


def _inputs(cell: str):
    xs = jax.random.normal(jax.random.key(1), (B, T, D))
    h0 = 0.5 * jax.random.normal(jax.random.key(2), (B, H))
    return xs, ((0.3 * h0, h0) if cell == "lstm" else h0)


@pytest.mark.parametrize("cell,cell_kw", CELLS, ids=["gru", "gru_v1", "lstm", "rnn"])
@pytest.mark.parametrize(
    "layer_kw",
    [{}, {"reverse": True}, {"remat": True, "remat_chunk": 4}],
    ids=["forward", "reverse", "remat"],
)
def test_fused_gradients_equal_autodiff(cell, cell_kw, layer_kw):
    xs, carry0 = _inputs(cell)
    want_loss, want = _loss_and_grads(
        {**layer_kw, "backward": "autodiff"}, cell, cell_kw, xs, carry0
    )
    got_loss, got = _loss_and_grads({**layer_kw, "backward": "fused"}, cell, cell_kw, xs, carry0)
    np.testing.assert_allclose(got_loss, want_loss, rtol=1e-6)
    # every parameter (wi, wh, bi, bh), the inputs and the initial carry
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("cell,cell_kw", CELLS, ids=["gru", "gru_v1", "lstm", "rnn"])
@pytest.mark.parametrize(
    "layer_kw",
    [{}, {"reverse": True}, {"remat": True, "remat_chunk": 4}],
    ids=["forward", "reverse", "remat"],
)
def test_undifferentiated_call_equals_the_plain_step(cell, cell_kw, layer_kw):
    """A call that is not differentiated scans xp one array per gate (`per_gate`), a layout of
    its own: it must give what `jax.lax.scan` of the cell's step gives."""
    xs, carry0 = _inputs(cell)
    layer = Recurrent(cell, D, H, rngs=nnx.Rngs(0), **layer_kw, **cell_kw)
    ys, carry = layer(xs, carry0)
    assert layer.fused_kernel is not None
    layer.fused_kernel = None  # the same parameters through jax.lax.scan of the cell's step
    want_ys, want_carry = layer(xs, carry0)
    np.testing.assert_allclose(ys, want_ys, rtol=1e-6, atol=1e-6)
    for g, w in zip(jax.tree.leaves(carry), jax.tree.leaves(want_carry), strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("cell,cell_kw", CELLS, ids=["gru", "gru_v1", "lstm", "rnn"])
def test_gradients_agree_in_either_layout(cell, cell_kw):
    xs, carry0 = _inputs(cell)
    cell_ = Recurrent(cell, D, H, rngs=nnx.Rngs(0), **cell_kw).cell
    kernel = cell_.fused_kernel()
    xp = cell_.project(jnp.swapaxes(xs, 0, 1), "float32", bias=False)

    def loss(per_gate, wh, bh, bi, xp, carry0):
        ys, carry = fused.scan(kernel, 1, "float32", per_gate, wh, bh, bi, xp, carry0)
        return jnp.sum(jnp.sin(ys)) + sum(jnp.sum(jnp.cos(c)) for c in jax.tree.leaves(carry))

    args = (cell_.wh[...], cell_.bh[...], cell_.bi[...], xp, carry0)
    grads = [
        jax.grad(partial(loss, per_gate), argnums=(0, 1, 2, 3, 4))(*args)
        for per_gate in (False, True)
    ]
    for g, w in zip(*map(jax.tree.leaves, grads), strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-6)


def test_fused_gradients_under_vmap_over_seeds():
    """The training path vmaps the loss over seeds: per-seed gradients must match."""
    xs, h0 = _inputs("gru")
    layer = Recurrent("gru", D, H, rngs=nnx.Rngs(0))
    kernel = layer.fused_kernel
    assert kernel == GRUKernel(True)
    graphdef, params = nnx.split(layer)
    stacked = jax.tree.map(lambda p: jnp.stack([p, 1.5 * p]), params)

    def loss(params, backward):
        layer = nnx.merge(graphdef, params)
        layer.fused_kernel = kernel if backward == "fused" else None
        return jnp.sum(layer(xs, h0)[0] ** 2)

    got = jax.vmap(jax.grad(lambda p: loss(p, "fused")))(stacked)
    want = jax.vmap(jax.grad(lambda p: loss(p, "autodiff")))(stacked)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


def test_cells_without_a_recurrent_matmul_keep_autodiff():
    assert Recurrent("mingru", D, H, rngs=nnx.Rngs(0)).fused_kernel is None
    assert Recurrent("minlstm", D, H, rngs=nnx.Rngs(0)).fused_kernel is None
    assert Recurrent("lstm", D, H, rngs=nnx.Rngs(0)).fused_kernel == LSTMKernel()
    assert Recurrent("gru_v1", D, H, rngs=nnx.Rngs(0)).fused_kernel == GRUKernel(False)
    assert Recurrent("lstm", D, H, rngs=nnx.Rngs(0), backward="autodiff").fused_kernel is None
    with pytest.raises(ValueError, match="backward must be"):
        Recurrent("gru", D, H, rngs=nnx.Rngs(0), backward="cudnn")


def test_weight_gradient_is_the_sum_of_per_step_outer_products():
    a = jax.random.normal(jax.random.key(0), (T, B, 3))
    b = jax.random.normal(jax.random.key(1), (T, B, 7))
    want = sum(a[t].T @ b[t] for t in range(T))
    np.testing.assert_allclose(outer_sum(a, b), want, rtol=1e-5, atol=1e-6)


def test_bfloat16_matmuls_keep_float32_carries_and_stay_close():
    xs, h0 = _inputs("lstm")
    f32 = Recurrent("lstm", D, H, rngs=nnx.Rngs(0))
    bf16 = Recurrent("lstm", D, H, rngs=nnx.Rngs(0), matmul_dtype="bfloat16")
    graphdef, params = nnx.split(bf16)

    def loss(params):
        ys, _ = nnx.merge(graphdef, params)(xs, h0)
        return jnp.sum(ys**2)

    hlo = jax.jit(jax.grad(loss)).lower(params).as_text()
    # every matmul of the layer, forward and backward, takes bfloat16 operands
    dots = [line for line in hlo.splitlines() if "dot_general" in line and "=" in line]
    assert dots and all("bf16" in line for line in dots)
    ys32, (c32, _) = f32(xs, h0)
    ys16, (c16, _) = bf16(xs, h0)
    assert ys16.dtype == c16.dtype == jnp.float32
    np.testing.assert_allclose(ys16, ys32, atol=3e-2)
    assert float(jnp.max(jnp.abs(ys16 - ys32))) > 0  # the cast really happened
    with pytest.raises(ValueError, match="needs backward='fused'"):
        Recurrent("gru", D, H, rngs=nnx.Rngs(0), matmul_dtype="bfloat16", backward="autodiff")
