"""Tasks: the structure of each example, split determinism, baselines, the shared loss."""

import math

import jax.numpy as jnp
import numpy as np
import pytest
from omegaconf import OmegaConf

from grubench import tasks
from grubench.config import Config, ConfigError, ModelConfig, validate
from grubench.tasks import counting
from grubench.tasks.adding import AddingTaskConfig
from grubench.tasks.copy_memory import CopyTaskConfig
from grubench.tasks.counting import CountingTaskConfig
from grubench.tasks.delay import DelayTaskConfig
from grubench.tasks.recall import RecallTaskConfig
from helpers import tiny_cfg


def cfg_of(schema, **kw):
    return OmegaConf.structured(schema(train_size=64, val_size=32, test_size=32, **kw))


def test_copy_layout():
    cfg = cfg_of(CopyTaskConfig, seq_len=6)
    s = tasks.make_splits(cfg).train
    T, K, S = 6, 10, 8
    assert s.x.shape == s.y.shape == (64, T + 2 * K)
    symbols = s.x[:, :K]
    assert symbols.min() >= 1 and symbols.max() <= S
    np.testing.assert_array_equal(s.x[:, T + K - 1], S + 1)  # delimiter
    np.testing.assert_array_equal(s.x[:, K : T + K - 1], 0)
    np.testing.assert_array_equal(s.x[:, T + K :], 0)
    np.testing.assert_array_equal(s.y[:, T + K :], symbols)  # recall after the delimiter
    np.testing.assert_array_equal(s.y[:, : T + K], 0)
    assert s.metric_mask[:, T + K :].all() and not s.metric_mask[:, : T + K].any()
    assert tasks.baseline(cfg) == pytest.approx(K * math.log(S) / (T + 2 * K))


def test_copy_baseline_is_the_memoryless_loss():
    """Blank with certainty, then uniform over the S symbols: exactly the stated baseline."""
    cfg = cfg_of(CopyTaskConfig, seq_len=5)
    s = tasks.make_splits(cfg).val
    spec = tasks.spec(cfg)
    logits = np.full(s.y.shape + (spec.output_size,), -1e9, np.float32)
    logits[:, :, 0] = 0.0  # blank everywhere ...
    logits[:, 5 + 10 :, 0] = -1e9
    logits[:, 5 + 10 :, 1:] = 0.0  # ... but uniform over symbols where recall happens
    loss = tasks.mean_loss(
        jnp.asarray(logits), {k: jnp.asarray(v) for k, v in s.arrays().items()}, spec
    )
    assert float(loss) == pytest.approx(tasks.baseline(cfg), rel=1e-5)


def test_adding_layout():
    cfg = cfg_of(AddingTaskConfig, seq_len=10)
    s = tasks.make_splits(cfg).train
    assert s.x.shape == (64, 10, 2) and s.y.shape == (64, 10, 1)
    markers = s.x[..., 1]
    np.testing.assert_array_equal(markers[:, :5].sum(1), 1)
    np.testing.assert_array_equal(markers[:, 5:].sum(1), 1)
    np.testing.assert_allclose(s.y[:, -1, 0], (s.x[..., 0] * markers).sum(1), rtol=1e-6)
    assert s.loss_mask[:, -1].all() and s.loss_mask[:, :-1].sum() == 0
    # Predicting the mean sum, 1, scores close to the 1/6 baseline.
    assert np.mean((s.y[:, -1, 0] - 1.0) ** 2) == pytest.approx(1 / 6, abs=0.06)


def test_recall_layout():
    cfg = cfg_of(RecallTaskConfig, seq_len=12, n_keys=8, n_values=5)
    s = tasks.make_splits(cfg).train
    P = 5
    keys, values = s.x[:, 0 : 2 * P : 2], s.x[:, 1 : 2 * P : 2] - 8
    assert all(len(set(row)) == P for row in keys)  # distinct keys per example
    assert keys.max() < 8 and values.min() >= 0 and values.max() < 5
    np.testing.assert_array_equal(s.x[:, -2], 8 + 5)  # query marker
    pos = np.argmax(keys == s.x[:, -1:], axis=1)
    np.testing.assert_array_equal(s.y[:, -1], values[np.arange(64), pos])


@pytest.mark.parametrize(
    "schema",
    [CopyTaskConfig, AddingTaskConfig, RecallTaskConfig, DelayTaskConfig, CountingTaskConfig],
)
def test_splits_are_deterministic_and_distinct(schema):
    a = tasks.make_splits(cfg_of(schema))
    b = tasks.make_splits(cfg_of(schema))
    for name in ("train", "val", "test"):
        np.testing.assert_array_equal(getattr(a, name).x, getattr(b, name).x)
    assert not np.array_equal(a.val.x, a.test.x)
    other = tasks.make_splits(cfg_of(schema, data_seed=99))
    assert not np.array_equal(a.train.x, other.train.x)


