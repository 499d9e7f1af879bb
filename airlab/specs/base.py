"""The base of every model spec.

A spec is a pydantic model holding every hyperparameter of one architecture. The config's
`model:` section *is* a spec (discriminated by `name`), so the schema, the defaults and the
documentation live in one place and both backends build the same architecture from it.

Shapes that come from the data (input shape, number of classes, vocabulary size) are not part
of the spec: they arrive as a `DataInfo` when the model is built.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

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


# Activation functions every backend provides under the same name. GELU is the exact (erf) form in
# both PyTorch (nn.GELU()) and Keras (keras.activations.gelu(approximate=False)).
Activation = Literal["relu", "gelu", "tanh", "silu"]


class ModelSpec(BaseModel):
    """Base class: subclasses add `name: Literal["..."]` and their hyperparameters."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # The DataInfo used for `airlab models` (parameter count at defaults) and contract tests.
    default_data: ClassVar[DataInfo] = DataInfo(input_shape=(1, 28, 28), num_classes=10)

    # One or two non-default field dicts that the contract tests also build and train, so each
    # model's optional paths (other cells, kinds, batchnorm, ...) are covered without test code.
    test_variants: ClassVar[list[dict[str, Any]]] = []

    def check_data(self, info: DataInfo) -> None:
        """Raise ValueError (saying what was expected and what was received) when this spec
        cannot be built for `info`. Builders and `num_params` call it; it needs no framework."""

    def num_params(self, info: DataInfo) -> int:
        """Number of trainable parameters, computed without any framework (tied weights once)."""
        raise NotImplementedError


def need_num_classes(model: str, info: DataInfo) -> int:
    """The number of classes of a classifier's data, or a ValueError saying it is missing."""
    if info.num_classes is None or info.num_classes < 1:
        raise ValueError(
            f"Model {model!r} is a classifier and needs `num_classes` >= 1 from its data. "
            f"Received: num_classes={info.num_classes}"
        )
    return info.num_classes


def need_image(model: str, info: DataInfo) -> tuple[int, int, int]:
    """The (C, H, W) of image data, or a ValueError saying what was received instead."""
    if len(info.input_shape) != 3 or min(info.input_shape) < 1:
        raise ValueError(
            f"Model {model!r} needs images of shape (C, H, W). Received: input_shape={info.input_shape}"
        )
    c, h, w = info.input_shape
    return c, h, w


def flat_size(model: str, info: DataInfo) -> int:
    """The number of features of one sample once flattened (for dense layers on any input)."""
    if len(info.input_shape) == 0 or min(info.input_shape) < 1:
        raise ValueError(
            f"Model {model!r} needs a non-empty per-sample input shape. Received: input_shape={info.input_shape}"
        )
    size = 1
    for d in info.input_shape:
        size *= d
    return size
