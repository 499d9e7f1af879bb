"""Contract tests that only TensorFlow (Keras 3) has, generated from the registry. Everything that
holds on every backend (counts, outputs, losses, safetensors round trips, ...) is in
test_models.py."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tensorflow")
import tensorflow as tf  # noqa: E402

from adapters import adapter  # noqa: E402
from airlab.registry import list_models, spec_class  # noqa: E402
from airlab.specs.base import DataInfo  # noqa: E402

TF = adapter("tensorflow")
CASES = [
    pytest.param(e, variant, id=f"{e.name}-{'default' if i == 0 else f'variant{i}'}")
    for e in list_models()
    for i, variant in enumerate([{}, *spec_class(e.name).test_variants])
]


@pytest.mark.parametrize("entry,variant", CASES)
def test_every_variable_has_one_stable_name(entry, variant):
    """Each variable once, under a `<layer>.<variable>` name (the names checkpoints and the
    converter use)."""
    spec = spec_class(entry.name)(**variant)
    model = TF.build(entry.name, spec, type(spec).default_data)
    named = model.named_variables()
    names = [n for n, _ in named]
    assert len(names) == len(set(names))
    assert {id(v) for _, v in named} == {id(v) for v in model.weights}
    assert all(n.count(".") >= 1 and "/" not in n for n in names)


def test_generate_extends_a_prompt():
    spec = spec_class("transformer")(n_layer=1, n_head=2, n_embd=16, context_length=8)
    model = TF.build("transformer", spec, DataInfo((), vocab_size=11))
    prompt = np.array([[1, 2, 3]], np.int32)
    out = model.generate(prompt, 12, temperature=0.8, top_k=5, seed=3)
    assert out.shape == (1, 15) and (out[:, :3] == prompt).all() and out.max() < 11
    assert np.array_equal(out, model.generate(prompt, 12, temperature=0.8, top_k=5, seed=3))
    greedy = model.generate(prompt, 4, temperature=0)
    logits = model(tf.constant(prompt), training=False)[:, -1]
    assert greedy[0, 3] == int(tf.argmax(logits, axis=-1)[0])
