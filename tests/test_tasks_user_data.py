"""Tasks on the user's own files (polyphonic, text, smnist, arrays), from small files of the real
formats written here: what each reads, its splits and masks, its losses and baselines against
a hand computation, the cache and memory mapping, the restricted unpickler, bad files, and one
end-to-end run of each.
"""

import hashlib
import json
import math
import pickle
import zipfile

import jax.numpy as jnp
import numpy as np
import pytest
from omegaconf import OmegaConf

from grubench import loop, tasks
from grubench.cli import check_overrides
from grubench.errors import ConfigError, DataError, GrubenchError
from grubench.runs import load_paper, paper_value
from grubench.tasks import arrays, files, polyphonic, smnist, text
from helpers import TINY, tiny_cfg


def task_cfg(schema, **kw):
    return OmegaConf.structured(schema(**kw))


def jbatch(split):
    return {k: jnp.asarray(v) for k, v in split.arrays().items()}


# ---------------------------------------------------------------------------------------------
# Polyphonic music

# Frames as the distributed pickles hold them: tuples of pitch numbers, an empty one a rest.
MUSIC = {
    "train": [[(60,), (60, 64), ()], [(72, 76), (72,), (72,), (21, 108)]],
    "valid": [[(62,), (62, 65)]],
    "test": [[(60,), (60,)]],
}


def write_pickle_py2_style(path, data):
    """Protocol 2 with numpy integers and sets: what Python 2 wrote (fix_imports maps names)."""
    as_np = {k: [[set(np.int64(p) for p in f) for f in s] for s in v] for k, v in data.items()}
    path.write_bytes(pickle.dumps(as_np, protocol=2, fix_imports=True))
    return path


@pytest.fixture
def music_files(tmp_path):
    pkl = write_pickle_py2_style(tmp_path / "JSB Chorales.pickle", MUSIC)
    js = tmp_path / "music.json"
    js.write_text(json.dumps(MUSIC))
    return pkl, js


def test_polyphonic_rolls_from_a_pickle_and_from_json_agree_with_the_frames(music_files):
    pkl, js = music_files
    a = polyphonic.load_rolls(task_cfg(polyphonic.PolyphonicTaskConfig, path=str(pkl)))
    b = polyphonic.load_rolls(task_cfg(polyphonic.PolyphonicTaskConfig, path=str(js)))
    for split, key in (("train", "train"), ("val", "valid"), ("test", "test")):
        assert len(a[split]) == len(MUSIC[key])
        for ra, rb, seq in zip(a[split], b[split], MUSIC[key], strict=True):
            np.testing.assert_array_equal(ra, rb)
            want = np.zeros((len(seq), 88), np.uint8)
            for t, frame in enumerate(seq):
                want[t, [p - 21 for p in frame]] = 1
            np.testing.assert_array_equal(ra, want)


def test_polyphonic_splits_baseline_and_loss_by_hand(music_files):
    pkl, _ = music_files
    cfg = task_cfg(polyphonic.PolyphonicTaskConfig, path=str(pkl))
    s = tasks.make_splits(OmegaConf.merge(cfg, {}))
    # The longest sequence has 4 frames: 3 next-frame steps for every split, padding masked.
    assert s.train.x.shape == (2, 3, 88) and s.test.x.shape == (1, 3, 88)
    np.testing.assert_array_equal(s.train.loss_mask, [[1, 1, 0], [1, 1, 1]])
    np.testing.assert_array_equal(s.test.loss_mask, [[1, 0, 0]])
    # Baseline: train target frames {60,64}, {}, {72}, {72}, {21,108}: 5 frames, add-1/2.
    p = np.full(88, 0.5 / 6)
    for pitch, on in ((60, 1), (64, 1), (72, 2), (21, 1), (108, 1)):
        p[pitch - 21] = (on + 0.5) / 6
    # Test: one target frame, {60}.
    y = np.zeros(88)
    y[60 - 21] = 1
    want = -np.sum(y * np.log(p) + (1 - y) * np.log(1 - p))
    assert tasks.baseline(cfg) == pytest.approx(want, rel=1e-12)
    # The loss the trainer minimises: zero logits score ln 2 per pitch, 88 ln 2 per frame.
    spec = tasks.spec(cfg)
    zero = jnp.zeros(s.train.y.shape)
    loss = tasks.mean_loss(zero, jbatch(s.train), spec)
    assert float(loss) == pytest.approx(88 * math.log(2), rel=1e-6)
    # And logits equal to log-odds of p give the baseline's per-frame NLL on the test frame.
    logits = jnp.broadcast_to(jnp.log(p / (1 - p)), s.test.y.shape)
    assert float(tasks.mean_loss(logits, jbatch(s.test), spec)) == pytest.approx(want, rel=1e-5)


