"""`data.name: npz`: the user's own arrays, a `.npz` file as `np.savez` writes it.

Arrays read (any others are ignored and listed in `dataset.extra["ignored_arrays"]`, except names
starting with x_ or y_, which are refused so that a misspelt `x_valid` is not silently dropped):

    x_train, y_train            required
    x_val, y_val                optional, together: used as given (else val is carved from train
                                by data.val_fraction and the seed)
    x_test, y_test              optional, together (else data.test_fraction carves one)
    class_names                 optional 1-D array of strings, one per class

Images `x_*`: (N, H, W) grayscale, or (N, H, W, C) "NHWC", or (N, C, H, W) "NCHW" with C 1 or 3.
The layout of a 4-D array is read from its shape: NHWC when the last axis is 1 or 3 and axis 1 is
not; NCHW when axis 1 is 1 or 3 and the last axis is not; when both are (e.g. (N, 3, 32, 3)),
NCHW only if it gives square images and NHWC does not, else NHWC (numpy's and Pillow's order).
Every x array has the shape of x_train's samples. dtype: uint8 (0..255) is kept as uint8; other
integer types are accepted when every value is in 0..255 (stored as uint8); float16/32/64 must be
in [0, 1] and are stored as float32. All x arrays store to one dtype. The layout and dtype found are
in `dataset.extra` ({"layout": "NHWC", "dtype": "uint8"}) for the log to state.

Labels `y_*`: integers 0..K-1, one per sample ((N,) or (N, 1)); K = len(class_names), else the
largest label + 1 over every split.

The file is loaded with `allow_pickle=False` (an object array is refused). It is converted once
into the cache (airlab.data.cache) as (N, C, H, W) arrays, a chunk at a time, and memory-mapped
from there: an uncompressed member (np.savez) is itself memory-mapped inside the zip, so a file
larger than memory converts in memory of one chunk; a compressed member (np.savez_compressed) is
read whole, one member at a time.
"""

from __future__ import annotations

import struct
import zipfile
from pathlib import Path

import numpy as np

from airlab.data import cache, splits
from airlab.data.base import Dataset
from airlab.errors import DataError

SPLITS = ("train", "val", "test")
KNOWN = tuple(f"{p}_{s}" for s in SPLITS for p in ("x", "y")) + ("class_names",)
CHUNK_BYTES = 64 << 20  # bytes of x read and converted at a time
VERSION = 1  # of the cache's contents

_SAVE_HINT = "save it with np.savez(path, x_train=x, y_train=y) (and x_val/y_val, x_test/y_test, class_names)"
_PICKLE = "is an object array, which only pickle can load; airlab loads no pickles"
_NUMBERS_HINT = "store numbers: np.stack the images into one uint8 or float array"


