"""Real-data tasks on the data their packages ship: chorales (music21), sunspots (statsmodels),
digits (scikit-learn). Shapes, ranges, fixed split sizes, determinism, the chorale cache,
train_size capping, the permuted digits, the binary loss, and the missing-package line.

Each family skips when its package is absent. The chorale corpus is parsed once per session,
into a temporary cache directory (XDG_CACHE_HOME), then read back from there.
"""

import math
import sys
import time

import jax.numpy as jnp
import numpy as np
import pytest
from omegaconf import OmegaConf

from grubench import tasks
from grubench.config import Config, ConfigError, ModelConfig, validate
from grubench.registry import TASKS
from grubench.tasks import DataError, chorales, data, digits, sunspots
from grubench.tasks.chorales import ChoralesTaskConfig
from grubench.tasks.copy_memory import CopyTaskConfig
from grubench.tasks.data import check_requires
from grubench.tasks.digits import DigitsTaskConfig
from grubench.tasks.sunspots import SunspotsTaskConfig


def cfg_of(schema, **kw):
    return OmegaConf.structured(schema(**kw))


def config(task):
    """The whole config of the default model on `task` (a task config dataclass)."""
    return Config(model=ModelConfig(), task=task)


def jbatch(split, n=None):
    s = split if n is None else split.take(n)
    return {k: jnp.asarray(v) for k, v in s.arrays().items()}


# ---------------------------------------------------------------------------------------------
# Missing packages: one line naming the extra, at validation time and on load


@pytest.mark.parametrize(
    "schema,module,pip",
    [
        (ChoralesTaskConfig, "music21", "music21"),
        (SunspotsTaskConfig, "statsmodels", "statsmodels"),
        (DigitsTaskConfig, "sklearn", "scikit-learn"),
    ],
)
def test_missing_package_is_one_config_line(monkeypatch, schema, module, pip):
    monkeypatch.setitem(sys.modules, module, None)  # what an absent package looks like
    name = schema().name
    want = f"task={name} needs {pip}: pip install -e '.[data]'"
    assert TASKS.get(name).requires == (module, pip) and not data.available(name)
    with pytest.raises(ConfigError) as e:
        check_requires(TASKS.get(name))
    assert str(e.value) == want
    with pytest.raises(ConfigError) as e:
        validate(config(schema()))
    assert str(e.value) == want
    with pytest.raises(ConfigError) as e:
        data.import_package(name, f"{module}.anything")
    assert str(e.value) == want
    validate(config(CopyTaskConfig()))  # synthetic tasks need nothing
    assert data.available("copy")


def test_missing_music21_on_load(monkeypatch):
    monkeypatch.setitem(sys.modules, "music21", None)
    with pytest.raises(ConfigError, match=r"^task=chorales needs music21: pip install"):
        tasks.make_splits(cfg_of(ChoralesTaskConfig))


def test_validation_lines():
    with pytest.raises(ConfigError, match=r"^task.seq_len=32 is not allowed: 64 for digits"):
        validate(config(DigitsTaskConfig(seq_len=32)))
    with pytest.raises(ConfigError, match=r"^task.seq_len=101 is not allowed: an integer in"):
        validate(config(SunspotsTaskConfig(seq_len=101)))
    with pytest.raises(ConfigError, match=r"^task.tolerance=0 is not allowed"):
        validate(config(SunspotsTaskConfig(tolerance=0.0)))


def test_hydra_composes_the_real_task_configs():
    from hydra import compose, initialize_config_dir

    from grubench.cli import CONF_DIR
    from grubench.config import store

    store()  # the task group comes from the registry, not from yaml files
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        for name, seq_len in (("chorales", 128), ("sunspots", 20), ("digits", 64)):
            cfg = compose(config_name="config", overrides=[f"task={name}"])
            assert cfg.task.name == name and cfg.task.seq_len == seq_len
            if data.available(name):
                validate(cfg)
        assert cfg.task.permute is False


