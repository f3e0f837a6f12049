"""Language modelling on the user's text: next-symbol prediction at the character or word level.

Files. `task.path` names either
- a folder in the layout of the Penn Treebank distribution: one `*.train.txt`, `*.valid.txt`
  and `*.test.txt` (e.g. ptb.train.txt, ptb.valid.txt, ptb.test.txt; at `task.level=char` the
  `*.char.train.txt` files are taken where the folder has them, as PTB's does);
- one such `*.train.txt` file, its `valid` and `test` siblings beside it;
- any other text file, split in order into the first 90% of its symbols (train), the next 5%
  (validation) and the rest (test), rounding half up.
Files are read as UTF-8.

Symbols. `task.level=word`: each line's whitespace-separated words, then `<eos>` (as PTB is
read by Zaremba et al. 2014). `task.level=char`: every character, newlines included; except
in a file whose name holds `.char.` (PTB's character files, whose characters are separated by
spaces and whose word boundaries are `_`), where the symbols are each line's space-separated
characters, then `<eos>`. The vocabulary is `<unk>` followed by the train split's distinct
symbols in sorted order; a validation or test symbol not in it becomes `<unk>`.

Examples. Each split's symbol stream is cut into windows of L = `task.seq_len` scored steps:
window i predicts symbols iL+1 .. iL+L from those before them, so every symbol after the first
is predicted exactly once. Each window starts from a zero state: back-propagation through time
is truncated to the window, and the state is not carried from one window to the next (as in
stateful truncated BPTT), so a symbol is predicted from the L/2 symbols before it on average.
`task.context=C` prefixes each window (after the first) with the C symbols before it, read as
burn-in and not scored, so every symbol is predicted from at least C of its own past; a C of a
few hundred characters brings the evaluation close to a state carried through the stream
(`windows`). Train drops its last partial window (its windows are views of the stream, not
copies); validation and test pad it (mask 0). `task.train_size` caps train to its first
train_size windows; `task.val_size`, `task.test_size` and `task.data_seed` are ignored.

Loss: cross-entropy in nats per predicted symbol; results.json also holds SPLIT_bpc (bits per
character, loss / ln 2) at the character level and SPLIT_perplexity (exp(loss)) at the word
level. Baseline: a unigram model of the train split's symbol frequencies (add-one smoothed over
the vocabulary), scored on the test split.

Token streams are cached by the files' content hash (`grubench.tasks.files.cached`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from grubench.config import require
from grubench.registry import TaskEntry, register_task
from grubench.tasks.base import Split, Splits, TaskSpec
from grubench.tasks.data import cap_train, prior_nll, round_half_up
from grubench.tasks.files import (
    FileTaskConfig,
    announce,
    cached,
    content_hash,
    fail,
    need,
    pinned,
    stamp,
    user_path,
)

TASK = "text"
TOKENIZER_VERSION = 1  # bump when the symbols a file gives change: it keys the cache
UNK, EOS = "<unk>", "<eos>"
TRAIN_FRACTION, VAL_FRACTION = 0.90, 0.05
SPLITS = ("train", "val", "test")
LEVELS = ("char", "word")


@dataclass
class TextTaskConfig(FileTaskConfig):
    """Language modelling on your text (`path`: a PTB-style folder or a file), at `level`
    char or word, in windows of `seq_len` steps; train_size caps the train windows.
    See grubench/tasks/text.py and docs/data.md."""

    name: str = "text"
    level: str = "char"
    seq_len: int = 100
    context: int = 0  # burn-in symbols before each window's seq_len scored ones
    train_size: int = 1_000_000_000


# ---------------------------------------------------------------------------------------------
# Files and symbols


def files_of(cfg: Any) -> list[Path]:
    """[train, valid, test] of a PTB-style layout, or [the one file] to split 90/5/5."""
    path = user_path(TASK, cfg.path, directory=True)
    if path.is_dir():
        found = sorted(path.glob("*.train.txt"))
        chars = [p for p in found if ".char." in p.name]
        found = chars if cfg.level == "char" and chars else [p for p in found if p not in chars]
        need(bool(found), TASK, path, "a folder with no *.train.txt file")
        need(
            len(found) == 1,
            TASK,
            path,
            f"several *.train.txt files ({', '.join(p.name for p in found)}): "
            "set task.path to the one to use",
        )
        train = found[0]
    elif path.name.endswith(".train.txt"):
        train = path
    else:
        return [path]
    prefix = train.name[: -len("train.txt")]
    out = [train, train.with_name(prefix + "valid.txt"), train.with_name(prefix + "test.txt")]
    for p in out[1:]:
        need(p.is_file(), TASK, p, f"missing: {train.name} needs it beside it")
    return out


def read_text(path: Path) -> str:
    """The file's text, UTF-8; DataError (one line) where it is not."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise fail(TASK, path, f"not UTF-8 text (an invalid byte at offset {e.start})") from None
    except OSError as e:
        raise fail(TASK, path, f"cannot be read ({e.strerror})") from None