class _File:
    """The named arrays of a .npz, each read on demand: memory-mapped inside the zip when stored
    uncompressed, else read whole by numpy (one member at a time)."""

    def __init__(self, path: Path):
        self.path = path
        if not zipfile.is_zipfile(path):
            with open(path, "rb") as fh:
                head = fh.read(6)
            what = "a .npy file (one array)" if head == b"\x93NUMPY" else "not a .npz file (a zip of .npy arrays)"
            raise DataError(f"{path}: {what}; data.name: npz reads named arrays", hint=_SAVE_HINT)
        try:
            self.zip = zipfile.ZipFile(path)
            self.members = {i.filename[:-4]: i for i in self.zip.infolist() if i.filename.endswith(".npy")}
            self.npz = np.load(path, allow_pickle=False)
        except (OSError, ValueError, zipfile.BadZipFile) as e:
            raise DataError(f"{path}: cannot read the .npz file ({e})", hint=_SAVE_HINT) from None
        self.names = set(self.members)

    def close(self) -> None:
        self.npz.close()
        self.zip.close()

    @staticmethod
    def _read_header(fh) -> tuple[tuple[int, ...], bool, np.dtype] | None:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            return np.lib.format.read_array_header_1_0(fh)
        if version == (2, 0):
            return np.lib.format.read_array_header_2_0(fh)
        return None  # format 3.0 (rare): read by numpy

    def _refuse_objects(self, name: str, dtype: np.dtype) -> None:
        if dtype.hasobject:
            raise DataError(f"{self.path}: {name} {_PICKLE}", hint=_NUMBERS_HINT)

    def describe(self, name: str) -> tuple[tuple[int, ...], np.dtype]:
        """(shape, dtype) of member `name` from its header, without reading its data."""
        try:
            with self.zip.open(self.members[name]) as fh:
                header = self._read_header(fh)
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
            raise DataError(f"{self.path}: cannot read {name} ({e})", hint=_SAVE_HINT) from None
        if header is None:
            a = self[name]
            return tuple(a.shape), a.dtype
        shape, _, dtype = header
        self._refuse_objects(name, dtype)
        return tuple(int(d) for d in shape), dtype

    def _mapped(self, name: str) -> np.ndarray | None:
        info = self.members[name]
        if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 0x1:
            return None
        with open(self.path, "rb") as fh:
            fh.seek(info.header_offset)
            local = fh.read(30)
            if len(local) < 30 or local[:4] != b"PK\x03\x04":
                return None
            name_len, extra_len = struct.unpack("<HH", local[26:30])
            fh.seek(info.header_offset + 30 + name_len + extra_len)
            header = self._read_header(fh)
            if header is None:
                return None
            shape, fortran, dtype = header
            offset = fh.tell()
        self._refuse_objects(name, dtype)
        if int(np.prod(shape)) == 0:
            return np.empty(shape, dtype)
        return np.memmap(self.path, dtype=dtype, mode="r", offset=offset, shape=shape,
                         order="F" if fortran else "C")

    def __getitem__(self, name: str) -> np.ndarray:
        """Member `name`: memory-mapped in the zip when stored uncompressed, else read whole."""
        try:
            mapped = self._mapped(name)
            return mapped if mapped is not None else self.npz[name]
        except DataError:
            raise
        except ValueError as e:
            if "allow_pickle" in str(e) or "Object arrays" in str(e):
                raise DataError(f"{self.path}: {name} {_PICKLE}", hint=_NUMBERS_HINT) from None
            raise DataError(f"{self.path}: cannot read {name} ({e})", hint=_SAVE_HINT) from None
        except (OSError, EOFError, zipfile.BadZipFile) as e:
            raise DataError(f"{self.path}: cannot read {name} ({e})", hint=_SAVE_HINT) from None


def _layout(path: Path, name: str, shape: tuple[int, ...]) -> str:
    """"NHW", "NHWC" or "NCHW" by the rule of the module's docstring."""
    if len(shape) == 3:
        return "NHW"
    if len(shape) != 4:
        flat = " (flat vectors: reshape them to (N, H, W))" if len(shape) == 2 else ""
        raise DataError(f"{path}: {name} has shape {shape}; images must be (N, H, W), (N, H, W, C) or (N, C, H, W) "
                        f"with C 1 or 3{flat}")
    first, last = shape[1] in (1, 3), shape[3] in (1, 3)
    if last and not first:
        return "NHWC"
    if first and not last:
        return "NCHW"
    if first and last:
        return "NCHW" if shape[2] == shape[3] and shape[1] != shape[2] else "NHWC"
    raise DataError(f"{path}: {name} has shape {shape}; images need 1 or 3 channels in the last axis (NHWC) or in "
                    "axis 1 (NCHW)", hint="convert RGBA to RGB, or split other channels into separate images")


def _labels(path: Path, name: str, y: np.ndarray, n: int, x_name: str) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        onehot = " (one-hot? store the class index: y.argmax(1))" if y.ndim == 2 else ""
        raise DataError(f"{path}: {name} has shape {tuple(y.shape)}; expected ({n},), one label per sample{onehot}")
    if y.shape[0] != n:
        raise DataError(f"{path}: {name} has {y.shape[0]} labels for {n} samples in {x_name}")
    if y.dtype.kind not in "iuf":
        raise DataError(f"{path}: {name} has dtype {y.dtype}; labels must be integers 0..K-1",
                        hint="map the labels to integers and store the names in class_names")
    return y


