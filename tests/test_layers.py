"""The Recurrent layer and stack: layouts, carries, unroll, reverse, dropout."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from grubench.layers import Recurrent, default_unroll, stack

B, T, D, H = 2, 9, 3, 4


@pytest.fixture(scope="module")
def xs():
    return jax.random.normal(jax.random.key(0), (B, T, D))


@pytest.mark.parametrize("kind", ["gru", "lstm", "rnn"])
def test_time_major_matches_batch_major(kind, xs):
    a = Recurrent(kind, D, H, rngs=nnx.Rngs(0))
    b = Recurrent(kind, D, H, rngs=nnx.Rngs(0), time_major=True)
    ya, _ = a(xs)
    yb, _ = b(jnp.swapaxes(xs, 0, 1))
    np.testing.assert_allclose(ya, jnp.swapaxes(yb, 0, 1), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("kind", ["gru", "lstm"])
def test_carry_continues_a_sequence(kind, xs):
    """Running two halves, passing the carry, equals running the whole sequence."""
    layer = Recurrent(kind, D, H, rngs=nnx.Rngs(0))
    whole, c_whole = layer(xs)
    first, c = layer(xs[:, :4])
    second, c_end = layer(xs[:, 4:], c)
    np.testing.assert_allclose(jnp.concatenate([first, second], 1), whole, atol=1e-6)
    for a, b in zip(jax.tree.leaves(c_end), jax.tree.leaves(c_whole), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_unroll_does_not_change_outputs(xs):
    a = Recurrent("lstm", D, H, rngs=nnx.Rngs(0), unroll=1)
    b = Recurrent("lstm", D, H, rngs=nnx.Rngs(0), unroll=4)
    np.testing.assert_allclose(a(xs)[0], b(xs)[0], rtol=1e-6, atol=1e-6)


def test_reverse_equals_flipped_input(xs):
    fwd = Recurrent("gru", D, H, rngs=nnx.Rngs(0))
    rev = Recurrent("gru", D, H, rngs=nnx.Rngs(0), reverse=True)
    y_rev, _ = rev(xs)
    y_flip, _ = fwd(xs[:, ::-1])
    np.testing.assert_allclose(y_rev, y_flip[:, ::-1], atol=1e-6)


def test_stack_depth_and_dropout(xs):
    s = stack("gru", D, H, 3, rngs=nnx.Rngs(0), dropout=0.5)
    assert len(s.layers) == 3
    assert s.layers[1].cell.wi[...].shape == (H, 3 * H)
    y0, carries = s(xs)
    assert y0.shape == (B, T, H) and len(carries) == 3
    np.testing.assert_array_equal(s(xs)[0], y0)  # no key: deterministic, no dropout
    y1, _ = s(xs, dropout_key=jax.random.key(1))
    y2, _ = s(xs, dropout_key=jax.random.key(2))
    assert not np.allclose(y1, y0) and not np.allclose(y1, y2)
    frac_zero = float(jnp.mean(y1 == 0.0))
    assert 0.3 < frac_zero < 0.7  # the last layer's output is dropped at rate 0.5


@pytest.mark.parametrize("kind", ["gru", "lstm", "mingru"])
def test_probe_gradient_is_dL_dh_t(kind, xs):
    """The gradient with respect to a zero probe equals dL/dh_t computed by an explicit Python
    loop in which h_t = step(h_{t-1}, x_t) + e_t."""
    layer = Recurrent(kind, D, H, rngs=nnx.Rngs(0))
    w = jax.random.normal(jax.random.key(7), (B, T, H))

    def loss_scan(e):
        ys, _ = layer(xs, probe=e)
        return jnp.sum(ys[:, -3:] * w[:, -3:])  # loss on the last three steps only

    def loss_loop(e):
        step = layer.cell.recurrence()
        xp = layer.cell.project(xs)
        c = layer.cell.initial_carry((B,))
        total = 0.0
        for t in range(T):
            c, h = step(c, xp[:, t])
            h = h + e[:, t]
            c = (c[0], h) if isinstance(c, tuple) else h
            if t >= T - 3:
                total = total + jnp.sum(h * w[:, t])
        return total

    zeros = jnp.zeros((B, T, H))
    g_scan, g_loop = jax.grad(loss_scan)(zeros), jax.grad(loss_loop)(zeros)
    np.testing.assert_allclose(g_scan, g_loop, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(g_scan[:, -1], w[:, -1], rtol=1e-6)  # last step: direct path
    assert float(jnp.abs(g_scan[:, 0]).sum()) > 0  # and earlier steps get gradient through time
    # A zero probe changes nothing.
    np.testing.assert_allclose(layer(xs, probe=zeros)[0], layer(xs)[0], atol=1e-6)


@pytest.mark.parametrize(
    "kind,chunk,reverse", [("gru", 0, False), ("lstm", 4, True), ("mingru", 0, False)]
)
def test_remat_gives_the_same_outputs_and_gradients(kind, chunk, reverse, xs):
    """T = 9 in chunks of 3 (sqrt) or 4 (two chunks and a rest of 1): same numbers."""
    plain = Recurrent(kind, D, H, rngs=nnx.Rngs(0), reverse=reverse)
    remat = Recurrent(kind, D, H, rngs=nnx.Rngs(0), reverse=reverse, remat=True, remat_chunk=chunk)

    def loss_and_grad(layer):
        g, s = nnx.split(layer)
        return jax.value_and_grad(lambda s: jnp.sum(jnp.sin(nnx.merge(g, s)(xs)[0])))(s)

    (la, ga), (lb, gb) = loss_and_grad(plain), loss_and_grad(remat)
    np.testing.assert_allclose(la, lb, rtol=1e-6)
    for a, b in zip(jax.tree.leaves(ga), jax.tree.leaves(gb), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(plain(xs)[1], remat(xs)[1], atol=1e-6)  # the final carry


@pytest.mark.slow
def test_remat_memory_grows_sublinearly():
    """XLA's accounting of a layer's gradient: without remat it grows like T, with remat it
    grows far slower, and at T = 1024 it is a small fraction of the plain layer's."""

    def step_bytes(t: int, remat: bool) -> int:
        g, s = nnx.split(Recurrent("gru", 4, 32, rngs=nnx.Rngs(0), remat=remat))
        fn = jax.jit(jax.grad(lambda s, x: jnp.sum(nnx.merge(g, s)(x)[0])))
        m = fn.lower(s, jnp.zeros((8, t, 4))).compile().memory_analysis()
        return m.temp_size_in_bytes + m.argument_size_in_bytes + m.output_size_in_bytes

    plain = [step_bytes(t, False) for t in (256, 1024)]
    remat = [step_bytes(t, True) for t in (256, 1024)]
    assert plain[1] / plain[0] > 3.5  # linear: 4x the length, about 4x the bytes
    assert remat[1] / remat[0] < 3.0
    assert remat[1] < plain[1] / 4


def test_unroll_zero_picks_the_backend_default():
    layer = Recurrent("gru", D, H, rngs=nnx.Rngs(0))
    assert layer.unroll == default_unroll() == (1 if jax.default_backend() == "cpu" else 8)
    assert Recurrent("gru", D, H, rngs=nnx.Rngs(0), unroll=3).unroll == 3
