"""Recurrent cells, one module per family, each registering itself in `grubench.registry.CELLS`.

gru (gru, gru_v1), lstm, rnn: gated cells with a recurrent kernel and a fused layer backward.
mingru, minlstm: cells linear in h (grubench.cells.linear). The contract every cell meets is in
grubench.cells.base; a new cell is one module that registers itself (docs/extending.md).
"""

from __future__ import annotations

from typing import Any

from flax import nnx

from grubench.cells.base import Carry, Cell, RecurrentKernelCell, Step, recurrent_kernel
from grubench.cells.gru import GRUCell, GRUKernel, gru_forward, gru_step
from grubench.cells.linear import (
    LinearCell,
    g_activation,
    linear_recurrence,
    linear_recurrence_log,
    log_g,
)
from grubench.cells.lstm import LSTMCell, LSTMConfig, LSTMKernel, lstm_forward, lstm_step
from grubench.cells.mingru import MinGRUCell, mingru_coefficients, mingru_gates
from grubench.cells.minlstm import MinLSTMCell, minlstm_coefficients, minlstm_gates
from grubench.cells.rnn import RNNCell, RNNKernel, rnn_forward, rnn_step
from grubench.ops import matmul
from grubench.registry import CELLS


def make_cell(name: str, in_features: int, hidden: int, *, rngs: nnx.Rngs, **options: Any) -> Cell:
    """Build the registered cell `name` (see `grubench.registry.CELLS`); `options` (e.g.
    recurrent_init, bias_init, forget_bias) override the name's own defaults."""
    entry = CELLS.get(name)
    return entry.cls(in_features, hidden, rngs=rngs, **{**entry.defaults, **options})


__all__ = [
    "CELLS",
    "Carry",
    "Cell",
    "GRUCell",
    "GRUKernel",
    "RecurrentKernelCell",
    "LSTMCell",
    "LSTMConfig",
    "LSTMKernel",
    "LinearCell",
    "MinGRUCell",
    "MinLSTMCell",
    "RNNCell",
    "RNNKernel",
    "Step",
    "g_activation",
    "gru_forward",
    "gru_step",
    "linear_recurrence",
    "linear_recurrence_log",
    "log_g",
    "lstm_forward",
    "lstm_step",
    "make_cell",
    "matmul",
    "mingru_coefficients",
    "mingru_gates",
    "minlstm_coefficients",
    "minlstm_gates",
    "recurrent_kernel",
    "rnn_forward",
    "rnn_step",
]
