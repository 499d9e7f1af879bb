"""Task losses and metrics in PyTorch, for the task names in airlab/tasks.

Each loss returns (loss used for the gradient, {metric: per-batch mean tensor}). Evaluation sums
`batch mean x batch size` over a split, so every reported metric is a mean per example.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from airlab.backends.torch import shard


def classification(model, x, y, *, generator=None, spec=None):
    logits = model(x)  # (B, classes)
    loss = F.cross_entropy(logits.float(), y)
    return loss, {"loss": loss}


def classification_eval(model, x, y, *, generator=None, spec=None):
    logits = model(x)
    loss = F.cross_entropy(logits.float(), y)
    acc = (logits.argmax(dim=-1) == y).float().mean()
    return loss, {"loss": loss, "accuracy": acc}


def _reconstruction_loss(logits, x, spec):
    if getattr(spec, "loss", "bce") == "mse":
        return F.mse_loss(torch.sigmoid(logits), x)
    return F.binary_cross_entropy_with_logits(logits, x)


def reconstruction(model, x, y, *, generator=None, spec=None):
    logits = model(x).float()  # (B, C, H, W), before the sigmoid
    loss = _reconstruction_loss(logits, x, spec)
    return loss, {"loss": loss}


def reconstruction_eval(model, x, y, *, generator=None, spec=None):
    logits = model(x).float()
    loss = _reconstruction_loss(logits, x, spec)
    return loss, {"loss": loss, "mse": F.mse_loss(torch.sigmoid(logits), x)}


def vae(model, x, y, *, generator=None, spec=None):
    """Negative ELBO per sample in nats: BCE summed over pixels + beta * KL(q(z|x) || N(0, I))."""
    mu, logvar = model.encode(x)  # (B, L), (B, L)
    mu, logvar = mu.float(), logvar.float()
    eps = shard.randn(mu.shape, device=mu.device, generator=generator)  # keyed to the global sample
    z = mu + eps * torch.exp(0.5 * logvar)  # reparameterization
    logits = model.decode(z).float()  # (B, C, H, W)
    recon = F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1).mean()
    kl = (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(1)).mean()
    loss = recon + float(getattr(spec, "beta", 1.0)) * kl
    return loss, {"loss": loss, "recon": recon, "kl": kl}


def lm(model, x, y, *, generator=None, spec=None):
    logits = model(x)  # (B, T, V)
    loss = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), y.reshape(-1))
    return loss, {"loss": loss}


def lm_eval(model, x, y, *, generator=None, spec=None):
    return lm(model, x, y)


TRAIN = {"classification": classification, "reconstruction": reconstruction, "vae": vae, "lm": lm}
EVAL = {"classification": classification_eval, "reconstruction": reconstruction_eval, "vae": vae, "lm": lm_eval}
