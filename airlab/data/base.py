"""Datasets as numpy arrays.

Images: `x` float32 of shape (N, C, H, W) with values in [0, 1]; `y` int64 labels of shape (N,).
Text: `x` a 1-D int32 array of token ids (characters); `y` is None; `vocab` lists the characters
in id order. Every model's input shape is read from here (see `Dataset.info`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from airlab.specs.base import DataInfo


@dataclass
class Split:
    x: np.ndarray
    y: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.x.shape[0])


@dataclass
class Dataset:
    name: str
    kind: Literal["image", "text"]
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

    @property
    def info(self) -> DataInfo:
        if self.kind == "text":
            return DataInfo(input_shape=(), vocab_size=len(self.vocab or []))
        return DataInfo(input_shape=tuple(int(d) for d in self.train.x.shape[1:]),
                        num_classes=self.num_classes)

    def splits(self) -> dict[str, Split]:
        out = {"train": self.train, "val": self.val}
        if self.test is not None:
            out["test"] = self.test
        return out

    def encode(self, text: str) -> np.ndarray:
        index = {ch: i for i, ch in enumerate(self.vocab or [])}
        return np.array([index[c] for c in text if c in index], dtype=np.int32)

    def decode(self, ids) -> str:
        vocab = self.vocab or []
        return "".join(vocab[int(i)] for i in ids)
