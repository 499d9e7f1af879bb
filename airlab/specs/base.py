"""The base of every model spec.

A spec is a pydantic model holding every hyperparameter of one architecture. The config's
`model:` section *is* a spec (discriminated by `name`), so the schema, the defaults and the
documentation live in one place and both backends build the same architecture from it.

Shapes that come from the data (input shape, number of classes, vocabulary size) are not part
of the spec: they arrive as a `DataInfo` when the model is built.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from pydantic import BaseModel, ConfigDict


@dataclass(frozen=True)
class DataInfo:
    """What a model needs to know about its data.

    input_shape: per-sample shape, channels first for images: (C, H, W); (T,) for token sequences.
    num_classes: number of labels for classification, else None.
    vocab_size: number of tokens for language models, else None.
    """

    input_shape: tuple[int, ...]
    num_classes: int | None = None
    vocab_size: int | None = None


class ModelSpec(BaseModel):
    """Base class: subclasses add `name: Literal["..."]` and their hyperparameters."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # The DataInfo used for `airlab models` (parameter count at defaults) and contract tests.
    default_data: ClassVar[DataInfo] = DataInfo(input_shape=(1, 28, 28), num_classes=10)

    def num_params(self, info: DataInfo) -> int:
        """Number of trainable parameters, computed without any framework (tied weights once)."""
        raise NotImplementedError
