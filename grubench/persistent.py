"""A persistent recurrent layer in Pallas: the whole time loop inside one kernel, forward and
backward, the recurrent weights loaded once per kernel rather than once per step.

`scan(kernel, dtype, wh, bh, bi, xp, carry0)` has the contract of `grubench.fused.scan`: the
cell's step run over time-major projected inputs xp + bi (xp [T, B, G*H]), giving (ys
[T, B, H], final carry), with a `jax.custom_vjp`. It takes a cell kernel (grubench.fused) that
offers `step_backward` (`kernel.persistent`: the reset-after GRU and the LSTM).

  forward   one kernel per block of `block_b` sequences: Wh [H, G*H] and bh are read once,
            then a loop over t runs the cell's own step (`kernel.forward`) and writes every
            carry leaf of every step (the history the backward pass reads).
  backward  one kernel per block, looping from t = T-1 down: it recomputes the step's gates
            from h_{t-1} and xp_t (one [B, H] x [H, G*H] matmul, so nothing but the carries
            is kept) and runs the cell's `step_backward` (one [B, G*H] x [G*H, H] matmul),
            writing dL/dxp_t and the recurrent side's pre-activation gradient.
  weights   dWh = sum_t h_{t-1}^T dg_t and dbh = sum_t dg_t after the kernel, as one matmul
            over all T*B rows (as in grubench.fused).

Blocks of the batch are independent programs of the kernel's grid, which a GPU runs on
separate multiprocessors; the time loop is sequential within each. On a GPU the kernels go
through Pallas' Triton backend; elsewhere (CPU, where the tests run) through Pallas' interpret
mode, which checks the numerics, not the speed. Of the kernels, the LSTM's forward lowers to
Triton (cross-lowered on a CPU); the LSTM's backward and the GRU's do not yet, since Pallas'
Triton lowering joins arrays only along a trailing axis of 1 (the backward's gate blocks) and
takes only power-of-two sizes (the GRU's 3H): they need the gates as separate blocks. Whether
and where it beats cuDNN is a GPU measurement (docs/performance.md); `model.backward=persistent`
asks for it explicitly.
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


def _forward(kernel, dtype, interpret, wh, bh, xp, carry0):
    """Every carry leaf at every step: a list of [T, B, H] arrays (the carry's leaf order)."""
    length, batch, width = xp.shape
    hidden = wh.shape[0]
    leaves0, tree = jax.tree.flatten(carry0)
    n, rows = len(leaves0), block_size(batch)

    def body(xp_ref, wh_ref, bh_ref, *refs):
        first, history = refs[:n], refs[n:]
        w, b = wh_ref[...], bh_ref[0]

        def step(t, leaves):
            carry, _ = kernel.forward(w, b, jax.tree.unflatten(tree, leaves), xp_ref[t], dtype)
            leaves = jax.tree.leaves(carry)
            for ref, leaf in zip(history, leaves, strict=True):
                ref[t] = leaf
            return leaves

        jax.lax.fori_loop(0, length, step, [r[...] for r in first])

    return pl.pallas_call(
        body,
        grid=(batch // rows,),
        in_specs=[
            _time_block(length, rows, width),
            _whole(wh.shape),
            _whole((1, width)),
            *[pl.BlockSpec((rows, hidden), lambda b: (b, 0))] * n,
        ],
        out_specs=[_time_block(length, rows, hidden)] * n,
        out_shape=[jax.ShapeDtypeStruct((length, batch, hidden), jnp.float32)] * n,
        interpret=interpret,
        compiler_params=_triton(),
    )(xp, wh, bh[None], *leaves0)


def _backward(kernel, dtype, interpret, wh, bh, xp, previous, dys, dlast):
    """(dL/dxp [T, B, G*H], the recurrent side's gate gradients [T, B, G*H], dL/dcarry0
    leaves) from the carries each step read (`previous`: leaves [T, B, H]), the outputs'
    cotangents dys [T, B, H] and the final carry's (`dlast` leaves [B, H])."""
    length, batch, width = xp.shape
    hidden = wh.shape[0]
    n, rows = len(previous), block_size(batch)
    tree = jax.tree.structure(dlast)
    dleaves = jax.tree.leaves(dlast)

    def body(xp_ref, wh_ref, bh_ref, dys_ref, *refs):
        before, dfinal = refs[:n], refs[n : 2 * n]
        dxp_ref, dhp_ref, dfirst = refs[2 * n], refs[2 * n + 1], refs[2 * n + 2 :]
        w, b = wh_ref[...], bh_ref[0]
        w_t = w.T

        def step(k, dcarry):
            t = length - 1 - k
            carry_prev = jax.tree.unflatten(tree, [r[t] for r in before])
            _, acts = kernel.forward(w, b, carry_prev, xp_ref[t], dtype)
            dcarry, dxp, dhp = kernel.step_backward(
                w_t, jax.tree.unflatten(tree, dcarry), dys_ref[t], carry_prev, acts, dtype
            )
            dxp_ref[t], dhp_ref[t] = dxp, dhp
            return jax.tree.leaves(dcarry)

        out = jax.lax.fori_loop(0, length, step, [r[...] for r in dfinal])
        for ref, leaf in zip(dfirst, out, strict=True):
            ref[...] = leaf

    carry_block = pl.BlockSpec((rows, hidden), lambda b: (b, 0))
    dxp, dhp, *dfirst = pl.pallas_call(
        body,
        grid=(batch // rows,),
        in_specs=[
            _time_block(length, rows, width),
            _whole(wh.shape),
            _whole((1, width)),
            _time_block(length, rows, hidden),
            *[_time_block(length, rows, hidden)] * n,
            *[carry_block] * n,
        ],
        out_specs=[_time_block(length, rows, width)] * 2 + [carry_block] * n,
        out_shape=[jax.ShapeDtypeStruct((length, batch, width), jnp.float32)] * 2
        + [jax.ShapeDtypeStruct((batch, hidden), jnp.float32)] * n,
        interpret=interpret,
        compiler_params=_triton(),
    )(xp, wh, bh[None], dys, *previous, *dleaves)
    return dxp, dhp, jax.tree.unflatten(tree, dfirst)


@partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2))
def _scan(kernel, dtype, interpret, wh, bh, bi, xp, carry0):
    history = _forward(kernel, dtype, interpret, wh, bh, xp + bi, carry0)
    last = jax.tree.unflatten(jax.tree.structure(carry0), [h[-1] for h in history])
    return kernel.output(jax.tree.unflatten(jax.tree.structure(carry0), history)), last


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
