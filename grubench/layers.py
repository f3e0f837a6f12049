"""The Recurrent layer: a cell's hoisted projection, then its step under `jax.lax.scan`."""

from __future__ import annotations

import dataclasses
import inspect
import math
import operator
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from grubench import fused, persistent
from grubench.cells import CELLS, Carry, make_cell
from grubench.config import BACKWARDS
from grubench.remat import checkpointed_scan


def default_unroll() -> int:
    """The scan unroll that `unroll=0` means: 1 on a CPU, where unrolling was no faster, and 8
    on an accelerator, where it shortened the train step (`grubench-bench --variants`; the
    figures are in docs/performance.md)."""
    return 1 if jax.default_backend() == "cpu" else 8


def default_min_scan() -> str:
    """The scan that `scan="auto"` means for cells linear in h: "sequential" on a CPU, where the
    log-space parallel scan was slower on two cores, and "parallel" on an accelerator, where it
    is what makes these cells fast (`grubench-bench --scaling`; docs/performance.md)."""
    return "sequential" if jax.default_backend() == "cpu" else "parallel"


def _shape(a: Any) -> tuple[int, ...]:
    """The static shape of an array, a tracer (under jit, vmap, grad) or a nested list."""
    return tuple(jnp.shape(a))


def _shapes(shapes: list[tuple[int, ...]]) -> str:
    """A carry's leaf shapes as the message shows them: (2, 4), or ((2, 4), (2, 4))."""
    return str(shapes[0]) if len(shapes) == 1 else f"({', '.join(map(str, shapes))})"


def _shown(value: Any) -> str:
    """A value as an argument message shows it: 0, 1.5, True, 'gru'."""
    return repr(value) if isinstance(value, str) else str(value)


def _refuse(owner: str, name: str, value: Any, allowed: str) -> ValueError:
    """The one-line error for a bad constructor argument: OWNER: NAME=VALUE is not allowed:
    ALLOWED (the style of the config's own checks)."""
    return ValueError(f"{owner}: {name}={_shown(value)} is not allowed: {allowed}")


def _integer(value: Any) -> int | None:
    """`value` as an int where it is one (a Python, NumPy or concrete JAX integer), else None:
    a bool, a float (even 4.0), a string or a tracer is not."""
    if isinstance(value, (bool, np.bool_)):
        return None
    try:
        return operator.index(value)
    except TypeError:
        return None


def check_count(owner: str, name: str, value: Any, least: int, note: str = "") -> None:
    """A ValueError unless `value` is an integer >= `least` (checked in Python, at construction:
    free under jit)."""
    n = _integer(value)
    if n is None or n < least:
        raise _refuse(owner, name, value, f"an integer >= {least}{note}")


def check_rate(owner: str, name: str, value: Any) -> None:
    """A ValueError unless `value` is a number in [0, 1): a dropout rate (1 would drop every
    unit, and the inverted scaling divides by 1 - rate)."""
    try:
        p = float(value) if not isinstance(value, (bool, np.bool_, str)) else math.nan
    except (TypeError, ValueError):  # None, a list, a tracer
        p = math.nan
    if not 0.0 <= p < 1.0:
        raise _refuse(owner, name, value, "a float in [0, 1)")


def cell_keywords() -> set[str]:
    """The options some registered cell takes (reset_after, forget_bias, recurrent_init,
    bias_init, a plugin's own): the keywords of its class's __init__ chain, the fields its
    config adds to the common model config, and the options its name sets. A layer passes
    them all to its cell, which ignores another cell's (as the model passes its config's)."""
    names: set[str] = set()
    for entry in CELLS:
        for cls in inspect.getmro(entry.cls):
            if "__init__" not in vars(cls):
                continue
            for p in inspect.signature(vars(cls)["__init__"]).parameters.values():
                if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
                    names.add(p.name)
        config = entry.config
        if dataclasses.is_dataclass(config):
            root = [c for c in config.__mro__ if dataclasses.is_dataclass(c)][-1]
            common = {f.name for f in dataclasses.fields(root)}
            names |= {f.name for f in dataclasses.fields(config)} - common
        names |= set(entry.defaults)
    return names - {"self", "in_features", "hidden", "rngs"}


def _layer_keywords() -> list[str]:
    """Recurrent's own keyword arguments (unroll, time_major, ...), as a message lists them."""
    params = inspect.signature(Recurrent.__init__).parameters.values()
    return [p.name for p in params if p.kind == p.KEYWORD_ONLY and p.name != "rngs"]


