"""The optimiser: global-norm clipping, then AdamW or RMSProp on a warm-up + cosine schedule."""

from __future__ import annotations

import optax


def schedule(tr) -> optax.Schedule:
    """Linear warm-up from 0 to `lr` over `warmup_steps` (capped at half the run), then cosine
    decay to `lr * final_lr_ratio` at `steps`."""
    warmup = min(tr.warmup_steps, tr.steps // 2)
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=tr.lr,
        warmup_steps=warmup,
        decay_steps=max(tr.steps, warmup + 1),
        end_value=tr.lr * tr.final_lr_ratio,
    )


def optimizer(tr) -> optax.GradientTransformation:
    parts = []
    if tr.clip_norm > 0:
        parts.append(optax.clip_by_global_norm(tr.clip_norm))
    if tr.optimizer == "rmsprop":
        parts.append(optax.rmsprop(schedule(tr), decay=tr.rho))
        if tr.weight_decay:
            parts.append(optax.add_decayed_weights(-tr.lr * tr.weight_decay))
    else:
        parts.append(optax.adamw(schedule(tr), b1=tr.b1, b2=tr.b2, weight_decay=tr.weight_decay))
    return optax.chain(*parts)