def test_val_and_test_do_not_depend_on_train_size():
    small = tasks.make_splits(cfg_of(CopyTaskConfig))
    big = tasks.make_splits(
        OmegaConf.structured(CopyTaskConfig(train_size=500, val_size=32, test_size=32))
    )
    assert len(big.train) == 500 and len(small.train) == 64
    np.testing.assert_array_equal(small.val.x, big.val.x)
    np.testing.assert_array_equal(small.test.x, big.test.x)


def test_batch_sums_classes_and_reals():
    spec = tasks.TaskSpec("tokens", 4, "classes", 3)
    logits = jnp.log(jnp.array([[[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]]]))
    batch = {
        "y": jnp.array([[0, 1]]),
        "loss_mask": jnp.array([[1.0, 1.0]]),
        "metric_mask": jnp.array([[0.0, 1.0]]),
    }
    s = tasks.batch_sums(logits, batch, spec)
    assert float(s["loss_sum"]) == pytest.approx(-math.log(0.7) - math.log(0.1), rel=1e-5)
    assert float(s["correct"]) == 0.0 and float(s["count"]) == 1.0  # argmax 2 != 1
    rspec = tasks.TaskSpec("real", 2, "real", 1, tolerance=0.1)
    out = jnp.array([[[0.0], [1.05]]])
    rb = {
        "y": jnp.array([[[9.0], [1.0]]]),
        "loss_mask": jnp.array([[0.0, 1.0]]),
        "metric_mask": jnp.array([[0.0, 1.0]]),
    }
    r = tasks.batch_sums(out, rb, rspec)
    assert float(r["loss_sum"]) == pytest.approx(0.05**2, rel=1e-4)
    assert float(r["correct"]) == 1.0


def test_batch_sums_binary_matches_numpy():
    """Binary outputs: Bernoulli NLL summed over the bits of a step; correct = every bit right."""
    spec = tasks.TaskSpec("real", 5, "binary", 5)
    assert spec.loss_scale == 1.0
    rng = np.random.default_rng(0)
    z = rng.normal(0, 4, (3, 7, 5)).astype(np.float32)
    z[0, 0] = [80.0, -80.0, 30.0, -30.0, 0.5]  # large logits stay finite
    y = (rng.random((3, 7, 5)) < 0.4).astype(np.float32)
    y[0, 0] = [1, 0, 1, 0, 1]
    y[1, 2] = (z[1, 2] > 0).astype(np.float32)  # one step with every bit right
    lm = (rng.random((3, 7)) < 0.8).astype(np.float32)
    mm = (rng.random((3, 7)) < 0.6).astype(np.float32)
    mm[0, 0] = mm[1, 2] = 1.0
    s = tasks.batch_sums(
        jnp.asarray(z),
        {"y": jnp.asarray(y), "loss_mask": jnp.asarray(lm), "metric_mask": jnp.asarray(mm)},
        spec,
    )
    zd = z.astype(np.float64)
    nll = (np.logaddexp(0.0, -zd) * y + np.logaddexp(0.0, zd) * (1 - y)).sum(-1)
    assert np.isfinite(float(s["loss_sum"]))
    assert float(s["loss_sum"]) == pytest.approx((nll * lm).sum(), rel=1e-5)
    assert float(s["loss_weight"]) == lm.sum() and float(s["count"]) == mm.sum()
    exact = ((z > 0) == (y > 0.5)).all(-1)
    assert exact[0, 0] and exact[1, 2]
    assert float(s["correct"]) == (exact * mm).sum()
    # A perfectly confident, correct model: loss ~0 and accuracy 1.
    sure = jnp.asarray(np.where(y > 0.5, 50.0, -50.0).astype(np.float32))
    ones = jnp.ones((3, 7))
    p = tasks.batch_sums(sure, {"y": jnp.asarray(y), "loss_mask": ones, "metric_mask": ones}, spec)
    assert float(p["loss_sum"]) < 1e-12
    assert float(p["correct"]) == 21.0
    # The per-step NLL of p = 1/2 for every bit is 5 ln 2.
    half = tasks.mean_loss(
        jnp.zeros((3, 7, 5)), {"y": jnp.asarray(y), "loss_mask": ones, "metric_mask": ones}, spec
    )
    assert float(half) == pytest.approx(5 * math.log(2), rel=1e-6)