def test_polyphonic_dataset_is_read_off_the_file_name_and_meets_the_paper(music_files):
    names = {
        "JSB Chorales.pickle": "jsb",
        "Nottingham.pickle": "nottingham",
        "MuseData.pickle": "musedata",
        "Piano-midi.de.pickle": "pianomidi",
        "my_songs.json": "my_songs",
        "My Songs (2024).pickle": "my_songs_2024_",
    }
    for name, want in names.items():
        assert polyphonic.dataset_name(OmegaConf.create({"path": name, "dataset": None})) == want
    cfg = OmegaConf.create({"path": "x.pickle", "dataset": "jsb"})
    assert polyphonic.dataset_name(cfg) == "jsb"
    paper = load_paper("chung2014")
    got = {
        ds: paper_value(paper, "polyphonic", "gru", "test_loss", 159, ds)["value"]
        for ds in ("jsb", "nottingham", "musedata", "pianomidi")
    }
    assert got["jsb"] == 8.54 and len(set(got.values())) == 4
    assert paper_value(paper, "polyphonic", "gru", "test_loss", 159, "my_songs") is None
    # The run's config records the data set and the padded length (what reports group by).
    pkl, _ = music_files
    done = tasks.complete(
        OmegaConf.create(
            {"task": {"name": "polyphonic", "path": str(pkl), "dataset": None, "seq_len": 100_000}}
        )
    )
    assert done.task.dataset == "jsb" and done.task.seq_len == 3


def test_the_chung2014_preset_runs_on_a_polyphonic_file(music_files, tmp_path):
    pkl, _ = music_files
    from grubench.cli import compose

    cfg = compose("+experiment=chung2014", "+chung2014=gru", "task=polyphonic", f"task.path={pkl}")
    assert cfg.task.name == "polyphonic" and cfg.model.hidden == 46
    assert cfg.trainer.optimizer == "rmsprop" and cfg.model.embed_dim == 0


def test_a_pickle_that_would_run_code_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            import os

            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pickle"
    path.write_bytes(pickle.dumps({"train": [Evil()]}))
    cfg = task_cfg(polyphonic.PolyphonicTaskConfig, path=str(path))
    with pytest.raises(DataError, match=r"refused pickle: it would build posix.system"):
        polyphonic.validate(cfg)
    assert not marker.exists()


OK = [[(60,), (61,)]]

# A numpy dtype built from a pickle's own state: numpy would accept a void dtype holding an
# object field and read a pointer out of the file's bytes (a crash, or worse).
CRAFTED_DTYPE = b"cnumpy\ndtype\n(S'V8'\nI00\nI01\ntR(I3\nS'|'\nNNNI-1\nI-1\nI0\ntb."
DTYPE_WITH_FIELDS = b"cnumpy\ndtype\n(S'i8'\nI00\nI01\ntR(I3\nS'<'\nI1\nNNI-1\nI-1\nI0\ntb."


# BUILD on a function the loader exposes would set its defaults for the rest of the process.
LOADER_CHANGED = b"c_codecs\nencode\n}S'__defaults__'\n(S'utf8'\ntsb."


def repeated_by_reference():
    seq = [(60,), (61,)] * 1000
    return {"train": [seq] * 1000, "valid": OK, "test": OK}  # 2 million frames, ~10 kB


@pytest.mark.parametrize(
    "data,fragment",
    [
        ("not a pickle", "not a readable pickle"),
        ({"train": [], "valid": [], "test": []}, "the 'train' split is empty"),
        ({"train": OK, "test": OK}, "no 'valid' split"),
        ({"train": [[(60,)]], "valid": OK, "test": OK}, "has 1 frame(s)"),
        ({"train": [[(20,), (61,)]], "valid": OK, "test": OK}, "MIDI pitch 20 outside 21..108"),
        ({"train": [[(60.5,), (61,)]], "valid": OK, "test": OK}, "pitch 60.5 is not an integer"),
        ({"train": [[(10**400,), (61,)]], "valid": OK, "test": OK}, "an integer beyond +-2**31"),
        ({"train": [[[[60, 61]], (61,)]], "valid": OK, "test": OK}, "[60, 61] is not a MIDI"),
        ({"train": [[(True,), (61,)]], "valid": OK, "test": OK}, "True is not a MIDI pitch"),
        ({"train": [[{60: 1}, (61,)]], "valid": OK, "test": OK}, "frame 0: a dict, not a"),
        ([1, 2], "holds a list, expected a dict"),
        (b"PK\x03\x04 an npz", "a zip archive (.npz?), not a pickle or a JSON file"),
        (CRAFTED_DTYPE, "refused pickle: a numpy dtype 'V8'; only bool, integer and float"),
        (DTYPE_WITH_FIELDS, "refused pickle: a numpy dtype with fields or a subarray"),
        (b'{"train": ' + b"[" * 100_000, "not valid JSON (RecursionError"),
        (repeated_by_reference(), "2000004 frames in a file of"),
        # A memo index of 2**27: the C unpickler would allocate a memo twice that size.
        (b"\x80\x04N" + b"r" + (2**27).to_bytes(4, "little") + b".", "a memo index 134217728"),
        (LOADER_CHANGED, "refused pickle: it would change a function it calls"),
        (pickle.dumps([np.longdouble(60)], protocol=2), "of up to 64 bits are read"),
    ],
    ids=range(19),
)
def test_bad_polyphonic_files_are_one_line_naming_the_file(tmp_path, data, fragment):
    path = tmp_path / "bad.pickle"
    raw = data if isinstance(data, bytes) else None
    path.write_bytes(raw or (data.encode() if isinstance(data, str) else pickle.dumps(data)))
    with pytest.raises(DataError) as e:
        polyphonic.validate(task_cfg(polyphonic.PolyphonicTaskConfig, path=str(path)))
    msg = str(e.value)
    assert fragment in msg and str(path) in msg and "\n" not in msg, msg


