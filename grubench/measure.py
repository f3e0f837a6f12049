"""Measurements that do not change what they measure: step time, memory, streaming latency.

Times are medians over repeated calls after warm-up, each ended by `jax.block_until_ready`;
memory is XLA's own accounting of a compiled program (`compiled.memory_analysis()`), plus the
device's peak where the backend reports one (GPU).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np


def median_time(
    fn: Callable[[], Any],
    repeats: int,
    warmup: int = 3,
    sync: Callable[[Any], Any] = jax.block_until_ready,
) -> float:
    """Median seconds of `fn()` over `repeats` calls, after `warmup` untimed ones; each call
    ends with `sync(result)` (default `jax.block_until_ready`; a torch peer passes its own)."""
    for _ in range(warmup):
        sync(fn())
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        sync(fn())
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def compiled_bytes(compiled, arguments: Any) -> int | None:
    """One device's memory for a compiled program: the bytes of `arguments` (the pytree of the
    arguments that are the model's, e.g. the train state and the batch rows, not the training
    set) on one device, plus XLA's outputs and temporaries, less what outputs alias (donated
    buffers); None where the backend has no memory analysis.

    The arguments are counted here rather than taken from XLA's argument size less the
    arguments left out, because XLA drops the arguments a program does not read (a mask the
    step never uses): subtracting their bytes could make the figure negative."""
    try:
        m = compiled.memory_analysis()
        own = sum(_one_device_bytes(x) for x in jax.tree.leaves(arguments))
        return int(own + m.output_size_in_bytes + m.temp_size_in_bytes - m.alias_size_in_bytes)
    except Exception:  # noqa: BLE001 - backends without memory analysis leave it unknown
        return None


def _one_device_bytes(x: Any) -> int:
    """The bytes of array `x` held by one device (its first shard; all of it when unsharded)."""
    shards = getattr(x, "addressable_shards", None)
    if shards:
        data = shards[0].data
        if jax.dtypes.issubdtype(data.dtype, jax.dtypes.prng_key):
            data = jax.random.key_data(data)
        return int(data.nbytes)
    return int(np.asarray(x).nbytes)


def device_peak_bytes() -> int | None:
    """The device's peak bytes in use so far, where the backend reports it (GPU), else None."""
    stats = jax.local_devices()[0].memory_stats() or {}
    return int(stats["peak_bytes_in_use"]) if "peak_bytes_in_use" in stats else None


def param_bytes(params) -> int:
    """Bytes of a parameter pytree (one seed): what a deployed model weighs."""
    return int(sum(np.asarray(x).nbytes for x in jax.tree.leaves(params)))


def stream_step_time(model_step: Callable, params, x_t, carries, repeats: int = 200) -> float:
    """Seconds of one streaming-inference step at the shapes of `x_t` (batch 1 for the real-time
    case): `model_step(params, x_t, carries) -> (output, carries)`, jitted, the carry fed back
    as a server would; median over `repeats` steps after warm-up."""
    fn = jax.jit(model_step)
    state = {"carries": carries}

    def one():
        out, state["carries"] = fn(params, x_t, state["carries"])
        return out

    return median_time(one, repeats, warmup=5)
