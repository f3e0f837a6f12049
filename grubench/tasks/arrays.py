"""Any sequence data the user has as arrays in an .npz file.

Arrays. `x` [N, T] of integers (tokens) or [N, T] / [N, T, D] of floats (reals); `y` [N] (one
target an example, scored at its last step), [N, T] (one a step) or [N, T, O] (a vector a
step), or [N, O] with O != T (a vector at the last step); integer targets are classes, float
targets reals; `mask` [N, T] of 0/1 (optional): which steps are data, the rest padding. Per-step
targets are scored where the mask is 1; a last-step target at each example's last step whose
mask is 1.

Splits. Either the keys `x_train`, `y_train`, `x_val`, `y_val`, `x_test`, `y_test` (and
`mask_train`, ... optionally), used as they are; or `x`, `y` and an optional `split` [N] of
0/1/2 (train/val/test); without `split` the examples are shuffled with
`numpy.random.default_rng(task.data_seed)` and cut 80/10/10 (rounding half up).
`task.train_size` caps train to its first train_size examples; `task.val_size` and
`task.test_size` are ignored.

Spec. Inferred from the arrays and printed when the file is read; each part can be set:
`task.input=tokens|real`, `task.output=classes|real|binary` (binary: every target 0 or 1,
one independent bit per output, as a piano roll), `task.target=step|last`, `task.classes`
and `task.vocab` (0: the largest label or token + 1). `task.seq_len` is the file's T, set from
the data (a value given must match it).

Loss: cross-entropy (classes), squared error summed over outputs (real) or Bernoulli NLL
summed over outputs (binary), averaged over scored steps. Baseline, scored on test: the train
split's class frequencies (add-one smoothed), its mean target (real) or its per-output
frequencies of 1 (binary, add-1/2 smoothed).

Stored (uncompressed) arrays are memory-mapped; the explicit-split layout uses them in place.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from grubench.config import require
from grubench.registry import TaskEntry, register_task
from grubench.tasks.base import Split, Splits, TaskSpec
from grubench.tasks.chorales import bernoulli_nll, pitch_frequencies
from grubench.tasks.data import cap_train, prior_nll, round_half_up
from grubench.tasks.files import (
    FileTaskConfig,
    announce,
    check_range,
    need,
    pinned,
    read_npz,
    stamp,
    user_path,
)

TASK = "arrays"
SPLITS = ("train", "val", "test")
FRACTIONS = (0.8, 0.1)  # train, val of a file without a split; the rest test
SEQ_LEN_FROM_FILE = 1_000_000  # task.seq_len's default: the file's T
MAX_INFERRED = 1_000_000  # an inferred vocabulary or class count this large is a stray id


@dataclass
class ArraysTaskConfig(FileTaskConfig):
    """Your arrays (`path`: an .npz with x, y, optional mask and split, or x_train ... y_test);
    the spec is inferred and printed, `input`/`output`/`target`/`classes`/`vocab` override it
    (auto, 0: inferred). See grubench/tasks/arrays.py and docs/data.md."""

    name: str = "arrays"
    input: str = "auto"  # auto | tokens | real
    output: str = "auto"  # auto | classes | real | binary
    target: str = "auto"  # auto | step | last
    classes: int = 0
    vocab: int = 0
    seq_len: int = SEQ_LEN_FROM_FILE
    train_size: int = 1_000_000_000


@dataclass(frozen=True)
class Data:
    splits: Splits  # train not yet capped
    spec: TaskSpec
    T: int


def _raw_splits(cfg: Any, path: Any, z: dict[str, np.ndarray]) -> dict[str, dict[str, Any]]:
    """{split: {"x", "y", "mask"}} from either layout."""
    if any(k.endswith("_train") for k in z):
        out = {}
        for s in SPLITS:
            missing = [k for k in (f"x_{s}", f"y_{s}") if k not in z]
            need(
                not missing,
                TASK,
                path,
                f"no {', '.join(missing)}: the split layout needs "
                "x_train, y_train, x_val, y_val, x_test, y_test",
            )
            out[s] = {"x": z[f"x_{s}"], "y": z[f"y_{s}"], "mask": z.get(f"mask_{s}")}
        return out
    missing = [k for k in ("x", "y") if k not in z]
    need(
        not missing,
        TASK,
        path,
        f"no {', '.join(missing)} (it has {', '.join(sorted(z))}); "
        "expected x, y (and optional mask, split) or x_train, y_train, ...",
    )
    x, y, mask = z["x"], z["y"], z.get("mask")
    _check_shapes(path, "", x, y, mask)
    n = len(x)
    if "split" in z:
        split = z["split"]
        need(split.shape == (n,), TASK, path, f"split of shape {list(split.shape)}, expected [{n}]")
        need(
            np.issubdtype(split.dtype, np.integer) and bool(np.isin(split, (0, 1, 2)).all()),
            TASK,
            path,
            "split must hold 0 (train), 1 (val) or 2 (test) for each example",
        )
        index = [np.flatnonzero(split == i) for i in range(3)]
        how = "its split array"
    else:
        order = np.random.default_rng(int(cfg.data_seed)).permutation(n)
        a = round_half_up(FRACTIONS[0] * n)
        b = a + round_half_up(FRACTIONS[1] * n)
        index = [order[:a], order[a:b], order[b:]]
        how = f"shuffled with task.data_seed={cfg.data_seed}, cut 80/10/10"
    announce(TASK, f"{path}: splits {'/'.join(str(len(i)) for i in index)} ({how})")
    return {
        s: {"x": x[i], "y": y[i], "mask": None if mask is None else mask[i]}
        for s, i in zip(SPLITS, index, strict=True)
    }


def _check_shapes(path: Any, name: str, x: np.ndarray, y: np.ndarray, mask: Any) -> None:
    """x is [N, T] or [N, T, D]; y and the mask hold one entry per example."""
    where = f"{name}: " if name else ""
    shape = list(x.shape)
    need(
        x.ndim in (2, 3) and x.shape[1] >= 1 and (x.ndim == 2 or x.shape[2] >= 1),
        TASK,
        path,
        f"{where}x of shape {shape}, expected [N, T] or [N, T, D] (T, D >= 1)",
    )
    need(y.ndim >= 1, TASK, path, f"{where}y of shape {list(y.shape)}, expected [N, ...]")
    need(len(y) == len(x), TASK, path, f"{where}y has {len(y)} examples, x has {len(x)}")
    need(
        mask is None or (mask.ndim == 2 and mask.shape == x.shape[:2]),
        TASK,
        path,
        f"{where}mask of shape {list(getattr(mask, 'shape', []))}, expected {shape[:2]}",
    )


def _alike(path: Any, raw: dict[str, dict[str, Any]]) -> None:
    """Every split's arrays are shaped and typed as train's: the same steps and widths, integer
    where train's are integer."""
    for s in SPLITS:
        need(len(raw[s]["x"]) > 0, TASK, path, f"the {s} split is empty")
        _check_shapes(path, s, raw[s]["x"], raw[s]["y"], raw[s]["mask"])
    for s in ("val", "test"):
        for k in ("x", "y"):
            a, b = raw[s][k], raw["train"][k]
            need(
                a.shape[1:] == b.shape[1:] and _integral(a) == _integral(b),
                TASK,
                path,
                f"{k}_{s} is {a.dtype} {list(a.shape)}, unlike {k}_train {b.dtype} {list(b.shape)}",
            )