def test_parsed_rolls_are_cached_by_content_and_memory_mapped(music_files):
    pkl, _ = music_files
    polyphonic._MEMO.clear()
    cfg = task_cfg(polyphonic.PolyphonicTaskConfig, path=str(pkl))
    first = polyphonic.load_rolls(cfg)
    cache = sorted((files.cache_dir() / "user-data").glob("polyphonic-v1-*.npz"))
    key = files.content_hash([pkl])[:32]
    assert any(key in c.name for c in cache)
    polyphonic._MEMO.clear()
    again = polyphonic.load_rolls(cfg)
    assert isinstance(again["train"][0].base, np.memmap) or isinstance(again["train"][0], np.memmap)
    for a, b in zip(first["train"], again["train"], strict=True):
        np.testing.assert_array_equal(a, b)
    # Another content is another cache entry; the same content under a new name is not.
    copy = pkl.with_name("copy.pickle")
    copy.write_bytes(pkl.read_bytes())
    assert files.content_hash([copy]) == files.content_hash([pkl])


# ---------------------------------------------------------------------------------------------
# Text


@pytest.fixture
def ptb(tmp_path):
    d = tmp_path / "simple-examples"
    d.mkdir()
    (d / "ptb.train.txt").write_text(" the cat sat \n the dog sat \n")
    (d / "ptb.valid.txt").write_text(" the cat ran \n")
    (d / "ptb.test.txt").write_text(" a dog sat \n")
    (d / "ptb.char.train.txt").write_text(" t h e _ c a t \n")
    (d / "ptb.char.valid.txt").write_text(" t h e \n")
    (d / "ptb.char.test.txt").write_text(" c a t \n")
    return d


def test_word_level_vocabulary_unk_and_windows(ptb):
    cfg = task_cfg(text.TextTaskConfig, path=str(ptb), level="word", seq_len=3)
    a = text.load(cfg)
    vocab = list(a["vocab"])
    assert vocab == ["<unk>", "<eos>", "cat", "dog", "sat", "the"]
    ids = {w: i for i, w in enumerate(vocab)}
    train = "the cat sat <eos> the dog sat <eos>".split()
    np.testing.assert_array_equal(a["train"], [ids[w] for w in train])
    # Unseen in train: "ran" and "a" become <unk>.
    np.testing.assert_array_equal(a["val"], [ids["the"], ids["cat"], 0, ids["<eos>"]])
    np.testing.assert_array_equal(a["test"], [0, ids["dog"], ids["sat"], ids["<eos>"]])
    s = tasks.make_splits(cfg)
    # Train: 7 predictions, 2 whole windows of 3 (the partial one dropped), views of the stream.
    np.testing.assert_array_equal(s.train.x, np.reshape(a["train"][:6], (2, 3)))
    np.testing.assert_array_equal(s.train.y, np.reshape(a["train"][1:7], (2, 3)))
    # Test: 3 predictions in one window, nothing dropped.
    np.testing.assert_array_equal(s.test.y, [a["test"][1:]])
    np.testing.assert_array_equal(s.test.loss_mask, [[1, 1, 1]])


def test_char_level_takes_the_ptb_character_files(ptb):
    cfg = task_cfg(text.TextTaskConfig, path=str(ptb), level="char", seq_len=2)
    assert [p.name for p in text.files_of(cfg)] == [
        "ptb.char.train.txt",
        "ptb.char.valid.txt",
        "ptb.char.test.txt",
    ]
    a = text.load(cfg)
    assert list(a["vocab"]) == ["<unk>", "<eos>", "_", "a", "c", "e", "h", "t"]
    assert len(a["train"]) == 8  # t h e _ c a t <eos>


def test_one_file_is_split_90_5_5_in_order_with_padded_evaluation(tmp_path):
    path = tmp_path / "book.txt"
    body = "abcdefghij" * 20  # 200 characters
    path.write_text(body)
    cfg = task_cfg(text.TextTaskConfig, path=str(path), seq_len=4)
    a = text.load(cfg)
    assert (len(a["train"]), len(a["val"]), len(a["test"])) == (180, 10, 10)
    s = tasks.make_splits(cfg)
    # 9 predictions of val in windows of 4: 3 windows, the last with one scored step.
    assert s.val.x.shape == (3, 4) and s.val.loss_mask.sum() == 9
    np.testing.assert_array_equal(s.val.loss_mask[-1], [1, 0, 0, 0])


