"""Hostile and sloppy data files (issue 9, item 9): every one is a DataError naming the file, memory
stays bounded by what the file declares, and files used without a published digest are listed."""

from __future__ import annotations

import dataclasses
import errno
import gzip
import hashlib
import io
import os
import struct
import tarfile
import threading
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

import airlab.data.cifar as cifar
import airlab.data.files as files
import airlab.data.mnist as mnist
import airlab.data.text as text
from airlab.data import load_dataset
from airlab.data.idx import read_idx, read_idx_bytes, write_idx
from airlab.errors import DataError



def _header(code: int, dims: tuple[int, ...]) -> bytes:
    return bytes([0, 0, code, len(dims)]) + struct.pack(f">{len(dims)}I", *dims)


def _expect(path: Path, match: str, **kw) -> DataError:
    with pytest.raises(DataError, match=match) as info:
        read_idx(path, **kw)
    assert str(path) in str(info.value)  # every error names the file
    assert info.value.exit_code == 2
    return info.value


# --- IDX headers ----------------------------------------------------------------------------

OVERFLOWING = {
    # product 2**64 wraps to 0 in int64: the old reader took it for an empty array, then reshape raised
    "wraps-to-zero": (0x08, (65536, 65536, 65536, 65536)),
    "wraps-to-zero-5d": (0x08, (65536, 65536, 65536, 65536, 1)),
    # wraps to a negative count
    "eight-max-dims": (0x08, (0xFFFFFFFF,) * 8),
    # no data needed (a zero dimension), but the other dimensions overflow numpy's index type
    "zero-times-huge": (0x08, (0, 0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF)),
    # float64: 2**61 elements * 8 bytes = 2**64
    "itemsize-overflow": (0x0E, (2**31, 2**30)),
}


@pytest.mark.parametrize("compress", [False, True], ids=["raw", "gzip"])
@pytest.mark.parametrize("case", sorted(OVERFLOWING))
def test_idx_header_whose_dimensions_overflow_is_a_data_error(tmp_path, case, compress):
    code, dims = OVERFLOWING[case]
    raw = _header(code, dims)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(gzip.compress(raw) if compress else raw)
    err = _expect(path, "dimensions")
    assert str(dims[0]) in err.message and err.hint


def test_idx_bytes_with_overflowing_dimensions_is_a_data_error():
    with pytest.raises(DataError, match="dimensions"):
        read_idx_bytes(_header(0x08, (65536, 65536, 65536, 65536)), name="hdr")


def test_gzip_whose_header_declares_more_than_deflate_can_expand_is_refused_unread(tmp_path):
    # 4 GiB declared in a file of a few dozen bytes: deflate expands at most 1032:1
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(_header(0x08, (65536, 256, 256)) + bytes(100)))
    err = _expect(path, "gzip file of")
    assert "4,294,967,296 bytes" in err.message


def test_header_checked_against_the_wanted_shape_before_the_data_is_read(tmp_path):
    path = tmp_path / "imgs"
    path.write_bytes(_header(0x08, (2, 28, 29)) + bytes(2 * 28 * 29))
    _expect(path, r"expected IDX shape \(N, 28, 28\), found \(2, 28, 29\)", ndim=3, shape=(None, 28, 28))


# --- gzip under a raw name, and gzip bombs --------------------------------------------------


def test_gzip_under_a_raw_name_is_detected_by_its_magic_bytes(tmp_path):
    arr = np.arange(6 * 5, dtype=np.uint8).reshape(6, 5)
    path = write_idx(tmp_path / "train-labels-idx1-ubyte", arr, compress=True)
    assert path.read_bytes()[:2] == b"\x1f\x8b"
    np.testing.assert_array_equal(read_idx(path), arr)


def _bomb(declared: tuple[int, ...], extra_mib: int) -> bytes:
    """A valid multi-member gzip file: an IDX header and its data, then `extra_mib` MiB of zeros
    in members of about 1 KB each (about 1 KB of file per MiB of output)."""
    n = int(np.prod(declared))
    member = gzip.compress(bytes(1 << 20), compresslevel=9, mtime=0)
    return gzip.compress(_header(0x08, declared) + bytes(n), mtime=0) + member * extra_mib