def _class_names(path: Path, arr: np.ndarray) -> list[str]:
    arr = np.asarray(arr)
    if arr.ndim != 1 or arr.dtype.kind not in "US":
        raise DataError(f"{path}: class_names has shape {tuple(arr.shape)} and dtype {arr.dtype}; expected a 1-D "
                        "array of strings, one per class", hint="np.savez(..., class_names=np.array(['cat', 'dog']))")
    names = [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in arr.tolist()]
    dupes = sorted({v for v in names if names.count(v) > 1})
    if dupes:
        raise DataError(f"{path}: class_names holds {dupes[0]!r} more than once")
    return names


def _stored_dtype(path: Path, name: str, dtype: np.dtype) -> np.dtype:
    if dtype == np.uint8 or dtype.kind in "iu":
        return np.dtype(np.uint8)
    if dtype.kind == "f":
        return np.dtype(np.float32)
    raise DataError(f"{path}: {name} has dtype {dtype}; images must be uint8 (0..255) or float (0..1)")


def _writer(path: Path):
    def write(tmp: Path) -> dict:
        f = _File(path)
        try:
            return _convert(f, path, tmp)
        finally:
            f.close()

    return write


def _convert(f: _File, path: Path, tmp: Path) -> dict:
    names = f.names
    odd = sorted(n for n in names if n not in KNOWN and n[:2] in ("x_", "y_"))
    if odd:
        raise DataError(f"{path}: array {odd[0]} is not one airlab reads (x_train, y_train, x_val, y_val, x_test, "
                        "y_test, class_names)", hint="rename it (x_val for validation images), or remove it")
    if "x_train" not in names and "y_train" not in names:
        raise DataError(f"{path}: holds no x_train and y_train (found: {', '.join(sorted(names)) or 'nothing'})",
                        hint=_SAVE_HINT)
    for s in SPLITS:
        x, y = f"x_{s}", f"y_{s}"
        if (x in names) != (y in names):
            have, lack = (x, y) if x in names else (y, x)
            raise DataError(f"{path}: has {have} but no {lack}; they go together", hint=_SAVE_HINT)
    present = [s for s in SPLITS if f"x_{s}" in names]
    class_names = _class_names(path, f["class_names"]) if "class_names" in names else None

    shapes, dtypes = {}, {}
    for s in present:  # from the headers: nothing big is read before every check has passed
        shapes[s], dtypes[s] = f.describe(f"x_{s}")
    train_shape = shapes["train"]
    layout = _layout(path, "x_train", train_shape)
    if train_shape[0] == 0:
        raise DataError(f"{path}: x_train holds no samples (shape {train_shape})")
    stored = _stored_dtype(path, "x_train", dtypes["train"])
    for s in present[1:]:
        if shapes[s][1:] != train_shape[1:]:
            raise DataError(f"{path}: x_{s} has shape {shapes[s]} but x_train samples are {train_shape[1:]}",
                            hint=f"store x_{s} as (N, {', '.join(map(str, train_shape[1:]))}), like x_train")
        if _stored_dtype(path, f"x_{s}", dtypes[s]) != stored:
            raise DataError(f"{path}: x_{s} has dtype {dtypes[s]} but x_train has {dtypes['train']}",
                            hint="store every x array as uint8 (0..255), or every one as float (0..1)")

    ys = {s: _labels(path, f"y_{s}", f[f"y_{s}"], shapes[s][0], f"x_{s}") for s in present}
    if class_names is not None:
        k = len(class_names)
    else:
        k = max(int(np.max(y)) + 1 if y.size else 0 for y in ys.values())
    for s in present:
        ys[s] = splits.check_labels(ys[s], k, f"{path}: y_{s}")

    counts = {}
    for s in present:  # one member in memory at a time (none, when stored uncompressed)
        counts[s] = _write_x(path, f"x_{s}", f[f"x_{s}"], layout, stored, tmp)
        cache.new_array(tmp, f"y_{s}", ys[s].shape, np.int64)[:] = ys[s]
    return {"layout": layout, "dtype": dtypes["train"].name, "stored_dtype": stored.name, "counts": counts,
            "class_names": class_names, "num_classes": k,
            "ignored_arrays": sorted(n for n in names if n not in KNOWN), "version": VERSION}


