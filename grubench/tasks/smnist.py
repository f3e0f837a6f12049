"""Sequential and permuted MNIST from the user's `mnist.npz`: classify an image read a few
pixels a step.

Data. An .npz in the common `mnist.npz` layout: `x_train` [60000, 28, 28] (or [N, 784]) and
`x_test` of pixel values, uint8 0..255 (or floats in [0, 1]); `y_train` and `y_test` [N] of
labels 0..9. Any number of images is accepted (the tests write small files); the standard
file has 60000 and 10000.

Split. Validation is carved from train with a fixed seed: `numpy.random.default_rng(VAL_SEED)
.permutation` of the train images, the first `task.val_size` (default 5000) for validation,
the rest for training in that order (`task.train_size` caps it to its first train_size);
test is the file's test set, whole (`task.test_size` is ignored).

Sequence. The 784 pixels in row-major order (or, with `task.permute=true`, in the fixed order
`numpy.random.default_rng(task.data_seed).permutation(784)`), `task.pixels_per_step` at a step
(1: T = 784, sequential MNIST; 28: T = 28, one row a step); `task.seq_len` is
784 / pixels_per_step, set from it (a value given must match it, or give `task.seq_len` alone
and `pixels_per_step` follows). Inputs are pixel / 255 (x [N, T, pixels_per_step]); the target, the
label, is scored at the last step only (cross-entropy, accuracy). Baseline: the train split's
class frequencies (add-one smoothed) scored on test, about ln 10.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from grubench.config import require
from grubench.registry import TaskEntry, register_task
from grubench.tasks.base import Split, Splits, TaskSpec
from grubench.tasks.data import prior_nll
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

TASK = "smnist"
SIDE, N_PIXELS, N_CLASSES = 28, 784, 10
VAL_SEED = 1998  # LeCun et al. 1998
KEYS = ("x_train", "y_train", "x_test", "y_test")


@dataclass
class SMnistTaskConfig(FileTaskConfig):
    """Sequential (or permuted) MNIST from `path` (mnist.npz): `pixels_per_step` pixels a step,
    seq_len = 784 / pixels_per_step; val_size images carved from train with a fixed seed.
    See grubench/tasks/smnist.py and docs/data.md."""

    name: str = "smnist"
    permute: bool = False
    pixels_per_step: int = 1
    seq_len: int = N_PIXELS
    train_size: int = 1_000_000
    val_size: int = 5000


def spec(cfg: Any) -> TaskSpec:
    """pixels_per_step reals in, one of ten classes out (at the last step)."""
    return TaskSpec("real", pixels_per_step(cfg), "classes", N_CLASSES)


_MEMO: dict[tuple, dict[str, np.ndarray]] = {}


def load(cfg: Any) -> dict[str, np.ndarray]:
    """The file's four arrays, checked (memory-mapped where the file stores them uncompressed):
    images as [N, 784], labels as [N]."""
    path = user_path(TASK, cfg.path)
    key = stamp([path])
    if key in _MEMO:
        return _MEMO[key]
    z = read_npz(TASK, path)
    missing = [k for k in KEYS if k not in z]
    need(
        not missing,
        TASK,
        path,
        f"no {', '.join(missing)} (it has {', '.join(sorted(z))}); "
        "expected the mnist.npz layout x_train, y_train, x_test, y_test",
    )
    out = {}
    for split in ("train", "test"):
        x, y = z[f"x_{split}"], z[f"y_{split}"]
        need(
            x.ndim in (2, 3) and x.shape[1:] in ((SIDE, SIDE), (N_PIXELS,)),
            TASK,
            path,
            f"x_{split} of shape {list(x.shape)}, expected [N, 28, 28] or [N, 784]",
        )
        need(len(x) > 0, TASK, path, f"x_{split} holds no images")
        need(
            y.shape == (len(x),),
            TASK,
            path,
            f"y_{split} of shape {list(y.shape)}, expected [{len(x)}] (one label per image)",
        )
        need(
            np.issubdtype(y.dtype, np.integer),
            TASK,
            path,
            f"y_{split} of dtype {y.dtype}, expected integers",
        )
        check_range(TASK, path, f"y_{split} holds label", y, N_CLASSES)
        x = x.reshape(len(x), N_PIXELS)
        if np.issubdtype(x.dtype, np.integer):
            need(
                bool(x.min() >= 0 and x.max() <= 255),
                TASK,
                path,
                f"x_{split}: pixel values outside 0..255",
            )
        else:
            need(bool(np.isfinite(x).all()), TASK, path, f"x_{split} holds NaN or infinite values")
            need(
                bool(x.min() >= 0 and x.max() <= 1),
                TASK,
                path,
                f"x_{split}: float pixels outside [0, 1] (give uint8 0..255 or floats in [0, 1])",
            )
        out[f"x_{split}"], out[f"y_{split}"] = x, y
    announce(
        TASK,
        f"{path}: {len(out['y_train'])} train images (validation is carved from them), "
        f"{len(out['y_test'])} test images; pixels {z['x_train'].dtype}",
    )
    _MEMO[key] = out
    return out


def _split(pixels: np.ndarray, labels: np.ndarray, order: np.ndarray | None, cfg: Any) -> Split:
    n, k = len(labels), pixels_per_step(cfg)
    x = pixels.astype(np.float32)
    if pixels.dtype.kind in "iu":
        x /= 255.0
    if order is not None:
        x = x[:, order]
    T = N_PIXELS // k
    y = np.zeros((n, T), np.int32)
    y[:, -1] = labels
    mask = np.zeros((n, T), np.float32)
    mask[:, -1] = 1.0
    return Split(x.reshape(n, T, k), y, mask, mask.copy())


def val_indices(n_train: int, val_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) indices of the file's train images: the fixed carve."""
    perm = np.random.default_rng(VAL_SEED).permutation(n_train)
    return perm[val_size:], perm[:val_size]


