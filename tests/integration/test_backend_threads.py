"""Each backend applies train.threads (or the cores this process may use), records it in
env.json, and reports the facts bitwise-exact resume depends on (issue 9, items 12 and 13)."""

from __future__ import annotations

import json

import pytest

from airlab import registry
from airlab.backends import backend_class
from airlab.config import load_config
from airlab.data import load_dataset
from airlab.tasks import get_task
from airlab.train import threads as threads_module
from conftest import CONFIGS, SHAPES_TINY

TINY_MLP = [*SHAPES_TINY, "model.hidden=[8]", "train.epochs=null", "train.steps=1", "device=cpu"]


def build(backend: str, *overrides: str):
    config = load_config(CONFIGS / "mlp.yaml", [*TINY_MLP, f"backend={backend}", *overrides])
    d = config.data
    dataset = load_dataset(d.name, path=d.path, val_fraction=d.val_fraction, seed=config.seed, size=d.size,
                           limit=d.limit)
    return backend_class(config.backend)(config, dataset, get_task(registry.get_model(config.model.name).task))


@pytest.fixture
def torch_threads_restored():
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    yield torch
    torch.set_num_threads(before)


def test_torch_applies_train_threads(torch_threads_restored):
    torch = torch_threads_restored
    torch.set_num_threads(2)
    backend = build("torch", "train.threads=1")
    assert torch.get_num_threads() == 1 and backend.threads == 1
    env = backend.environment()["threads"]
    assert (env["requested"], env["resolved"], env["actual"], env["derived_from"]) == (1, 1, 1, "train.threads")
    assert env["usable_cores"] >= 1
    json.dumps(env)


def test_torch_default_is_the_cores_this_process_may_use(torch_threads_restored, monkeypatch):
    torch = torch_threads_restored
    torch.set_num_threads(2)
    quota = threads_module.Cores(1, 8, 0.5, "cgroup CPU quota 0.5 (8 CPUs in this process's affinity)")
    monkeypatch.setattr(threads_module, "cores", lambda: quota)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    backend = build("torch")
    assert torch.get_num_threads() == 1
    env = backend.environment()["threads"]
    assert env["requested"] is None and env["resolved"] == 1 and "cgroup CPU quota 0.5" in env["derived_from"]
    assert env["cgroup_quota"] == 0.5 and env["affinity_cpus"] == 8


def test_torch_numerics_facts_are_json_and_follow_the_thread_count(torch_threads_restored):
    one = build("torch", "train.threads=1").numerics_facts()
    two = build("torch", "train.threads=2").numerics_facts()
    assert json.loads(json.dumps(one)) == one
    assert one["threads"] == 1 and two["threads"] == 2
    assert {"torch", "numpy", "device", "precision", "deterministic", "mkldnn", "cpu_capability"} <= set(one)
    assert threads_module.compare_facts(one, two) == ["threads 1 -> 2"]


TF_SCRIPT = r"""
import json, sys, warnings
sys.path[:0] = ["tests", "tests/integration"]
from test_backend_threads import build
import tensorflow as tf

first = build("tensorflow", "train.threads=1")
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    second = build("tensorflow", "train.threads=2")  # the runtime has started: 2 cannot be applied
print(json.dumps({"intra": tf.config.threading.get_intra_op_parallelism_threads(),
                  "inter": tf.config.threading.get_inter_op_parallelism_threads(),
                  "threads": [first.threads, second.threads],
                  "env": [first.environment()["threads"], second.environment()["threads"]],
                  "facts": first.numerics_facts(),
                  "warnings": [str(w.message) for w in caught if "train.threads" in str(w.message)]}))
"""


def test_tensorflow_applies_train_threads_and_says_when_it_cannot(airlab_proc):
    """In a fresh process (TensorFlow takes thread counts only before its runtime starts)."""
    pytest.importorskip("tensorflow")
    r = airlab_proc(code=TF_SCRIPT, env={"TF_CPP_MIN_LOG_LEVEL": "3"})
    assert r.code == 0, r.err
    got = json.loads(r.out_lines[-1])
    assert (got["intra"], got["inter"], got["threads"]) == (1, 1, [1, 1])
    first, second = got["env"]
    assert (first["requested"], first["resolved"], first["actual"], first["intra_op"]) == (1, 1, 1, 1)
    assert (second["requested"], second["resolved"], second["actual"]) == (2, 2, 1)
    assert len(got["warnings"]) == 1 and "could not be applied" in got["warnings"][0]
    assert "this run uses 1" in got["warnings"][0]
    facts = got["facts"]
    assert facts["threads"] == 1 and {"tensorflow", "numpy", "device", "precision", "onednn_opts"} <= set(facts)