def test_text_unigram_baseline_and_loss_units_by_hand(ptb):
    cfg = task_cfg(text.TextTaskConfig, path=str(ptb), level="word", seq_len=3)
    a = text.load(cfg)
    V = len(a["vocab"])
    counts = np.bincount(a["train"][1:], minlength=V)
    p = (counts + 1) / (counts.sum() + V)
    want = -np.mean(np.log(p[a["test"][1:]]))
    assert tasks.baseline(cfg) == pytest.approx(want, rel=1e-12)
    spec = tasks.spec(cfg)
    assert spec.input_size == V and spec.output_size == V and spec.also == ("perplexity",)
    # Zero logits: ln V nats per predicted symbol, whatever the symbols.
    s = tasks.make_splits(cfg)
    zero = jnp.zeros((*s.test.y.shape, V))
    assert float(tasks.mean_loss(zero, jbatch(s.test), spec)) == pytest.approx(math.log(V), 1e-6)
    char = task_cfg(text.TextTaskConfig, path=str(ptb), level="char", seq_len=2)
    assert tasks.spec(char).also == ("bpc",)


@pytest.mark.parametrize(
    "setup,fragment",
    [
        (lambda d: d / "empty_dir", "a folder with no *.train.txt file"),
        (lambda d: d / "lonely.train.txt", "missing: lonely.train.txt needs it beside it"),
        (lambda d: d / "latin1.txt", "not UTF-8 text"),
        (lambda d: d / "tiny.txt", "symbol(s); at least 2 are needed"),
        (lambda d: d / "short.txt", "task.seq_len=100 is not allowed: at most 53: the train"),
    ],
)
def test_bad_text_files(tmp_path, setup, fragment):
    (tmp_path / "empty_dir").mkdir()
    (tmp_path / "lonely.train.txt").write_text("a b c\n")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9 au lait\n".encode("latin-1") * 10)
    (tmp_path / "tiny.txt").write_text("ab")
    (tmp_path / "short.txt").write_text("abcdef" * 10)  # 54 train symbols
    path = setup(tmp_path)
    with pytest.raises((ConfigError, DataError)) as e:
        text.validate(task_cfg(text.TextTaskConfig, path=str(path)))
    assert fragment in str(e.value) and "\n" not in str(e.value), str(e.value)


# ---------------------------------------------------------------------------------------------
# Sequential MNIST


