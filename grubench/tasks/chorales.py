"""Bach chorales: next-frame prediction on piano rolls of the corpus music21 ships.

Data. The chorales music21 lists in `music21.corpus.chorales` under BWV numbering (the files
of its own corpus, nothing is downloaded). music21 10.5.1 lists 371 chorales under
Riemenschneider numbering, which name only 350 distinct files (some chorales appear under two
numbers), and 353 distinct files under BWV numbering: those 353 are parsed. Two pairs give
identical piano rolls (bwv62.6 = bwv274, bwv69.6-a = bwv69.6); the later identifier of each
pair (in sorted order) is dropped so that no roll can sit in two splits: 351 chorales remain.

Piano roll. One frame per quarter note: frame k holds the pitches sounding at offset k
(a note from offset a for d quarters is on in frames ceil(a) .. ceil(a + d) - 1, so notes
between beats that end before the next beat are not seen; grace notes are skipped). 88 binary
pitch dimensions, MIDI 21..108 (the chorales use 36..86); all parts merged into one roll (334
of the 353 files have 4 parts, 19 have instrumental parts too, all merged); pitches as written
(no transposition), repeats not expanded. The rolls are 24..193 frames long (median 48).

Split, fixed. JSB Chorales (Boulanger-Lewandowski et al. 2012) split 382 chorales 229/76/77
train/valid/test. Here the sorted list of distinct chorale identifiers is shuffled with
`numpy.random.default_rng(SPLIT_SEED).permutation` (SPLIT_SEED = 2012) and cut into the first
round(0.6 n) for train, the next round(0.2 n) for validation and the rest for test (rounding
half up: 382 gives 229/76/77), here 351 -> 211/70/70. `task.data_seed`, `task.val_size` and
`task.test_size` are ignored; `task.train_size` caps train to the first train_size of the
shuffled train order (larger values mean all of it).

Sequences. Input frames 0..L-2, target frames 1..L-1; the longest chorale sets the padded
length T = min(task.seq_len, max L - 1), the same for all splits; padding has loss and metric
mask 0. `task.seq_len` caps the length: a chorale longer than seq_len + 1 frames is cut to
its first seq_len + 1 frames. The default, 128, keeps 348 of the 351 chorales whole (bwv328,
bwv371 and bwv248.42-4 are cut).

Loss: the frame-level NLL of Chung et al. 2014 (Table 2): Bernoulli NLL in nats summed over the
88 pitches, averaged over the unpadded steps; accuracy is exact-frame accuracy (all 88 bits right
at threshold 0.5). The baseline is the NLL on the test split of independent per-pitch
Bernoulli frequencies estimated on the target frames of the whole train split (add-1/2
smoothed), a memoryless model: 11.63 nats at the defaults.

Cache. Parsing takes tens of seconds, once per music21 version and PARSER_VERSION: the
rolls are cached in `$XDG_CACHE_HOME/grubench` (default `~/.cache/grubench`) as
`chorales-music21-VERSION-parserN.npz`, written atomically; later loads read it (and keep it in
memory for the process). A cache that fails its checks is parsed again and rewritten.
"""

from __future__ import annotations

import math
import sys
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from grubench.config import TaskConfig
from grubench.registry import TaskEntry, register_task
from grubench.targets import Target
from grubench.tasks.base import DataError, Split, Splits, TaskSpec
from grubench.tasks.data import (
    cache_dir,
    cap_train,
    check,
    check_split,
    import_package,
    round_half_up,
    save_npz_atomic,
)

TASK = "chorales"
PARSER_VERSION = 1  # bump when the roll a score gives changes: it keys the cache
SPLIT_SEED = 2012
TRAIN_FRACTION, VAL_FRACTION = 0.6, 0.2
LOWEST_MIDI, N_PITCHES = 21, 88  # A0 .. C8
MIN_CHORALES = 300  # fewer means a broken corpus


@dataclass(frozen=True)
class Corpus:
    """Every chorale music21 lists, parsed: sorted identifiers and uint8 rolls [L, 88]."""

    ids: tuple[str, ...]
    rolls: tuple[np.ndarray, ...]
    music21_version: str
    source: str  # "parsed" or "cache"


_MEMO: dict[Path, Corpus] = {}


@dataclass
class ChoralesTaskConfig(TaskConfig):
    """Bach chorales (music21): next-frame piano-roll prediction on a fixed 60/20/20 split.
    `seq_len` caps the steps per chorale; train_size caps train (the default means all);
    val_size, test_size and data_seed are ignored. See grubench/tasks/chorales.py."""

    name: str = "chorales"
    seq_len: int = 128


def spec(cfg) -> TaskSpec:
    return TaskSpec("real", N_PITCHES, "binary", N_PITCHES)


# ---------------------------------------------------------------------------------------------
# Parsing and the cache


def identifiers() -> list[str]:
    """The sorted distinct chorale identifiers music21 lists (BWV numbering), e.g. bach/bwv269."""
    m21_chorales = import_package(TASK, "music21.corpus.chorales")
    it = m21_chorales.Iterator(numberingSystem="bwv", returnType="filename")
    return sorted(set(it))


