"""The optimiser: global-norm clipping, then AdamW or RMSProp on a warm-up + cosine schedule.

The values a population varies (learning rate, weight decay, clipping norm) are arguments, so
one program can train each member with its own, traced rather than compiled in.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax


def schedule(tr: Any, lr: jax.Array | float) -> optax.Schedule:
    """`lr` times a shape: linear warm-up from 0 to 1 over `warmup_steps` (capped at half the
    run), then cosine decay to `final_lr_ratio` at `steps`."""
    warmup = min(tr.warmup_steps, tr.steps // 2)
    shape = optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=1.0,
        warmup_steps=warmup,
        decay_steps=max(tr.steps, warmup + 1),
        end_value=tr.final_lr_ratio,
    )
    return lambda count: lr * shape(count)


def optimizer(
    tr: Any, hp: Mapping[str, jax.Array | float] | None = None
) -> optax.GradientTransformation:
    """The optimiser of `tr` (the trainer config), with `hp`'s lr, weight_decay and clip_norm
    where given (a member's values; scalars or tracers) instead of `tr`'s. A clip_norm of 0
    disables clipping; the state has the same structure whatever the values."""
    hp = dict(hp or {})
    lr = hp.get("lr", tr.lr)
    wd = hp.get("weight_decay", tr.weight_decay)
    clip = jnp.asarray(hp.get("clip_norm", tr.clip_norm), jnp.float32)
    # An infinite norm never triggers clipping: one structure for clipped and unclipped members.
    parts = [optax.clip_by_global_norm(jnp.where(clip > 0, clip, jnp.inf))]
    if tr.optimizer == "rmsprop":
        parts.append(optax.rmsprop(schedule(tr, lr), decay=tr.rho))
        parts.append(optax.add_decayed_weights(-lr * wd))
    else:
        parts.append(optax.adamw(schedule(tr, lr), b1=tr.b1, b2=tr.b2, weight_decay=wd))
    return optax.chain(*parts)
