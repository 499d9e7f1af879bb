"""Variational autoencoder with a diagonal Gaussian latent (see airlab.specs.vae.VAESpec).

    x (B, C, H, W) -> encoder -> h (B, F) -> mu, logvar (B, L)
    z = mu + exp(logvar / 2) * eps while training, z = mu in eval mode   (B, L)
    z -> decoder -> reconstruction logits (B, C, H, W), pre-sigmoid

dense: encoder flatten -> [Linear -> act] per hidden; decoder [Linear -> act] per reversed hidden -> Linear.
conv:  encoder [Conv 3x3 stride 2 -> act] per channel entry -> flatten -> [Linear -> act] per hidden;
       decoder Linear -> act -> reshape -> [ConvTranspose 3x3 stride 2 -> act] per reversed entry -> Conv 3x3.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from airlab.backends.torch.models import activation
from airlab.specs.base import DataInfo
from airlab.specs.vae import VAESpec


def _dense_stack(sizes: list[int], act: str) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for n_in, n_out in zip(sizes, sizes[1:]):
        layers += [nn.Linear(n_in, n_out), activation(act)]
    return layers


class VAE(nn.Module):
    def __init__(self, spec: VAESpec, info: DataInfo):
        super().__init__()
        self.input_shape = tuple(info.input_shape)
        self.latent_dim = spec.latent_dim
        act = spec.activation
        if spec.kind == "dense":
            d = math.prod(info.input_shape)
            self.encoder = nn.Sequential(nn.Flatten(1), *_dense_stack([d, *spec.hidden], act))
            n_code = spec.hidden[-1] if spec.hidden else d
            *decoder, _ = _dense_stack([spec.latent_dim, *reversed(spec.hidden), d], act)  # no act on logits
            self.decoder = nn.Sequential(*decoder)
        else:
            c, h, w = info.input_shape
            factor = 2 ** len(spec.channels)
            self.feature_shape = (spec.channels[-1], h // factor, w // factor)
            feat = math.prod(self.feature_shape)
            encoder: list[nn.Module] = []
            prev = c
            for ch in spec.channels:
                encoder += [nn.Conv2d(prev, ch, 3, stride=2, padding=1), activation(act)]
                prev = ch
            self.encoder = nn.Sequential(*encoder, nn.Flatten(1), *_dense_stack([feat, *spec.hidden], act))
            n_code = spec.hidden[-1] if spec.hidden else feat
            decoder = [nn.Linear(spec.latent_dim, feat), activation(act), nn.Unflatten(1, self.feature_shape)]
            for ch in reversed(spec.channels):
                decoder += [nn.ConvTranspose2d(prev, ch, 3, stride=2, padding=1, output_padding=1), activation(act)]
                prev = ch
            decoder.append(nn.Conv2d(prev, c, 3, padding=1))  # logits, no activation
            self.decoder = nn.Sequential(*decoder)
        self.fc_mu = nn.Linear(n_code, spec.latent_dim)
        self.fc_logvar = nn.Linear(n_code, spec.latent_dim)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encoder(x)  # (B, F)
        return self.fc_mu(h), self.fc_logvar(h)  # (B, L), (B, L)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        logits = self.decoder(z)  # dense: (B, D); conv: (B, C, H, W)
        return logits.reshape(z.shape[0], *self.input_shape)  # (B, C, H, W)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, logvar = self.encode(x)  # (B, L), (B, L)
        if self.training:
            z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)  # (B, L) reparameterisation
        else:
            z = mu  # (B, L) the posterior mean: deterministic evaluation
        return self.decode(z), mu, logvar


def build(spec: VAESpec, info: DataInfo) -> VAE:
    spec.check_data(info)  # ValueError for non-image input (conv) or H, W not divisible by 2**len(channels)
    return VAE(spec, info)
