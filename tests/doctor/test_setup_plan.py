"""The setup planner, table-driven over (driver, compute capability, Python, OS, arch) cases.

Expected choices follow the rules in the issue: the newest release and variant that loads on the
driver (minor-version compatibility) and covers every GPU natively, or by PTX where the driver
fully supports the toolkit; a warning naming the driver that lifts minor-compat-only loading.
"""

from __future__ import annotations

import pytest

from airlab.doctor.compat import load
from airlab.setup.plan import Machine, plan_setup, plan_tensorflow, plan_torch

URL = "https://download.pytorch.org/whl/"

# (driver, gpus, python, os, arch) -> (variant, rule, requirement, piece of reason, piece of a warning or None)
TORCH_CASES = [
    # no GPU: the CPU wheel, on every OS that has one
    ((None, (), "3.11", "linux", "x86_64"), ("cpu", "cpu-no-gpu", "torch", "no NVIDIA GPU", None)),
    ((None, (), "3.12", "wsl", "x86_64"), ("cpu", "cpu-no-gpu", "torch", "no NVIDIA GPU", None)),
    ((None, (), "3.11", "windows", "x86_64"), ("cpu", "cpu-no-gpu", "torch", "no NVIDIA GPU", None)),
    ((None, (), "3.11", "darwin", "arm64"), ("default", "macos-default", "torch", "MPS", None)),
    # the brief's example: A100 on a 535 driver -> cu128 by minor-version compatibility, with a warning
    (("535.104.05", ("8.0",), "3.11", "linux", "x86_64"),
     ("cu128", "native", "torch", "minor-version compatibility (>= 525.60.13)", "driver >= 570.26 lifts this")),
    (("525.60.13", ("8.6",), "3.11", "linux", "x86_64"), ("cu128", "native", "torch", "sm_86", "570.26")),
    (("525.60.12", ("8.6",), "3.11", "linux", "x86_64"), ("cu118", "native", "torch==2.7.*",
                                                          "fully supports CUDA 11.8", "UNVERIFIED")),
    # CUDA 13 needs >= 580 (minor compat) and 580.65.06 for full support
    (("580.65.06", ("9.0",), "3.11", "linux", "x86_64"), ("cu130", "native", "torch", "fully supports CUDA 13.0", None)),
    (("580.10.01", ("9.0",), "3.11", "linux", "x86_64"), ("cu130", "native", "torch", "CUDA 13", "580.65.06")),
    (("575.57.08", ("9.0",), "3.12", "linux", "x86_64"), ("cu128", "native", "torch", "fully supports CUDA 12.8", None)),
    # Blackwell: cu128 is the oldest with sm_100 / sm_120
    (("570.26", ("10.0",), "3.11", "linux", "x86_64"), ("cu128", "native", "torch", "sm_100", None)),
    (("575.57.08", ("12.0",), "3.11", "linux", "x86_64"), ("cu128", "native", "torch", "sm_120", None)),
    (("560.35.03", ("12.0",), "3.11", "linux", "x86_64"), ("cu128", "native", "torch", "sm_120", "570.26")),
    (("580.82.07", ("12.0",), "3.13", "linux", "x86_64"), ("cu130", "native", "torch", "sm_120", None)),
    (("570.124.06", ("10.3",), "3.11", "linux", "x86_64"), ("cu128", "native", "torch", "CC 10.3 natively (sm_100)", None)),
    # Pascal / Maxwell: only cu126 still carries sm_50 / sm_60
    (("570.124.06", ("6.0",), "3.11", "linux", "x86_64"), ("cu126", "native", "torch", "sm_60", None)),
    (("535.104.05", ("6.1",), "3.11", "linux", "x86_64"), ("cu126", "native", "torch", "sm_60", "560.28.03")),
    (("550.54.14", ("5.2",), "3.11", "linux", "x86_64"), ("cu126", "native", "torch", "sm_50", "560.28.03")),
    (("580.65.06", ("6.0",), "3.11", "linux", "x86_64"), ("cu126", "native", "torch", "sm_60", None)),
    # Volta 7.0 is in cu128 but not cu130
    (("580.65.06", ("7.0",), "3.11", "linux", "x86_64"), ("cu128", "native", "torch", "sm_70", None)),
    # Kepler: only the old cu118 list has sm_37 (UNVERIFIED), on a CUDA 11 driver
    (("470.82.01", ("3.7",), "3.11", "linux", "x86_64"), ("cu118", "native", "torch==2.7.*", "sm_37", "UNVERIFIED")),
    (("470.82.01", ("3.5",), "3.11", "linux", "x86_64"), ("cpu", "cpu-fallback", "torch", "no CUDA build covers",
                                                          "has code for CC 3.5")),
    # too old for anything that covers the GPU: CPU, naming the drivers that lift it
    (("450.51.05", ("8.0",), "3.11", "linux", "x86_64"), ("cpu", "cpu-fallback", "torch", "too old",
                                                          "driver >= 450.80.02 would allow cu118")),
    (("418.39", ("7.5",), "3.11", "linux", "x86_64"), ("cpu", "cpu-fallback", "torch", "too old", ">= 580")),
    # a GPU newer than every native arch: PTX (compute_120) needs full support of the toolkit
    (("580.65.06", ("13.0",), "3.11", "linux", "x86_64"), ("cu130", "ptx", "torch", "by PTX JIT (compute_120)", None)),
    (("575.57.08", ("13.0",), "3.11", "linux", "x86_64"), ("cu129", "ptx", "torch==2.8.*", "compute_120", None)),
    (("570.124.06", ("13.0",), "3.11", "linux", "x86_64"), ("cpu", "cpu-fallback", "torch", "too old",
                                                            "driver >= 575.51.03 would allow cu129")),
    # aarch64 drops sm_86 (8.6 runs sm_80) and cu130 adds sm_110
    (("580.65.06", ("11.0",), "3.11", "linux", "aarch64"), ("cu130", "native", "torch", "sm_110", None)),
    (("580.65.06", ("11.0",), "3.11", "linux", "x86_64"), ("cpu", "cpu-fallback", "torch", "no CUDA build covers", None)),
    (("570.124.06", ("8.6",), "3.11", "linux", "aarch64"), ("cu128", "native", "torch", "CC 8.6 natively (sm_80)", None)),
    (("570.124.06", ("6.0",), "3.11", "linux", "aarch64"), ("cpu", "cpu-fallback", "torch", "no CUDA build covers", None)),
    # several GPUs: one wheel must cover them all
    (("570.124.06", ("8.0", "9.0"), "3.11", "linux", "x86_64"), ("cu128", "native", "torch", "CC 9.0 natively", None)),
    (("570.124.06", ("6.0", "12.0"), "3.11", "linux", "x86_64"), ("cpu", "cpu-fallback", "torch", "6.0, 12.0", None)),
    # Python: 3.8 is only in releases up to 2.4; newer releases' ranges are unknown upward
    (("535.104.05", ("8.0",), "3.8", "linux", "x86_64"), ("cu124", "native", "torch==2.4.*", "torch 2.4", "550.54.14")),
    (("535.104.05", ("8.0",), "3.14", "linux", "x86_64"), ("cu128", "native", "torch", "newest torch", "570.26")),
    # WSL2 and Windows read the Windows driver column
    (("560.94", ("8.6",), "3.11", "wsl", "x86_64"), ("cu128", "native", "torch", ">= 528.33", "570.65")),
    (("527.41", ("8.6",), "3.11", "wsl", "x86_64"), ("cu118", "native", "torch==2.7.*", "fully supports CUDA 11.8", None)),
    (("527.41", ("8.6",), "3.11", "linux", "x86_64"), ("cu128", "native", "torch", ">= 525.60.13", "570.26")),
    (("576.02", ("8.9",), "3.12", "windows", "x86_64"), ("cu128", "native", "torch", "CC 8.9 natively (sm_86)", None)),
    # no driver known but a GPU assumed: the newest that covers it, and what it needs
    ((None, ("8.0",), "3.11", "linux", "x86_64"), ("cu130", "native", "torch", "driver unknown", "needs >= 580")),
]