def test_check_split_and_atomic_cache_write(tmp_path):
    s = tasks.Split(
        np.zeros((2, 3, 1), np.float32),
        np.zeros((2, 3), np.int32),
        np.ones((2, 3), np.float32),
        np.ones((2, 3), np.float32),
    )
    data.check_split("digits", s, n=2, name="train")
    with pytest.raises(
        DataError,
        match=r"^task=digits data: the val split has 2 examples, "
        r"expected 3$",
    ):
        data.check_split("digits", s, n=3, name="val")
    path = tmp_path / "sub" / "a.npz"
    data.save_npz_atomic(path, {"a": np.arange(3)})
    data.save_npz_atomic(path, {"a": np.arange(4)})
    assert [p.name for p in path.parent.iterdir()] == ["a.npz"]  # no temporary left behind
    with np.load(path) as z:
        np.testing.assert_array_equal(z["a"], np.arange(4))


def test_cache_dir_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert data.cache_dir() == tmp_path / "grubench"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert data.cache_dir().parts[-2:] == (".cache", "grubench")


# ---------------------------------------------------------------------------------------------
# Chorales


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    """The corpus, parsed once into a fresh cache directory: (corpus, parse seconds)."""
    pytest.importorskip("music21")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg_cache")))
        t = time.perf_counter()
        c = chorales.load_corpus(verbose=False)
        yield c, time.perf_counter() - t


@pytest.fixture
def chorale_corpus(corpus):
    return corpus[0]


@pytest.mark.slow
def test_chorales_cache_round_trips_exactly(chorale_corpus):
    c = chorale_corpus
    assert c.source == "parsed"
    assert chorales.cache_path().is_file()
    assert chorales.load_corpus() is c  # in-process memo
    again = chorales.load_corpus(memo=False)  # from the cache file
    assert again.source == "cache" and again.ids == c.ids
    assert again.music21_version == c.music21_version
    for a, b in zip(c.rolls, again.rolls, strict=True):
        assert a.dtype == b.dtype == np.uint8
        np.testing.assert_array_equal(a, b)
    assert chorales.split_ids(again) == chorales.split_ids(c)


@pytest.mark.slow
def test_chorales_bad_cache_is_a_clear_error(chorale_corpus, tmp_path):
    arrays = chorales._to_arrays(chorale_corpus)
    arrays["rolls"] = arrays["rolls"].copy()
    arrays["rolls"][0, 0] = 2
    path = tmp_path / "bad.npz"
    data.save_npz_atomic(path, arrays)
    with pytest.raises(DataError, match=r"^task=chorales data: bach/\S+: roll values outside"):
        chorales.check_corpus(chorales._read_cache(path))


@pytest.mark.slow
def test_chorales_split_is_fixed_and_disjoint(chorale_corpus):
    c = chorale_corpus
    assert chorales.split_sizes(382) == (229, 76, 77)  # JSB Chorales
    parts = chorales.split_ids(c)
    kept = [c.ids[i] for i in chorales.distinct(c)]
    n = len(kept)
    assert n >= chorales.MIN_CHORALES
    assert tuple(len(parts[k]) for k in ("train", "val", "test")) == chorales.split_sizes(n)
    assert sorted(parts["train"] + parts["val"] + parts["test"]) == kept
    sets = [set(v) for v in parts.values()]
    assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])
    by_id = dict(zip(c.ids, c.rolls, strict=True))
    contents = {k: {by_id[i].tobytes() for i in v} for k, v in parts.items()}
    assert not (
        contents["train"] & contents["val"]
        or contents["train"] & contents["test"]
        or contents["val"] & contents["test"]
    )  # no roll in two splits either
    assert chorales.split_ids(c) == parts  # the same every time


