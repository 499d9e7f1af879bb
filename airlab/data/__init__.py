"""Datasets as numpy arrays: generated offline, or downloaded once and verified.

    >>> from airlab.data import load_dataset
    >>> ds = load_dataset("shapes", seed=0)          # offline, always available
    >>> ds.train.x.shape, ds.train.x.dtype          # ((10800, 1, 28, 28), dtype('float32'))

Every dataset is split the same way:

- test: the dataset's own test split where it has one (images); None for text.
- val: images: `val_fraction` of the training samples, chosen by a numpy Generator permutation
  seeded with `seed` (so the split is a pure function of the seed); text: the last
  `val_fraction` of the text (the usual split: the first 90 % trains).
- limit: after the val split is carved, train keeps its first `limit` samples (characters for
  text), and val and test are capped at `limit` too: for quick smoke runs.

Images are float32 (N, C, H, W) in [0, 1] with int64 labels; text is a 1-D int32 array of
character ids with `vocab` the sorted distinct characters of the whole text.

Files of classic datasets are looked up in `path` (for air-gapped machines), then in
`data_dir()/<name>/`, and downloaded there if missing (see `airlab.data.files`). Nothing here
imports a deep-learning framework.
"""

from __future__ import annotations

import difflib
import importlib
from typing import Callable

import numpy as np

from airlab.data.base import Dataset, Split
from airlab.data.files import data_dir
from airlab.data.raw import RawData
from airlab.errors import DataError

__all__ = ["Dataset", "Split", "data_dir", "dataset_names", "describe_datasets", "load_dataset"]

# name -> ("module:function", one-line description). Imported on first use.
_REGISTRY: dict[str, tuple[str, str]] = {
    "shapes": ("airlab.data.shapes:load",
               "generated 28x28 grayscale shapes, 10 classes, 12,000 train + 2,000 test (offline)"),
    "pycorpus": ("airlab.data.pycorpus:load",
                 "characters of standard-library docstrings, about 1 MB (offline)"),
    "mnist": ("airlab.data.mnist:load_mnist",
              "handwritten digits, 28x28 grayscale, 60,000 train + 10,000 test (download)"),
    "fashion_mnist": ("airlab.data.mnist:load_fashion_mnist",
                      "Zalando clothing, 28x28 grayscale, 60,000 train + 10,000 test (download)"),
    "cifar10": ("airlab.data.cifar:load_cifar10",
                "32x32 colour photos, 10 classes, 50,000 train + 10,000 test (download, 163 MiB)"),
    "tinyshakespeare": ("airlab.data.text:load_tinyshakespeare",
                        "Shakespeare, 1,115,394 characters, 65 distinct (download)"),
}

# The user's own data, one loader file per kind: `load(options, *, seed) -> Dataset`, where
# `options` is the config's `data` section (path, val_fraction, test_fraction, limit and the
# kind's own keys). Each builds its Dataset with airlab.data.splits, so it is split as above.
_USER_KINDS: dict[str, tuple[str, str]] = {
    "folder": ("airlab.data.folder:load",
               "your images: DIR/<class>/* or DIR/{train,val,test}/<class>/* (png, jpg, bmp, gif, webp)"),
    "npz": ("airlab.data.npz:load", "your arrays: a .npz with x_train, y_train (and x_val, y_val, x_test, y_test)"),
    "text": ("airlab.data.textfile:load", "your text: a UTF-8 file or a folder of them (characters or BPE)"),
    "csv": ("airlab.data.table:load_csv", "your table: a CSV file with a label column"),
    "parquet": ("airlab.data.table:load_parquet", "your table: a Parquet file with a label column (needs pyarrow)"),
}


def dataset_names() -> list[str]:
    """The names `load_dataset` accepts, sorted: the built-in datasets and the user kinds."""
    return sorted({**_REGISTRY, **_USER_KINDS})


def user_kinds() -> list[str]:
    """The kinds of the user's own data (data.name: folder, npz, text, csv, parquet)."""
    return list(_USER_KINDS)


def describe_datasets() -> dict[str, str]:
    """name -> one-line description, sorted by name."""
    both = {**_REGISTRY, **_USER_KINDS}
    return {name: both[name][1] for name in dataset_names()}


def _loader(name: str) -> Callable[..., RawData]:
    if name not in _REGISTRY and name not in _USER_KINDS:
        close = difflib.get_close_matches(str(name), dataset_names(), n=1)
        guess = f"; did you mean {close[0]!r}?" if close else ""
        raise DataError(f"unknown dataset {name!r}{guess}",
                        hint="known datasets: " + ", ".join(dataset_names()))
    module, _, func = (_REGISTRY.get(name) or _USER_KINDS[name])[0].partition(":")
    return getattr(importlib.import_module(module), func)


