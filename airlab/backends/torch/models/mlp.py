"""Multilayer perceptron classifier (see airlab.specs.mlp.MLPSpec).

    x (B, *input_shape) -> flatten (B, D) -> [Linear -> act -> Dropout] * len(hidden) -> Linear -> (B, classes)
"""

from __future__ import annotations

import math

import torch
from torch import nn

from airlab.backends.torch.models import activation
from airlab.backends.torch.shard import Dropout
from airlab.specs.base import DataInfo
from airlab.specs.mlp import MLPSpec


class MLP(nn.Module):
    def __init__(self, spec: MLPSpec, in_features: int, num_classes: int):
        super().__init__()
        layers: list[nn.Module] = []
        n_in = in_features
        for width in spec.hidden:
            layers += [nn.Linear(n_in, width), activation(spec.activation), Dropout(spec.dropout)]
            n_in = width
        self.hidden = nn.Sequential(*layers)
        self.head = nn.Linear(n_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)  # (B, D)
        x = self.hidden(x)  # (B, hidden[-1])
        return self.head(x)  # (B, classes)


def build(spec: MLPSpec, info: DataInfo) -> MLP:
    spec.check_data(info)  # ValueError without num_classes or with an empty input shape
    return MLP(spec, in_features=math.prod(info.input_shape), num_classes=info.num_classes)
