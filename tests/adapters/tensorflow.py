"""The tests' TensorFlow (Keras 3) adapter (see adapters/__init__.py)."""

from __future__ import annotations

import numpy as np

import airlab.backends.tensorflow  # noqa: F401  (fixes KERAS_BACKEND before keras is imported)
import keras  # noqa: E402
import safetensors.numpy  # noqa: E402
import tensorflow as tf  # noqa: E402

from adapters import Adapter  # noqa: E402
from airlab.backends.tensorflow.backend import assign_weights, model_weights  # noqa: E402
from airlab.backends.tensorflow.models import init_seeds  # noqa: E402
from airlab.registry import builder  # noqa: E402


class TensorFlowAdapter(Adapter):
    name = "tensorflow"
    checkpoint_files = frozenset({"model.safetensors", "optimizer.safetensors", "rng.safetensors", "trainer.json"})
    resumed_files = ("model.safetensors", "optimizer.safetensors", "rng.safetensors")
    rng_state = "tf_generator_state"
    # op determinism: without it a kernel may reduce in another order in another process
    exact_resume = ("train.deterministic=true",)

    # TensorFlow takes its thread counts once, from TF_NUM_INTRAOP_THREADS=1 (tests/conftest.py)

    def versions(self):
        return {"name": "tensorflow", "tensorflow": tf.__version__, "keras": keras.__version__}

    def build(self, model, spec, info, seed=0):
        with init_seeds(seed):
            return builder(model, "tensorflow")(spec, info)

    def count_params(self, model):
        return sum(int(np.prod(v.shape)) for v in model.trainable_variables)

    def weights(self, model):
        return model_weights(model)

    def save(self, model, path):
        safetensors.numpy.save_file(model_weights(model), str(path))

    def load(self, model, path):
        assign_weights(model, safetensors.numpy.load_file(str(path)))

    def tensor(self, array):
        return tf.constant(array.astype(np.int32) if array.dtype.kind in "iu" else array)

    def forward(self, model, x, *, training, seed=None):
        if seed is None:
            return model(x, training=training)  # in training: Keras's own seed generators (model.fit)
        return model(x, training=training, seed=tf.constant([seed, 0], tf.int64))

    def arrays(self, out):
        return tuple(t.numpy() for t in (out if isinstance(out, tuple) else (out,)))

    def cross_entropy(self, logits, labels):
        return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))

    def bce_with_logits(self, logits, targets):
        return tf.nn.sigmoid_cross_entropy_with_logits(labels=targets, logits=logits)

    sigmoid, exp, sum, mean = staticmethod(tf.sigmoid), staticmethod(tf.exp), staticmethod(tf.reduce_sum), \
        staticmethod(tf.reduce_mean)

    def adam_steps(self, model, x, loss_of, steps, lr=1e-3):
        opt = keras.optimizers.Adam(learning_rate=lr)
        opt.build(model.trainable_variables)

        @tf.function
        def step(i):
            with tf.GradientTape() as tape:
                loss = loss_of(model(x, training=True, seed=tf.stack([i, 1])))
            grads = tape.gradient(loss, model.trainable_variables)
            opt.apply_gradients(zip(grads, model.trainable_variables))
            return loss

        return [float(step(tf.constant(i, tf.int64))) for i in range(steps)]


ADAPTER = TensorFlowAdapter()
