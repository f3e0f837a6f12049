"""Gated recurrent unit (Cho et al. 2014), in both forms, with its fused layer backward.

Parameters (PyTorch's layout): wi [D, 3H], wh [H, 3H], bi [3H], bh [3H], gates (r, z, n).
`model=gru` applies the reset gate after the recurrent matmul, as cuDNN and PyTorch do (one
fused [H, 3H] matmul per step); `model=gru_v1` is the original form of Cho et al. 2014.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import jax
import jax.numpy as jnp

from grubench.cells.base import RecurrentKernelCell, Step
from grubench.config import ModelConfig
from grubench.ops import matmul, outer_sum, prev, sig_grad, tanh_grad
from grubench.registry import CellEntry, register_cell


def gru_forward(
    wh: jax.Array, bh: jax.Array, h: jax.Array, xp: Any, reset_after: bool, dtype: str | None = None
) -> tuple[jax.Array, tuple]:
    """One GRU step on projected input xp = x Wi + bi (gates r, z, n; [B, 3H], or a tuple of
    its three [B, H] blocks): h' and the activations its derivative needs, (r, z, n,
    h Wh_n + bh_n) reset after, (r, z, n) reset before. `wh` [H, 3H] and `bh` [3H] may also
    be tuples of the three gates' blocks ([H, H], [H]): one matmul per gate.

    r = σ(xp_r + h Wh_r + bh_r),  z = σ(xp_z + h Wh_z + bh_z)
    reset_after:      n = tanh(xp_n + r ⊙ (h Wh_n + bh_n))        (cuDNN, PyTorch)
    not reset_after:  n = tanh(xp_n + (r ⊙ h) Wh_n + bh_n)        (Cho et al. 2014)
    h' = (1 - z) ⊙ n + z ⊙ h
    """
    hdim = h.shape[-1]
    xr, xz, xn = xp if isinstance(xp, tuple) else jnp.split(xp, 3, axis=-1)
    if isinstance(wh, tuple) and not reset_after:
        wh, bh = jnp.concatenate(wh, axis=-1), jnp.concatenate(bh)
    if reset_after:
        if isinstance(wh, tuple):
            hr, hz, hn = (matmul(h, w, dtype) + b for w, b in zip(wh, bh, strict=True))
        else:
            hr, hz, hn = jnp.split(matmul(h, wh, dtype) + bh, 3, axis=-1)
        r = jax.nn.sigmoid(xr + hr)
        z = jax.nn.sigmoid(xz + hz)
        n = jnp.tanh(xn + r * hn)
        acts: tuple = (r, z, n, hn)
    else:
        hr, hz = jnp.split(matmul(h, wh[:, : 2 * hdim], dtype) + bh[: 2 * hdim], 2, axis=-1)
        r = jax.nn.sigmoid(xr + hr)
        z = jax.nn.sigmoid(xz + hz)
        n = jnp.tanh(xn + matmul(r * h, wh[:, 2 * hdim :], dtype) + bh[2 * hdim :])
        acts = (r, z, n)
    return (1.0 - z) * n + z * h, acts


def gru_step(
    wh: jax.Array, bh: jax.Array, h: jax.Array, xp: jax.Array, reset_after: bool
) -> tuple[jax.Array, jax.Array]:
    """(h', h'): one GRU step as a `jax.lax.scan` body; equations in `gru_forward`."""
    h, _ = gru_forward(wh, bh, h, xp, reset_after)
    return h, h


@dataclass(frozen=True)
class GRUKernel:
    """The GRU's fused layer step and backward (grubench.fused). Backward, per step: the
    reset-after form does one [B, 3H] x [3H, H] matmul; the reset-before form two, since its
    candidate reads r ⊙ h. dbi = Σ dxp; dbh = dbi, except reset after, where the candidate's
    recurrent bias sits inside r ⊙ (h Wh_n + bh_n), so dbh's n-block is Σ r ⊙ dn."""

    reset_after: bool

    @property
    def persistent(self) -> bool:
        """Whether `step_backward` applies (grubench.persistent): the reset-after form."""
        return self.reset_after

    def forward(self, wh, bh, h, xp, dtype=None):
        return gru_forward(wh, bh, h, xp, self.reset_after, dtype)

    def output(self, h):
        return h

    def step_backward(self, wh_t, dh, dy, hp, acts, dt=None):
        """One reverse step of the reset-after form: from dL/dh_t (carried `dh` plus the
        output's `dy`), h_{t-1} `hp` and the step's activations, (dL/dh_{t-1}, dL/dxp_t,
        dL/d(h_{t-1} Wh + bh)) — the last two [B, 3H], differing in the candidate's block,
        which the reset gate scales on the recurrent side. With `wh_t` a tuple of the gates'
        [H, H] blocks (Wh_k^T), the last two are tuples of [B, H] blocks too."""
        r, z, n, hn = acts
        dh = dh + dy
        dn = dh * (1.0 - z) * tanh_grad(n)
        dr = dn * hn * sig_grad(r)
        dz = dh * (hp - n) * sig_grad(z)
        if isinstance(wh_t, tuple):
            dhp = (dr, dz, dn * r)
            back = sum(matmul(d, w, dt) for d, w in zip(dhp, wh_t, strict=True))
            return dh * z + back, (dr, dz, dn), dhp
        dhp_all = jnp.concatenate([dr, dz, dn * r], axis=-1)
        return dh * z + matmul(dhp_all, wh_t, dt), jnp.concatenate([dr, dz, dn], -1), dhp_all

    def backward(self, wh, dt, unroll, ys, acts, h0, dys, dh_last):
        h_prev = prev(h0, ys)
        if self.reset_after:
            wh_t = wh.T

            def step(dh, inp):
                dy, hp, step_acts = inp
                dh, dxp, dhp = self.step_backward(wh_t, dh, dy, hp, step_acts, dt)
                return dh, (dxp, dhp)

            dh0, (dxp, dhp) = jax.lax.scan(
                step, dh_last, (dys, h_prev, acts), reverse=True, unroll=unroll
            )
            return outer_sum(h_prev, dhp, dt), dhp.sum((0, 1)), dxp.sum((0, 1)), dxp, dh0

        hdim = ys.shape[-1]
        wh_rz_t, wh_n_t = wh[:, : 2 * hdim].T, wh[:, 2 * hdim :].T

        def step_v1(dh, inp):
            dy, hp, (r, z, n) = inp
            dh = dh + dy
            dn = dh * (1.0 - z) * tanh_grad(n)
            drh = matmul(dn, wh_n_t, dt)
            dr = drh * hp * sig_grad(r)
            dz = dh * (hp - n) * sig_grad(z)
            drz = jnp.concatenate([dr, dz], axis=-1)
            return dh * z + drh * r + matmul(drz, wh_rz_t, dt), jnp.concatenate([drz, dn], -1)

        dh0, dxp = jax.lax.scan(step_v1, dh_last, (dys, h_prev, acts), reverse=True, unroll=unroll)
        r = acts[0]
        dwh = jnp.concatenate(
            [
                outer_sum(h_prev, dxp[..., : 2 * hdim], dt),
                outer_sum(r * h_prev, dxp[..., 2 * hdim :], dt),
            ],
            axis=-1,
        )
        db = dxp.sum((0, 1))
        return dwh, db, db, dxp, dh0


class GRUCell(RecurrentKernelCell):
    """Gated recurrent unit, equations in `gru_forward`; `reset_after` picks the form."""

    gates: ClassVar[int] = 3

    def __init__(self, in_features: int, hidden: int, *, reset_after: bool = True, **kw: Any):
        super().__init__(in_features, hidden, **kw)
        self.reset_after = reset_after

    def recurrence(self) -> Step:
        wh, bh, reset_after = self.wh[...], self.bh[...], self.reset_after
        return lambda h, xp: gru_step(wh, bh, h, xp, reset_after)

    def fused_kernel(self) -> GRUKernel:
        return GRUKernel(self.reset_after)

    @classmethod
    def has_persistent(cls, options: dict[str, Any]) -> bool:
        return bool(options.get("reset_after", True))  # GRUKernel.persistent


register_cell(
    CellEntry(
        "gru",
        GRUCell,
        "GRU, reset gate after the recurrent matmul (cuDNN, PyTorch)",
        ModelConfig,
        defaults={"reset_after": True},
    )
)
register_cell(
    CellEntry(
        "gru_v1",
        GRUCell,
        "GRU of Cho et al. 2014, reset gate before the recurrent matmul",
        ModelConfig,
        defaults={"reset_after": False},
    )
)
