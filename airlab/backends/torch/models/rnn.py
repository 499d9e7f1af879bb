"""Recurrent sequence classifier (see airlab.specs.rnn.RNNSpec).

    x (B, C, H, W) -> rows (B, T=H, F=C*W)        (or x (B, T, F) as is)
      -> RNN/LSTM/GRU, batch_first -> final state of the last layer (B, dirs*hidden) -> Linear -> (B, classes)
"""

from __future__ import annotations

import torch
from torch import nn

from airlab.specs.base import DataInfo
from airlab.specs.rnn import RNNSpec

_CELLS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


class RNNClassifier(nn.Module):
    def __init__(self, spec: RNNSpec, info: DataInfo):
        super().__init__()
        self.bidirectional = spec.bidirectional
        _, n_features = spec.sequence_shape(info)
        self.rnn = _CELLS[spec.cell](
            input_size=n_features,
            hidden_size=spec.hidden_size,
            num_layers=spec.num_layers,
            dropout=spec.dropout,
            bidirectional=spec.bidirectional,
            batch_first=True,
        )
        dirs = 2 if spec.bidirectional else 1
        self.head = nn.Linear(dirs * spec.hidden_size, info.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4:
            B, C, H, W = x.shape
            x = x.permute(0, 2, 1, 3).reshape(B, H, C * W)  # (B, T=H, F=C*W): one row per step
        _, h_n = self.rnn(x)  # h_n: (layers*dirs, B, hidden); an LSTM returns (h_n, c_n)
        if isinstance(h_n, tuple):
            h_n = h_n[0]
        if self.bidirectional:
            # last layer's forward final state (t = T-1) and backward final state (t = 0)
            h = torch.cat([h_n[-2], h_n[-1]], dim=-1)  # (B, 2*hidden)
        else:
            h = h_n[-1]  # (B, hidden): the output at the last time step
        return self.head(h)  # (B, classes)


def build(spec: RNNSpec, info: DataInfo) -> RNNClassifier:
    spec.check_data(info)  # ValueError without num_classes or with input neither (C, H, W) nor (T, F)
    return RNNClassifier(spec, info)
