"""The Recurrent layer and stack: layouts, carries, unroll, reverse, dropout."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from grubench.layers import Recurrent, RecurrentStack, default_unroll, stack

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


GRU = f"Recurrent(gru, in_features={D}, hidden={H})"


@pytest.fixture(scope="module")
def gru():
    return Recurrent("gru", D, H, rngs=nnx.Rngs(0))


@pytest.mark.parametrize(
    "shape,hint",
    [
        ((D,), ""),  # 1-D
        ((1, B, T, D), ""),  # 4-D
        ((B, T, D + 1), ""),  # wrong width
        ((B * T, D), " (one sequence needs a batch axis: xs[None])"),  # unbatched [T, D]
        # T = D: once broadcast silently into a wrong [3, 3, 4]; now refused like any [T, D].
        ((D, D), " (one sequence needs a batch axis: xs[None])"),
    ],
)
def test_wrong_input_shape_is_one_clear_error(gru, shape, hint):
    want = f"{GRU} expects xs of shape [batch, time, {D}]; got {shape}{hint}"
    with pytest.raises(ValueError) as e:
        gru(jnp.zeros(shape))
    assert str(e.value) == want
    # The same check, on static shapes, under jit (at trace time, before anything compiles).
    with pytest.raises(ValueError) as e:
        jax.jit(lambda x: gru(x)[0])(jnp.zeros(shape))
    assert str(e.value) == want


def test_time_major_error_names_its_layout():
    layer = Recurrent("gru", D, H, rngs=nnx.Rngs(0), time_major=True)
    with pytest.raises(ValueError) as e:
        layer(jnp.zeros((T, D)))
    assert str(e.value) == (
        f"{GRU} expects xs of shape [time, batch, {D}]; got {(T, D)} "
        "(one sequence needs a batch axis: xs[:, None])"
    )


def test_one_sequence_with_a_batch_axis_is_its_row_of_the_batch(gru, xs):
    """The fix the error names: xs[None] of one sequence gives that sequence's batched row."""
    np.testing.assert_allclose(gru(xs[1][None])[0][0], gru(xs)[0][1], rtol=1e-6, atol=1e-6)


def test_vmap_over_members_sees_one_members_batch(gru, xs):
    """Under vmap (as the population's program runs a layer) the check sees [B, T, D]."""
    out = jax.eval_shape(jax.vmap(lambda x: gru(x)[0]), jnp.stack([xs, xs]))
    assert out.shape == (2, B, T, H)
    with pytest.raises(ValueError, match=r"got \(9, 3\) \(one sequence"):
        jax.eval_shape(jax.vmap(lambda x: gru(x)[0]), xs)  # vmap over the batch: [T, D] each


def test_wrong_carry_or_probe_shape_is_one_clear_error(gru, xs):
    with pytest.raises(ValueError) as e:
        gru(xs, jnp.zeros((B + 1, H)))
    assert (
        str(e.value) == f"{GRU} expects a carry of shape {(B, H)} for batch {B}; got {(B + 1, H)}"
    )
    lstm = Recurrent("lstm", D, H, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError) as e:
        lstm(xs, jnp.zeros((B, H)))
    assert str(e.value).endswith(
        f"expects a carry of shape ({(B, H)}, {(B, H)}) for batch {B}; got {(B, H)}"
    )
    with pytest.raises(ValueError) as e:
        gru(xs, probe=jnp.zeros((B, T, D)))
    assert (
        str(e.value)
        == f"{GRU} expects probe of shape {(B, T, H)} (like its outputs); got {(B, T, D)}"
    )


def test_stack_checks_its_input_carries_and_layers(xs):
    s = stack("gru", D, H, 2, rngs=nnx.Rngs(0))
    name = f"RecurrentStack(gru, depth=2, in_features={D}, hidden={H})"
    for shape in [(T, D), (D,), (1, B, T, D), (B, T, H)]:
        with pytest.raises(ValueError) as e:
            s(jnp.zeros(shape))
        assert str(e.value).startswith(
            f"{name} expects xs of shape [batch, time, {D}]; got {shape}"
        )
    with pytest.raises(ValueError) as e:
        s(xs, [None])
    assert str(e.value) == f"{name} takes one carry per layer (2); got 1"
    a, b = Recurrent("gru", D, H, rngs=nnx.Rngs(0)), Recurrent("gru", D, H, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError) as e:
        RecurrentStack([a, b])
    assert str(e.value) == (
        f"RecurrentStack: layer 1, {GRU}, cannot read layer 0's output of width {H}"
    )
    c = Recurrent("gru", H, H, rngs=nnx.Rngs(0), time_major=True)
    with pytest.raises(ValueError, match="layer 1 has time_major=True but layer 0 has"):
        RecurrentStack([a, c])


