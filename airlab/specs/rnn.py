"""Recurrent sequence classifier: an RNN/LSTM/GRU over the rows of an image, a linear head."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, PositiveInt, model_validator

from airlab.specs.base import DataInfo, ModelSpec, need_num_classes, train_flops

_GATES = {"rnn": 1, "lstm": 4, "gru": 3}


class RNNSpec(ModelSpec):
    """A recurrent classifier. Images (C, H, W) are read as a sequence of H rows of C*W features
    ("sequential MNIST", 28 steps of 28 pixels); data of shape (T, F) is read as is. The logits
    come from the last layer's final state: the output at the last time step, or for a
    bidirectional net the forward direction's final state concatenated with the backward
    direction's final state (its output at the first time step), like Keras's
    Bidirectional(LSTM(...)) without return_sequences.

    Defaults: one LSTM layer of 128 units (82,186 parameters on MNIST rows), a common sequential-
    MNIST baseline. The keras-io IMDB classifier's recurrent part is `num_layers: 2,
    hidden_size: 64, bidirectional: true` (it reads token embeddings, which this model does not).

    Backend choices: the parameter count is PyTorch's, which keeps two bias vectors per gate
    (b_ih and b_hh) for every cell. Keras's GRU (reset_after=True, its default) has the same two;
    Keras's LSTM and SimpleRNN keep one, the sum b_ih + b_hh, which computes the same function
    with gates * hidden_size fewer parameters per layer and direction. So that both backends
    count and compute the same, the TensorFlow backend runs its own recurrent layer with
    PyTorch's equations, both biases and PyTorch's gate order (LSTM i, f, g, o; GRU r, z, n;
    the reset gate applied to (W_hn h + b_hn), as Keras's reset_after=True), not
    keras.layers.LSTM/GRU/SimpleRNN (which also forgoes their fused cuDNN kernel on GPUs).
    Initialisation on both: PyTorch defaults (every weight and bias uniform in
    +-1/sqrt(hidden_size)), not Keras's Glorot/orthogonal kernels with zero biases and forget-gate
    bias 1. The simple `rnn` cell uses tanh.
    """

    name: Literal["rnn"] = Field("rnn", description="Model name.")
    cell: Literal["rnn", "lstm", "gru"] = Field("lstm", description="Recurrent cell: 'rnn' (tanh), 'lstm' or 'gru'.")
    hidden_size: PositiveInt = Field(128, description="Units per direction in each recurrent layer.")
    num_layers: PositiveInt = Field(1, description="Number of stacked recurrent layers.")
    bidirectional: bool = Field(False, description="Also read the sequence backwards and concatenate both states.")
    dropout: float = Field(
        0.0, ge=0.0, lt=1.0, description="Dropout rate on the outputs of every recurrent layer but the last."
    )

    test_variants: ClassVar[list[dict]] = [
        {"cell": "gru", "hidden_size": 32, "num_layers": 2, "bidirectional": True, "dropout": 0.1},
        {"cell": "rnn", "hidden_size": 16},
    ]
    smoke: ClassVar[dict] = {"hidden_size": 16, "cell": "gru"}

    @model_validator(mode="after")
    def _check_dropout(self) -> "RNNSpec":
        if self.dropout > 0 and self.num_layers == 1:
            raise ValueError(
                "`dropout` acts between stacked recurrent layers, so it needs num_layers >= 2. "
                f"Received: dropout={self.dropout}, num_layers=1"
            )
        return self

    def sequence_shape(self, info: DataInfo) -> tuple[int, int]:
        """(T, F): time steps and features per step that the recurrent layers read."""
        shape = info.input_shape
        if len(shape) == 3 and min(shape) >= 1:
            c, h, w = shape
            return h, c * w
        if len(shape) == 2 and min(shape) >= 1:
            return shape[0], shape[1]
        raise ValueError(
            f"Model 'rnn' needs images (C, H, W) or sequences (T, F). Received: input_shape={shape}"
        )

    def check_data(self, info: DataInfo) -> None:
        self.sequence_shape(info)
        need_num_classes("rnn", info)

    def num_params(self, info: DataInfo) -> int:
        self.check_data(info)
        g, h = _GATES[self.cell], self.hidden_size
        dirs = 2 if self.bidirectional else 1
        layer = lambda n_in: dirs * (g * h * (n_in + h) + 2 * g * h)  # W_ih, W_hh, b_ih, b_hh  # noqa: E731
        # the first layer reads the features, every later one the layer below (closed form: any
        # num_layers is counted at once)
        total = layer(self.sequence_shape(info)[1]) + (self.num_layers - 1) * layer(dirs * h)
        return total + dirs * h * need_num_classes("rnn", info) + need_num_classes("rnn", info)

    def train_flops_per_sample(self, info: DataInfo) -> int:
        """Per time step, layer and direction: the input projection (gates x hidden x inputs; in
        the first layer it reads the data) and the recurrent one (gates x hidden x hidden: LSTM 4
        gates, GRU 3, RNN 1), whose first step reads the zero initial state, which needs no
        gradient; then the head (airlab.specs.base: the FLOP convention)."""
        self.check_data(info)
        g, h = _GATES[self.cell], self.hidden_size
        dirs = 2 if self.bidirectional else 1
        t, f = self.sequence_shape(info)
        reads_data = dirs * t * g * h * f  # the first layer's input projections
        first_steps = self.num_layers * dirs * g * h * h  # each recurrence's first step (on the initial state)
        recurrent = self.num_layers * dirs * (t - 1) * g * h * h
        upper = (self.num_layers - 1) * dirs * t * g * h * (dirs * h)  # later layers' input projections
        head = dirs * h * need_num_classes("rnn", info)
        return train_flops(reads_data + first_steps, recurrent + upper + head)