def test_recall_lags_are_the_distance_from_value_to_answer():
    cfg = cfg_of(RecallTaskConfig, seq_len=12, n_keys=8, n_values=5)
    s = tasks.make_splits(cfg).train
    spec = tasks.spec(cfg)
    assert spec.lags == (2, 4, 6, 8, 10)
    keys = s.x[:, 0:10:2]
    q = np.argmax(keys == s.x[:, -1:], axis=1)
    value_pos = 2 * q + 1
    np.testing.assert_array_equal(np.asarray(spec.lags)[s.lag], 11 - value_pos)
    assert set(s.lag) == set(range(5))  # every lag occurs in 64 examples


def test_batch_sums_counts_accuracy_per_lag():
    spec = tasks.TaskSpec("tokens", 4, "classes", 3, lags=(2, 4))
    logits = jnp.log(jnp.array([[[0.1, 0.8, 0.1]], [[0.8, 0.1, 0.1]], [[0.1, 0.1, 0.8]]]))
    batch = {
        "y": jnp.array([[1], [1], [2]]),
        "loss_mask": jnp.ones((3, 1)),
        "metric_mask": jnp.ones((3, 1)),
        "lag": jnp.array([0, 0, 1]),
    }
    s = tasks.batch_sums(logits, batch, spec)
    np.testing.assert_allclose(s["lag_correct"], [1.0, 1.0])  # lag 2: one of two right
    np.testing.assert_allclose(s["lag_count"], [2.0, 1.0])


def test_delay_layout():
    cfg = cfg_of(DelayTaskConfig, seq_len=12, lag=4, n_symbols=5)
    spec = tasks.spec(cfg)
    assert (spec.input_size, spec.output_size, spec.lags, spec.accuracy) == (5, 5, (4,), "step")
    for s in tasks.make_splits(cfg).__dict__.values():
        assert s.x.shape == s.y.shape == (len(s), 12)
        assert s.x.min() == 0 and s.x.max() == 4
        np.testing.assert_array_equal(s.y[:, 4:], s.x[:, :-4])  # the symbol 4 steps back
        np.testing.assert_array_equal(s.y[:, :4], 0)
        for mask in (s.loss_mask, s.metric_mask):
            assert mask[:, 4:].all() and not mask[:, :4].any()
        np.testing.assert_array_equal(s.lag, 0)
    assert tasks.baseline(cfg) == pytest.approx(math.log(5))


def expected_string(n, k, length):
    """S a^n b^n [c^n] and pads; the targets a^n b^n [c^n] E; the determined steps."""
    x = [1] + [2] * n + [3] * n + [4] * n * (k == 3)
    y = x[1:] + [5]
    scored = [1] + [0] * n + [1] * (k - 1) * n
    pad = [0] * (length - len(x))
    return x + pad, y + pad, [1] * len(x) + pad, scored + pad


@pytest.mark.parametrize("language,k", [("anbn", 2), ("anbncn", 3)])
@pytest.mark.parametrize("test_max_n", [0, 9])
def test_counting_layout(language, k, test_max_n):
    cfg = cfg_of(CountingTaskConfig, language=language, seq_len=4, test_max_n=test_max_n)
    top = test_max_n or 8
    spec = tasks.spec(cfg)
    assert spec.lags == tuple(range(1, top + 1)) and spec.accuracy == "sequence"
    splits = tasks.make_splits(cfg)
    for name, (lo, hi) in [("train", (1, 4)), ("val", (1, 4)), ("test", (5, top))]:
        s = getattr(splits, name)
        assert s.x.shape == (len(s), k * top + 1)  # one length across the splits
        ns = s.lag + 1
        assert ns.min() == lo and ns.max() == hi, name  # test n all beyond train n
        for i, n in enumerate(ns):
            x, y, lm, mm = expected_string(int(n), k, k * top + 1)
            np.testing.assert_array_equal(s.x[i], x)
            np.testing.assert_array_equal(s.y[i], y)
            np.testing.assert_array_equal(s.loss_mask[i], lm)
            np.testing.assert_array_equal(s.metric_mask[i], mm)


