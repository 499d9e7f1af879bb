"""Decoder-only causal Transformer language model, after nanoGPT (see airlab.specs.transformer).

    idx (B, T) -> token embedding + position embedding (B, T, C) -> dropout
      -> n_layer x Block: x = x + attn(ln_1(x)); x = x + mlp(ln_2(x))
      -> ln_f -> logits = x @ wte^T (the head is tied to the token embedding) -> (B, T, vocab)

Layer names follow the torch model: transformer.wte, transformer.wpe, transformer.h.{i}.ln_1,
transformer.h.{i}.attn.c_attn, ...; `lm_head` has no weight of its own (`tied`) unless the spec's
tie_weights is false (then a Dense layer `lm_head`).
"""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf

from airlab.backends.tensorflow.models import AirlabModel, Dropout, dense, normal
from airlab.specs.base import DataInfo
from airlab.specs.transformer import TransformerSpec


def _layernorm(spec: TransformerSpec, name: str) -> keras.layers.LayerNormalization:
    return keras.layers.LayerNormalization(epsilon=1e-5, center=spec.bias, name=name)  # PyTorch's eps


class Block:
    """One pre-LayerNorm block; its layers are registered on the model under `prefix`."""

    def __init__(self, model: AirlabModel, spec: TransformerSpec, prefix: str):
        c, hidden = spec.n_embd, spec.mlp_ratio * spec.n_embd
        proj_std = 0.02 / math.sqrt(2 * spec.n_layer)  # GPT-2's scaled init of residual projections
        r = model.register
        self.n_head = spec.n_head
        self.ln_1 = r(f"{prefix}.ln_1", _layernorm(spec, f"{prefix}.ln_1"))
        self.c_attn = r(f"{prefix}.attn.c_attn", dense(3 * c, c, f"{prefix}.attn.c_attn", use_bias=spec.bias,
                                                       kernel_init=normal(0.02)))
        self.c_proj = r(f"{prefix}.attn.c_proj", dense(c, c, f"{prefix}.attn.c_proj", use_bias=spec.bias,
                                                       kernel_init=normal(proj_std)))
        self.attn_dropout = Dropout(spec.dropout, name=f"{prefix}.attn.attn_dropout")
        self.resid_dropout = Dropout(spec.dropout, name=f"{prefix}.attn.resid_dropout")
        self.ln_2 = r(f"{prefix}.ln_2", _layernorm(spec, f"{prefix}.ln_2"))
        self.c_fc = r(f"{prefix}.mlp.c_fc", dense(hidden, c, f"{prefix}.mlp.c_fc", use_bias=spec.bias,
                                                  kernel_init=normal(0.02)))
        self.mlp_proj = r(f"{prefix}.mlp.c_proj", dense(c, hidden, f"{prefix}.mlp.c_proj", use_bias=spec.bias,
                                                        kernel_init=normal(proj_std)))
        self.mlp_dropout = Dropout(spec.dropout, name=f"{prefix}.mlp.dropout")

    def attention(self, x, training, seed):
        b, t, c = tf.shape(x)[0], tf.shape(x)[1], x.shape[-1]
        nh, hs = self.n_head, x.shape[-1] // self.n_head
        q, k, v = tf.split(self.c_attn(x), 3, axis=-1)  # 3 x (B, T, C)
        heads = lambda a: tf.transpose(tf.reshape(a, [b, t, nh, hs]), [0, 2, 1, 3])  # noqa: E731  (B, nh, T, hs)
        q, k, v = heads(q), heads(k), heads(v)
        att = tf.matmul(q, k, transpose_b=True) * tf.cast(1.0 / math.sqrt(hs), q.dtype)  # (B, nh, T, T)
        causal = tf.linalg.band_part(tf.ones([t, t], tf.bool), -1, 0)  # (T, T) lower triangle
        att = tf.where(causal, tf.cast(att, tf.float32), tf.constant(-math.inf, tf.float32))
        att = tf.cast(tf.nn.softmax(att, axis=-1), v.dtype)
        att = self.attn_dropout(att, training=training, seed=seed)
        y = tf.matmul(att, v)  # (B, nh, T, hs)
        y = tf.reshape(tf.transpose(y, [0, 2, 1, 3]), [b, t, c])  # (B, T, C) heads side by side
        return self.resid_dropout(self.c_proj(y), training=training, seed=seed)  # (B, T, C)

    def __call__(self, x, training, seed):
        x = x + self.attention(self.ln_1(x), training, seed)  # (B, T, C)
        h = tf.nn.gelu(self.c_fc(self.ln_2(x)), approximate=False)  # (B, T, ratio*C)
        return x + self.mlp_dropout(self.mlp_proj(h), training=training, seed=seed)  # (B, T, C)


