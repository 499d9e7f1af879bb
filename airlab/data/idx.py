"""A small, strict reader for the IDX format (MNIST, Fashion-MNIST).

Layout: two zero bytes, a dtype code, the number of dimensions, then one big-endian uint32 per
dimension, then the data in C order (big-endian for multi-byte types). Files may be gzipped.
Everything that does not add up (magic, dtype code, dimensions, size) is a DataError naming the
file, never a numpy exception deep inside a reshape.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from airlab.errors import DataError

# dtype code -> numpy dtype (big-endian, as the format specifies)
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"
_MAX_NDIM = 8


def read_idx_bytes(raw: bytes, *, name: str = "<bytes>") -> np.ndarray:
    """Parse IDX data (gzipped or not) already in memory. `name` is used in error messages."""
    if raw[:2] == _GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(f"{name}: not a valid gzip file ({exc})",
                            hint="the file is corrupt or truncated: delete it and download it again") from exc
    if len(raw) < 4:
        raise DataError(f"{name}: too short to be an IDX file ({len(raw)} bytes)",
                        hint="the file is corrupt or truncated: delete it and download it again")
    if raw[0] != 0 or raw[1] != 0:
        raise DataError(f"{name}: not an IDX file (magic number starts with {raw[:2].hex()}, expected 0000)",
                        hint="the file is corrupt or not in IDX format")
    code, ndim = raw[2], raw[3]
    if code not in IDX_DTYPES:
        raise DataError(f"{name}: unknown IDX dtype code 0x{code:02x}; expected one of "
                        + ", ".join(f"0x{c:02x}" for c in IDX_DTYPES))
    if not 1 <= ndim <= _MAX_NDIM:
        raise DataError(f"{name}: IDX header gives {ndim} dimensions; expected 1 to {_MAX_NDIM}")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{name}: truncated IDX header ({len(raw)} bytes, header needs {header})",
                        hint="the file is corrupt or truncated: delete it and download it again")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = IDX_DTYPES[code]
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    actual = len(raw) - header
    if actual != expected:
        what = "truncated" if actual < expected else "has trailing bytes"
        raise DataError(f"{name}: IDX data {what}: dimensions {dims} need {expected} bytes of data, "
                        f"found {actual}",
                        hint="the file is corrupt or truncated: delete it and download it again")
    arr = np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)
    # native byte order, writable copy detached from the (possibly large) bytes object
    return arr.astype(dtype.newbyteorder("="), copy=True)


def read_idx(path: str | Path, *, ndim: int | None = None, dtype: np.dtype | type | None = None) -> np.ndarray:
    """Read an IDX file (gzipped or raw). Optionally require a number of dimensions and a dtype."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from exc
    arr = read_idx_bytes(raw, name=str(path))
    if ndim is not None and arr.ndim != ndim:
        raise DataError(f"{path}: expected an IDX array with {ndim} dimensions, found shape {arr.shape}")
    if dtype is not None and arr.dtype != np.dtype(dtype):
        raise DataError(f"{path}: expected IDX dtype {np.dtype(dtype)}, found {arr.dtype}")
    return arr


def write_idx(path: str | Path, arr: np.ndarray, *, compress: bool | None = None) -> Path:
    """Write an array as IDX (gzip if `compress`, default: when the name ends in .gz).

    Used by tests and by anyone converting their own data to the format.
    """
    path = Path(path)
    arr = np.asarray(arr)
    for code, dt in IDX_DTYPES.items():
        if dt.kind == arr.dtype.kind and dt.itemsize == arr.dtype.itemsize:
            break
    else:
        raise DataError(f"cannot write dtype {arr.dtype} as IDX")
    header = bytes([0, 0, code, arr.ndim]) + np.asarray(arr.shape, dtype=">u4").tobytes()
    payload = header + np.ascontiguousarray(arr, dtype=dt).tobytes()
    if compress is None:
        compress = path.name.endswith(".gz")
    if compress:
        payload = gzip.compress(payload, mtime=0)
    path.write_bytes(payload)
    return path
