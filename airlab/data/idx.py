"""A small, strict reader for the IDX format (MNIST, Fashion-MNIST).

Layout: two zero bytes, a dtype code, the number of dimensions, then one big-endian uint32 per
dimension, then the data in C order (big-endian for multi-byte types). Files may be gzipped,
whatever their name says: the first two bytes (1f 8b) decide. Everything that does not add up
(magic, dtype code, dimensions, size) is a DataError naming the file, never a numpy exception
deep inside a reshape, an OverflowError or a MemoryError: the header is read first, checked
against the file, and no more than the size it declares is ever read or decompressed.
"""

from __future__ import annotations

import gzip
import io
import math
import stat
import struct
import zlib
from pathlib import Path
from typing import BinaryIO, NoReturn, Sequence

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
# Deflate expands at most 1032:1 (a 258-byte match coded in 2 bits), so a gzip file of n bytes
# cannot hold more than 1032 * n: a header declaring more is refused before anything is read.
_DEFLATE_MAX_RATIO = 1032
_MAX_BYTES = np.iinfo(np.intp).max
_CHUNK = 1 << 20
_CORRUPT = "the file is corrupt or truncated: delete it and download it again"


def read_idx_bytes(raw: bytes, *, name: str = "<bytes>", ndim: int | None = None,
                   dtype: np.dtype | type | None = None,
                   shape: Sequence[int | None] | None = None) -> np.ndarray:
    """Parse IDX data (gzipped or not) already in memory. `name` is used in error messages."""
    return _read(io.BytesIO(raw), name=name, size=len(raw), ndim=ndim, dtype=dtype, shape=shape)


def read_idx(path: str | Path, *, ndim: int | None = None, dtype: np.dtype | type | None = None,
             shape: Sequence[int | None] | None = None) -> np.ndarray:
    """Read an IDX file (gzipped or raw, told apart by its first two bytes, not its name).

    Optionally require a number of dimensions, a dtype and a shape (None: any size); these are
    checked against the header, before any data is read. Memory is bounded by the size the header
    declares, and the header is checked against the file first: a raw file must hold exactly the
    declared bytes, and a gzip file can expand at most 1032:1, so a forged header or a gzip bomb
    is a DataError, never a MemoryError.
    """
    path = Path(path)
    try:
        st = path.stat()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if not stat.S_ISREG(st.st_mode):
        raise DataError(f"{path}: not a regular file", hint="point data.path at a directory of IDX files")
    try:
        fh = open(path, "rb")
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from exc
    with fh:
        return _read(fh, name=str(path), size=st.st_size, ndim=ndim, dtype=dtype, shape=shape)


def _read(fh: BinaryIO, *, name: str, size: int, ndim: int | None, dtype, shape) -> np.ndarray:
    compressed = fh.read(2) == _GZIP_MAGIC
    fh.seek(0)
    stream: BinaryIO = gzip.GzipFile(fileobj=fh, mode="rb") if compressed else fh
    try:
        return _parse(stream, name=name, size=size, compressed=compressed,
                      want_ndim=ndim, want_dtype=dtype, want_shape=shape)
    except (OSError, EOFError, zlib.error) as exc:
        if compressed:
            raise DataError(f"{name}: not a valid gzip file ({exc})", hint=_CORRUPT) from exc
        raise DataError(f"cannot read {name}: {getattr(exc, 'strerror', None) or exc}") from exc


