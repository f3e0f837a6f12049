"""Long short-term memory (Hochreiter & Schmidhuber 1997), with its fused layer backward.

Parameters (PyTorch's layout): wi [D, 4H], wh [H, 4H], bi [4H], bh [4H], gates (i, f, g, o);
carry (c, h). The forget-gate slice of `bi` starts at `model.forget_bias` (1 by default,
Jozefowicz et al. 2015).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import jax
import jax.numpy as jnp

from grubench.cells.base import Carry, RecurrentKernelCell, Step
from grubench.config import ModelConfig
from grubench.ops import matmul, outer_sum, prev, sig_grad, tanh_grad
from grubench.registry import CellEntry, register_cell


@dataclass
class LSTMConfig(ModelConfig):
    """model=lstm: the common keys, and the forget-gate bias at initialisation."""

    name: str = "lstm"
    forget_bias: float = 1.0


def lstm_forward(
    wh: jax.Array,
    bh: jax.Array,
    carry: tuple[jax.Array, jax.Array],
    xp: Any,
    dtype: str | None = None,
) -> tuple[tuple[jax.Array, jax.Array], tuple]:
    """One LSTM step on projected input xp = x Wi + bi (gates i, f, g, o; [B, 4H], or a tuple
    of its four [B, H] blocks); carry (c, h): (c', h') and the activations its derivative
    needs, (i, f, g, o, c'). `wh` [H, 4H] and `bh` [4H] may also be tuples of the four gates'
    blocks ([H, H], [H]): one matmul per gate.

    [i, f, g, o] = [σ, σ, tanh, σ](xp + h Wh + bh)
    c' = f ⊙ c + i ⊙ g,   h' = o ⊙ tanh(c')
    """
    c, h = carry
    xs = xp if isinstance(xp, tuple) else jnp.split(xp, 4, axis=-1)
    if isinstance(wh, tuple):
        hw, b = [matmul(h, w, dtype) for w in wh], bh
    else:
        hw, b = jnp.split(matmul(h, wh, dtype), 4, axis=-1), jnp.split(bh, 4)
    i, f, g, o = (x + m + bias for x, m, bias in zip(xs, hw, b, strict=True))
    i, f, g, o = jax.nn.sigmoid(i), jax.nn.sigmoid(f), jnp.tanh(g), jax.nn.sigmoid(o)
    c = f * c + i * g
    return (c, o * jnp.tanh(c)), (i, f, g, o, c)


def lstm_step(
    wh: jax.Array, bh: jax.Array, carry: tuple[jax.Array, jax.Array], xp: jax.Array
) -> tuple[tuple[jax.Array, jax.Array], jax.Array]:
    """((c', h'), h'): one LSTM step as a `jax.lax.scan` body; equations in `lstm_forward`."""
    carry, _ = lstm_forward(wh, bh, carry, xp)
    return carry, carry[1]


@dataclass(frozen=True)
class LSTMKernel:
    """The LSTM's fused layer step and backward (grubench.fused): a reverse scan carrying
    (dc, dh), one [B, 4H] x [4H, H] matmul per step; dbi = dbh = sum of dxp."""

    persistent: ClassVar[bool] = True  # `step_backward` applies (grubench.persistent)

    def forward(self, wh, bh, carry, xp, dtype=None):
        return lstm_forward(wh, bh, carry, xp, dtype)

    def output(self, carry):
        return carry[1]

    def step_backward(self, wh_t, dcarry, dy, carry_prev, acts, dt=None):
        """One reverse step: from dL/d(c_t, h_t) (carried `dcarry`, plus the output's `dy`),
        (c_{t-1}, h_{t-1}) and the step's activations, (dL/d(c_{t-1}, h_{t-1}), dL/dxp_t,
        dL/d(h_{t-1} Wh + bh)); the last two are the same [B, 4H] gate gradients, or with
        `wh_t` a tuple of the gates' [H, H] blocks (Wh_k^T), the same tuple of [B, H] blocks."""
        dc, dh = dcarry
        i, f, g, o, c = acts
        cp = carry_prev[0]
        dh = dh + dy
        tc = jnp.tanh(c)
        dc = dc + dh * o * tanh_grad(tc)
        blocks = (
            dc * g * sig_grad(i),
            dc * cp * sig_grad(f),
            dc * i * tanh_grad(g),
            dh * tc * sig_grad(o),
        )
        if isinstance(wh_t, tuple):
            back = sum(matmul(d, w, dt) for d, w in zip(blocks, wh_t, strict=True))
            return (dc * f, back), blocks, blocks
        dgates = jnp.concatenate(blocks, axis=-1)
        return (dc * f, matmul(dgates, wh_t, dt)), dgates, dgates

    def backward(self, wh, dt, unroll, ys, acts, carry0, dys, dcarry):
        i, f, g, o, cs = acts
        h_prev, c_prev = prev(carry0[1], ys), prev(carry0[0], cs)
        wh_t = wh.T

        def step(dcarry, inp):
            dy, cp, step_acts = inp
            dcarry, dgates, _ = self.step_backward(wh_t, dcarry, dy, (cp, None), step_acts, dt)
            return dcarry, dgates

        dcarry0, dxp = jax.lax.scan(
            step, dcarry, (dys, c_prev, (i, f, g, o, cs)), reverse=True, unroll=unroll
        )
        db = dxp.sum((0, 1))
        return outer_sum(h_prev, dxp, dt), db, db, dxp, dcarry0


class LSTMCell(RecurrentKernelCell):
    """Long short-term memory, equations in `lstm_forward`."""

    gates: ClassVar[int] = 4

    def __init__(self, in_features: int, hidden: int, *, forget_bias: float = 1.0, **kw: Any):
        super().__init__(in_features, hidden, **kw)
        self.bi.set_value(self.bi[...].at[hidden : 2 * hidden].set(forget_bias))

    def initial_carry(self, batch_shape: tuple[int, ...]) -> Carry:
        """(c, h), each [*batch_shape, H] zeros."""
        zeros = jnp.zeros((*batch_shape, self.hidden), jnp.float32)
        return (zeros, zeros)

    def recurrence(self) -> Step:
        wh, bh = self.wh[...], self.bh[...]
        return lambda carry, xp: lstm_step(wh, bh, carry, xp)

    def fused_kernel(self) -> LSTMKernel:
        return LSTMKernel()

    @classmethod
    def has_persistent(cls, options: dict[str, Any]) -> bool:
        return True


register_cell(
    CellEntry(
        "lstm",
        LSTMCell,
        "LSTM with a forget-gate bias of 1 at init (Jozefowicz et al. 2015)",
        LSTMConfig,
    )
)