def as_input(xs: Any, owner: str, name: str = "xs") -> jax.Array:
    """`xs` as a JAX array (an array or tracer as it is; NumPy arrays and nested lists of numbers
    converted), or a ValueError naming `owner` and the argument `name` for what cannot be one."""
    try:
        return jnp.asarray(xs)
    except (TypeError, ValueError) as e:
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ValueError(
            f"{owner} expects {name} as an array (or nested lists of numbers); got a "
            f"{type(xs).__name__} that is not one ({why})"
        ) from None


def check_input(xs: Any, in_features: int, time_major: bool, owner: str) -> tuple[int, int]:
    """(batch, time) of `xs`, or a ValueError naming `owner`, the expected shape and the shape
    given, unless xs is [batch, time, in_features] ([time, batch, in_features] when
    `time_major`). Static shapes only: the same under `jax.jit` and `jax.vmap`."""
    shape = _shape(xs)
    if len(shape) == 3 and shape[-1] == in_features:
        return (shape[1], shape[0]) if time_major else (shape[0], shape[1])
    layout = "[time, batch, {}]" if time_major else "[batch, time, {}]"
    msg = f"{owner} expects xs of shape {layout.format(in_features)}; got {shape}"
    if len(shape) == 2:  # most likely one unbatched sequence [T, D]: say how to batch it
        msg += f" (one sequence needs a batch axis: {'xs[:, None]' if time_major else 'xs[None]'})"
    raise ValueError(msg)


