"""data.name: npz — the user's arrays, checked and converted once into the cache (generated fixtures)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from airlab.config.schema import DataConfig
from airlab.data import load_dataset, npz
from airlab.errors import DataError


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("AIRLAB_CACHE_DIR", str(tmp_path / "cache"))


def _opts(path, **kw) -> DataConfig:
    return DataConfig(name="npz", path=str(path), **kw)


def _images(n=20, h=6, w=5, c=3, seed=0) -> np.ndarray:
    """(n, h, w, c) uint8 with distinct values."""
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, c), dtype=np.uint8)


def _save(path, compressed=False, **arrays):
    (np.savez_compressed if compressed else np.savez)(path, **arrays)
    return path


@pytest.mark.parametrize("compressed", [False, True])
def test_nhwc_uint8(tmp_path, compressed):
    x, y = _images(), np.arange(20) % 4
    f = _save(tmp_path / "d.npz", compressed, x_train=x, y_train=y, class_names=np.array(["a", "b", "c", "d"]))
    members = npz._File(f)
    assert isinstance(members["x_train"], np.memmap) is not compressed  # np.savez: mapped inside the zip
    members.close()
    ds = load_dataset("npz", seed=0, options=_opts(f, val_fraction=0.25))
    assert ds.extra["layout"] == "NHWC" and ds.extra["dtype"] == "uint8"
    assert ds.meta == {"class_names": ["a", "b", "c", "d"], "layout": "NHWC", "dtype": "uint8"}
    json.dumps(ds.extra)
    assert ds.train.x.dtype == np.uint8 and ds.train.sample_shape == (3, 6, 5)
    assert (len(ds.train), len(ds.val), ds.test, ds.num_classes) == (15, 5, None, 4)
    rows = ds.train.rows
    got, labels = ds.train.gather(np.arange(len(ds.train)))
    assert np.array_equal(got, x[rows].transpose(0, 3, 1, 2)) and np.array_equal(labels, y[rows])


def test_nchw_float_kept_as_float32(tmp_path):
    x = _images(c=1).transpose(0, 3, 1, 2).astype(np.float64) / 255.0  # (20, 1, 6, 5)
    f = _save(tmp_path / "d.npz", x_train=x, y_train=np.arange(20) % 2)
    ds = npz.load(_opts(f, val_fraction=0.0), seed=0)
    assert ds.extra["layout"] == "NCHW" and ds.extra["dtype"] == "float64" and ds.extra["stored_dtype"] == "float32"
    assert ds.train.x.dtype == np.float32 and ds.train.sample_shape == (1, 6, 5)
    assert np.allclose(ds.train.materialize(), x, atol=1e-7) and ds.class_names is None and ds.num_classes == 2


def test_nhw_grayscale_with_val_and_test_given(tmp_path):
    x = _images(c=1)[..., 0]
    f = _save(tmp_path / "d.npz", x_train=x, y_train=np.arange(20) % 3, x_val=x[:4], y_val=np.array([0, 1, 2, 2]),
              x_test=x[:3], y_test=np.array([[1], [1], [0]]))  # (N, 1) labels, as Keras stores them
    ds = npz.load(_opts(f, val_fraction=0.5), seed=0)
    assert ds.extra["layout"] == "NHW" and ds.train.sample_shape == (1, 6, 5)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (20, 4, 3)
    assert ds.val.y.tolist() == [0, 1, 2, 2] and ds.test.y.tolist() == [1, 1, 0]
    assert np.array_equal(ds.test.materialize()[:, 0], x[:3])


def test_ambiguous_layouts_follow_the_rule():
    p = "f.npz"
    assert npz._layout(p, "x", (5, 3, 32, 3)) == "NHWC"
    assert npz._layout(p, "x", (5, 1, 3, 3)) == "NCHW"  # only NCHW gives square images
    assert npz._layout(p, "x", (5, 3, 3, 3)) == "NHWC"
    assert npz._layout(p, "x", (5, 28, 28, 1)) == "NHWC" and npz._layout(p, "x", (5, 1, 28, 28)) == "NCHW"
    with pytest.raises(DataError, match=r"need 1 or 3 channels"):
        npz._layout(p, "x_train", (5, 32, 32, 4))
    with pytest.raises(DataError, match=r"shape \(5, 784\).*reshape them"):
        npz._layout(p, "x_train", (5, 784))


def test_cache_reused(tmp_path, monkeypatch):
    f = _save(tmp_path / "d.npz", x_train=_images(), y_train=np.arange(20) % 2)
    first = npz.load(_opts(f), seed=0)
    monkeypatch.setattr(npz, "_convert", lambda *a: pytest.fail("converted again"))
    assert npz.load(_opts(f), seed=0).cache == first.cache


def test_pickled_object_array_refused(tmp_path):
    ragged = np.empty(2, dtype=object)
    ragged[0], ragged[1] = np.zeros((2, 2)), np.zeros((3, 3))
    for compressed in (False, True):
        f = _save(tmp_path / f"d{compressed}.npz", compressed, x_train=ragged, y_train=np.array([0, 1]))
        with pytest.raises(DataError, match=r"x_train is an object array, which only pickle can load"):
            npz.load(_opts(f), seed=0)


@pytest.mark.parametrize("arrays, message", [
    (dict(x_train=_images(10), y_train=np.zeros(9, int)), r"y_train has 9 labels for 10 samples in x_train"),
    (dict(x_train=_images(10), y_train=np.arange(10) % 2, x_val=_images(4, c=1), y_val=np.zeros(4, int)),
     r"x_val has shape \(4, 6, 5, 1\) but x_train samples are \(6, 5, 3\)"),
    (dict(x_train=_images(10) / 200.0, y_train=np.arange(10) % 2),
     r"x_train has values in \[0, 1\.27\d*\]; float images must be in \[0, 1\]"),
    (dict(x_train=_images(4), y_train=np.array([0, 1, 2, 5]), class_names=np.array(["a", "b", "c"])),
     r"y_train: label 5 is outside 0\.\.2"),
    (dict(x_train=_images(4), y_train=np.array([0, 1, 0, 1]), x_test=_images(2), y_test=np.array([0, -1])),
     r"y_test: label -1 is outside"),
    (dict(x_train=_images(4), y_train=np.eye(4)), r"y_train has shape \(4, 4\).*one-hot"),
    (dict(x_train=_images(4), y_train=np.arange(4), x_val=_images(2)), r"has x_val but no y_val"),
    (dict(x_train=_images(4), y_train=np.arange(4), x_valid=_images(2)), r"array x_valid is not one airlab reads"),
    (dict(images=_images(4)), r"holds no x_train and y_train \(found: images\)"),
    (dict(x_train=_images(4).astype(np.int64) * 2, y_train=np.arange(4)), r"dtype int64 with values in \[0, 5\d\d\]"),
])
def test_bad_arrays_named(tmp_path, arrays, message):
    f = _save(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataError, match=message) as e:
        npz.load(_opts(f), seed=0)
    assert str(f) in e.value.message and "\n" not in e.value.message
    assert not any(p.name.startswith("npz-") for p in (tmp_path / "cache").iterdir())


def test_file_problems_named(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        npz.load(_opts(tmp_path / "none.npz"), seed=0)
    with pytest.raises(DataError, match="is not a file"):
        npz.load(_opts(tmp_path), seed=0)
    np.save(tmp_path / "one.npy", _images(2))
    with pytest.raises(DataError, match=r"a \.npy file \(one array\)"):
        npz.load(_opts(tmp_path / "one.npy"), seed=0)
    (tmp_path / "text.npz").write_text("hello")
    with pytest.raises(DataError, match=r"not a \.npz file"):
        npz.load(_opts(tmp_path / "text.npz"), seed=0)


def test_integer_images_in_byte_range_stored_as_uint8(tmp_path):
    x = _images(4).astype(np.int64)
    f = _save(tmp_path / "d.npz", x_train=x, y_train=np.arange(4) % 2)
    ds = npz.load(_opts(f, val_fraction=0.0), seed=0)
    assert ds.extra["dtype"] == "int64" and ds.train.x.dtype == np.uint8
    assert np.array_equal(ds.train.materialize(), x.transpose(0, 3, 1, 2))
