"""`grubench-bench --population`: K members in one program against one member alone.

For each cell and each K, the train step of `grubench-train` itself (`grubench.program.Placed`:
the members vmapped, sharded over every device) on a population of K members — K learning
rates, log-spaced — is compiled and timed as the median of `iters` steps after `warmup`, each
ended by `block_until_ready`. Members per second is K / step time; the throughput ratio is
that over one member's (K = 1, timed in the same run), so a ratio of K means the K members
cost no more time than one. Memory per member is XLA's accounting of the compiled step
(arguments, outputs and temporaries, the training set left out) over the members a device
holds.
"""

from __future__ import annotations

import sys
from typing import Any

import jax
import numpy as np

from grubench import measure, population, runtime, tasks
from grubench.cli import compose
from grubench.measure import median_time
from grubench.program import Placed, check_fits

MEMBERS = (1, 4, 16, 64)


def population_config(cell: str, k: int, hidden: int, seq_len: int, batch: int) -> Any:
    """The config of a population of `k` members on the copy task: k learning rates."""
    lrs = ",".join(f"{lr:.6g}" for lr in np.geomspace(1e-4, 1e-2, k)) if k > 1 else "0.001"
    return compose(
        f"model={cell}",
        "task=copy",
        f"model.hidden={hidden}",
        f"task.seq_len={seq_len}",
        f"trainer.batch_size={batch}",
        f"trainer.grid.lr=[{lrs}]",
    )


def time_population(cfg: Any, warmup: int, iters: int) -> dict[str, Any]:
    """One population's step: its median time and XLA's memory per member."""
    train = tasks.make_splits(cfg.task).train
    check_fits(cfg, population.size(cfg), int(train.x.shape[1]))
    members = population.members(cfg)
    placed = Placed(cfg, members, train)
    state = placed.init()
    compiled = placed.step_fn.lower(state, *placed.inputs(0), placed.data).compile()
    nbytes = measure.compiled_bytes(compiled, (state, placed.inputs(0)))
    step = 0

    def run() -> Any:
        nonlocal state, step
        state, out = compiled(state, *placed.inputs(step), placed.data)
        step += 1
        return state

    seconds = median_time(run, iters, warmup, sync=jax.block_until_ready)
    return {
        "members": len(members),
        "step_ms": 1e3 * seconds,
        "members_per_s": len(members) / seconds,
        "bytes_per_member": placed.layout.per_member(nbytes),
        "devices": placed.layout.devices,
    }


def run_population(
    cells: list[str],
    ks: list[int],
    hidden: int,
    seq_len: int,
    batch: int,
    warmup: int,
    iters: int,
) -> dict[str, Any]:
    """Every cell at every K; each row has its throughput ratio to the cell's K = 1 row."""
    rows = []
    for cell in cells:
        one = None
        for k in sorted(set(ks) | {1}):
            row = {
                "cell": cell,
                "shape": [batch, seq_len, hidden],
                **time_population(
                    population_config(cell, k, hidden, seq_len, batch), warmup, iters
                ),
            }
            one = one or row
            row["throughput_ratio"] = row["members_per_s"] / one["members_per_s"]
            row["time_ratio"] = row["step_ms"] / one["step_ms"]
            print(
                f"  {cell:7s} K={k:<4d} {row['step_ms']:9.2f} ms  "
                f"{row['members_per_s']:8.0f} member-steps/s  x{row['throughput_ratio']:.1f}",
                file=sys.stderr,
                flush=True,
            )
            rows.append(row)
    return {
        "mode": "population",
        "device": jax.devices()[0].device_kind,
        "devices": jax.device_count(),
        "xla_flags": runtime.xla_flags(),
        "task": "copy",
        "rows": rows,
    }


def format_population(result: dict[str, Any]) -> str:
    """Markdown: per cell and K, step time, member-steps per second, the time and throughput
    ratios to one member, and XLA's memory per member."""
    head = [
        "cell",
        "K",
        "step ms",
        "member-steps/s",
        "time / 1 member",
        "throughput / 1 member",
        "XLA MiB per member",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in result["rows"]:
        mem = r["bytes_per_member"]
        cells = [
            r["cell"],
            str(r["members"]),
            f"{r['step_ms']:.2f}",
            f"{r['members_per_s']:.0f}",
            f"{r['time_ratio']:.2f}",
            f"{r['throughput_ratio']:.2f}",
            "n/a" if mem is None else f"{mem / 2**20:.2f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    b, t, h = result["rows"][0]["shape"]
    lines.append("")
    lines.append(
        f"device {result['device']} x {result['devices']}; task copy, T={t}, B={b}, "
        f"hidden={h}; one train step of K members in one program"
    )
    return "\n".join(lines)
