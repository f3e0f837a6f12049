"""grubench: when should I use a GRU, and when an LSTM?"""

import os as _os

# XLA's CPU backend can deadlock in its multi-threaded Eigen pool while materialising the
# result of a vmapped program (a hang in block_until_ready with the CPU idle; seen here on a
# 2-core machine, and reported upstream with this flag as the fix). Single-threaded Eigen
# avoids it; set XLA_FLAGS=--xla_cpu_multi_thread_eigen=true to opt back in.
_flags = _os.environ.get("XLA_FLAGS", "")
if "xla_cpu_multi_thread_eigen" not in _flags:
    _os.environ["XLA_FLAGS"] = f"{_flags} --xla_cpu_multi_thread_eigen=false".strip()

__version__ = "0.1.0"
