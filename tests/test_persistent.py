"""The persistent Pallas kernels (grubench/persistent.py), run in Pallas' interpret mode on the
CPU: forward and every gradient equal the fused scan's (grubench/fused.py) for the GRU and the
LSTM, over several batch blocks, and through the Recurrent layer; cells without the kernel are
refused in one line."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from grubench import fused, persistent
from grubench.cells.gru import GRUKernel
from grubench.cells.lstm import LSTMKernel
from grubench.cli import check_overrides
from grubench.errors import ConfigError
from grubench.layers import Recurrent

T, B, H = 6, 6, 5  # B = 6: blocks of 2, so the kernel's grid has 3 programs
KERNELS = {"gru": (GRUKernel(True), 3), "lstm": (LSTMKernel(), 4)}


def inputs(cell: str):
    kernel, gates = KERNELS[cell]
    ks = jax.random.split(jax.random.key(1), 6)
    wh = jax.random.normal(ks[0], (H, gates * H)) * 0.4
    bh, bi = (jax.random.normal(k, (gates * H,)) * 0.1 for k in ks[1:3])
    xp = jax.random.normal(ks[3], (T, B, gates * H))
    h0 = jax.random.normal(ks[4], (B, H)) * 0.5
    carry0 = h0 if cell == "gru" else (jax.random.normal(ks[5], (B, H)) * 0.5, h0)
    return wh, bh, bi, xp, carry0


def loss_of(run):
    """A loss that reads every output and the final carry, each step weighted apart."""

    def loss(wh, bh, bi, xp, carry0):
        ys, last = run(wh, bh, bi, xp, carry0)
        weights = jnp.arange(1.0, T + 1)[:, None, None]
        return (ys**2 * weights).sum() + sum((leaf * 1.3).sum() for leaf in jax.tree.leaves(last))

    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2, 3, 4)))


@pytest.fixture(scope="module", params=sorted(KERNELS))
def both(request):
    kernel, _ = KERNELS[request.param]
    args = inputs(request.param)
    ours = loss_of(lambda *a: persistent.scan(kernel, "float32", *a, interpret=True))(*args)
    theirs = loss_of(lambda *a: fused.scan(kernel, 1, "float32", False, *a))(*args)
    return ours, theirs


def test_blocks_divide_the_batch():
    assert [persistent.block_size(b) for b in (1, 6, 7, 8, 48, 64)] == [1, 2, 1, 8, 16, 16]


def test_the_loss_equals_the_fused_scans(both):
    (ours, _), (theirs, _) = both
    np.testing.assert_allclose(ours, theirs, rtol=1e-6)


def test_every_gradient_equals_the_fused_scans(both):
    """wh, bh, bi, xp and the initial carry. The backward kernel recomputes each step's gates
    where the fused scan kept them: float32 rounding apart."""
    (_, ours), (_, theirs) = both
    for got, want in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs), strict=True):
        assert float(jnp.abs(want).max()) > 0  # every argument gets a gradient
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("reverse", [False, True])
def test_the_layer_runs_the_kernels_with_the_fused_numbers(reverse):
    xs = jax.random.normal(jax.random.key(2), (B, T, 3))

    def grads(backward):
        layer = Recurrent("lstm", 3, H, rngs=nnx.Rngs(0), backward=backward, reverse=reverse)
        graph, params = nnx.split(layer)

        def loss(p):
            ys, _ = nnx.merge(graph, p)(xs)
            return (ys**2).sum()

        return jax.value_and_grad(loss)(params)

    (a, ga), (b, gb) = grads("persistent"), grads("fused")
    np.testing.assert_allclose(a, b, rtol=1e-6)
    for got, want in zip(jax.tree.leaves(ga), jax.tree.leaves(gb), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_cells_without_the_kernel_are_refused():
    with pytest.raises(ConfigError) as e:
        check_overrides(["model=gru_v1", "model.backward=persistent"])
    assert str(e.value) == (
        "model.backward=persistent is not allowed: fused or autodiff for model=gru_v1 "
        "(persistent: gru, lstm)"
    )
    with pytest.raises(ValueError, match="backward='persistent' has no kernel for mingru"):
        Recurrent("mingru", 3, H, rngs=nnx.Rngs(0), backward="persistent")
    with pytest.raises(ValueError, match="has no persistent kernel"):
        persistent.scan(GRUKernel(False), "float32", *inputs("gru"))


@pytest.mark.parametrize("cell", sorted(KERNELS))
def test_the_kernels_lower_through_triton_for_a_gpu(cell):
    """Cross-lowered on the CPU, no GPU needed: Pallas' Triton backend turns the forward and
    the backward kernel into Triton kernel calls for CUDA. Compiling them for a real GPU, and
    running them, are not checked (docs/performance.md)."""
    pytest.importorskip("jax.experimental.pallas.triton")
    kernel, gates = KERNELS[cell]
    hidden, batch = 32, 16  # Triton: power-of-two sizes, matmul sides of at least 16
    wh, b = jnp.zeros((hidden, gates * hidden)), jnp.zeros(gates * hidden)
    xp, h0 = jnp.zeros((4, batch, gates * hidden)), jnp.zeros((batch, hidden))
    carry0 = h0 if cell == "gru" else (h0, h0)

    def loss(wh, b, xp, carry0):
        ys, _ = persistent.scan(kernel, "float32", wh, b, b, xp, carry0, interpret=False)
        return ys.sum()

    grad = jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3)))
    text = grad.trace(wh, b, xp, carry0).lower(lowering_platforms=("cuda",)).as_text()
    assert text.count("@__gpu$xla.gpu.triton") == 2  # the forward kernel and the backward