def _parse(stream: BinaryIO, *, name: str, size: int, compressed: bool,
           want_ndim: int | None, want_dtype, want_shape) -> np.ndarray:
    head = stream.read(4)
    if len(head) < 4:
        raise DataError(f"{name}: too short to be an IDX file ({len(head)} bytes)", hint=_CORRUPT)
    if head[0] != 0 or head[1] != 0:
        raise DataError(f"{name}: not an IDX file (magic number starts with {head[:2].hex()}, expected 0000)",
                        hint="the file is corrupt or not in IDX format")
    code, ndim = head[2], head[3]
    if code not in IDX_DTYPES:
        raise DataError(f"{name}: unknown IDX dtype code 0x{code:02x}; expected one of "
                        + ", ".join(f"0x{c:02x}" for c in IDX_DTYPES))
    if not 1 <= ndim <= _MAX_NDIM:
        raise DataError(f"{name}: IDX header gives {ndim} dimensions; expected 1 to {_MAX_NDIM}")
    header = 4 + 4 * ndim
    raw_dims = stream.read(4 * ndim)
    if len(raw_dims) < 4 * ndim:
        raise DataError(f"{name}: truncated IDX header ({4 + len(raw_dims)} bytes, header needs {header})",
                        hint=_CORRUPT)
    dims = struct.unpack(f">{ndim}I", raw_dims)
    dtype = IDX_DTYPES[code]
    _check_wanted(name, dims, dtype, want_ndim, want_dtype, want_shape)

    # Python integers: no overflow however large the header's dimensions are
    expected = math.prod(dims) * dtype.itemsize
    nonzero = math.prod(d for d in dims if d) * dtype.itemsize
    if nonzero > _MAX_BYTES:
        raise DataError(f"{name}: IDX header's dimensions {dims} overflow: {nonzero:,} bytes is more than "
                        f"any array can hold", hint=_CORRUPT)
    if compressed:
        capacity = size * _DEFLATE_MAX_RATIO
        if header + expected > capacity:
            raise DataError(f"{name}: IDX header's dimensions {dims} need {expected:,} bytes of data, more than a "
                            f"gzip file of {size:,} bytes can expand to (at most {capacity:,})", hint=_CORRUPT)
    elif size - header != expected:
        _size_mismatch(name, dims, expected, size - header)

    try:
        buf = np.empty(expected, dtype=np.uint8)
    except MemoryError:
        raise DataError(f"{name}: IDX header's dimensions {dims} need {expected:,} bytes of data, more than "
                        f"this machine can allocate",
                        hint="the file is corrupt, or too large for this machine's memory") from None
    view = memoryview(buf)
    got = 0
    while got < expected:  # bounded reads: never more than the declared size in memory
        n = stream.readinto(view[got:got + _CHUNK])
        if not n:
            break
        got += n
    if got < expected:
        _size_mismatch(name, dims, expected, got)
    if stream.read(1):  # one byte past the declared size, decompressed in a bounded step
        _size_mismatch(name, dims, expected, None)

    arr = buf.view(dtype)
    if not dtype.isnative:  # to native byte order, in place
        arr.byteswap(inplace=True)
        arr = arr.view(dtype.newbyteorder())
    return arr.reshape(dims)


def _size_mismatch(name: str, dims: tuple[int, ...], expected: int, actual: int | None) -> NoReturn:
    what = "truncated" if actual is not None and actual < expected else "has trailing bytes"
    found = f"found {actual:,}" if actual is not None else "found more"
    raise DataError(f"{name}: IDX data {what}: dimensions {dims} need {expected:,} bytes of data, {found}",
                    hint=_CORRUPT)


def _check_wanted(name: str, dims: tuple[int, ...], dtype: np.dtype, want_ndim, want_dtype, want_shape) -> None:
    if want_ndim is not None and len(dims) != want_ndim:
        raise DataError(f"{name}: expected an IDX array with {want_ndim} dimensions, found shape {dims}")
    if want_dtype is not None and dtype.newbyteorder("=") != np.dtype(want_dtype):
        raise DataError(f"{name}: expected IDX dtype {np.dtype(want_dtype)}, found {dtype.newbyteorder('=')}")
    if want_shape is not None:
        want = tuple(want_shape)
        if len(want) != len(dims) or any(w is not None and w != d for w, d in zip(want, dims)):
            pretty = "(" + ", ".join("N" if w is None else str(w) for w in want) + ")"
            raise DataError(f"{name}: expected IDX shape {pretty}, found {dims}")


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
