"""Cells whose recurrence is linear in h: h_t = a(x_t) ⊙ h_{t-1} + b(x_t).

minGRU and minLSTM (Feng et al. 2024, "Were RNNs All We Needed?") have gates that read only the
input, so every step can be computed at once: `parallel(xp, h0)` with `jax.lax.associative_scan`
in log space, or `sequential(xp, h0)` as a linear-space scan with a hand-written backward
(faster where there are no idle cores for the parallel scan); `recurrence()` is one step at a
time (streaming inference).
"""

from __future__ import annotations

from functools import partial
from typing import Any, ClassVar

import jax
import jax.numpy as jnp

from grubench.cells.base import Cell, Step
from grubench.ops import prev


def log_g(x: jax.Array) -> jax.Array:
    """log g(x), g(x) = x + 1/2 for x >= 0 and σ(x) below: positive, so h stays in log space."""
    return jnp.where(x >= 0, jnp.log(jax.nn.relu(x) + 0.5), -jax.nn.softplus(-x))


def g_activation(x: jax.Array) -> jax.Array:
    """g(x) = x + 1/2 for x >= 0 and σ(x) below (Feng et al.): positive, continuous at 0."""
    return jnp.where(x >= 0, x + 0.5, jax.nn.sigmoid(x))


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
    return dh * prev(h0, hs), dh, dh0


_linear_recurrence.defvjp(_linear_recurrence_fwd, _linear_recurrence_bwd)


class LinearCell(Cell):
    """A gated cell whose gates read only x: wi [D, G*H], bi [G*H], no recurrent kernel.
    A subclass gives `log_gates(xp) -> (log a, log b)` and `coefficients(xp) -> (a, b)`."""

    linear_in_h: ClassVar[bool] = True

    def log_gates(self, xp: jax.Array) -> tuple[jax.Array, jax.Array]:  # pragma: no cover
        raise NotImplementedError

    def coefficients(self, xp: jax.Array) -> tuple[jax.Array, jax.Array]:  # pragma: no cover
        raise NotImplementedError

    def recurrence(self) -> Step:
        def step(h: Any, xp: jax.Array):
            a, b = self.coefficients(xp)
            h = a * h + b
            return h, h

        return step

    def parallel(self, xp: jax.Array, h0: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(ys [T, B, H], h_T) from time-major xp, every step at once (log-space scan)."""
        ys = linear_recurrence_log(*self.log_gates(xp), h0)
        return ys, ys[-1]

    def sequential(
        self, xp: jax.Array, h0: jax.Array, unroll: int = 1
    ) -> tuple[jax.Array, jax.Array]:
        """The same (ys, h_T), one step after another in linear space (`linear_recurrence`)."""
        ys = linear_recurrence(*self.coefficients(xp), h0, unroll)
        return ys, ys[-1]
