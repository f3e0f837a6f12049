"""minGRU (Feng et al. 2024): wi [D, 2H] (z, h~), no recurrent kernel.

h' = (1 - z) ⊙ h + z ⊙ h~,  z = σ(xp_z),  h~ = g(xp_h)  (g in grubench.cells.linear).
"""

from __future__ import annotations

from typing import ClassVar

import jax
import jax.numpy as jnp

from grubench.cells.linear import LinearCell, g_activation, log_g
from grubench.config import ModelConfig
from grubench.registry import CellEntry, register_cell


def mingru_gates(xp: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(log a, log b) of minGRU: z = σ(xp_z), h~ = g(xp_h); h' = (1 - z) ⊙ h + z ⊙ h~."""
    xz, xh = jnp.split(xp, 2, axis=-1)
    return -jax.nn.softplus(xz), -jax.nn.softplus(-xz) + log_g(xh)


def mingru_coefficients(xp: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(a, b) of minGRU's h' = a ⊙ h + b: a = 1 - z, b = z ⊙ h~, z = σ(xp_z), h~ = g(xp_h)."""
    xz, xh = jnp.split(xp, 2, axis=-1)
    return jax.nn.sigmoid(-xz), jax.nn.sigmoid(xz) * g_activation(xh)


class MinGRUCell(LinearCell):
    """minGRU, equations in `mingru_gates`."""

    gates: ClassVar[int] = 2

    def log_gates(self, xp: jax.Array) -> tuple[jax.Array, jax.Array]:
        return mingru_gates(xp)

    def coefficients(self, xp: jax.Array) -> tuple[jax.Array, jax.Array]:
        return mingru_coefficients(xp)


register_cell(
    CellEntry(
        "mingru",
        MinGRUCell,
        "minGRU (Feng et al. 2024): gates read only x, a parallel or sequential scan",
        ModelConfig,
    )
)
