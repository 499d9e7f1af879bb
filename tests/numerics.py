"""The numerics of every test that compares numbers, said once (issue 10, item 7).

Parity (torch vs TensorFlow), resume (bitwise against the uninterrupted run), 1-vs-N (one batch
against its micro-batches) and equal-results tests (same seed, same weights) prove what they
prove under these settings, stated explicitly rather than left to the defaults: a later change
of a default (bf16 where the CPU has AMX, compiled or fused kernels, the thread count, op
determinism) must not change what such a test proves. A setting airlab adds later that changes
numbers (a fused optimizer, say) gets its plain value here, once.

`NUMERICS` is a list of `KEY=VALUE` overrides for `airlab train`; `pinned(config)` puts the same
settings into a config dict given to `airlab.config.validate`. Tests that need op determinism
(bitwise resume in another process on TensorFlow) add `train.deterministic=true` after these.
"""

from __future__ import annotations

import json
from typing import Any

PINNED: dict[str, Any] = {
    "device": "cpu",  # results never depend on the machine's accelerator
    "train.precision": "fp32",  # not "auto" (bf16 where the CPU has AMX or AVX512-BF16)
    "train.compile": False,  # eager kernels: no torch.compile, no XLA
    "train.optimizer_impl": "for_loop",  # not "auto" (torch's fused Adam on CPU: equal within rounding only)
    "train.threads": 1,  # the thread count orders the reductions
    "train.deterministic": False,  # the default, said: tests that need it turn it on themselves
}


def _value(value: Any) -> str:
    return json.dumps(value, separators=(",", ":")) if not isinstance(value, str) else value


def as_overrides(settings: dict[str, Any]) -> list[str]:
    """{"train.threads": 1, "model.hidden": [16]} -> ["train.threads=1", "model.hidden=[16]"]."""
    return [f"{key}={_value(value)}" for key, value in settings.items()]


NUMERICS: list[str] = as_overrides(PINNED)
DETERMINISTIC: list[str] = [*NUMERICS, "train.deterministic=true"]


def pinned(config: dict) -> dict:
    """A copy of a config dict with PINNED set (nested sections created as needed)."""
    out = json.loads(json.dumps(config))
    for key, value in PINNED.items():
        *sections, last = key.split(".")
        node = out
        for section in sections:
            node = node.setdefault(section, {})
        node[last] = value
    return out
