"""Convolutional classifier (see airlab.specs.cnn.CNNSpec).

    x (B, C, H, W) -> channels-last (B, H, W, C)
      -> [Conv -> (BatchNorm) -> act -> (MaxPool 2x2)] per channel entry -> Dropout
      -> channels-first (B, C', H', W') -> flatten -> [Dense -> act -> Dropout] per dense entry -> Dense -> (B, classes)

Layer names follow the torch model's module paths: features.{i} (convolutions and BatchNorms,
numbered as nn.Sequential numbers them), head.{i}.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

import keras

from airlab.backends.tensorflow.models import (AirlabModel, BatchNorm, Dropout, activation, conv, dense,
                                               nchw_to_nhwc, nhwc_to_nchw)
from airlab.specs.base import DataInfo
from airlab.specs.cnn import CNNSpec


class CNN(AirlabModel):
    def __init__(self, spec: CNNSpec, info: DataInfo, **kwargs):
        super().__init__(name="cnn", **kwargs)
        self.act = activation(spec.activation)
        self.blocks = []  # (conv, batchnorm or None, pool or None)
        c_in, pos = info.input_shape[0], 0
        for i, c in enumerate(spec.channels):
            conv_layer = self.register(f"features.{pos}", conv(c, spec.kernel_size, c_in, f"features.{pos}",
                                                                padding=spec.padding, use_bias=not spec.batchnorm))
            pos += 1
            norm = None
            if spec.batchnorm:
                norm = self.register(f"features.{pos}", BatchNorm(name=f"features.{pos}"))
                pos += 1
            pos += 1  # the activation
            pool = None
            if i in spec.pool_after:
                pool = keras.layers.MaxPooling2D(2, name=f"features.{pos}")
                pos += 1
            self.blocks.append((conv_layer, norm, pool))
            c_in = c
        self.conv_dropout = Dropout(spec.conv_dropout, name=f"features.{pos}")

        c, h, w = spec.feature_shape(info)
        n_in = c * h * w
        self.dense_layers = []
        for i, width in enumerate(spec.dense):
            layer = self.register(f"head.{3 * i}", dense(width, n_in, f"head.{3 * i}"))
            self.dense_layers.append((layer, Dropout(spec.dropout, name=f"head.{3 * i + 2}")))
            n_in = width
        self.final = self.register(f"head.{3 * len(spec.dense)}", dense(info.num_classes, n_in,
                                                                        f"head.{3 * len(spec.dense)}"))

    def call(self, x, training=False, seed=None):
        x = nchw_to_nhwc(x)  # (B, H, W, C)
        for conv_layer, norm, pool in self.blocks:
            x = conv_layer(x)  # (B, H', W', c)
            if norm is not None:
                x = norm(x, training=training)
            x = self.act(x)
            if pool is not None:
                x = pool(x)  # (B, H'/2, W'/2, c)
        x = self.conv_dropout(x, training=training, seed=seed)
        x = tf.reshape(nhwc_to_nchw(x), [tf.shape(x)[0], -1])  # (B, C'*H'*W') in (C, H, W) order
        for layer, drop in self.dense_layers:
            x = drop(self.act(layer(x)), training=training, seed=seed)  # (B, width)
        return self.final(x)  # (B, classes)


def build(spec: CNNSpec, info: DataInfo) -> CNN:
    spec.check_data(info)  # ValueError without num_classes, non-image input, or an image too small
    return CNN(spec, info).build_for(np.zeros((1, *info.input_shape), np.float32))
