"""Numerical building blocks shared by the cells and the fused backward."""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp


def matmul(a: jax.Array, b: jax.Array, dtype: str | None = None) -> jax.Array:
    """a [..., K] @ b [K, N] -> [..., N]; with `dtype` (e.g. "bfloat16") the operands of this
    product and of both its gradient products are cast to it, accumulated and returned in
    float32 — the mixed-precision policy for GPU tensor cores."""
    # As one [M, K] x [K, N] product: with a's leading axes kept, the weight gradient contracts
    # two axes, and XLA's CPU backend then transposes the [..., N] cotangent and runs a much
    # slower matmul for it (docs/performance.md).
    lead = a.shape[:-1]
    a = a.reshape(-1, a.shape[-1])
    if dtype is None or dtype == "float32":
        return (a @ b).reshape(*lead, b.shape[-1])
    return _mixed_matmul(a, b, dtype).reshape(*lead, b.shape[-1])


def _cast_dot(a: jax.Array, b: jax.Array, dtype: str) -> jax.Array:
    return jnp.dot(a.astype(dtype), b.astype(dtype), preferred_element_type=jnp.float32)


@partial(jax.custom_vjp, nondiff_argnums=(2,))
def _mixed_matmul(a: jax.Array, b: jax.Array, dtype: str) -> jax.Array:
    return _cast_dot(a, b, dtype)


def _mixed_matmul_fwd(a, b, dtype):
    return _cast_dot(a, b, dtype), (a, b)


def _mixed_matmul_bwd(dtype, saved, g):
    a, b = saved
    da = _cast_dot(g, b.T, dtype)
    db = _cast_dot(a.reshape(-1, a.shape[-1]).T, g.reshape(-1, g.shape[-1]), dtype)
    return da.astype(a.dtype), db.astype(b.dtype)


_mixed_matmul.defvjp(_mixed_matmul_fwd, _mixed_matmul_bwd)


def sig_grad(s: jax.Array) -> jax.Array:
    """dσ/dx from s = σ(x)."""
    return s * (1.0 - s)


def tanh_grad(t: jax.Array) -> jax.Array:
    """dtanh/dx from t = tanh(x)."""
    return 1.0 - t * t


def prev(h0: jax.Array, hs: jax.Array) -> jax.Array:
    """[h_0, h_1, ..., h_{T-1}] from h0 [B, H] and hs [T, B, H]: the state each step read."""
    return jnp.concatenate([h0[None], hs[:-1]], axis=0)


def outer_sum(a: jax.Array, b: jax.Array, dtype: str | None = None) -> jax.Array:
    """sum_t a_t^T b_t over [T, B, ·] as one [·, T*B] x [T*B, ·] matmul."""
    return matmul(a.reshape(-1, a.shape[-1]).T, b.reshape(-1, b.shape[-1]), dtype)
