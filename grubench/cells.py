"""Recurrent cells: a hoisted input projection and a pure recurrent step each.

A cell has two halves. `project(xs)` maps a whole input sequence to gate pre-activations in
one `[..., D] x [D, G*H]` matmul, outside any scan. `recurrence()` returns a pure function
`step(carry, xp_t) -> (carry, h_t)` that does only the recurrent matmul `h @ wh` and the gate
arithmetic; `grubench.layers.Recurrent` runs it under `jax.lax.scan`.

Parameters are fused per operand, gates in PyTorch's order (a contract, see DESIGN.md):
GRU  wi [D, 3H], wh [H, 3H], bi [3H], bh [3H], gates (r, z, n);
LSTM wi [D, 4H], wh [H, 4H], bi [4H], bh [4H], gates (i, f, g, o);
RNN  wi [D, H],  wh [H, H],  bi [H],  bh [H].

minGRU and minLSTM (Feng et al. 2024, "Were RNNs All We Needed?") have gates that read only
the input, so their recurrence is linear in h and `parallel(xp, h0)` computes every step at once
with `jax.lax.associative_scan` in log space; `sequential(xp, h0)` is the same map as a linear-
space scan with a hand-written backward (faster where there are no idle cores for the parallel
scan); `recurrence()` is one step at a time (streaming inference). Their parameters:
minGRU wi [D, 2H] (z, h~), minLSTM wi [D, 3H] (f, i, h~).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

Carry = Any
Step = Callable[[Carry, jax.Array], tuple[Carry, jax.Array]]


def matmul(a: jax.Array, b: jax.Array, dtype: str | None = None) -> jax.Array:
    """a [..., K] @ b [K, N]; with `dtype` (e.g. "bfloat16") the operands of this product and
    of both its gradient products are cast to it, accumulated and returned in float32 — the
    mixed-precision policy for GPU tensor cores."""
    # As one [M, K] x [K, N] product: with a's leading axes kept, the weight gradient contracts
    # two axes, and XLA's CPU backend then transposes the [..., N] cotangent and runs a 4x slower
    # matmul for it (measured: 95 of 390 ms of a GRU train step at B=128, T=64, H=512).
    lead = a.shape[:-1]
    a = a.reshape(-1, a.shape[-1])
    if dtype is None or dtype == "float32":
        return (a @ b).reshape(*lead, b.shape[-1])
    return _mixed_matmul(a, b, dtype).reshape(*lead, b.shape[-1])


def _cast_dot(a: jax.Array, b: jax.Array, dtype: str) -> jax.Array:
    return jnp.dot(a.astype(dtype), b.astype(dtype), preferred_element_type=jnp.float32)


@partial(jax.custom_vjp, nondiff_argnums=(2,))
def _mixed_matmul(a: jax.Array, b: jax.Array, dtype: str) -> jax.Array:
    return _cast_dot(a, b, dtype)


def _mixed_matmul_fwd(a, b, dtype):
    return _cast_dot(a, b, dtype), (a, b)


def _mixed_matmul_bwd(dtype, saved, g):
    a, b = saved
    da = _cast_dot(g, b.T, dtype)
    db = _cast_dot(a.reshape(-1, a.shape[-1]).T, g.reshape(-1, g.shape[-1]), dtype)
    return da.astype(a.dtype), db.astype(b.dtype)


_mixed_matmul.defvjp(_mixed_matmul_fwd, _mixed_matmul_bwd)


def gru_forward(wh: jax.Array, bh: jax.Array, h: jax.Array, xp: jax.Array, reset_after: bool,
                dtype: str | None = None):
    """One GRU step on projected input xp = x Wi + bi (gates r, z, n; [B, 3H], or a tuple of
    its three [B, H] blocks): h' and the activations its derivative needs, (r, z, n,
    h Wh_n + bh_n) reset after, (r, z, n) reset before.

    r = σ(xp_r + h Wh_r + bh_r),  z = σ(xp_z + h Wh_z + bh_z)
    reset_after:      n = tanh(xp_n + r ⊙ (h Wh_n + bh_n))        (cuDNN, PyTorch)
    not reset_after:  n = tanh(xp_n + (r ⊙ h) Wh_n + bh_n)        (Cho et al. 2014)
    h' = (1 - z) ⊙ n + z ⊙ h
    """
    hdim = h.shape[-1]
    xr, xz, xn = xp if isinstance(xp, tuple) else jnp.split(xp, 3, axis=-1)
    if reset_after:
        hr, hz, hn = jnp.split(matmul(h, wh, dtype) + bh, 3, axis=-1)
        r = jax.nn.sigmoid(xr + hr)
        z = jax.nn.sigmoid(xz + hz)
        n = jnp.tanh(xn + r * hn)
        acts = (r, z, n, hn)
    else:
        hr, hz = jnp.split(matmul(h, wh[:, : 2 * hdim], dtype) + bh[: 2 * hdim], 2, axis=-1)
        r = jax.nn.sigmoid(xr + hr)
        z = jax.nn.sigmoid(xz + hz)
        n = jnp.tanh(xn + matmul(r * h, wh[:, 2 * hdim :], dtype) + bh[2 * hdim :])
        acts = (r, z, n)
    return (1.0 - z) * n + z * h, acts


def lstm_forward(wh: jax.Array, bh: jax.Array, carry: tuple[jax.Array, jax.Array],
                 xp: jax.Array, dtype: str | None = None):
    """One LSTM step on projected input xp = x Wi + bi (gates i, f, g, o; [B, 4H], or a tuple
    of its four [B, H] blocks); carry (c, h): (c', h') and the activations its derivative
    needs, (i, f, g, o, c').

    [i, f, g, o] = [σ, σ, tanh, σ](xp + h Wh + bh)
    c' = f ⊙ c + i ⊙ g,   h' = o ⊙ tanh(c')
    """
    c, h = carry
    xs = xp if isinstance(xp, tuple) else jnp.split(xp, 4, axis=-1)
    hw, b = jnp.split(matmul(h, wh, dtype), 4, axis=-1), jnp.split(bh, 4)
    i, f, g, o = (x + m + bias for x, m, bias in zip(xs, hw, b, strict=True))
    i, f, g, o = jax.nn.sigmoid(i), jax.nn.sigmoid(f), jnp.tanh(g), jax.nn.sigmoid(o)
    c = f * c + i * g
    return (c, o * jnp.tanh(c)), (i, f, g, o, c)


def rnn_forward(wh: jax.Array, bh: jax.Array, h: jax.Array, xp: jax.Array,
                dtype: str | None = None):
    """One tanh-RNN (Elman) step on projected input xp = x Wi + bi:  h' = tanh(xp + h Wh + bh);
    its derivative needs h' alone, so no other activations."""
    return jnp.tanh(xp + matmul(h, wh, dtype) + bh), ()


def gru_step(wh: jax.Array, bh: jax.Array, h: jax.Array, xp: jax.Array, reset_after: bool):
    """(h', h'): one GRU step as a `jax.lax.scan` body; equations in `gru_forward`."""
    h, _ = gru_forward(wh, bh, h, xp, reset_after)
    return h, h


def lstm_step(wh: jax.Array, bh: jax.Array, carry: tuple[jax.Array, jax.Array], xp: jax.Array):
    """((c', h'), h'): one LSTM step as a `jax.lax.scan` body; equations in `lstm_forward`."""
    carry, _ = lstm_forward(wh, bh, carry, xp)
    return carry, carry[1]


def rnn_step(wh: jax.Array, bh: jax.Array, h: jax.Array, xp: jax.Array):
    """(h', h'): one tanh-RNN step as a `jax.lax.scan` body; equation in `rnn_forward`."""
    h, _ = rnn_forward(wh, bh, h, xp)
    return h, h


def log_g(x: jax.Array) -> jax.Array:
    """log g(x), g(x) = x + 1/2 for x >= 0 and σ(x) below: positive, so h stays in log space."""
    return jnp.where(x >= 0, jnp.log(jax.nn.relu(x) + 0.5), -jax.nn.softplus(-x))


def linear_recurrence_log(log_a: jax.Array, log_b: jax.Array, h0: jax.Array) -> jax.Array:
    """All h_t of h_t = a_t h_{t-1} + b_t (a, b, h0 >= 0; time on axis 0), from log a and log b.

    The pairs (a, b) compose associatively, (a1, b1) then (a2, b2) = (a1 a2, a2 b1 + b2), so
    `jax.lax.associative_scan` evaluates the recurrence in O(log T) depth; log space keeps the
    long products of gates from underflowing (Heinsen 2023).
    """
    def combine(first, second):
        la1, lb1 = first
        la2, lb2 = second
        return la1 + la2, jnp.logaddexp(la2 + lb1, lb2)

    log_b = log_b.at[0].set(jnp.logaddexp(log_a[0] + jnp.log(h0), log_b[0]))
    _, log_h = jax.lax.associative_scan(combine, (log_a, log_b), axis=0)
    return jnp.exp(log_h)


def linear_recurrence(a: jax.Array, b: jax.Array, h0: jax.Array, unroll: int = 1) -> jax.Array:
    """All h_t of h_t = a_t h_{t-1} + b_t (time on axis 0), one step after another.

    The sequential counterpart of `linear_recurrence_log`, for machines with no idle cores to
    give a parallel scan's O(log T) depth: T elementwise steps in linear space (stable: the
    minimal cells' a is in (0, 1)), no logarithms or exponentials. Its backward pass is the
    same recurrence reversed, dL/dh_t = dy_t + a_{t+1} dL/dh_{t+1}, then da_t = dL/dh_t h_{t-1}
    and db_t = dL/dh_t (a custom VJP; autodiff would keep a copy of every h_t per step).
    """
    return _linear_recurrence(unroll, a, b, h0)


def _scan_linear(a, b, h0, unroll):
    def step(h, ab):
        h = ab[0] * h + ab[1]
        return h, h

    return jax.lax.scan(step, h0, (a, b), unroll=unroll)[1]


@partial(jax.custom_vjp, nondiff_argnums=(0,))
def _linear_recurrence(unroll, a, b, h0):
    return _scan_linear(a, b, h0, unroll)


def _linear_recurrence_fwd(unroll, a, b, h0):
    hs = _scan_linear(a, b, h0, unroll)
    return hs, (a, hs, h0)


def _linear_recurrence_bwd(unroll, saved, dhs):
    a, hs, h0 = saved

    def step(a_dh_next, inp):  # carries a_{t+1} dL/dh_{t+1}; ends as a_0 dL/dh_0 = dL/dh0
        a_t, dy_t = inp
        dh = a_dh_next + dy_t
        return a_t * dh, dh

    dh0, dh = jax.lax.scan(step, jnp.zeros_like(h0), (a, dhs), reverse=True, unroll=unroll)
    h_prev = jnp.concatenate([h0[None], hs[:-1]])
    return dh * h_prev, dh, dh0


_linear_recurrence.defvjp(_linear_recurrence_fwd, _linear_recurrence_bwd)


def g_activation(x: jax.Array) -> jax.Array:
    """g(x) = x + 1/2 for x >= 0 and σ(x) below (Feng et al.): positive, continuous at 0."""
    return jnp.where(x >= 0, x + 0.5, jax.nn.sigmoid(x))


def mingru_coefficients(xp: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(a, b) of minGRU's h' = a ⊙ h + b: a = 1 - z, b = z ⊙ h~, z = σ(xp_z), h~ = g(xp_h)."""
    xz, xh = jnp.split(xp, 2, axis=-1)
    return jax.nn.sigmoid(-xz), jax.nn.sigmoid(xz) * g_activation(xh)


def minlstm_coefficients(xp: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(a, b) of minLSTM's h' = a ⊙ h + b: a = f / (f + i), b = i / (f + i) ⊙ h~ with
    f = σ(xp_f), i = σ(xp_i), h~ = g(xp_h)."""
    # f / (f + i) = σ(log f - log i), written so that it stays finite where both σ underflow.
    diff, xh = _minlstm_log_ratio(xp)
    return jax.nn.sigmoid(-diff), jax.nn.sigmoid(diff) * g_activation(xh)


def _minlstm_log_ratio(xp: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(log i - log f, xp_h) of minLSTM's pre-activations xp = [xp_f, xp_i, xp_h]."""
    xf, xi, xh = jnp.split(xp, 3, axis=-1)
    return jax.nn.softplus(-xf) - jax.nn.softplus(-xi), xh


def mingru_gates(xp: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(log a, log b) of minGRU: z = σ(xp_z), h~ = g(xp_h); h' = (1 - z) ⊙ h + z ⊙ h~."""
    xz, xh = jnp.split(xp, 2, axis=-1)
    return -jax.nn.softplus(xz), -jax.nn.softplus(-xz) + log_g(xh)


def minlstm_gates(xp: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(log a, log b) of minLSTM: f = σ(xp_f), i = σ(xp_i), normalised f' = f / (f + i),
    i' = i / (f + i), h~ = g(xp_h); h' = f' ⊙ h + i' ⊙ h~."""
    diff, xh = _minlstm_log_ratio(xp)
    return -jax.nn.softplus(diff), -jax.nn.softplus(-diff) + log_g(xh)


def _recurrent_kernel(key: jax.Array, hidden: int, gates: int, init: str) -> jax.Array:
    """[H, G*H]: one square H x H block per gate, each initialised on its own."""
    if init == "orthogonal":
        block = nnx.initializers.orthogonal()
    elif init == "lecun_normal":
        block = nnx.initializers.lecun_normal()
    else:
        raise ValueError(f"unknown recurrent_init {init!r}")
    keys = jax.random.split(key, gates)
    return jnp.concatenate([block(k, (hidden, hidden), jnp.float32) for k in keys], axis=-1)


class _FusedCell(nnx.Module):
    """Shared parameter layout: wi [D, G*H], wh [H, G*H], bi [G*H], bh [G*H]."""

    gates: int = 1

    def __init__(
        self,
        in_features: int,
        hidden: int,
        *,
        rngs: nnx.Rngs,
        recurrent_init: str = "orthogonal",
        bias_init: float = 0.0,
    ):
        self.in_features = in_features
        self.hidden = hidden
        g = self.gates * hidden
        self.wi = nnx.Param(nnx.initializers.lecun_normal()(rngs.params(), (in_features, g)))
        self.wh = nnx.Param(_recurrent_kernel(rngs.params(), hidden, self.gates, recurrent_init))
        self.bi = nnx.Param(jnp.full((g,), bias_init, jnp.float32))
        self.bh = nnx.Param(jnp.zeros((g,), jnp.float32))

    def project(self, xs: jax.Array, dtype: str | None = None, bias: bool = True) -> jax.Array:
        """Gate pre-activations of every time step at once: xs Wi + bi, [..., D] -> [..., G*H]
        (`bias=False`: xs Wi, for a caller that adds bi inside its step)."""
        xp = matmul(xs, self.wi[...], dtype)
        return xp + self.bi[...] if bias else xp

    def initial_carry(self, batch_shape: tuple[int, ...]) -> Carry:
        return jnp.zeros((*batch_shape, self.hidden), jnp.float32)

    def recurrence(self) -> Step:  # pragma: no cover - overridden
        raise NotImplementedError


class GRUCell(_FusedCell):
    """Gated recurrent unit (Cho et al. 2014), equations in `gru_forward`.

    `reset_after=True` applies the reset gate after the recurrent matmul, as cuDNN and PyTorch
    do (one fused [H, 3H] matmul per step); `reset_after=False` is the original form.
    """

    gates = 3

    def __init__(self, in_features: int, hidden: int, *, reset_after: bool = True, **kw):
        super().__init__(in_features, hidden, **kw)
        self.reset_after = reset_after

    def recurrence(self) -> Step:
        wh, bh, reset_after = self.wh[...], self.bh[...], self.reset_after
        return lambda h, xp: gru_step(wh, bh, h, xp, reset_after)


class LSTMCell(_FusedCell):
    """Long short-term memory (Hochreiter & Schmidhuber 1997), equations in `lstm_forward`.

    The forget-gate slice of `bi` starts at `forget_bias` (1 by default, Jozefowicz et al. 2015).
    """

    gates = 4

    def __init__(self, in_features: int, hidden: int, *, forget_bias: float = 1.0, **kw):
        super().__init__(in_features, hidden, **kw)
        self.bi.set_value(self.bi[...].at[hidden : 2 * hidden].set(forget_bias))

    def initial_carry(self, batch_shape: tuple[int, ...]) -> Carry:
        zeros = jnp.zeros((*batch_shape, self.hidden), jnp.float32)
        return (zeros, zeros)

    def recurrence(self) -> Step:
        wh, bh = self.wh[...], self.bh[...]
        return lambda carry, xp: lstm_step(wh, bh, carry, xp)


class RNNCell(_FusedCell):
    """Tanh RNN (Elman 1990), the baseline of Chung et al. 2014; equation in `rnn_forward`."""

    gates = 1

    def recurrence(self) -> Step:
        wh, bh = self.wh[...], self.bh[...]
        return lambda h, xp: rnn_step(wh, bh, h, xp)


class _MinCell(nnx.Module):
    """A gated cell whose gates read only x: wi [D, G*H], bi [G*H], no recurrent kernel."""

    gates: int = 2
    # h' = a(x) h + b(x): the layer may run it as a parallel or a linear-space sequential scan.
    linear_in_h = True

    def __init__(self, in_features: int, hidden: int, *, rngs: nnx.Rngs, bias_init: float = 0.0,
                 **_ignored):
        self.in_features = in_features
        self.hidden = hidden
        g = self.gates * hidden
        self.wi = nnx.Param(nnx.initializers.lecun_normal()(rngs.params(), (in_features, g)))
        self.bi = nnx.Param(jnp.full((g,), bias_init, jnp.float32))

    def project(self, xs: jax.Array, dtype: str | None = None, bias: bool = True) -> jax.Array:
        xp = matmul(xs, self.wi[...], dtype)
        return xp + self.bi[...] if bias else xp

    def initial_carry(self, batch_shape: tuple[int, ...]) -> Carry:
        return jnp.zeros((*batch_shape, self.hidden), jnp.float32)

    def log_gates(self, xp: jax.Array) -> tuple[jax.Array, jax.Array]:  # pragma: no cover
        raise NotImplementedError

    def coefficients(self, xp: jax.Array) -> tuple[jax.Array, jax.Array]:  # pragma: no cover
        raise NotImplementedError

    def recurrence(self) -> Step:
        def step(h, xp):
            a, b = self.coefficients(xp)
            h = a * h + b
            return h, h

        return step

    def parallel(self, xp: jax.Array, h0: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(ys [T, B, H], h_T) from time-major xp, every step at once (log-space scan)."""
        ys = linear_recurrence_log(*self.log_gates(xp), h0)
        return ys, ys[-1]

    def sequential(self, xp: jax.Array, h0: jax.Array,
                   unroll: int = 1) -> tuple[jax.Array, jax.Array]:
        """The same (ys, h_T), one step after another in linear space (`linear_recurrence`)."""
        ys = linear_recurrence(*self.coefficients(xp), h0, unroll)
        return ys, ys[-1]


class MinGRUCell(_MinCell):
    """minGRU (Feng et al. 2024), equations in `mingru_gates`."""

    gates = 2

    def log_gates(self, xp: jax.Array) -> tuple[jax.Array, jax.Array]:
        return mingru_gates(xp)

    def coefficients(self, xp: jax.Array) -> tuple[jax.Array, jax.Array]:
        return mingru_coefficients(xp)


class MinLSTMCell(_MinCell):
    """minLSTM (Feng et al. 2024), equations in `minlstm_gates`."""

    gates = 3

    def log_gates(self, xp: jax.Array) -> tuple[jax.Array, jax.Array]:
        return minlstm_gates(xp)

    def coefficients(self, xp: jax.Array) -> tuple[jax.Array, jax.Array]:
        return minlstm_coefficients(xp)


def make_cell(
    cell: str,
    in_features: int,
    hidden: int,
    *,
    rngs: nnx.Rngs,
    reset_after: bool = True,
    forget_bias: float = 1.0,
    recurrent_init: str = "orthogonal",
    bias_init: float = 0.0,
) -> _FusedCell:
    """Build a cell by name: "gru", "lstm", "rnn", "mingru" or "minlstm"."""
    kw = dict(rngs=rngs, recurrent_init=recurrent_init, bias_init=bias_init)
    if cell == "mingru":
        return MinGRUCell(in_features, hidden, **kw)
    if cell == "minlstm":
        return MinLSTMCell(in_features, hidden, **kw)
    if cell == "gru":
        return GRUCell(in_features, hidden, reset_after=reset_after, **kw)
    if cell == "lstm":
        return LSTMCell(in_features, hidden, forget_bias=forget_bias, **kw)
    if cell == "rnn":
        return RNNCell(in_features, hidden, **kw)
    raise ValueError(f"unknown cell {cell!r}: expected gru, lstm, rnn, mingru or minlstm")