@pytest.mark.parametrize("machine, expected", TORCH_CASES, ids=[
    f"{m[3]}-{m[4]}-py{m[2]}-driver{m[0]}-cc{'+'.join(m[1]) or 'none'}" for m, _ in TORCH_CASES])
def test_torch_plan(machine, expected):
    driver, gpus, python, os_, arch = machine
    variant, rule, requirement, reason, warning = expected
    c = plan_torch(Machine(driver=driver, gpus=gpus, python=python, os=os_, arch=arch))
    assert (c.variant, c.rule) == (variant, rule), (c.reason, c.warnings, c.rejected)
    assert c.requirements == [requirement]
    assert c.action == "install"
    assert reason in c.reason, c.reason
    assert "\n" not in c.reason
    if warning is None:
        assert not [w for w in c.warnings if "minor-version" in w]
    else:
        assert any(warning in w for w in c.warnings), c.warnings
    if variant == "default":
        assert c.index_url is None
    else:
        assert c.index_url == URL + variant


# (driver, gpus, python, os, arch) -> (requirement, rule, piece of reason, piece of a warning or None)
TF_CASES = [
    (("535.104.05", ("8.0",), "3.11", "linux", "x86_64"), ("tensorflow[and-cuda]==2.21.*", "and-cuda", "qualify", None)),
    (("570.124.06", ("9.0",), "3.12", "linux", "x86_64"), ("tensorflow[and-cuda]==2.21.*", "and-cuda", "cuDNN 9.3", None)),
    ((None, (), "3.11", "linux", "x86_64"), ("tensorflow-cpu==2.21.*", "cpu", "no NVIDIA GPU", None)),
    (("520.61.05", ("8.0",), "3.11", "linux", "x86_64"), ("tensorflow-cpu==2.21.*", "cpu", "below 525.60.13",
                                                          "525.60.13 would allow")),
    (("560.94", ("8.6",), "3.11", "wsl", "x86_64"), ("tensorflow[and-cuda]==2.21.*", "and-cuda", ">= 528.33", None)),
    (("527.41", ("8.6",), "3.11", "wsl", "x86_64"), ("tensorflow-cpu==2.21.*", "cpu", "below 528.33", "528.33")),
    (("576.02", ("8.6",), "3.11", "windows", "x86_64"), ("tensorflow-cpu==2.21.*", "cpu", "WSL2", None)),
    ((None, (), "3.11", "darwin", "arm64"), ("tensorflow==2.21.*", "cpu", "macOS", None)),
    (("570.124.06", ("8.0",), "3.11", "linux", "aarch64"), ("tensorflow[and-cuda]==2.21.*", "and-cuda", "qualify", None)),
    (("570.124.06", ("3.0",), "3.11", "linux", "x86_64"), ("tensorflow-cpu==2.21.*", "cpu", "oldest documented", None)),
    # Blackwell on TensorFlow's CUDA 12.5: PTX JIT, so the driver must fully support 12.5
    (("550.54.14", ("12.0",), "3.11", "linux", "x86_64"), ("tensorflow-cpu==2.21.*", "cpu", "PTX JIT",
                                                           "555.42.02 would allow")),
    (("570.124.06", ("12.0",), "3.11", "linux", "x86_64"), ("tensorflow[and-cuda]==2.21.*", "and-cuda", "PTX JIT",
                                                            None)),
    # Python picks the release line
    (("570.124.06", ("8.0",), "3.9", "linux", "x86_64"), ("tensorflow[and-cuda]==2.20.*", "and-cuda", "2.20", None)),
    (("570.124.06", ("8.0",), "3.8", "linux", "x86_64"), ("tensorflow[and-cuda]==2.13.*", "and-cuda", "CUDA 11.8", None)),
]


