"""Convolutional classifier: conv blocks with optional 2x2 max-pooling, then a dense head."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, PositiveInt, model_validator

from airlab.specs.base import (Activation, DataInfo, ModelSpec, dense_train_flops, need_image, need_num_classes,
                               train_flops)


class CNNSpec(ModelSpec):
    """A stack of convolutions (each followed by the activation, and by a 2x2 max-pool where
    `pool_after` says so), one dropout, flatten, a dense head.

    Layer order: for each conv i: Conv(channels[i], kernel_size, stride 1) -> [BatchNorm] ->
    activation -> [MaxPool 2x2 if i in pool_after]; then Dropout(conv_dropout) -> Flatten ->
    (Linear(d) -> activation -> Dropout(dropout)) for each d in dense -> Linear(num_classes).

    Defaults follow the legacy Keras mnist_cnn.py example, the same net as pytorch/examples mnist:
    conv32-conv64-maxpool-dropout(0.25)-fc128-dropout(0.5)-fc10 with "valid" 3x3 convolutions
    (1,199,882 parameters on MNIST; 99.25 % test accuracy after 12 epochs of Adadelta).
    The keras-io "Simple MNIST convnet" (34,826 parameters, 99.22 %) is
    `pool_after: [0, 1], dense: [], conv_dropout: 0.5, dropout: 0.0`.

    Backend choices, the same on both backends: with `batchnorm` the convolutions have no bias
    (BatchNorm's shift replaces it) and BatchNorm follows PyTorch: momentum 0.1 in PyTorch's sense
    (running = 0.9 * running + 0.1 * batch; Keras's BatchNormalization defaults to momentum 0.99
    and eps 1e-3), eps 1e-5, the batch's biased variance to normalise and its unbiased variance
    in the running estimate; the TensorFlow backend uses its own BatchNorm layer with exactly
    these rules. Flattening is channels-first (C, H, W) order on both: the TensorFlow model runs
    its convolutions channels-last and transposes back before flattening, so dense weights carry
    across backends without permuting. 'same' padding with an even kernel puts the extra pixel
    after, as both frameworks do. Initialisation: PyTorch's defaults (U(+-1/sqrt(fan_in)) for
    weights and biases) on both backends, not Keras's Glorot-uniform and zeros.
    """

    name: Literal["cnn"] = Field("cnn", description="Model name.")
    channels: list[PositiveInt] = Field(
        default_factory=lambda: [32, 64], min_length=1, description="Output channels of each convolution, in order."
    )
    kernel_size: PositiveInt = Field(3, description="Square kernel size of every convolution (stride 1).")
    padding: Literal["valid", "same"] = Field(
        "valid", description="'valid' (no padding: each conv shrinks H and W by kernel_size - 1) or 'same'."
    )
    pool_after: list[int] = Field(
        default_factory=lambda: [1],
        description="0-based indices of the convolutions followed by a 2x2 max-pool (stride 2).",
    )
    batchnorm: bool = Field(False, description="BatchNorm after each convolution, before the activation.")
    activation: Activation = Field("relu", description="Activation after each convolution and hidden dense layer.")
    conv_dropout: float = Field(
        0.25, ge=0.0, lt=1.0, description="Dropout rate once, after the last conv block (before flattening)."
    )
    dense: list[PositiveInt] = Field(
        default_factory=lambda: [128], description="Widths of the hidden dense layers of the head."
    )
    dropout: float = Field(0.5, ge=0.0, lt=1.0, description="Dropout rate after each hidden dense layer.")

    test_variants: ClassVar[list[dict]] = [
        {"pool_after": [0, 1], "dense": [], "conv_dropout": 0.5, "dropout": 0.0},  # keras-io simple convnet
        {"channels": [8, 16, 16], "padding": "same", "pool_after": [0, 2], "batchnorm": True,
         "activation": "silu", "dense": [32, 16]},
    ]
    smoke: ClassVar[dict] = {"channels": [4, 8], "dense": [16]}

    @model_validator(mode="after")
    def _check_pool_after(self) -> "CNNSpec":
        bad = [i for i in self.pool_after if not 0 <= i < len(self.channels)]
        if bad:
            raise ValueError(
                f"Expected `pool_after` indices in [0, {len(self.channels) - 1}] (one per entry of "
                f"`channels`). Received: pool_after={self.pool_after}"
            )
        if len(set(self.pool_after)) != len(self.pool_after):
            raise ValueError(f"Expected distinct `pool_after` indices. Received: pool_after={self.pool_after}")
        return self

    def feature_shape(self, info: DataInfo) -> tuple[int, int, int]:
        """(C, H, W) after the conv blocks; ValueError if the image shrinks to nothing."""
        _, h, w = need_image("cnn", info)
        pools = set(self.pool_after)
        for i in range(len(self.channels)):
            if self.padding == "valid":
                h, w = h - self.kernel_size + 1, w - self.kernel_size + 1
            if i in pools:
                h, w = h // 2, w // 2
            if h < 1 or w < 1:
                raise ValueError(
                    f"Model 'cnn': input_shape={info.input_shape} shrinks to nothing at convolution {i} "
                    f"(kernel_size={self.kernel_size}, padding={self.padding!r}, pool_after={self.pool_after}). "
                    "Use padding 'same', fewer pools or fewer convolutions."
                )
        return self.channels[-1], h, w

    def check_data(self, info: DataInfo) -> None:
        self.feature_shape(info)
        need_num_classes("cnn", info)

    def num_params(self, info: DataInfo) -> int:
        self.check_data(info)
        total, c_in, k = 0, info.input_shape[0], self.kernel_size
        for c in self.channels:
            total += c_in * c * k * k + (2 * c if self.batchnorm else c)  # conv (+bias or BN scale/shift)
            c_in = c
        c, h, w = self.feature_shape(info)
        sizes = [c * h * w, *self.dense, need_num_classes("cnn", info)]
        return total + sum(n_in * n_out + n_out for n_in, n_out in zip(sizes, sizes[1:]))

    def train_flops_per_sample(self, info: DataInfo) -> int:
        """Each convolution (K x K x C_in x C_out x H_out x W_out multiply-adds, before its pool; the
        first reads the data), then the dense head (airlab.specs.base: the FLOP convention)."""
        self.check_data(info)
        c_in, h, w = need_image("cnn", info)
        k, pools = self.kernel_size, set(self.pool_after)
        convs = []
        for i, c in enumerate(self.channels):
            if self.padding == "valid":
                h, w = h - k + 1, w - k + 1
            convs.append(k * k * c_in * c * h * w)
            if i in pools:
                h, w = h // 2, w // 2
            c_in = c
        c, h, w = self.feature_shape(info)
        head = dense_train_flops([c * h * w, *self.dense, need_num_classes("cnn", info)], reads_data=False)
        return train_flops(convs[0], sum(convs[1:])) + head
