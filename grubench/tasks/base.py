"""What every task provides: a spec, finite deterministic splits, and one shared loss.

`DataError` (data that failed a check on load) is re-exported from grubench.errors."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np

from grubench.errors import DataError

__all__ = [
    "DataError",
    "Split",
    "Splits",
    "TaskSpec",
    "batch_sums",
    "mean_loss",
    "split_rng",
    "synthetic_splits",
]

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class TaskSpec:
    """Input and output of a task: tokens (vocabulary size) or reals (width); outputs are
    classes (logits), reals, or binary (one logit per independent bit, e.g. a piano roll)."""

    input: Literal["tokens", "real"]
    input_size: int
    output: Literal["classes", "real", "binary"]
    output_size: int
    tolerance: float = 0.0  # real outputs: |error| < tolerance counts as correct
    # loss * loss_scale is the loss in the data's original units (e.g. the train variance for a
    # series standardised with the train mean and std); 1.0 where the loss is already there.
    loss_scale: float = 1.0
    # Tasks with a lag between what is seen and when it must be recalled: the distinct lags
    # (steps), ascending; each example's `Split.lag` indexes into them.
    lags: tuple[int, ...] = ()
    # "step": accuracy is the fraction of scored steps right; "sequence": the fraction of
    # examples with every scored step right (e.g. a string accepted, Weiss et al. 2018).
    accuracy: Literal["step", "sequence"] = "step"
    # The loss restated beside the nats (language modelling): "bpc" adds SPLIT_bpc =
    # loss / ln 2 (bits per character at the character level), "perplexity" adds
    # SPLIT_perplexity = exp(loss).
    also: tuple[Literal["bpc", "perplexity"], ...] = ()


@dataclass(frozen=True)
class Split:
    """N examples of length T. x: int [N, T] or float [N, T, D]; y: int [N, T] or float
    [N, T, O]; loss_mask and metric_mask: float [N, T], which steps the loss and the accuracy
    score (the loss may score steps that accuracy ignores, e.g. the blanks of copy memory);
    lag: int [N], the index into `TaskSpec.lags` of each example's recall lag, for tasks that
    have lags."""

    x: np.ndarray
    y: np.ndarray
    loss_mask: np.ndarray
    metric_mask: np.ndarray
    lag: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def take(self, n: int) -> Split:
        return Split(
            self.x[:n],
            self.y[:n],
            self.loss_mask[:n],
            self.metric_mask[:n],
            None if self.lag is None else self.lag[:n],
        )

    def arrays(self) -> dict[str, np.ndarray]:
        out = {
            "x": self.x,
            "y": self.y,
            "loss_mask": self.loss_mask,
            "metric_mask": self.metric_mask,
        }
        if self.lag is not None:
            out["lag"] = self.lag
        return out


@dataclass(frozen=True)
class Splits:
    train: Split
    val: Split
    test: Split


def split_rng(data_seed: int, split: str) -> np.random.Generator:
    """Each split has its own stream, so val and test do not change with train_size."""
    return np.random.default_rng([data_seed, SPLITS.index(split)])


def synthetic_splits(generate: Callable[..., Split]) -> Callable[[Any], Splits]:
    """The splits function of a generated task: train, val and test drawn by
    `generate(cfg, n, rng)` from `cfg.data_seed`, each from its own stream (`split_rng`), of
    train_size, val_size and test_size examples. A `generate` that takes `split` is told which
    split it draws (e.g. a test split unlike train and val)."""
    by_split = "split" in inspect.signature(generate).parameters

    def splits(cfg: Any) -> Splits:
        def draw(split: str, n: int) -> Split:
            kw = {"split": split} if by_split else {}
            return generate(cfg, n, split_rng(cfg.data_seed, split), **kw)

        return Splits(
            train=draw("train", cfg.train_size),
            val=draw("val", cfg.val_size),
            test=draw("test", cfg.test_size),
        )

    return splits


def batch_sums(outputs: jax.Array, batch: dict[str, jax.Array], spec: TaskSpec) -> dict:
    """Sums over a batch: loss_sum / loss_weight is the loss, correct / count the accuracy.

    Classes: the loss is cross-entropy (nats) and correct is argmax == target.
    Reals: the loss is squared error summed over output dims, correct is max |error| < tol.
    Binary: the loss is sigmoid cross-entropy (Bernoulli NLL, nats) summed over the output dims
    of a step, so loss_sum / loss_weight is the per-step NLL (Chung et al. 2014, Table 2);
    correct means every bit is right at probability threshold 0.5 (exact-frame accuracy).
    spec.accuracy == "sequence": correct and count are per example, not per step: an example
    with a scored step counts once, and is correct when every scored step is.
    """
    lm, mm = batch["loss_mask"], batch["metric_mask"]
    if spec.output == "classes":
        logp = jax.nn.log_softmax(outputs.astype(jnp.float32), axis=-1)
        y = batch["y"]
        loss = -jnp.take_along_axis(logp, y[..., None], axis=-1)[..., 0]
        correct = (jnp.argmax(logp, axis=-1) == y).astype(jnp.float32)
    elif spec.output == "binary":
        z = outputs.astype(jnp.float32)
        y = batch["y"].astype(jnp.float32)
        # -[y log sigmoid(z) + (1 - y) log sigmoid(-z)], in the overflow-free form.
        nll = jnp.maximum(z, 0.0) - z * y + jnp.log1p(jnp.exp(-jnp.abs(z)))
        loss = jnp.sum(nll, axis=-1)
        correct = jnp.all((z > 0.0) == (y > 0.5), axis=-1).astype(jnp.float32)
    else:
        err = outputs.astype(jnp.float32) - batch["y"]
        loss = jnp.sum(err**2, axis=-1)
        correct = (jnp.max(jnp.abs(err), axis=-1) < spec.tolerance).astype(jnp.float32)
    if spec.accuracy == "sequence":  # one count per example with a scored step
        scored = jnp.any(mm > 0, axis=1)
        wrong = jnp.sum((1.0 - correct) * mm, axis=1)
        ex_correct = (scored & (wrong == 0)).astype(jnp.float32)  # [B]
        ex_count = scored.astype(jnp.float32)
    else:
        ex_correct, ex_count = correct * mm, mm
    sums = {
        "loss_sum": jnp.sum(loss * lm),
        "loss_weight": jnp.sum(lm),
        "correct": jnp.sum(ex_correct),
        "count": jnp.sum(ex_count),
    }
    if spec.lags and "lag" in batch:  # accuracy per recall lag: lag_correct / lag_count
        by_lag = jax.nn.one_hot(batch["lag"], len(spec.lags), dtype=jnp.float32)  # [B, n_lags]
        if spec.accuracy == "sequence":
            sums["lag_correct"] = ex_correct @ by_lag
            sums["lag_count"] = ex_count @ by_lag
        else:
            sums["lag_correct"] = jnp.sum(ex_correct, axis=1) @ by_lag
            sums["lag_count"] = jnp.sum(ex_count, axis=1) @ by_lag
    return sums


def mean_loss(outputs: jax.Array, batch: dict[str, jax.Array], spec: TaskSpec) -> jax.Array:
    s = batch_sums(outputs, batch, spec)
    return s["loss_sum"] / jnp.maximum(s["loss_weight"], 1.0)