def symbols(text: str, level: str, spaced: bool) -> list[str]:
    """The symbol sequence of `text` (see the module docstring)."""
    if level == "word" or spaced:
        out: list[str] = []
        for line in text.splitlines():
            out += line.split()
            out.append(EOS)
        return out
    return list(text)


def vocabulary(train: list[str]) -> list[str]:
    """`<unk>`, then the distinct train symbols in sorted order."""
    return [UNK, *sorted(set(train) - {UNK})]


def encode(syms: list[str], vocab: list[str]) -> np.ndarray:
    """The ids [n] int32 of `syms` in `vocab`; 0 (`<unk>`) for a symbol not in it."""
    index = {s: i for i, s in enumerate(vocab)}
    return np.fromiter((index.get(s, 0) for s in syms), np.int32, count=len(syms))


def parse(files: list[Path], level: str) -> dict[str, np.ndarray]:
    """`vocab` (str array) and each split's int32 symbol ids `train`, `val`, `test`."""
    streams = [symbols(read_text(p), level, ".char." in p.name) for p in files]
    if len(streams) == 1:
        (all_,) = streams
        n = len(all_)
        a = round_half_up(TRAIN_FRACTION * n)
        b = a + round_half_up(VAL_FRACTION * n)
        streams = [all_[:a], all_[a:b], all_[b:]]
    one = len(files) == 1
    for split, s, path in zip(SPLITS, streams, files * 3 if one else files, strict=True):
        where = f"its {split} part (of 90/5/5) has" if one else "has"
        need(len(s) >= 2, TASK, path, f"{where} {len(s)} symbol(s); at least 2 are needed")
    vocab = vocabulary(streams[0])
    out = {split: encode(s, vocab) for split, s in zip(SPLITS, streams, strict=True)}
    return out | {"vocab": np.array(vocab, dtype=str)}


def _check_arrays(arrays: dict[str, np.ndarray]) -> None:
    v = len(arrays["vocab"])
    for split in SPLITS:
        s = arrays[split]
        if not (
            s.ndim == 1 and len(s) >= 2 and s.dtype == np.int32 and 0 <= s.min() and s.max() < v
        ):
            raise fail(TASK, "cache", f"{split}: symbol ids outside the vocabulary")


_MEMO: dict[tuple, dict[str, np.ndarray]] = {}


def load(cfg: Any) -> dict[str, np.ndarray]:
    """The vocabulary and the three symbol-id streams (memory-mapped from the cache)."""
    files = files_of(cfg)
    key = (cfg.level, stamp(files))
    if key in _MEMO:
        return _MEMO[key]
    # The symbols depend on the contents, the level, the layout and which files are PTB's
    # spaced character files (by name): all key the cache.
    spaced = "".join("s" if ".char." in p.name else "-" for p in files)
    digest = hashlib.sha256(f"{content_hash(files)}|{cfg.level}|{spaced}".encode()).hexdigest()
    arrays = cached(TASK, TOKENIZER_VERSION, digest, lambda: parse(files, cfg.level), _check_arrays)
    unk = [float(np.mean(arrays[s] == 0)) for s in ("val", "test")]
    announce(
        TASK,
        f"({cfg.level}) {', '.join(map(str, files))}: vocabulary of "
        f"{len(arrays['vocab'])} symbols from train; "
        + ", ".join(f"{s} {len(arrays[s])} symbols" for s in SPLITS)
        + f"; <unk> is {100 * unk[0]:.2f}% of val, {100 * unk[1]:.2f}% of test",
    )
    _MEMO[key] = arrays
    return arrays


