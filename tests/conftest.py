"""Shared test settings: CPU, no W&B, quiet logs."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ["WANDB_MODE"] = "disabled"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
