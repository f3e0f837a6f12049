"""A hand-written backward pass for a whole recurrent layer, as cuDNN does it.

`scan(kind, unroll, dtype, per_gate, wh, bh, bi, xp, carry0)` equals running the cell's step
under `jax.lax.scan` over the time-major projected inputs xp + bi (xp = xs Wi [T, B, G*H], its bias
added inside the step, where it costs no extra pass over [T, B, G*H]), and has a
`jax.custom_vjp`:

  forward   one scan that keeps each step's gate activations;
  backward  one reverse scan whose carry is only dh (an LSTM: dh and dc), each step one
            [B, G*H] x [G*H, H] matmul (dg_t Wh^T; the reset-before GRU: two, since its
            candidate reads r * h) and elementwise gate derivatives;
  weights   dWh = sum_t h_{t-1}^T dg_t and dbh = sum_t dg_t, as single large matmuls over
            all T*B rows after the scan, not T small ones accumulated inside it; dbi is the
            same sum of dxp (dbh itself for the reset-before GRU, the LSTM and the tanh-RNN).

JAX's own reverse of a scan accumulates dWh in the scan carry: every step reads and writes
an H x G*H matrix. Here dxp (the gradient of the pre-activations) is returned for the
projection xs Wi, whose gradient autodiff takes care of outside. Being a custom VJP, the
layer supports reverse mode only (grad, vjp), not jvp / jacfwd.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from grubench.cells import (
    GRUCell,
    LSTMCell,
    RNNCell,
    gru_forward,
    lstm_forward,
    matmul,
    rnn_forward,
)


def kind_of(cell) -> str | None:
    """"gru" (reset after), "gru_v1" (reset before), "lstm", "rnn"; None for other cells."""
    if isinstance(cell, GRUCell):
        return "gru" if cell.reset_after else "gru_v1"
    if isinstance(cell, LSTMCell):
        return "lstm"
    if isinstance(cell, RNNCell):
        return "rnn"
    return None


def _sig_grad(s: jax.Array) -> jax.Array:
    return s * (1.0 - s)


def _tanh_grad(t: jax.Array) -> jax.Array:
    return 1.0 - t * t


def _prev(h0: jax.Array, hs: jax.Array) -> jax.Array:
    """[h_0, h_1, ..., h_{T-1}]: the state each step read."""
    return jnp.concatenate([h0[None], hs[:-1]], axis=0)


def _outer_sum(a: jax.Array, b: jax.Array, dtype: str | None = None) -> jax.Array:
    """sum_t a_t^T b_t over [T, B, ·] as one [·, T*B] x [T*B, ·] matmul."""
    return matmul(a.reshape(-1, a.shape[-1]).T, b.reshape(-1, b.shape[-1]), dtype)


# Forward steps: the cells' own equations, returning (carry, activations for the backward).
_FWD = {"gru": partial(gru_forward, reset_after=True),
        "gru_v1": partial(gru_forward, reset_after=False), "lstm": lstm_forward,
        "rnn": rnn_forward}


def _h_of(kind: str, carry):
    return carry[1] if kind == "lstm" else carry


@partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2, 3))
def scan(kind: str, unroll: int, dtype: str, per_gate: bool, wh: jax.Array, bh: jax.Array,
         bi: jax.Array, xp: jax.Array, carry0):
    """(ys [T, B, H], final carry) of cell `kind` over time-major xp + bi; see the module doc.
    `dtype` ("float32" or "bfloat16") is the operand type of every matmul, forward and
    backward; carries, gates and accumulation stay float32. `per_gate=True` scans xp as one
    [T, B, H] array per gate (a copy of xp first): for a caller whose forward pass keeps no
    activations, such as a rematerialised chunk's (see `_forward`). A call that is not
    differentiated always does."""
    (ys, carry), _ = _forward(kind, unroll, dtype, True, wh, bh, bi, xp, carry0)
    return ys, carry


def _forward(kind, unroll, dtype, per_gate, wh, bh, bi, xp, carry0):
    # Why per_gate: XLA's CPU backend compiles an elementwise kernel that reads several column
    # slices of one scanned input (xp_t[:, :H], xp_t[:, H:2H], ...) into code 4-8x slower per
    # element than one that reads whole arrays. With the activations kept for the backward
    # pass, each gate is its own kernel and reads one slice; without them (a forward pass
    # alone: evaluation, inference, remat's first pass) the whole step is one kernel that reads
    # all of them: a GRU step at B = 32, H = 128 took 100 us instead of 50.
    forward = _FWD[kind]
    gates = wh.shape[1] // wh.shape[0]  # wh is [H, G*H]
    per_gate = per_gate and gates > 1
    if per_gate:
        xp, bi = tuple(jnp.split(xp, gates, -1)), tuple(jnp.split(bi, gates))

    def step(carry, x):
        x = tuple(a + b for a, b in zip(x, bi, strict=True)) if per_gate else x + bi
        carry, acts = forward(wh, bh, carry, x, dtype=dtype)
        return carry, (_h_of(kind, carry), acts)

    carry, (ys, res) = jax.lax.scan(step, carry0, xp, unroll=unroll)
    return (ys, carry), res


def _scan_fwd(kind, unroll, dtype, per_gate, wh, bh, bi, xp, carry0):
    (ys, carry), res = _forward(kind, unroll, dtype, per_gate, wh, bh, bi, xp, carry0)
    return (ys, carry), (wh, ys, res, carry0)


def _scan_bwd(kind, unroll, dt, _per_gate, saved, cotangents):
    wh, ys, res, carry0 = saved
    dys, dcarry = cotangents
    h_prev = _prev(_h_of(kind, carry0), ys)
    hdim = ys.shape[-1]
    wh_t = wh.T

    if kind == "gru":
        def step(dh, inp):
            dy, hp, (r, z, n, hn) = inp
            dh = dh + dy
            dn = dh * (1.0 - z) * _tanh_grad(n)
            dr = dn * hn * _sig_grad(r)
            dz = dh * (hp - n) * _sig_grad(z)
            dhp = jnp.concatenate([dr, dz, dn * r], axis=-1)
            return dh * z + matmul(dhp, wh_t, dt), (jnp.concatenate([dr, dz, dn], axis=-1), dhp)

        dh0, (dxp, dhp) = jax.lax.scan(step, dcarry, (dys, h_prev, res), reverse=True,
                                       unroll=unroll)
        return _outer_sum(h_prev, dhp, dt), dhp.sum((0, 1)), dxp.sum((0, 1)), dxp, dh0

    if kind == "gru_v1":
        wh_rz_t, wh_n_t = wh[:, : 2 * hdim].T, wh[:, 2 * hdim :].T

        def step(dh, inp):
            dy, hp, (r, z, n) = inp
            dh = dh + dy
            dn = dh * (1.0 - z) * _tanh_grad(n)
            drh = matmul(dn, wh_n_t, dt)
            dr = drh * hp * _sig_grad(r)
            dz = dh * (hp - n) * _sig_grad(z)
            drz = jnp.concatenate([dr, dz], axis=-1)
            return dh * z + drh * r + matmul(drz, wh_rz_t, dt), jnp.concatenate([drz, dn], axis=-1)

        dh0, dxp = jax.lax.scan(step, dcarry, (dys, h_prev, res), reverse=True, unroll=unroll)
        r = res[0]
        dwh = jnp.concatenate([_outer_sum(h_prev, dxp[..., : 2 * hdim], dt),
                               _outer_sum(r * h_prev, dxp[..., 2 * hdim :], dt)], axis=-1)
        db = dxp.sum((0, 1))
        return dwh, db, db, dxp, dh0

    if kind == "lstm":
        i, f, g, o, cs = res
        c_prev = _prev(carry0[0], cs)

        def step(dcarry, inp):
            dc, dh = dcarry
            dy, (i, f, g, o, c, cp) = inp
            dh = dh + dy
            tc = jnp.tanh(c)
            dc = dc + dh * o * _tanh_grad(tc)
            dgates = jnp.concatenate([dc * g * _sig_grad(i), dc * cp * _sig_grad(f),
                                      dc * i * _tanh_grad(g), dh * tc * _sig_grad(o)], axis=-1)
            return (dc * f, matmul(dgates, wh_t, dt)), dgates

        dcarry0, dxp = jax.lax.scan(step, dcarry, (dys, (i, f, g, o, cs, c_prev)),
                                    reverse=True, unroll=unroll)
        db = dxp.sum((0, 1))
        return _outer_sum(h_prev, dxp, dt), db, db, dxp, dcarry0

    def step(dh, inp):  # rnn
        dy, h = inp
        dpre = (dh + dy) * _tanh_grad(h)
        return matmul(dpre, wh_t, dt), dpre

    dh0, dxp = jax.lax.scan(step, dcarry, (dys, ys), reverse=True, unroll=unroll)
    db = dxp.sum((0, 1))
    return _outer_sum(h_prev, dxp, dt), db, db, dxp, dh0


scan.defvjp(_scan_fwd, _scan_bwd)
