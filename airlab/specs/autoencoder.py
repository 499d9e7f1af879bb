"""Autoencoder: dense or convolutional encoder, mirrored decoder, reconstruction logits."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, PositiveInt, model_validator

from airlab.specs.base import (Activation, DataInfo, ModelSpec, check_dense_or_halvable, dense_train_flops, flat_size,
                               train_flops)


class AutoencoderSpec(ModelSpec):
    """An autoencoder whose decoder returns reconstruction *logits* of the input's shape; the
    reconstruction is sigmoid(logits), so inputs are expected in [0, 1].

    kind 'conv' (default) follows the keras-io "Convolutional autoencoder" exactly (28,353
    parameters at 1x28x28; val BCE 0.0648 after 10 epochs of Adam at batch 128):
      encoder: (Conv kxk 'same' -> activation -> MaxPool 2x2) for each entry of `channels`;
      decoder: (ConvTranspose kxk stride 2 'same' -> activation) for each entry of reversed
      `channels`, then Conv kxk 'same' to the input's channels (no activation).
      H and W must be divisible by 2 ** len(channels).
    kind 'dense': flatten -> (Linear -> activation) per `hidden` -> Linear(bottleneck) (a linear
      code) -> (Linear -> activation) per reversed `hidden` -> Linear(C*H*W) -> reshape.
      `channels` and `kernel_size` are ignored, `hidden` and `bottleneck` are used.

    `loss` is read by the reconstruction task: 'bce' is binary cross-entropy with logits per
    pixel (the keras-io setup); 'mse' is the mean squared error between sigmoid(logits) and the
    input.

    Backend choices: a stride-2 'same' transposed convolution is PyTorch's ConvTranspose2d with
    padding (k-1)/2 and output_padding 1, which doubles H and W like Keras's Conv2DTranspose
    'same' but keeps a different window (Keras crops the other side); the TensorFlow backend runs
    its transposed convolutions with PyTorch's explicit padding, so the same weights give the
    same reconstruction. Initialisation on both: PyTorch defaults (U(+-1/sqrt(fan_in)); a
    transposed convolution's fan-in is out_channels * k * k, as PyTorch computes it).
    """

    name: Literal["autoencoder"] = Field("autoencoder", description="Model name.")
    kind: Literal["conv", "dense"] = Field("conv", description="'conv' (convolutional) or 'dense' (fully connected).")
    channels: list[PositiveInt] = Field(
        default_factory=lambda: [32, 32], min_length=1,
        description="conv: channels of each encoder convolution (each halves H and W); the decoder mirrors them.",
    )
    kernel_size: PositiveInt = Field(3, description="conv: odd square kernel size of every convolution.")
    hidden: list[PositiveInt] = Field(
        default_factory=lambda: [256], description="dense: widths of the encoder's hidden layers; the decoder mirrors them."
    )
    bottleneck: PositiveInt = Field(32, description="dense: size of the code between encoder and decoder.")
    activation: Activation = Field("relu", description="Activation after every layer but the code and the output.")
    loss: Literal["bce", "mse"] = Field(
        "bce", description="Reconstruction loss: 'bce' (with logits, per pixel) or 'mse' (on sigmoid(logits))."
    )

    test_variants: ClassVar[list[dict]] = [
        {"kind": "dense", "hidden": [64, 32], "bottleneck": 8, "loss": "mse"},
        {"kind": "conv", "channels": [8, 16], "kernel_size": 5, "activation": "gelu", "loss": "mse"},
    ]
    smoke: ClassVar[dict] = {"channels": [4, 4]}

    @model_validator(mode="after")
    def _check_kernel(self) -> "AutoencoderSpec":
        if self.kernel_size % 2 == 0:
            raise ValueError(f"Expected an odd `kernel_size` ('same' padding). Received: kernel_size={self.kernel_size}")
        return self

    def check_data(self, info: DataInfo) -> None:
        check_dense_or_halvable("autoencoder", self.kind, len(self.channels), "pooling blocks", info)

    def num_params(self, info: DataInfo) -> int:
        self.check_data(info)
        if self.kind == "dense":
            d = flat_size("autoencoder", info)
            sizes = [d, *self.hidden, self.bottleneck, *reversed(self.hidden), d]
            return sum(n_in * n_out + n_out for n_in, n_out in zip(sizes, sizes[1:]))
        c, k2 = info.input_shape[0], self.kernel_size**2
        enc = [c, *self.channels]
        dec = [self.channels[-1], *reversed(self.channels)]
        total = sum(a * b * k2 + b for a, b in zip(enc, enc[1:]))  # encoder convolutions
        total += sum(a * b * k2 + b for a, b in zip(dec, dec[1:]))  # decoder transposed convolutions
        return total + self.channels[0] * c * k2 + c  # output convolution

    def train_flops_per_sample(self, info: DataInfo) -> int:
        """dense: every Linear, the first reading the data. conv: each 'same' convolution K x K x
        C_in x C_out x H x W at its input's size (the first reads the data), each stride-2 transposed
        convolution K x K x C_in x C_out x H_in x W_in (every input pixel meets the whole kernel),
        the output convolution at full size (airlab.specs.base: the FLOP convention)."""
        self.check_data(info)
        if self.kind == "dense":
            d = flat_size("autoencoder", info)
            return dense_train_flops([d, *self.hidden, self.bottleneck, *reversed(self.hidden), d], reads_data=True)
        c, h, w = info.input_shape
        k2, n = self.kernel_size**2, len(self.channels)
        enc = [c, *self.channels]
        convs = [k2 * a * b * (h >> i) * (w >> i) for i, (a, b) in enumerate(zip(enc, enc[1:]))]
        dec = [self.channels[-1], *reversed(self.channels)]
        convs += [k2 * a * b * (h >> (n - j)) * (w >> (n - j)) for j, (a, b) in enumerate(zip(dec, dec[1:]))]
        convs.append(k2 * self.channels[0] * c * h * w)  # output convolution
        return train_flops(convs[0], sum(convs[1:]))
