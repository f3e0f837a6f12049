"""The pure training program of one configuration: init, train step, evaluation.

State is a pytree: the model is split once (`nnx.split`) and rebuilt with `nnx.merge` inside
the pure functions, which `jax.jit` and `jax.vmap` then transform. One jitted train step is
vmapped over the members of a population (`grubench.population`: seeds x grid values), so a
single compiled program trains them all. Each member has its own initialisation and dropout
keys, drawn from `jax.random.key(seed)` alone, its own data order (`DataOrder`), and its own
hyperparameters, held in its state as arrays (`state["hp"]`) that the program reads, so a
member trained with others gives the numbers it gives trained by itself, and step s of a
resumed run is step s of an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from omegaconf import DictConfig

from grubench import optim, population, tasks
from grubench.model import SequenceModel, count_params
from grubench.registry import CELLS
from grubench.remat import chunk_length
from grubench.sharding import Layout, members_per_device


def seed_keys(seed: jax.Array | int) -> tuple[jax.Array, jax.Array]:
    """(init, dropout) keys of one seed; its data order comes from `DataOrder`."""
    k = jax.random.split(jax.random.key(seed), 2)
    return k[0], k[1]


class DataOrder:
    """Which training rows each seed sees at each step, drawn on the host.

    Each epoch is a permutation of 0..n-1 from `np.random.default_rng([seed, epoch])`, read in
    order `batch` rows a step (a batch may span an epoch boundary), so the rows of step s depend
    only on (seed, s): a seed sees the same data alone or beside others, and a resumed run can
    pick up at any step. `seeds` may repeat (members of a population that share a seed).
    """

    def __init__(self, seeds: list[int], n: int, batch: int):
        self.seeds, self.n, self.batch = seeds, n, batch
        self._unique = sorted(set(seeds))
        self._row = np.array([self._unique.index(s) for s in seeds])
        self._perms: dict[tuple[int, int], np.ndarray] = {}

    def _perm(self, seed: int, epoch: int) -> np.ndarray:
        key = (seed, epoch)
        if key not in self._perms:
            # Keep only the epochs still in use: batches move forward through them.
            self._perms = {k: v for k, v in self._perms.items() if k[1] >= epoch - 1}
            self._perms[key] = np.random.default_rng([seed, epoch]).permutation(self.n)
        return self._perms[key]

    def indices(self, step: int) -> np.ndarray:
        """int32 [len(seeds), batch]: the rows of `step` for every seed."""
        pos = step * self.batch + np.arange(self.batch)
        epoch, offset = pos // self.n, pos % self.n
        out = np.empty((len(self._unique), self.batch), np.int32)
        for i, seed in enumerate(self._unique):
            for e in np.unique(epoch):
                sel = epoch == e
                out[i, sel] = self._perm(seed, int(e))[offset[sel]]
        return out[self._row]


@dataclass
class Program:
    """The pure pieces of one configuration: init, train step and eval, not yet jitted.

    `dropout` says whether any member trains with dropout (a member with rate 0 beside one
    with rate 0.1 draws masks that keep everything: the same numbers as no dropout)."""

    graphdef: Any
    spec: tasks.TaskSpec
    cfg: DictConfig
    dropout: bool

    def init(self, seed: jax.Array) -> dict[str, Any]:
        """The state of one member with `seed` and the config's hyperparameters; a member of a
        population gets its own `hp` from `init_members`."""
        k_init, k_drop = seed_keys(seed)
        model = SequenceModel(self.cfg, rngs=nnx.Rngs(params=k_init))
        _, params = nnx.split(model)
        early = {"best_params": params} if self.cfg.trainer.patience else {}
        hp = population.config_values(self.cfg)
        return {
            **early,
            "params": params,
            "opt": optim.optimizer(self.cfg.trainer).init(params),
            "hp": {k: jnp.float32(v) for k, v in hp.items()},
            "dropout_key": k_drop,
            "diverged": jnp.array(False),
            "diverged_step": jnp.array(-1, jnp.int32),
            # Set by the loop once the member has stopped early (trainer.patience): frozen.
            "stopped": jnp.array(False),
        }

    def init_members(
        self,
        seeds: list[int],
        hp: dict[str, np.ndarray] | None = None,
        init: Callable | None = None,
    ) -> dict[str, Any]:
        """The states of a population's members (their `seeds`, and `hp`, float32 [members]
        each; default the config's values), stacked on a leading member axis, as `vmap(init)`
        would give.

        Each seed is initialised once on its own and then stacked, not under `vmap`: XLA's CPU
        backend deadlocks running many batched QR decompositions (the orthogonal initialiser)
        in one program — `jax.jit(jax.vmap(f))` of twelve 64 x 64 `jnp.linalg.qr` hangs in
        `block_until_ready` with the CPU idle (jax 0.10.2; the reproducer is in
        docs/performance.md).
        The states are bit-identical to vmap's."""
        init = init or jax.jit(self.init)
        unique = {s: init(jnp.asarray(s, jnp.int32)) for s in dict.fromkeys(seeds)}
        state = _stack([unique[s] for s in seeds])
        if hp is not None:
            state["hp"] = {k: jnp.asarray(v, jnp.float32) for k, v in hp.items()}
        return state

    def loss(
        self,
        params,
        batch: dict[str, jax.Array],
        dropout_key: jax.Array | None,
        dropout_rate: jax.Array | None = None,
    ):
        model = nnx.merge(self.graphdef, params)
        drop = {"dropout_key": dropout_key, "dropout_rate": dropout_rate}
        if self.cfg.model.remat:  # the whole model in checkpointed chunks: O(sqrt(T)) memory
            return model.remat_loss(batch, **drop)
        return tasks.mean_loss(model(batch["x"], **drop), batch, self.spec)

    def train_step(
        self, state: dict[str, Any], step: jax.Array, idx: jax.Array, data: dict[str, jax.Array]
    ):
        """One optimiser step on one member, on the training rows `idx`, with the member's
        hyperparameters `state["hp"]`. A non-finite loss or gradient marks the member diverged
        at `step` and freezes it; other members under vmap go on unaffected. A member that has
        stopped early (`state["stopped"]`) is frozen too, as it would be had it run alone."""
        batch = jax.tree.map(lambda a: a[idx], data)
        hp = state["hp"]
        dkey = jax.random.fold_in(state["dropout_key"], step) if self.dropout else None
        rate = hp["dropout"] if self.dropout else None
        loss, grads = jax.value_and_grad(self.loss)(state["params"], batch, dkey, rate)
        gnorm = optax.tree.norm(grads)
        tx = optim.optimizer(self.cfg.trainer, hp)
        updates, opt = tx.update(grads, state["opt"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        finite = jnp.isfinite(loss) & jnp.isfinite(gnorm)
        frozen = state["diverged"] | state["stopped"]
        ok = finite & ~frozen
        keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, old)
        new = {
            **state,
            "params": keep(params, state["params"]),
            "opt": keep(opt, state["opt"]),
            "diverged": state["diverged"] | (~finite & ~frozen),
            "diverged_step": jnp.where(~frozen & ~finite, step, state["diverged_step"]).astype(
                jnp.int32
            ),
        }
        return new, {"loss": loss, "grad_norm": gnorm}

    def grad_profile(self, params, batch: dict[str, jax.Array]) -> jax.Array:
        """[T]: mean over the batch of ||dL_i/dh_t|| at the first layer, L_i an example's loss
        (no dropout) — how much each time step's state matters to the loss."""
        model = nnx.merge(self.graphdef, params)
        b, t = batch["x"].shape[:2]
        zeros = jnp.zeros((b, t, self.cfg.model.hidden), jnp.float32)
        g = jax.grad(lambda e: tasks.mean_loss(model(batch["x"], probe=e), batch, self.spec))(zeros)
        return b * jnp.mean(jnp.linalg.norm(g, axis=-1), axis=0)

    def stream_step(self, params, x_t: jax.Array, carries: list) -> tuple[jax.Array, list]:
        """Streaming inference: one time step of one seed's model (see SequenceModel.step)."""
        return nnx.merge(self.graphdef, params).step(x_t, carries)

    def eval_sums(self, params, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
        model = nnx.merge(self.graphdef, params)
        return tasks.batch_sums(model(batch["x"]), batch, self.spec)


def build(cfg: DictConfig) -> Program:
    abstract = nnx.eval_shape(lambda: SequenceModel(cfg, rngs=nnx.Rngs(0)))
    graphdef, _ = nnx.split(abstract)
    rates = population.grid(cfg).get("model.dropout", [cfg.model.dropout])
    return Program(graphdef, tasks.spec(cfg.task), cfg, dropout=max(rates) > 0)


def _stack(states: list[Any]) -> Any:
    """States stacked on a new leading axis, on the host (PRNG keys through their key data),
    then put on the default device: no eager device op to compile per leaf."""

    def one(*xs: Any) -> Any:
        if jax.dtypes.issubdtype(xs[0].dtype, jax.dtypes.prng_key):
            data = np.stack([np.asarray(jax.random.key_data(x)) for x in xs])
            return jax.random.wrap_key_data(jnp.asarray(data))
        return jnp.asarray(np.stack([np.asarray(x) for x in xs]))

    return jax.tree.map(one, *states)


def check_fits(cfg: DictConfig, n_members: int, length: int) -> None:
    """ConfigError (one line), before any compilation, when a population of `n_members` on
    sequences of `length` steps would not fit in memory (`grubench.population.check_fits`).
    Per example and time step the backward pass keeps, per layer, the projected input, the
    gate activations and their gradients (3 x gates x hidden) and two hidden vectors, plus the
    input and the output, its softmax and gradient: for every step or, with model.remat, a
    chunk."""
    on_one = members_per_device(n_members, cfg.trainer.shard)
    population.check_fits(n_members, member_bytes(cfg, length), on_one)


def member_bytes(cfg: DictConfig, length: int) -> int:
    """`check_fits`' estimate of one member's training memory, in bytes."""
    m, spec = cfg.model, tasks.spec(cfg.task)
    per_step = m.depth * (3 * CELLS.get(m.name).gates + 2) * m.hidden
    per_step += spec.input_size + 3 * spec.output_size
    kept = chunk_length(length, m.remat_chunk) if m.remat else length
    return population.estimated_bytes(count_params(cfg), cfg.trainer.batch_size, kept, per_step)


class Placed:
    """A population (`grubench.population`) set up to train on the devices: its program, its
    layout (`grubench.sharding`: members padded and sharded), the training set, every member's
    data order, and the train step, jitted with the layout's shardings (not yet compiled).

    `init()` is the first state of every padded member; `inputs(step)` the step's arguments
    after the state: `step_fn(state, *inputs(step), data) -> (state, {loss, grad_norm})`."""

    def __init__(self, cfg: DictConfig, members: list[population.Member], train: tasks.Split):
        tr = cfg.trainer
        self.program = build(cfg)
        self.layout = layout = Layout(len(members), tr.shard)
        self.padded = layout.pad(members)
        self.hp = population.hyperparams(cfg, self.padded)
        self.data = layout.place(train.arrays(), layout.replicated)
        self.order = DataOrder([m.seed for m in self.padded], len(train), tr.batch_size)
        self.step_fn = jax.jit(
            jax.vmap(self.program.train_step, in_axes=(0, None, 0, None)),
            in_shardings=(layout.members, layout.replicated, layout.rows, layout.replicated),
            out_shardings=(layout.members, layout.members),
            donate_argnums=0,
        )

    def init(self, init: Callable | None = None) -> dict[str, Any]:
        seeds = [m.seed for m in self.padded]
        return self.layout.put(self.program.init_members(seeds, self.hp, init))

    def inputs(self, step: int) -> tuple[jax.Array, jax.Array]:
        """(step, the rows of every member at `step`), placed as the step function takes them."""
        return (
            self.layout.place(np.int32(step), self.layout.replicated),
            self.layout.place(self.order.indices(step), self.layout.rows),
        )


class Evaluator:
    """Exact loss and accuracy of every member on a whole split, in fixed-size padded batches
    (one compiled shape for all splits). With a `layout` (`grubench.sharding`), the members
    stay where the layout puts them and the results drop its padding members."""

    def __init__(self, program: Program, batch_size: int, layout: Layout | None = None):
        self.batch_size, self.layout = batch_size, layout
        shardings: dict[str, Any] = {}
        if layout is not None:
            shardings = {
                "in_shardings": (layout.members, layout.replicated),
                "out_shardings": layout.members,
            }
        self.fn = jax.jit(jax.vmap(program.eval_sums, in_axes=(0, None)), **shardings)

    def __call__(self, params, split: tasks.Split) -> dict[str, np.ndarray]:
        arrays = split.arrays()
        n, bs = len(split), self.batch_size
        totals = None
        for start in range(0, n, bs):
            chunk = {k: v[start : start + bs] for k, v in arrays.items()}
            pad = bs - chunk["x"].shape[0]
            if pad:  # padded rows have zero masks, so they add nothing to the sums
                chunk = {
                    k: np.concatenate([v, np.zeros((pad, *v.shape[1:]), v.dtype)])
                    for k, v in chunk.items()
                }
            if self.layout is not None:
                chunk = self.layout.place(chunk, self.layout.replicated)
            sums = self.fn(params, chunk)
            totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
        gather = self.layout.gather if self.layout is not None else np.asarray
        t = jax.tree.map(gather, totals)
        out = {
            "loss": t["loss_sum"] / np.maximum(t["loss_weight"], 1.0),
            "accuracy": t["correct"] / np.maximum(t["count"], 1.0),
        }
        if "lag_correct" in t:  # [members, lags]; NaN where the split has no example at a lag
            with np.errstate(invalid="ignore", divide="ignore"):
                out["lag_accuracy"] = t["lag_correct"] / t["lag_count"]
        return out
