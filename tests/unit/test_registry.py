"""The model registry: names, globs, did-you-mean, lazy imports, missing frameworks."""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil

import pytest

import airlab.specs
from airlab import registry
from airlab.backends import table
from airlab.errors import BackendUnavailable, ConfigError
from airlab.specs.base import ModelSpec
from airlab.tasks import TASKS


def spec_names() -> list[str]:
    """The model names the spec modules define (airlab/specs/*.py, read without the registry)."""
    found = set()
    for module in pkgutil.iter_modules(airlab.specs.__path__, "airlab.specs."):
        for obj in vars(importlib.import_module(module.name)).values():
            if isinstance(obj, type) and issubclass(obj, ModelSpec) and "name" in obj.model_fields:
                found.add(obj.model_fields["name"].default)
    return sorted(found)


MODELS = spec_names()
# The names the glob and did-you-mean cases below were written for: those tests see a registry of
# exactly these models (`known_six`), so a new model changes none of their expectations.
SIX = ["autoencoder", "cnn", "mlp", "rnn", "transformer", "vae"]


@pytest.fixture
def known_six(monkeypatch):
    monkeypatch.setattr(registry, "_MODELS", {n: registry.get_model(n) for n in SIX})


def names(entries) -> list[str]:
    return [e.name for e in entries]


def test_every_spec_is_registered_and_the_names_are_sorted():
    assert set(SIX) <= set(MODELS)
    assert registry.model_names() == MODELS
    assert names(registry.list_models()) == MODELS
    assert names(registry.list_models("*")) == MODELS


@pytest.mark.parametrize("pattern, expected", [
    ("*vae*", ["vae"]),
    ("vae", ["vae"]),  # a bare word is a substring
    ("v*", ["vae"]),
    ("*n", ["cnn", "rnn"]),
    ("?nn", ["cnn", "rnn"]),
    ("[cr]nn", ["cnn", "rnn"]),
    ("nn", ["cnn", "rnn"]),
    ("e", ["autoencoder", "transformer", "vae"]),
    ("a*", ["autoencoder"]),
    ("VAE", []),  # case-sensitive, like model names in configs
    ("nope", []),
    ("vae*x", []),
])
def test_list_models_glob_and_substring(pattern, expected, known_six):
    assert names(registry.list_models(pattern)) == expected


@pytest.mark.parametrize("typo, suggestion", [("mlpp", "mlp"), ("vea", "vae"), ("transfomer", "transformer"),
                                              ("autoencodr", "autoencoder")])
def test_unknown_model_suggests_the_closest(typo, suggestion, known_six):
    with pytest.raises(ConfigError) as info:
        registry.get_model(typo)
    assert f"unknown model {typo!r}" in str(info.value)
    assert f"did you mean {suggestion!r}" in str(info.value)
    assert info.value.exit_code == 2
    assert "airlab models" in info.value.hint and all(n in info.value.hint for n in SIX)


def test_the_hint_of_an_unknown_model_names_every_model():
    with pytest.raises(ConfigError) as info:
        registry.get_model("zzzzzz")
    assert all(n in info.value.hint for n in MODELS)


def test_unknown_model_without_a_close_match_has_no_suggestion():
    with pytest.raises(ConfigError) as info:
        registry.get_model("zzzzzz")
    assert "did you mean" not in str(info.value)


@pytest.mark.parametrize("name", MODELS)
def test_every_entry_spec_imports_and_matches(name):
    entry = registry.get_model(name)
    assert entry.task in TASKS
    cls = registry.spec_class(name)
    assert issubclass(cls, ModelSpec)
    spec = cls()
    assert spec.name == name
    n = spec.num_params(cls.default_data)
    assert isinstance(n, int) and n > 0
    assert entry.backends == list(table.BACKENDS)
    assert entry.description


@pytest.mark.parametrize("backend", table.BACKENDS)
@pytest.mark.parametrize("name", MODELS)
def test_every_entry_builder_resolves(name, backend):
    if not table.get(backend).installed():
        pytest.skip(f"{backend} is not installed")
    build = registry.builder(name, backend)
    assert callable(build)
    assert build.__module__ == f"airlab.backends.{backend}.models.{name}"


def test_builder_for_a_backend_without_an_implementation(monkeypatch):
    import dataclasses

    entry = registry.get_model("mlp")
    monkeypatch.setitem(registry._MODELS, "mlp", dataclasses.replace(entry, builders={"torch": entry.builders["torch"]}))
    with pytest.raises(ConfigError) as info:
        registry.builder("mlp", "tensorflow")
    assert "no tensorflow implementation" in str(info.value)
    assert "torch" in info.value.hint


def test_spec_classes_follow_model_names():
    assert [c().name for c in registry.spec_classes()] == MODELS


def _hide(monkeypatch, missing: str):
    real = importlib.util.find_spec

    def find_spec(name, *args, **kwargs):
        if name == missing or name.startswith(missing + "."):
            return None
        return real(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


@pytest.mark.parametrize("backend, module, extra", [("torch", "torch", "torch"), ("tensorflow", "tensorflow", "tf")])
def test_require_framework_missing_raises_backend_unavailable(monkeypatch, backend, module, extra):
    _hide(monkeypatch, module)
    with pytest.raises(BackendUnavailable) as info:
        registry.require_framework(backend)
    assert info.value.exit_code == 4
    assert f"'{module}' package" in str(info.value) and "not installed" in str(info.value)
    assert f'pip install "airlab[{extra}]"' in info.value.hint


def test_require_framework_present_is_silent():
    pytest.importorskip("torch")
    registry.require_framework("torch")


def test_backend_class_for_missing_torch_exits_4(monkeypatch):
    from airlab.backends import backend_class

    _hide(monkeypatch, "torch")
    with pytest.raises(BackendUnavailable) as info:
        backend_class("torch")
    assert info.value.exit_code == 4


def test_backend_class_for_an_unknown_backend_exits_4():
    from airlab.backends import backend_class

    with pytest.raises(BackendUnavailable) as info:
        backend_class("jax")
    assert info.value.exit_code == 4
    assert "jax" in str(info.value)


def test_backend_class_tensorflow_is_the_keras_backend():
    pytest.importorskip("tensorflow")
    from airlab.backends import backend_class

    assert backend_class("tensorflow").__name__ == "TensorFlowBackend"
