"""A persistent recurrent layer in Pallas: the whole time loop inside one kernel, forward and
backward, the recurrent weights loaded once per kernel rather than once per step.

`scan(kernel, dtype, wh, bh, bi, xp, carry0)` has the contract of `grubench.fused.scan`: the
cell's step run over time-major projected inputs xp + bi (xp [T, B, G*H]), giving (ys
[T, B, H], final carry), with a `jax.custom_vjp`. It takes a cell kernel (grubench.fused) that
offers `step_backward` (`kernel.persistent`: the reset-after GRU and the LSTM).

  forward   one kernel per block of up to 16 sequences: Wh [H, G*H] and bh are read once,
            then a loop over t runs the cell's own step (`kernel.forward`) and writes every
            carry leaf of every step (the history the backward pass reads).
  backward  one kernel per block, looping from t = T-1 down: it recomputes the step's gates
            from h_{t-1} and xp_t (one [B, H] x [H, G*H] matmul, so nothing but the carries
            is kept) and runs the cell's `step_backward` (one [B, G*H] x [G*H, H] matmul),
            writing dL/dxp_t and the recurrent side's pre-activation gradient.
  weights   dWh = sum_t h_{t-1}^T dg_t and dbh = sum_t dg_t after the kernel, as one matmul
            over all T*B rows (as in grubench.fused).

Blocks of the batch are independent programs of the kernel's grid, which a GPU runs on
separate multiprocessors; the time loop is sequential within each. The kernels read and write
each gate's block apart (Wh_k [H, H], xp_k [T, B, H]; the cells' step functions take tuples of
blocks), since Pallas' Triton backend, which they use on a GPU, neither splits nor joins arrays
along their last axis and takes power-of-two sizes only (3H is not). Elsewhere (CPU, where the
tests run) Pallas interprets them, which checks the numerics, not the speed; the tests also
lower them for CUDA without a GPU. Whether and where they beat cuDNN is a GPU measurement
(docs/performance.md); `model.backward=persistent` asks for them explicitly.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from grubench.ops import outer_sum, prev


def _triton() -> Any:
    """Parameters that select Pallas' Triton backend on a GPU (JAX's default there is Mosaic
    GPU); None where this JAX has no Triton backend. Imported here, not with the module."""
    try:
        from jax.experimental.pallas import triton as plt
    except ImportError:
        return None
    return plt.CompilerParams(num_warps=4)


def block_size(batch: int, most: int = 16) -> int:
    """The sequences one program of the grid takes: the largest power of two up to `most`
    that divides `batch` (1 for an odd batch)."""
    b = 1
    while b * 2 <= most and batch % (b * 2) == 0:
        b *= 2
    return b


def interpret_here() -> bool:
    """Whether Pallas must interpret the kernels: on anything but a GPU."""
    return jax.default_backend() != "gpu"


def _time_block(length: int, rows: int, cols: int) -> pl.BlockSpec:
    """A [T, rows, cols] array cut into batch blocks of `rows`: program b takes rows
    b*rows .. (b+1)*rows - 1 of every step."""
    return pl.BlockSpec((length, rows, cols), lambda b: (0, b, 0))


def _whole(shape: tuple[int, ...]) -> pl.BlockSpec:
    """An array every program reads whole (the weights)."""
    return pl.BlockSpec(shape, lambda b: (0,) * len(shape))


def _gates(wh: jax.Array, bh: jax.Array, xp: jax.Array) -> tuple[list, list, list]:
    """Wh [H, G*H], bh [G*H] and xp [T, B, G*H] as G blocks each ([H, H], [1, H], [T, B, H]):
    the kernels read the gates apart, since Pallas' Triton backend neither splits nor joins
    arrays along their last axis and takes power-of-two sizes only (the GRU's 3H is not)."""
    gates = wh.shape[1] // wh.shape[0]
    return (
        jnp.split(wh, gates, axis=1),
        [b[None] for b in jnp.split(bh, gates)],
        jnp.split(xp, gates, axis=-1),
    )


def _forward(kernel, dtype, interpret, wh, bh, xp, carry0):
    """Every carry leaf at every step: a list of [T, B, H] arrays (the carry's leaf order)."""
    length, batch, _ = xp.shape
    hidden = wh.shape[0]
    whs, bhs, xps = _gates(wh, bh, xp)
    g = len(whs)
    leaves0, tree = jax.tree.flatten(carry0)
    n, rows = len(leaves0), block_size(batch)

    def body(*refs):
        xp_refs, wh_refs, bh_refs = refs[:g], refs[g : 2 * g], refs[2 * g : 3 * g]
        first, history = refs[3 * g : 3 * g + n], refs[3 * g + n :]
        w, b = tuple(r[...] for r in wh_refs), tuple(r[0] for r in bh_refs)

        def step(t, leaves):
            xp_t = tuple(r[t] for r in xp_refs)
            carry, _ = kernel.forward(w, b, jax.tree.unflatten(tree, leaves), xp_t, dtype)
            leaves = jax.tree.leaves(carry)
            for ref, leaf in zip(history, leaves, strict=True):
                ref[t] = leaf
            return leaves

        jax.lax.fori_loop(0, length, step, [r[...] for r in first])

    steps = _time_block(length, rows, hidden)
    carry_block = pl.BlockSpec((rows, hidden), lambda b: (b, 0))
    return pl.pallas_call(
        body,
        grid=(batch // rows,),
        in_specs=[
            *[steps] * g,
            *[_whole((hidden, hidden))] * g,
            *[_whole((1, hidden))] * g,
            *[carry_block] * n,
        ],
        out_specs=[steps] * n,
        out_shape=[jax.ShapeDtypeStruct((length, batch, hidden), jnp.float32)] * n,
        interpret=interpret,
        compiler_params=_triton(),
    )(*xps, *whs, *bhs, *leaves0)


def _backward(kernel, dtype, interpret, wh, bh, xp, previous, dys, dlast):
    """(dL/dxp [T, B, G*H], the recurrent side's gate gradients [T, B, G*H], dL/dcarry0
    leaves) from the carries each step read (`previous`: leaves [T, B, H]), the outputs'
    cotangents dys [T, B, H] and the final carry's (`dlast` leaves [B, H])."""
    length, batch, _ = xp.shape
    hidden = wh.shape[0]
    whs, bhs, xps = _gates(wh, bh, xp)
    g = len(whs)
    n, rows = len(previous), block_size(batch)
    tree = jax.tree.structure(dlast)
    dleaves = jax.tree.leaves(dlast)

    def body(*refs):
        xp_refs, wh_refs, bh_refs = refs[:g], refs[g : 2 * g], refs[2 * g : 3 * g]
        dys_ref, rest = refs[3 * g], refs[3 * g + 1 :]
        before, dfinal = rest[:n], rest[n : 2 * n]
        dxp_refs, dhp_refs, dfirst = (
            rest[2 * n : 2 * n + g],
            rest[2 * n + g : 2 * n + 2 * g],
            rest[2 * n + 2 * g :],
        )
        w, b = tuple(r[...] for r in wh_refs), tuple(r[0] for r in bh_refs)
        w_t = tuple(x.T for x in w)

        def step(k, dcarry):
            t = length - 1 - k
            carry_prev = jax.tree.unflatten(tree, [r[t] for r in before])
            _, acts = kernel.forward(w, b, carry_prev, tuple(r[t] for r in xp_refs), dtype)
            dcarry, dxp, dhp = kernel.step_backward(
                w_t, jax.tree.unflatten(tree, dcarry), dys_ref[t], carry_prev, acts, dtype
            )
            for ref, block in zip((*dxp_refs, *dhp_refs), (*dxp, *dhp), strict=True):
                ref[t] = block
            return jax.tree.leaves(dcarry)

        out = jax.lax.fori_loop(0, length, step, [r[...] for r in dfinal])
        for ref, leaf in zip(dfirst, out, strict=True):
            ref[...] = leaf

    steps = _time_block(length, rows, hidden)
    carry_block = pl.BlockSpec((rows, hidden), lambda b: (b, 0))
    per_step = jax.ShapeDtypeStruct((length, batch, hidden), jnp.float32)
    outs = pl.pallas_call(
        body,
        grid=(batch // rows,),
        in_specs=[
            *[steps] * g,
            *[_whole((hidden, hidden))] * g,
            *[_whole((1, hidden))] * g,
            steps,
            *[steps] * n,
            *[carry_block] * n,
        ],
        out_specs=[steps] * (2 * g) + [carry_block] * n,
        out_shape=[per_step] * (2 * g) + [jax.ShapeDtypeStruct((batch, hidden), jnp.float32)] * n,
        interpret=interpret,
        compiler_params=_triton(),
    )(*xps, *whs, *bhs, dys, *previous, *dleaves)
    dxp = jnp.concatenate(outs[:g], axis=-1)
    dhp = jnp.concatenate(outs[g : 2 * g], axis=-1)
    return dxp, dhp, jax.tree.unflatten(tree, list(outs[2 * g :]))


@partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2))
def _scan(kernel, dtype, interpret, wh, bh, bi, xp, carry0):
    return _scan_fwd(kernel, dtype, interpret, wh, bh, bi, xp, carry0)[0]  # XLA drops the rest


def _scan_fwd(kernel, dtype, interpret, wh, bh, bi, xp, carry0):
    xpb = xp + bi
    history = _forward(kernel, dtype, interpret, wh, bh, xpb, carry0)
    tree = jax.tree.structure(carry0)
    ys = kernel.output(jax.tree.unflatten(tree, history))
    last = jax.tree.unflatten(tree, [h[-1] for h in history])
    previous = [prev(h0, h) for h0, h in zip(jax.tree.leaves(carry0), history, strict=True)]
    return (ys, last), (wh, bh, xpb, previous)


def _scan_bwd(kernel, dtype, interpret, saved, cotangents):
    wh, bh, xpb, previous = saved
    dys, dlast = cotangents
    dxp, dhp, dcarry0 = _backward(kernel, dtype, interpret, wh, bh, xpb, previous, dys, dlast)
    tree = jax.tree.structure(dlast)
    h_prev = kernel.output(jax.tree.unflatten(tree, previous))
    db = dxp.sum((0, 1))
    return outer_sum(h_prev, dhp, dtype), dhp.sum((0, 1)), db, dxp, dcarry0


_scan.defvjp(_scan_fwd, _scan_bwd)


def scan(
    kernel: Any,
    dtype: str,
    wh: jax.Array,
    bh: jax.Array,
    bi: jax.Array,
    xp: jax.Array,
    carry0: Any,
    *,
    interpret: bool | None = None,
) -> tuple[jax.Array, Any]:
    """(ys [T, B, H], final carry) of the cell `kernel` over time-major xp + bi, in the two
    Pallas kernels of the module doc; `interpret` defaults to `interpret_here()`. `dtype`
    ("float32" or "bfloat16") is the operand type of every matmul; the rest stays float32."""
    if not getattr(kernel, "persistent", False):
        raise ValueError(f"{type(kernel).__name__} has no persistent kernel (step_backward)")
    return _scan(
        kernel, dtype, interpret_here() if interpret is None else interpret, wh, bh, bi, xp, carry0
    )
