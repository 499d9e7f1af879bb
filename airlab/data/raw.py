"""What a dataset loader returns before splitting: the data as published, plus where it came from.

Loaders produce a RawData; `airlab.data.load_dataset` carves the validation split, applies
`limit` and converts pixels to float32 in [0, 1], so every dataset is split the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np


@dataclass
class RawData:
    kind: Literal["image", "text"]
    # images: uint8 (N, C, H, W) in 0..255 or float32 in [0, 1]; labels int (N,)
    x: np.ndarray | None = None
    y: np.ndarray | None = None
    test_x: np.ndarray | None = None
    test_y: np.ndarray | None = None
    class_names: list[str] | None = None
    # text: the whole corpus; split into train (first part) and val (last part)
    text: str | None = None
    source: str = ""
    extra: dict = field(default_factory=dict)
    # paths of files used without a digest to verify them against (see Dataset.unverified)
    unverified: list[str] = field(default_factory=list)
