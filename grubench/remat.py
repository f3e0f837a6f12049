"""Rematerialisation: a scan over checkpointed time chunks, the one implementation that the
Recurrent layer (`remat=True`) and the whole-model training loss (`model.remat`) share."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp


def chunk_length(t: int, chunk: int = 0) -> int:
    """The chunk length for T steps: `chunk`, or about sqrt(T) when it is 0; at most T."""
    return min(t, chunk or max(1, round(math.sqrt(t))))


def checkpointed_scan(
    fn: Callable[[Any, Any, jax.Array], tuple[Any, Any]], carry: Any, xs: Any, chunk: int = 0
) -> tuple[Any, Any]:
    """(carry, ys) of `fn(carry, xs_chunk, i) -> (carry, ys_chunk)` run over consecutive time
    chunks of `xs` (a pytree, time on axis 0, T steps) of c = `chunk_length(T, chunk)` steps,
    chunk i = 0, 1, ...; the last T mod c steps form one shorter chunk. Each chunk is
    `jax.checkpoint`ed: the backward pass keeps only the carries between chunks and recomputes
    one chunk's activations at a time, so memory is O(T / c + c) steps instead of O(T). ys are
    concatenated on axis 0 (None where `fn` returns None)."""
    t = jax.tree.leaves(xs)[0].shape[0]
    c = chunk_length(t, chunk)
    n = t // c
    step = jax.checkpoint(fn)

    def body(carry: Any, inputs: tuple[jax.Array, Any]) -> tuple[Any, Any]:
        i, part = inputs
        return step(carry, part, i)

    main = jax.tree.map(lambda a: a[: n * c].reshape(n, c, *a.shape[1:]), xs)
    carry, ys = jax.lax.scan(body, carry, (jnp.arange(n), main))
    ys = jax.tree.map(lambda a: a.reshape(n * c, *a.shape[2:]), ys)
    if n * c < t:
        carry, rest = step(carry, jax.tree.map(lambda a: a[n * c :], xs), jnp.asarray(n))
        ys = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), ys, rest)
    return carry, ys
