"""Variational autoencoder: Gaussian latent, dense or convolutional encoder/decoder."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, PositiveInt

from airlab.specs.base import (Activation, DataInfo, ModelSpec, check_dense_or_halvable, dense_macs, flat_size,
                               train_flops)


class VAESpec(ModelSpec):
    """A VAE with a diagonal Gaussian posterior q(z|x) = N(mu, exp(logvar)) and a Bernoulli
    decoder that returns pixel logits. The vae task's loss per sample is BCE summed over pixels
    + beta * KL(q(z|x) || N(0, I)).

    kind 'dense' (default) follows pytorch/examples vae, 784-400-20 (652,824 parameters on MNIST;
    about 103-107 nats test loss after 7-10 epochs of Adam 1e-3 at batch 128):
      encoder: flatten -> (Linear -> activation) per `hidden` -> Linear(latent_dim) twice (mu, logvar);
      decoder: (Linear -> activation) per reversed `hidden` -> Linear(C*H*W) -> reshape.
    kind 'conv' follows the keras-io "Variational AutoEncoder" (134,165 parameters with
    `channels: [32, 64], hidden: [16], latent_dim: 2`; 146.95 train loss per image after 30 epochs):
      encoder: (Conv 3x3 stride 2 'same' -> activation) per `channels` -> flatten ->
        (Linear -> activation) per `hidden` -> mu, logvar;
      decoder: Linear(latent -> channels[-1]*H'*W') -> activation -> reshape ->
        (ConvTranspose 3x3 stride 2 'same' -> activation) per reversed `channels` ->
        Conv 3x3 'same' to the input's channels. H and W must be divisible by 2 ** len(channels).

    Backend choices: stride-2 'same' convolutions are PyTorch's padding 1 (and output_padding 1
    for the transposed ones) on both backends; Keras's own 'same' pads stride-2 convolutions
    asymmetrically (only after), so the TensorFlow backend pads one pixel on every side and
    convolves 'valid', and runs transposed convolutions with PyTorch's explicit padding: the
    same weights compute the same function. The last decoder layer is a Conv2d where keras-io
    uses a stride-1 Conv2DTranspose (same shapes and count). Flattening is (C, H, W) order on
    both. Initialisation on both: PyTorch defaults. The noise of the reparameterisation comes
    from each backend's own generator, so the two backends draw different noise.
    """

    name: Literal["vae"] = Field("vae", description="Model name.")
    kind: Literal["dense", "conv"] = Field("dense", description="'dense' (fully connected) or 'conv' (convolutional).")
    hidden: list[PositiveInt] = Field(
        default_factory=lambda: [400], description="Widths of the encoder's dense hidden layers (dense: mirrored in the decoder)."
    )
    channels: list[PositiveInt] = Field(
        default_factory=lambda: [32, 64], min_length=1,
        description="conv: channels of each stride-2 encoder convolution; the decoder mirrors them.",
    )
    latent_dim: PositiveInt = Field(20, description="Dimension of the Gaussian latent z.")
    activation: Activation = Field("relu", description="Activation after every hidden layer.")
    beta: float = Field(1.0, ge=0.0, allow_inf_nan=False, description="Weight of the KL term in the loss (1.0 is the ELBO; >1 is beta-VAE).")

    test_variants: ClassVar[list[dict]] = [
        {"kind": "conv", "channels": [8, 16], "hidden": [16], "latent_dim": 2},
        {"hidden": [64, 32], "latent_dim": 4, "beta": 4.0, "activation": "tanh"},
    ]
    smoke: ClassVar[dict] = {"hidden": [16], "latent_dim": 4}

    def check_data(self, info: DataInfo) -> None:
        check_dense_or_halvable("vae", self.kind, len(self.channels), "stride-2 convolutions", info)

    def num_params(self, info: DataInfo) -> int:
        self.check_data(info)
        dense = lambda sizes: sum(a * b + b for a, b in zip(sizes, sizes[1:]))  # noqa: E731
        latent = self.latent_dim
        if self.kind == "dense":
            d = flat_size("vae", info)
            encoder = dense([d, *self.hidden]) + 2 * dense([(self.hidden or [d])[-1], latent])
            return encoder + dense([latent, *reversed(self.hidden), d])
        c, h, w = info.input_shape
        factor = 2 ** len(self.channels)
        feat = self.channels[-1] * (h // factor) * (w // factor)
        conv = lambda chans: sum(a * b * 9 + b for a, b in zip(chans, chans[1:]))  # noqa: E731
        encoder = conv([c, *self.channels]) + dense([feat, *self.hidden])
        encoder += 2 * dense([(self.hidden or [feat])[-1], latent])
        decoder = dense([latent, feat]) + conv([self.channels[-1], *reversed(self.channels)])
        return encoder + decoder + self.channels[0] * c * 9 + c

    def train_flops_per_sample(self, info: DataInfo) -> int:
        """The encoder's layers (the first reads the data), the two heads mu and logvar, the
        decoder's; a stride-2 3x3 convolution at its output's size, a stride-2 transposed one at
        its input's (airlab.specs.base: the FLOP convention). The sampling of z is not a matmul."""
        self.check_data(info)
        latent = self.latent_dim
        if self.kind == "dense":
            d = flat_size("vae", info)
            code = (self.hidden or [d])[-1]
            heads = 2 * code * latent
            decoder = dense_macs([latent, *reversed(self.hidden), d])
            if not self.hidden:  # mu and logvar read the data
                return train_flops(heads, decoder)
            return train_flops(d * self.hidden[0], dense_macs(self.hidden) + heads + decoder)
        c, h, w = info.input_shape
        n = len(self.channels)
        enc = [c, *self.channels]
        convs = [9 * a * b * (h >> (i + 1)) * (w >> (i + 1)) for i, (a, b) in enumerate(zip(enc, enc[1:]))]
        feat = self.channels[-1] * (h >> n) * (w >> n)
        code = (self.hidden or [feat])[-1]
        dense = dense_macs([feat, *self.hidden]) + 2 * code * latent + latent * feat
        dec = [self.channels[-1], *reversed(self.channels)]
        convs += [9 * a * b * (h >> (n - j)) * (w >> (n - j)) for j, (a, b) in enumerate(zip(dec, dec[1:]))]
        convs.append(9 * self.channels[0] * c * h * w)  # output convolution
        return train_flops(convs[0], sum(convs[1:]) + dense)
