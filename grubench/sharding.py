"""Where a population lives: its member axis sharded over the devices, on one host or many.

A 1-D `jax.sharding.Mesh` over the devices (`jax.devices()`: every host's, after
`initialize_distributed`; on one host, no more devices than members) with axis "d". With
`trainer.shard=members` the leading member axis of the train state is split over "d"
(`NamedSharding(mesh, P("d"))`), the members padded to a multiple of the device count by
repeating the last one (padding is computed and never reported); each device trains its own
members and no step communicates. With `trainer.shard=batch` every device holds every member
and the batch axis is split over "d" (data parallel: XLA all-reduces the gradients), for a
member too large to train on one device in reasonable time. Evaluation batches are replicated
in both modes. On a CPU, `grubench.runtime` makes one device per core, so a population uses
every core.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from grubench.errors import ConfigError
from grubench.process import srun_task

AXIS = "d"


def initialize_distributed() -> bool:
    """Start JAX's multi-process runtime when srun runs this job as several tasks (submitit's
    `tasks_per_node` or `nodes` > 1): `jax.distributed.initialize()` reads the coordinator,
    process count and index from SLURM's environment. True when it did."""
    if srun_task()[1] <= 1:
        return False
    if not jax.distributed.is_initialized():
        jax.distributed.initialize()
    return True


def agree(*flags: bool) -> tuple[bool, ...]:
    """Each flag true where it is true in any process (one small all-gather when there are
    several): what every process of a multi-process run must decide alike, such as stopping
    on a signal that reaches each at a different step."""
    if jax.process_count() == 1:
        return tuple(bool(f) for f in flags)
    from jax.experimental import multihost_utils

    every = multihost_utils.process_allgather(np.asarray(flags, np.int32))
    anywhere = np.asarray(every).reshape(-1, len(flags)).max(axis=0).tolist()
    return tuple(bool(v) for v in anywhere)


def primary() -> bool:
    """Whether this process writes the run's files (process 0 of a multi-process job)."""
    return jax.process_index() == 0


def check(shard: str, batch_size: int) -> None:
    """ConfigError (one line) where the devices cannot take the layout: a batch split over
    them must divide evenly."""
    devices = jax.device_count()
    if shard == "batch" and batch_size % devices:
        raise ConfigError(
            f"trainer.batch_size={batch_size} is not allowed with trainer.shard=batch: a "
            f"multiple of the {devices} devices"
        )


def members_per_device(n: int, shard: str) -> int:
    """How many of `n` members one device holds: every one with the batch sharded, else as
    few as take them all in one round over the devices (6 members on 4 devices: 2 each, on
    3 of them, with no padding; 17 on 16: 2 each on 9)."""
    return n if shard == "batch" else -(-n // jax.device_count())


class Layout:
    """The placement of `n` members: `padded` of them (a multiple of the device count when the
    members are sharded), on a mesh over the devices (`check` first: the batch must split).

    state sharding: `members` (P("d") or replicated); training rows `rows` (P("d", None) or
    P(None, "d")); `replicated` for the data and evaluation batches."""

    def __init__(self, n: int, shard: str = "members"):
        devices = jax.devices()
        if shard == "members" and jax.process_count() == 1:
            devices = devices[: -(-n // members_per_device(n, shard))]
        self.n, self.shard, self.devices = n, shard, len(devices)
        self.mesh = Mesh(np.array(devices), (AXIS,))
        self.replicated = NamedSharding(self.mesh, P())
        if shard == "batch":
            self.padded = n
            self.members = self.replicated
            self.rows = NamedSharding(self.mesh, P(None, AXIS))
        else:
            self.padded = -(-n // self.devices) * self.devices
            self.members = NamedSharding(self.mesh, P(AXIS))
            self.rows = NamedSharding(self.mesh, P(AXIS, None))

    def place(self, tree: Any, sharding: NamedSharding) -> Any:
        """`tree` (host arrays, or arrays on this process's devices, the same in every
        process) placed with `sharding`. One process: `jax.device_put`. Several: each process
        fills the shards on its own devices (`jax.make_array_from_callback`), since
        `device_put` takes only shardings of this process's devices."""
        if jax.process_count() == 1:
            return jax.device_put(tree, sharding)
        return jax.tree.map(lambda a: _global(a, sharding), tree)

    def pad(self, items: list) -> list:
        """`items` (one per member) with the last repeated up to `padded`."""
        return items + [items[-1]] * (self.padded - len(items))

    def put_mask(self, mask: np.ndarray) -> jax.Array:
        """A host bool [n] (one per member) padded and placed like the members' state."""
        return self.place(np.asarray(self.pad(list(mask)), bool), self.members)

    def put(self, state: Any) -> Any:
        """A state of `padded` members placed with the member sharding."""
        return self.place(state, self.members)

    def trim(self, state: Any) -> Any:
        """The first `n` members of a padded state, on the host: numpy arrays (PRNG keys as
        key arrays on the default device), for a checkpoint that resumes on any number of
        devices without gathering every member onto each device."""

        def one(a: jax.Array) -> Any:
            if jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key):
                return jax.random.wrap_key_data(jnp.asarray(self.gather(jax.random.key_data(a))))
            return self.gather(a)

        return jax.tree.map(one, state)

    def untrim(self, state: Any) -> Any:
        """`trim`'s inverse: `n` members (on the host or one device) padded again and placed
        with the member sharding (through a copy on every device only where there is padding
        to add, once, when a checkpoint is restored)."""
        if self.padded == self.n:
            return self.place(state, self.members)
        return self._pad(self.place(state, self.replicated))

    @functools.cached_property
    def _pad(self) -> Callable[[Any], Any]:
        extra = self.padded - self.n

        def pad(a: jax.Array) -> jax.Array:
            return jnp.concatenate([a, *[a[-1:]] * extra]) if extra else a

        return jax.jit(lambda s: jax.tree.map(pad, s), out_shardings=self.members)

    def per_member(self, nbytes: int | None) -> float | None:
        """One member's share of XLA's per-device accounting of a step's memory: the members
        on one device share it (all of them, when the batch is sharded)."""
        on_one = self.padded // self.devices if self.shard == "members" else self.n
        return None if nbytes is None else nbytes / on_one

    def gather(self, x: Any) -> np.ndarray:
        """A per-member array as numpy on this host, padding dropped."""
        if jax.process_count() > 1 and not getattr(x, "is_fully_addressable", True):
            from jax.experimental import multihost_utils

            x = multihost_utils.process_allgather(x, tiled=True)
        return np.asarray(x)[: self.n]


def _global(a: Any, sharding: NamedSharding) -> jax.Array:
    """One array of `Layout.place` with several processes (PRNG keys through their data)."""
    if isinstance(a, jax.Array) and jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key):
        data = _global(jax.random.key_data(a), sharding)
        return jax.random.wrap_key_data(data, impl=jax.random.key_impl(a))
    host = np.asarray(a)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])
