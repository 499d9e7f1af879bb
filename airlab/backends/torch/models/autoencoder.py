"""Autoencoder returning reconstruction logits (see airlab.specs.autoencoder.AutoencoderSpec).

conv:  x (B, C, H, W) -> [Conv 'same' -> act -> MaxPool 2x2] per channel entry     code (B, c_n, H/2^n, W/2^n)
                      -> [ConvTranspose stride 2 'same' -> act] per reversed entry -> Conv 'same' -> (B, C, H, W)
dense: x (B, *shape) -> flatten (B, D) -> [Linear -> act] per hidden -> Linear      code (B, bottleneck)
                     -> [Linear -> act] per reversed hidden -> Linear -> (B, *shape)
"""

from __future__ import annotations

import math

import torch
from torch import nn

from airlab.backends.torch.models import activation
from airlab.specs.autoencoder import AutoencoderSpec
from airlab.specs.base import DataInfo


def _conv_coders(spec: AutoencoderSpec, c_in: int) -> tuple[nn.Sequential, nn.Sequential]:
    k, pad = spec.kernel_size, spec.kernel_size // 2
    encoder: list[nn.Module] = []
    prev = c_in
    for c in spec.channels:
        encoder += [nn.Conv2d(prev, c, k, padding=pad), activation(spec.activation), nn.MaxPool2d(2)]
        prev = c
    decoder: list[nn.Module] = []
    for c in reversed(spec.channels):
        # stride 2, 'same': output_padding 1 makes the output exactly twice the input (Keras's 'same')
        decoder += [nn.ConvTranspose2d(prev, c, k, stride=2, padding=pad, output_padding=1), activation(spec.activation)]
        prev = c
    decoder.append(nn.Conv2d(prev, c_in, k, padding=pad))  # logits, no activation
    return nn.Sequential(*encoder), nn.Sequential(*decoder)


def _dense_coders(spec: AutoencoderSpec, d: int) -> tuple[nn.Sequential, nn.Sequential]:
    encoder: list[nn.Module] = []
    prev = d
    for width in spec.hidden:
        encoder += [nn.Linear(prev, width), activation(spec.activation)]
        prev = width
    encoder.append(nn.Linear(prev, spec.bottleneck))  # linear code
    decoder: list[nn.Module] = []
    prev = spec.bottleneck
    for width in reversed(spec.hidden):
        decoder += [nn.Linear(prev, width), activation(spec.activation)]
        prev = width
    decoder.append(nn.Linear(prev, d))  # logits, no activation
    return nn.Sequential(nn.Flatten(1), *encoder), nn.Sequential(*decoder)


class Autoencoder(nn.Module):
    def __init__(self, spec: AutoencoderSpec, info: DataInfo):
        super().__init__()
        self.input_shape = tuple(info.input_shape)
        if spec.kind == "conv":
            self.encoder, self.decoder = _conv_coders(spec, info.input_shape[0])
        else:
            self.encoder, self.decoder = _dense_coders(spec, math.prod(info.input_shape))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)  # conv: (B, c_n, H/2^n, W/2^n); dense: (B, bottleneck)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.encode(x)
        logits = self.decoder(z)  # conv: (B, C, H, W); dense: (B, D)
        return logits.reshape(x.shape[0], *self.input_shape)  # (B, C, H, W), pre-sigmoid


def build(spec: AutoencoderSpec, info: DataInfo) -> Autoencoder:
    spec.check_data(info)  # ValueError for non-image input (conv) or H, W not divisible by 2**len(channels)
    return Autoencoder(spec, info)