# ---------------------------------------------------------------------------------------------
# Windows


def windows(stream: np.ndarray, length: int, *, context: int = 0, pad: bool) -> Split:
    """Next-symbol windows over `stream` [n], W = context + length steps wide, one every
    `length` symbols: window j reads x[j] = stream[jL : jL+W] and predicts y[j] =
    stream[jL+1 : jL+W+1]; window 0 scores all its W steps, window j > 0 only its last L (its
    first `context` steps are burn-in, scored by window j - 1), so every symbol after the first
    is predicted exactly once, each after at least `context` symbols of its own past (or all
    of it). Without `pad` a last partial window is dropped and x, y are views of `stream`
    (no copy); with it, it is padded (mask 0) so every symbol is predicted."""
    L, W, n_pred = length, context + length, len(stream) - 1
    if n_pred <= W:
        n = 1 if pad or n_pred == W else 0
    else:
        n = 1 + ((n_pred - W + L - 1) // L if pad else (n_pred - W) // L)
    needed = (n - 1) * L + W + 1 if n else 0
    if needed > len(stream):
        stream = np.concatenate([stream, np.zeros(needed - len(stream), stream.dtype)])
    view = sliding_window_view(stream[:needed], W + 1)[::L] if n else np.zeros((0, W + 1))
    x, y = view[:, :-1].astype(np.int32, copy=False), view[:, 1:].astype(np.int32, copy=False)
    j, t = np.arange(n)[:, None], np.arange(W)[None, :]
    scored = ((j == 0) | (t >= context)) & (j * L + t + 1 <= n_pred)
    mask = scored.astype(np.float32)
    return Split(x, y, mask, mask.copy())


def load_splits(cfg: Any) -> Splits:
    """Windows of the three streams; train capped at task.train_size windows."""
    a = load(cfg)
    L, C = int(cfg.seq_len), int(cfg.context)
    return Splits(
        train=cap_train(windows(a["train"], L, context=C, pad=False), cfg.train_size),
        val=windows(a["val"], L, context=C, pad=True),
        test=windows(a["test"], L, context=C, pad=True),
    )


def spec(cfg: Any) -> TaskSpec:
    """Symbols in, the next symbol out; bpc (char) or perplexity (word) beside the loss."""
    v = len(load(cfg)["vocab"])
    return TaskSpec(
        "tokens", v, "classes", v, also=("bpc",) if cfg.level == "char" else ("perplexity",)
    )


def baseline(cfg: Any) -> float:
    """Mean test NLL (nats per predicted symbol) of a unigram model of the train split's
    predicted symbols, add-one smoothed over the vocabulary."""
    a = load(cfg)
    return prior_nll(a["train"][1:], a["test"][1:], len(a["vocab"]))


def validate(cfg: Any) -> None:
    """A known level, and files whose train split holds at least one window."""
    require(cfg.level in LEVELS, "task.level", cfg.level, " or ".join(LEVELS))
    require(cfg.context >= 0, "task.context", cfg.context, "an integer >= 0")
    n = len(load(cfg)["train"])
    require(
        int(cfg.seq_len) + int(cfg.context) <= n - 1,
        "task.seq_len",
        cfg.seq_len,
        f"at most {n - 1 - int(cfg.context)}: the train split of {cfg.path} has {n} symbols, "
        "one window of context + seq_len + 1 at least",
    )
    pinned(cfg, files_of(cfg))


def complete(cfg: Any) -> dict[str, Any]:
    """The content hash of the files read."""
    return {"sha256": pinned(cfg, files_of(cfg))}


register_task(
    TaskEntry(
        TASK,
        "language modelling on your text (char or word level; PTB layout or one file)",
        TextTaskConfig,
        spec,
        load_splits,
        baseline,
        validate,
        complete=complete,
        plot_unit="nats per symbol",
    )
)
