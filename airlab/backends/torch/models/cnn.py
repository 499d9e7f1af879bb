"""Convolutional classifier (see airlab.specs.cnn.CNNSpec).

    x (B, C, H, W) -> [Conv -> (BatchNorm) -> act -> (MaxPool 2x2)] per channel entry
                   -> Dropout -> flatten -> [Linear -> act -> Dropout] per dense entry -> Linear -> (B, classes)

Only standard layers, so the model runs in channels_last memory format as well.
"""

from __future__ import annotations

import torch
from torch import nn

from airlab.backends.torch.models import activation
from airlab.backends.torch.shard import Dropout
from airlab.specs.base import DataInfo
from airlab.specs.cnn import CNNSpec


class CNN(nn.Module):
    def __init__(self, spec: CNNSpec, info: DataInfo):
        super().__init__()
        layers: list[nn.Module] = []
        c_in = info.input_shape[0]
        for i, c in enumerate(spec.channels):
            layers.append(nn.Conv2d(c_in, c, spec.kernel_size, padding=spec.padding, bias=not spec.batchnorm))
            if spec.batchnorm:
                layers.append(nn.BatchNorm2d(c))
            layers.append(activation(spec.activation))
            if i in spec.pool_after:
                layers.append(nn.MaxPool2d(2))
            c_in = c
        layers.append(Dropout(spec.conv_dropout))
        self.features = nn.Sequential(*layers)

        c, h, w = spec.feature_shape(info)
        head: list[nn.Module] = []
        n_in = c * h * w
        for width in spec.dense:
            head += [nn.Linear(n_in, width), activation(spec.activation), Dropout(spec.dropout)]
            n_in = width
        head.append(nn.Linear(n_in, info.num_classes))
        self.head = nn.Sequential(*head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)  # (B, C', H', W')
        x = x.flatten(1)  # (B, C'*H'*W')
        return self.head(x)  # (B, classes)


def build(spec: CNNSpec, info: DataInfo) -> CNN:
    spec.check_data(info)  # ValueError without num_classes, non-image input, or an image too small
    return CNN(spec, info)
