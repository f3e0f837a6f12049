"""Shared test settings: CPU, no W&B, quiet logs, a cache of their own."""

import os
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ["WANDB_MODE"] = "disabled"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# The suite is compile-bound; one malloc arena (grubench.runtime's default) trades compile time
# for step time, so the tests, and the CLI runs they start, keep glibc's arenas.
os.environ.setdefault("GRUBENCH_MALLOC", "keep")
# Data caches (the parsed chorales) go to a directory of the test session, removed at its end,
# never to the user's ~/.cache; the CLI runs the tests start inherit it.
_CACHE = tempfile.TemporaryDirectory(prefix="grubench-test-cache-")
os.environ["XDG_CACHE_HOME"] = _CACHE.name
# The suite compiles the same tiny programs many times, in-process and in the CLI runs it
# starts: JAX's persistent compilation cache, in the session's directory, compiles each once.
os.environ["JAX_COMPILATION_CACHE_DIR"] = os.path.join(_CACHE.name, "jax")
os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"

# In-process runs get the process settings the entry points apply (single-threaded Eigen on the
# CPU, which avoids an XLA CPU hang; docs/performance.md), so they match the CLI's runs.
from grubench import runtime  # noqa: E402

runtime.configure()
