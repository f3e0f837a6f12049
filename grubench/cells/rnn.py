"""Tanh RNN (Elman 1990), the baseline of Chung et al. 2014, with its fused layer backward.

Parameters: wi [D, H], wh [H, H], bi [H], bh [H].
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import jax
import jax.numpy as jnp

from grubench.cells.base import RecurrentKernelCell, Step
from grubench.config import ModelConfig
from grubench.ops import matmul, outer_sum, prev, tanh_grad
from grubench.registry import CellEntry, register_cell


def rnn_forward(
    wh: jax.Array, bh: jax.Array, h: jax.Array, xp: jax.Array, dtype: str | None = None
) -> tuple[jax.Array, tuple]:
    """One tanh-RNN step on projected input xp = x Wi + bi:  h' = tanh(xp + h Wh + bh);
    its derivative needs h' alone, so no other activations."""
    return jnp.tanh(xp + matmul(h, wh, dtype) + bh), ()


def rnn_step(
    wh: jax.Array, bh: jax.Array, h: jax.Array, xp: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """(h', h'): one tanh-RNN step as a `jax.lax.scan` body; equation in `rnn_forward`."""
    h, _ = rnn_forward(wh, bh, h, xp)
    return h, h


@dataclass(frozen=True)
class RNNKernel:
    """The tanh-RNN's fused layer step and backward (grubench.fused)."""

    def forward(self, wh, bh, h, xp, dtype=None):
        return rnn_forward(wh, bh, h, xp, dtype)

    def output(self, h):
        return h

    def backward(self, wh, dt, unroll, ys, acts, h0, dys, dh_last):
        wh_t = wh.T

        def step(dh, inp):
            dy, h = inp
            dpre = (dh + dy) * tanh_grad(h)
            return matmul(dpre, wh_t, dt), dpre

        dh0, dxp = jax.lax.scan(step, dh_last, (dys, ys), reverse=True, unroll=unroll)
        db = dxp.sum((0, 1))
        return outer_sum(prev(h0, ys), dxp, dt), db, db, dxp, dh0


class RNNCell(RecurrentKernelCell):
    """Tanh RNN, equation in `rnn_forward`."""

    gates: ClassVar[int] = 1

    def recurrence(self) -> Step:
        wh, bh = self.wh[...], self.bh[...]
        return lambda h, xp: rnn_step(wh, bh, h, xp)

    def fused_kernel(self) -> RNNKernel:
        return RNNKernel()


register_cell(
    CellEntry(
        "rnn", RNNCell, "tanh RNN (Elman 1990), the baseline of Chung et al. 2014", ModelConfig
    )
)
