"""Optimizers with PyTorch's update rules, so that a config's optimizer means the same steps on
both backends (Keras's own differ: its Adam adds eps to sqrt(v) before the bias correction of v,
its SGD keeps a velocity that bakes in past learning rates, and its weight decay is always
decoupled).

    adam:  g += wd * p (decayed tensors); m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2;
           p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)              (torch.optim.Adam)
    adamw: p *= 1 - lr * wd (decayed tensors); then adam without the g += wd * p    (torch.optim.AdamW)
    sgd:   g += wd * p; buf = momentum * buf + g; p -= lr * (g + momentum * buf if nesterov else buf)
           (buf is g itself at the first step, as zeros * momentum + g)             (torch.optim.SGD)

Weight decay applies to tensors of rank >= 2 (matrices, kernels, embeddings), not to biases or
norm parameters, as the torch backend's parameter groups do. The state is a set of tf.Variables
named by the weights' stable names, saved as tensors.

Fused (the default, `fused=True`): each tensor's update is one of TensorFlow's fused C++ kernels,
which read and write the weight and its slots in place (one op per tensor instead of a dozen
element-wise ops with a temporary each; no compilation, so a short run pays nothing up front):

    adam, adamw: ResourceApplyAdam, which computes m and v as above and
           p -= lr sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps_hat);
           with eps_hat = eps sqrt(1 - b2^t) that is torch's update multiplied through by
           sqrt(1 - b2^t) above and below: the same function, equal to the last bits
    sgd:   ResourceApplyMomentum (accum = momentum accum + g; p -= lr accum, or with nesterov
           p -= lr g + lr momentum accum: torch's rule), ResourceApplyGradientDescent without momentum

The decay steps (g += wd p, p *= 1 - lr wd) are the ones above. tests/unit/test_fast_defaults_tf.py
pins the fused update against the per-tensor one. Under tf.distribute the update is not fused
(the strategy applies it to each replica's copy of a variable).
"""

from __future__ import annotations

import tensorflow as tf


