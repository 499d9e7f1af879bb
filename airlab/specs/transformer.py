"""Decoder-only causal Transformer language model (GPT, nanoGPT-style), characters in, logits out."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, PositiveInt, model_validator

from airlab.specs.base import DataInfo, ModelSpec


class TransformerSpec(ModelSpec):
    """A GPT: token + learned position embeddings, `n_layer` pre-LayerNorm blocks of causal
    multi-head self-attention and a GELU MLP, a final LayerNorm and an output head whose weight
    is tied to the token embedding (counted once).

    Defaults follow the nanoGPT README's CPU run on tiny shakespeare: 4 layers, 4 heads, 128
    wide, context 64, dropout 0, no biases (nanoGPT's train.py default bias=False, which that run
    keeps): 804,096 parameters with vocabulary 65 (nanoGPT prints 0.80M, which leaves out the
    8,192 position-embedding weights); val loss about 1.88 nats after 2000 steps.
    The README's GPU run is `n_layer: 6, n_head: 6, n_embd: 384, context_length: 256, dropout: 0.2`.

    Backend choices, the same on both backends: nanoGPT's initialisation (every Linear and
    Embedding weight normal(0, 0.02), biases zero, the two residual output projections of each
    block normal(0, 0.02/sqrt(2*n_layer)), LayerNorm weight 1); LayerNorm eps 1e-5 (PyTorch's;
    Keras's default is 1e-3) and without a bias when `bias` is false; exact (erf) GELU; attention
    scaled by 1/sqrt(head size) under a causal mask, with dropout on the attention weights. The
    TensorFlow model's output head multiplies by the token embedding's transpose, so the tied
    matrix is one variable there too.

    `tie_weights: false` gives the head a weight of its own (`lm_head.weight`, vocab x n_embd,
    initialised normal(0, 0.02) like the table; on TensorFlow a Dense layer `lm_head`), so the
    checkpoint holds one more tensor under that name and weight conversion carries it like any
    Linear; true (the default) keeps one matrix, stored once.
    """

    name: Literal["transformer"] = Field("transformer", description="Model name.")
    reads: ClassVar[tuple[str, ...]] = ("text",)
    n_layer: PositiveInt = Field(4, description="Number of Transformer blocks.")
    n_head: PositiveInt = Field(4, description="Attention heads per block; must divide n_embd.")
    n_embd: PositiveInt = Field(128, description="Width of the residual stream (embedding size).")
    context_length: PositiveInt = Field(64, description="Longest sequence the model reads (size of the position table).")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout rate on embeddings, attention weights and residual branches.")
    bias: bool = Field(False, description="Biases in the Linear layers and LayerNorms (nanoGPT's `bias`).")
    mlp_ratio: PositiveInt = Field(4, description="Hidden width of each block's MLP, as a multiple of n_embd.")
    tie_weights: bool = Field(True, description="The output head shares the token embedding's weight (false: a "
                                                "head of its own, `lm_head.weight`, vocab x n_embd more parameters).")

    default_data: ClassVar[DataInfo] = DataInfo(input_shape=(), vocab_size=65)
    test_variants: ClassVar[list[dict]] = [
        {"n_layer": 2, "n_head": 2, "n_embd": 32, "context_length": 16, "dropout": 0.1, "bias": True, "mlp_ratio": 2,
         "tie_weights": False},
    ]
    smoke: ClassVar[dict] = {"n_layer": 1, "n_embd": 32, "n_head": 2, "context_length": 16, "dropout": 0.1}

    @model_validator(mode="after")
    def _check_heads(self) -> "TransformerSpec":
        if self.n_embd % self.n_head:
            raise ValueError(
                f"Expected `n_embd` divisible by `n_head`. Received: n_embd={self.n_embd}, n_head={self.n_head}"
            )
        return self

    def check_data(self, info: DataInfo) -> None:
        if info.vocab_size is None or info.vocab_size < 1:
            raise ValueError(
                f"Model 'transformer' is a language model and needs `vocab_size` >= 1 from its data. "
                f"Received: vocab_size={info.vocab_size}"
            )

    def num_params(self, info: DataInfo) -> int:
        self.check_data(info)
        c, b, h = self.n_embd, int(self.bias), self.mlp_ratio * self.n_embd
        layernorm = c + b * c
        block = (
            layernorm
            + c * 3 * c + b * 3 * c  # attention: q, k, v projection
            + c * c + b * c  # attention: output projection
            + layernorm
            + c * h + b * h  # MLP in
            + h * c + b * c  # MLP out
        )
        embeddings = info.vocab_size * c + self.context_length * c  # the head is tied to the token table
        if not self.tie_weights:
            embeddings += info.vocab_size * c  # a head of its own
        return embeddings + self.n_layer * block + layernorm

    def matmul_weights(self, info: DataInfo) -> int:
        """N of PaLM's 6N: the weights of every matmul, the output head's included (it multiplies,
        tied or not); not the embedding tables (looked up), biases or LayerNorms."""
        self.check_data(info)
        c, h = self.n_embd, self.mlp_ratio * self.n_embd
        return self.n_layer * (3 * c * c + c * c + 2 * c * h) + c * info.vocab_size

    def train_flops_per_token(self, info: DataInfo) -> int:
        """PaLM's model FLOPs per token: 6N + 12 x n_layer x n_embd x context (attention's scores
        and weighted sum over the whole window; airlab.specs.base: the FLOP convention)."""
        return 6 * self.matmul_weights(info) + 12 * self.n_layer * self.n_embd * self.context_length

    def train_flops_per_sample(self, info: DataInfo) -> int:
        """A sample is one window of `context_length` tokens, each predicted."""
        return self.context_length * self.train_flops_per_token(info)