@pytest.mark.slow
def test_chorales_sequences(chorale_corpus):
    c = chorale_corpus
    cfg = cfg_of(ChoralesTaskConfig)
    s = tasks.make_splits(cfg)
    by_id = dict(zip(c.ids, c.rolls, strict=True))
    parts = chorales.split_ids(c)
    longest = max(len(r) for r in c.rolls)
    T = min(128, longest - 1)
    for name in ("train", "val", "test"):
        sp = getattr(s, name)
        n = len(parts[name])
        assert sp.x.shape == sp.y.shape == (n, T, 88) and sp.loss_mask.shape == (n, T)
        assert sp.x.dtype == sp.y.dtype == np.float32
        assert set(np.unique(sp.x)) <= {0.0, 1.0} and set(np.unique(sp.y)) <= {0.0, 1.0}
        np.testing.assert_array_equal(sp.loss_mask, sp.metric_mask)
        steps = np.array([min(len(by_id[i]) - 1, T) for i in parts[name]])
        np.testing.assert_array_equal(sp.loss_mask.sum(1), steps)
        np.testing.assert_array_equal(sp.loss_mask, np.arange(T) < steps[:, None])  # a prefix
        pad = sp.loss_mask == 0
        assert not sp.x[pad].any() and not sp.y[pad].any()
        both = sp.loss_mask[:, 1:] > 0  # the target of step k is the input of step k + 1
        np.testing.assert_array_equal(sp.y[:, :-1][both], sp.x[:, 1:][both])
        for j in (0, n - 1):
            r = by_id[parts[name][j]]
            np.testing.assert_array_equal(sp.x[j, : steps[j]], r[: steps[j]])
            np.testing.assert_array_equal(sp.y[j, : steps[j]], r[1 : steps[j] + 1])
    # seq_len caps the length; longer chorales are cut, shorter ones stay whole.
    short = tasks.make_splits(cfg_of(ChoralesTaskConfig, seq_len=16))
    assert short.test.x.shape[1] == 16
    np.testing.assert_array_equal(short.test.x, s.test.x[:, :16])
    np.testing.assert_array_equal(short.test.loss_mask, s.test.loss_mask[:, :16])
    # Deterministic.
    again = tasks.make_splits(cfg)
    for name in ("train", "val", "test"):
        for k, v in getattr(s, name).arrays().items():
            np.testing.assert_array_equal(v, getattr(again, name).arrays()[k])


@pytest.mark.slow
def test_chorales_train_size_caps(chorale_corpus):
    full = tasks.make_splits(cfg_of(ChoralesTaskConfig))
    small = tasks.make_splits(cfg_of(ChoralesTaskConfig, train_size=10))
    assert len(small.train) == 10
    np.testing.assert_array_equal(small.train.x, full.train.x[:10])
    np.testing.assert_array_equal(small.test.x, full.test.x)
    np.testing.assert_array_equal(small.val.y, full.val.y)
    assert len(tasks.make_splits(cfg_of(ChoralesTaskConfig, train_size=10**6)).train) == len(
        full.train
    )


@pytest.mark.slow
def test_chorales_roll_matches_chordify(chorale_corpus):
    """The roll of one chorale against an independent reading: music21's chordify."""
    from music21 import corpus as m21corpus

    name = "bach/bwv269"
    score = m21corpus.parse(name, forceSource=True)
    roll = chorales.roll_of(score)
    np.testing.assert_array_equal(
        roll, dict(zip(chorale_corpus.ids, chorale_corpus.rolls, strict=True))[name]
    )
    ref = np.zeros_like(roll)
    chords = score.chordify().flatten().getElementsByClass("Chord")
    for ch in chords:
        a, b = math.ceil(ch.offset), math.ceil(ch.offset + ch.quarterLength)
        for p in ch.pitches:
            ref[a:b, p.midi - 21] = 1
    np.testing.assert_array_equal(roll, ref)
    assert 3 <= np.median(roll.sum(1)) <= 5  # four voices, mostly


