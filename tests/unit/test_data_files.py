"""Datasets read from files: lookup order, checksums, downloads (served locally), offline errors,
and the MNIST, CIFAR-10 and tiny-shakespeare readers on tiny generated fixtures."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import tarfile
import urllib.error
from pathlib import Path

import numpy as np
import pytest

import airlab.data.cifar as cifar
import airlab.data.files as files
import airlab.data.mnist as mnist
import airlab.data.text as text
from airlab.data import load_dataset
from airlab.data.idx import write_idx
from airlab.errors import DataError


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """No test may touch the network or the user's cache."""
    monkeypatch.setenv("AIRLAB_DATA_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("AIRLAB_OFFLINE", "1")

    def no_network(*args, **kwargs):
        raise AssertionError("a test tried to use the network")

    monkeypatch.setattr(files, "_urlopen", no_network)


def _sha(path: Path) -> tuple[str, str]:
    raw = path.read_bytes()
    return hashlib.sha256(raw).hexdigest(), hashlib.md5(raw).hexdigest()


def _pin_to(specs, directory: Path):
    """The same RemoteFiles, with digests pinned to the fixture files in `directory`."""
    out = []
    for spec in specs:
        sha, md5 = _sha(directory / spec.name)
        out.append(dataclasses.replace(spec, sha256=sha, md5=md5, size=(directory / spec.name).stat().st_size))
    return out


def _write_mnist(directory: Path, n_train=50, n_test=20, gz=True, seed=0) -> dict[str, np.ndarray]:
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    arrays = {
        mnist.TRAIN_IMAGES: rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        mnist.TRAIN_LABELS: (np.arange(n_train) % 10).astype(np.uint8),
        mnist.TEST_IMAGES: rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        mnist.TEST_LABELS: (np.arange(n_test) % 10).astype(np.uint8),
    }
    for name, arr in arrays.items():
        write_idx(directory / (name if gz else name.removesuffix(".gz")), arr)
    return arrays


@pytest.fixture
def mnist_dir(tmp_path, monkeypatch):
    d = tmp_path / "mnist-files"
    arrays = _write_mnist(d)
    monkeypatch.setattr(mnist, "MNIST_FILES", _pin_to(mnist.MNIST_FILES, d))
    return d, arrays


# --- MNIST ----------------------------------------------------------------------------------


def test_mnist_from_a_path(mnist_dir):
    d, arrays = mnist_dir
    ds = load_dataset("mnist", path=str(d), seed=0)
    assert ds.kind == "image" and ds.num_classes == 10 and ds.class_names == [str(i) for i in range(10)]
    assert (len(ds.train), len(ds.val), len(ds.test)) == (45, 5, 20)
    for split in ds.splits().values():
        assert split.x.dtype == np.float32 and split.x.shape[1:] == (1, 28, 28)
        assert split.y.dtype == np.int64
    # pixels are scaled by 1/255, test order is the file's order
    np.testing.assert_allclose(ds.test.x[:, 0] * 255.0, arrays[mnist.TEST_IMAGES], atol=1e-3)
    np.testing.assert_array_equal(ds.test.y, arrays[mnist.TEST_LABELS])
    assert "sha256 verified" in ds.source and str(d) in ds.source
    assert ds.extra["verified"] is True


def test_mnist_val_split_depends_only_on_seed(mnist_dir):
    d, arrays = mnist_dir
    a = load_dataset("mnist", path=str(d), seed=3)
    b = load_dataset("mnist", path=str(d), seed=3)
    c = load_dataset("mnist", path=str(d), seed=4)
    np.testing.assert_array_equal(a.val.x, b.val.x)
    np.testing.assert_array_equal(a.train.y, b.train.y)
    assert not np.array_equal(a.val.x, c.val.x)
    # train and val partition the training file
    pool = np.concatenate([a.train.x, a.val.x])[:, 0] * 255.0
    ref = arrays[mnist.TRAIN_IMAGES].astype(np.float32)
    assert sorted(map(lambda r: r.round().astype(np.uint8).tobytes(), pool)) == \
        sorted(map(lambda r: r.tobytes(), ref.astype(np.uint8)))


def test_mnist_limit(mnist_dir):
    d, _ = mnist_dir
    ds = load_dataset("mnist", path=str(d), limit=7)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (7, 5, 7)


def test_mnist_uncompressed_files_are_accepted_unverified(tmp_path):
    d = tmp_path / "raw"
    _write_mnist(d, gz=False)
    ds = load_dataset("mnist", path=str(d))
    assert len(ds.test) == 20
    assert ds.extra["verified"] is False and "not verified" in ds.source


def test_mnist_found_in_the_cache_dir(tmp_path, monkeypatch):
    cache = tmp_path / "cache" / "mnist"
    _write_mnist(cache)
    monkeypatch.setattr(mnist, "MNIST_FILES", _pin_to(mnist.MNIST_FILES, cache))
    ds = load_dataset("mnist")
    assert len(ds.train) + len(ds.val) == 50 and "(cache" in ds.source


def test_fashion_mnist_class_names(tmp_path, monkeypatch):
    d = tmp_path / "fashion"
    _write_mnist(d)
    monkeypatch.setattr(mnist, "FASHION_FILES", _pin_to(mnist.FASHION_FILES, d))
    ds = load_dataset("fashion_mnist", path=str(d))
    assert ds.class_names[0] == "T-shirt/top" and ds.class_names[9] == "Ankle boot"


def test_checksum_mismatch_names_file_and_both_digests(tmp_path):
    d = tmp_path / "wrong"
    _write_mnist(d)  # real names, fixture content: does not match the canonical pins
    with pytest.raises(DataError) as info:
        load_dataset("mnist", path=str(d))
    msg = str(info.value)
    actual_sha, _ = _sha(d / mnist.TRAIN_IMAGES)
    assert str(d / mnist.TRAIN_IMAGES) in msg
    assert "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609" in msg
    assert actual_sha in msg
    assert "delete" in info.value.hint


def test_inconsistent_image_and_label_counts(tmp_path, monkeypatch):
    d = tmp_path / "bad"
    _write_mnist(d)
    write_idx(d / mnist.TRAIN_LABELS, np.zeros(49, np.uint8))
    monkeypatch.setattr(mnist, "MNIST_FILES", _pin_to(mnist.MNIST_FILES, d))
    with pytest.raises(DataError, match="50 images but .* 49 labels"):
        load_dataset("mnist", path=str(d))


def test_offline_missing_files_is_one_clear_error(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError) as info:
        load_dataset("mnist", path=str(empty))
    msg, hint = str(info.value), info.value.hint
    first = info.value.message  # the error line: what, why and where, alone
    assert "\n" not in first and first.startswith("dataset 'mnist': 4 file(s) missing (")
    assert "AIRLAB_OFFLINE is set" in first and str(empty) in first
    for spec in mnist.MNIST_FILES:
        assert spec.name in msg and spec.sha256 in msg and spec.md5 in msg
        assert spec.urls[0] in msg and spec.urls[1] in msg
    assert "AIRLAB_OFFLINE" in msg
    cache = tmp_path / "cache" / "mnist"
    assert str(cache) in msg and str(empty) in msg
    assert str(cache) in hint and "data.path" in hint


def test_path_that_does_not_exist(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_dataset("mnist", path=str(tmp_path / "nowhere"))


# --- downloads, served without a network ----------------------------------------------------


class _Response(io.BytesIO):
    pass


def _serve(monkeypatch, table: dict[str, bytes | Exception]):
    """Replace urlopen: URL -> bytes served, or an exception raised. Records the URLs asked."""
    asked = []

    def fake_urlopen(request, timeout=None):
        url = request.full_url
        asked.append(url)
        assert timeout == files.TIMEOUT_S
        answer = table.get(url, urllib.error.URLError("no route"))
        if isinstance(answer, Exception):
            raise answer
        return _Response(answer)

    monkeypatch.setattr(files, "_urlopen", fake_urlopen)
    monkeypatch.delenv("AIRLAB_OFFLINE")
    return asked


def test_download_falls_back_to_the_next_mirror_and_verifies(tmp_path, monkeypatch):
    payload = b"First Citizen:\nBefore we proceed any further, hear me speak.\n" * 20
    spec = dataclasses.replace(text.TINYSHAKESPEARE_FILES[0],
                               sha256=hashlib.sha256(payload).hexdigest(),
                               md5=hashlib.md5(payload).hexdigest(), size=len(payload),
                               urls=("https://mirror-a/input.txt", "https://mirror-b/input.txt"))
    monkeypatch.setattr(text, "TINYSHAKESPEARE_FILES", [spec])
    asked = _serve(monkeypatch, {"https://mirror-a/input.txt": urllib.error.HTTPError(
        "https://mirror-a/input.txt", 503, "Service Unavailable", {}, None),
        "https://mirror-b/input.txt": payload})
    ds = load_dataset("tinyshakespeare")
    assert asked == list(spec.urls)
    dest = tmp_path / "cache" / "tinyshakespeare" / "input.txt"
    assert dest.read_bytes() == payload
    assert not [p for p in dest.parent.iterdir() if p.name != "input.txt"]  # no temp files left
    assert ds.decode(np.concatenate([ds.train.x, ds.val.x])) == payload.decode()
    assert "download" in ds.source
    # second load: found in the cache, no network
    asked.clear()
    load_dataset("tinyshakespeare")
    assert asked == []


def test_download_with_wrong_content_everywhere_fails_and_leaves_nothing(tmp_path, monkeypatch):
    spec = text.TINYSHAKESPEARE_FILES[0]
    _serve(monkeypatch, {url: b"<html>captive portal</html>" for url in spec.urls})
    with pytest.raises(DataError) as info:
        load_dataset("tinyshakespeare")
    msg = str(info.value)
    assert "download failed" in msg and "checksum mismatch" in msg
    assert spec.sha256 in msg and hashlib.sha256(b"<html>captive portal</html>").hexdigest() in msg
    cache = tmp_path / "cache" / "tinyshakespeare"
    assert not cache.exists() or list(cache.iterdir()) == []


def test_download_unreachable_lists_every_url(tmp_path, monkeypatch):
    _serve(monkeypatch, {})
    with pytest.raises(DataError) as info:
        load_dataset("fashion_mnist")
    msg = str(info.value)
    for spec in mnist.FASHION_FILES:
        for url in spec.urls:
            assert f"{url}: unreachable" in msg
    assert "AIRLAB_OFFLINE" not in msg


def test_download_larger_than_expected_is_cut_off(tmp_path, monkeypatch):
    spec = dataclasses.replace(text.TINYSHAKESPEARE_FILES[0], size=10, urls=("https://m/input.txt",))
    monkeypatch.setattr(text, "TINYSHAKESPEARE_FILES", [spec])
    _serve(monkeypatch, {"https://m/input.txt": b"x" * 200_000})
    with pytest.raises(DataError, match="larger than the expected 10 bytes"):
        load_dataset("tinyshakespeare")


# --- tiny shakespeare -----------------------------------------------------------------------


def test_tinyshakespeare_from_a_path(tmp_path, monkeypatch):
    d = tmp_path / "shakes"
    d.mkdir()
    body = "ROMEO:\nBut soft, what light through yonder window breaks?\n\nJULIET:\nAy me!\n" * 13
    (d / "input.txt").write_text(body)
    monkeypatch.setattr(text, "TINYSHAKESPEARE_FILES", _pin_to(text.TINYSHAKESPEARE_FILES, d))
    ds = load_dataset("tinyshakespeare", path=str(d))
    assert ds.kind == "text" and ds.test is None and ds.vocab == sorted(set(body))
    n = len(body)
    assert len(ds.train) == int(n * 0.9) and len(ds.train) + len(ds.val) == n
    assert ds.decode(ds.train.x) + ds.decode(ds.val.x) == body
    assert ds.train.x.dtype == np.int32
    limited = load_dataset("tinyshakespeare", path=str(d), limit=50)
    assert (len(limited.train), len(limited.val)) == (50, 50)


def test_tinyshakespeare_with_the_wrong_text_is_rejected(tmp_path):
    d = tmp_path / "other"
    d.mkdir()
    (d / "input.txt").write_text("not shakespeare\n")
    with pytest.raises(DataError, match="checksum mismatch") as info:
        load_dataset("tinyshakespeare", path=str(d))
    assert "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed" in str(info.value)
    assert "6fb458f1232090904fb40fe944165e91" in str(info.value)  # the MD5 from results.md


# --- CIFAR-10 -------------------------------------------------------------------------------


def _records(n: int, seed: int) -> tuple[bytes, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, n).astype(np.uint8)
    x = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
    raw = b"".join(bytes([y[i]]) + x[i].tobytes() for i in range(n))
    return raw, x, y


def _add(tar: tarfile.TarFile, name: str, payload: bytes, **kw) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    for k, v in kw.items():
        setattr(info, k, v)
    tar.addfile(info, io.BytesIO(payload))


def _write_cifar(directory: Path, per_batch=4, n_test=3, extra=None) -> tuple[np.ndarray, ...]:
    directory.mkdir(parents=True, exist_ok=True)
    xs, ys = [], []
    with tarfile.open(directory / cifar.ARCHIVE, "w:gz") as tar:
        _add(tar, cifar.PREFIX + "batches.meta.txt", b"airplane\n")
        for i, member in enumerate(cifar.TRAIN_MEMBERS):
            raw, x, y = _records(per_batch, i)
            _add(tar, member, raw)
            xs.append(x)
            ys.append(y)
        raw, tx, ty = _records(n_test, 99)
        _add(tar, cifar.TEST_MEMBER, raw)
        for name, payload in (extra or {}).items():
            _add(tar, name, payload)
    return np.concatenate(xs), np.concatenate(ys), tx, ty


def test_cifar10_from_a_tiny_archive(tmp_path, monkeypatch):
    d = tmp_path / "c10"
    x, y, tx, ty = _write_cifar(d, extra={"../../evil.txt": b"pwned", "/abs/evil.txt": b"pwned"})
    monkeypatch.setattr(cifar, "CIFAR10_FILES", _pin_to(cifar.CIFAR10_FILES, d))
    ds = load_dataset("cifar10", path=str(d), val_fraction=0.25, seed=0)
    assert ds.class_names[0] == "airplane" and ds.num_classes == 10
    assert (len(ds.train), len(ds.val), len(ds.test)) == (15, 5, 3)
    assert ds.test.x.shape == (3, 3, 32, 32) and ds.test.x.dtype == np.float32
    # channel planes in file order: R, G, B; rows then columns
    np.testing.assert_allclose(ds.test.x * 255.0, tx, atol=1e-3)
    np.testing.assert_array_equal(ds.test.y, ty)
    pool_y = np.sort(np.concatenate([ds.train.y, ds.val.y]))
    np.testing.assert_array_equal(pool_y, np.sort(y.astype(np.int64)))
    # nothing extracted anywhere
    assert not (tmp_path / "evil.txt").exists() and not (d / "cifar-10-batches-bin").exists()
    assert sorted(p.name for p in d.iterdir()) == [cifar.ARCHIVE]


def test_cifar10_archive_missing_a_batch(tmp_path, monkeypatch):
    d = tmp_path / "c10"
    d.mkdir()
    with tarfile.open(d / cifar.ARCHIVE, "w:gz") as tar:
        _add(tar, cifar.TRAIN_MEMBERS[0], _records(2, 0)[0])
    monkeypatch.setattr(cifar, "CIFAR10_FILES", _pin_to(cifar.CIFAR10_FILES, d))
    with pytest.raises(DataError, match="archive lacks .*data_batch_2.bin"):
        load_dataset("cifar10", path=str(d))


def test_cifar10_member_that_is_a_link_is_refused(tmp_path, monkeypatch):
    d = tmp_path / "c10"
    d.mkdir()
    with tarfile.open(d / cifar.ARCHIVE, "w:gz") as tar:
        _add(tar, cifar.TRAIN_MEMBERS[0], b"", type=tarfile.SYMTYPE, linkname="/etc/passwd")
    monkeypatch.setattr(cifar, "CIFAR10_FILES", _pin_to(cifar.CIFAR10_FILES, d))
    with pytest.raises(DataError, match="not a regular file"):
        load_dataset("cifar10", path=str(d))


def test_cifar10_batch_of_the_wrong_length(tmp_path, monkeypatch):
    d = tmp_path / "c10"
    d.mkdir()
    with tarfile.open(d / cifar.ARCHIVE, "w:gz") as tar:
        for member in cifar.TRAIN_MEMBERS + [cifar.TEST_MEMBER]:
            _add(tar, member, _records(2, 0)[0][:-1])
    monkeypatch.setattr(cifar, "CIFAR10_FILES", _pin_to(cifar.CIFAR10_FILES, d))
    with pytest.raises(DataError, match="3073-byte records"):
        load_dataset("cifar10", path=str(d))


def test_cifar10_corrupt_archive(tmp_path, monkeypatch):
    d = tmp_path / "c10"
    _write_cifar(d)
    raw = (d / cifar.ARCHIVE).read_bytes()
    (d / cifar.ARCHIVE).write_bytes(raw[: len(raw) // 2])
    monkeypatch.setattr(cifar, "CIFAR10_FILES", _pin_to(cifar.CIFAR10_FILES, d))
    with pytest.raises(DataError, match="cannot read the archive"):
        load_dataset("cifar10", path=str(d))


def test_cifar10_offline_error_names_the_archive(tmp_path):
    with pytest.raises(DataError) as info:
        load_dataset("cifar10")
    msg = str(info.value)
    assert cifar.ARCHIVE in msg and "c32a1d4ab5d03f1284b67883e8d87530" in msg
    assert "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz" in msg