INT1 = "an integer >= 1"


@pytest.mark.parametrize(
    "args,kw,want",
    [
        ((D, 0), {}, f"hidden=0 is not allowed: {INT1}"),
        ((D, -1), {}, f"hidden=-1 is not allowed: {INT1}"),
        ((D, 4.0), {}, f"hidden=4.0 is not allowed: {INT1}"),
        ((D, True), {}, f"hidden=True is not allowed: {INT1}"),
        ((0, H), {}, f"in_features=0 is not allowed: {INT1}"),
        ((D, H), {"unroll": -1}, "unroll=-1 is not allowed: an integer >= 0 (0: 1 on a CPU, "),
        ((D, H), {"unroll": 2.5}, "unroll=2.5 is not allowed: an integer >= 0"),
        ((D, H), {"remat": True, "remat_chunk": -1}, "remat_chunk=-1 is not allowed: an integer "),
        ((D, H), {"remat_chunk": "4"}, "remat_chunk='4' is not allowed: an integer >= 0"),
        ((D, H), {"revers": True}, "revers=True is not allowed: no such keyword (the layer's are "),
    ],
)
def test_bad_layer_arguments_are_one_line_naming_them(args, kw, want):
    """Refused in the constructor, before the cell is made (once a ZeroDivisionError in an
    initializer, a JAX shape TypeError, or an error only at the first call)."""
    with pytest.raises(ValueError) as e:
        Recurrent("gru", *args, rngs=nnx.Rngs(0), **kw)
    assert str(e.value).startswith(f"Recurrent(gru): {want}")
    assert "\n" not in str(e.value)


def test_unknown_or_non_string_cell_is_one_line():
    with pytest.raises(ValueError) as e:
        Recurrent("grux", D, H, rngs=nnx.Rngs(0))
    assert str(e.value).startswith("unknown model 'grux': one of gru, ")
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError) as e:
        Recurrent(None, D, H, rngs=nnx.Rngs(0))
    assert str(e.value).startswith("Recurrent: cell=None is not allowed: a cell name, one of gru")


def test_edge_arguments_that_are_allowed_still_are():
    """NumPy integers, unroll=True (jax.lax.scan's full unroll), a remat chunk longer than any
    sequence, and another cell's option (the model passes its config's to every cell)."""
    layer = Recurrent("gru", np.int64(D), np.int64(H), rngs=nnx.Rngs(0), unroll=True)
    assert (layer.in_features, layer.hidden, layer.unroll) == (D, H, True)
    assert Recurrent("gru", D, H, rngs=nnx.Rngs(0), remat=True, remat_chunk=1000).remat_chunk
    assert Recurrent("lstm", D, H, rngs=nnx.Rngs(0), reset_after=True).hidden == H
    assert RecurrentStack([], dropout=np.float32(0.5)).dropout == 0.5


@pytest.mark.parametrize(
    "depth,dropout,want",
    [
        (0, 0.0, f"depth=0 is not allowed: {INT1}"),
        (-1, 0.0, f"depth=-1 is not allowed: {INT1}"),
        (2.0, 0.0, f"depth=2.0 is not allowed: {INT1}"),
        (2, 1.5, "dropout=1.5 is not allowed: a float in [0, 1)"),
        (2, 1.0, "dropout=1.0 is not allowed: a float in [0, 1)"),
        (2, -0.1, "dropout=-0.1 is not allowed: a float in [0, 1)"),
        (2, float("nan"), "dropout=nan is not allowed: a float in [0, 1)"),
    ],
)
def test_bad_stack_arguments_are_one_line_naming_them(depth, dropout, want):
    """Depth 0 once returned the input unchanged (width D, not H); dropout 1.5 zeroed it."""
    with pytest.raises(ValueError) as e:
        stack("gru", D, H, depth, rngs=nnx.Rngs(0), dropout=dropout)
    assert str(e.value) == f"stack(gru): {want}"


def test_recurrent_stack_checks_its_dropout():
    with pytest.raises(ValueError) as e:
        RecurrentStack([], dropout="0.5")
    assert str(e.value) == "RecurrentStack: dropout='0.5' is not allowed: a float in [0, 1)"


def test_nested_lists_are_converted_and_ragged_ones_refused(gru, xs):
    np.testing.assert_array_equal(gru(xs.tolist())[0], gru(xs)[0])
    s = stack("gru", D, H, 1, rngs=nnx.Rngs(0))
    np.testing.assert_array_equal(s(xs.tolist())[0], s(xs)[0])
    with pytest.raises(ValueError) as e:
        gru([[[0.0] * D], [[0.0] * D, [1.0] * D]])
    assert str(e.value).startswith(
        f"{GRU} expects xs as an array (or nested lists of numbers); got a list that is not one ("
    )
    assert "\n" not in str(e.value)
