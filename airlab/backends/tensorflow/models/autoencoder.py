"""Autoencoder returning reconstruction logits (see airlab.specs.autoencoder.AutoencoderSpec).

conv:  x (B, C, H, W) -> channels-last -> [Conv 'same' -> act -> MaxPool 2x2] per channel entry   code (B, H/2^n, W/2^n, c_n)
                      -> [ConvTranspose stride 2 (PyTorch's padding) -> act] per reversed entry -> Conv 'same'
                      -> channels-first (B, C, H, W)
dense: x (B, *shape) -> flatten (B, D) -> [Dense -> act] per hidden -> Dense      code (B, bottleneck)
                     -> [Dense -> act] per reversed hidden -> Dense -> (B, *shape)

Layer names follow the torch model: encoder.{i}, decoder.{i} (nn.Sequential numbering; the
dense encoder's index 0 is its Flatten).
"""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf

from airlab.backends.tensorflow.models import (AirlabModel, ConvTranspose, activation, conv, dense, nchw_to_nhwc,
                                               nhwc_to_nchw)
from airlab.specs.autoencoder import AutoencoderSpec
from airlab.specs.base import DataInfo


class Autoencoder(AirlabModel):
    def __init__(self, spec: AutoencoderSpec, info: DataInfo, **kwargs):
        super().__init__(name="autoencoder", **kwargs)
        self.kind = spec.kind
        self.input_dims = tuple(info.input_shape)
        self.act = activation(spec.activation)
        self.enc, self.dec = [], []  # (layer, then activation?, pool or None)
        if spec.kind == "conv":
            k, pad = spec.kernel_size, spec.kernel_size // 2
            c_in = info.input_shape[0]
            prev, pos = c_in, 0
            for c in spec.channels:
                layer = self.register(f"encoder.{pos}", conv(c, k, prev, f"encoder.{pos}", padding="same"))
                self.enc.append((layer, True, keras.layers.MaxPooling2D(2, name=f"encoder.{pos + 2}")))
                prev, pos = c, pos + 3
            pos = 0
            for c in reversed(spec.channels):
                layer = self.register(f"decoder.{pos}", ConvTranspose(c, k, strides=2, padding=pad, output_padding=1,
                                                                      name=f"decoder.{pos}"))
                self.dec.append((layer, True, None))
                prev, pos = c, pos + 2
            self.dec.append((self.register(f"decoder.{pos}", conv(c_in, k, prev, f"decoder.{pos}", padding="same")),
                             False, None))
        else:
            d = math.prod(info.input_shape)
            prev, pos = d, 1  # encoder.0 is the Flatten
            for width in spec.hidden:
                self.enc.append((self.register(f"encoder.{pos}", dense(width, prev, f"encoder.{pos}")), True, None))
                prev, pos = width, pos + 2
            self.enc.append((self.register(f"encoder.{pos}", dense(spec.bottleneck, prev, f"encoder.{pos}")),
                             False, None))
            prev, pos = spec.bottleneck, 0
            for width in reversed(spec.hidden):
                self.dec.append((self.register(f"decoder.{pos}", dense(width, prev, f"decoder.{pos}")), True, None))
                prev, pos = width, pos + 2
            self.dec.append((self.register(f"decoder.{pos}", dense(d, prev, f"decoder.{pos}")), False, None))

    def _run(self, stack, x):
        for layer, act, pool in stack:
            x = layer(x)
            if act:
                x = self.act(x)
            if pool is not None:
                x = pool(x)
        return x

    def encode(self, x):
        if self.kind == "conv":
            return self._run(self.enc, nchw_to_nhwc(x))  # (B, H/2^n, W/2^n, c_n)
        return self._run(self.enc, tf.reshape(x, [tf.shape(x)[0], -1]))  # (B, bottleneck)

    def call(self, x, training=False, seed=None):
        logits = self._run(self.dec, self.encode(x))  # conv: (B, H, W, C); dense: (B, D)
        if self.kind == "conv":
            return nhwc_to_nchw(logits)  # (B, C, H, W), pre-sigmoid
        return tf.reshape(logits, [tf.shape(x)[0], *self.input_dims])  # (B, C, H, W), pre-sigmoid


def build(spec: AutoencoderSpec, info: DataInfo) -> Autoencoder:
    spec.check_data(info)  # ValueError for non-image input (conv) or H, W not divisible by 2**len(channels)
    return Autoencoder(spec, info).build_for(np.zeros((1, *info.input_shape), np.float32))
