"""Shared test settings: CPU, no W&B, quiet logs."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ["WANDB_MODE"] = "disabled"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# The suite is compile-bound; one malloc arena (grubench.runtime's default) trades compile time
# for step time, so the tests, and the CLI runs they start, keep glibc's arenas.
os.environ.setdefault("GRUBENCH_MALLOC", "keep")

# In-process runs get the process settings the entry points apply (single-threaded Eigen on the
# CPU, which avoids an XLA CPU hang; docs/performance.md), so they match the CLI's runs.
from grubench import runtime  # noqa: E402

runtime.configure()
