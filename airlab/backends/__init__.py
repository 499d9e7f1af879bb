"""Framework backends. Each is imported on first use; see base.py for the protocol."""

from __future__ import annotations

import importlib

from airlab.registry import require_framework

_IMPLEMENTATIONS = {
    "torch": "airlab.backends.torch.backend:TorchBackend",
    "tensorflow": "airlab.backends.tensorflow.backend:TensorFlowBackend",
}


def backend_class(name: str):
    """The backend class for `name`, importing its framework (exit 4 when it is missing)."""
    from airlab.errors import BackendUnavailable

    if name not in _IMPLEMENTATIONS:
        raise BackendUnavailable(
            f"the {name} backend is not implemented yet in this airlab version",
            hint="use backend: torch (or --backend torch)",
        )
    require_framework(name)
    module, _, attr = _IMPLEMENTATIONS[name].partition(":")
    return getattr(importlib.import_module(module), attr)