@pytest.mark.parametrize("machine, expected", TF_CASES, ids=[
    f"{m[3]}-{m[4]}-py{m[2]}-driver{m[0]}-cc{'+'.join(m[1]) or 'none'}" for m, _ in TF_CASES])
def test_tensorflow_plan(machine, expected):
    driver, gpus, python, os_, arch = machine
    requirement, rule, reason, warning = expected
    c = plan_tensorflow(Machine(driver=driver, gpus=gpus, python=python, os=os_, arch=arch))
    assert c.requirements == [requirement], c.reason
    assert c.rule == rule
    assert reason in c.reason, c.reason
    assert c.index_url is None
    if warning:
        assert any(warning in w for w in c.warnings), c.warnings


def test_tensorflow_on_a_python_no_release_supports():
    c = plan_tensorflow(Machine(driver="570.124.06", gpus=("8.0",), python="3.14"))
    assert c.action == "none" and c.requirements == []
    assert "Python 3.14" in c.reason


# --- installed packages -------------------------------------------------------------------------


def test_installed_cpu_torch_that_fits_is_kept():
    c = plan_torch(Machine(installed={"torch": "2.13.0+cpu"}))
    assert c.action == "keep" and c.uninstall == []
    assert c.reason.startswith("torch 2.13.0+cpu is already installed and fits")


def test_cpu_torch_on_a_gpu_machine_is_replaced_with_its_companions():
    c = plan_torch(Machine(driver="570.124.06", gpus=("8.0",),
                           installed={"torch": "2.13.0+cpu", "torchvision": "0.28.0+cpu", "numpy": "2.1"}))
    assert c.action == "install" and c.variant == "cu128"
    assert c.uninstall == ["torch", "torchvision"]
    assert c.requirements == ["torch", "torchvision"]
    assert any("replaces the installed torch 2.13.0+cpu" in w for w in c.warnings)


