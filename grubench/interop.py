"""Weights to and from PyTorch's nn.GRU, nn.LSTM and nn.RNN (tanh).

PyTorch keeps per layer `weight_ih_l{k}` [G*H, D], `weight_hh_l{k}` [G*H, H], `bias_ih_l{k}`,
`bias_hh_l{k}` [G*H], gates in the order our cells use (GRU r, z, n; LSTM i, f, g, o), and its
GRU is the reset-after form. So a layer maps as wi = weight_ih.T, wh = weight_hh.T,
bi = bias_ih, bh = bias_hh. torch is imported only when these functions are called.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import nnx

from grubench.cells import GRUCell, LSTMCell, RNNCell
from grubench.layers import Recurrent, RecurrentStack

_KINDS = {"GRU": "gru", "LSTM": "lstm", "RNN": "rnn"}


def _torch():
    try:
        import torch
    except ImportError:
        raise ImportError("grubench.interop needs PyTorch: pip install -e '.[torch]'") from None
    return torch


def _kind_of(rnn: Any) -> str:
    kind = _KINDS.get(type(rnn).__name__)
    if kind is None:
        raise TypeError(f"expected torch.nn.GRU, nn.LSTM or nn.RNN, got {type(rnn).__name__}")
    if rnn.bidirectional:
        raise ValueError("bidirectional torch RNNs are not supported")
    if kind == "lstm" and rnn.proj_size:
        raise ValueError("nn.LSTM with proj_size > 0 is not supported")
    if kind == "rnn" and rnn.nonlinearity != "tanh":
        raise ValueError("only nn.RNN(nonlinearity='tanh') is supported")
    return kind


def _weight(rnn: Any, name: str, layer: int) -> jnp.ndarray:
    return jnp.asarray(getattr(rnn, f"{name}_l{layer}").detach().cpu().float().numpy())


def from_torch(rnn: Any, *, unroll: int = 0) -> RecurrentStack:
    """A RecurrentStack holding `rnn`'s weights, taking the same input layout (batch_first or
    time-major) and returning (ys, carries) with ys equal to torch's `out`. Inter-layer
    dropout, which torch applies only in training mode, is not carried over."""
    kind = _kind_of(rnn)
    layers = []
    for k in range(rnn.num_layers):
        d_in = rnn.input_size if k == 0 else rnn.hidden_size
        layer = Recurrent(
            kind,
            d_in,
            rnn.hidden_size,
            rngs=nnx.Rngs(0),
            unroll=unroll,
            time_major=not rnn.batch_first,
        )
        c: Any = layer.cell
        c.wi.set_value(_weight(rnn, "weight_ih", k).T)
        c.wh.set_value(_weight(rnn, "weight_hh", k).T)
        zeros = jnp.zeros(c.bi.shape, jnp.float32)
        c.bi.set_value(_weight(rnn, "bias_ih", k) if rnn.bias else zeros)
        c.bh.set_value(_weight(rnn, "bias_hh", k) if rnn.bias else zeros)
        layers.append(layer)
    return RecurrentStack(layers)


def _peer_kind(cell: Any) -> str:
    """ "gru", "lstm" or "rnn": the torch layer with this cell's equations; ValueError for a cell
    torch has none of (a reset-before GRU, minGRU, minLSTM, a plugin's)."""
    if isinstance(cell, GRUCell):
        if not cell.reset_after:
            raise ValueError(
                "torch's nn.GRU is reset-after; a reset-before GRU (gru_v1) has no torch peer"
            )
        return "gru"
    for cls, kind in ((LSTMCell, "lstm"), (RNNCell, "rnn")):
        if isinstance(cell, cls):
            return kind
    raise ValueError(f"{type(cell).__name__} has no torch peer: expected a GRU, LSTM or tanh-RNN")


def to_torch(stack: RecurrentStack) -> Any:
    """The torch nn.GRU / nn.LSTM / nn.RNN with `stack`'s weights (float32, CPU)."""
    torch = _torch()
    layers = list(stack.layers)
    kinds = {_peer_kind(layer.cell) for layer in layers}
    if len(kinds) != 1:
        raise ValueError(f"a torch RNN has one cell kind per stack, got {sorted(kinds)}")
    kind = kinds.pop()
    first = layers[0].cell
    if any(layer.reverse for layer in layers):
        raise ValueError("reversed layers have no torch peer")
    cls = {"gru": torch.nn.GRU, "lstm": torch.nn.LSTM, "rnn": torch.nn.RNN}[kind]
    rnn = cls(
        first.in_features,
        first.hidden,
        num_layers=len(layers),
        batch_first=not layers[0].time_major,
    )
    with torch.no_grad():
        for k, layer in enumerate(layers):
            c: Any = layer.cell
            for name, value in (
                ("weight_ih", c.wi[...].T),
                ("weight_hh", c.wh[...].T),
                ("bias_ih", c.bi[...]),
                ("bias_hh", c.bh[...]),
            ):
                getattr(rnn, f"{name}_l{k}").copy_(torch.from_numpy(np.array(value)))
    return rnn
