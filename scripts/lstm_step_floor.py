"""The floor under a hand-written LSTM recurrence on a CPU, per time step, on the benchmark's
four shapes: the recurrent product [B, H] x [H, 4H] alone, from the BLAS numpy ships (what a
custom call linking that BLAS would get) and from XLA (a scan of the product and nothing
else, under grubench's XLA flags), against torch's whole oneDNN LSTM forward step (no_grad,
torch's own defaults).

    python scripts/lstm_step_floor.py
    OPENBLAS_NUM_THREADS=1 python scripts/lstm_step_floor.py   # numpy's BLAS on one thread

Needs torch (the `torch` extra). Each figure is the best of 7 timings divided by T; the numpy
figure includes Python's call overhead. docs/performance.md quotes its output.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable


def best(fn: Callable[[], object], reps: int = 7) -> float:
    """The fastest of `reps` timed calls of fn, in seconds, after one untimed call."""
    fn()
    out = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return min(out)


def main() -> None:
    from grubench import runtime

    runtime.configure_xla()  # before JAX starts: XLA's flags as grubench-train sets them

    import jax
    import numpy as np

    try:
        import torch
    except ImportError:
        raise SystemExit(
            "lstm_step_floor: needs PyTorch, the peer it times: pip install torch==2.13.0"
        ) from None

    from grubench.bench import SHAPES

    def floor(b: int, t: int, d: int, h: int) -> dict[str, float]:
        """Microseconds per time step of each of the three at batch b, length t, input d,
        hidden h."""
        rng = np.random.default_rng(0)
        h0 = rng.standard_normal((b, h), dtype=np.float32)
        w = rng.standard_normal((h, 4 * h), dtype=np.float32) / np.sqrt(h)

        def numpy_loop() -> None:
            x = h0
            for _ in range(t):
                x = (x @ w)[:, :h]

        def scan(x: jax.Array, w: jax.Array) -> jax.Array:
            return jax.lax.scan(lambda c, _: ((c @ w)[:, :h], None), x, None, t)[0]

        xla, hj, wj = jax.jit(scan), jax.numpy.asarray(h0), jax.numpy.asarray(w)
        lstm, xs = torch.nn.LSTM(d, h), torch.randn(t, b, d)

        def torch_lstm() -> None:
            with torch.no_grad():
                lstm(xs)

        return {
            "numpy BLAS product": 1e6 * best(numpy_loop) / t,
            "XLA scan of the product": 1e6 * best(lambda: xla(hj, wj).block_until_ready()) / t,
            "torch LSTM forward, whole step": 1e6 * best(torch_lstm) / t,
        }

    for shape in SHAPES:
        us = floor(*shape)
        print("B={} T={} D={} H={}: ".format(*shape), end="")
        print("; ".join(f"{k} {v:.1f} µs" for k, v in us.items()))
    blas = np.__config__.CONFIG["Build Dependencies"]["blas"]
    print(
        f"numpy {np.__version__} ({blas['name']} {blas.get('version', '')}, "
        f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}), "
        f"jax {jax.__version__} (XLA_FLAGS={os.environ['XLA_FLAGS']}), "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads)"
    )


if __name__ == "__main__":
    main()