def roll_of(score) -> np.ndarray:
    """The quarter-note piano roll [L, 88] (uint8 0/1) of a music21 score, all parts merged."""
    flat = score.flatten()
    length = math.ceil(score.highestTime)
    roll = np.zeros((length, N_PITCHES), np.uint8)
    for n in flat.notes:
        start = flat.elementOffset(n)
        dur = n.quarterLength
        if dur <= 0:  # grace notes
            continue
        a, b = math.ceil(start), math.ceil(start + dur)
        for p in getattr(n, "pitches", ()):
            k = p.midi - LOWEST_MIDI
            if not 0 <= k < N_PITCHES:
                raise DataError(f"task={TASK} data: MIDI pitch {p.midi} outside 21..108")
            roll[a:b, k] = 1
    return roll


def parse_corpus(*, verbose: bool = True) -> Corpus:
    """Parse every listed chorale from music21's corpus (no pickles written: forceSource)."""
    music21 = import_package(TASK, "music21")
    corpus = import_package(TASK, "music21.corpus")
    ids = identifiers()
    if verbose:
        print(
            f"grubench: parsing {len(ids)} Bach chorales from music21 once (tens of seconds); "
            f"cache: {cache_path()}",
            file=sys.stderr,
            flush=True,
        )
    rolls = []
    for name in ids:
        try:
            score = corpus.parse(name, forceSource=True)
        except Exception as e:  # noqa: BLE001 - name the chorale, keep one line
            raise DataError(
                f"task={TASK} data: music21 cannot parse {name}: "
                f"{type(e).__name__}: {e}".splitlines()[0]
            ) from None
        rolls.append(roll_of(score))
    return Corpus(tuple(ids), tuple(rolls), str(music21.__version__), "parsed")


def cache_path() -> Path:
    music21 = import_package(TASK, "music21")
    return cache_dir() / f"chorales-music21-{music21.__version__}-parser{PARSER_VERSION}.npz"


def _to_arrays(c: Corpus) -> dict[str, np.ndarray]:
    return {
        "ids": np.array(c.ids, dtype=str),
        "lengths": np.array([len(r) for r in c.rolls], np.int64),
        "rolls": np.concatenate(c.rolls).astype(np.uint8),
        "music21_version": np.array(c.music21_version),
        "parser_version": np.array(PARSER_VERSION, np.int64),
    }


def _read_cache(path: Path) -> Corpus:
    with np.load(path, allow_pickle=False) as z:
        ids = tuple(str(i) for i in z["ids"])
        lengths, flat = z["lengths"], z["rolls"]
        version, parser = str(z["music21_version"]), int(z["parser_version"])
    check(parser == PARSER_VERSION, TASK, f"cache {path.name} is from parser {parser}")
    check(flat.dtype == np.uint8 and flat.ndim == 2, TASK, f"cache {path.name}: bad roll array")
    check(
        len(lengths) == len(ids) and int(lengths.sum()) == len(flat),
        TASK,
        f"cache {path.name}: lengths do not match the rolls",
    )
    rolls = tuple(np.split(flat, np.cumsum(lengths)[:-1]))
    return Corpus(ids, rolls, version, "cache")


def check_corpus(c: Corpus) -> None:
    """Every chorale's roll is [L >= 2, 88] of 0/1; identifiers sorted and distinct."""
    check(
        len(c.ids) >= MIN_CHORALES, TASK, f"{len(c.ids)} chorales, expected at least {MIN_CHORALES}"
    )
    check(len(c.rolls) == len(c.ids), TASK, "one roll per chorale")
    check(list(c.ids) == sorted(set(c.ids)), TASK, "chorale identifiers not sorted and distinct")
    for name, r in zip(c.ids, c.rolls, strict=True):
        check(
            r.ndim == 2 and r.shape[1] == N_PITCHES and r.dtype == np.uint8,
            TASK,
            f"{name}: roll of shape {r.shape} and dtype {r.dtype}, expected [L, 88] uint8",
        )
        check(len(r) >= 2, TASK, f"{name}: {len(r)} frames, need at least 2")
        check(int(r.max(initial=0)) <= 1, TASK, f"{name}: roll values outside 0/1")


def load_corpus(*, memo: bool = True, verbose: bool = True) -> Corpus:
    """The parsed corpus: from memory, else the cache, else parse it and write the cache."""
    path = cache_path()
    if memo and path in _MEMO:
        return _MEMO[path]
    c = None
    if path.exists():
        try:
            c = _read_cache(path)
            check_corpus(c)
            check(list(c.ids) == identifiers(), TASK, "cache lists other chorales than music21")
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
            warnings.warn(f"{path}: unusable cache ({e}); parsing again", stacklevel=2)
            c = None
    if c is None:
        c = parse_corpus(verbose=verbose)
        check_corpus(c)
        try:
            save_npz_atomic(path, _to_arrays(c))
        except OSError as e:
            warnings.warn(f"cannot write the chorale cache {path}: {e}", stacklevel=2)
    _MEMO[path] = c
    return c


