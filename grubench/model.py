"""SequenceModel: encoder -> depth x Recurrent -> head, one output per time step."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from grubench import tasks
from grubench.layers import stack


class SequenceModel(nnx.Module):
    """outputs = SequenceModel(cfg, rngs=...)(x, dropout_key=None): [B, T, ...] -> [B, T, O].

    Encoder: an embedding of `model.embed_dim` for token inputs, a linear map for real inputs;
    `embed_dim=0` feeds one-hot tokens or the raw reals to the first layer. Then `model.depth`
    Recurrent layers with dropout on each layer's output (training only, when a dropout key is
    given), and a linear head to the task's output size (logits or real values).
    """

    def __init__(self, cfg, *, rngs: nnx.Rngs):
        m = cfg.model
        self.spec = tasks.spec(cfg.task)
        self.embed_dim = m.embed_dim
        width = m.embed_dim or self.spec.input_size
        if m.embed_dim == 0:
            self.encoder = None
        elif self.spec.input == "tokens":
            self.encoder = nnx.Embed(self.spec.input_size, m.embed_dim, rngs=rngs)
        else:
            self.encoder = nnx.Linear(self.spec.input_size, m.embed_dim, rngs=rngs)
        self.rnn = stack(
            m.cell,
            width,
            m.hidden,
            m.depth,
            rngs=rngs,
            dropout=m.dropout,
            reset_after=m.reset_after,
            forget_bias=m.forget_bias,
            recurrent_init=m.recurrent_init,
            bias_init=m.bias_init,
            unroll=m.unroll,
        )
        self.head = nnx.Linear(m.hidden, self.spec.output_size, rngs=rngs)

    def encode(self, x: jax.Array) -> jax.Array:
        if self.encoder is not None:
            return self.encoder(x)
        if self.spec.input == "tokens":
            return jax.nn.one_hot(x, self.spec.input_size, dtype=jnp.float32)
        return x.astype(jnp.float32)

    def __call__(self, x: jax.Array, *, dropout_key: jax.Array | None = None,
                 probe: jax.Array | None = None) -> jax.Array:
        ys, _ = self.rnn(self.encode(x), dropout_key=dropout_key, probe=probe)
        return self.head(ys)


def param_count(state) -> int:
    """Number of scalars in a parameter pytree (of one seed)."""
    return int(sum(x.size for x in jax.tree.leaves(state)))