def load_splits(cfg: Any) -> Splits:
    """Train (capped at task.train_size), the validation carve, and test."""
    a = load(cfg)
    order = np.random.default_rng(int(cfg.data_seed)).permutation(N_PIXELS) if cfg.permute else None
    train, val = val_indices(len(a["y_train"]), int(cfg.val_size))
    train = train[: int(cfg.train_size)]  # the cap: the first train_size of the fixed order
    return Splits(
        train=_split(a["x_train"][train], a["y_train"][train], order, cfg),
        val=_split(a["x_train"][val], a["y_train"][val], order, cfg),
        test=_split(a["x_test"], a["y_test"], order, cfg),
    )


def baseline(cfg: Any) -> float:
    """Test NLL of the train split's class frequencies (add-one smoothed)."""
    a = load(cfg)
    train, _ = val_indices(len(a["y_train"]), int(cfg.val_size))
    return prior_nll(a["y_train"][train], a["y_test"], N_CLASSES)


def pixels_per_step(cfg: Any) -> int:
    """`task.pixels_per_step`, or 784 / `task.seq_len` when only the length was given."""
    k, T = int(cfg.pixels_per_step), int(cfg.seq_len)
    return N_PIXELS // T if k == 1 and T != N_PIXELS and T >= 1 and N_PIXELS % T == 0 else k


def validate(cfg: Any) -> None:
    """pixels_per_step divides 784, seq_len agrees, val_size leaves train images;
    the file loads (DataError otherwise) and matches task.sha256 where set."""
    k = int(cfg.pixels_per_step)
    require(
        k >= 1 and N_PIXELS % k == 0,
        "task.pixels_per_step",
        k,
        "a divisor of 784 (1: a pixel a step; 28: a row a step)",
    )
    k = pixels_per_step(cfg)
    require(
        int(cfg.seq_len) in (N_PIXELS, N_PIXELS // k),
        "task.seq_len",
        cfg.seq_len,
        f"784 / task.pixels_per_step = {N_PIXELS // k}, or a divisor of 784 given alone "
        "(it sets pixels_per_step), or unset",
    )
    n = len(load(cfg)["y_train"])
    require(
        int(cfg.val_size) < n,
        "task.val_size",
        cfg.val_size,
        f"less than the {n} train images of {cfg.path}, which validation is carved from",
    )
    pinned(cfg, [user_path(TASK, cfg.path)])


def complete(cfg: Any) -> dict[str, Any]:
    """The length and pixels a step the run uses."""
    k = pixels_per_step(cfg)
    return {
        "pixels_per_step": k,
        "seq_len": N_PIXELS // k,
        "sha256": pinned(cfg, [user_path(TASK, cfg.path)]),
    }


register_task(
    TaskEntry(
        TASK,
        "sequential / permuted MNIST from your mnist.npz, a pixel (or a row) a step",
        SMnistTaskConfig,
        spec,
        load_splits,
        baseline,
        validate,
        complete=complete,
    )
)
