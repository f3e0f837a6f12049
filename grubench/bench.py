"""`grubench-bench`: our GRU and LSTM layers against peers, timed in one process.

For each shape (B, T, D, H) and cell, one training step — forward, backward and an Adam update
of a single recurrent layer under the loss mean((ys - target)^2) — of
  grubench: `grubench.layers.Recurrent` under `jax.jit`;
  flax:     `flax.linen.RNN(GRUCell)` / `RNN(OptimizedLSTMCell)` under `jax.jit`;
  torch:    `torch.nn.GRU` / `nn.LSTM` (fused kernels; cuDNN on a GPU), when torch is installed.
Each is timed as the median of `--iters` steps after `--warmup`, every step ended by
`block_until_ready` (torch: `cuda.synchronize` on a GPU). GFLOP/s counts the matmuls only:
forward 2·B·T·G·H·(D + H), backward twice that. The machine's matmul peak is measured in the
same run (float32 GEMM), so ratios are against peers measured under the same conditions.
`--forward` times the forward pass alone instead (evaluation, inference; torch under
`no_grad`), one third of those FLOPs. `--population` times K members of a population in one
program against one member (grubench/bench_population.py).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from grubench import runtime
from grubench.bench_population import MEMBERS, format_population, run_population
from grubench.errors import GrubenchError
from grubench.measure import median_time
from grubench.registry import CELLS

SHAPES = [(32, 128, 64, 256), (64, 256, 64, 256), (16, 512, 32, 128), (128, 64, 128, 512)]
SCALING_T = [128, 256, 512, 1024, 2048, 4096]


def _timed_row(
    cell: str,
    impl: str,
    shape: tuple[int, int, int, int],
    run: Callable,
    sync: Callable,
    warmup: int,
    iters: int,
    forward: bool = False,
) -> dict[str, Any]:
    """One result row (the JSON contract's): the median step time of `run` and its GFLOP/s
    (`forward`: of a forward pass alone, a third of a training step's FLOPs)."""
    ms = 1e3 * median_time(run, iters, warmup, sync=sync)
    b, t, d, h = shape
    flops = step_flops(cell, b, t, d, h) / (3 if forward else 1)
    print(
        f"  {cell:7s} {impl:10s} B={b:<4d} T={t:<5d} D={d:<4d} H={h:<4d} {ms:9.2f} ms",
        file=sys.stderr,
        flush=True,
    )
    return {
        "cell": cell,
        "impl": impl,
        "shape": [b, t, d, h],
        "step_ms": ms,
        "gflops": flops / (ms * 1e-3) / 1e9,
    }


def _result(rows: list[dict[str, Any]], **extra) -> dict[str, Any]:
    """A run's JSON: the matmul peak, the device, the XLA_FLAGS this process's XLA runs under
    (grubench's process settings, or the user's), `extra` and the rows."""
    return {
        "peak_gflops": matmul_peak_gflops(),
        "device": jax.devices()[0].device_kind,
        "xla_flags": runtime.xla_flags(),
        **extra,
        "rows": rows,
    }


def step_flops(cell: str, b: int, t: int, d: int, h: int) -> float:
    """Matmul FLOPs of forward + backward: 3 x 2·B·T·G·H·(D + H) (minGRU/minLSTM: no H term)."""
    entry = CELLS.get(cell)
    return 3 * 2 * b * t * entry.gates * h * (d + (0 if entry.linear_in_h else h))


def matmul_peak_gflops(n: int | None = None, iters: int = 10) -> float:
    """float32 GEMM throughput of this device, n x n x n, median of `iters`. n defaults to
    2048 on a CPU and 8192 on an accelerator, where a 2048 product is over too fast to time."""
    n = n or (2048 if jax.default_backend() == "cpu" else 8192)
    a = jax.random.normal(jax.random.key(0), (n, n))
    f = jax.jit(lambda x: x @ x)
    ms = 1e3 * median_time(lambda: f(a), iters, warmup=2)
    return 2 * n**3 / (ms * 1e-3) / 1e9


# What a timed train step ends with: an Adam update (the default), a plain SGD update, or
# nothing after the gradients ("none": forward, backward and the loss alone).
OPTIMIZERS = ("adam", "sgd", "none")


def _jax_trainer(loss: Callable, params: Any, x: jax.Array, y: jax.Array, optimizer: str = "adam"):
    """A zero-argument training step (grad of `loss`, then `optimizer`'s update) that updates
    params in place; with optimizer "none", the gradients alone."""
    if optimizer == "none":
        grad = jax.jit(jax.grad(loss))
        return lambda: grad(params, x, y)
    tx = optax.adam(1e-3) if optimizer == "adam" else optax.sgd(1e-3)

    @jax.jit
    def step(params, opt, x, y):
        grads = jax.grad(loss)(params, x, y)
        updates, opt = tx.update(grads, opt, params)
        return optax.apply_updates(params, updates), opt

    state = [params, tx.init(params)]

    def run():
        state[0], state[1] = step(state[0], state[1], x, y)
        return state[0]

    return run


def _jax_forward(apply: Callable, params: Any, x: jax.Array):
    """A zero-argument forward pass: the jitted apply(params, x)."""
    f = jax.jit(apply)
    return lambda: f(params, x)


def ours(
    cell: str,
    b: int,
    t: int,
    d: int,
    h: int,
    unroll: int = 0,
    backward: str = "fused",
    time_major: bool = False,
    matmul_dtype: str = "float32",
    scan: str = "auto",
    forward: bool = False,
    optimizer: str = "adam",
    batch_split: bool = False,
):
    """Our layer's timed step. `batch_split`: the batch split over every device (data
    parallel, the parameters replicated), e.g. one half per core on a CPU."""
    from flax import nnx

    from grubench.layers import Recurrent

    layer = Recurrent(
        cell,
        d,
        h,
        rngs=nnx.Rngs(0),
        unroll=unroll,
        backward=backward,
        time_major=time_major,
        matmul_dtype=matmul_dtype,
        scan=scan if CELLS.get(cell).linear_in_h else "auto",
    )
    graphdef, params = nnx.split(layer)
    x = jax.random.normal(jax.random.key(1), (t, b, d) if time_major else (b, t, d))
    y = jax.random.normal(jax.random.key(2), (t, b, h) if time_major else (b, t, h))
    if batch_split:
        from jax.sharding import Mesh, NamedSharding
        from jax.sharding import PartitionSpec as P

        mesh = Mesh(np.array(jax.devices()), ("d",))
        rows = NamedSharding(mesh, P(None, "d") if time_major else P("d"))
        x, y = jax.device_put(x, rows), jax.device_put(y, rows)
        params = jax.device_put(params, NamedSharding(mesh, P()))

    def apply(p, x):
        return nnx.merge(graphdef, p)(x)[0]

    if forward:
        return _jax_forward(apply, params, x)
    return _jax_trainer(lambda p, x, y: jnp.mean((apply(p, x) - y) ** 2), params, x, y, optimizer)


def flax_linen(
    cell: str, b: int, t: int, d: int, h: int, forward: bool = False, optimizer: str = "adam"
):
    import flax.linen as nn

    cls = nn.GRUCell if cell == "gru" else nn.OptimizedLSTMCell
    model = nn.RNN(cls(features=h))
    x = jax.random.normal(jax.random.key(1), (b, t, d))
    y = jax.random.normal(jax.random.key(2), (b, t, h))
    params = model.init(jax.random.key(0), x)
    if forward:
        return _jax_forward(model.apply, params, x)
    return _jax_trainer(
        lambda p, x, y: jnp.mean((model.apply(p, x) - y) ** 2), params, x, y, optimizer
    )


def torch_peer(
    cell: str, b: int, t: int, d: int, h: int, forward: bool = False, optimizer: str = "adam"
):
    import torch

    dev = "cuda" if torch.cuda.is_available() else "cpu"
    rnn = (torch.nn.GRU if cell == "gru" else torch.nn.LSTM)(d, h, batch_first=True).to(dev)
    opt = (torch.optim.Adam if optimizer == "adam" else torch.optim.SGD)(rnn.parameters(), lr=1e-3)
    x = torch.randn(b, t, d, device=dev)
    y = torch.randn(b, t, h, device=dev)

    def run():
        if forward:
            with torch.no_grad():
                return rnn(x)[0]
        opt.zero_grad(set_to_none=True)
        out, _ = rnn(x)
        torch.mean((out - y) ** 2).backward()
        if optimizer != "none":
            opt.step()
        return out

    def sync(_):
        if dev == "cuda":
            torch.cuda.synchronize()

    return run, sync


# The implementations timed against each other, in table order.
IMPLS = ("grubench", "flax", "torch")


def time_impl(
    impl: str,
    cell: str,
    shape: tuple[int, int, int, int],
    warmup: int,
    iters: int,
    forward: bool = False,
    optimizer: str = "adam",
    **ours_kw,
) -> dict[str, Any]:
    """One implementation's result row on one shape (`_timed_row`)."""
    b, t, d, h = shape
    sync: Callable = jax.block_until_ready
    if impl == "grubench":
        run = ours(cell, b, t, d, h, forward=forward, optimizer=optimizer, **ours_kw)
    elif impl == "flax":
        run = flax_linen(cell, b, t, d, h, forward, optimizer)
    else:
        run, sync = torch_peer(cell, b, t, d, h, forward, optimizer)
    return _timed_row(cell, impl, shape, run, sync, warmup, iters, forward)


def run_bench(
    shapes: list[tuple[int, int, int, int]],
    cells: list[str],
    warmup: int,
    iters: int,
    with_torch: bool,
    forward: bool = False,
    optimizer: str = "adam",
    **ours_kw,
) -> dict[str, Any]:
    """Ours against the peers on every shape, all in this process: training steps, or
    (`forward`) forward passes."""
    impls = IMPLS if with_torch else IMPLS[:2]
    rows = [
        time_impl(impl, cell, shape, warmup, iters, forward, optimizer, **ours_kw)
        for cell in cells
        for shape in shapes
        for impl in impls
    ]
    options = {**ours_kw, "forward": forward, "optimizer": optimizer}
    return _result(rows, mode="shared", options=options)


# Our layer's implementation options, each timed against the default (fused backward, unroll
# 1 on a CPU and 8 on an accelerator).
VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    "unroll1": {"unroll": 1},
    "autodiff": {"backward": "autodiff"},
    "unroll2": {"unroll": 2},
    "unroll4": {"unroll": 4},
    "unroll8": {"unroll": 8},
    "time_major": {"time_major": True},
    "bf16": {"matmul_dtype": "bfloat16"},
    # The Pallas kernels (grubench.persistent): timed on a GPU only, since elsewhere Pallas
    # interprets them, and for the cells that have them.
    "persistent": {"backward": "persistent"},
    # The batch split over the devices (one per core on a CPU: grubench.runtime); where there
    # are several.
    "batch_split": {"batch_split": True},
}


def _variant_applies(name: str, cell: str) -> bool:
    if name == "batch_split":
        return jax.device_count() > 1
    if name != "persistent":
        return True
    from grubench.persistent import interpret_here

    return CELLS.get(cell).persistent and not interpret_here()


def run_variants(
    shapes: list[tuple[int, int, int, int]], cells: list[str], warmup: int, iters: int
) -> dict[str, Any]:
    """Our layer under each of VARIANTS, same shapes: which options earn their keep."""
    rows = []
    for cell in cells:
        for b, t, d, h in shapes:
            rows += [
                _timed_row(
                    cell,
                    name,
                    (b, t, d, h),
                    ours(cell, b, t, d, h, **kw),
                    jax.block_until_ready,
                    warmup,
                    iters,
                )
                for name, kw in VARIANTS.items()
                if _variant_applies(name, cell)
            ]
    return _result(rows)


def format_variants(result: dict[str, Any]) -> str:
    """Markdown: ms per variant and shape, each over the default's time in brackets."""
    by_key: dict[tuple, dict[str, float]] = {}
    for r in result["rows"]:
        by_key.setdefault((r["cell"], tuple(r["shape"])), {})[r["impl"]] = r["step_ms"]
    names = list(dict.fromkeys(r["impl"] for r in result["rows"]))
    lines = ["| cell | B, T, D, H | " + " | ".join(names) + " |", "|" + "---|" * (2 + len(names))]
    for (cell, shape), got in by_key.items():
        base = got["default"]
        cells = [
            "—"  # not timed for this cell (a variant it does not have)
            if n not in got
            else f"{got[n]:.2f}" + ("" if n == "default" else f" ({got[n] / base:.2f})")
            for n in names
        ]
        lines.append(f"| {cell} | {', '.join(map(str, shape))} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(f"device {result['device']}; ms per train step (ratio to default)")
    return "\n".join(lines)


def run_scaling(
    cells: list[str],
    b: int,
    d: int,
    h: int,
    lengths: list[int],
    warmup: int,
    iters: int,
    scan: str = "auto",
) -> dict[str, Any]:
    """Our layers only, over sequence lengths: the case for minGRU / minLSTM, on `scan`."""
    rows = []
    for t in lengths:
        rows += [
            _timed_row(
                cell,
                "grubench",
                (b, t, d, h),
                ours(cell, b, t, d, h, scan=scan),
                jax.block_until_ready,
                warmup,
                iters,
            )
            for cell in cells
        ]
    return _result(rows, options={"scan": scan})


def format_scaling(result: dict[str, Any]) -> str:
    """Markdown: step time per T and cell, and each gated cell over its minimal version."""
    by_t: dict[int, dict[str, float]] = {}
    for r in result["rows"]:
        by_t.setdefault(r["shape"][1], {})[r["cell"]] = r["step_ms"]
    cells = list(dict.fromkeys(r["cell"] for r in result["rows"]))
    pairs = [(a, f"min{a}") for a in ("gru", "lstm") if a in cells and f"min{a}" in cells]
    head = ["T", *[f"{c} ms" for c in cells], *[f"{a} / {m}" for a, m in pairs]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for t, got in by_t.items():
        ratios = [f"{got[a] / got[m]:.1f}x" for a, m in pairs]
        lines.append("| " + " | ".join([str(t), *[f"{got[c]:.2f}" for c in cells], *ratios]) + " |")
    b, _, d, h = result["rows"][0]["shape"]
    lines.append("")
    lines.append(
        f"device {result['device']}; B={b}, D={d}, H={h}; train step = forward, "
        "backward, Adam update"
    )
    return "\n".join(lines)


def format_table(result: dict[str, Any]) -> str:
    """Markdown: one row per (cell, shape), ms per impl, ours / fastest peer, and ours and the
    fastest peer's matmul GFLOP/s as a % of the measured peak (how close either is to it)."""
    peak = result["peak_gflops"]
    by_key: dict[tuple, dict[str, dict]] = {}
    for r in result["rows"]:
        by_key.setdefault((r["cell"], tuple(r["shape"])), {})[r["impl"]] = r
    impls = sorted({r["impl"] for r in result["rows"]}, key=["grubench", "flax", "torch"].index)
    head = [
        "cell",
        "B, T, D, H",
        *[f"{i} ms" for i in impls],
        "ours / best peer",
        "ours % of peak",
        "best peer % of peak",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    ratios: dict[str, list[float]] = {}
    for (cell, shape), got in by_key.items():
        ours_ms = got["grubench"]["step_ms"]
        peers = [got[i] for i in impls if i != "grubench" and i in got]
        best = min(peers, key=lambda r: r["step_ms"]) if peers else None
        ratio = ours_ms / best["step_ms"] if best else float("nan")
        ratios.setdefault(cell, []).append(ratio)
        cells = [
            cell,
            ", ".join(map(str, shape)),
            *[f"{got[i]['step_ms']:.2f}" if i in got else "" for i in impls],
            f"{ratio:.2f}",
            f"{100 * got['grubench']['gflops'] / peak:.0f}%",
            f"{100 * best['gflops'] / peak:.0f}%" if best else "",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    geo = ", ".join(f"{c}: {float(np.exp(np.mean(np.log(v)))):.2f}" for c, v in ratios.items())
    lines.append("")
    options = result.get("options", {})
    if options.get("forward"):
        what = "forward pass"
    else:
        what = {"adam": "train step (Adam)", "sgd": "train step (SGD)"}.get(
            options.get("optimizer", "adam"), "forward + backward (no optimizer update)"
        )
    lines.append(
        f"device {result['device']}; ms per {what}; matmul peak {peak:.1f} GFLOP/s; "
        f"geometric mean of ours / best peer: {geo}"
    )
    if result.get("mode") == "isolated":
        spread = max(result["rows"], key=lambda r: r["spread"])
        lines.append(
            f"isolated: each implementation in a fresh process with its own settings, "
            f"best of {result['rounds']} interleaved rounds; the largest spread between "
            f"rounds, (max - min) / min, is {100 * spread['spread']:.0f}% ({spread['impl']} "
            f"{spread['cell']} at {', '.join(map(str, spread['shape']))})"
        )
    else:
        lines.append(
            "shared: every implementation in this one process, under grubench's process "
            "settings (--isolated times each in its own)"
        )
    return "\n".join(lines)


def _emit(result: dict[str, Any], table: str, json_path: str | None) -> int:
    print(table)
    if json_path:
        from grubench.results import write_json

        write_json(json_path, result)
    return 0


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, no usage block
        print(f"grubench-bench: error: {message}", file=sys.stderr)
        sys.exit(2)


def main(argv: list[str] | None = None) -> int:
    # No abbreviations: the entry point looks for --isolated as written, before parsing.
    p = _Parser(prog="grubench-bench", description=__doc__.splitlines()[0], allow_abbrev=False)
    p.add_argument("--json", help="write the results here as JSON")
    p.add_argument("--cells", default="gru,lstm", help="comma-separated: gru,lstm")
    p.add_argument("--shapes", help="B,T,D,H;B,T,D,H;... (default: the four standard shapes)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch peer")
    p.add_argument(
        "--scaling",
        action="store_true",
        help="instead: GRU, LSTM, minGRU, minLSTM (ours) over T = 128 .. 4096",
    )
    p.add_argument(
        "--variants",
        action="store_true",
        help="instead: our layer's options (backward, unroll, layout) against each other",
    )
    p.add_argument(
        "--backward",
        choices=("fused", "autodiff"),
        default="fused",
        help="our layer's backward pass (default fused)",
    )
    p.add_argument(
        "--unroll",
        type=int,
        default=0,
        help="our layer's scan unroll (default 0: 1 on CPU, 8 on an accelerator)",
    )
    p.add_argument(
        "--matmul-dtype",
        choices=("float32", "bfloat16"),
        default="float32",
        help="our layer's matmul operand type (default float32)",
    )
    p.add_argument(
        "--forward",
        action="store_true",
        help="time the forward pass alone (evaluation, inference), not a train step",
    )
    p.add_argument(
        "--optimizer",
        choices=OPTIMIZERS,
        default="adam",
        help="what each timed train step ends with: an Adam update (default), an SGD "
        "update, or none (forward, backward and the loss alone)",
    )
    p.add_argument(
        "--isolated",
        action="store_true",
        help="each implementation in a fresh process of its own, with its own defaults "
        "(ours with grubench's process settings, as grubench-train runs; Flax and torch "
        "without), in --rounds interleaved rounds; the best round per shape is reported "
        "with the spread",
    )
    p.add_argument(
        "--rounds", type=int, help="with --isolated: rounds per implementation (default 3)"
    )
    p.add_argument(
        "--population",
        action="store_true",
        help="instead: K members in one program against one member (grubench-train's step "
        "on the copy task; see grubench/bench_population.py)",
    )
    p.add_argument(
        "--members",
        default=",".join(map(str, MEMBERS)),
        help="with --population: the population sizes K (default 1,4,16,64); K = 1, the "
        "baseline of the ratios, is always timed",
    )
    p.add_argument("--hidden", type=int, default=64, help="with --population (default 64)")
    p.add_argument("--seq-len", type=int, default=20, help="with --population (default 20)")
    p.add_argument("--batch", type=int, default=32, help="with --population (default 32)")
    p.add_argument(
        "--scan",
        choices=("auto", "parallel", "sequential"),
        default="auto",
        help="with --scaling: minGRU / minLSTM's scan (default auto: sequential on "
        "CPU, parallel on an accelerator)",
    )
    try:
        a = p.parse_args(argv)
    except SystemExit as e:  # --help (0), or a bad argument said in one line (2)
        return int(e.code or 0)
    if not a.isolated:  # isolated: each worker process applies its own settings, or none
        runtime.configure()
    try:
        cells = a.cells.split(",")
        # --scaling and --population time any registered cell; the peers exist for the GRU and
        # the LSTM only.
        allowed = CELLS.names() if a.scaling or a.population else ["gru", "lstm"]
        bad = [c for c in cells if c not in allowed]
        if bad:
            raise ValueError(f"--cells: {bad[0]!r} is not one of {', '.join(allowed)}")
        shapes: list[Any] = SHAPES
        if a.shapes:
            shapes = [tuple(int(v) for v in s.split(",")) for s in a.shapes.split(";")]
            if any(len(s) != 4 or min(s) < 1 for s in shapes):
                raise ValueError("--shapes: each shape is four positive integers B,T,D,H")
        if a.iters < 1 or a.warmup < 0 or a.unroll < 0:
            raise ValueError("--iters must be >= 1, --warmup and --unroll >= 0")
        if a.matmul_dtype != "float32" and a.backward != "fused":
            raise ValueError(f"--matmul-dtype {a.matmul_dtype} needs --backward fused")
        if a.scaling and a.variants:
            raise ValueError("--scaling and --variants are separate runs: choose one")
        if a.variants and (a.backward, a.unroll, a.matmul_dtype) != ("fused", 0, "float32"):
            raise ValueError(
                "--variants times its own list of options: drop --backward, "
                "--unroll and --matmul-dtype"
            )
        if a.forward and (a.scaling or a.variants or a.backward != "fused"):
            raise ValueError(
                "--forward times a forward pass against the peers: it does not "
                "combine with --scaling, --variants or --backward"
            )
        if a.isolated and (a.scaling or a.variants or a.population):
            raise ValueError(
                "--isolated times ours against the peers: it does not combine with "
                "--scaling, --variants or --population"
            )
        if a.rounds is not None and (a.rounds < 1 or not a.isolated):
            raise ValueError("--rounds applies to --isolated and must be >= 1")
        if a.optimizer != "adam" and (a.forward or a.scaling or a.variants or a.population):
            raise ValueError(
                "--optimizer applies to the train step against the peers: it does not "
                "combine with --forward, --scaling, --variants or --population"
            )
        if a.scan != "auto" and not a.scaling:
            raise ValueError("--scan applies to --scaling, where minGRU / minLSTM run")
        if a.population and (a.scaling or a.variants or a.forward or a.shapes):
            raise ValueError(
                "--population times grubench-train's step: it does not combine with "
                "--scaling, --variants, --forward or --shapes"
            )
        try:
            ks = [int(k) for k in a.members.split(",")]
        except ValueError:
            raise ValueError(f"--members {a.members}: comma-separated integers") from None
        if max(ks) > 4096:
            raise ValueError(f"--members {a.members}: at most 4096 members per population")
        if min(ks) < 1 or min(a.hidden, a.seq_len, a.batch) < 1:
            raise ValueError("--members, --hidden, --seq-len and --batch must be integers >= 1")
    except ValueError as e:
        print(f"grubench-bench: error: {e}", file=sys.stderr)
        return 2
    if a.population:
        try:
            result = run_population(cells, ks, a.hidden, a.seq_len, a.batch, a.warmup, a.iters)
        except GrubenchError as e:  # e.g. a population too large for memory
            print(f"grubench-bench: error: {e}", file=sys.stderr)
            return 2
        return _emit(result, format_population(result), a.json)
    if a.scaling:
        shape = shapes[0] if a.shapes else (16, 0, 64, 128)
        lengths = [s[1] for s in shapes] if a.shapes else SCALING_T
        cells = cells if a.cells != "gru,lstm" else ["gru", "lstm", "mingru", "minlstm"]
        result = run_scaling(
            cells, shape[0], shape[2], shape[3], lengths, a.warmup, a.iters, a.scan
        )
        return _emit(result, format_scaling(result), a.json)
    if a.variants:
        result = run_variants(shapes, cells, a.warmup, a.iters)
        return _emit(result, format_variants(result), a.json)
    with_torch = not a.no_torch
    if with_torch:
        try:
            import torch  # noqa: F401
        except ImportError:
            print(
                "grubench-bench: torch not installed; timing grubench and flax only",
                file=sys.stderr,
            )
            with_torch = False
    ours_kw = {"backward": a.backward, "unroll": a.unroll, "matmul_dtype": a.matmul_dtype}
    if a.isolated:
        from grubench.bench_isolated import run_isolated

        try:
            result = run_isolated(
                shapes,
                cells,
                a.warmup,
                a.iters,
                with_torch,
                a.forward,
                a.optimizer,
                a.rounds or 3,
                ours_kw,
            )
        except GrubenchError as e:
            print(f"grubench-bench: error: {e}", file=sys.stderr)
            return 1
    else:
        result = run_bench(
            shapes, cells, a.warmup, a.iters, with_torch, a.forward, a.optimizer, **ours_kw
        )
    return _emit(result, format_table(result), a.json)


if __name__ == "__main__":
    raise SystemExit(main())