def _integral(a: np.ndarray) -> bool:
    return bool(np.issubdtype(a.dtype, np.integer) or a.dtype == bool)


def _inferred_size(path: Any, arrays: list[np.ndarray], what: str, key: str) -> int:
    """1 + the largest of the splits' values (checked finite, integral and not absurd)."""
    for a in arrays:
        need(bool(np.isfinite(a).all()), TASK, path, f"{what}s hold NaN or infinite values")
        need(bool((a == np.round(a)).all()), TASK, path, f"{what}s must be integers")
    top = max(int(np.max(a)) for a in arrays if a.size)
    need(
        top < MAX_INFERRED,
        TASK,
        path,
        f"the largest {what} is {top}: if that many is meant, set task.{key}={top + 1}",
    )
    return top + 1


def _infer(cfg: Any, path: Any, raw: dict[str, dict[str, Any]]) -> tuple[str, str, str, int]:
    """(input, output, target, T) from the train arrays and the overrides."""
    x, y = raw["train"]["x"], raw["train"]["y"]
    T = x.shape[1]
    x_int, y_int = _integral(x), _integral(y)
    inp = cfg.input if cfg.input != "auto" else ("tokens" if x_int and x.ndim == 2 else "real")
    need(
        inp != "tokens" or (x_int and x.ndim == 2),
        TASK,
        path,
        f"task.input=tokens needs integer x of shape [N, T], got {x.dtype} {list(x.shape)}",
    )
    if cfg.target != "auto":
        target = cfg.target
    elif y.ndim == 1 or (y.ndim == 2 and y.shape[1] != T):
        target = "last"
    else:
        target = "step"
    want = {"last": "[N] or [N, O]", "step": f"[N, {T}] or [N, {T}, O]"}[target]
    ok = y.ndim in (1, 2) if target == "last" else (y.ndim in (2, 3) and y.shape[1] == T)
    need(ok, TASK, path, f"y of shape {list(y.shape)}: a {target}-step target needs {want}")
    vector = y.ndim == (2 if target == "last" else 3)
    out = cfg.output if cfg.output != "auto" else ("classes" if y_int and not vector else "real")
    need(
        out != "classes" or not vector,
        TASK,
        path,
        f"task.output=classes needs one label per target, y is {list(y.shape)}",
    )
    return inp, out, target, T