class Optimizer:
    def __init__(self, kind: str, named_vars: list[tuple[str, tf.Variable]], *, betas=(0.9, 0.999), eps=1e-8,
                 momentum=0.0, nesterov=False, weight_decay=0.0, fused: bool = True):
        if kind not in ("adam", "adamw", "sgd"):
            raise ValueError(f"Expected optimizer in ['adam', 'adamw', 'sgd']. Received: optimizer={kind!r}")
        self.kind = kind
        self.names = [n for n, _ in named_vars]
        self.vars = [v for _, v in named_vars]
        self.b1, self.b2 = float(betas[0]), float(betas[1])
        self.eps, self.momentum, self.nesterov = float(eps), float(momentum), bool(nesterov)
        self.weight_decay = float(weight_decay)
        self.decay = [self.weight_decay > 0 and len(v.shape) >= 2 for v in self.vars]
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="optimizer_step")
        self.slots: dict[str, list[tf.Variable]] = {}
        if kind in ("adam", "adamw"):
            self.slots["m"] = [self._zeros(v) for v in self.vars]
            self.slots["v"] = [self._zeros(v) for v in self.vars]
        elif self.momentum > 0:
            self.slots["momentum"] = [self._zeros(v) for v in self.vars]
        self.fused = bool(fused)

    @staticmethod
    def _zeros(v) -> tf.Variable:
        return tf.Variable(tf.zeros(v.shape, tf.float32), trainable=False)

    def apply(self, grads, lr) -> None:
        """One update of every variable (call inside a tf.function; `lr` a float32 scalar)."""
        if self.fused:
            return self._apply_fused(grads, lr)
        self.step.assign_add(1)
        t = tf.cast(self.step, tf.float32)
        wd = self.weight_decay
        if self.kind in ("adam", "adamw"):
            bc1 = 1.0 - tf.pow(self.b1, t)
            bc2_sqrt = tf.sqrt(1.0 - tf.pow(self.b2, t))
            step_size = lr / bc1
            for i, (p, g) in enumerate(zip(self.vars, grads)):
                if self.decay[i]:
                    if self.kind == "adamw":
                        p.assign(p * (1.0 - lr * wd))
                    else:
                        g = g + wd * p
                m, v = self.slots["m"][i], self.slots["v"][i]
                m.assign(self.b1 * m + (1.0 - self.b1) * g)
                v.assign(self.b2 * v + (1.0 - self.b2) * tf.square(g))
                p.assign_sub(step_size * m / (tf.sqrt(v) / bc2_sqrt + self.eps))
            return
        for i, (p, g) in enumerate(zip(self.vars, grads)):
            if self.decay[i]:
                g = g + wd * p
            if self.momentum > 0:
                buf = self.slots["momentum"][i]
                buf.assign(self.momentum * buf + g)
                g = g + self.momentum * buf if self.nesterov else tf.identity(buf)
            p.assign_sub(lr * g)

    @staticmethod
    def _handle(v):
        return v.value.handle if hasattr(v, "value") and hasattr(v.value, "handle") else v.handle

    def _apply_fused(self, grads, lr) -> None:
        """apply() through TensorFlow's fused kernels (see the module's docstring)."""
        self.step.assign_add(1)
        t = tf.cast(self.step, tf.float32)
        lr = tf.cast(lr, tf.float32)
        wd = self.weight_decay
        if self.kind in ("adam", "adamw"):
            b1_power, b2_power = tf.pow(self.b1, t), tf.pow(self.b2, t)
            eps_hat = self.eps * tf.sqrt(1.0 - b2_power)
            for i, (p, g) in enumerate(zip(self.vars, grads)):
                g = tf.cast(g, tf.float32)
                if self.decay[i]:
                    if self.kind == "adamw":
                        p.assign(p * (1.0 - lr * wd))
                    else:
                        g = g + wd * p
                tf.raw_ops.ResourceApplyAdam(
                    var=self._handle(p), m=self.slots["m"][i].handle, v=self.slots["v"][i].handle,
                    beta1_power=b1_power, beta2_power=b2_power, lr=lr, beta1=tf.constant(self.b1),
                    beta2=tf.constant(self.b2), epsilon=eps_hat, grad=g)
            return
        for i, (p, g) in enumerate(zip(self.vars, grads)):
            g = tf.cast(g, tf.float32)
            if self.decay[i]:
                g = g + wd * p
            if self.momentum > 0:
                tf.raw_ops.ResourceApplyMomentum(var=self._handle(p), accum=self.slots["momentum"][i].handle, lr=lr,
                                                 grad=g, momentum=tf.constant(self.momentum),
                                                 use_nesterov=self.nesterov)
            else:
                tf.raw_ops.ResourceApplyGradientDescent(var=self._handle(p), alpha=lr, delta=g)

    # -- state -------------------------------------------------------------------------------------
    def state(self) -> dict:
        """Arrays by name: 'step' and '<slot>/<weight name>'."""
        out = {"step": self.step.numpy().reshape(1)}
        for slot, variables in self.slots.items():
            for name, v in zip(self.names, variables):
                out[f"{slot}/{name}"] = v.numpy()
        return out

    def load(self, arrays: dict) -> None:
        expected = {"step"} | {f"{s}/{n}" for s in self.slots for n in self.names}
        if set(arrays) != expected:
            missing, unexpected = sorted(expected - set(arrays)), sorted(set(arrays) - expected)
            raise KeyError(f"optimizer state does not match ({self.kind}): missing {missing[:5]}, "
                           f"unexpected {unexpected[:5]}")
        self.step.assign(int(arrays["step"].reshape(-1)[0]))
        for slot, variables in self.slots.items():
            for name, v in zip(self.names, variables):
                v.assign(arrays[f"{slot}/{name}"])