@pytest.mark.parametrize("name", ["train-images-idx3-ubyte", "train-images-idx3-ubyte.gz"])
def test_gzip_bomb_never_decompresses_past_the_declared_size(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(_bomb((10, 28, 28), extra_mib=256))  # ~260 KB that expands to 256 MiB
    assert path.stat().st_size < 400_000
    tracemalloc.start()
    try:
        _expect(path, "trailing")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20, f"peak {peak:,} bytes while reading a bomb that declares 7,856"


def test_truncated_gzip_is_a_data_error(tmp_path):
    path = tmp_path / "t10k-labels-idx1-ubyte"
    raw = gzip.compress(_header(0x08, (5000,)) + bytes(range(256)) * 20)
    path.write_bytes(raw[: len(raw) - 30])
    _expect(path, "gzip")


def test_gzip_stream_shorter_than_declared_is_truncated(tmp_path):
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(_header(0x08, (5000,)) + bytes(4000)))
    _expect(path, "truncated.*5,000 bytes.*found 4,000")


# --- file types -----------------------------------------------------------------------------


def test_idx_that_is_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path):
    fifo = tmp_path / "train-labels-idx1-ubyte"
    os.mkfifo(fifo)
    stop = time.monotonic() + 5.0

    def writer():  # so that a reader that opens the FIFO does not block forever
        while time.monotonic() < stop:
            try:
                fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as exc:
                if exc.errno != errno.ENXIO:
                    return
                time.sleep(0.01)
                continue
            try:
                os.write(fd, _header(0x08, (1,)) + b"\x07")
            finally:
                os.close(fd)
            return

    threading.Thread(target=writer, daemon=True).start()
    _expect(fifo, "not a regular file")


# --- files.py: pinned sizes and unreadable files --------------------------------------------


def test_file_far_larger_than_its_pinned_size_is_refused_before_hashing_it(tmp_path, monkeypatch):
    d = tmp_path / "shakes"
    d.mkdir()
    with open(d / "input.txt", "wb") as fh:  # sparse: takes no disk
        fh.truncate(10_000_000_000)

    def no_hashing(path):
        raise AssertionError("hashed a file whose size already says it is wrong")

    monkeypatch.setattr(files, "digests", no_hashing)
    with pytest.raises(DataError, match="checksum mismatch: .*10,000,000,000 bytes.*1,115,394") as info:
        load_dataset("tinyshakespeare", path=str(d))
    assert str(d / "input.txt") in info.value.message
    assert text.TINYSHAKESPEARE_FILES[0].sha256 in str(info.value)


def test_unreadable_pinned_file_is_a_data_error(tmp_path, monkeypatch):
    d = tmp_path / "shakes"
    d.mkdir()
    (d / "input.txt").write_text("x")
    monkeypatch.setattr(text, "TINYSHAKESPEARE_FILES",
                        [dataclasses.replace(text.TINYSHAKESPEARE_FILES[0], size=None)])

    def denied(path):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(files, "digests", denied)
    with pytest.raises(DataError, match="cannot read .*input.txt.*Permission denied"):
        load_dataset("tinyshakespeare", path=str(d))


def test_wrong_size_is_named_beside_both_digests(tmp_path):
    d = tmp_path / "shakes"
    d.mkdir()
    (d / "input.txt").write_bytes(b"x" * 1000)
    with pytest.raises(DataError, match="1,000 bytes, expected 1,115,394") as info:
        load_dataset("tinyshakespeare", path=str(d))
    assert hashlib.sha256(b"x" * 1000).hexdigest() in str(info.value)
    assert text.TINYSHAKESPEARE_FILES[0].sha256 in str(info.value)


def test_data_path_that_cannot_be_looked_at_is_a_data_error(tmp_path):
    too_long = tmp_path / ("x" * 5000)  # ENAMETOOLONG: stat raises, is_file does not swallow it
    with pytest.raises(DataError, match="data.path .* cannot be read: File name too long"):
        load_dataset("mnist", path=str(too_long))


# --- CIFAR-10 members -----------------------------------------------------------------------


def _pin(specs, directory: Path):
    out = []
    for spec in specs:
        raw = (directory / spec.name).read_bytes()
        out.append(dataclasses.replace(spec, sha256=hashlib.sha256(raw).hexdigest(),
                                       md5=hashlib.md5(raw).hexdigest(), size=len(raw)))
    return out


