"""Framework backends. Each is imported on first use; see base.py for the protocol."""

from __future__ import annotations

from airlab.backends import table


def backend_class(name: str):
    """The backend class for `name`, importing its framework (exit 4 when it is missing)."""
    from airlab.errors import BackendUnavailable
    from airlab.registry import require_framework

    if name not in table.BACKENDS:
        raise BackendUnavailable(
            f"the {name} backend is not implemented yet in this airlab version",
            hint=f"use backend: {' or '.join(table.BACKENDS)} (or --backend {table.BACKENDS[0]})",
        )
    require_framework(name)
    return table.load(table.get(name).implementation)
