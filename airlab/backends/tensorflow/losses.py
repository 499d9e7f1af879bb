"""Task losses and metrics in TensorFlow, for the task names in airlab/tasks (the same
definitions as airlab/backends/torch/losses.py).

Each loss takes (model, x, y, training, seed, spec) and returns (loss used for the gradient,
{metric: per-batch mean}). Logits are cast to float32 before any loss, as under torch's autocast.
"""

from __future__ import annotations

import tensorflow as tf


def _ce(logits, y):
    logits = tf.cast(logits, tf.float32)
    return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits))


def classification(model, x, y, *, training=True, seed=None, spec=None):
    logits = model(x, training=training, seed=seed)  # (B, classes)
    loss = _ce(logits, y)
    return loss, {"loss": loss}


def classification_eval(model, x, y, *, training=False, seed=None, spec=None):
    logits = model(x, training=False)
    loss = _ce(logits, y)
    acc = tf.reduce_mean(tf.cast(tf.equal(tf.argmax(logits, axis=-1, output_type=y.dtype), y), tf.float32))
    return loss, {"loss": loss, "accuracy": acc}


def _reconstruction_loss(logits, x, spec):
    if getattr(spec, "loss", "bce") == "mse":
        return tf.reduce_mean(tf.square(tf.sigmoid(logits) - x))
    return tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=x, logits=logits))


def reconstruction(model, x, y, *, training=True, seed=None, spec=None):
    logits = tf.cast(model(x, training=training, seed=seed), tf.float32)  # (B, C, H, W), before the sigmoid
    loss = _reconstruction_loss(logits, x, spec)
    return loss, {"loss": loss}


def reconstruction_eval(model, x, y, *, training=False, seed=None, spec=None):
    logits = tf.cast(model(x, training=False), tf.float32)
    loss = _reconstruction_loss(logits, x, spec)
    return loss, {"loss": loss, "mse": tf.reduce_mean(tf.square(tf.sigmoid(logits) - x))}


def vae(model, x, y, *, training=True, seed=None, spec=None):
    """Negative ELBO per sample in nats: BCE summed over pixels + beta * KL(q(z|x) || N(0, I)).
    The noise is drawn even in evaluation (as the torch backend does), from `seed`."""
    mu, logvar = model.encode(x)  # (B, L), (B, L)
    mu, logvar = tf.cast(mu, tf.float32), tf.cast(logvar, tf.float32)
    eps = tf.cast(model.sample_noise(tf.shape(mu), seed), tf.float32)
    z = mu + eps * tf.exp(0.5 * logvar)  # reparameterization
    logits = tf.cast(model.decode(z), tf.float32)  # (B, C, H, W)
    per_pixel = tf.nn.sigmoid_cross_entropy_with_logits(labels=x, logits=logits)
    recon = tf.reduce_mean(tf.reduce_sum(tf.reshape(per_pixel, [tf.shape(x)[0], -1]), axis=1))
    kl = tf.reduce_mean(-0.5 * tf.reduce_sum(1 + logvar - tf.square(mu) - tf.exp(logvar), axis=1))
    loss = recon + float(getattr(spec, "beta", 1.0)) * kl
    return loss, {"loss": loss, "recon": recon, "kl": kl}


def lm(model, x, y, *, training=True, seed=None, spec=None):
    logits = model(x, training=training, seed=seed)  # (B, T, V)
    loss = _ce(logits, y)
    return loss, {"loss": loss}


def lm_eval(model, x, y, *, training=False, seed=None, spec=None):
    return lm(model, x, y, training=False)


TRAIN = {"classification": classification, "reconstruction": reconstruction, "vae": vae, "lm": lm}
EVAL = {"classification": classification_eval, "reconstruction": reconstruction_eval, "vae": vae, "lm": lm_eval}