def _build(
    cfg: Any,
    path: Any,
    parts: dict[str, Any],
    inp: str,
    out: str,
    target: str,
    T: int,
    vocab: int,
    classes: int,
    name: str,
) -> Split:
    x, y, mask = parts["x"], parts["y"], parts["mask"]  # shapes checked by _alike
    n = len(x)
    # The splits are copied out of the memory-mapped file: validation and test are read again
    # at every evaluation, and a file rewritten in place meanwhile would fault its pages.
    if inp == "tokens":
        hint = f" (task.vocab={cfg.vocab or 'inferred'})"
        check_range(TASK, path, f"{name}: token", np.asarray(x), vocab, hint)  # before the cast
        xs = np.array(x, np.int32)
    else:
        xs = np.array(x, np.float32)
        xs = xs[..., None] if xs.ndim == 2 else xs
        need(bool(np.isfinite(xs).all()), TASK, path, f"{name}: x holds NaN or infinite values")
    if mask is None:
        m = np.ones((n, T), np.float32)
    else:
        m = np.array(mask, np.float32)
        need(bool(np.isin(m, (0.0, 1.0)).all()), TASK, path, f"{name}: mask values must be 0 or 1")
        need(bool((m.sum(1) > 0).all()), TASK, path, f"{name}: an example whose mask is all 0")
    if out == "classes":
        ys = np.asarray(y)
        need(bool(np.all(ys == np.round(ys))), TASK, path, f"{name}: class labels must be integers")
        ys = ys.astype(np.int64)
        hint = f" (task.classes={cfg.classes or 'inferred'})"
        check_range(TASK, path, f"{name}: label", ys, classes, hint)
        ys = ys.astype(np.int32)
    else:
        ys = np.array(y, np.float32)
        need(bool(np.isfinite(ys).all()), TASK, path, f"{name}: y holds NaN or infinite values")
        if out == "binary":
            need(
                bool(np.isin(ys, (0.0, 1.0)).all()),
                TASK,
                path,
                f"{name}: task.output=binary needs every target 0 or 1",
            )
        ys = ys[..., None] if ys.ndim == (1 if target == "last" else 2) else ys
    if target == "step":
        return Split(xs, ys, m, m.copy())
    last = T - 1 - np.argmax(m[:, ::-1] > 0, axis=1)  # each example's last step of data
    full = np.zeros((n, T, *ys.shape[1:]), ys.dtype)
    full[np.arange(n), last] = ys
    scored = np.zeros((n, T), np.float32)
    scored[np.arange(n), last] = 1.0
    return Split(xs, full, scored, scored.copy())


_MEMO: dict[tuple, Data] = {}