def _cifar(directory: Path, members: list[tuple[str, bytes]]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    with tarfile.open(directory / cifar.ARCHIVE, "w:gz", compresslevel=1) as tar:
        for name, payload in members:
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))


def test_cifar10_member_larger_than_a_batch_is_refused_before_it_is_read(tmp_path, monkeypatch):
    d = tmp_path / "c10"
    huge = bytes(cifar.RECORD * 10_001)  # 30.7 MB of zeros, 30 KB compressed
    small = bytes(cifar.RECORD * 2)
    _cifar(d, [(cifar.TRAIN_MEMBERS[0], huge)] + [(m, small) for m in cifar.TRAIN_MEMBERS[1:]]
           + [(cifar.TEST_MEMBER, small)])
    monkeypatch.setattr(cifar, "CIFAR10_FILES", _pin(cifar.CIFAR10_FILES, d))
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match="data_batch_1.bin.*10,001 records.*at most 10,000") as info:
            load_dataset("cifar10", path=str(d))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert str(d / cifar.ARCHIVE) in info.value.message
    assert peak < 16 << 20


def test_cifar10_member_that_appears_twice_is_refused(tmp_path, monkeypatch):
    d = tmp_path / "c10"
    small = bytes(cifar.RECORD * 2)
    _cifar(d, [(m, small) for m in cifar.TRAIN_MEMBERS] + [(cifar.TEST_MEMBER, small),
                                                          (cifar.TRAIN_MEMBERS[2], small)])
    monkeypatch.setattr(cifar, "CIFAR10_FILES", _pin(cifar.CIFAR10_FILES, d))
    with pytest.raises(DataError, match="data_batch_3.bin more than once"):
        load_dataset("cifar10", path=str(d))


# --- which files were used without verification ---------------------------------------------


def _write_mnist(directory: Path, gz: bool) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    arrays = {
        mnist.TRAIN_IMAGES: rng.integers(0, 256, (20, 28, 28), dtype=np.uint8),
        mnist.TRAIN_LABELS: (np.arange(20) % 10).astype(np.uint8),
        mnist.TEST_IMAGES: rng.integers(0, 256, (5, 28, 28), dtype=np.uint8),
        mnist.TEST_LABELS: (np.arange(5) % 10).astype(np.uint8),
    }
    for name, arr in arrays.items():
        write_idx(directory / (name if gz else name.removesuffix(".gz")), arr, compress=gz)


def test_raw_idx_files_are_listed_as_unverified(tmp_path):
    d = tmp_path / "raw"
    _write_mnist(d, gz=False)
    ds = load_dataset("mnist", path=str(d))
    assert ds.unverified == [str(d / f.name.removesuffix(".gz")) for f in mnist.MNIST_FILES]
    assert ds.extra["verified"] is False


def test_gzip_under_a_raw_name_loads_and_is_listed_as_unverified(tmp_path):
    d = tmp_path / "raw"
    _write_mnist(d, gz=False)
    write_idx(d / "t10k-labels-idx1-ubyte", (np.arange(5) % 10).astype(np.uint8), compress=True)
    ds = load_dataset("mnist", path=str(d))
    assert len(ds.test) == 5 and str(d / "t10k-labels-idx1-ubyte") in ds.unverified


def test_gzip_bomb_under_a_raw_mnist_name_is_a_data_error(tmp_path):
    d = tmp_path / "raw"
    _write_mnist(d, gz=False)
    (d / "train-labels-idx1-ubyte").write_bytes(_bomb((20,), extra_mib=64))
    with pytest.raises(DataError, match="train-labels-idx1-ubyte.*trailing"):
        load_dataset("mnist", path=str(d))


def test_verified_and_generated_datasets_have_nothing_unverified(tmp_path, monkeypatch):
    d = tmp_path / "gz"
    _write_mnist(d, gz=True)
    monkeypatch.setattr(mnist, "MNIST_FILES", _pin(mnist.MNIST_FILES, d))
    assert load_dataset("mnist", path=str(d)).unverified == []
    assert load_dataset("shapes", size=100).unverified == []
