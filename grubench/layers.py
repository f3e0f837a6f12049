"""The Recurrent layer: a cell's hoisted projection, then its step under `jax.lax.scan`."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from grubench import fused
from grubench.cells import Carry, make_cell
from grubench.remat import checkpointed_scan


def default_unroll() -> int:
    """The scan unroll that `unroll=0` means: 1 on a CPU, where unrolling was no faster, and 8
    on an accelerator, where it shortened the train step (`grubench-bench --variants`; the
    figures are in docs/performance.md)."""
    return 1 if jax.default_backend() == "cpu" else 8


def default_min_scan() -> str:
    """The scan that `scan="auto"` means for cells linear in h: "sequential" on a CPU, where the
    log-space parallel scan was slower on two cores, and "parallel" on an accelerator, where it
    is what makes these cells fast (`grubench-bench --scaling`; docs/performance.md)."""
    return "sequential" if jax.default_backend() == "cpu" else "parallel"


class Recurrent(nnx.Module):
    """Run one cell over a sequence: ys, carry = Recurrent(...)(xs, carry).

    xs is [B, T, D] (or [T, B, D] with `time_major=True`). The input projection of every step
    is one matmul before the scan; the scan carries only the recurrent state. `unroll` is
    passed to `jax.lax.scan` (0: `default_unroll()`); `reverse=True` runs from the last step to
    the first. Other keywords (reset_after, forget_bias, recurrent_init, bias_init) go to the
    cell.

    `remat=True` trades compute for memory: the sequence is cut into chunks of `remat_chunk`
    steps (0: about sqrt(T)), each chunk's projection and scan is `jax.checkpoint`ed, and the
    backward pass recomputes a chunk's activations from the carry at its start. Training keeps
    T / c carries plus one chunk's activations instead of every step's gates: O(sqrt(T)).

    `backward="fused"` (default) gives a cell with a fused kernel (GRU, LSTM, tanh-RNN) the
    hand-written backward pass of `grubench.fused` (dh-only reverse scan, weight gradients as
    one matmul after it);
    `"autodiff"` leaves the backward pass to JAX's transpose of the scan. `matmul_dtype=
    "bfloat16"` (with the fused backward, or for minGRU / minLSTM, whose only matmul is the
    projection) casts every matmul's operands to bfloat16 and accumulates in float32; carries
    and gate arithmetic stay float32 (the grad probe's recurrence too).

    `scan` picks how minGRU / minLSTM run: "parallel" (`jax.lax.associative_scan` in log
    space), "sequential" (a linear-space scan with a hand-written backward) or "auto"
    (`default_min_scan()`); the same function either way.
    """

    def __init__(
        self,
        cell: str,
        in_features: int,
        hidden: int,
        *,
        rngs: nnx.Rngs,
        unroll: int = 0,
        time_major: bool = False,
        reverse: bool = False,
        remat: bool = False,
        remat_chunk: int = 0,
        backward: str = "fused",
        matmul_dtype: str = "float32",
        scan: str = "auto",
        **cell_kw,
    ):
        # Any: the layer reads what the cell offers (wh, bh; parallel, sequential) by its kind.
        self.cell: Any = make_cell(cell, in_features, hidden, rngs=rngs, **cell_kw)
        self.unroll = unroll or default_unroll()
        self.time_major = time_major
        self.reverse = reverse
        self.remat = remat
        self.remat_chunk = remat_chunk
        if backward not in ("autodiff", "fused"):
            raise ValueError(f"backward must be 'autodiff' or 'fused', not {backward!r}")
        if matmul_dtype not in ("float32", "bfloat16"):
            raise ValueError(f"matmul_dtype must be 'float32' or 'bfloat16', not {matmul_dtype!r}")
        # Cells without a fused kernel (minGRU, minLSTM: no recurrent matmul) keep autodiff.
        kernel = self.cell.fused_kernel() if hasattr(self.cell, "fused_kernel") else None
        if matmul_dtype != "float32" and backward != "fused" and kernel is not None:
            raise ValueError(f"matmul_dtype={matmul_dtype} needs backward='fused' for {cell}")
        self.fused_kernel = kernel if backward == "fused" else None
        self.matmul_dtype = matmul_dtype
        if scan not in ("auto", "parallel", "sequential"):
            raise ValueError(f"scan must be 'auto', 'parallel' or 'sequential', not {scan!r}")
        linear_in_h = getattr(self.cell, "linear_in_h", False)
        if matmul_dtype != "float32" and kernel is None and not linear_in_h:
            raise ValueError(
                f"matmul_dtype={matmul_dtype} needs a fused backward or a cell "
                f"linear in h; {cell} has neither"
            )
        if scan != "auto" and not linear_in_h:
            raise ValueError(f"scan={scan!r} applies to mingru and minlstm, not {cell}")
        self.min_scan = default_min_scan() if scan == "auto" else scan

    def __call__(
        self,
        xs: jax.Array,
        carry: Carry | None = None,
        probe: jax.Array | None = None,
        *,
        remat: bool | None = None,
    ) -> tuple[jax.Array, Carry]:
        """`probe`, shaped like the outputs, is added to h_t as it is made (and fed to step
        t + 1): the gradient of a loss with respect to a zero probe is dL/dh_t, through every
        later step — the vanishing-gradient curve. `remat` overrides the layer's setting (a
        caller that checkpoints whole chunks itself passes False)."""
        # Time-major, so the scan slices contiguous [B, G*H] rows; XLA folds the transpose
        # into the projection matmul.
        xs_t = xs if self.time_major else jnp.swapaxes(xs, 0, 1)
        if carry is None:
            carry = self.cell.initial_carry(xs_t.shape[1:2])
        if probe is not None:
            return self._probed(self.cell.project(xs_t, self.matmul_dtype), carry, probe)
        if self.remat if remat is None else remat:
            ys, carry = self._chunked(xs_t, carry)
        else:
            ys, carry = self._run(xs_t, carry, self.reverse)
        return (ys if self.time_major else jnp.swapaxes(ys, 0, 1)), carry

    def _run(
        self, xs: jax.Array, carry: Carry, reverse: bool, per_gate: bool = False
    ) -> tuple[jax.Array, Carry]:
        """(ys, carry) over time-major inputs xs. `per_gate` goes to `fused.scan`: True where
        the forward pass keeps no activations (a rematerialised chunk)."""
        cell = self.cell
        # The fused scan adds bi inside its step, fused with the gate arithmetic, instead of in
        # a pass of its own over [T, B, G*H] (docs/performance.md).
        xp = cell.project(xs, self.matmul_dtype, bias=self.fused_kernel is None)
        if getattr(cell, "linear_in_h", False):  # minGRU / minLSTM
            xp = xp[::-1] if reverse else xp
            if self.min_scan == "parallel":
                ys, carry = cell.parallel(xp, carry)
            else:
                ys, carry = cell.sequential(xp, carry, self.unroll)
            return (ys[::-1] if reverse else ys), carry
        if self.fused_kernel is not None:
            ys, carry = fused.scan(
                self.fused_kernel,
                self.unroll,
                self.matmul_dtype,
                per_gate,
                cell.wh[...],
                cell.bh[...],
                cell.bi[...],
                xp[::-1] if reverse else xp,
                carry,
            )
            return (ys[::-1] if reverse else ys), carry
        carry, ys = jax.lax.scan(cell.recurrence(), carry, xp, unroll=self.unroll, reverse=reverse)
        return ys, carry

    def _chunked(self, xs: jax.Array, carry: Carry) -> tuple[jax.Array, Carry]:
        """The remat path (`grubench.remat.checkpointed_scan`): chunks of c steps, each
        projecting and scanning inside the checkpoint, so the [T, B, G*H] projection is not
        kept either."""

        def chunk(h: Carry, x_chunk: jax.Array, _: jax.Array) -> tuple[Carry, jax.Array]:
            ys, h = self._run(x_chunk, h, False, per_gate=True)
            return h, ys

        if self.reverse:
            carry, ys = checkpointed_scan(chunk, carry, xs[::-1], self.remat_chunk)
            return ys[::-1], carry
        carry, ys = checkpointed_scan(chunk, carry, xs, self.remat_chunk)
        return ys, carry

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
    Dropout (inverted, rate `dropout`, or `dropout_rate` where given: a traced per-member rate)
    applies only when a key is given.
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
        dropout_rate: jax.Array | None = None,
        probe: jax.Array | None = None,
    ) -> tuple[jax.Array, list[Carry]]:
        """`probe` goes to the first layer (see Recurrent): the gradient that reaches the bottom
        of the stack."""
        out_carries = []
        for i, layer in enumerate(self.layers):
            xs, c = layer(xs, None if carries is None else carries[i], probe if i == 0 else None)
            out_carries.append(c)
            xs = self.apply_dropout(xs, i, dropout_key, dropout_rate)
        return xs, out_carries

    def apply_dropout(
        self, xs: jax.Array, layer: int, key: jax.Array | None, rate: jax.Array | None = None
    ) -> jax.Array:
        """Inverted dropout on layer `layer`'s output at `rate` (default `self.dropout`); the
        identity without a key. A traced rate of 0 keeps every unit and changes nothing."""
        if key is None or (rate is None and self.dropout == 0):
            return xs
        p = self.dropout if rate is None else rate
        keep = jax.random.bernoulli(jax.random.fold_in(key, layer), 1.0 - p, xs.shape)
        return jnp.where(keep, xs / (1.0 - p), 0.0)


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
