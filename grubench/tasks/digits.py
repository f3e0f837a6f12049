"""Digits: the 8x8 handwritten digits scikit-learn ships, read one pixel a step.

Data. `sklearn.datasets.load_digits()`: 1797 images of 8x8 pixels with values 0..16, ten
classes (174..183 images each), nothing downloaded. Each image is a sequence of 64 steps in
row-major order, x [N, 64, 1] = pixel / 16 in [0, 1]; the label (0..9) is the target at the
last step, which alone the loss and the accuracy score. `task.permute=true` applies one fixed
pixel permutation, `numpy.random.default_rng(task.data_seed).permutation(64)`, to every image
(the permuted-pixel variant); `task.seq_len` must be 64.

Split, fixed and stratified. Within each class the images are shuffled with
`numpy.random.default_rng(SPLIT_SEED)` (SPLIT_SEED = 0) and the image of rank r among n_c gets
the key (r + 0.5) / n_c (ties broken by a random draw of the same generator); sorting all images
by key interleaves the classes so that every prefix holds each class in proportion (to within
one image). The first 300 are test, the next 300 validation, the remaining 1197 train, in that
order: `task.train_size` caps train to its first train_size images, itself stratified (to
within two images; larger values mean all 1197), which suits train_size sweeps. `task.val_size` and
`task.test_size` are ignored.

Baseline: ln 10, the cross-entropy of a uniform guess over the ten (nearly balanced) classes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from grubench.config import TaskConfig, require
from grubench.registry import TaskEntry, register_task
from grubench.tasks.base import Split, Splits, TaskSpec
from grubench.tasks.data import cap_train, check, check_split, import_package

TASK = "digits"
SPLIT_SEED = 0
N_IMAGES, N_PIXELS, N_CLASSES = 1797, 64, 10
N_TEST, N_VAL = 300, 300
N_TRAIN = N_IMAGES - N_TEST - N_VAL  # 1197


@dataclass
class DigitsTaskConfig(TaskConfig):
    """8x8 digits (scikit-learn) as 64-step pixel sequences on a fixed stratified 1197/300/300
    split; train_size caps train (the default means all); val_size and test_size are ignored;
    data_seed draws the pixel permutation of permute=true. See grubench/tasks/digits.py."""

    name: str = "digits"
    seq_len: int = 64
    permute: bool = False


def spec(cfg) -> TaskSpec:
    return TaskSpec("real", 1, "classes", N_CLASSES)


@lru_cache(maxsize=1)
def load_images() -> tuple[np.ndarray, np.ndarray]:
    """(pixels uint8 [1797, 64] in 0..16, labels int32 [1797]) as shipped, checked."""
    datasets = import_package(TASK, "sklearn.datasets")
    bunch = datasets.load_digits()
    data, target = np.asarray(bunch.data), np.asarray(bunch.target)
    check(
        data.shape == (N_IMAGES, N_PIXELS),
        TASK,
        f"images of shape {data.shape}, expected {(N_IMAGES, N_PIXELS)}",
    )
    check(target.shape == (N_IMAGES,), TASK, f"labels of shape {target.shape}")
    check(
        bool((data == np.round(data)).all() and data.min() >= 0 and data.max() <= 16),
        TASK,
        "pixel values outside the integers 0..16",
    )
    check(bool(np.isin(target, np.arange(N_CLASSES)).all()), TASK, "labels outside 0..9")
    check(
        bool((np.bincount(target, minlength=N_CLASSES) >= 100).all()),
        TASK,
        "a class with fewer than 100 images",
    )
    pixels, labels = data.astype(np.uint8), target.astype(np.int32)
    pixels.flags.writeable = labels.flags.writeable = False
    return pixels, labels


def split_order(labels: np.ndarray) -> np.ndarray:
    """The stratified interleave of all image indices (see the module docstring)."""
    rng = np.random.default_rng(SPLIT_SEED)
    key = np.empty(len(labels))
    for c in range(N_CLASSES):
        members = np.flatnonzero(labels == c)
        ranks = np.empty(len(members))
        ranks[rng.permutation(len(members))] = np.arange(len(members))
        key[members] = (ranks + 0.5) / len(members)
    return np.lexsort((rng.random(len(labels)), key))


def split_indices() -> dict[str, np.ndarray]:
    """Image indices of the fixed split: test, val, then train (in training order)."""
    _, labels = load_images()
    order = split_order(labels)
    out = {
        "test": order[:N_TEST],
        "val": order[N_TEST : N_TEST + N_VAL],
        "train": order[N_TEST + N_VAL :],
    }
    check(len(np.unique(order)) == N_IMAGES, TASK, "an image is in two splits")
    return out


def permutation(data_seed: int) -> np.ndarray:
    """The fixed pixel order of task.permute=true: position k shows pixel perm[k]."""
    return np.random.default_rng(data_seed).permutation(N_PIXELS)


def _split(pixels: np.ndarray, labels: np.ndarray) -> Split:
    n = len(labels)
    x = (pixels.astype(np.float32) / 16.0)[..., None]
    y = np.zeros((n, N_PIXELS), np.int32)
    y[:, -1] = labels
    mask = np.zeros((n, N_PIXELS), np.float32)
    mask[:, -1] = 1.0
    return Split(x, y, mask, mask.copy())


def full_splits(cfg) -> Splits:
    """The three fixed splits, train not yet capped by task.train_size, checked."""
    check(int(cfg.seq_len) == N_PIXELS, TASK, f"seq_len {cfg.seq_len}, must be {N_PIXELS}")
    pixels, labels = load_images()
    if cfg.permute:
        pixels = pixels[:, permutation(int(cfg.data_seed))]
    idx = split_indices()
    splits = Splits(**{k: _split(pixels[v], labels[v]) for k, v in idx.items()})
    for name, n in (("train", N_TRAIN), ("val", N_VAL), ("test", N_TEST)):
        s = getattr(splits, name)
        check_split(TASK, s, n=n, name=name)
        check(s.x.shape[1:] == (N_PIXELS, 1), TASK, f"{name}: x of shape {s.x.shape}")
        check(bool(s.x.min() >= 0.0 and s.x.max() <= 1.0), TASK, f"{name}: pixels outside [0, 1]")
    return splits


def load_splits(cfg) -> Splits:
    s = full_splits(cfg)
    return Splits(train=cap_train(s.train, cfg.train_size), val=s.val, test=s.test)


def baseline(cfg) -> float:
    """ln 10: cross-entropy of a uniform guess over the ten classes."""
    return math.log(N_CLASSES)


def validate(cfg) -> None:
    """Raise ConfigError (one line) for a bad task.* value."""
    require(cfg.seq_len == 64, "task.seq_len", cfg.seq_len, "64 for digits (8x8 pixels)")


register_task(
    TaskEntry(
        "digits",
        "8x8 digits (scikit-learn) read one pixel a step",
        DigitsTaskConfig,
        spec,
        load_splits,
        baseline,
        validate,
        requires=("sklearn", "scikit-learn"),
    )
)
