"""airlab.data: the registry, the split rules, and the two offline datasets (shapes, pycorpus)."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import airlab.data as data
from airlab.data import data_dir, dataset_names, load_dataset, shapes
from airlab.data.pycorpus import build_text
from airlab.errors import DataError

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """No test may touch the network or the user's cache."""
    monkeypatch.setenv("AIRLAB_DATA_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("AIRLAB_OFFLINE", "1")

    def no_network(*args, **kwargs):
        raise AssertionError("a test tried to use the network")

    monkeypatch.setattr("airlab.data.files._urlopen", no_network)


@pytest.fixture(scope="module")
def shapes_small():
    return load_dataset("shapes", size=1000, seed=0)


# --- registry -------------------------------------------------------------------------------


def test_dataset_names():
    assert dataset_names() == sorted(
        ["shapes", "pycorpus", "mnist", "fashion_mnist", "cifar10", "tinyshakespeare",
         "folder", "npz", "text", "csv", "parquet"])
    assert set(data.describe_datasets()) == set(dataset_names())


def test_unknown_dataset_suggests_the_closest_name():
    with pytest.raises(DataError) as info:
        load_dataset("mnsit")
    assert str(info.value) == "unknown dataset 'mnsit'; did you mean 'mnist'?"
    assert "fashion_mnist" in info.value.hint and "shapes" in info.value.hint
    assert info.value.exit_code == 2


def test_unknown_dataset_without_a_close_match_lists_names():
    with pytest.raises(DataError) as info:
        load_dataset("imagenet")
    assert "did you mean" not in str(info.value)
    assert "cifar10" in info.value.hint


@pytest.mark.parametrize("kwargs,match", [
    (dict(val_fraction=-0.1), "val_fraction"),
    (dict(val_fraction=1.0), "val_fraction"),
    (dict(val_fraction="x"), "val_fraction"),
    (dict(limit=0), "limit"),
    (dict(limit=2.5), "limit"),
    (dict(size=-3), "size"),
    (dict(seed=-1), "seed"),
    (dict(seed=None), "seed"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(DataError, match=match):
        load_dataset("shapes", **kwargs)


@pytest.mark.parametrize("name", ["shapes", "pycorpus"])
def test_val_fraction_zero_trains_on_every_example(name):
    whole = load_dataset(name, val_fraction=0.0, seed=3, size=400)
    assert len(whole.val) == 0
    held = load_dataset(name, val_fraction=0.25, seed=3, size=400)
    assert len(whole.train) == len(held.train) + len(held.val)


def test_data_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("AIRLAB_DATA_DIR", str(tmp_path / "a"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert data_dir() == tmp_path / "a"
    monkeypatch.delenv("AIRLAB_DATA_DIR")
    assert data_dir() == tmp_path / "xdg" / "airlab" / "data"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert data_dir() == tmp_path / "home" / ".cache" / "airlab" / "data"


def test_importing_and_loading_never_imports_a_framework(tmp_path):
    code = textwrap.dedent("""
        import sys
        from airlab.data import load_dataset
        load_dataset("shapes", size=20, limit=5)
        bad = [m for m in ("torch", "tensorflow", "keras", "jax") if m in sys.modules]
        assert not bad, bad
    """)
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=60)


# --- shapes ---------------------------------------------------------------------------------


def test_shapes_arrays(shapes_small):
    ds = shapes_small
    assert ds.kind == "image" and ds.num_classes == 10 and len(ds.class_names) == 10
    assert len(set(ds.class_names)) == 10
    for split in (ds.train, ds.val, ds.test):
        assert split.x.dtype == np.float32 and split.y.dtype == np.int64
        assert split.x.shape[1:] == (1, 28, 28)
        assert 0.0 <= split.x.min() and split.x.max() <= 1.0
    assert (len(ds.train), len(ds.val), len(ds.test)) == (900, 100, shapes.TEST_SIZE)
    assert ds.info.input_shape == (1, 28, 28) and ds.info.num_classes == 10
    assert "generated" in ds.source


def test_shapes_classes_present_and_balanced(shapes_small):
    counts = np.bincount(np.concatenate([shapes_small.train.y, shapes_small.val.y]), minlength=10)
    assert counts.tolist() == [100] * 10
    test_counts = np.bincount(shapes_small.test.y, minlength=10)
    assert test_counts.min() >= 150


def test_shapes_are_distinguishable_and_not_blank(shapes_small):
    x, y = shapes_small.train.x[:, 0], shapes_small.train.y
    # every image has a visible shape: its brightest pixels stand out from its median
    contrast = np.percentile(x.reshape(len(x), -1), 95, axis=1) - np.median(x.reshape(len(x), -1), axis=1)
    assert np.mean(contrast > 0.1) > 0.95
    # class means differ (a nearest-class-mean classifier on pixels is far above chance)
    means = np.stack([x[y == c].mean(axis=0) for c in range(10)])
    dist = ((x[:, None] - means[None]) ** 2).sum(axis=(2, 3))
    assert np.mean(dist.argmin(axis=1) == y) > 0.25
    # but the task is not trivial: images vary a lot within a class
    assert x[y == 0].std(axis=0).mean() > 0.1


def test_shapes_deterministic_and_independent_of_run_seed():
    a = load_dataset("shapes", size=300, seed=0)
    b = load_dataset("shapes", size=300, seed=0)
    c = load_dataset("shapes", size=300, seed=1)
    np.testing.assert_array_equal(a.train.x, b.train.x)
    np.testing.assert_array_equal(a.val.y, b.val.y)
    # another run seed: another validation split, but the same pool of images
    assert not np.array_equal(a.val.x, c.val.x)
    pool_a = np.concatenate([a.train.x, a.val.x]).reshape(300, -1)
    pool_c = np.concatenate([c.train.x, c.val.x]).reshape(300, -1)
    key = lambda pool: sorted(hashlib.sha1(row.tobytes()).hexdigest() for row in pool)  # noqa: E731
    assert key(pool_a) == key(pool_c)
    np.testing.assert_array_equal(a.test.x, c.test.x)


def test_shapes_prefix_stable_and_test_disjoint():
    x_small, y_small = shapes.generate(1100)
    x_big, y_big = shapes.generate(1500)
    np.testing.assert_array_equal(x_small, x_big[:1100])
    np.testing.assert_array_equal(y_small, y_big[:1100])
    tx, _ = shapes.generate(200, stream=shapes.DATA_SEED + shapes.TEST_STREAM_OFFSET)
    train_rows = {row.tobytes() for row in x_big.reshape(len(x_big), -1)}
    assert not any(row.tobytes() in train_rows for row in tx.reshape(len(tx), -1))


def test_shapes_default_size():
    ds = load_dataset("shapes")
    assert len(ds.train) + len(ds.val) == shapes.DEFAULT_SIZE == 12_000
    assert len(ds.val) == 1_200


def test_limit_truncates_after_the_split(shapes_small):
    full = shapes_small
    small = load_dataset("shapes", size=1000, seed=0, limit=37)
    assert (len(small.train), len(small.val), len(small.test)) == (37, 37, 37)
    np.testing.assert_array_equal(small.train.x, full.train.x[:37])
    np.testing.assert_array_equal(small.val.y, full.val.y[:37])
    np.testing.assert_array_equal(small.test.y, full.test.y[:37])


def test_val_split_is_a_seeded_permutation(shapes_small):
    pool_x, pool_y = shapes.generate(1000)
    perm = np.random.default_rng(0).permutation(1000)
    np.testing.assert_array_equal(shapes_small.val.y, pool_y[np.sort(perm[:100])])
    np.testing.assert_array_equal(shapes_small.train.x, pool_x[np.sort(perm[100:])])


# --- pycorpus -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def corpus():
    return load_dataset("pycorpus")


def test_pycorpus_size_vocab_and_split(corpus):
    ds = corpus
    assert ds.kind == "text" and ds.test is None
    n = len(ds.train) + len(ds.val)
    assert 200_000 < n <= 1_000_000
    assert len(ds.train) == int(n * 0.9)
    assert ds.train.x.dtype == np.int32 and ds.train.x.ndim == 1 and ds.train.y is None
    assert ds.vocab == sorted(ds.vocab) and len(ds.vocab) == len(set(ds.vocab))
    assert all(ch == "\n" or " " <= ch <= "~" for ch in ds.vocab)
    assert {"a", "e", " ", "\n", "("} <= set(ds.vocab)
    assert ds.info.vocab_size == len(ds.vocab)
    assert int(ds.train.x.max()) < len(ds.vocab) and int(ds.train.x.min()) >= 0
    assert "Python" in ds.source
    text = ds.decode(ds.train.x[:2000])
    assert text.startswith("abc\n")
    np.testing.assert_array_equal(ds.encode(text), ds.train.x[:2000])


def test_pycorpus_deterministic_in_process(corpus):
    again = load_dataset("pycorpus")
    np.testing.assert_array_equal(corpus.train.x, again.train.x)
    np.testing.assert_array_equal(corpus.val.x, again.val.x)
    assert corpus.vocab == again.vocab


def test_pycorpus_same_in_a_fresh_isolated_interpreter():
    """What the test process imported before must not change the corpus."""
    here, _ = build_text()
    code = ("import sys, hashlib; sys.path.insert(0, sys.argv[1]);"
            "from airlab.data.pycorpus import build_text;"
            "print(hashlib.sha256(build_text()[0].encode()).hexdigest())")
    out = subprocess.run([sys.executable, "-I", "-c", code, str(REPO)], capture_output=True,
                         text=True, check=True, timeout=60)
    assert out.stdout.strip() == hashlib.sha256(here.encode()).hexdigest()


def test_pycorpus_size_caps_characters():
    ds = load_dataset("pycorpus", size=5000)
    assert len(ds.train) + len(ds.val) == 5000
    assert (len(ds.train), len(ds.val)) == (4500, 500)
    limited = load_dataset("pycorpus", size=5000, limit=100)
    assert (len(limited.train), len(limited.val)) == (100, 100)
