"""Learning-rate schedules as pure functions of the step (nothing to checkpoint but the step)."""

from __future__ import annotations

import math


def lr_at(step: int, *, lr: float, schedule: str, total_steps: int, warmup_steps: int = 0,
          min_lr: float = 0.0, decay_steps: int | None = None, step_size: int = 1000,
          gamma: float = 0.1) -> float:
    """The learning rate for optimizer step `step` (0-based).

    Warm-up rises linearly over `warmup_steps` to `lr`; then `constant` holds it, `cosine` decays
    to `min_lr` at step `decay_steps - 1` (default: the last step) and holds it, `step` multiplies by
    `gamma` every `step_size` steps after warm-up.
    """
    if warmup_steps and step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    if schedule == "constant":
        return lr
    if schedule == "step":
        return lr * gamma ** ((step - warmup_steps) // step_size)
    if schedule == "cosine":
        end = decay_steps if decay_steps is not None else total_steps
        span = max(1, end - 1 - warmup_steps)  # min_lr on the last step, step index end - 1
        progress = min(1.0, (step - warmup_steps) / span)
        return min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * progress))
    raise ValueError(f"unknown schedule {schedule!r}")


def lr_function(train_cfg, total_steps: int):
    t = train_cfg
    return lambda step: lr_at(step, lr=t.lr, schedule=t.schedule, total_steps=total_steps,
                              warmup_steps=t.warmup_steps, min_lr=t.min_lr, decay_steps=t.decay_steps,
                              step_size=t.step_size, gamma=t.gamma)
