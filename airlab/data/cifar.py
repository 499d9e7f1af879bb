"""`cifar10`: 50,000 train + 10,000 test 32x32 colour images, from the BINARY distribution.

Only `cifar-10-binary.tar.gz` is used (never the Python-pickle version). Its SHA-256 and the
publisher's MD5 are pinned. The six batch files are read straight out of the archive in one
streaming pass, never extracted to disk: only the exact expected member names are read, each
must be a regular file of a whole number of 3,073-byte records (1 label byte, then 1,024 red,
1,024 green and 1,024 blue bytes, row-major), so path traversal or links in the archive are
never followed. A member's size is checked in its tar header before it is read (at most 10,000
records, as published; each name at most once), so memory stays bounded by six batches.
"""

from __future__ import annotations

import tarfile
import zlib

import numpy as np

from airlab.data.files import RemoteFile, fetch, unverified
from airlab.data.raw import RawData
from airlab.errors import DataError

ARCHIVE = "cifar-10-binary.tar.gz"
PREFIX = "cifar-10-batches-bin/"
TRAIN_MEMBERS = [f"{PREFIX}data_batch_{i}.bin" for i in range(1, 6)]
TEST_MEMBER = f"{PREFIX}test_batch.bin"
RECORD = 1 + 3 * 32 * 32
BATCH_RECORDS = 10_000  # records in each batch file of the published archive

CIFAR10_FILES = [
    RemoteFile(
        name=ARCHIVE,
        sha256="c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd",
        md5="c32a1d4ab5d03f1284b67883e8d87530",
        size=170_052_171,
        urls=("https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",),
    )
]
CLASS_NAMES = ["airplane", "automobile", "bird", "cat", "deer",
               "dog", "frog", "horse", "ship", "truck"]


def read_archive(path) -> dict[str, bytes]:
    """The six batch files' bytes, by member name, read without extracting anything."""
    wanted = set(TRAIN_MEMBERS) | {TEST_MEMBER}
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(path, mode="r|gz") as tar:
            for member in tar:
                if member.name not in wanted:
                    continue
                if not member.isfile():
                    raise DataError(f"{path}: archive member {member.name} is not a regular file")
                if member.name in found:
                    raise DataError(f"{path}: archive holds {member.name} more than once",
                                    hint="expected the CIFAR-10 binary version (cifar-10-binary.tar.gz)")
                if member.size > RECORD * BATCH_RECORDS or member.size % RECORD:
                    records, rest = divmod(member.size, RECORD)
                    held = f"{records:,} records" + (f" and {rest} bytes" if rest else "")
                    raise DataError(f"{path}: archive member {member.name} has {member.size:,} bytes "
                                    f"({held}); a batch is a whole number of "
                                    f"{RECORD}-byte records, at most {BATCH_RECORDS:,}",
                                    hint="expected the CIFAR-10 binary version (cifar-10-binary.tar.gz)")
                fh = tar.extractfile(member)
                found[member.name] = fh.read() if fh is not None else b""
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: cannot read the archive ({exc})",
                        hint="the file is corrupt or truncated: delete it and run again to download it") from exc
    absent = sorted(wanted - found.keys())
    if absent:
        raise DataError(f"{path}: archive lacks {', '.join(absent)}",
                        hint="expected the CIFAR-10 binary version (cifar-10-binary.tar.gz)")
    return found


def parse_batch(raw: bytes, name: str) -> tuple[np.ndarray, np.ndarray]:
    """One batch file -> (uint8 (N, 3, 32, 32), int64 (N,))."""
    if len(raw) == 0 or len(raw) % RECORD:
        raise DataError(f"{name}: {len(raw)} bytes is not a whole number of {RECORD}-byte records")
    records = np.frombuffer(raw, dtype=np.uint8).reshape(-1, RECORD)
    y = records[:, 0].astype(np.int64)
    if int(y.max()) > 9:
        raise DataError(f"{name}: labels must be 0..9, found {int(y.max())}")
    x = records[:, 1:].reshape(-1, 3, 32, 32).copy()
    return x, y


def load_cifar10(path=None, size=None) -> RawData:
    found = fetch("cifar10", CIFAR10_FILES, path)
    located = found[ARCHIVE]
    members = read_archive(located.path)
    parts = [parse_batch(members[m], f"{located.path}:{m}") for m in TRAIN_MEMBERS]
    x = np.concatenate([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts])
    tx, ty = parse_batch(members[TEST_MEMBER], f"{located.path}:{TEST_MEMBER}")
    return RawData(kind="image", x=x, y=y, test_x=tx, test_y=ty, class_names=list(CLASS_NAMES),
                   source=located.describe(), extra={"files": {ARCHIVE: str(located.path)}, "verified": True},
                   unverified=unverified(found))
