"""The IDX reader: round trips on generated fixtures, and every malformed file is a DataError."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from airlab.data.idx import read_idx, read_idx_bytes, write_idx
from airlab.errors import DataError


def _idx_bytes(arr: np.ndarray, code: int = 0x08) -> bytes:
    header = bytes([0, 0, code, arr.ndim]) + np.asarray(arr.shape, dtype=">u4").tobytes()
    return header + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


@pytest.mark.parametrize("name", ["images-idx3-ubyte", "images-idx3-ubyte.gz"])
def test_images_round_trip_raw_and_gzip(tmp_path, name):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (7, 28, 28), dtype=np.uint8)
    path = write_idx(tmp_path / name, images)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == name.endswith(".gz")
    out = read_idx(path, ndim=3, dtype=np.uint8)
    assert out.dtype == np.uint8 and out.shape == (7, 28, 28)
    np.testing.assert_array_equal(out, images)
    assert out.flags.writeable


def test_labels_match_a_hand_written_file(tmp_path):
    # header written by hand, independent of write_idx: magic 0x00000801, one dim of 5
    raw = bytes([0, 0, 8, 1, 0, 0, 0, 5, 3, 1, 4, 1, 5])
    (tmp_path / "labels").write_bytes(raw)
    (tmp_path / "labels.gz").write_bytes(gzip.compress(raw))
    for name in ("labels", "labels.gz"):
        np.testing.assert_array_equal(read_idx(tmp_path / name, ndim=1), [3, 1, 4, 1, 5])


@pytest.mark.parametrize("dtype,code", [(np.int8, 0x09), (np.int16, 0x0B), (np.int32, 0x0C),
                                        (np.float32, 0x0D), (np.float64, 0x0E)])
def test_multibyte_types_are_big_endian(dtype, code):
    arr = (np.arange(12).reshape(3, 4) - 5).astype(dtype)
    out = read_idx_bytes(_idx_bytes(arr, code))
    assert out.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(out, arr)


@settings(max_examples=25, deadline=None)
@given(shape=st.lists(st.integers(0, 5), min_size=1, max_size=4),
       dtype=st.sampled_from([np.uint8, np.int16, np.int32, np.float32]),
       compress=st.booleans())
def test_round_trip_property(tmp_path_factory, shape, dtype, compress):
    arr = (np.arange(int(np.prod(shape))) % 100).astype(dtype).reshape(shape)
    path = write_idx(tmp_path_factory.mktemp("idx") / "a.idx", arr, compress=compress)
    out = read_idx(path)
    assert out.shape == tuple(shape) and out.dtype == arr.dtype
    np.testing.assert_array_equal(out, arr)


def _expect_error(tmp_path, content: bytes, match: str, name: str = "bad-idx3-ubyte"):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DataError, match=match) as info:
        read_idx(path)
    assert str(path) in str(info.value)  # every error names the file


def test_bad_magic(tmp_path):
    _expect_error(tmp_path, b"\x12\x34\x08\x01\x00\x00\x00\x01\x07", "magic")


def test_unknown_dtype_code(tmp_path):
    _expect_error(tmp_path, b"\x00\x00\x07\x01\x00\x00\x00\x01\x07", "dtype code 0x07")


def test_zero_dimensions(tmp_path):
    _expect_error(tmp_path, b"\x00\x00\x08\x00", "dimensions")


def test_too_short(tmp_path):
    _expect_error(tmp_path, b"\x00\x00", "too short")


def test_truncated_header(tmp_path):
    _expect_error(tmp_path, b"\x00\x00\x08\x03\x00\x00\x00\x02\x00\x00", "truncated IDX header")


def test_truncated_data(tmp_path):
    raw = _idx_bytes(np.zeros((4, 28, 28), np.uint8))
    _expect_error(tmp_path, raw[:-10], "truncated")


def test_trailing_bytes(tmp_path):
    raw = _idx_bytes(np.zeros((2, 3), np.uint8))
    _expect_error(tmp_path, raw + b"\x00", "trailing")


def test_truncated_gzip(tmp_path):
    raw = gzip.compress(_idx_bytes(np.arange(1000, dtype=np.uint8).reshape(10, 100)))
    _expect_error(tmp_path, raw[: len(raw) // 2], "gzip", name="bad.gz")


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="cannot read"):
        read_idx(tmp_path / "nope")


def test_expected_ndim_and_dtype(tmp_path):
    path = write_idx(tmp_path / "labels", np.zeros(5, np.uint8))
    with pytest.raises(DataError, match="3 dimensions"):
        read_idx(path, ndim=3)
    with pytest.raises(DataError, match="dtype"):
        read_idx(path, dtype=np.int32)
