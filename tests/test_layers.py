"""The Recurrent layer and stack: layouts, carries, unroll, reverse, dropout."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from grubench.layers import Recurrent, stack

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
