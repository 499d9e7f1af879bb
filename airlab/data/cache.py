"""The memory-mapped cache of the user's data: decoded once, read by every run after.

A folder of JPEGs is decoded, resized and converted once into `.npy` arrays under
`data_dir()/cache/<kind>-<key>/`; every later run memory-maps them (`np.load(mmap_mode="r")`), so
a split larger than memory is read a batch at a time and a split that fits is read at disk speed.

The key is a hash of the files' contents (and of the options that shape the arrays: image size,
channels, tokenizer...), so a changed file, an added one or a removed one builds a new cache and
an unchanged folder finds its old one. Hashing a large folder's contents on every start would
cost a read of every byte; the content key of a folder whose files' (path, size, mtime) are
unchanged is remembered (`keys.json`), so only a changed folder is read again.

A cache is built into a temporary directory and renamed into place when complete, under an
exclusive lock: two processes of one run (or two runs) that need the same cache build it once,
and a build interrupted at any moment leaves no half cache under the real name.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from airlab.data.files import data_dir
from airlab.errors import DataError, EnvironmentProblem

MANIFEST = "manifest.json"
_KEYS = "keys.json"


def cache_root() -> Path:
    """$AIRLAB_CACHE_DIR, else data_dir()/cache."""
    env = os.environ.get("AIRLAB_CACHE_DIR")
    return Path(env).expanduser() if env else data_dir() / "cache"


def _stat_key(files: Sequence[Path], root: Path | None, options: dict) -> str:
    h = hashlib.sha256(json.dumps(options, sort_keys=True, default=str).encode())
    for f in files:
        st = f.stat()
        name = str(f.relative_to(root)) if root is not None else str(f.resolve())
        h.update(f"{name}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ino}\n".encode())
    return h.hexdigest()


def _content_key(files: Sequence[Path], root: Path | None, options: dict) -> str:
    h = hashlib.sha256(json.dumps(options, sort_keys=True, default=str).encode())
    for f in files:
        name = str(f.relative_to(root)) if root is not None else f.name
        with open(f, "rb") as fh:
            digest = hashlib.file_digest(fh, "sha256").hexdigest()
        h.update(f"{name}\0{digest}\n".encode())
    return h.hexdigest()


@contextmanager
def _locked(root: Path, name: str) -> Iterator[None]:
    try:
        root.mkdir(parents=True, exist_ok=True)
        fh = open(root / f".{name}.lock", "a+b")
    except OSError as e:
        raise EnvironmentProblem(f"cannot write the data cache in {root}: {e.strerror}",
                                 hint="free disk space, or set AIRLAB_CACHE_DIR to a writable folder") from None
    with fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _write_json(path: Path, data) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, sort_keys=True)
    os.replace(tmp, path)


def _known_keys(croot: Path) -> dict:
    """The remembered content keys, by stat key (read under the "keys" lock)."""
    try:
        known = json.loads((croot / _KEYS).read_text())
    except (OSError, ValueError):
        return {}
    return known if isinstance(known, dict) else {}


def content_key(files: Sequence[Path], options: dict, root: Path | None = None) -> str:
    """A hash of the files' contents (named relative to `root`, or by file name) and of `options`;
    reading the files only when their (path, size, mtime) changed since the last time."""
    files = sorted(files)
    croot = cache_root()
    try:
        stat = _stat_key(files, root, options)
        with _locked(croot, "keys"):
            known = _known_keys(croot).get(stat)
        if isinstance(known, str):
            return known
        key = _content_key(files, root, options)
    except OSError as e:
        raise DataError(f"cannot read {e.filename}: {e.strerror}") from None
    with _locked(croot, "keys"):
        known = _known_keys(croot)
        known[stat] = key
        if len(known) > 1000:  # the newest thousand folders
            known = dict(list(known.items())[-1000:])
        _write_json(croot / _KEYS, known)
    return key


def build(kind: str, key: str, writer: Callable[[Path], dict]) -> tuple[Path, dict]:
    """The cache directory for `key`, built by `writer(tmp_dir) -> manifest` when not there yet.
    `writer` writes .npy files into tmp_dir (with `new_array`) and returns what the loader needs
    to read them back (JSON-able: class names, shapes, counts...). Returns (directory, manifest)."""
    croot = cache_root()
    final = croot / f"{kind}-{key[:24]}"
    manifest = final / MANIFEST
    try:
        if manifest.is_file():
            return final, json.loads(manifest.read_text())
    except (OSError, ValueError):
        pass
    with _locked(croot, f"{kind}-{key[:24]}"):
        if manifest.is_file():  # another process built it while this one waited
            return final, json.loads(manifest.read_text())
        if final.exists():  # a cache without its manifest: not complete (an old crash); rebuild
            shutil.rmtree(final, ignore_errors=True)
        building = f".{kind}-{key[:24]}-building-"
        for stale in croot.glob(building + "*"):  # left by a build killed outright (this lock is free)
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(dir=croot, prefix=building))
        try:
            meta = dict(writer(tmp))
            meta.setdefault("kind", kind)
            meta["key"] = key
            _write_json(tmp / MANIFEST, meta)
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return final, meta


def new_array(directory: Path, name: str, shape: tuple[int, ...], dtype) -> np.memmap:
    """A writable memory-mapped .npy file `name`.npy in `directory` (for a writer to fill)."""
    path = directory / f"{name}.npy"
    array = np.lib.format.open_memmap(path, mode="w+", dtype=np.dtype(dtype), shape=shape)
    # the file is sparse: reserve its blocks now, so a full disk is an error here and not a SIGBUS
    # when a page of the map is first written
    try:
        with open(path, "r+b") as fh:
            os.posix_fallocate(fh.fileno(), 0, os.fstat(fh.fileno()).st_size)
    except OSError as e:
        if e.errno in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):  # a filesystem without fallocate
            return array
        raise EnvironmentProblem(f"cannot write the data cache in {directory.parent}: {e.strerror} "
                                 f"({name}.npy needs {os.stat(path).st_size:,} bytes)",
                                 hint="free disk space, or set AIRLAB_CACHE_DIR to a folder on a larger disk") from None
    return array


def open_array(directory: Path, name: str) -> np.ndarray:
    """`name`.npy of a built cache, memory-mapped read-only."""
    try:
        return np.load(directory / f"{name}.npy", mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as e:
        raise DataError(f"the data cache {directory} is damaged ({name}.npy: {e})",
                        hint=f"delete {directory} and run again to rebuild it") from None


__all__ = ["build", "cache_root", "content_key", "new_array", "open_array"]
