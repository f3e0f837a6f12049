"""The Recurrent layer: a cell's hoisted projection, then its step under `jax.lax.scan`."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from grubench.cells import Carry, make_cell


class Recurrent(nnx.Module):
    """Run one cell over a sequence: ys, carry = Recurrent(...)(xs, carry).

    xs is [B, T, D] (or [T, B, D] with `time_major=True`). The input projection of every step
    is one matmul before the scan; the scan carries only the recurrent state. `unroll` is
    passed to `jax.lax.scan`; `reverse=True` runs from the last step to the first. Other
    keywords (reset_after, forget_bias, recurrent_init, bias_init) go to the cell.
    """

    def __init__(
        self,
        cell: str,
        in_features: int,
        hidden: int,
        *,
        rngs: nnx.Rngs,
        unroll: int = 1,
        time_major: bool = False,
        reverse: bool = False,
        **cell_kw,
    ):
        self.cell = make_cell(cell, in_features, hidden, rngs=rngs, **cell_kw)
        self.kind = cell
        self.unroll = unroll
        self.time_major = time_major
        self.reverse = reverse

    def __call__(self, xs: jax.Array, carry: Carry | None = None,
                 probe: jax.Array | None = None) -> tuple[jax.Array, Carry]:
        """`probe`, shaped like the outputs, is added to h_t as it is made (and fed to step
        t + 1): the gradient of a loss with respect to a zero probe is dL/dh_t, through every
        later step — the vanishing-gradient curve."""
        # Time-major, so the scan slices contiguous [B, G*H] rows; XLA folds the transpose
        # into the projection matmul.
        xp = self.cell.project(xs if self.time_major else jnp.swapaxes(xs, 0, 1))
        if carry is None:
            carry = self.cell.initial_carry(xp.shape[1:2])
        if probe is not None:
            return self._probed(xp, carry, probe)
        if getattr(self.cell, "parallel_ok", False):  # minGRU / minLSTM: no scan needed
            xs_t = xp[::-1] if self.reverse else xp
            ys, carry = self.cell.parallel(xs_t, carry)
            ys = ys[::-1] if self.reverse else ys
        else:
            carry, ys = jax.lax.scan(
                self.cell.recurrence(), carry, xp, unroll=self.unroll, reverse=self.reverse
            )
        return (ys if self.time_major else jnp.swapaxes(ys, 0, 1)), carry


    def _probed(self, xp: jax.Array, carry: Carry, probe: jax.Array):
        """The scan with probe_t added to h_t (the carry's last element for an LSTM)."""
        step = self.cell.recurrence()

        def probed(c, inputs):
            xp_t, e_t = inputs
            c, h = step(c, xp_t)
            h = h + e_t
            c = (*c[:-1], h) if isinstance(c, tuple) else h
            return c, h

        e = probe if self.time_major else jnp.swapaxes(probe, 0, 1)
        carry, ys = jax.lax.scan(probed, carry, (xp, e), reverse=self.reverse)
        return (ys if self.time_major else jnp.swapaxes(ys, 0, 1)), carry


class RecurrentStack(nnx.Module):
    """`depth` Recurrent layers in sequence, with optional dropout on each layer's output.

    ys, carries = stack(xs, carries, dropout_key=key); carries is one carry per layer.
    Dropout (inverted, rate `dropout`) applies only when a key is given.
    """

    def __init__(self, layers: list[Recurrent], *, dropout: float = 0.0):
        self.layers = nnx.List(layers)
        self.dropout = dropout

    def __call__(
        self,
        xs: jax.Array,
        carries: list[Carry] | None = None,
        *,
        dropout_key: jax.Array | None = None,
        probe: jax.Array | None = None,
    ) -> tuple[jax.Array, list[Carry]]:
        """`probe` goes to the first layer (see Recurrent): the gradient that reaches the bottom
        of the stack."""
        out_carries = []
        for i, layer in enumerate(self.layers):
            xs, c = layer(xs, None if carries is None else carries[i],
                          probe if i == 0 else None)
            out_carries.append(c)
            if dropout_key is not None and self.dropout > 0:
                keep = jax.random.bernoulli(
                    jax.random.fold_in(dropout_key, i), 1.0 - self.dropout, xs.shape
                )
                xs = jnp.where(keep, xs / (1.0 - self.dropout), 0.0)
        return xs, out_carries


def stack(
    cell: str,
    in_features: int,
    hidden: int,
    depth: int,
    *,
    rngs: nnx.Rngs,
    dropout: float = 0.0,
    **layer_kw,
) -> RecurrentStack:
    """`depth` layers of `cell`; the first reads `in_features`, the rest read `hidden`."""
    layers = [
        Recurrent(cell, in_features if i == 0 else hidden, hidden, rngs=rngs, **layer_kw)
        for i in range(depth)
    ]
    return RecurrentStack(layers, dropout=dropout)