@pytest.mark.slow
def test_chorales_binary_loss_and_baseline(chorale_corpus):
    cfg = cfg_of(ChoralesTaskConfig)
    s = tasks.make_splits(cfg)
    spec = tasks.spec(cfg)
    assert spec.output == "binary" and spec.output_size == 88 and spec.input_size == 88
    # batch_sums against NumPy on real rolls and random logits.
    rng = np.random.default_rng(0)
    b = s.train.take(16)
    z = rng.normal(0, 3, b.y.shape).astype(np.float32)
    got = tasks.batch_sums(jnp.asarray(z), jbatch(b), spec)
    p = 1 / (1 + np.exp(-z.astype(np.float64)))
    nll = -(b.y * np.log(p) + (1 - b.y) * np.log(1 - p)).sum(-1)
    assert float(got["loss_sum"]) == pytest.approx((nll * b.loss_mask).sum(), rel=1e-4)
    assert float(got["loss_weight"]) == b.loss_mask.sum()
    exact = ((z > 0) == (b.y > 0.5)).all(-1)
    assert float(got["correct"]) == (exact * b.metric_mask).sum()
    # The baseline: frequencies from train, scored on test, equals the loss of that model.
    freq = chorales.pitch_frequencies(s.train)
    base = tasks.baseline(cfg)
    assert base == pytest.approx(chorales.bernoulli_nll(s.test, freq), rel=1e-9)
    on = (s.train.y * s.train.loss_mask[..., None]).sum((0, 1))
    np.testing.assert_allclose(freq, (on + 0.5) / (s.train.loss_mask.sum() + 1))
    logits = np.broadcast_to(np.log(freq / (1 - freq)), s.test.y.shape).astype(np.float32)
    loss = tasks.mean_loss(jnp.asarray(logits), jbatch(s.test), spec)
    assert float(loss) == pytest.approx(base, rel=1e-4)
    assert 5.0 < base < 20.0


# ---------------------------------------------------------------------------------------------
# Sunspots


@pytest.fixture(scope="module")
def series():
    pytest.importorskip("statsmodels")
    return sunspots.load_series()


def test_sunspots_split_and_windows(series):
    years, values = series
    assert len(years) == len(values) >= 300 and years[0] == 1700
    n = len(values)
    val_start, test_start = sunspots.boundaries(n)
    assert (val_start, test_start - val_start, n - test_start) == (216, 46, 47)  # n = 309
    mean, std = values[:val_start].mean(), values[:val_start].std()
    for L in (20, 5):
        cfg = cfg_of(SunspotsTaskConfig, seq_len=L)
        s = tasks.make_splits(cfg)
        assert (len(s.train), len(s.val), len(s.test)) == (val_start - L, 46, 47)
        for sp, first in ((s.train, L), (s.val, val_start), (s.test, test_start)):
            assert sp.x.shape == sp.y.shape == (len(sp), L, 1)
            assert sp.loss_mask[:, -1].all() and not sp.loss_mask[:, :-1].any()
            np.testing.assert_array_equal(sp.loss_mask, sp.metric_mask)
            # targets: the split's own years, each once, in order; inputs: the L years before
            target = sp.y[:, -1, 0] * std + mean
            np.testing.assert_allclose(target, values[first : first + len(sp)], atol=1e-3)
            np.testing.assert_allclose(
                sp.x[0, :, 0] * std + mean, values[first - L : first], atol=1e-3
            )
            np.testing.assert_array_equal(sp.y[:, :-1], sp.x[:, 1:])  # next year at every step
        spec = tasks.spec(cfg)
        assert spec.loss_scale == pytest.approx(std**2)
        assert spec.input == spec.output == "real" and spec.tolerance == 0.25
    train = tasks.make_splits(cfg_of(SunspotsTaskConfig, seq_len=1)).train
    z = np.concatenate([train.x[:, 0, 0], train.y[-1:, 0, 0]])  # the 216 train years
    assert len(z) == val_start
    assert abs(float(z.mean())) < 1e-5 and float(z.std()) == pytest.approx(1.0, rel=1e-5)


def test_sunspots_deterministic_and_capped(series):
    a = tasks.make_splits(cfg_of(SunspotsTaskConfig))
    b = tasks.make_splits(cfg_of(SunspotsTaskConfig, data_seed=7, val_size=3))  # ignored
    for name in ("train", "val", "test"):
        np.testing.assert_array_equal(getattr(a, name).x, getattr(b, name).x)
    c = tasks.make_splits(cfg_of(SunspotsTaskConfig, train_size=50))
    assert len(c.train) == 50
    np.testing.assert_array_equal(c.train.y, a.train.y[:50])  # the earliest 50
    np.testing.assert_array_equal(c.test.y, a.test.y)