@pytest.fixture
def mnist(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "mnist.npz"
    np.savez(
        path,
        x_train=rng.integers(0, 256, (40, 28, 28), dtype=np.uint8),
        y_train=rng.integers(0, 10, 40),
        x_test=rng.integers(0, 256, (10, 28, 28), dtype=np.uint8),
        y_test=rng.integers(0, 10, 10),
    )
    return path


def test_smnist_sequences_permutation_and_validation_carve(mnist):
    z = np.load(mnist)
    cfg = task_cfg(smnist.SMnistTaskConfig, path=str(mnist), val_size=8)
    s = tasks.make_splits(cfg)
    assert s.train.x.shape == (32, 784, 1) and s.val.x.shape == (8, 784, 1)
    train_idx, val_idx = smnist.val_indices(40, 8)
    assert not set(train_idx) & set(val_idx)
    np.testing.assert_allclose(s.val.x[0, :, 0], z["x_train"][val_idx[0]].ravel() / 255.0)
    assert s.test.y[3, -1] == z["y_test"][3] and s.test.loss_mask[3].tolist() == [0] * 783 + [1]
    rows = task_cfg(
        smnist.SMnistTaskConfig, path=str(mnist), val_size=8, pixels_per_step=28, seq_len=28
    )
    r = tasks.make_splits(rows)
    np.testing.assert_allclose(r.test.x[0], z["x_test"][0] / 255.0)  # row t at step t
    perm = task_cfg(smnist.SMnistTaskConfig, path=str(mnist), val_size=8, permute=True)
    p = tasks.make_splits(perm)
    order = np.random.default_rng(perm.data_seed).permutation(784)
    np.testing.assert_allclose(
        p.test.x[:, :, 0], s_test := tasks.make_splits(cfg).test.x[:, order, 0]
    )
    assert not np.array_equal(s_test, s.test.x[:, :, 0])
    # Baseline: the train labels' frequencies (add-one) scored on test.
    y_tr = z["y_train"][train_idx]
    q = (np.bincount(y_tr, minlength=10) + 1) / (len(y_tr) + 10)
    assert tasks.baseline(cfg) == pytest.approx(-np.mean(np.log(q[z["y_test"]])), rel=1e-12)


def test_npz_members_are_memory_mapped_unless_compressed(tmp_path):
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.savez(tmp_path / "plain.npz", a=a)
    np.savez_compressed(tmp_path / "packed.npz", a=a)
    plain = files.read_npz("arrays", tmp_path / "plain.npz")["a"]
    packed = files.read_npz("arrays", tmp_path / "packed.npz")["a"]
    assert isinstance(plain, np.memmap) and not isinstance(packed, np.memmap)
    np.testing.assert_array_equal(plain, a)
    np.testing.assert_array_equal(packed, a)
    np.savez(tmp_path / "objects.npz", a=np.array([{"x": 1}], dtype=object))
    with pytest.raises(DataError, match="array 'a' holds Python objects"):
        files.read_npz("arrays", tmp_path / "objects.npz")


@pytest.mark.parametrize(
    "arrays_,fragment",
    [
        ({"x_train": np.zeros((4, 28, 28))}, "no y_train, x_test, y_test"),
        (
            {
                "x_train": np.zeros((4, 27, 28)),
                "y_train": np.zeros(4, int),
                "x_test": np.zeros((4, 28, 28)),
                "y_test": np.zeros(4, int),
            },
            "x_train of shape [4, 27, 28], expected [N, 28, 28] or [N, 784]",
        ),
        (
            {
                "x_train": np.zeros((4, 784)),
                "y_train": np.array([0, 1, 2, 10]),
                "x_test": np.zeros((4, 784)),
                "y_test": np.zeros(4, int),
            },
            "y_train holds label 10 outside 0..9",
        ),
        (
            {
                "x_train": np.full((4, 784), np.nan),
                "y_train": np.zeros(4, int),
                "x_test": np.zeros((4, 784)),
                "y_test": np.zeros(4, int),
            },
            "x_train holds NaN or infinite values",
        ),
        (
            {
                "x_train": np.zeros((4, 784)),
                "y_train": np.zeros(3, int),
                "x_test": np.zeros((4, 784)),
                "y_test": np.zeros(4, int),
            },
            "y_train of shape [3], expected [4]",
        ),
    ],
)
def test_bad_mnist_files(tmp_path, arrays_, fragment):
    path = tmp_path / "m.npz"
    np.savez(path, **arrays_)
    with pytest.raises(DataError) as e:
        smnist.validate(task_cfg(smnist.SMnistTaskConfig, path=str(path), val_size=1))
    assert fragment in str(e.value) and str(path) in str(e.value), str(e.value)


# ---------------------------------------------------------------------------------------------
# Arrays


def arrays_cfg(path, **kw):
    return task_cfg(arrays.ArraysTaskConfig, path=str(path), **kw)


def test_arrays_infers_tokens_in_classes_out_at_the_last_step(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.integers(0, 7, (50, 6))
    y = rng.integers(0, 4, 50)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    cfg = arrays_cfg(tmp_path / "d.npz")
    spec = tasks.spec(cfg)
    assert (spec.input, spec.input_size, spec.output, spec.output_size) == (
        "tokens",
        7,
        "classes",
        4,
    )
    s = tasks.make_splits(cfg)
    assert (len(s.train), len(s.val), len(s.test)) == (40, 5, 5)
    order = np.random.default_rng(cfg.data_seed).permutation(50)
    np.testing.assert_array_equal(s.train.x, x[order[:40]])
    np.testing.assert_array_equal(s.train.y[:, -1], y[order[:40]])
    assert s.train.loss_mask.sum() == 40 and (s.train.loss_mask[:, -1] == 1).all()
    # The loss by hand: cross-entropy at the last step only.
    logits = jnp.asarray(rng.normal(size=(*s.test.y.shape, 4)), jnp.float32)
    logp = np.asarray(jax_log_softmax(logits))
    want = -np.mean([logp[i, -1, y[order[45 + i]]] for i in range(5)])
    assert float(tasks.mean_loss(logits, jbatch(s.test), spec)) == pytest.approx(want, rel=1e-5)
    assert tasks.complete(OmegaConf.create({"task": dict(cfg)})).task.seq_len == 6


def jax_log_softmax(z):
    import jax

    return jax.nn.log_softmax(z, axis=-1)


def test_arrays_mask_places_a_last_step_target_at_the_last_data_step(tmp_path):
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    mask = np.array([[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]])
    y = np.array([0.5, 1.5, 2.5], np.float32)
    np.savez(tmp_path / "d.npz", x=x, y=y, mask=mask, split=np.array([0, 1, 2]))
    cfg = arrays_cfg(tmp_path / "d.npz")
    spec = tasks.spec(cfg)
    assert (spec.input, spec.input_size, spec.output, spec.output_size) == ("real", 1, "real", 1)
    s = tasks.make_splits(cfg)
    np.testing.assert_array_equal(s.train.loss_mask, [[0, 1, 0, 0]])
    np.testing.assert_array_equal(s.test.loss_mask, [[1, 0, 0, 0]])
    assert s.train.y[0, 1, 0] == 0.5 and s.test.y[0, 0, 0] == 2.5
    # Squared error by hand on the scored step; the baseline predicts the train mean (0.5).
    out = jnp.full(s.test.y.shape, 1.0)
    assert float(tasks.mean_loss(out, jbatch(s.test), spec)) == pytest.approx((1.0 - 2.5) ** 2)
    assert tasks.baseline(cfg) == pytest.approx((2.5 - 0.5) ** 2)


def test_arrays_explicit_splits_per_step_binary_override(tmp_path):
    rng = np.random.default_rng(2)
    parts = {}
    for s, n in (("train", 6), ("val", 2), ("test", 2)):
        parts[f"x_{s}"] = rng.normal(size=(n, 5, 3)).astype(np.float32)
        parts[f"y_{s}"] = rng.integers(0, 2, (n, 5, 2)).astype(np.float32)
    np.savez(tmp_path / "d.npz", **parts)
    auto = tasks.spec(arrays_cfg(tmp_path / "d.npz"))
    assert (auto.input_size, auto.output, auto.output_size) == (3, "real", 2)
    cfg = arrays_cfg(tmp_path / "d.npz", output="binary")
    spec = tasks.spec(cfg)
    assert spec.output == "binary"
    s = tasks.make_splits(cfg)
    np.testing.assert_array_equal(s.train.x, parts["x_train"])  # the file's own splits, in order
    np.testing.assert_array_equal(s.test.y, parts["y_test"])
    zero = jnp.zeros(s.test.y.shape)
    assert float(tasks.mean_loss(zero, jbatch(s.test), spec)) == pytest.approx(2 * math.log(2))


@pytest.mark.parametrize(
    "content,kw,fragment",
    [
        ({"x": np.zeros((4, 3)), "y": np.zeros(5)}, {}, "y has 5 examples, x has 4"),
        ({"x": np.full((10, 3), np.nan), "y": np.zeros(10)}, {}, "x holds NaN"),
        (
            {"x": np.zeros((10, 3), int), "y": np.arange(10) % 3},
            {"classes": 2},
            "label 2 outside 0..1 (task.classes=2)",
        ),
        (
            {"x": np.zeros((4, 3), int), "y": np.zeros(4, int), "split": np.array([0, 0, 1, 1])},
            {},
            "the test split is empty",
        ),
        (
            {"x": np.zeros((4, 3), int), "y": np.zeros(4, int), "split": np.array([0, 1, 2, 3])},
            {},
            "split must hold 0 (train), 1 (val) or 2 (test)",
        ),
        (
            {"x": np.zeros((10, 3), int), "y": np.arange(10) - 1},
            {},
            "label -1 is negative",
        ),
        (
            {"x": np.zeros((10, 3)), "y": np.full(10, 0.5)},
            {"output": "binary"},
            "task.output=binary needs every target 0 or 1",
        ),
        ({"x": np.zeros(4), "y": np.zeros(4)}, {}, "x of shape [4], expected [N, T] or [N, T, D]"),
        ({"z": np.zeros(4)}, {}, "no x, y (it has z)"),
        (
            {"x": np.zeros((10, 3), int), "y": np.zeros(10, int), "mask": np.zeros((10, 3))},
            {},
            "an example whose mask is all 0",
        ),
    ],
)
def test_bad_arrays_files(tmp_path, content, kw, fragment):
    assert_refused(tmp_path, content, kw, fragment)


def assert_refused(tmp_path, content, kw, fragment):
    """`content` saved as an .npz is refused by task=arrays (with `kw`) in one line."""
    path = tmp_path / "d.npz"
    np.savez(path, **content)
    with pytest.raises(GrubenchError) as e:
        arrays.validate(arrays_cfg(path, **kw))
    assert fragment in str(e.value) and "\n" not in str(e.value), str(e.value)


# ---------------------------------------------------------------------------------------------
# The command line: bad paths and files are one line before Hydra starts; each task trains


@pytest.mark.parametrize(
    "args,fragment",
    [
        (["task=polyphonic"], "task=polyphonic reads your file: set task.path=FILE"),
        (["task=text", "task.path=/no/such/file.txt"], "task.path=/no/such/file.txt: no such"),
        (["task=smnist", "task.path=DIR"], "a directory; task=smnist reads one file"),
        (["task=text", "task.path=DIR", "task.level=byte"], "task.level=byte is not allowed"),
        (["task=arrays", "task.path=DIR/zip.npz"], "not an .npz file"),
        (["task=arrays", "task.path=DIR/a.npz", "task.seq_len=9"], "the file's length 3"),
    ],
)
def test_bad_paths_are_refused_at_the_command_line_check(tmp_path, args, fragment):
    (tmp_path / "zip.npz").write_text("hello")
    (tmp_path / "x.train.txt").write_text("a b\n")
    for s in ("valid", "test"):
        (tmp_path / f"x.{s}.txt").write_text("a b\n")
    np.savez(tmp_path / "a.npz", x=np.zeros((10, 3), int), y=np.zeros(10, int))
    args = [a.replace("DIR", str(tmp_path)) for a in args]
    with pytest.raises((ConfigError, DataError)) as e:
        check_overrides([f"hydra.run.dir={tmp_path / 'run'}", *args])
    assert fragment in str(e.value) and "\n" not in str(e.value), str(e.value)
    assert not (tmp_path / "run").exists()


def test_a_train_split_smaller_than_a_batch_is_refused_before_compiling(tmp_path):
    np.savez(tmp_path / "a.npz", x=np.zeros((10, 3), int), y=np.zeros(10, int))
    cfg = tiny_cfg("task=arrays", f"task.path={tmp_path / 'a.npz'}", "trainer.batch_size=9")
    with pytest.raises(ConfigError, match="at most the 8 training sequences of task=arrays"):
        loop.train(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def end_to_end_overrides(task, d, mnist):
    """The overrides of a tiny run of `task` on a small file written into `d`."""
    if task == "polyphonic":
        return [
            f"task.path={write_pickle_py2_style(d / 'Nottingham.pickle', MUSIC)}",
            "trainer.batch_size=2",
        ]
    if task == "text":
        (d / "b.txt").write_text("abcab" * 60)
        return [f"task.path={d / 'b.txt'}"]
    if task == "smnist":
        return [
            f"task.path={mnist}",
            "task.pixels_per_step=28",
            "task.seq_len=28",
            "task.val_size=8",
        ]
    np.savez(d / "a.npz", x=np.random.default_rng(0).integers(0, 5, (60, 3)), y=np.arange(60) % 3)
    return [f"task.path={d / 'a.npz'}"]


@pytest.mark.parametrize("task", ["arrays", "polyphonic", "smnist", "text"])
def test_each_user_data_task_trains_end_to_end(tmp_path, mnist, task):
    cfg = tiny_cfg(f"task={task}", *end_to_end_overrides(task, tmp_path, mnist))
    res = loop.train(cfg, tmp_path / "run")
    assert res["status"] == "completed", res.get("error")
    m = res["metrics"]
    assert np.isfinite(m["test_loss"]).all() and np.isfinite(res["baselines"]["loss"])
    on_disk = json.loads((tmp_path / "run" / "results.json").read_text())
    assert on_disk["config"]["task"]["path"] == cfg.task.path
    if task == "text":
        np.testing.assert_allclose(m["test_bpc"], np.divide(m["test_loss"], math.log(2)))
    if task == "polyphonic":
        assert on_disk["config"]["task"]["dataset"] == "nottingham"


def test_zip_is_not_mistaken_for_npz(tmp_path):
    path = tmp_path / "z.npz"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("readme.txt", "no arrays here")
    with pytest.raises(DataError, match="an .npz with no arrays"):
        files.read_npz("arrays", path)


def test_smnist_length_and_pixels_a_step_set_each_other(mnist):
    def done(**kw):
        schema = task_cfg(smnist.SMnistTaskConfig, path=str(mnist), val_size=8, **kw)
        cfg = OmegaConf.create({"task": dict(schema)})
        smnist.validate(cfg.task)
        return tasks.complete(cfg).task

    assert (done().seq_len, done().pixels_per_step) == (784, 1)
    rows = done(pixels_per_step=28)
    assert (rows.seq_len, rows.pixels_per_step) == (28, 28)
    by_length = done(seq_len=28)
    assert (by_length.seq_len, by_length.pixels_per_step) == (28, 28)
    assert (
        tasks.spec(task_cfg(smnist.SMnistTaskConfig, path=str(mnist), seq_len=28)).input_size == 28
    )
    with pytest.raises(ConfigError, match=r"task.seq_len=100 is not allowed: 784 / task.pixels"):
        done(seq_len=100)
    with pytest.raises(ConfigError, match=r"task.seq_len=28 is not allowed: 784 / task.pixels_"):
        done(seq_len=28, pixels_per_step=4)


def explicit(**change):
    """The split layout of 8/2/2 examples of 4 steps, reals in and 3 reals out a step, with
    `change` replacing some arrays."""
    parts = {}
    for s, n in (("train", 8), ("val", 2), ("test", 2)):
        parts[f"x_{s}"] = np.zeros((n, 4, 2), np.float32)
        parts[f"y_{s}"] = np.zeros((n, 4, 3), np.float32)
    return parts | change


@pytest.mark.parametrize(
    "content,kw,fragment",
    [
        (explicit(x_val=np.zeros(2)), {}, "val: x of shape [2], expected [N, T] or [N, T, D]"),
        (explicit(x_val=np.zeros((2, 4, 5))), {}, "x_val is float64 [2, 4, 5], unlike x_train"),
        (explicit(y_val=np.zeros((2, 4))), {}, "y_val is float64 [2, 4], unlike y_train"),
        (explicit(y_test=np.zeros((2, 5, 3))), {}, "y_test is float64 [2, 5, 3], unlike y_train"),
        (explicit(mask_val=np.ones((2, 5))), {}, "val: mask of shape [2, 5], expected [2, 4]"),
        ({"x": np.zeros((10, 3), int), "y": np.array(7)}, {}, "y of shape [], expected [N, ...]"),
        (
            {"x": np.zeros((10, 3)), "y": np.where(np.arange(10) == 3, np.nan, 1.0)},
            {"output": "classes"},
            "labels hold NaN or infinite values",
        ),
        (
            {"x": np.full((10, 3), 2**32 + 1, np.int64), "y": np.zeros(10, int)},
            {"vocab": 5},
            "token 4294967297 outside 0..4 (task.vocab=5)",
        ),
        (
            {"x": np.full((10, 3), 10**9, np.int64), "y": np.zeros(10, int)},
            {},
            "the largest token is 1000000000: if that many is meant, set task.vocab=1000000001",
        ),
    ],
    ids=range(9),
)
def test_arrays_splits_unlike_train_and_absurd_ids_are_refused(tmp_path, content, kw, fragment):
    assert_refused(tmp_path, content, kw, fragment)


def test_a_run_records_its_data_and_a_relaunch_on_changed_data_is_refused(tmp_path):
    from grubench.errors import RunDirError

    path = tmp_path / "a.npz"
    np.savez(path, x=np.random.default_rng(0).integers(0, 5, (60, 3)), y=np.arange(60) % 3)
    digest = files.content_hash([path])
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest()  # what sha256sum prints
    args = [*TINY, "task=arrays", f"task.path={path}"]
    res = loop.train(tiny_cfg("task=arrays", f"task.path={path}"), tmp_path / "run")
    assert res["config"]["task"]["sha256"] == digest
    check_overrides([f"hydra.run.dir={tmp_path / 'run'}", *args])  # the same data: fine
    # Pinning the data: a wrong hash is one line, the right one passes.
    with pytest.raises(ConfigError, match=f"hash to {digest} \\(the data changed\\?\\)"):
        arrays.validate(arrays_cfg(path, sha256="0" * 64))
    arrays.validate(arrays_cfg(path, sha256=digest))
    # The file rewritten with other values: the finished run is not reported as this one's.
    np.savez(path, x=np.random.default_rng(1).integers(0, 5, (60, 3)), y=np.arange(60) % 3)
    with pytest.raises(RunDirError, match="task.sha256="):
        check_overrides([f"hydra.run.dir={tmp_path / 'run'}", *args])


def test_text_windows_with_context_score_every_symbol_once_after_its_burn_in():
    stream = np.arange(10, dtype=np.int32)  # 9 symbols to predict
    s = text.windows(stream, 3, context=2, pad=True)
    np.testing.assert_array_equal(s.x, [[0, 1, 2, 3, 4], [3, 4, 5, 6, 7], [6, 7, 8, 9, 0]])
    np.testing.assert_array_equal(s.y[:, :4], [[1, 2, 3, 4], [4, 5, 6, 7], [7, 8, 9, 0]])
    np.testing.assert_array_equal(s.loss_mask, [[1, 1, 1, 1, 1], [0, 0, 1, 1, 1], [0, 0, 1, 0, 0]])
    assert sorted(s.y[s.loss_mask > 0].tolist()) == list(range(1, 10))  # each exactly once
    train = text.windows(stream, 3, context=2, pad=False)  # the partial last window dropped
    assert len(train) == 2 and np.shares_memory(train.x, stream)
    np.testing.assert_array_equal(text.windows(stream, 3, pad=False).x, stream[:9].reshape(3, 3))


def test_damaged_or_non_numeric_npz_files_are_one_line(tmp_path):
    np.savez_compressed(tmp_path / "z.npz", x=np.arange(4000, dtype=np.float32))
    raw = bytearray((tmp_path / "z.npz").read_bytes())
    raw[200:260] = bytes(60)  # inside the compressed member
    (tmp_path / "z.npz").write_bytes(bytes(raw))
    np.savez(tmp_path / "s.npz", x=np.array([["a", "b"]]), y=np.zeros(1))
    # A stored member whose header claims more data than it holds is not mapped past its end.
    np.savez(tmp_path / "lie.npz", a=np.arange(10.0), b=np.arange(1000.0))
    raw = (tmp_path / "lie.npz").read_bytes()
    (tmp_path / "lie.npz").write_bytes(raw.replace(b"(10,)", b"(90,)", 1))
    for name, fragment in (
        ("z.npz", "array 'x' unreadable ("),
        ("s.npz", "of dtype <U1"),
        ("lie.npz", "array 'a' unreadable ("),
    ):
        with pytest.raises(DataError) as e:
            files.read_npz("arrays", tmp_path / name)
        assert fragment in str(e.value) and "\n" not in str(e.value), str(e.value)
    np.savez(tmp_path / "e.npz", x=np.zeros((10, 0)), y=np.zeros(10, int))
    with pytest.raises(DataError, match=r"expected \[N, T\] or \[N, T, D\] \(T, D >= 1\)"):
        arrays.validate(arrays_cfg(tmp_path / "e.npz"))
