"""SequenceModel: encoder -> depth x Recurrent -> head, one output per time step."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from omegaconf import OmegaConf

from grubench import tasks
from grubench.config import ModelConfig
from grubench.layers import stack
from grubench.registry import CELLS
from grubench.remat import checkpointed_scan, chunk_length

_COMMON = {f.name for f in fields(ModelConfig)}


def cell_options(m: Any) -> dict[str, Any]:
    """The cell's own options from a model config node: the fields its registered config
    dataclass adds to ModelConfig (e.g. LSTM's forget_bias)."""
    entry = CELLS.get(m.name)
    return {f.name: m[f.name] for f in fields(entry.config) if f.name not in _COMMON}


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
        self.encoder: nnx.Module | None
        if m.embed_dim == 0:
            self.encoder = None
        elif self.spec.input == "tokens":
            self.encoder = nnx.Embed(self.spec.input_size, m.embed_dim, rngs=rngs)
        else:
            self.encoder = nnx.Linear(self.spec.input_size, m.embed_dim, rngs=rngs)
        self.rnn = stack(
            m.name,
            width,
            m.hidden,
            m.depth,
            rngs=rngs,
            dropout=m.dropout,
            recurrent_init=m.recurrent_init,
            bias_init=m.bias_init,
            unroll=m.unroll,
            backward=m.backward,
            matmul_dtype=m.matmul_dtype,
            scan=m.scan,
            remat=m.remat,
            remat_chunk=m.remat_chunk,
            **cell_options(m),
        )
        self.head = nnx.Linear(m.hidden, self.spec.output_size, rngs=rngs)
        self.remat_chunk = m.remat_chunk

    def encode(self, x: jax.Array) -> jax.Array:
        if self.encoder is not None:
            return self.encoder(x)
        if self.spec.input == "tokens":
            return jax.nn.one_hot(x, self.spec.input_size, dtype=jnp.float32)
        return x.astype(jnp.float32)

    def __call__(
        self,
        x: jax.Array,
        *,
        dropout_key: jax.Array | None = None,
        dropout_rate: jax.Array | None = None,
        probe: jax.Array | None = None,
    ) -> jax.Array:
        ys, _ = self.rnn(
            self.encode(x), dropout_key=dropout_key, dropout_rate=dropout_rate, probe=probe
        )
        return self.head(ys)

    def remat_loss(
        self,
        batch: dict[str, jax.Array],
        *,
        dropout_key: jax.Array | None = None,
        dropout_rate: jax.Array | None = None,
    ) -> jax.Array:
        """The training loss `tasks.mean_loss(self(x), batch)` in checkpointed time chunks of
        `model.remat_chunk` steps (0: about sqrt(T)): each chunk runs encoder, every layer,
        head and loss, and only the carries between chunks are kept for the backward pass, so
        training memory is O(sqrt(T)) hidden states plus the O(T) integer inputs and targets
        (`grubench.remat.checkpointed_scan`). Dropout masks are drawn per chunk, so with dropout
        the draws differ from `__call__`'s."""
        b, t = batch["x"].shape[:2]
        c = chunk_length(t, self.remat_chunk)
        pad = -t % c  # whole chunks: padded steps have zero masks and add nothing to the sums

        def time_major(a: jax.Array) -> jax.Array:  # [B, T, ...] -> [T + pad, B, ...]
            a = jnp.pad(a, [(0, 0), (0, pad)] + [(0, 0)] * (a.ndim - 2))
            return jnp.swapaxes(a, 0, 1)

        per_step = {k: time_major(batch[k]) for k in ("x", "y", "loss_mask", "metric_mask")}

        def chunk(carry, part, i):
            carries, total, weight = carry
            part = {k: jnp.swapaxes(v, 0, 1) for k, v in part.items()}
            key = None if dropout_key is None else jax.random.fold_in(dropout_key, i)
            h, out = self.encode(part["x"]), []
            for j, (layer, cj) in enumerate(zip(self.rnn.layers, carries, strict=True)):
                h, cj = layer(h, cj, remat=False)
                out.append(cj)
                h = self.rnn.apply_dropout(h, j, key, dropout_rate)
            sums = tasks.batch_sums(self.head(h), part, self.spec)
            return (out, total + sums["loss_sum"], weight + sums["loss_weight"]), None

        zero = jnp.zeros((), jnp.float32)
        (_, total, weight), _ = checkpointed_scan(
            chunk, (self.initial_carries(b), zero, zero), per_step, c
        )
        return total / jnp.maximum(weight, 1.0)

    def initial_carries(self, batch: int) -> list:
        """The zero state of every layer, for `step`."""
        return [layer.cell.initial_carry((batch,)) for layer in self.rnn.layers]

    def step(self, x_t: jax.Array, carries: list) -> tuple[jax.Array, list]:
        """Streaming inference, one time step: x_t [B] tokens or [B, D] reals -> ([B, O], new
        carries). Run over t it gives `__call__`'s outputs, step by step."""
        h = self.encode(x_t)
        out = []
        for layer, carry in zip(self.rnn.layers, carries, strict=True):
            carry, h = layer.cell.recurrence()(carry, layer.cell.project(h))
            out.append(carry)
        return self.head(h), out


def param_count(state) -> int:
    """Number of scalars in a parameter pytree (of one member)."""
    return int(sum(x.size for x in jax.tree.leaves(state)))


def count_params(cfg) -> int:
    """Parameters of the model `cfg` describes, from shapes alone (nothing is initialised)."""
    abstract = nnx.eval_shape(lambda: SequenceModel(cfg, rngs=nnx.Rngs(0)))
    return param_count(nnx.state(abstract, nnx.Param))


def hidden_for_budget(cfg, budget: int) -> int:
    """The hidden size whose model has the parameter count nearest `budget` (the smaller on a
    tie). The count grows with hidden, so a bisection finds it."""

    def count(h: int) -> int:
        return count_params(OmegaConf.merge(cfg, {"model": {"hidden": h}}))

    lo, hi = 1, 2
    while count(hi) < budget:
        lo, hi = hi, 2 * hi
    while hi - lo > 1:  # invariant: count(lo) < budget <= count(hi), or lo == 1
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if count(mid) < budget else (lo, mid)
    if count(lo) >= budget:
        return lo
    return lo if budget - count(lo) <= count(hi) - budget else hi


def with_budget(cfg):
    """`cfg` with model.hidden set from model.param_budget when that is > 0, else `cfg`."""
    if not cfg.model.param_budget:
        return cfg
    return OmegaConf.merge(
        cfg, {"model": {"hidden": hidden_for_budget(cfg, cfg.model.param_budget)}}
    )