def test_sunspots_persistence_baseline(series):
    years, values = series
    cfg = cfg_of(SunspotsTaskConfig)
    _, test_start = sunspots.boundaries(len(values))
    raw = np.mean((values[test_start - 1 : -1] - values[test_start:]) ** 2)
    base = tasks.baseline(cfg)
    assert base * tasks.spec(cfg).loss_scale == pytest.approx(raw, rel=1e-5)  # original units
    s = tasks.make_splits(cfg)
    out = jnp.asarray(s.test.x[:, :, :])  # each step predicts its own input: persistence
    assert float(tasks.mean_loss(out, jbatch(s.test), tasks.spec(cfg))) == pytest.approx(
        base, rel=1e-5
    )


# ---------------------------------------------------------------------------------------------
# Digits


@pytest.fixture(scope="module")
def images():
    pytest.importorskip("sklearn")
    return digits.load_images()


def test_digits_layout_and_split(images):
    pixels, labels = images
    cfg = cfg_of(DigitsTaskConfig)
    s = tasks.make_splits(cfg)
    idx = digits.split_indices()
    assert (len(s.train), len(s.val), len(s.test)) == (1197, 300, 300)
    assert sorted(np.concatenate(list(idx.values()))) == list(range(1797))  # disjoint, all
    for name in ("train", "val", "test"):
        sp = getattr(s, name)
        assert sp.x.shape == (len(sp), 64, 1) and sp.y.shape == (len(sp), 64)
        assert sp.x.min() >= 0 and sp.x.max() <= 1 and sp.x.max() == 1
        np.testing.assert_array_equal(sp.x[..., 0] * 16, pixels[idx[name]])
        np.testing.assert_array_equal(sp.y[:, -1], labels[idx[name]])
        assert not sp.y[:, :-1].any()
        assert sp.loss_mask[:, -1].all() and not sp.loss_mask[:, :-1].any()
        np.testing.assert_array_equal(sp.loss_mask, sp.metric_mask)
        counts = np.bincount(sp.y[:, -1], minlength=10)  # stratified
        assert np.abs(counts - len(sp) * np.bincount(labels) / 1797).max() < 2
    tr = s.train.y[:, -1]  # every prefix of train is stratified too (for train_size sweeps)
    prop = np.bincount(labels) / 1797
    assert (
        max(np.abs(np.bincount(tr[:m], minlength=10) - m * prop).max() for m in range(1, 1198)) < 2
    )
    spec = tasks.spec(cfg)
    assert (spec.input, spec.input_size, spec.output, spec.output_size) == (
        "real",
        1,
        "classes",
        10,
    )
    assert tasks.baseline(cfg) == pytest.approx(math.log(10))


def test_digits_deterministic_capped_and_permuted(images):
    plain = tasks.make_splits(cfg_of(DigitsTaskConfig))
    again = tasks.make_splits(cfg_of(DigitsTaskConfig, data_seed=99))  # no effect unpermuted
    np.testing.assert_array_equal(plain.train.x, again.train.x)
    small = tasks.make_splits(cfg_of(DigitsTaskConfig, train_size=100))
    assert len(small.train) == 100
    np.testing.assert_array_equal(small.train.x, plain.train.x[:100])
    np.testing.assert_array_equal(small.test.x, plain.test.x)

    perm = digits.permutation(1234)
    assert sorted(perm) == list(range(64)) and (perm != np.arange(64)).any()
    p1 = tasks.make_splits(cfg_of(DigitsTaskConfig, permute=True))
    p2 = tasks.make_splits(cfg_of(DigitsTaskConfig, permute=True))
    for name in ("train", "val", "test"):
        a, b = getattr(plain, name), getattr(p1, name)
        np.testing.assert_array_equal(b.x, a.x[:, perm])  # one fixed pixel order for all
        np.testing.assert_array_equal(b.y, a.y)
        np.testing.assert_array_equal(b.x, getattr(p2, name).x)
    other = tasks.make_splits(cfg_of(DigitsTaskConfig, permute=True, data_seed=7))
    np.testing.assert_array_equal(other.test.x, plain.test.x[:, digits.permutation(7)])
    assert not np.array_equal(other.test.x, p1.test.x)
