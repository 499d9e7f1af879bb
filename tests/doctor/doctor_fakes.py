"""Fake machines for the doctor: fact dicts shaped exactly like airlab.doctor.core.gather's.

`cpu_machine()` is this kind of CI box (no GPU, CPU torch); `gpu_machine()` a healthy Linux box
with one A100, driver 570 and torch cu128. Situations start from one and change a few facts.
"""

from __future__ import annotations

import copy

GiB = 2**30

CU128_ARCH = ["sm_70", "sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120"]
CU126_ARCH = ["sm_50", "sm_60", "sm_70", "sm_75", "sm_80", "sm_86", "sm_90"]


def system(**over) -> dict:
    s = {
        "os": "Linux", "kernel": "6.8.0-51-generic", "machine": "x86_64", "distro": "Ubuntu 24.04.1 LTS",
        "container": None, "wsl": None,
        "python": {"version": "3.11.9", "implementation": "CPython", "executable": "/venv/bin/python",
                   "prefix": "/venv", "venv": True, "conda": None},
        "cpu": {"model": "AMD EPYC 7763", "flags": {"avx": True, "avx2": True, "avx512f": False, "amx_tile": False},
                "logical_cores": 32, "physical_cores": 16, "usable_cores": 32},
        "memory": {"total_bytes": 256 * GiB, "available_bytes": 200 * GiB, "cgroup_limit_bytes": None},
        "disk": {"data_cache": {"path": "/home/u/.cache/airlab/data", "free_bytes": 500 * GiB},
                 "runs": {"path": "/home/u/work/runs", "free_bytes": 500 * GiB}},
        "shm_bytes": 64 * GiB,
    }
    s.update(over)
    return s


def gpu(index=0, name="NVIDIA A100-SXM4-80GB", cc="8.0", **over) -> dict:
    g = {"index": index, "name": name, "uuid": f"GPU-{index:08d}-0000-0000-0000-000000000000", "cc": cc,
         "memory_total_bytes": 80 * GiB, "memory_used_bytes": GiB,
         "pcie": {"gen": 4, "gen_max": 4, "width": 16, "width_max": 16},
         "temperature_c": 40, "power_w": 60.0, "power_limit_w": 400.0,
         "clocks_mhz": {"sm": 1410, "mem": 1593, "sm_max": 1410, "mem_max": 1593},
         "throttle_reasons": ["gpu_idle"],
         "ecc": {"enabled": True, "uncorrected_volatile": 0, "retired_pages_pending": False,
                 "remap_pending": False, "remap_failure": False},
         "mig": {"enabled": False, "instances": None}}
    g.update(over)
    return g


def nvidia(gpus=(), driver=None, cuda=None, source=None, **over) -> dict:
    n = {"nvml": {"ok": source == "nvml", "error": None if source == "nvml" else
                  "NVMLError_LibraryNotFound: NVML Shared Library Not Found"},
         "nvidia_smi": "/usr/bin/nvidia-smi" if source else None, "source": source,
         "driver_version": driver, "cuda_driver_version": cuda, "gpus": [dict(g) for g in gpus],
         "smi_error": None, "proc_version": None, "device_nodes": [f"/dev/nvidia{g['index']}" for g in gpus],
         "toolkit": {"nvcc": None, "nvcc_version": None, "cuda_home": None, "cuda_home_version": None,
                     "usr_local_cuda": None, "installs": []},
         "library_path": {"LD_LIBRARY_PATH": [], "pip_cuda_libs": [], "shadowing": []}}
    n.update(over)
    return n


def torch_probe(version="2.10.0+cu128", cuda="12.8", arch=CU128_ARCH, devices=(), **data_over) -> dict:
    devs = [{"index": d["index"], "name": d["name"], "cc": d["cc"], "memory_bytes": d.get("memory_total_bytes")}
            for d in devices]
    data = {"framework": "torch", "stage": "done", "status": "ok", "import_s": 1.2, "version": version,
            "path": "/venv/lib/python3.11/site-packages/torch", "cuda": cuda, "hip": None,
            "cpu_capability": "AVX2", "arch_list": list(arch) if cuda else [], "mps_built": False,
            "mps_available": False, "cuda_available": bool(devs), "cudnn": 91002 if cuda else None,
            "device_count": len(devs), "devices": devs, "bf16": bool(devs),
            "compute": [{"device": "cpu", "dtype": "float32", "rel_err": 1e-7}]
            + [{"device": f"cuda:{d['index']}", "dtype": "float32", "rel_err": 2e-7} for d in devs]}
    data.update(data_over)
    return {"status": "ok", "seconds": 1.5, "returncode": 0, "stderr_tail": "", "data": data, "stage": "done"}


def tf_probe(version="2.21.0", cuda_build=False, gpus=(), log_findings=(), **data_over) -> dict:
    data = {"framework": "tensorflow", "stage": "done", "status": "ok", "import_s": 2.5, "version": version,
            "path": "/venv/lib/python3.11/site-packages/tensorflow",
            "build": {"cuda_version": "12.5.1" if cuda_build else None, "cudnn_version": "9" if cuda_build else None,
                      "is_cuda_build": cuda_build, "is_rocm_build": False},
            "gpus": [{"name": f"/physical_device:GPU:{g['index']}", "device_name": g["name"], "cc": g["cc"]}
                     for g in gpus],
            "compute": [{"device": "/CPU:0", "dtype": "float32", "rel_err": 1e-7}]
            + [{"device": f"/GPU:{g['index']}", "dtype": "float32", "rel_err": 2e-7} for g in gpus]}
    data.update(data_over)
    return {"status": "ok", "seconds": 3.0, "returncode": 0, "stderr_tail": "", "data": data, "stage": "done",
            "log_findings": list(log_findings)}


def absent(name) -> dict:
    return {"status": "absent", "error": f"ModuleNotFoundError: No module named '{name}'", "seconds": 0.05,
            "returncode": 0, "data": {"status": "absent", "stage": "import"}, "stage": "import", "stderr_tail": ""}


def packages(**over) -> dict:
    p = {"torch": "2.10.0+cu128", "pyyaml": "6.0.2", "nvidia-ml-py": "12.570.86", "numpy": "2.1.0"}
    p.update(over)
    return {k: v for k, v in p.items() if v is not None}


def cpu_machine() -> dict:
    """No GPU, no driver, CPU torch, no TensorFlow: the CI machine."""
    return {"system": system(container="docker"), "nvidia": nvidia(),
            "frameworks": {"torch": torch_probe("2.13.0+cpu", cuda=None), "tensorflow": absent("tensorflow")},
            "packages": packages(torch="2.13.0+cpu", **{"nvidia-ml-py": "13.615.71"}), "env": {}}


def gpu_machine(gpus=None, driver="570.124.06", cuda="12.8", torch_version="2.10.0+cu128", torch_cuda="12.8",
                arch=CU128_ARCH) -> dict:
    """A healthy Linux machine: NVML answers, torch's CUDA build fits driver and GPUs."""
    gs = [gpu()] if gpus is None else gpus
    return {"system": system(), "nvidia": nvidia(gs, driver, cuda, "nvml"),
            "frameworks": {"torch": torch_probe(torch_version, torch_cuda, arch, devices=gs),
                           "tensorflow": absent("tensorflow")},
            "packages": packages(torch=torch_version), "env": {}}


def clone(facts: dict) -> dict:
    return copy.deepcopy(facts)