def load(cfg: Any) -> Data:
    """The file's three splits and the spec, checked; the spec printed the first time."""
    path = user_path(TASK, cfg.path)
    key = (stamp([path]), cfg.input, cfg.output, cfg.target, cfg.classes, cfg.vocab, cfg.data_seed)
    if key in _MEMO:
        return _MEMO[key]
    raw = _raw_splits(cfg, path, read_npz(TASK, path))
    _alike(path, raw)
    inp, out, target, T = _infer(cfg, path, raw)
    xs, ys = [r["x"] for r in raw.values()], [r["y"] for r in raw.values()]
    vocab, classes = 0, 0
    if inp == "tokens":
        vocab = int(cfg.vocab) or _inferred_size(path, xs, "token", "vocab")
    if out == "classes":
        classes = int(cfg.classes) or _inferred_size(path, ys, "label", "classes")
    splits = Splits(
        **{s: _build(cfg, path, raw[s], inp, out, target, T, vocab, classes, s) for s in SPLITS}
    )
    width = splits.train.x.shape[2] if inp == "real" else vocab
    size = classes if out == "classes" else splits.train.y.shape[-1]
    spec = TaskSpec(inp, int(width), out, int(size))  # type: ignore[arg-type]
    x0, y0 = raw["train"]["x"], raw["train"]["y"]
    announce(
        TASK,
        f"{path}: x {list(x0.shape)} {x0.dtype} -> input={inp} "
        f"({'vocabulary' if inp == 'tokens' else 'width'} {width}); "
        f"y {list(y0.shape)} {y0.dtype} -> output={out} ({size}), target={target}; T={T} "
        "(override with task.input/output/target/classes/vocab)",
    )
    _MEMO[key] = Data(splits, spec, T)
    return _MEMO[key]


def spec(cfg: Any) -> TaskSpec:
    """The spec inferred from the file (or set by the task.* overrides)."""
    return load(cfg).spec


def load_splits(cfg: Any) -> Splits:
    """The file's splits, train capped at task.train_size."""
    s = load(cfg).splits
    return Splits(train=cap_train(s.train, cfg.train_size), val=s.val, test=s.test)


def baseline(cfg: Any) -> float:
    """The memoryless predictor of the train split, scored on test (see the module docstring)."""
    d = load(cfg)
    tr, te = d.splits.train, d.splits.test
    if d.spec.output == "classes":
        return prior_nll(tr.y[tr.loss_mask > 0], te.y[te.loss_mask > 0], d.spec.output_size)
    if d.spec.output == "binary":
        return bernoulli_nll(te, pitch_frequencies(tr))
    w = tr.loss_mask[..., None]
    mean = (tr.y * w).sum((0, 1)) / w.sum()
    err = ((te.y - mean) ** 2).sum(-1)
    return float((err * te.loss_mask).sum() / te.loss_mask.sum())


def validate(cfg: Any) -> None:
    """Known overrides, the file loads and checks (DataError otherwise), seq_len is the
    file's, and the data match task.sha256 where set."""
    require(
        cfg.input in ("auto", "tokens", "real"), "task.input", cfg.input, "auto, tokens or real"
    )
    require(
        cfg.output in ("auto", "classes", "real", "binary"),
        "task.output",
        cfg.output,
        "auto, classes, real or binary",
    )
    require(cfg.target in ("auto", "step", "last"), "task.target", cfg.target, "auto, step or last")
    require(cfg.classes >= 0, "task.classes", cfg.classes, "an integer >= 0 (0: inferred)")
    require(cfg.vocab >= 0, "task.vocab", cfg.vocab, "an integer >= 0 (0: inferred)")
    T = load(cfg).T
    require(
        cfg.seq_len in (SEQ_LEN_FROM_FILE, T),
        "task.seq_len",
        cfg.seq_len,
        f"the file's length {T} (leave it unset)",
    )
    pinned(cfg, [user_path(TASK, cfg.path)])


def complete(cfg: Any) -> dict[str, Any]:
    """The file's length and content hash."""
    return {"seq_len": load(cfg).T, "sha256": pinned(cfg, [user_path(TASK, cfg.path)])}


register_task(
    TaskEntry(
        TASK,
        "your own arrays (.npz): tokens or reals in; classes, reals or bits out",
        ArraysTaskConfig,
        spec,
        load_splits,
        baseline,
        validate,
        complete=complete,
    )
)