def _write_x(path: Path, name: str, x: np.ndarray, layout: str, stored: np.dtype, tmp: Path) -> int:
    """x as (N, C, H, W) `stored` in tmp/name.npy, converted a chunk at a time; checks the values."""
    n = int(x.shape[0])
    if layout == "NHW":
        sample = (1, *x.shape[1:])
    elif layout == "NHWC":
        sample = (x.shape[3], x.shape[1], x.shape[2])
    else:
        sample = tuple(x.shape[1:])
    out = cache.new_array(tmp, name, (n, *sample), stored)
    per = max(1, CHUNK_BYTES // max(1, int(np.prod(x.shape[1:])) * x.dtype.itemsize))
    lo, hi, finite = np.inf, -np.inf, True
    for start in range(0, n, per):
        block = np.asarray(x[start:start + per])
        if block.size:
            if x.dtype.kind == "f":
                finite = finite and bool(np.isfinite(block).all())
                if finite:
                    lo, hi = min(lo, float(block.min())), max(hi, float(block.max()))
            elif x.dtype != np.uint8:
                lo, hi = min(lo, float(block.min())), max(hi, float(block.max()))
        if not finite:
            raise DataError(f"{path}: {name} holds NaN or infinite values", hint="images must be finite, in [0, 1]")
        if layout == "NHW":
            block = block[:, None]
        elif layout == "NHWC":
            block = block.transpose(0, 3, 1, 2)
        if stored == np.uint8 and x.dtype != np.uint8 and (lo < 0 or hi > 255):
            raise DataError(f"{path}: {name} has dtype {x.dtype} with values in [{lo:g}, {hi:g}]",
                            hint="integer images must be 0..255; store uint8 (or float in [0, 1])")
        out[start:start + per] = block.astype(stored, copy=False)
    if x.dtype.kind == "f" and n and (lo < 0.0 or hi > 1.0):
        raise DataError(f"{path}: {name} has values in [{lo:g}, {hi:g}]; float images must be in [0, 1]",
                        hint="scale to [0, 1] (x / 255) or store uint8")
    out.flush()
    return n


def load(options, *, seed: int) -> Dataset:
    """The .npz file at `options.path` as an image Dataset of (N, C, H, W) arrays (uint8 or
    float32), memory-mapped from the cache (converted on the first load, reused while the file is
    unchanged)."""
    path = Path(str(options.path)).expanduser()
    if not path.exists():
        raise DataError(f"data.path {path} does not exist", hint="give the .npz file of your arrays; " + _SAVE_HINT)
    if not path.is_file():
        raise DataError(f"data.path {path} is not a file (data.name: npz reads one .npz file; a folder of images is "
                        "read by data.name: folder)")
    key = cache.content_key([path], options={"version": VERSION})
    cache_dir, manifest = cache.build("npz", key, _writer(path))

    def arrays(split: str):
        if split not in manifest["counts"]:
            return None
        return cache.open_array(cache_dir, f"x_{split}"), np.array(cache.open_array(cache_dir, f"y_{split}"))

    class_names = manifest["class_names"]
    extra = {"layout": manifest["layout"], "dtype": manifest["dtype"], "stored_dtype": manifest["stored_dtype"],
             "files": dict(manifest["counts"]), "ignored_arrays": list(manifest["ignored_arrays"])}
    ds = splits.image_dataset("npz", options, seed, train=arrays("train"), val=arrays("val"), test=arrays("test"),
                              class_names=class_names, num_classes=int(manifest["num_classes"]), source=str(path),
                              cache=str(cache_dir), extra=extra)
    ds.extra["counts"] = {name: len(split) for name, split in ds.splits().items()}
    ds.meta = {"class_names": class_names, "layout": manifest["layout"], "dtype": manifest["dtype"]}
    return ds


__all__ = ["load"]
