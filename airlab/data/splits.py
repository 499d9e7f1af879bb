"""How every dataset is split, written once: the validation (and test) rows carved from the
training rows by a permutation seeded with the run's seed, `limit` for smoke runs, and the
per-channel statistics of `data.normalize`. The user kinds (folder, npz, text, csv) build their
Dataset with these, so a user's folder is split exactly as a built-in dataset is.

A split of a memory-mapped array keeps the array and lists its rows (`Split.rows`): nothing is
copied, and the fast path or the streaming path reads the rows it needs.
"""

from __future__ import annotations

import numpy as np

from airlab.data.base import GATHER_CHUNK, Dataset, Split
from airlab.errors import DataError


def carve(n: int, val_fraction: float, seed: int, test_fraction: float = 0.0,
          what: str = "training samples") -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(train, val, test) rows of n samples, each sorted: val is the first round(n*val_fraction)
    of a permutation seeded with `seed`, test the next round(n*test_fraction) (None when
    test_fraction is 0), train the rest. A fraction > 0 takes at least one sample; train keeps
    at least one. The same rule as the built-in datasets (airlab.data.load_dataset)."""
    need = 1 + (val_fraction > 0) + (test_fraction > 0)
    if n < need:
        raise DataError(f"need at least {need} {what} to carve the splits asked for, found {n}",
                        hint="add data, or set data.val_fraction: 0 (and data.test_fraction: 0)")
    n_val = min(max(int(round(n * val_fraction)), 1), n - need + 1) if val_fraction > 0 else 0
    n_test = min(max(int(round(n * test_fraction)), 1), n - n_val - 1) if test_fraction > 0 else 0
    perm = np.random.default_rng(seed).permutation(n).astype(np.int64)
    val = np.sort(perm[:n_val])
    test = np.sort(perm[n_val:n_val + n_test]) if test_fraction > 0 else None
    train = np.sort(perm[n_val + n_test:])
    return train, val, test


def text_cuts(n: int, val_fraction: float, test_fraction: float = 0.0) -> tuple[int, int]:
    """(end of train, end of test) in characters of a text of n characters; val is [end of test, n).
    Val is the last val_fraction (every text dataset, built-in or the user's), test the test_fraction
    before it; each part asked for gets at least one character and train keeps at least one."""
    need = 1 + (val_fraction > 0) + (test_fraction > 0)
    if n < need:
        raise DataError(f"need at least {need} characters of text to carve the splits asked for, found {n}",
                        hint="add text, or set data.val_fraction: 0 (and data.test_fraction: 0)")
    end_test = min(max(int(n * (1.0 - val_fraction)), 1), n - 1) if val_fraction > 0 else n
    if test_fraction > 0:
        end_train = min(max(int(n * (1.0 - val_fraction - test_fraction)), 1), end_test - 1)
    else:
        end_train = end_test
    return end_train, end_test


def limited(rows: np.ndarray, limit: int | None) -> np.ndarray:
    return rows if limit is None else rows[:limit]


def subset(x: np.ndarray, y: np.ndarray | None, rows: np.ndarray | None, limit: int | None = None) -> Split:
    """The split of (x, y) at `rows` (None: all rows), capped at `limit`. `y` is indexed now (it
    is small); `x` keeps its rows (a memory map is not read)."""
    if rows is None:
        if limit is None or limit >= x.shape[0]:
            return Split(x, y)
        rows = np.arange(limit, dtype=np.int64)
    rows = limited(np.asarray(rows, dtype=np.int64), limit)
    return Split(x, None if y is None else np.asarray(y)[rows], rows)


def channel_stats(split: Split) -> tuple[list[float], list[float]]:
    """Per-channel mean and standard deviation of an image split (N, C, H, W) in [0, 1] units
    (uint8 pixels are divided by 255), read in chunks (float64 sums), for `data.normalize`."""
    n = len(split)
    if n == 0:
        raise DataError("cannot compute the mean and std of an empty training split (data.normalize)")
    c = split.sample_shape[0]
    total = np.zeros(c)
    total_sq = np.zeros(c)
    scale = 1.0 / 255.0 if split.x.dtype == np.uint8 else 1.0
    count = 0
    for start in range(0, n, GATHER_CHUNK):
        x = split.gather(np.arange(start, min(n, start + GATHER_CHUNK)))[0].astype(np.float64) * scale
        total += x.sum(axis=(0, 2, 3))
        total_sq += np.square(x).sum(axis=(0, 2, 3))
        count += x.shape[0] * x.shape[2] * x.shape[3]
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean ** 2, 0.0))
    std = np.where(std < 1e-6, 1.0, std)  # a constant channel is left as it is
    return [float(v) for v in mean], [float(v) for v in std]


def check_labels(y: np.ndarray, num_classes: int, where: str) -> np.ndarray:
    """int64 labels in [0, num_classes), or a DataError naming `where` and the bad value."""
    y = np.asarray(y)
    if y.ndim != 1:
        raise DataError(f"{where}: labels must be 1-D (one per sample), got shape {tuple(y.shape)}")
    if y.size and not np.issubdtype(y.dtype, np.integer):
        if np.issubdtype(y.dtype, np.floating) and np.all(np.isfinite(y)) and np.all(y == np.round(y)):
            y = y.astype(np.int64)
        else:
            raise DataError(f"{where}: labels must be integers 0..{num_classes - 1}, got dtype {y.dtype}")
    y = y.astype(np.int64)
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        bad = int(y.min()) if y.min() < 0 else int(y.max())
        raise DataError(f"{where}: label {bad} is outside 0..{num_classes - 1} ({num_classes} classes)")
    return y


def image_dataset(name: str, options, seed: int, *, train: tuple[np.ndarray, np.ndarray],
                  val: tuple[np.ndarray, np.ndarray] | None = None, test: tuple[np.ndarray, np.ndarray] | None = None,
                  class_names: list[str] | None = None, num_classes: int | None = None, source: str = "",
                  cache: str | None = None, extra: dict | None = None) -> Dataset:
    """A Dataset of images from the user's arrays (uint8 or float32, (N, C, H, W)): `val` and
    `test` used as given when present, else carved from `train` by `options.val_fraction` and
    `options.test_fraction`; `options.limit` applied; mean/std computed when `options.normalize`."""
    x, y = train
    if num_classes is None:
        num_classes = len(class_names) if class_names else int(np.max(y)) + 1 if len(y) else 0
    val_fraction = 0.0 if val is not None else float(options.val_fraction)
    test_fraction = 0.0 if test is not None else float(getattr(options, "test_fraction", 0.0) or 0.0)
    train_rows, val_rows, test_rows = carve(int(x.shape[0]), val_fraction, seed, test_fraction)
    limit = options.limit
    whole = train_rows.shape[0] == x.shape[0]
    train_split = subset(x, y, None if whole else train_rows, limit)
    val_split = subset(*val, None, limit) if val is not None else subset(x, y, val_rows, limit)
    test_split = (subset(*test, None, limit) if test is not None
                  else subset(x, y, test_rows, limit) if test_rows is not None else None)
    ds = Dataset(name=name, kind="image", train=train_split, val=val_split, test=test_split,
                 num_classes=num_classes, class_names=list(class_names) if class_names else None,
                 source=source, cache=cache, extra=dict(extra or {}))
    if getattr(options, "normalize", False):
        ds.mean, ds.std = channel_stats(ds.train)
    ds.extra.update(val_fraction=val_fraction, test_fraction=test_fraction, seed=int(seed), limit=limit,
                    val_given=val is not None, test_given=test is not None)
    return ds


__all__ = ["carve", "channel_stats", "check_labels", "image_dataset", "limited", "subset", "text_cuts"]