class Recurrent(nnx.Module):
    """Run one cell over a sequence: ys, carry = Recurrent(...)(xs, carry).

    Shapes (D = `in_features`, H = `hidden`): xs [B, T, D] -> ys [B, T, H] ([T, B, D] ->
    [T, B, H] with `time_major=True`); carry [B, H] (an LSTM's: (c, h), each [B, H]); probe
    like ys. There is no unbatched form: one sequence is [1, T, D] (`xs[None]`). Any other
    rank, or a last axis other than D, is a ValueError naming the layer, the shape it expects
    and the shape given (so is a carry or probe of the wrong shape). The checks read static
    shapes, so they hold under `jax.jit` and `jax.vmap` (where a layer sees one member's
    [B, T, D]).

    The input projection of every step is one matmul before the scan; the scan carries only
    the recurrent state. `unroll` is passed to `jax.lax.scan` (0: `default_unroll()`);
    `reverse=True` runs from the last step to the first. Other keywords (reset_after,
    forget_bias, recurrent_init, bias_init) go to the cell.

    `remat=True` trades compute for memory: the sequence is cut into chunks of `remat_chunk`
    steps (0: about sqrt(T)), each chunk's projection and scan is `jax.checkpoint`ed, and the
    backward pass recomputes a chunk's activations from the carry at its start. Training keeps
    T / c carries plus one chunk's activations instead of every step's gates: O(sqrt(T)).

    `backward="fused"` (default) gives a cell with a fused kernel (GRU, LSTM, tanh-RNN) the
    hand-written backward pass of `grubench.fused` (dh-only reverse scan, weight gradients as
    one matmul after it);
    `"persistent"` (GRU, LSTM) runs forward and backward as Pallas kernels that loop over time
    inside one kernel (`grubench.persistent`; interpreted off a GPU);
    `"autodiff"` leaves the backward pass to JAX's transpose of the scan. `matmul_dtype=
    "bfloat16"` (with the fused backward, or for minGRU / minLSTM, whose only matmul is the
    projection) casts every matmul's operands to bfloat16 and accumulates in float32; carries
    and gate arithmetic stay float32 (the grad probe's recurrence too).

    `scan` picks how minGRU / minLSTM run: "parallel" (`jax.lax.associative_scan` in log
    space), "sequential" (a linear-space scan with a hand-written backward) or "auto"
    (`default_min_scan()`); the same function either way.
    """

    def __init__(
        self,
        cell: str,
        in_features: int,
        hidden: int,
        *,
        rngs: nnx.Rngs,
        unroll: int = 0,
        time_major: bool = False,
        reverse: bool = False,
        remat: bool = False,
        remat_chunk: int = 0,
        backward: str = "fused",
        matmul_dtype: str = "float32",
        scan: str = "auto",
        **cell_kw,
    ):
        # Checked here, in Python, before the cell is made (a width of 0 was a ZeroDivisionError
        # in its initializer): the first bad argument is one line naming it.
        if not isinstance(cell, str):
            raise _refuse(
                "Recurrent", "cell", cell, f"a cell name, one of {', '.join(CELLS.names())}"
            )
        CELLS.get(cell)  # an unknown name: RegistryError, one line listing the registered ones
        owner = f"Recurrent({cell})"
        check_count(owner, "in_features", in_features, 1)
        check_count(owner, "hidden", hidden, 1)
        if not isinstance(unroll, bool):  # a bool is jax.lax.scan's own: all steps or none
            check_count(owner, "unroll", unroll, 0, " (0: 1 on a CPU, 8 on an accelerator)")
        check_count(owner, "remat_chunk", remat_chunk, 0, " (0: about sqrt(T) steps)")
        known = cell_keywords() if cell_kw else set()
        unknown = sorted(set(cell_kw) - known)  # a misspelling, once silently ignored
        if unknown:
            raise _refuse(
                owner,
                unknown[0],
                cell_kw[unknown[0]],
                f"no such keyword (the layer's are {', '.join(_layer_keywords())}; the "
                f"cells' are {', '.join(sorted(known))})",
            )
        # Any: the layer reads what the cell offers (wh, bh; parallel, sequential) by its kind.
        self.cell: Any = make_cell(cell, in_features, hidden, rngs=rngs, **cell_kw)
        self.cell_name = cell
        self.in_features = in_features
        self.hidden = hidden
        self.unroll = unroll or default_unroll()
        self.time_major = time_major
        self.reverse = reverse
        self.remat = remat
        self.remat_chunk = remat_chunk
        if backward not in BACKWARDS:
            raise ValueError(f"backward must be one of {', '.join(BACKWARDS)}, not {backward!r}")
        if matmul_dtype not in ("float32", "bfloat16"):
            raise ValueError(f"matmul_dtype must be 'float32' or 'bfloat16', not {matmul_dtype!r}")
        # Cells without a fused kernel (minGRU, minLSTM: no recurrent matmul) keep autodiff.
        kernel = self.cell.fused_kernel() if hasattr(self.cell, "fused_kernel") else None
        if backward == "persistent" and not getattr(kernel, "persistent", False):
            raise ValueError(f"backward='persistent' has no kernel for {cell}")
        if matmul_dtype != "float32" and backward == "autodiff" and kernel is not None:
            raise ValueError(f"matmul_dtype={matmul_dtype} needs backward='fused' for {cell}")
        self.fused_kernel = kernel if backward == "fused" else None
        self.persistent_kernel = kernel if backward == "persistent" else None
        self.matmul_dtype = matmul_dtype
        if scan not in ("auto", "parallel", "sequential"):
            raise ValueError(f"scan must be 'auto', 'parallel' or 'sequential', not {scan!r}")
        linear_in_h = getattr(self.cell, "linear_in_h", False)
        if matmul_dtype != "float32" and kernel is None and not linear_in_h:
            raise ValueError(
                f"matmul_dtype={matmul_dtype} needs a fused backward or a cell "
                f"linear in h; {cell} has neither"
            )
        if scan != "auto" and not linear_in_h:
            raise ValueError(f"scan={scan!r} applies to mingru and minlstm, not {cell}")
        self.min_scan = default_min_scan() if scan == "auto" else scan

    def __call__(
        self,
        xs: jax.Array,
        carry: Carry | None = None,
        probe: jax.Array | None = None,
        *,
        remat: bool | None = None,
    ) -> tuple[jax.Array, Carry]:
        """`probe`, shaped like the outputs, is added to h_t as it is made (and fed to step
        t + 1): the gradient of a loss with respect to a zero probe is dL/dh_t, through every
        later step — the vanishing-gradient curve. `remat` overrides the layer's setting (a
        caller that checkpoints whole chunks itself passes False).

        xs [B, T, D] -> ys [B, T, H] (time-major: [T, B, D] -> [T, B, H]), carry [B, H]; a
        wrong shape of xs, carry or probe is a ValueError (see the class); nested lists of
        numbers are converted with jnp.asarray."""
        xs = as_input(xs, self.label())
        batch, _ = check_input(xs, self.in_features, self.time_major, self.label())
        if carry is not None:
            self._check_carry(carry, batch)
        if probe is not None:
            probe = as_input(probe, self.label(), "probe")
            want = (*_shape(xs)[:-1], self.hidden)
            if _shape(probe) != want:
                raise ValueError(
                    f"{self.label()} expects probe of shape {want} (like its outputs); "
                    f"got {_shape(probe)}"
                )
        # Time-major, so the scan slices contiguous [B, G*H] rows; XLA folds the transpose
        # into the projection matmul.
        xs_t = xs if self.time_major else jnp.swapaxes(xs, 0, 1)
        if carry is None:
            carry = self.cell.initial_carry(xs_t.shape[1:2])
        if probe is not None:
            return self._probed(self.cell.project(xs_t, self.matmul_dtype), carry, probe)
        if self.remat if remat is None else remat:
            ys, carry = self._chunked(xs_t, carry)
        else:
            ys, carry = self._run(xs_t, carry, self.reverse)
        return (ys if self.time_major else jnp.swapaxes(ys, 0, 1)), carry

    def label(self) -> str:
        """How errors name this layer: Recurrent(gru, in_features=3, hidden=4)."""
        return f"Recurrent({self.cell_name}, in_features={self.in_features}, hidden={self.hidden})"

    def _check_carry(self, carry: Carry, batch: int) -> None:
        """A ValueError unless `carry` has the shapes of the cell's zero state for `batch`."""
        zero = jax.eval_shape(lambda: self.cell.initial_carry((batch,)))
        want = [tuple(a.shape) for a in jax.tree.leaves(zero)]
        got = [_shape(a) for a in jax.tree.leaves(carry)]
        if got != want:
            raise ValueError(
                f"{self.label()} expects a carry of shape {_shapes(want)} for batch {batch}; "
                f"got {_shapes(got)}"
            )

    def _run(
        self, xs: jax.Array, carry: Carry, reverse: bool, per_gate: bool = False
    ) -> tuple[jax.Array, Carry]:
        """(ys, carry) over time-major inputs xs. `per_gate` goes to `fused.scan`: True where
        the forward pass keeps no activations (a rematerialised chunk)."""
        cell = self.cell
        # The fused scan adds bi inside its step, fused with the gate arithmetic, instead of in
        # a pass of its own over [T, B, G*H] (docs/performance.md).
        own_bias = self.fused_kernel is not None or self.persistent_kernel is not None
        xp = cell.project(xs, self.matmul_dtype, bias=not own_bias)
        if getattr(cell, "linear_in_h", False):  # minGRU / minLSTM
            xp = xp[::-1] if reverse else xp
            if self.min_scan == "parallel":
                ys, carry = cell.parallel(xp, carry)
            else:
                ys, carry = cell.sequential(xp, carry, self.unroll)
            return (ys[::-1] if reverse else ys), carry
        if own_bias:  # a hand-written backward: the fused scan's, or the Pallas kernels'
            run = (
                partial(fused.scan, self.fused_kernel, self.unroll, self.matmul_dtype, per_gate)
                if self.fused_kernel is not None
                else partial(persistent.scan, self.persistent_kernel, self.matmul_dtype)
            )
            ys, carry = run(
                cell.wh[...], cell.bh[...], cell.bi[...], xp[::-1] if reverse else xp, carry
            )
            return (ys[::-1] if reverse else ys), carry
        carry, ys = jax.lax.scan(cell.recurrence(), carry, xp, unroll=self.unroll, reverse=reverse)
        return ys, carry

    def _chunked(self, xs: jax.Array, carry: Carry) -> tuple[jax.Array, Carry]:
        """The remat path (`grubench.remat.checkpointed_scan`): chunks of c steps, each
        projecting and scanning inside the checkpoint, so the [T, B, G*H] projection is not
        kept either."""

        def chunk(h: Carry, x_chunk: jax.Array, _: jax.Array) -> tuple[Carry, jax.Array]:
            ys, h = self._run(x_chunk, h, False, per_gate=True)
            return h, ys

        if self.reverse:
            carry, ys = checkpointed_scan(chunk, carry, xs[::-1], self.remat_chunk)
            return ys[::-1], carry
        carry, ys = checkpointed_scan(chunk, carry, xs, self.remat_chunk)
        return ys, carry

    def _probed(self, xp: jax.Array, carry: Carry, probe: jax.Array):
        """The scan with probe_t added to h_t (the carry's last element for an LSTM)."""
        step = self.cell.recurrence()

        def probed(c, inputs):
            xp_t, e_t = inputs
            c, h = step(c, xp_t)
            h = h + e_t
            c = (*c[:-1], h) if isinstance(c, tuple) else h
            return c, h

        e = probe if self.time_major else jnp.swapaxes(probe, 0, 1)
        carry, ys = jax.lax.scan(probed, carry, (xp, e), reverse=self.reverse)
        return (ys if self.time_major else jnp.swapaxes(ys, 0, 1)), carry


