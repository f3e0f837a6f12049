"""Shared test settings: CPU, no W&B, quiet logs."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ["WANDB_MODE"] = "disabled"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# The suite is compile-bound; one malloc arena (grubench.runtime's default) trades compile time
# for step time, so the tests, and the CLI runs they start, keep glibc's arenas.
os.environ.setdefault("GRUBENCH_MALLOC", "keep")
