"""The floor under a hand-written LSTM recurrence on a CPU, per time step, on the benchmark's
four shapes: the recurrent product [B, H] x [H, 4H] alone, from the BLAS numpy ships (what a
custom call linking a BLAS that installs from a wheel would get) and from XLA (a scan of the
product and nothing else, under grubench's XLA flags), against torch's whole oneDNN LSTM
forward step (no_grad, torch's own defaults).

    python scripts/lstm_step_floor.py

Needs torch (the `torch` extra). Each figure is the best of 7 timings divided by T; the numpy
loop includes Python's call overhead (about a microsecond per step). docs/performance.md
quotes its output.
"""

from grubench import runtime

runtime.configure_xla()  # before JAX starts: XLA as grubench-train runs it

import time  # noqa: E402
from collections.abc import Callable  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from grubench.bench import SHAPES  # noqa: E402


def best(fn: Callable[[], object], reps: int = 7) -> float:
    """The fastest of `reps` timed calls of fn, in seconds, after one untimed call."""
    fn()
    out = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return min(out)


def floor(b: int, t: int, d: int, h: int) -> dict[str, float]:
    """Microseconds per time step of each of the three, at batch b, length t, input d, hidden h."""
    rng = np.random.default_rng(0)
    h0 = rng.standard_normal((b, h), dtype=np.float32)
    w = rng.standard_normal((h, 4 * h), dtype=np.float32) / np.sqrt(h)

    def numpy_loop() -> None:
        x = h0
        for _ in range(t):
            x = (x @ w)[:, :h]

    xla = jax.jit(lambda x, w: jax.lax.scan(lambda c, _: ((c @ w)[:, :h], None), x, None, t)[0])
    hj, wj = jax.numpy.asarray(h0), jax.numpy.asarray(w)
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
    print(
        "B={} T={} D={} H={}: ".format(*shape) + "; ".join(f"{k} {v:.1f} us" for k, v in us.items())
    )
print(
    f"numpy {np.__version__}, jax {jax.__version__}, torch {torch.__version__}, "
    f"torch threads {torch.get_num_threads()}"
)