class RecurrentStack(nnx.Module):
    """`depth` Recurrent layers in sequence, with optional dropout on each layer's output.

    ys, carries = stack(xs, carries, dropout_key=key); carries is one carry per layer.
    Dropout (inverted, rate `dropout`, or `dropout_rate` where given: a traced per-member rate)
    applies only when a key is given.

    Shapes (D: the first layer's `in_features`, H: the last layer's `hidden`): xs [B, T, D] ->
    ys [B, T, H] ([T, B, D] -> [T, B, H] when the layers are time-major), as for `Recurrent`;
    xs of another rank or width is a ValueError naming the stack. Each layer must read the
    previous one's width and share its layout, or the stack is not made (a ValueError).
    """

    def __init__(self, layers: list[Recurrent], *, dropout: float = 0.0):
        check_rate("RecurrentStack", "dropout", dropout)
        for i in range(1, len(layers)):
            prev, layer = layers[i - 1], layers[i]
            if layer.in_features != prev.hidden:
                raise ValueError(
                    f"RecurrentStack: layer {i}, {layer.label()}, cannot read layer {i - 1}'s "
                    f"output of width {prev.hidden}"
                )
            if layer.time_major != prev.time_major:
                raise ValueError(
                    f"RecurrentStack: layer {i} has time_major={layer.time_major} but layer "
                    f"{i - 1} has time_major={prev.time_major}; the layers share one layout"
                )
        self.layers = nnx.List(layers)
        self.dropout = dropout

    def label(self) -> str:
        """How errors name this stack: RecurrentStack(gru, depth=2, in_features=3, hidden=4)."""
        if not len(self.layers):
            return "RecurrentStack(depth=0)"
        first, last = self.layers[0], self.layers[-1]
        return (
            f"RecurrentStack({first.cell_name}, depth={len(self.layers)}, "
            f"in_features={first.in_features}, hidden={last.hidden})"
        )

    def __call__(
        self,
        xs: jax.Array,
        carries: list[Carry] | None = None,
        *,
        dropout_key: jax.Array | None = None,
        dropout_rate: jax.Array | None = None,
        probe: jax.Array | None = None,
    ) -> tuple[jax.Array, list[Carry]]:
        """`probe` goes to the first layer (see Recurrent): the gradient that reaches the bottom
        of the stack. xs [B, T, D] -> ys [B, T, H] (see the class)."""
        xs = as_input(xs, self.label())
        if len(self.layers):
            first = self.layers[0]
            check_input(xs, first.in_features, first.time_major, self.label())
        if carries is not None and len(carries) != len(self.layers):
            raise ValueError(
                f"{self.label()} takes one carry per layer ({len(self.layers)}); got {len(carries)}"
            )
        out_carries = []
        for i, layer in enumerate(self.layers):
            xs, c = layer(xs, None if carries is None else carries[i], probe if i == 0 else None)
            out_carries.append(c)
            xs = self.apply_dropout(xs, i, dropout_key, dropout_rate)
        return xs, out_carries

    def apply_dropout(
        self, xs: jax.Array, layer: int, key: jax.Array | None, rate: jax.Array | None = None
    ) -> jax.Array:
        """Inverted dropout on layer `layer`'s output at `rate` (default `self.dropout`); the
        identity without a key. A traced rate of 0 keeps every unit and changes nothing."""
        if key is None or (rate is None and self.dropout == 0):
            return xs
        p = self.dropout if rate is None else rate
        keep = jax.random.bernoulli(jax.random.fold_in(key, layer), 1.0 - p, xs.shape)
        return jnp.where(keep, xs / (1.0 - p), 0.0)


def stack(
    cell: str,
    in_features: int,
    hidden: int,
    depth: int,
    *,
    rngs: nnx.Rngs,
    dropout: float = 0.0,
    **layer_kw,
) -> RecurrentStack:
    """`depth` layers of `cell`; the first reads `in_features`, the rest read `hidden`. A depth
    below 1, or a dropout outside [0, 1), is a ValueError before any layer is made."""
    owner = f"stack({cell})"
    check_count(owner, "depth", depth, 1)
    check_rate(owner, "dropout", dropout)
    layers = [
        Recurrent(cell, in_features if i == 0 else hidden, hidden, rngs=rngs, **layer_kw)
        for i in range(depth)
    ]
    return RecurrentStack(layers, dropout=dropout)
