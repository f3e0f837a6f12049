"""minLSTM (Feng et al. 2024): wi [D, 3H] (f, i, h~), no recurrent kernel.

h' = f' ⊙ h + i' ⊙ h~ with f = σ(xp_f), i = σ(xp_i) normalised, f' = f / (f + i),
i' = i / (f + i), and h~ = g(xp_h)  (g in grubench.cells.linear).
"""

from __future__ import annotations

from typing import ClassVar

import jax
import jax.numpy as jnp

from grubench.cells.linear import LinearCell, g_activation, log_g
from grubench.config import ModelConfig
from grubench.registry import CellEntry, register_cell


def _log_ratio(xp: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(log i - log f, xp_h) of minLSTM's pre-activations xp = [xp_f, xp_i, xp_h]."""
    xf, xi, xh = jnp.split(xp, 3, axis=-1)
    return jax.nn.softplus(-xf) - jax.nn.softplus(-xi), xh


def minlstm_gates(xp: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(log a, log b) of minLSTM: a = f', b = i' ⊙ h~ (see the module doc)."""
    diff, xh = _log_ratio(xp)
    return -jax.nn.softplus(diff), -jax.nn.softplus(-diff) + log_g(xh)


def minlstm_coefficients(xp: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(a, b) of minLSTM's h' = a ⊙ h + b: a = f / (f + i), b = i / (f + i) ⊙ h~."""
    # f / (f + i) = σ(log f - log i), written so that it stays finite where both σ underflow.
    diff, xh = _log_ratio(xp)
    return jax.nn.sigmoid(-diff), jax.nn.sigmoid(diff) * g_activation(xh)


class MinLSTMCell(LinearCell):
    """minLSTM, equations in `minlstm_gates`."""

    gates: ClassVar[int] = 3

    def log_gates(self, xp: jax.Array) -> tuple[jax.Array, jax.Array]:
        return minlstm_gates(xp)

    def coefficients(self, xp: jax.Array) -> tuple[jax.Array, jax.Array]:
        return minlstm_coefficients(xp)


register_cell(
    CellEntry(
        "minlstm",
        MinLSTMCell,
        "minLSTM (Feng et al. 2024): normalised input-only gates, a parallel or sequential scan",
        ModelConfig,
    )
)