class GPT(AirlabModel):
    tied = {"transformer.wte": ["lm_head"]}

    def __init__(self, spec: TransformerSpec, vocab_size: int, **kwargs):
        super().__init__(name="transformer", **kwargs)
        self.context_length = spec.context_length
        self.vocab_size = vocab_size
        c = spec.n_embd
        self.wte = self.register("transformer.wte", keras.layers.Embedding(
            vocab_size, c, embeddings_initializer=normal(0.02), name="transformer.wte"))
        self.wpe = self.register("transformer.wpe", keras.layers.Embedding(
            spec.context_length, c, embeddings_initializer=normal(0.02), name="transformer.wpe"))
        self.drop = Dropout(spec.dropout, name="transformer.drop")
        self.blocks = [Block(self, spec, f"transformer.h.{i}") for i in range(spec.n_layer)]
        self.ln_f = self.register("transformer.ln_f", _layernorm(spec, "transformer.ln_f"))
        self.lm_head = None
        if not spec.tie_weights:  # a head of its own: torch's lm_head.weight
            self.tied = {}
            self.lm_head = self.register("lm_head", dense(vocab_size, c, "lm_head", use_bias=False,
                                                          kernel_init=normal(0.02)))

    def call(self, idx, training=False, seed=None):
        t = idx.shape[1]
        if t is not None and t > self.context_length:
            raise ValueError(f"Expected sequences of at most context_length={self.context_length} tokens. Received: T={t}")
        pos = tf.range(tf.shape(idx)[1])  # (T,)
        x = self.wte(idx) + self.wpe(pos)[None]  # (B, T, C)
        x = self.drop(x, training=training, seed=seed)
        for i, block in enumerate(self.blocks):
            x = block(x, training, None if seed is None else tf.random.experimental.stateless_fold_in(seed, i))
        x = self.ln_f(x)  # (B, T, C)
        if self.lm_head is not None:
            return self.lm_head(x)  # (B, T, vocab)
        return tf.matmul(x, tf.cast(self.wte.embeddings, x.dtype), transpose_b=True)  # (B, T, vocab)

    def generate(self, idx: np.ndarray, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None,
                 seed: int = 0) -> np.ndarray:
        """Extend idx (B, T0) by sampling max_new_tokens tokens; returns (B, T0 + max_new_tokens).
        temperature <= 0 picks the most likely token (greedy). The window is always fed at its
        full length (right-padded; causal attention keeps the padding out of earlier positions),
        so one traced graph serves every step."""
        out = np.asarray(idx, dtype=np.int32)
        t_max = self.context_length
        step = _sampler(self, temperature, top_k)
        for i in range(max_new_tokens):
            window = out[:, -t_max:]
            n = window.shape[1]
            padded = np.zeros((out.shape[0], t_max), np.int32)
            padded[:, :n] = window
            nxt = step(tf.constant(padded), tf.constant(n - 1), tf.constant([seed, i], tf.int64))
            out = np.concatenate([out, nxt.numpy().astype(np.int32)[:, None]], axis=1)
        return out


def _sampler(model: GPT, temperature: float, top_k: int | None):
    cache = model.__dict__.setdefault("_samplers", {})
    key = (float(temperature), top_k)
    if key in cache:
        return cache[key]

    @tf.function(reduce_retracing=True)
    def step(window, last, seed):
        # (B, vocab) at the last position
        logits = tf.cast(tf.gather(model(window, training=False), last, axis=1), tf.float32)
        if temperature <= 0:
            return tf.argmax(logits, axis=-1, output_type=tf.int32)
        logits = logits / temperature
        if top_k is not None:
            kth = tf.math.top_k(logits, k=min(top_k, model.vocab_size)).values[:, -1:]  # (B, 1)
            logits = tf.where(logits < kth, tf.constant(-math.inf, tf.float32), logits)
        # a draw from softmax(logits) by the Gumbel-max trick (XLA compiles it, should this step be jit-compiled)
        u = tf.random.stateless_uniform(tf.shape(logits), seed=seed, minval=1e-20, maxval=1.0)
        return tf.argmax(logits - tf.math.log(-tf.math.log(u)), axis=-1, output_type=tf.int32)  # (B,)

    cache[key] = step
    return step


def build(spec: TransformerSpec, info: DataInfo) -> GPT:
    spec.check_data(info)  # ValueError without vocab_size
    return GPT(spec, vocab_size=info.vocab_size).build_for(np.zeros((1, spec.context_length), np.int32))
