"""The torch backend's fast defaults (issue 14): train.optimizer_impl and precision: auto on a CPU.

What `auto` picks is a documented rule (measured by scripts/bench_vs_tuned.py); these tests pin
the rule, the flags each explicit choice gives the optimizer, the bitwise round trip of the fused
optimizer's state through a checkpoint, and the CPU bf16 rule through its seams (the CPU's flags
are given as text, never read from this machine).
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

from airlab.backends import common
from airlab.config import validate

torch = pytest.importorskip("torch")

from airlab.backends.torch import backend as torch_backend  # noqa: E402
from airlab.data import load_dataset  # noqa: E402
from airlab.tasks import get_task  # noqa: E402


@functools.cache
def shapes():
    return load_dataset("shapes", val_fraction=0.1, seed=0, size=200)


def tiny(**train):
    cfg = validate({"name": "fast", "seed": 0, "device": "cpu",
                    "model": {"name": "mlp", "hidden": [8], "dropout": 0.1},
                    "data": {"name": "shapes", "size": 200, "batch_size": 16},
                    "train": {"steps": 4, "optimizer": "adamw", "weight_decay": 0.1, "threads": 1, **train}})
    return torch_backend.TorchBackend(cfg, shapes(), get_task("classification"))


def test_auto_optimizer_impl_is_the_documented_rule():
    assert validate({"model": {"name": "mlp"}}).train.optimizer_impl == "auto"
    assert torch_backend.resolve_optimizer_impl("auto", "cpu") == "fused"  # measured: x2.3-x6 per step here
    assert torch_backend.resolve_optimizer_impl("auto", "cuda") == "fused"  # PyTorch's guidance
    assert torch_backend.resolve_optimizer_impl("auto", "mps") == "for_loop"
    for impl in ("fused", "foreach", "for_loop"):
        assert torch_backend.resolve_optimizer_impl(impl, "cpu") == impl


@pytest.mark.parametrize("impl, fused, foreach", [("auto", True, None), ("fused", True, None),
                                                  ("foreach", None, True), ("for_loop", None, False)])
def test_each_choice_builds_the_optimizer_with_its_flag(impl, fused, foreach):
    be = tiny(optimizer_impl=impl)
    assert be.optimizer.defaults["fused"] == fused and be.optimizer.defaults["foreach"] == foreach
    assert be.numerics_facts()["optimizer_impl"] == ("fused" if impl == "auto" else impl)


def test_an_unknown_impl_names_the_key():
    with pytest.raises(Exception) as e:
        validate({"model": {"name": "mlp"}, "train": {"optimizer_impl": "apex"}})
    assert "optimizer_impl" in str(e.value)


def test_fused_state_round_trips_bitwise_through_a_checkpoint(tmp_path):
    a = tiny(optimizer_impl="fused")
    for step in (1, 2):
        a.train_step(np.arange(16) + 16 * step, 1e-2, step=step)
    a.save_state(tmp_path)
    b = tiny(optimizer_impl="fused")
    b.load_state(tmp_path)  # (restores the process's generator as step 2 left it: dropout's masks)
    rng = torch.get_rng_state()
    for be in (a, b):
        torch.set_rng_state(rng)  # each continues from the checkpoint's generator
        be.train_step(np.arange(16) + 48, 1e-2, step=3)
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    state_a, state_b = a.optimizer.state_dict()["state"], b.optimizer.state_dict()["state"]
    assert all(torch.equal(state_a[i][n], state_b[i][n]) for i in state_a for n in state_a[i])
    assert float(state_a[0]["step"]) == 3.0


CPUINFO = "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu sse avx2 avx512f {extra}\nbogomips\t: 1\n"


def test_the_cpu_bf16_flags_come_from_the_flags_line():
    assert common.cpu_bf16_flags(CPUINFO.format(extra="avx512_bf16")) == ("avx512_bf16",)
    assert common.cpu_bf16_flags(CPUINFO.format(extra="amx_bf16 amx_tile avx512_bf16")) == ("amx_bf16",
                                                                                             "avx512_bf16")
    assert common.cpu_bf16_flags(CPUINFO.format(extra="avx512bw avx512_vnni")) == ()
    assert common.cpu_bf16_flags("no flags here") == ()


def test_precision_auto_on_a_cpu_follows_the_backends_rule():
    lacks = lambda: "NVIDIA T4"  # noqa: E731
    assert common.resolve_precision("auto", "cpu", lacks, lambda: True) == "bf16"
    assert common.resolve_precision("auto", "cpu", lacks, lambda: False) == "fp32"
    assert common.resolve_precision("auto", "cpu", lacks) == "fp32"  # a backend without a CPU rule
    assert common.resolve_precision("auto", "mps", lacks, lambda: True) == "fp32"
    assert common.resolve_precision("fp32", "cpu", lacks, lambda: True) == "fp32"  # explicit wins


@pytest.mark.parametrize("flags, expected", [(("avx512_bf16",), "bf16"), (("amx_bf16",), "bf16"), ((), "fp32")])
def test_torch_auto_precision_on_a_cpu_with_and_without_bf16(monkeypatch, flags, expected):
    monkeypatch.setattr(common, "cpu_bf16_flags", lambda cpuinfo=None: flags)
    be = tiny(precision="auto")
    assert be.precision == expected
    assert be.amp_dtype == (torch.bfloat16 if expected == "bf16" else None)