def _check_args(val_fraction: float, seed: int, size: int | None, limit: int | None) -> None:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise DataError(f"Expected `seed` a non-negative integer. Received: seed={seed!r}")
    try:
        ok = 0.0 <= float(val_fraction) < 1.0
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise DataError(f"Expected `val_fraction` in [0, 1). Received: val_fraction={val_fraction!r}")
    for label, value in (("size", size), ("limit", limit)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer))
                                  or value < 1):
            raise DataError(f"Expected `{label}` a positive integer or None. Received: {label}={value!r}")


def _to_float(x: np.ndarray) -> np.ndarray:
    if x.dtype == np.uint8:
        out = x.astype(np.float32)
        out *= np.float32(1.0 / 255.0)
        return out
    return np.ascontiguousarray(x, dtype=np.float32)


def _split_images(raw: RawData, val_fraction: float, seed: int, limit: int | None):
    from airlab.data.splits import carve  # the rule every dataset is split by

    train_idx, val_idx, _ = carve(int(raw.x.shape[0]), val_fraction, seed)
    if limit is not None:
        train_idx, val_idx = train_idx[:limit], val_idx[:limit]
    y = np.asarray(raw.y, dtype=np.int64)
    train = Split(_to_float(raw.x[train_idx]), y[train_idx])
    val = Split(_to_float(raw.x[val_idx]), y[val_idx])
    test = None
    if raw.test_x is not None:
        tx, ty = raw.test_x, np.asarray(raw.test_y, dtype=np.int64)
        if limit is not None:
            tx, ty = tx[:limit], ty[:limit]
        test = Split(_to_float(tx), ty)
    return train, val, test


def _split_text(raw: RawData, val_fraction: float, limit: int | None):
    text = raw.text or ""
    vocab = sorted(set(text))
    lut = np.full(max(map(ord, vocab)) + 1 if vocab else 1, -1, dtype=np.int32)
    for i, ch in enumerate(vocab):
        lut[ord(ch)] = i
    codes = np.frombuffer(text.encode("utf-32-le"), dtype="<u4")
    ids = lut[codes]
    from airlab.data.splits import text_cuts  # the rule every text is split by

    n_train, _ = text_cuts(int(ids.shape[0]), val_fraction)
    train, val = ids[:n_train], ids[n_train:]
    if limit is not None:
        train, val = train[:limit], val[:limit]
    return Split(np.ascontiguousarray(train)), Split(np.ascontiguousarray(val)), vocab


def load_dataset(name: str, *, path: str | None = None, val_fraction: float = 0.1, seed: int = 0,
                 size: int | None = None, limit: int | None = None, options=None) -> Dataset:
    """Load a dataset by name as numpy arrays with train/val(/test) splits.

    path: a directory holding the dataset's files (checked before `data_dir()/<name>/`).
    val_fraction: share of the training data (or of the text, at its end) used for validation.
    seed: chooses which training images form the validation split; never changes the data.
    size: number of training samples for generated datasets (characters for pycorpus); ignored
        for datasets read from files.
    limit: keep only the first `limit` train samples and at most `limit` val/test samples.
    options: the config's `data` section; the user kinds read their own keys from it (and path,
        val_fraction, limit from it rather than the arguments).
    """
    _check_args(val_fraction, seed, size, limit)
    if name in _USER_KINDS:
        if options is None:
            raise DataError(f"data.name: {name} reads your own data and needs the config's data section")
        return _loader(name)(options, seed=int(seed))
    raw = _loader(name)(path=path, size=size)
    extra = dict(raw.extra)
    extra.update(val_fraction=float(val_fraction), seed=int(seed), limit=limit)
    if raw.kind == "text":
        train, val, vocab = _split_text(raw, val_fraction, limit)
        return Dataset(name=name, kind="text", train=train, val=val, test=None, vocab=vocab,
                       source=raw.source, extra=extra, unverified=list(raw.unverified))
    train, val, test = _split_images(raw, val_fraction, seed, limit)
    names = raw.class_names
    num_classes = len(names) if names else int(np.max(raw.y)) + 1
    ds = Dataset(name=name, kind="image", train=train, val=val, test=test, num_classes=num_classes,
                 class_names=list(names) if names else None, source=raw.source, extra=extra,
                 unverified=list(raw.unverified))
    if options is not None and getattr(options, "normalize", False):
        from airlab.data.splits import channel_stats

        ds.mean, ds.std = channel_stats(ds.train)
    return ds
