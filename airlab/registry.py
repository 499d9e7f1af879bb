"""Models registered by (name, backend).

Each entry names its spec class and, per backend, its builder as "module:function" strings that
are imported on first use, so listing models never imports a framework. Adding a model is one
spec, one builder file per backend and one entry here; the contract tests are generated from
this table.

A builder has the signature `build(spec, info: DataInfo) -> model`.
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
from dataclasses import dataclass, field
from typing import Any, Callable

from airlab.backends import table
from airlab.errors import BackendUnavailable, ConfigError

BACKENDS = table.BACKENDS


@dataclass(frozen=True)
class ModelEntry:
    name: str
    task: str  # classification | reconstruction | vae | lm
    spec: str  # "module:Class"
    builders: dict[str, str] = field(default_factory=dict)  # backend -> "module:function"
    description: str = ""

    @property
    def backends(self) -> list[str]:
        return [b for b in BACKENDS if b in self.builders]


def _entry(name: str, task: str, spec: str, description: str) -> ModelEntry:
    return ModelEntry(
        name=name,
        task=task,
        spec=f"airlab.specs.{name}:{spec}",
        builders={row.name: row.builder(name) for row in table.ROWS},
        description=description,
    )


_MODELS: dict[str, ModelEntry] = {
    e.name: e
    for e in [
        _entry("mlp", "classification", "MLPSpec", "multilayer perceptron classifier"),
        _entry("cnn", "classification", "CNNSpec", "convolutional classifier (conv-pool blocks, dense head)"),
        _entry("rnn", "classification", "RNNSpec", "RNN/LSTM/GRU sequence classifier (image rows as a sequence)"),
        _entry("autoencoder", "reconstruction", "AutoencoderSpec", "dense or convolutional autoencoder"),
        _entry("vae", "vae", "VAESpec", "variational autoencoder with a Gaussian latent"),
        _entry("transformer", "lm", "TransformerSpec", "decoder-only causal character language model"),
    ]
}


def _import(target: str) -> Any:
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def model_names() -> list[str]:
    return sorted(_MODELS)


def list_models(pattern: str = "*") -> list[ModelEntry]:
    """Entries whose name matches a glob (`*vae*`); a bare word matches as a substring."""
    if not any(ch in pattern for ch in "*?["):
        pattern = f"*{pattern}*"
    return [_MODELS[n] for n in sorted(_MODELS) if fnmatch.fnmatchcase(n, pattern)]


def close_matches(name: str, choices: list[str]) -> str:
    matches = difflib.get_close_matches(name, choices, n=3, cutoff=0.5)
    return f"did you mean {', '.join(repr(m) for m in matches)}?" if matches else ""


def get_model(name: str) -> ModelEntry:
    try:
        return _MODELS[name]
    except KeyError:
        suggestion = close_matches(name, model_names())
        raise ConfigError(
            f"unknown model {name!r}" + (f"; {suggestion}" if suggestion else ""),
            hint=f"known models: {', '.join(model_names())} (see `airlab models`)",
        ) from None


def spec_class(name: str) -> type:
    return _import(get_model(name).spec)


def spec_classes() -> list[type]:
    return [_import(_MODELS[n].spec) for n in model_names()]


def builder(name: str, backend: str) -> Callable:
    entry = get_model(name)
    if backend not in entry.builders:
        raise ConfigError(
            f"model {name!r} has no {backend} implementation",
            hint=f"available backends for {name}: {', '.join(entry.backends) or 'none'}",
        )
    return _import(entry.builders[backend])


def require_framework(backend: str) -> None:
    """Raise BackendUnavailable with the install command when a backend's framework is missing."""
    row = table.get(backend)
    if not row.installed():
        raise BackendUnavailable(
            f"the {backend} backend needs the '{row.module}' package, which is not installed",
            hint=f'install it with: pip install "airlab[{row.extra}]"  ({row.install_more})',
        )
