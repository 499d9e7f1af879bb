"""Every backend of the backend table against the Backend protocol (airlab/backends/base.py).

The protocol is what the run loop, the sampler, the dry run, the converter and the training
benchmark use, and all they use: each backend in `table.ROWS` has every member, with the
protocol's parameter names, kinds and defaults, and a tiny built instance has the attributes.
A backend whose framework is not installed is skipped, with the install command as the reason.
The shared algorithms of airlab/backends/common.py are checked here too, without a framework.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import airlab
from airlab import faults
from airlab.backends import common, table
from airlab.backends.base import Backend
from airlab.errors import ConfigError, EnvironmentProblem

PACKAGE = Path(airlab.__file__).parent
# the callers of the protocol, and the names they give a backend instance there
CALLERS = ("train/loop.py", "train/commands.py", "train/samples.py", "interop/*.py", "bench/training.py")
INSTANCE = re.compile(r"(?<![\w.])(?:self\.backend|backend|target_backend|impl)\.([A-Za-z_]\w*)")
# the algorithms written once in common.BackendCore: a backend supplies primitives, never its own copy
SHARED = ("evaluate", "summary", "pop_train_metrics", "train_metrics_state", "restore_train_metrics")


def protocol_methods() -> dict[str, inspect.Signature]:
    return {name: inspect.signature(value) for name, value in vars(Backend).items()
            if inspect.isfunction(value) and (name == "__init__" or not name.startswith("_"))}


def protocol_attributes() -> list[str]:
    return list(Backend.__annotations__)


def shape(sig: inspect.Signature) -> list[tuple[str, inspect._ParameterKind]]:
    return [(p.name, p.kind) for p in sig.parameters.values()]


def row_param(row):
    reason = f"{row.display} is not installed (pip install \"airlab[{row.extra}]\")"
    return pytest.param(row, id=row.name, marks=pytest.mark.skipif(not row.installed(), reason=reason))


ROWS = [row_param(row) for row in table.ROWS]


# -- the protocol itself ------------------------------------------------------------------------


def test_the_protocol_lists_what_the_run_loop_and_the_converter_need():
    members = set(protocol_methods()) | set(protocol_attributes())
    for needed in ("load_state", "weight_aliases", "faults", "grad_accum", "threads", "thread_plan",
                   "numerics_facts", "train_metrics_state", "restore_train_metrics"):
        assert needed in members, needed
    assert "skip" in protocol_methods()["load_state"].parameters


def test_its_callers_use_nothing_else():
    """Every `backend.<member>` in the run loop, the sampler, the dry run, the converter and the
    training benchmark is a member of the protocol."""
    members = set(protocol_methods()) | set(protocol_attributes())
    used: dict[str, set[str]] = {}
    for pattern in CALLERS:
        for path in sorted(PACKAGE.glob(pattern)):
            for name in INSTANCE.findall(path.read_text()):
                used.setdefault(name, set()).add(str(path.relative_to(PACKAGE)))
    assert {"train_step", "evaluate", "load_state"} <= set(used)  # the scan finds the callers
    missing = {name: sorted(where) for name, where in used.items() if name not in members}
    assert not missing, f"used but not in airlab/backends/base.py's Backend: {missing}"


# -- each backend of the table ------------------------------------------------------------------


@pytest.mark.parametrize("row", ROWS)
def test_every_method_of_the_protocol_is_implemented_with_its_signature(row):
    cls = table.load(row.implementation)
    for name, wanted in protocol_methods().items():
        assert callable(getattr(cls, name, None)), f"{cls.__name__} lacks {name}"
        got = inspect.signature(getattr(cls, name))
        assert shape(got) == shape(wanted), f"{cls.__name__}.{name}{got} != Backend.{name}{wanted}"
        for p in wanted.parameters.values():
            if p.default is not inspect.Parameter.empty:  # a caller may leave it out
                assert got.parameters[p.name].default == p.default, f"{cls.__name__}.{name}: default of {p.name}"


@pytest.mark.parametrize("row", ROWS)
def test_the_shared_algorithms_are_inherited_not_copied(row):
    cls = table.load(row.implementation)
    assert issubclass(cls, common.BackendCore)
    assert cls.name == row.name
    for name in SHARED:
        assert getattr(cls, name) is getattr(common.BackendCore, name), f"{cls.__name__} overrides {name}"


def tiny(backend: str):
    from airlab.config import validate
    from airlab.data import load_dataset
    from airlab.tasks import get_task

    cfg = validate({"name": "protocol", "seed": 0, "device": "cpu", "backend": backend,
                    "model": {"name": "mlp", "hidden": [8]},
                    "data": {"name": "shapes", "size": 64, "batch_size": 8},
                    "train": {"steps": 2, "precision": "fp32", "grad_accum": 2}})
    dataset = load_dataset("shapes", val_fraction=0.25, seed=0, size=64)
    return cfg, table.load(table.get(backend).implementation)(cfg, dataset, get_task("classification"))


@pytest.fixture(scope="module", params=ROWS)
def built(request):
    return request.param, *tiny(request.param.name)


def test_a_built_backend_has_every_member(built):
    row, cfg, backend = built
    assert isinstance(backend, Backend)
    for name in protocol_attributes():
        assert hasattr(backend, name), name
    assert backend.name == row.name
    assert backend.device == "cpu"
    assert isinstance(backend.threads, int) and backend.threads >= 1
    assert backend.thread_plan.threads >= 1
    assert backend.faults is faults.NONE
    assert backend.grad_accum == cfg.train.grad_accum == 2
    assert backend.weight_aliases() == {}  # an MLP ties no weights


def test_a_train_metric_state_without_dtypes_still_loads(built):
    """Checkpoints of earlier airlab versions hold the running sums without their dtypes."""
    _, _, backend = built
    backend.restore_train_metrics({"count": 2, "sums": {"loss": 4.5}})
    assert backend.train_metrics_state() == {"count": 2, "sums": {"loss": 4.5}, "dtypes": {"loss": "float32"}}
    backend.train_step(np.arange(8, dtype=np.int64), 1e-3, step=1)  # the restored sums go on from there
    state = backend.train_metrics_state()
    assert state["count"] == 3 and state["sums"]["loss"] > 4.5 and state["dtypes"] == {"loss": "float32"}
    metrics = backend.pop_train_metrics()
    assert metrics["loss"] == pytest.approx(state["sums"]["loss"] / 3)
    assert backend.pop_train_metrics() == {} and backend.train_metrics_state()["count"] == 0


# -- the shared algorithms, without a framework -------------------------------------------------


class Seen:
    """What a framework sees, as common.resolve_device asks for it."""

    def __init__(self, name="torch", gpus=0, mps=False, cpu_only=True, noun="CUDA device", refusal=None):
        self.name, self.gpus, self.mps, self.cpu_only, self.gpu_noun = name, gpus, mps, cpu_only, noun
        self.no_gpu_hint, self.mps_refusal = "install one", refusal

    def _gpu_count(self):
        return self.gpus

    def _default_gpu(self):
        return 0

    def _mps_available(self):
        return self.mps

    def _cpu_only_build(self):
        return self.cpu_only

    def _framework(self):
        return f"{self.name} 9.9"


def test_the_device_grammar():
    assert common.resolve_device("auto", Seen()) == ("cpu", None)
    assert common.resolve_device("auto", Seen(mps=True)) == ("mps", None)
    assert common.resolve_device("auto", Seen(gpus=2, mps=True)) == ("cuda", 0)
    assert common.resolve_device("cuda:1", Seen(gpus=2)) == ("cuda", 1)
    assert common.resolve_device("cuda", Seen(gpus=1)) == ("cuda", 0)
    assert common.device_name("cuda", 1) == "cuda:1" and common.device_name("cpu", None) == "cpu"
    with pytest.raises(EnvironmentProblem) as e:
        common.resolve_device("cuda:0", Seen())
    assert str(e.value).startswith("device: cuda:0 requested but torch 9.9 sees no CUDA device "
                                   "(this is a CPU-only build)")
    with pytest.raises(EnvironmentProblem) as e:
        common.resolve_device("cuda:2", Seen(name="tensorflow", gpus=2, noun="GPU"))
    assert str(e.value).startswith("device: cuda:2 requested but only 2 GPU(s) are visible")
    with pytest.raises(ConfigError) as e:
        common.resolve_device("mps", Seen(name="tensorflow", mps=True, refusal="use device: cpu"))
    assert "device: mps is not supported by the tensorflow backend" in str(e.value)
    assert common.resolve_device("auto", Seen(mps=True, refusal="use device: cpu")) == ("cpu", None)


def test_precision_resolution():
    has, lacks = (lambda: None), (lambda: "NVIDIA T4")
    assert common.resolve_precision("auto", "cuda", has) == "bf16"
    assert common.resolve_precision("auto", "cuda", lacks) == "fp32"
    assert common.resolve_precision("auto", "cpu", lacks) == "fp32"
    assert common.resolve_precision("bf16", "cpu", lacks) == "bf16"
    assert common.resolve_precision("fp16", "cuda", lacks) == "fp16"
    for requested, kind, words in [("bf16", "cuda", "bf16 is not supported on NVIDIA T4"),
                                   ("bf16", "mps", "bf16 autocast is not supported on mps"),
                                   ("fp16", "mps", "fp16 needs a CUDA device (this run is on mps)"),
                                   ("fp8", "cpu", "unknown precision 'fp8'")]:
        with pytest.raises(ConfigError) as e:
            common.resolve_precision(requested, kind, lacks)
        assert words in str(e.value)


def test_micro_batches_and_the_out_of_memory_step():
    index = np.arange(10)
    assert [len(c) for c in common.micro_batches(index, 4)] == [3, 3, 2, 2]
    assert common.micro_batches(index, 1)[0] is index
    oom = common.out_of_memory(7, 10, 4, RuntimeError("CUDA out of memory.\nmore"))
    assert (oom.step, oom.micro_batch, oom.detail) == (7, 3, "CUDA out of memory.")


def test_evaluation_means_weigh_each_batch_by_its_size():
    starts = common.eval_starts(SimpleNamespace(batches="windows"), 100, 8)
    assert starts.tolist() == list(range(0, 91, 8))
    assert common.eval_starts(SimpleNamespace(batches="rows"), 3, None).tolist() == [0, 1, 2]
    assert common.eval_batch_size(SimpleNamespace(eval_batch_size=None, batch_size=8)) == 32
    table_ = np.array([[np.float32(1 / 7), 2.0], [np.float32(0.0), 4.0]])
    means = common.weighted_means(["accuracy", "loss"], table_, [7, 3])
    assert means == {"accuracy": 0.1, "loss": 2.6}  # one of ten, exactly


def test_the_memory_estimate():
    cfg = SimpleNamespace(train=SimpleNamespace(optimizer="sgd", momentum=0.0), data=SimpleNamespace(batch_size=8))
    assert common.estimate_train_bytes(100, 10, cfg) == 100 * 2 + 10 * 8 // common.PROBE * 2
    cfg.train = SimpleNamespace(optimizer="adamw", momentum=0.0)
    assert common.estimate_train_bytes(100, 0, cfg) == 400
    probe = common.LayerProbe(lambda x: (list(x.shape), x.nbytes) if isinstance(x, np.ndarray) else None)
    probe.record("fc", "Linear", (np.zeros((2, 3), np.float32), None), 12)
    assert probe.rows[0].output_shape == "(B, 3), -" and probe.act_bytes == 24
