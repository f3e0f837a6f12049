"""What a cell is: a hoisted input projection and a pure recurrent step.

A cell has two halves. `project(xs)` maps a whole input sequence to gate pre-activations in
one `[..., D] x [D, G*H]` matmul, outside any scan. `recurrence()` returns a pure function
`step(carry, xp_t) -> (carry, h_t)` that does only the recurrent part; `grubench.layers.
Recurrent` runs it under `jax.lax.scan`. Calling the cell, `cell(carry, x_t)`, is one step of
both (Flax's cell interface), for streaming inference.

The contract a cell class meets (duck-typed; `Cell` is a convenient base):

  __init__(in_features, hidden, *, rngs, recurrent_init, bias_init, **its own options)
  gates: int                                  G, the H-wide blocks of the projection
  project(xs [..., D], dtype=None, bias=True) -> xp [..., G*H]
  initial_carry(batch_shape) -> carry         zeros, e.g. [*batch, H] or a tuple of them
  recurrence() -> step(carry, xp_t [B, G*H]) -> (carry', h_t [B, H])
Optional:
  fused_kernel() -> a grubench.fused.Kernel   a hand-written layer backward (weights wh, bh,
                                              bi as `nnx.Param`s [H, G*H], [G*H], [G*H])
  has_persistent(options) (class method)      whether the kernel, for these options, also
                                              offers `step_backward` (grubench.persistent)
  linear_in_h = True with coefficients/parallel/sequential (see grubench.cells.linear).

Gated cells keep their parameters fused per operand, gates in PyTorch's order (a contract,
DESIGN.md): wi [D, G*H], wh [H, G*H], bi [G*H], bh [G*H].
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
from flax import nnx

from grubench.ops import matmul

Carry = Any
Step = Callable[[Carry, jax.Array], tuple[Carry, jax.Array]]


class Cell(nnx.Module):
    """Shared input projection: wi [D, G*H], bi [G*H] (Lecun-normal, `bias_init`)."""

    gates: ClassVar[int] = 1
    linear_in_h: ClassVar[bool] = False

    def __init__(
        self,
        in_features: int,
        hidden: int,
        *,
        rngs: nnx.Rngs,
        bias_init: float = 0.0,
        **_unused: Any,
    ):
        self.in_features = in_features
        self.hidden = hidden
        g = self.gates * hidden
        self.wi = nnx.Param(nnx.initializers.lecun_normal()(rngs.params(), (in_features, g)))
        self.bi = nnx.Param(jnp.full((g,), bias_init, jnp.float32))

    def project(self, xs: jax.Array, dtype: str | None = None, bias: bool = True) -> jax.Array:
        """Gate pre-activations of every time step at once: xs Wi + bi, [..., D] -> [..., G*H]
        (`bias=False`: xs Wi, for a caller that adds bi inside its step)."""
        xp = matmul(xs, self.wi[...], dtype)
        return xp + self.bi[...] if bias else xp

    def initial_carry(self, batch_shape: tuple[int, ...]) -> Carry:
        """The zero state: [*batch_shape, H]."""
        return jnp.zeros((*batch_shape, self.hidden), jnp.float32)

    def recurrence(self) -> Step:  # pragma: no cover - every cell defines it
        raise NotImplementedError

    def fused_kernel(self) -> Any:
        """The hand-written layer backward (grubench.fused), or None to use autodiff."""
        return None

    @classmethod
    def has_persistent(cls, options: dict[str, Any]) -> bool:
        """Whether a cell made with `options` runs under model.backward=persistent."""
        return False

    def __call__(self, carry: Carry, x: jax.Array) -> tuple[Carry, jax.Array]:
        """One step on raw input x [B, D]: (carry', h [B, H])."""
        return self.recurrence()(carry, self.project(x))


def recurrent_kernel(key: jax.Array, hidden: int, gates: int, init: str) -> jax.Array:
    """[H, G*H]: one square H x H block per gate, each initialised on its own."""
    if init == "orthogonal":
        block = nnx.initializers.orthogonal()
    elif init == "lecun_normal":
        block = nnx.initializers.lecun_normal()
    else:
        raise ValueError(f"unknown recurrent_init {init!r}")
    keys = jax.random.split(key, gates)
    return jnp.concatenate([block(k, (hidden, hidden), jnp.float32) for k in keys], axis=-1)


class RecurrentKernelCell(Cell):
    """A cell with a recurrent kernel: adds wh [H, G*H] (orthogonal blocks by default) and
    bh [G*H] (zeros) to `Cell`'s projection."""

    def __init__(
        self,
        in_features: int,
        hidden: int,
        *,
        rngs: nnx.Rngs,
        recurrent_init: str = "orthogonal",
        bias_init: float = 0.0,
        **_unused: Any,
    ):
        super().__init__(in_features, hidden, rngs=rngs, bias_init=bias_init)
        self.wh = nnx.Param(recurrent_kernel(rngs.params(), hidden, self.gates, recurrent_init))
        self.bh = nnx.Param(jnp.zeros((self.gates * hidden,), jnp.float32))
