"""Variational autoencoder with a diagonal Gaussian latent (see airlab.specs.vae.VAESpec).

    x (B, C, H, W) -> encoder -> h (B, F) -> mu, logvar (B, L)
    z = mu + exp(logvar / 2) * eps while training, z = mu in eval mode   (B, L)
    z -> decoder -> reconstruction logits (B, C, H, W), pre-sigmoid

dense: encoder flatten -> [Dense -> act] per hidden; decoder [Dense -> act] per reversed hidden -> Dense.
conv:  encoder [pad 1 -> Conv 3x3 stride 2 -> act] per channel entry -> channels-first flatten -> [Dense -> act]
       per hidden; decoder Dense -> act -> reshape (C, H', W') -> [ConvTranspose 3x3 stride 2 (PyTorch's
       padding 1, output_padding 1) -> act] per reversed entry -> Conv 3x3 'same'.
Stride-2 convolutions pad one pixel on every side as PyTorch's padding=1 does (Keras's 'same'
pads only after), so the same weights compute the same function. Layer names follow the torch
model: encoder.{i}, fc_mu, fc_logvar, decoder.{i}.
"""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf

from airlab.backends.tensorflow.models import (AirlabModel, ConvTranspose, activation, batch_draw, conv, dense,
                                               nchw_to_nhwc, next_seed, nhwc_to_nchw)
from airlab.specs.base import DataInfo
from airlab.specs.vae import VAESpec


class VAE(AirlabModel):
    def __init__(self, spec: VAESpec, info: DataInfo, **kwargs):
        super().__init__(name="vae", **kwargs)
        self.kind = spec.kind
        self.input_dims = tuple(info.input_shape)
        self.latent_dim = spec.latent_dim
        self.act = activation(spec.activation)
        self.conv_enc, self.dense_enc, self.dense_dec, self.conv_dec = [], [], [], []
        if spec.kind == "dense":
            d = math.prod(info.input_shape)
            prev, pos = d, 1  # encoder.0 is the Flatten
            for width in spec.hidden:
                self.dense_enc.append(self.register(f"encoder.{pos}", dense(width, prev, f"encoder.{pos}")))
                prev, pos = width, pos + 2
            n_code = prev
            prev, pos = spec.latent_dim, 0
            for width in [*reversed(spec.hidden), d]:
                self.dense_dec.append(self.register(f"decoder.{pos}", dense(width, prev, f"decoder.{pos}")))
                prev, pos = width, pos + 2
        else:
            c, h, w = info.input_shape
            factor = 2 ** len(spec.channels)
            self.feature_shape = (spec.channels[-1], h // factor, w // factor)
            feat = math.prod(self.feature_shape)
            self.pad = keras.layers.ZeroPadding2D(1)
            prev, pos = c, 0
            for ch in spec.channels:
                self.conv_enc.append(self.register(f"encoder.{pos}", conv(ch, 3, prev, f"encoder.{pos}", strides=2)))
                prev, pos = ch, pos + 2
            pos += 1  # the Flatten
            n_in = feat
            for width in spec.hidden:
                self.dense_enc.append(self.register(f"encoder.{pos}", dense(width, n_in, f"encoder.{pos}")))
                n_in, pos = width, pos + 2
            n_code = n_in
            self.dense_dec.append(self.register("decoder.0", dense(feat, spec.latent_dim, "decoder.0")))
            pos = 3  # decoder.1 the activation, decoder.2 the Unflatten
            for ch in reversed(spec.channels):
                self.conv_dec.append(self.register(f"decoder.{pos}", ConvTranspose(
                    ch, 3, strides=2, padding=1, output_padding=1, name=f"decoder.{pos}")))
                prev, pos = ch, pos + 2
            self.conv_out = self.register(f"decoder.{pos}", conv(c, 3, prev, f"decoder.{pos}", padding="same"))
        self.fc_mu = self.register("fc_mu", dense(spec.latent_dim, n_code, "fc_mu"))
        self.fc_logvar = self.register("fc_logvar", dense(spec.latent_dim, n_code, "fc_logvar"))
        self.noise_salt = next_seed()
        self.noise = keras.random.SeedGenerator(self.noise_salt)

    def encode(self, x):
        b = tf.shape(x)[0]
        if self.kind == "conv":
            x = nchw_to_nhwc(x)  # (B, H, W, C)
            for layer in self.conv_enc:
                x = self.act(layer(self.pad(x)))  # (B, H/2, W/2, ch)
            x = nhwc_to_nchw(x)  # (B, C', H', W')
        h = tf.reshape(x, [b, -1])  # (B, F) in (C, H, W) order
        for layer in self.dense_enc:
            h = self.act(layer(h))  # (B, width)
        return self.fc_mu(h), self.fc_logvar(h)  # (B, L), (B, L)

    def decode(self, z):
        b = tf.shape(z)[0]
        if self.kind == "dense":
            h = z
            for i, layer in enumerate(self.dense_dec):
                h = layer(h)
                if i < len(self.dense_dec) - 1:
                    h = self.act(h)
            return tf.reshape(h, [b, *self.input_dims])  # (B, C, H, W)
        h = self.act(self.dense_dec[0](z))  # (B, C'*H'*W')
        h = nchw_to_nhwc(tf.reshape(h, [b, *self.feature_shape]))  # (B, H', W', C')
        for layer in self.conv_dec:
            h = self.act(layer(h))  # (B, 2H', 2W', ch)
        return nhwc_to_nchw(self.conv_out(h))  # (B, C, H, W)

    def sample_noise(self, shape, seed=None):
        """eps ~ N(0, I): from the step's seed when given, else from this model's SeedGenerator."""
        if seed is None:
            return keras.random.normal(shape, seed=self.noise)
        return batch_draw(lambda shape, s: tf.random.stateless_normal(shape, seed=s), shape,
                          tf.random.experimental.stateless_fold_in(seed, self.noise_salt))

    def call(self, x, training=False, seed=None):
        mu, logvar = self.encode(x)  # (B, L), (B, L)
        if training:
            eps = tf.cast(self.sample_noise(tf.shape(mu), seed), mu.dtype)
            z = mu + tf.exp(0.5 * logvar) * eps  # (B, L) reparameterisation
        else:
            z = mu  # (B, L) the posterior mean: deterministic evaluation
        return self.decode(z), mu, logvar


def build(spec: VAESpec, info: DataInfo) -> VAE:
    spec.check_data(info)  # ValueError for non-image input (conv) or H, W not divisible by 2**len(channels)
    return VAE(spec, info).build_for(np.zeros((1, *info.input_shape), np.float32))
