"""Every cell against a plain per-step NumPy loop written from its docstring's equations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from grubench.cells import (
    GRUCell,
    LSTMCell,
    RNNCell,
    make_cell,
    mingru_coefficients,
    mingru_gates,
    minlstm_coefficients,
    minlstm_gates,
)
from grubench.errors import RegistryError
from grubench.layers import Recurrent

B, T, D, H = 3, 7, 5, 4


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def reference(kind, reset_after, wi, wh, bi, bh, xs):
    """The equations, one time step at a time, in float64 NumPy."""
    wi, wh, bi, bh, xs = (np.asarray(a, np.float64) for a in (wi, wh, bi, bh, xs))
    h = np.zeros((xs.shape[0], H))
    c = np.zeros((xs.shape[0], H))
    out = []
    for t in range(xs.shape[1]):
        x = xs[:, t]
        if kind == "gru":
            W_ir, W_iz, W_in = np.split(wi, 3, axis=1)
            W_hr, W_hz, W_hn = np.split(wh, 3, axis=1)
            b_ir, b_iz, b_in = np.split(bi, 3)
            b_hr, b_hz, b_hn = np.split(bh, 3)
            r = sigmoid(x @ W_ir + b_ir + h @ W_hr + b_hr)
            z = sigmoid(x @ W_iz + b_iz + h @ W_hz + b_hz)
            if reset_after:
                n = np.tanh(x @ W_in + b_in + r * (h @ W_hn + b_hn))
            else:
                n = np.tanh(x @ W_in + b_in + (r * h) @ W_hn + b_hn)
            h = (1 - z) * n + z * h
        elif kind == "lstm":
            gates = x @ wi + bi + h @ wh + bh
            i, f, g, o = np.split(gates, 4, axis=1)
            c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
            h = sigmoid(o) * np.tanh(c)
        else:
            h = np.tanh(x @ wi + bi + h @ wh + bh)
        out.append(h)
    return np.stack(out, axis=1)


CASES = [("gru", True), ("gru", False), ("lstm", True), ("rnn", True)]


@pytest.fixture(scope="module")
def xs():
    return jax.random.normal(jax.random.key(1), (B, T, D))


@pytest.mark.parametrize("kind,reset_after", CASES, ids=["gru", "gru_v1", "lstm", "rnn"])
def test_cell_matches_per_step_loop(kind, reset_after, xs):
    layer = Recurrent(kind, D, H, rngs=nnx.Rngs(0), reset_after=reset_after)
    c = layer.cell
    # Non-zero biases so every bias term is exercised.
    c.bi.set_value(jax.random.normal(jax.random.key(2), c.bi[...].shape))
    c.bh.set_value(jax.random.normal(jax.random.key(3), c.bh[...].shape))
    ys, carry = layer(xs)
    want = reference(kind, reset_after, c.wi[...], c.wh[...], c.bi[...], c.bh[...], xs)
    np.testing.assert_allclose(np.asarray(ys), want, rtol=1e-5, atol=1e-5)
    h_last = carry[1] if kind == "lstm" else carry
    np.testing.assert_allclose(np.asarray(h_last), want[:, -1], rtol=1e-5, atol=1e-5)


def test_gru_forms_differ(xs):
    """reset_after=True and False are different functions of the same weights."""
    a = Recurrent("gru", D, H, rngs=nnx.Rngs(0), reset_after=True)
    b = Recurrent("gru", D, H, rngs=nnx.Rngs(0), reset_after=False)
    a.cell.bh.set_value(jnp.ones_like(a.cell.bh[...]))
    b.cell.bh.set_value(jnp.ones_like(b.cell.bh[...]))
    assert not np.allclose(a(xs)[0], b(xs)[0], atol=1e-4)


@pytest.mark.parametrize("cls,gates", [(GRUCell, 3), (LSTMCell, 4), (RNNCell, 1)])
def test_fused_parameter_layout(cls, gates):
    cell = cls(D, H, rngs=nnx.Rngs(0))
    assert cell.wi[...].shape == (D, gates * H)
    assert cell.wh[...].shape == (H, gates * H)
    assert cell.bi[...].shape == cell.bh[...].shape == (gates * H,)


def test_recurrent_kernel_blocks_are_orthogonal():
    cell = GRUCell(D, H, rngs=nnx.Rngs(0))
    for block in np.split(np.asarray(cell.wh[...]), 3, axis=1):
        np.testing.assert_allclose(block.T @ block, np.eye(H), atol=1e-5)


def test_lstm_forget_bias_starts_at_one():
    cell = LSTMCell(D, H, rngs=nnx.Rngs(0))
    bi = np.asarray(cell.bi[...])
    np.testing.assert_array_equal(bi[H : 2 * H], 1.0)
    np.testing.assert_array_equal(np.delete(bi, np.s_[H : 2 * H]), 0.0)
    np.testing.assert_array_equal(np.asarray(cell.bh[...]), 0.0)
    custom = LSTMCell(D, H, rngs=nnx.Rngs(0), forget_bias=2.5)
    np.testing.assert_array_equal(np.asarray(custom.bi[...])[H : 2 * H], 2.5)


def test_make_cell_rejects_unknown_kind():
    with pytest.raises(RegistryError, match="unknown model 'gruu': one of .*gru_v1"):
        make_cell("gruu", D, H, rngs=nnx.Rngs(0))
    assert issubclass(RegistryError, ValueError)


MIN_CASES = ["mingru", "minlstm"]


def min_reference(kind, wi, bi, xs):
    """minGRU / minLSTM one step at a time from the paper's equations, float64."""

    def g(x):
        return np.where(x >= 0, x + 0.5, sigmoid(x))

    xp = np.asarray(xs, np.float64) @ np.asarray(wi, np.float64) + np.asarray(bi, np.float64)
    h = np.zeros((xs.shape[0], H))
    out = []
    for t in range(xs.shape[1]):
        if kind == "mingru":
            z, ht = sigmoid(xp[:, t, :H]), g(xp[:, t, H:])
            h = (1 - z) * h + z * ht
        else:
            f, i, ht = sigmoid(xp[:, t, :H]), sigmoid(xp[:, t, H : 2 * H]), g(xp[:, t, 2 * H :])
            h = f / (f + i) * h + i / (f + i) * ht
        out.append(h)
    return np.stack(out, axis=1)


