"""The base of every model spec.

A spec is a pydantic model holding every hyperparameter of one architecture. The config's
`model:` section *is* a spec (discriminated by `name`), so the schema, the defaults and the
documentation live in one place and both backends build the same architecture from it.

Shapes that come from the data (input shape, number of classes, vocabulary size) are not part
of the spec: they arrive as a `DataInfo` when the model is built.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, model_validator


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


def _takes_numbers(annotation: Any) -> bool:
    """Whether a field's type holds ints or floats, and no bools."""
    seen: set = set()

    def types(a: Any) -> None:
        if isinstance(a, type):
            seen.add(a)
        for arg in typing.get_args(a):
            types(arg)

    types(annotation)
    return bool(seen & {int, float}) and bool not in seen


def _holds_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return True
    return isinstance(value, (list, tuple)) and any(_holds_bool(v) for v in value)


class BooleanInput:
    """Stands in for true/false given to a number: no number type accepts it, so the field's own
    error ("Input should be a valid integer. Received: steps=True") names the field."""

    def __init__(self, value: bool):
        self.value = value

    def __repr__(self) -> str:
        return repr(self.value)


def _mask(value: Any) -> Any:
    if isinstance(value, bool):
        return BooleanInput(value)
    if isinstance(value, (list, tuple)):
        return type(value)(_mask(v) for v in value)
    return value


def refuse_bools(cls: type[BaseModel], data: Any) -> Any:
    """A before-validator for a whole model: true/false is not a number. Pydantic reads `true` as
    1 for an int or float field (and inside lists and tuples of them); a config means no such
    thing. (A model validator: the discriminator `name` may not have a field validator.)"""
    if not isinstance(data, dict):
        return data
    out = None
    for name, field in cls.model_fields.items():
        if name in data and _holds_bool(data[name]) and _takes_numbers(field.annotation):
            out = dict(data) if out is None else out
            out[name] = _mask(data[name])
    return data if out is None else out


# Activation functions every backend provides under the same name. GELU is the exact (erf) form in
# both PyTorch (nn.GELU()) and Keras (keras.activations.gelu(approximate=False)).
Activation = Literal["relu", "gelu", "tanh", "silu"]


class ModelSpec(BaseModel):
    """Base class: subclasses add `name: Literal["..."]` and their hyperparameters."""

    # floats are finite everywhere (`.inf`, `.nan` and 1e999 are refused); bools are not numbers
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    _no_bools = model_validator(mode="before")(classmethod(refuse_bools))

    # The DataInfo used for `airlab models` (parameter count at defaults) and contract tests.
    default_data: ClassVar[DataInfo] = DataInfo(input_shape=(1, 28, 28), num_classes=10)

    # the kinds of data the model reads (airlab.data.base.KINDS: "image", "text", "table"); any
    # other pairing of model and data is refused before the model is built, naming these
    reads: ClassVar[tuple[str, ...]] = ("image",)

    # One or two non-default field dicts that the contract tests also build and train, so each
    # model's optional paths (other cells, kinds, batchnorm, ...) are covered without test code.
    test_variants: ClassVar[list[dict[str, Any]]] = []

    # The tiny field overrides that make a quick test run of this model (end-to-end, resume,
    # kill/resume and bf16 tests train it at this size, on every backend, without test code).
    smoke: ClassVar[dict[str, Any]] = {}

    def check_data(self, info: DataInfo) -> None:
        """Raise ValueError (saying what was expected and what was received) when this spec
        cannot be built for `info`. Builders and `num_params` call it; it needs no framework."""

    def num_params(self, info: DataInfo) -> int:
        """Number of trainable parameters, computed without any framework (tied weights once)."""
        raise NotImplementedError

    def train_flops_per_sample(self, info: DataInfo) -> int:
        """FLOPs of one training sample's forward and backward pass, by the convention of
        `train_flops` below (the run's achieved FLOP/s and MFU are this x samples / training
        time). Computed without any framework."""
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


def check_dense_or_halvable(model: str, kind: str, blocks: int, what: str, info: DataInfo) -> None:
    """The data check of a model that is dense (any input) or convolutional with `blocks` halvings
    of H and W that its decoder must undo (the autoencoder, the VAE)."""
    if kind == "dense":
        flat_size(model, info)
        return
    _, h, w = need_image(model, info)
    factor = 2 ** blocks
    if h % factor or w % factor:
        raise ValueError(
            f"Model {model!r} (kind 'conv', {blocks} {what}) needs H and W divisible "
            f"by {factor if blocks <= 20 else f'2**{blocks}'} to reconstruct the input's "
            f"shape. Received: input_shape={info.input_shape}"
        )


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


# ---------------------------------------------------------------------------------------------
# FLOPs: counted once per model, in its spec (`train_flops_per_sample`), by one convention:
#
# - only matrix multiplies and convolutions count, 2 FLOPs per multiply-add; biases,
#   activations, normalisation, pooling, softmax, the loss and the optimizer update do not (they
#   are a few % of the work and run far from any peak);
# - a training pass is the forward pass and the backward pass; a layer's backward pass is twice
#   its forward (the gradient with respect to its weights, and with respect to its input), so a
#   layer costs 3x its forward FLOPs, except a layer that reads the data itself: the data needs
#   no gradient (neither framework computes it), so that layer costs 2x its forward;
# - the language model follows PaLM's appendix B: 6 FLOPs per matmul weight per token (the
#   output head is a matmul and counts; the embedding lookups do not) plus 12 x n_layer x n_embd x
#   context per token for attention (scores and their weighted sum over the whole window, as
#   PaLM counts it and as torch's FlopCounterMode counts scaled_dot_product_attention: the causal
#   mask's skipped half is counted too).
#
# torch.utils.flop_counter.FlopCounterMode counts the same operations on the real models
# (tests/unit/test_flops.py); "model FLOPs" here is the work the model needs, not what a kernel
# happens to run (recomputation, padding, a framework that computes an unneeded gradient).


def train_flops(data_macs: int, other_macs: int) -> int:
    """Training FLOPs from forward multiply-adds: `data_macs` of the layers that read the data
    (forward + weight gradient: 2x), `other_macs` of every other layer (3x)."""
    return 2 * (2 * data_macs + 3 * other_macs)


def dense_macs(sizes: list[int]) -> int:
    """Forward multiply-adds of a chain of dense layers sizes[0] -> sizes[1] -> ... per sample."""
    return sum(a * b for a, b in zip(sizes, sizes[1:]))


def dense_train_flops(sizes: list[int], reads_data: bool) -> int:
    """Training FLOPs of a chain of dense layers; its first layer reads the data when `reads_data`."""
    if len(sizes) < 2:
        return 0
    first = sizes[0] * sizes[1]
    rest = dense_macs(sizes[1:])
    return train_flops(first, rest) if reads_data else train_flops(0, first + rest)
