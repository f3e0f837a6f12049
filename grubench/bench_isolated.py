"""`grubench-bench --isolated`: each implementation timed in a fresh process of its own.

In one process every implementation shares the process's settings: grubench's (single-threaded
Eigen, one CPU device per core, glibc malloc kept; `grubench.runtime`) also change how Flax and
torch run, for better or worse. As users meet them, each runs in a process of its own with its
own defaults: ours with grubench's settings (as `grubench-train` applies them), Flax and torch
without. Here each (implementation, round) is one fresh worker process,

    python -m grubench.bench_isolated IMPL SPEC_JSON

that times every cell and shape (`grubench.bench.time_impl`) and prints its rows as JSON on
its last line of stdout. Rounds interleave the implementations, the order rotated each round so
that none always runs first; per shape the best round is reported, with every round's time and
the spread (max − min) / min. One more plain worker measures the matmul peak with JAX's
defaults (all cores for one product).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

from grubench.errors import GrubenchError

Shape = tuple[int, int, int, int]


def _spawn(impl: str, spec: dict[str, Any]) -> Any:
    """Run one worker; its JSON answer. Its progress lines go to our stderr as they come."""
    cmd = [sys.executable, "-m", "grubench.bench_isolated", impl, json.dumps(spec)]
    p = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, env=dict(os.environ))
    lines = p.stdout.strip().splitlines()
    if p.returncode != 0 or not lines:
        raise GrubenchError(f"the {impl} worker process failed (exit {p.returncode})")
    try:
        return json.loads(lines[-1])
    except json.JSONDecodeError:
        raise GrubenchError(f"the {impl} worker process ended without its JSON line") from None


def run_isolated(
    shapes: Sequence[Shape],
    cells: Sequence[str],
    warmup: int,
    iters: int,
    with_torch: bool,
    forward: bool,
    optimizer: str,
    rounds: int,
    ours_kw: dict[str, Any],
) -> dict[str, Any]:
    """grubench-bench's result (`grubench.bench.format_table`'s input) with mode "isolated":
    per (cell, implementation, shape) `step_ms` is the best round, `rounds_ms` every round,
    `spread` (max − min) / min, and `xla_flags` and `devices` what the worker's JAX ran
    with."""
    impls = ["grubench", "flax"] + (["torch"] if with_torch else [])
    spec = {
        "shapes": [list(s) for s in shapes],
        "cells": list(cells),
        "warmup": warmup,
        "iters": iters,
        "forward": forward,
        "optimizer": optimizer,
        "ours": ours_kw,
    }
    got: dict[tuple, list[dict[str, Any]]] = {}
    for r in range(rounds):
        k = r % len(impls)
        for impl in impls[k:] + impls[:k]:
            print(f"round {r + 1}/{rounds}: {impl} in a fresh process", file=sys.stderr)
            for row in _spawn(impl, spec):
                got.setdefault((row["cell"], row["impl"], tuple(row["shape"])), []).append(row)
    peak = _spawn("peak", {})
    rows = []
    for cell in cells:
        for shape in shapes:
            for impl in impls:
                runs = got[(cell, impl, tuple(shape))]
                best = min(runs, key=lambda row: row["step_ms"])
                times = [row["step_ms"] for row in runs]
                rows.append(
                    best
                    | {
                        "rounds_ms": times,
                        "spread": (max(times) - min(times)) / min(times),
                    }
                )
    return {
        "peak_gflops": peak["peak_gflops"],
        "device": peak["device"],
        "mode": "isolated",
        "rounds": rounds,
        "options": {**ours_kw, "forward": forward, "optimizer": optimizer},
        "rows": rows,
    }


def worker(argv: Sequence[str]) -> int:
    """One worker process: IMPL (grubench, flax, torch or peak) and the spec as JSON."""
    impl, spec = argv[0], json.loads(argv[1])
    from grubench import runtime

    if impl == "grubench":  # as grubench-train runs: its process settings before JAX starts
        runtime.configure()
    from grubench import bench

    if impl == "peak":
        import jax

        answer: Any = {
            "peak_gflops": bench.matmul_peak_gflops(),
            "device": jax.devices()[0].device_kind,
        }
    else:
        import jax

        process = {"xla_flags": runtime.xla_flags(), "devices": jax.device_count()}
        answer = [
            bench.time_impl(
                impl,
                cell,
                tuple(shape),
                spec["warmup"],
                spec["iters"],
                spec["forward"],
                spec["optimizer"],
                **spec["ours"],
            )
            | process
            for cell in spec["cells"]
            for shape in spec["shapes"]
        ]
    print(json.dumps(answer))
    return 0


if __name__ == "__main__":
    sys.exit(worker(sys.argv[1:]))
