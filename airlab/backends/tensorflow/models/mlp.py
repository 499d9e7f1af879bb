"""Multilayer perceptron classifier (see airlab.specs.mlp.MLPSpec).

    x (B, *input_shape) -> flatten (B, D) -> [Dense -> act -> Dropout] * len(hidden) -> Dense -> (B, classes)

Layer names: hidden.{3i} (the i-th hidden Dense), head.
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from airlab.backends.tensorflow.models import AirlabModel, Dropout, activation, dense
from airlab.specs.base import DataInfo
from airlab.specs.mlp import MLPSpec


class MLP(AirlabModel):
    def __init__(self, spec: MLPSpec, in_features: int, num_classes: int, **kwargs):
        super().__init__(name="mlp", **kwargs)
        self.act = activation(spec.activation)
        self.hidden = []
        n_in = in_features
        for i, width in enumerate(spec.hidden):
            layer = self.register(f"hidden.{3 * i}", dense(width, n_in, f"hidden.{3 * i}"))
            self.hidden.append((layer, Dropout(spec.dropout, name=f"hidden.{3 * i + 2}")))
            n_in = width
        self.head = self.register("head", dense(num_classes, n_in, "head"))

    def call(self, x, training=False, seed=None):
        x = tf.reshape(x, [tf.shape(x)[0], -1])  # (B, D)
        for layer, drop in self.hidden:
            x = drop(self.act(layer(x)), training=training, seed=seed)  # (B, width)
        return self.head(x)  # (B, classes)


def build(spec: MLPSpec, info: DataInfo) -> MLP:
    spec.check_data(info)  # ValueError without num_classes or with an empty input shape
    model = MLP(spec, in_features=math.prod(info.input_shape), num_classes=info.num_classes)
    return model.build_for(np.zeros((1, *info.input_shape), np.float32))
