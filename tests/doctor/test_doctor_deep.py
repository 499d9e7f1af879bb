"""`airlab doctor --deep` says what it ran on the GPUs, and without one what it skipped."""

from __future__ import annotations

import json

import pytest

from doctor_fakes import clone, cpu_machine, gpu, gpu_machine, tf_probe

from airlab.doctor.checks import evaluate
from airlab.doctor.core import run_doctor

NO_GPU_LINE = ("--deep: no GPU, skipped: bigger matmuls (1024x1024), a bf16 matmul and a cuDNN convolution on "
               "the GPU; the CPU matmul ran at 1024x1024")


def by_id(checks):
    return {c.id: c for c in checks}


def test_without_a_gpu_deep_says_what_it_skipped():
    c = by_id(run_doctor(("torch", "tensorflow"), deep=True, facts=cpu_machine()).checks)["gpu.deep"]
    assert (c.status, c.summary, c.fix) == ("skip", NO_GPU_LINE, None)


def test_without_deep_there_is_no_deep_check():
    assert "gpu.deep" not in by_id(run_doctor(("torch",), facts=cpu_machine()).checks)
    facts = dict(cpu_machine(), options={"deep": True})  # gather records the option in the facts
    assert by_id(evaluate(facts, ("torch",)))["gpu.deep"].status == "skip"


def test_tensorflow_alone_skips_only_its_bigger_matmuls():
    facts = clone(cpu_machine())
    facts["frameworks"]["tensorflow"] = tf_probe()
    c = by_id(evaluate(facts, ("tensorflow",), deep=True))["gpu.deep"]
    assert c.summary == ("--deep: no GPU, skipped: bigger matmuls (1024x1024) on the GPU; "
                         "the CPU matmul ran at 1024x1024")


def test_a_gpu_that_no_framework_used_is_named_with_where_to_look():
    facts = clone(cpu_machine())
    facts["nvidia"]["gpus"] = [gpu()]  # a GPU, but the CPU build of torch
    c = by_id(evaluate(facts, ("torch",), deep=True))["gpu.deep"]
    assert c.status == "skip" and c.summary.startswith("--deep: 1 GPU but no framework ran on it, skipped: ")
    assert c.fix == "see torch.cuda_available"


def test_with_gpus_deep_says_what_ran_where():
    facts = gpu_machine(gpus=[gpu(0), gpu(1)])
    rows = facts["frameworks"]["torch"]["data"]["compute"]
    for i in (0, 1):
        rows += [{"device": f"cuda:{i}", "dtype": "bfloat16", "rel_err": 1e-3},
                 {"device": f"cuda:{i}", "dtype": "conv2d(cudnn)", "rel_err": 1e-4}]
    c = by_id(evaluate(facts, ("torch",), deep=True))["gpu.deep"]
    assert c.status == "ok"
    assert c.summary == ("--deep ran matmuls (1024x1024), a bf16 matmul and a cuDNN convolution on cuda:0, cuda:1 "
                         "(results: torch.compute)")


@pytest.fixture
def fake_facts(monkeypatch):
    def use(facts):
        monkeypatch.setattr("airlab.doctor.core.gather", lambda backends, deep=False, timeout=30.0, **seams: facts)
    return use


def test_the_skip_is_in_the_human_output_and_the_json(airlab_cli, fake_facts):
    fake_facts(cpu_machine())
    r = airlab_cli("doctor", "--deep")
    assert r.code == 0, r.err
    line = next(line for line in r.out_lines if "gpu.deep" in line)
    assert line.split()[0] == "skip" and line.endswith(NO_GPU_LINE)
    r = airlab_cli("doctor", "--deep", "--json")
    data = json.loads(r.out)
    check = next(c for c in data["checks"] if c["id"] == "gpu.deep")
    assert check["status"] == "skip" and check["section"] == "gpu" and check["summary"] == NO_GPU_LINE
    assert "gpu.deep" not in airlab_cli("doctor").out
