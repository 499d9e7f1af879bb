"""Multilayer perceptron classifier: flatten, (Linear -> activation -> Dropout) per hidden layer, Linear."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, PositiveInt

from airlab.specs.base import Activation, DataInfo, ModelSpec, dense_train_flops, flat_size, need_num_classes


class MLPSpec(ModelSpec):
    """A fully connected classifier on flattened inputs.

    Defaults follow the legacy Keras mnist_mlp.py example: 784-512-512-10 with ReLU and dropout
    0.2 after each hidden layer (669,706 parameters on MNIST; 98.40 % test accuracy after 20
    epochs of RMSprop at batch 128).

    Initialisation, on both backends: PyTorch's defaults (nn.Linear: Kaiming-uniform weights with
    a=sqrt(5), i.e. U(+-1/sqrt(fan_in)), and biases from the same range), not Keras's Glorot-uniform
    weights and zero biases: the TensorFlow backend gives its Dense layers these initialisers.
    Flattening is (C, H, W) order on both backends, so colour images line up too.
    """

    name: Literal["mlp"] = Field("mlp", description="Model name.")
    reads: ClassVar[tuple[str, ...]] = ("image", "table")
    hidden: list[PositiveInt] = Field(
        default_factory=lambda: [512, 512],
        description="Widths of the hidden layers, input side first; [] gives a linear classifier.",
    )
    activation: Activation = Field("relu", description="Activation after each hidden layer.")
    dropout: float = Field(0.2, ge=0.0, lt=1.0, description="Dropout rate after each hidden layer's activation.")

    test_variants: ClassVar[list[dict]] = [
        {"hidden": [32, 16], "activation": "gelu", "dropout": 0.0},
        {"hidden": []},  # a linear (softmax-regression) classifier
    ]
    smoke: ClassVar[dict] = {"hidden": [16], "dropout": 0.5}

    def check_data(self, info: DataInfo) -> None:
        flat_size("mlp", info)
        need_num_classes("mlp", info)

    def num_params(self, info: DataInfo) -> int:
        self.check_data(info)
        sizes = [flat_size("mlp", info), *self.hidden, need_num_classes("mlp", info)]
        return sum(n_in * n_out + n_out for n_in, n_out in zip(sizes, sizes[1:]))

    def train_flops_per_sample(self, info: DataInfo) -> int:
        """Every Linear, the first reading the data (airlab.specs.base: the FLOP convention)."""
        self.check_data(info)
        return dense_train_flops([flat_size("mlp", info), *self.hidden, need_num_classes("mlp", info)], reads_data=True)
