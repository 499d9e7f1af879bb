"""Datasets as numpy arrays.

Images: `x` of shape (N, C, H, W), either float32 in [0, 1] (the built-in datasets) or uint8 in
0..255 (user folders and arrays: a quarter of the memory; the backends divide by 255 on the device,
the same float32 multiply as `load_dataset` does on the host). Labels `y` int64 of shape (N,).
Tables: `x` float32 (N, F) of standardised features, `y` int64 labels.
Text: `x` a 1-D int32 array of token ids; `y` is None; `vocab` lists the tokens in id order (and
`tokenizer`, when set, encodes and decodes them).

A split's `x` may be a memory-mapped array (a cache file, see airlab.data.cache) whose rows belong
to several splits: then `rows` lists this split's rows of `x` in order, and `gather` reads only the
rows asked for. Every model's input shape is read from here (see `Dataset.info`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol

import numpy as np

from airlab.specs.base import DataInfo

KINDS = ("image", "text", "table")  # what a model may read (a spec's `reads`)
GATHER_CHUNK = 4096  # rows copied at a time when a memory-mapped split is read whole


class Tokenizer(Protocol):
    """Text <-> token ids for a text dataset (airlab.data.tokenize: characters or byte-level BPE)."""

    kind: str  # "char" | "bpe"

    @property
    def vocab(self) -> list[str]: ...

    def encode(self, text: str) -> np.ndarray: ...

    def decode(self, ids) -> str: ...

    def unknown(self, text: str) -> list[str]:
        """The characters of `text` the tokenizer cannot encode (a BPE over bytes: none)."""

    def save(self, directory) -> list[str]:
        """Write what `sample` needs to encode and decode without the data; the file names."""


@dataclass
class Split:
    x: np.ndarray
    y: np.ndarray | None = None
    # this split's rows of `x` (int64, in order) when `x` holds more than this split; None: all of x
    rows: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.rows.shape[0] if self.rows is not None else self.x.shape[0])

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.x.shape[1:])

    @property
    def nbytes(self) -> int:
        """Bytes of this split's examples and labels as they are stored."""
        per_row = int(np.prod(self.sample_shape, dtype=np.int64)) * self.x.dtype.itemsize
        return len(self) * per_row + (0 if self.y is None else int(self.y.nbytes))

    def gather(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """The examples (and labels) at positions `idx` of this split, as in-memory arrays."""
        idx = np.asarray(idx, dtype=np.int64)
        src = idx if self.rows is None else self.rows[idx]
        x = np.take(self.x, src, axis=0) if isinstance(self.x, np.memmap) else self.x[src]
        return x, (None if self.y is None else self.y[idx])

    def materialize(self) -> np.ndarray:
        """The whole split's `x` in memory, contiguous (read in chunks from a memory map)."""
        if self.rows is None and not isinstance(self.x, np.memmap):
            return np.ascontiguousarray(self.x)
        n = len(self)
        out = np.empty((n, *self.sample_shape), dtype=self.x.dtype)
        for start in range(0, n, GATHER_CHUNK):
            stop = min(n, start + GATHER_CHUNK)
            out[start:stop] = self.gather(np.arange(start, stop))[0]
        return out


@dataclass
class Dataset:
    name: str
    kind: Literal["image", "text", "table"]
    train: Split
    val: Split
    test: Split | None = None
    num_classes: int | None = None
    class_names: list[str] | None = None
    vocab: list[str] | None = None
    source: str = ""  # where the data came from (file paths, "generated", ...)
    extra: dict = field(default_factory=dict)
    # paths of the files used without a published digest to verify them against (e.g. a raw IDX
    # file where only the gzip file's digest is published); empty when every file was verified
    # or the data was generated. Runs record it in env.json and summary.json.
    unverified: list[str] = field(default_factory=list)
    tokenizer: Tokenizer | None = None  # text: how ids map to text (None: `vocab` is characters)
    # images: per-channel mean and std of the training split in [0, 1] units (data.normalize)
    mean: list[float] | None = None
    std: list[float] | None = None
    cache: str | None = None  # the cache directory the arrays are memory-mapped from, if any
    # what the run directory keeps of the data (data.json): class names, the vocabulary, the
    # standardisation of a table's features, the stored dtype; written by airlab.train.loop
    meta: dict = field(default_factory=dict)

    @property
    def info(self) -> DataInfo:
        if self.kind == "text":
            return DataInfo(input_shape=(), vocab_size=len(self.vocab or []))
        return DataInfo(input_shape=self.train.sample_shape, num_classes=self.num_classes)

    def splits(self) -> dict[str, Split]:
        out = {"train": self.train, "val": self.val}
        if self.test is not None:
            out["test"] = self.test
        return out

    @property
    def nbytes(self) -> int:
        """Bytes of every split as stored (what the fast path puts on the device)."""
        return sum(s.nbytes for s in self.splits().values())

    def encode(self, text: str) -> np.ndarray:
        if self.tokenizer is not None:
            return self.tokenizer.encode(text)
        index = {ch: i for i, ch in enumerate(self.vocab or [])}
        return np.array([index[c] for c in text if c in index], dtype=np.int32)

    def decode(self, ids) -> str:
        if self.tokenizer is not None:
            return self.tokenizer.decode(ids)
        vocab = self.vocab or []
        return "".join(vocab[int(i)] for i in ids)