def test_a_pinned_older_release_is_not_kept_when_the_installed_one_is_newer():
    c = plan_torch(Machine(driver="470.82.01", gpus=("3.7",), installed={"torch": "2.10.0+cu118"}))
    assert c.variant == "cu118" and c.action == "install" and c.requirements == ["torch==2.7.*"]


def test_tensorflow_cpu_is_replaced_by_and_cuda_on_a_gpu_machine():
    c = plan_tensorflow(Machine(driver="570.124.06", gpus=("8.0",), installed={"tensorflow-cpu": "2.21.0"}))
    assert c.action == "install" and c.uninstall == ["tensorflow-cpu"]


def test_installed_tensorflow_cpu_that_fits_is_kept():
    c = plan_tensorflow(Machine(installed={"tensorflow-cpu": "2.21.0"}))
    assert c.action == "keep"


def test_and_cuda_is_kept_only_with_its_cuda_libraries():
    m = dict(driver="570.124.06", gpus=("8.0",))
    assert plan_tensorflow(Machine(**m, installed={"tensorflow": "2.21.0"})).action == "install"
    assert plan_tensorflow(Machine(**m, installed={"tensorflow": "2.21.0", "nvidia-cudnn-cu12": "9.3.0"})).action \
        == "keep"


def test_unknown_compute_capability_plans_by_driver_and_says_so():
    c = plan_torch(Machine(driver="570.124.06", gpus=(), unknown_gpus=1))
    assert c.variant == "cu128"
    assert any("unknown compute capability" in w for w in c.warnings)


# --- properties over the whole table ------------------------------------------------------------


DRIVERS = ["418.39", "450.80.02", "470.82.01", "520.61.05", "525.60.13", "535.104.05", "550.54.14", "560.35.03",
           "570.26", "575.57.08", "580.65.06", "595.45.04"]
CCS = ["3.5", "3.7", "5.0", "5.2", "6.0", "6.1", "7.0", "7.5", "8.0", "8.6", "8.9", "9.0", "10.0", "12.0", "13.0"]


@pytest.mark.parametrize("os_", ["linux", "wsl"])
def test_every_cuda_choice_loads_on_the_driver_and_covers_the_gpu(os_):
    """Over a grid of drivers x CCs: whatever CUDA variant is chosen really loads and covers."""
    from airlab.doctor.compat import coverage, parse_cc, variant_toolkit

    compat = load()
    column = "windows" if os_ == "wsl" else "linux"
    drivers = DRIVERS if os_ == "linux" else ["452.39", "528.33", "537.13", "560.94", "572.61", "581.0"]
    for driver in drivers:
        for cc in CCS:
            c = plan_torch(Machine(driver=driver, gpus=(cc,), os=os_))
            if c.variant == "cpu":
                assert c.rule == "cpu-fallback" and c.warnings
                continue
            toolkit = variant_toolkit(c.variant)
            rule, full = compat.loadability(toolkit, driver, column)
            assert rule in ("full", "minor"), (driver, cc, c.variant)
            kind, _ = coverage(parse_cc(cc), compat.torch_arch_list(c.variant)[0])
            assert kind in ("native", "ptx"), (driver, cc, c.variant)
            if kind == "ptx":
                assert rule == "full"
            if rule == "minor":
                assert any(f"driver >= {full} lifts this" in w for w in c.warnings)


def test_a_newer_driver_never_gets_an_older_toolkit():
    from airlab.doctor.compat import parse_version, variant_toolkit

    for cc in CCS:
        last = None
        for driver in DRIVERS:
            c = plan_torch(Machine(driver=driver, gpus=(cc,)))
            if c.variant == "cpu":
                continue
            tk = parse_version(variant_toolkit(c.variant))
            assert last is None or tk >= last, (cc, driver, c.variant)
            last = tk


def test_plan_to_dict_is_json_ready():
    import json

    p = plan_setup(Machine(driver="535.104.05", gpus=("8.0",), installed={"torch": "2.13.0+cpu"}),
                   ["torch", "tensorflow"])
    data = json.loads(json.dumps(p.to_dict()))
    assert [c["backend"] for c in data["choices"]] == ["torch", "tensorflow"]
    assert data["machine"]["driver"] == "535.104.05"


def test_unknown_backend_is_refused():
    with pytest.raises(ValueError):
        plan_setup(Machine(), ["jax"])
