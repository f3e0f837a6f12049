"""Polyphonic music from the user's file: next-frame piano-roll NLL, as Chung et al. 2014.

Data. The format Boulanger-Lewandowski et al. 2012 distributed JSB Chorales, Nottingham,
MuseData and Piano-midi.de in: a pickle (or a JSON file of the same structure) of a dict with
keys `train`, `valid` and `test`, each a list of sequences, each a list of frames, each a
collection (tuple, list, set) of the MIDI pitch numbers sounding in that frame (an empty one is
a rest). Pitch numbers may be Python or numpy integers, or floats of integer value; they must
lie in 21..108. A pickle is read by an unpickler that can build only containers, numbers and
numpy scalars (`grubench.tasks.files.safe_unpickle`), so the file cannot run code; pickles
written by Python 2 are read with encoding latin1.

Piano roll: 88 binary pitch dimensions, MIDI 21..108. The splits are the file's own; train is
used in file order (`task.train_size` caps it to its first train_size sequences, larger
values mean all of it); `task.val_size`, `task.test_size` and `task.data_seed` are ignored.

Sequences, loss, accuracy and baseline are those of `task=chorales`: input frames 0..L-2,
target frames 1..L-1, padded to the longest sequence of the file (masks 0 on padding);
`task.seq_len` cuts a longer sequence to its first seq_len + 1 frames (the default cuts
nothing in any of the four sets). The loss is the Bernoulli NLL in nats summed over the 88
pitches and averaged over the unpadded frames (Chung et al. 2014, Table 2); the baseline is
independent per-pitch frequencies of the train split (add-1/2 smoothed), scored on test.

`task.dataset` names the data set in results.json (for grouping and for `--paper`); left
unset it is read off the file's name: jsb, nottingham, musedata or pianomidi for the files as
distributed ("JSB Chorales.pickle", "Nottingham.pickle", "MuseData.pickle",
"Piano-midi.de.pickle"), else the file's stem in lower case.

Parsed rolls are cached by the file's content hash (`grubench.tasks.files.cached`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from grubench.errors import ConfigError
from grubench.registry import TaskEntry, register_task
from grubench.tasks.base import Split, Splits, TaskSpec
from grubench.tasks.chorales import (
    LOWEST_MIDI,
    N_PITCHES,
    NLL_TARGET,
    bernoulli_nll,
    pitch_frequencies,
    sequences,
)
from grubench.tasks.data import cap_train
from grubench.tasks.files import (
    FileTaskConfig,
    announce,
    brief,
    cached,
    content_hash,
    fail,
    need,
    pinned,
    safe_unpickle,
    stamp,
    user_path,
)

TASK = "polyphonic"
PARSER_VERSION = 1  # bump when the roll a file gives changes: it keys the cache
SPLITS = ("train", "val", "test")
FILE_KEYS = {"train": "train", "val": "valid", "test": "test"}
DATASETS = ("jsb", "nottingham", "musedata", "pianomidi")
_DATASET_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass
class PolyphonicTaskConfig(FileTaskConfig):
    """Polyphonic music from `path` (a Boulanger-Lewandowski pickle or JSON): next-frame
    piano-roll NLL on the file's train/valid/test. `seq_len` caps the steps per sequence;
    train_size caps train; `dataset` names the set (default: from the file's name).
    See grubench/tasks/polyphonic.py and docs/data.md."""

    name: str = "polyphonic"
    dataset: str | None = None
    seq_len: int = 100_000
    train_size: int = 1_000_000


def spec(cfg: Any) -> TaskSpec:
    """88 pitches in, 88 independent bits out (the next frame)."""
    return TaskSpec("real", N_PITCHES, "binary", N_PITCHES)


def dataset_name(cfg: Any) -> str:
    """`task.dataset`, or the data set the file's name says (see the module docstring)."""
    if cfg.get("dataset"):
        return str(cfg.dataset)
    stem = Path(str(cfg.path)).name.split(".")[0]
    squashed = re.sub(r"[^a-z0-9]", "", stem.lower())
    for name in DATASETS:
        if squashed.startswith(name):
            return name
    return re.sub(r"[^a-z0-9_.-]+", "_", stem.lower())  # a plain name, as task.dataset allows


# ---------------------------------------------------------------------------------------------
# Reading the file


def read_file(path: Path) -> Any:
    """The file's object: JSON when it starts with `{` (after any byte-order mark), else a
    pickle (restricted)."""
    with path.open("rb") as f:
        head = f.read(64).lstrip(b"\xef\xbb\xbf \t\r\n")
    need(
        not head.startswith(b"PK"),
        TASK,
        path,
        "a zip archive (.npz?), not a pickle or a JSON file of train/valid/test sequences",
    )
    if head.startswith(b"{"):
        try:
            return json.loads(path.read_text(encoding="utf-8-sig"))
        except (UnicodeDecodeError, ValueError, RecursionError) as e:
            why = " ".join(f"{type(e).__name__}: {e}".split())[:300]
            raise fail(TASK, path, f"not valid JSON ({why})") from None
    return safe_unpickle(TASK, path)


_HIGHEST_MIDI = LOWEST_MIDI + N_PITCHES - 1


def _bad_pitch(p: Any) -> str:
    if isinstance(p, bool) or not isinstance(p, int | float):
        return f"{brief(p)} is not a MIDI pitch number"
    if not LOWEST_MIDI <= p <= _HIGHEST_MIDI:
        return f"MIDI pitch {brief(p)} outside {LOWEST_MIDI}..{_HIGHEST_MIDI} (the 88 piano keys)"
    return f"pitch {brief(p)} is not an integer"


def _roll(path: Path, split: str, i: int, seq: Any) -> np.ndarray:
    """The uint8 roll [L, 88] of sequence `i` of `split`; DataError naming the sequence and
    frame of the first thing that is not a frame of MIDI pitch numbers 21..108."""
    where = f"{FILE_KEYS[split]!r} sequence {i}"
    need(
        isinstance(seq, list | tuple),
        TASK,
        path,
        f"{where} is a {type(seq).__name__}, not a list of frames",
    )
    need(
        len(seq) >= 2,
        TASK,
        path,
        f"{where} has {len(seq)} frame(s); next-frame prediction needs at least 2",
    )
    roll = np.zeros((len(seq), N_PITCHES), np.uint8)
    for t, frame in enumerate(seq):
        if not isinstance(frame, list | tuple | set | frozenset):
            raise fail(
                TASK,
                path,
                f"{where}, frame {t}: a {type(frame).__name__}, not a collection of MIDI pitches",
            )
        for p in frame:
            # Messages are built only on failure: a MuseData-sized file has a million frames.
            ok = (
                isinstance(p, int | float)
                and not isinstance(p, bool)
                and LOWEST_MIDI <= p <= _HIGHEST_MIDI
                and p == int(p)
            )
            if not ok:
                raise fail(TASK, path, f"{where}, frame {t}: {_bad_pitch(p)}")
            roll[t, int(p) - LOWEST_MIDI] = 1
    return roll


def parse(path: Path) -> dict[str, np.ndarray]:
    """The file's piano rolls as arrays: for each split, `SPLIT_lengths` [N] and `SPLIT_rolls`
    [sum of lengths, 88] uint8."""
    data = read_file(path)
    need(
        isinstance(data, dict),
        TASK,
        path,
        f"holds a {type(data).__name__}, expected a dict with keys train, valid, test",
    )
    out: dict[str, Any] = {}
    for split in SPLITS:
        key = FILE_KEYS[split]
        need(
            key in data,
            TASK,
            path,
            f"no {key!r} split (it has {brief(list(data)) if data else 'no keys'})",
        )
        seqs = data[key]
        need(
            isinstance(seqs, list | tuple),
            TASK,
            path,
            f"{key!r} is a {type(seqs).__name__}, not a list of sequences",
        )
        need(len(seqs) > 0, TASK, path, f"the {key!r} split is empty")
        out[split] = seqs
    # A pickle may reference one sequence many times: a small file could describe more frames
    # than memory holds. A frame written out takes at least a byte.
    # A pickle may reference one sequence or frame many times: a small file could describe more
    # frames and pitches than memory or time allows. Written out, each takes at least a byte.
    seqs = [s for split in SPLITS for s in out[split] if isinstance(s, list | tuple)]
    frames = sum(len(s) for s in seqs)
    size = path.stat().st_size
    need(
        frames <= size,
        TASK,
        path,
        f"{frames} frames in a file of {size} bytes: sequences repeated by reference",
    )
    pitches = sum(len(f) for s in seqs for f in s if isinstance(f, list | tuple | set | frozenset))
    need(
        pitches <= size,
        TASK,
        path,
        f"{pitches} pitches in a file of {size} bytes: frames repeated by reference",
    )
    for split in SPLITS:
        rolls = [_roll(path, split, i, s) for i, s in enumerate(out.pop(split))]
        out[f"{split}_lengths"] = np.array([len(r) for r in rolls], np.int64)
        out[f"{split}_rolls"] = np.concatenate(rolls)
    return out


def _check_arrays(arrays: dict[str, np.ndarray]) -> None:
    for split in SPLITS:
        lengths, rolls = arrays[f"{split}_lengths"], arrays[f"{split}_rolls"]
        ok = (
            lengths.ndim == 1
            and len(lengths) > 0
            and int(lengths.min()) >= 2
            and rolls.shape == (int(lengths.sum()), N_PITCHES)
            and rolls.dtype == np.uint8
        )
        if not ok:
            raise fail(TASK, "cache", f"{split}: lengths do not match the rolls")


_MEMO: dict[tuple, dict[str, list[np.ndarray]]] = {}


def load_rolls(cfg: Any) -> dict[str, list[np.ndarray]]:
    """The file's rolls by split (train/val/test), each a list of uint8 [L, 88] views of the
    memory-mapped cache; parsed and cached on first use, kept in memory for the process."""
    path = user_path(TASK, cfg.path)
    key = stamp([path])
    if key in _MEMO:
        return _MEMO[key]
    arrays = cached(TASK, PARSER_VERSION, content_hash([path]), lambda: parse(path), _check_arrays)
    out = {
        split: np.split(arrays[f"{split}_rolls"], np.cumsum(arrays[f"{split}_lengths"])[:-1])
        for split in SPLITS
    }
    frames = {s: int(arrays[f"{s}_lengths"].sum()) for s in SPLITS}
    longest = max(len(r) for rolls in out.values() for r in rolls)
    announce(
        TASK,
        f"({dataset_name(cfg)}) {path}: "
        + ", ".join(f"{s} {len(out[s])} sequences / {frames[s]} frames" for s in SPLITS)
        + f"; the longest has {longest} frames",
    )
    _MEMO[key] = out
    return out


def steps(cfg: Any, rolls: dict[str, list[np.ndarray]]) -> int:
    """The padded length: the longest sequence's steps (its frames - 1), capped at seq_len."""
    longest = max(len(r) for split in rolls.values() for r in split)
    return min(int(cfg.seq_len), longest - 1)


def full_splits(cfg: Any) -> Splits:
    """The file's three splits as next-frame pairs, train not yet capped."""
    rolls = load_rolls(cfg)
    length = steps(cfg, rolls)
    return Splits(**{s: sequences(rolls[s], length) for s in SPLITS})


def load_splits(cfg: Any) -> Splits:
    """The file's splits, train capped at task.train_size."""
    s = full_splits(cfg)
    return Splits(train=cap_train(s.train, cfg.train_size), val=s.val, test=s.test)


def _targets(rolls: list[np.ndarray], length: int) -> Split:
    """The target frames of `rolls` (1 .. min(L - 1, length)) as one unpadded sequence
    [1, frames, 88]: what `bernoulli_nll` and `pitch_frequencies` score, without the padding
    of the splits (a MuseData-sized file pads to gigabytes)."""
    y = np.concatenate([r[1 : min(len(r) - 1, length) + 1] for r in rolls])[None]
    mask = np.ones(y.shape[:2], np.float32)
    return Split(y, y, mask, mask)


def baseline(cfg: Any) -> float:
    """Test NLL of independent per-pitch Bernoulli frequencies from the train split."""
    rolls = load_rolls(cfg)
    length = steps(cfg, rolls)
    test, train = _targets(rolls["test"], length), _targets(rolls["train"], length)
    return bernoulli_nll(test, pitch_frequencies(train))


def validate(cfg: Any) -> None:
    """The path is a readable file whose rolls parse (DataError otherwise, one line); a set
    `dataset` is a plain name."""
    if cfg.get("dataset") is not None and not _DATASET_RE.match(str(cfg.dataset)):
        raise ConfigError(
            f"task.dataset={cfg.dataset} is not allowed: a name of letters, digits, _ . -"
        )
    load_rolls(cfg)
    pinned(cfg, [user_path(TASK, cfg.path)])


def complete(cfg: Any) -> dict[str, Any]:
    """The data set's name and the padded length the file gives (seq_len, capped)."""
    return {
        "dataset": dataset_name(cfg),
        "seq_len": steps(cfg, load_rolls(cfg)),
        "sha256": pinned(cfg, [user_path(TASK, cfg.path)]),
    }


register_task(
    TaskEntry(
        TASK,
        "polyphonic music from your file (JSB, Nottingham, MuseData, Piano-midi.de): "
        "next-frame piano-roll NLL",
        PolyphonicTaskConfig,
        spec,
        load_splits,
        baseline,
        validate,
        complete=complete,
        target=NLL_TARGET,
    )
)
