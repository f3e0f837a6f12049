"""A hand-written backward pass for a whole recurrent layer, as cuDNN does it.

`scan(kernel, unroll, dtype, per_gate, wh, bh, bi, xp, carry0)` equals running the cell's step
under `jax.lax.scan` over the time-major projected inputs xp + bi (xp = xs Wi [T, B, G*H], its
bias added inside the step, where it costs no extra pass over [T, B, G*H]), and has a
`jax.custom_vjp`:

  forward   one scan that keeps each step's gate activations (`kernel.forward`);
  backward  `kernel.backward`: one reverse scan whose carry is only dh (an LSTM: dh and dc),
            each step one [B, G*H] x [G*H, H] matmul and elementwise gate derivatives;
  weights   dWh = sum_t h_{t-1}^T dg_t and dbh = sum_t dg_t, as single large matmuls over
            all T*B rows after the scan, not T small ones accumulated inside it.

JAX's own reverse of a scan accumulates dWh in the scan carry: every step reads and writes an
H x G*H matrix. Here dxp (the gradient of the pre-activations) is returned for the projection
xs Wi, whose gradient autodiff takes care of outside. Being a custom VJP, the layer supports
reverse mode only (grad, vjp), not jvp / jacfwd.

A cell offers a kernel through `fused_kernel()`; the kernels of the GRU, LSTM and tanh-RNN live
beside their cells (grubench/cells/). A kernel is a hashable object (it is a static argument of
the custom VJP) with:

  forward(wh, bh, carry, xp_t, dtype) -> (carry', acts)   one step on xp_t [B, G*H] (or a tuple
      of its G [B, H] blocks) already holding bi; acts: what its derivative needs
  output(carry) -> h_t [B, H]
  backward(wh, dtype, unroll, ys, acts, carry0, dys, dcarry)
      -> (dWh [H, G*H], dbh [G*H], dbi [G*H], dxp [T, B, G*H], dcarry0)
"""

from __future__ import annotations

from functools import partial
from typing import Any, Protocol

import jax
import jax.numpy as jnp


class Kernel(Protocol):
    """A cell's fused layer step and backward; see the module doc."""

    def forward(
        self, wh: jax.Array, bh: jax.Array, carry: Any, xp: Any, dtype: str | None = None
    ) -> tuple[Any, Any]: ...

    def output(self, carry: Any) -> jax.Array: ...

    def backward(
        self,
        wh: jax.Array,
        dtype: str,
        unroll: int,
        ys: jax.Array,
        acts: Any,
        carry0: Any,
        dys: jax.Array,
        dcarry: Any,
    ) -> tuple[Any, ...]: ...


@partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2, 3))
def scan(
    kernel: Kernel,
    unroll: int,
    dtype: str,
    per_gate: bool,
    wh: jax.Array,
    bh: jax.Array,
    bi: jax.Array,
    xp: jax.Array,
    carry0: Any,
) -> tuple[jax.Array, Any]:
    """(ys [T, B, H], final carry) of the cell's `kernel` over time-major xp + bi; see the
    module doc. `dtype` ("float32" or "bfloat16") is the operand type of every matmul, forward
    and backward; carries, gates and accumulation stay float32. `per_gate=True` scans xp as one
    [T, B, H] array per gate (a copy of xp first): for a caller whose forward pass keeps no
    activations, such as a rematerialised chunk's (see `_forward`). A call that is not
    differentiated always does."""
    (ys, carry), _ = _forward(kernel, unroll, dtype, True, wh, bh, bi, xp, carry0)
    return ys, carry


def _forward(kernel, unroll, dtype, per_gate, wh, bh, bi, xp, carry0):
    # Why per_gate: XLA's CPU backend compiles an elementwise kernel that reads several column
    # slices of one scanned input (xp_t[:, :H], xp_t[:, H:2H], ...) into code several times
    # slower per element than one that reads whole arrays. With the activations kept for the
    # backward pass, each gate is its own kernel and reads one slice; without them (a forward
    # pass alone: evaluation, inference, remat's first pass) the whole step is one kernel that
    # reads all of them (docs/performance.md).
    gates = wh.shape[1] // wh.shape[0]  # wh is [H, G*H]
    per_gate = per_gate and gates > 1
    if per_gate:
        xp, bi = tuple(jnp.split(xp, gates, -1)), tuple(jnp.split(bi, gates))

    def step(carry, x):
        x = tuple(a + b for a, b in zip(x, bi, strict=True)) if per_gate else x + bi
        carry, acts = kernel.forward(wh, bh, carry, x, dtype=dtype)
        return carry, (kernel.output(carry), acts)

    carry, (ys, acts) = jax.lax.scan(step, carry0, xp, unroll=unroll)
    return (ys, carry), acts


def _scan_fwd(kernel, unroll, dtype, per_gate, wh, bh, bi, xp, carry0):
    (ys, carry), acts = _forward(kernel, unroll, dtype, per_gate, wh, bh, bi, xp, carry0)
    return (ys, carry), (wh, ys, acts, carry0)


def _scan_bwd(kernel, unroll, dtype, _per_gate, saved, cotangents):
    wh, ys, acts, carry0 = saved
    dys, dcarry = cotangents
    return kernel.backward(wh, dtype, unroll, ys, acts, carry0, dys, dcarry)


scan.defvjp(_scan_fwd, _scan_bwd)