# ---------------------------------------------------------------------------------------------
# The fixed split


def split_sizes(n: int) -> tuple[int, int, int]:
    """Train/val/test sizes of n chorales: 60/20/20 rounded half up (382 -> 229/76/77)."""
    n_train = round_half_up(TRAIN_FRACTION * n)
    n_val = round_half_up(VAL_FRACTION * n)
    return n_train, n_val, n - n_train - n_val


def distinct(c: Corpus) -> list[int]:
    """Indices of the chorales kept: the first (sorted) identifier of each distinct roll."""
    seen: set[bytes] = set()
    keep = []
    for i, r in enumerate(c.rolls):
        key = r.shape[0].to_bytes(4, "little") + np.packbits(r).tobytes()
        if key not in seen:
            seen.add(key)
            keep.append(i)
    return keep


def split_ids(c: Corpus) -> dict[str, list[str]]:
    """The fixed split: identifiers of train (in training order), val and test."""
    keep = distinct(c)
    order = np.random.default_rng(SPLIT_SEED).permutation(len(keep))
    ids = [c.ids[keep[i]] for i in order]
    n_train, n_val, _ = split_sizes(len(ids))
    out = {
        "train": ids[:n_train],
        "val": ids[n_train : n_train + n_val],
        "test": ids[n_train + n_val :],
    }
    sets = {k: set(v) for k, v in out.items()}
    check(
        not (
            sets["train"] & sets["val"]
            or sets["train"] & sets["test"]
            or sets["val"] & sets["test"]
        ),
        TASK,
        "a chorale is in two splits",
    )
    return out


def sequences(rolls: list[np.ndarray], length: int) -> Split:
    """Next-frame pairs padded to `length`: x = frames 0..L-2, y = frames 1..L-1 (cut to
    `length` steps), masks 1 on the unpadded steps."""
    n = len(rolls)
    x = np.zeros((n, length, N_PITCHES), np.float32)
    y = np.zeros((n, length, N_PITCHES), np.float32)
    mask = np.zeros((n, length), np.float32)
    for i, r in enumerate(rolls):
        k = min(len(r) - 1, length)
        x[i, :k] = r[:k]
        y[i, :k] = r[1 : k + 1]
        mask[i, :k] = 1.0
    return Split(x, y, mask, mask.copy())


def full_splits(cfg) -> Splits:
    """The three fixed splits, train not yet capped by task.train_size, checked."""
    c = load_corpus()
    by_id = dict(zip(c.ids, c.rolls, strict=True))
    parts = split_ids(c)
    longest = max(len(by_id[i]) for ids in parts.values() for i in ids)
    length = min(int(cfg.seq_len), longest - 1)
    splits = Splits(**{k: sequences([by_id[i] for i in ids], length) for k, ids in parts.items()})
    sizes = split_sizes(sum(len(v) for v in parts.values()))
    for name, n in zip(("train", "val", "test"), sizes, strict=True):
        s = getattr(splits, name)
        check_split(TASK, s, n=n, name=name)
        check(
            s.x.shape[2] == N_PITCHES and s.y.shape[2] == N_PITCHES,
            TASK,
            f"{name}: {s.x.shape[2]} pitch dimensions, expected {N_PITCHES}",
        )
        check(
            bool(np.isin(s.x, (0.0, 1.0)).all() and np.isin(s.y, (0.0, 1.0)).all()),
            TASK,
            f"{name}: roll values outside 0/1",
        )
    return splits


def load_splits(cfg) -> Splits:
    s = full_splits(cfg)
    return Splits(train=cap_train(s.train, cfg.train_size), val=s.val, test=s.test)


def pitch_frequencies(split: Split) -> np.ndarray:
    """Per-pitch probability of a target frame bit being on (add-1/2 smoothed), [88]."""
    on = (split.y * split.loss_mask[..., None]).sum((0, 1), dtype=np.float64)
    return (on + 0.5) / (split.loss_mask.sum(dtype=np.float64) + 1.0)


def bernoulli_nll(split: Split, p: np.ndarray) -> float:
    """Mean over unpadded steps of the summed per-pitch Bernoulli NLL (nats) of probs p."""
    y = split.y.astype(np.float64)
    nll = -(y * np.log(p) + (1.0 - y) * np.log1p(-p)).sum(-1)
    return float((nll * split.loss_mask).sum() / split.loss_mask.sum())


# No NLL level is reached by every model, so time to target is to within 1% of a member's own
# best validation NLL: time to converge (grubench.targets).
NLL_TARGET = Target("val/loss", 0.01, relative=True)


def baseline(cfg) -> float:
    """Test NLL of independent per-pitch Bernoulli frequencies from the train split."""
    s = full_splits(cfg)
    return bernoulli_nll(s.test, pitch_frequencies(s.train))


register_task(
    TaskEntry(
        "chorales",
        "Bach chorales (music21): next-frame piano-roll NLL, as Chung et al. 2014",
        ChoralesTaskConfig,
        spec,
        load_splits,
        baseline,
        None,
        requires=("music21", "music21"),
        target=NLL_TARGET,
    )
)