@pytest.mark.parametrize("scan", ["parallel", "sequential"])
@pytest.mark.parametrize("kind", MIN_CASES)
def test_min_cells_scans_match_per_step_loop(kind, scan, xs):
    layer = Recurrent(kind, D, H, rngs=nnx.Rngs(0), scan=scan)
    layer.cell.bi.set_value(jax.random.normal(jax.random.key(5), layer.cell.bi.shape))
    ys, h_last = layer(xs)
    want = min_reference(kind, layer.cell.wi[...], layer.cell.bi[...], xs)
    np.testing.assert_allclose(np.asarray(ys), want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(h_last), want[:, -1], rtol=1e-5, atol=1e-5)
    # The step-at-a-time recurrence (streaming inference) is the same map.
    _, ys_seq = jax.lax.scan(
        layer.cell.recurrence(), jnp.zeros((B, H)), jnp.swapaxes(layer.cell.project(xs), 0, 1)
    )
    np.testing.assert_allclose(np.swapaxes(ys_seq, 0, 1), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", MIN_CASES)
def test_min_cells_carry_and_gradients(kind, xs):
    layer = Recurrent(kind, D, H, rngs=nnx.Rngs(0))
    whole, _ = layer(xs)
    first, c = layer(xs[:, :3])
    second, _ = layer(xs[:, 3:], c)
    np.testing.assert_allclose(jnp.concatenate([first, second], 1), whole, rtol=1e-5, atol=1e-6)
    graphdef, params = nnx.split(layer)
    grads = jax.grad(lambda p: jnp.sum(nnx.merge(graphdef, p)(xs)[0] ** 2))(params)
    assert all(np.isfinite(g).all() and np.abs(g).sum() > 0 for g in jax.tree.leaves(grads))


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("kind", MIN_CASES)
def test_min_cells_sequential_gradients_match_autodiff(kind, reverse, xs):
    """The linear scan's hand-written backward against autodiff of the step-at-a-time map and
    of the log-space parallel scan, from a nonzero carry, for every parameter and the carry."""
    layer = Recurrent(kind, D, H, rngs=nnx.Rngs(0), reverse=reverse)
    layer.cell.bi.set_value(jax.random.normal(jax.random.key(5), layer.cell.bi.shape))
    _, h0 = layer(xs)  # positive, as the parallel scan's log needs
    target = jax.random.normal(jax.random.key(6), (B, T, H))

    def loss(scan, cell, h0):
        xp = jnp.swapaxes(cell.project(xs), 0, 1)
        xp = xp[::-1] if reverse else xp
        if scan == "loop":
            h_last, ys = jax.lax.scan(cell.recurrence(), h0, xp)
        else:
            ys, h_last = getattr(cell, scan)(xp, h0)
        return jnp.sum((ys[::-1] if reverse else ys) * jnp.swapaxes(target, 0, 1)) + jnp.sum(
            h_last**2
        )

    got = jax.grad(loss, argnums=(1, 2))("sequential", layer.cell, h0)
    for ref in ("loop", "parallel"):
        want = jax.grad(loss, argnums=(1, 2))(ref, layer.cell, h0)
        for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
            np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)
    assert np.abs(np.asarray(got[1])).sum() > 0


def test_scan_option_applies_to_min_cells_only():
    with pytest.raises(ValueError, match="applies to mingru and minlstm"):
        Recurrent("gru", D, H, rngs=nnx.Rngs(0), scan="sequential")
    with pytest.raises(ValueError, match="scan must be"):
        Recurrent("mingru", D, H, rngs=nnx.Rngs(0), scan="fast")


@pytest.mark.parametrize(
    "coefficients,log_gates",
    [(mingru_coefficients, mingru_gates), (minlstm_coefficients, minlstm_gates)],
)
def test_min_coefficients_are_the_exp_of_the_log_gates_even_at_extremes(coefficients, log_gates):
    """The sequential scan's (a, b) and the parallel scan's (log a, log b) are one map, and
    stay finite where every σ underflows (both minLSTM gates at -100: f / (f + i) is 0 / 0)."""
    v = jnp.array([-100.0, -30.0, -1.0, 0.0, 0.5, 30.0, 100.0])
    gates = 2 if coefficients is mingru_coefficients else 3
    xp = jnp.stack(jnp.meshgrid(*[v] * gates), -1).reshape(-1, gates)
    a, b = coefficients(xp)
    log_a, log_b = log_gates(xp)
    assert np.isfinite(a).all() and np.isfinite(b).all()
    np.testing.assert_allclose(a, jnp.exp(log_a), rtol=1e-5, atol=1e-30)
    np.testing.assert_allclose(b, jnp.exp(log_b), rtol=1e-5, atol=1e-30)