def test_sequence_accuracy_counts_an_example_right_only_when_every_scored_step_is():
    cfg = cfg_of(CountingTaskConfig, seq_len=3)  # lags 1..6
    s = counting.strings(cfg, np.array([1, 2, 3, 2]))
    logits = np.where(np.arange(6) == s.y[..., None], 5.0, 0.0).astype(np.float32)
    logits[1, 4, 2] = 9.0  # n=2: a wrong guess on a b-step (a, not b): the string fails
    logits[2, 2, :] = [0, 0, 0, 9, 0, 0]  # n=3: wrong on an a-step, which is not scored
    batch = s.arrays()
    batch["metric_mask"][3] = batch["loss_mask"][3] = 0.0  # a padding row counts nowhere
    seq = tasks.batch_sums(jnp.asarray(logits), batch, tasks.spec(cfg))
    assert (float(seq["correct"]), float(seq["count"])) == (2.0, 3.0)
    np.testing.assert_allclose(seq["lag_correct"], [1, 0, 1, 0, 0, 0])
    np.testing.assert_allclose(seq["lag_count"], [1, 1, 1, 0, 0, 0])
    # The same sums per step, as every other task has them.
    step = tasks.batch_sums(
        jnp.asarray(logits),
        batch,
        tasks.TaskSpec("tokens", 6, "classes", 6, lags=tasks.spec(cfg).lags),
    )
    mm = batch["metric_mask"]
    assert (float(step["correct"]), float(step["count"])) == (mm.sum() - 1, mm.sum())
    np.testing.assert_allclose(step["lag_correct"], [2, 2, 4, 0, 0, 0])  # S and the b-steps
    np.testing.assert_allclose(step["lag_count"], [2, 3, 4, 0, 0, 0])
    for k in ("loss_sum", "loss_weight"):
        assert float(seq[k]) == float(step[k])


@pytest.mark.parametrize("language,k", [("anbn", 2), ("anbncn", 3)])
@pytest.mark.parametrize("seq_len", [1, 5])
def test_counting_baseline_is_the_loss_of_the_current_symbol_predictor(language, k, seq_len):
    """One string per n in 1..seq_len (the train distribution, exactly), scored by the best
    predictor that sees only the current symbol: P(run ends) = P(a -> b) = 1 / E[n]."""
    cfg = cfg_of(CountingTaskConfig, language=language, seq_len=seq_len)
    s = counting.strings(cfg, np.arange(1, seq_len + 1))
    nxt = np.zeros((6, 6))  # P(next | current), counted from the strings
    real = s.loss_mask > 0
    np.add.at(nxt, (s.x[real], s.y[real]), 1.0)
    nxt /= np.maximum(nxt.sum(1, keepdims=True), 1.0)
    m = (seq_len + 1) / 2
    assert nxt[2, 3] == pytest.approx(1 / m) and nxt[1, 2] == 1.0
    logits = np.log(np.maximum(nxt, 1e-30))[s.x].astype(np.float32)
    loss = tasks.mean_loss(jnp.asarray(logits), s.arrays(), tasks.spec(cfg))
    assert float(loss) == pytest.approx(tasks.baseline(cfg), rel=1e-5, abs=1e-6)
    # A model that counts does better: only the a-run, ln(seq_len) nats a string, is a guess.
    assert math.log(seq_len) / (1 + k * m) <= tasks.baseline(cfg)


@pytest.mark.parametrize(
    "task,message",
    [
        (DelayTaskConfig(lag=0), "task.lag=0 is not allowed: an integer >= 1"),
        (
            DelayTaskConfig(seq_len=40, lag=40),
            "task.seq_len=40 is not allowed: an integer > task.lag=40 for delay",
        ),
        (DelayTaskConfig(n_symbols=1), "task.n_symbols=1 is not allowed: an integer >= 2"),
        (CountingTaskConfig(language="anbm"), "task.language=anbm is not allowed: anbn or anbncn"),
        (CountingTaskConfig(seq_len=0), "task.seq_len=0 is not allowed: an integer >= 1"),
        (
            CountingTaskConfig(seq_len=20, test_max_n=20),
            "task.test_max_n=20 is not allowed: 0 (2 * seq_len) or an integer > task.seq_len=20",
        ),
    ],
    ids=["lag", "seq_len_le_lag", "n_symbols", "language", "seq_len", "test_max_n"],
)
def test_bad_delay_and_counting_values_are_one_line(task, message):
    with pytest.raises(ConfigError) as e:
        validate(Config(model=ModelConfig(), task=task))
    assert str(e.value).startswith(message) and "\n" not in str(e.value)


def test_delay_and_counting_compose_from_conf():
    validate(tiny_cfg("task=counting", "task.language=anbncn"))
    validate(tiny_cfg("task=delay", "task.lag=2"))
    with pytest.raises(ConfigError, match=r"^task.seq_len=40 is not allowed: an integer > task"):
        validate(tiny_cfg("task=delay", "task.lag=50", "task.seq_len=40"))
