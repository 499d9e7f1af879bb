"""Fake GPU/driver/framework situations injected as fact dicts: each yields its check id, status and fix.

The seam is airlab.doctor.checks.evaluate (pure over the facts airlab.doctor.core.gather returns),
so no GPU, driver or framework is needed. The end-to-end path (real probes, fake frameworks) is in
test_doctor_probes.py.
"""

from __future__ import annotations

import pytest

from airlab.doctor.checks import STATUSES, evaluate
from doctor_fakes import (CU126_ARCH, absent, clone, cpu_machine, gpu, gpu_machine, nvidia, tf_probe,
                          torch_probe)


def by_id(checks):
    return {c.id: c for c in checks}


# --- situations ---------------------------------------------------------------------------------


def old_driver():
    f = gpu_machine(driver="470.82.01", cuda="11.4")
    t = f["frameworks"]["torch"]["data"]
    t.update(cuda_available=False, device_count=0, devices=[], compute=t["compute"][:1],
             cuda_error="RuntimeError: The NVIDIA driver on your system is too old (found version 11040).")
    return f


def pascal_with_cu128():
    p100 = gpu(name="Tesla P100-PCIE-16GB", cc="6.0")
    f = gpu_machine(gpus=[p100])
    f["frameworks"]["torch"]["data"]["compute"][1] = {
        "device": "cuda:0", "dtype": "float32",
        "error": "RuntimeError: CUDA error: no kernel image is available for execution on the device"}
    return f


def blackwell_with_cu126():
    b = gpu(name="NVIDIA RTX PRO 6000 Blackwell Workstation Edition", cc="12.0")
    return gpu_machine(gpus=[b], torch_version="2.7.1+cu126", torch_cuda="12.6", arch=CU126_ARCH)


def wsl2_linux_driver_inside():
    f = gpu_machine(driver="572.61", cuda="12.8")
    f["system"]["wsl"] = {"version": 2, "kernel": "5.15.167.4-microsoft-standard-WSL2",
                          "wsl_lib_dir": "/usr/lib/wsl/lib", "wsl_libcuda": True, "dxg": True,
                          "linux_libcuda": ["/usr/lib/x86_64-linux-gnu/libcuda.so.1"]}
    return f


def wsl2_healthy():
    f = wsl2_linux_driver_inside()
    f["system"]["wsl"]["linux_libcuda"] = []
    return f


def wsl2_without_libcuda():
    f = wsl2_healthy()
    f["system"]["wsl"]["wsl_libcuda"] = False
    return f


def wsl2_on_old_windows():
    # Windows 10 before 21H2: no GPU paravirtualization, so no /dev/dxg (and no WSL libcuda either)
    f = wsl2_without_libcuda()
    f["system"]["wsl"]["dxg"] = False
    return f


def wsl2_windows_driver_below_minor_compat():
    # 527.41 is >= 525.60.13 (the Linux minimum) but < 528.33 (the Windows one, which WSL2 reports)
    f = wsl2_healthy()
    f["nvidia"]["driver_version"] = "527.41"
    return f


def mig_without_instances():
    h = gpu(name="NVIDIA H100 80GB HBM3", cc="9.0", mig={"enabled": True, "instances": 0})
    f = gpu_machine(gpus=[h])
    t = f["frameworks"]["torch"]["data"]
    t.update(cuda_available=False, device_count=0, devices=[], compute=t["compute"][:1],
             cuda_error="RuntimeError: No CUDA GPUs are available")
    return f


def mig_with_instances():
    return gpu_machine(gpus=[gpu(name="NVIDIA H100 80GB HBM3", cc="9.0", mig={"enabled": True, "instances": 3})])


def no_nvml_smi_works():
    f = gpu_machine()
    f["nvidia"].update(source="nvidia-smi", nvml={"ok": False, "error": "NVMLError_FunctionNotFound: ..."})
    return f


def no_nvml_no_smi():
    f = gpu_machine()
    g = f["nvidia"]["gpus"][0]
    f["nvidia"].update(source="proc", nvidia_smi=None,
                       nvml={"ok": False, "error": "NVMLError_LibraryNotFound: NVML Shared Library Not Found"},
                       gpus=[{"index": 0, "name": g["name"], "uuid": g["uuid"], "cc": None, "bus": "0000:07:00.0"}])
    return f


def no_nvidia_smi():
    f = gpu_machine()
    f["nvidia"]["nvidia_smi"] = None
    return f


def torch_absent():
    f = cpu_machine()
    f["frameworks"]["torch"] = absent("torch")
    f["packages"].pop("torch")
    return f


def torch_import_raising():
    f = gpu_machine()
    f["frameworks"]["torch"] = {
        "status": "import_error", "seconds": 0.4, "returncode": 0, "stage": "import", "stderr_tail": "",
        "error": "OSError: libcudnn.so.9: cannot open shared object file: No such file or directory",
        "data": {"status": "import_error", "stage": "import"}}
    return f


def tf_absent():
    return cpu_machine()


def tf_import_hanging():
    f = cpu_machine()
    f["frameworks"]["tensorflow"] = {
        "status": "timeout", "seconds": 30.0, "returncode": -9, "stage": "import", "stderr_tail": "",
        "error": "no result after 30 s (stuck at stage 'import'); killed",
        "data": {"framework": "tensorflow", "status": "importing", "stage": "import"}, "log_findings": []}
    return f


def cpu_torch_on_gpu_machine():
    f = gpu_machine()
    f["frameworks"]["torch"] = torch_probe("2.10.0+cpu", cuda=None)
    return f


def tf_missing_cudnn():
    f = gpu_machine()
    g = f["nvidia"]["gpus"]
    f["frameworks"]["tensorflow"] = tf_probe(cuda_build=True, gpus=[], log_findings=[
        {"kind": "missing_library", "detail": "libcudnn.so.9",
         "line": "W0000 ... Could not load dynamic library 'libcudnn.so.9'; dlerror: libcudnn.so.9: cannot open shared "
                 "object file: No such file or directory"},
        {"kind": "dlopen_failed", "detail": None, "line": "Cannot dlopen some GPU libraries. Skipping registering "
                                                          "GPU devices..."}])
    assert g
    return f


def tf_cpu_build_on_gpu_machine():
    f = gpu_machine()
    f["frameworks"]["tensorflow"] = tf_probe(cuda_build=False)
    return f


def tf_healthy_gpu():
    f = gpu_machine()
    f["frameworks"]["tensorflow"] = tf_probe(cuda_build=True, gpus=f["nvidia"]["gpus"])
    return f


def ld_library_path_shadows_cudnn():
    f = gpu_machine()
    f["nvidia"]["library_path"] = {
        "LD_LIBRARY_PATH": ["/usr/local/cuda-12.2/lib64"], "pip_cuda_libs": ["libcublas", "libcudnn"],
        "shadowing": [{"dir": "/usr/local/cuda-12.2/lib64", "lib": "libcudnn.so.8",
                       "pip": "/venv/lib/python3.11/site-packages/nvidia/cudnn/lib/libcudnn.so.9"}]}
    return f


def clashing_pynvml():
    f = gpu_machine()
    f["packages"]["pynvml"] = "11.5.0"
    return f


def old_torch_cve():
    f = gpu_machine(torch_version="2.5.1+cu124", torch_cuda="12.4", arch=CU126_ARCH)
    return f


def small_shm():
    f = cpu_machine()
    f["system"]["shm_bytes"] = 64 * 2**20
    return f


def remap_failure():
    f = gpu_machine()
    f["nvidia"]["gpus"][0]["ecc"]["remap_failure"] = True
    return f


def thermal_throttle():
    f = gpu_machine()
    f["nvidia"]["gpus"][0].update(throttle_reasons=["hw_thermal_slowdown", "sw_thermal_slowdown"], temperature_c=91)
    return f


def narrow_pcie():
    f = gpu_machine()
    f["nvidia"]["gpus"][0]["pcie"] = {"gen": 4, "gen_max": 4, "width": 8, "width_max": 16}
    return f


def nvcc_major_mismatch():
    f = gpu_machine()
    f["nvidia"]["toolkit"] = {"nvcc": "/usr/local/cuda-13.0/bin/nvcc", "nvcc_version": "13.0", "cuda_home": None,
                              "cuda_home_version": None, "usr_local_cuda": "/usr/local/cuda-13.0",
                              "installs": [{"path": "/usr/local/cuda-12.8", "version": "12.8"},
                                           {"path": "/usr/local/cuda-13.0", "version": "13.0"}]}
    return f


def ptx_only_old_driver():
    # a CC 9.0 GPU and a build with only sm_80 + compute_80: PTX JIT needs full support of 12.8 (570.26)
    f = gpu_machine(gpus=[gpu(name="NVIDIA H100", cc="9.0")], driver="535.104.05", cuda="12.2",
                    arch=["sm_80", "compute_80"])
    return f


def ptx_only_new_driver():
    return gpu_machine(gpus=[gpu(name="NVIDIA H100", cc="9.0")], arch=["sm_80", "compute_80"])


def minor_compat_driver():
    return gpu_machine(driver="535.104.05", cuda="12.2")


def cuda_visible_devices_empty():
    f = gpu_machine()
    t = f["frameworks"]["torch"]["data"]
    t.update(cuda_available=False, device_count=0, devices=[], compute=t["compute"][:1],
             cuda_error="RuntimeError: No CUDA GPUs are available")
    f["env"] = {"CUDA_VISIBLE_DEVICES": ""}
    return f


def wrong_matmul():
    f = gpu_machine()
    f["frameworks"]["torch"]["data"]["compute"][1]["rel_err"] = 0.5
    return f


def driver_loaded_no_gpu_visible():
    f = cpu_machine()
    f["nvidia"] = nvidia([], driver="550.54.14", cuda="12.4", source="nvml")
    f["system"]["container"] = "docker"
    return f


def wsl1():
    f = cpu_machine()
    f["system"]["wsl"] = {"version": 1, "kernel": "4.4.0-19041-Microsoft", "wsl_lib_dir": None, "wsl_libcuda": False,
                          "linux_libcuda": []}
    return f


def no_avx():
    f = cpu_machine()
    f["system"]["cpu"]["flags"] = {"avx": False, "avx2": False}
    return f


def tf_crash_sigill():
    f = cpu_machine()
    f["frameworks"]["tensorflow"] = {"status": "crashed", "returncode": -4, "seconds": 0.8, "stage": "import",
                                     "error": "the probe process died from SIGILL at stage 'import'",
                                     "data": {"status": "importing", "stage": "import"}, "stderr_tail": "",
                                     "log_findings": []}
    return f


def rocm_build_with_amd_gpu():
    f = cpu_machine()
    f["frameworks"]["torch"] = torch_probe("2.7.1+rocm6.3", cuda=None, hip="6.3.42131", cuda_available=True,
                                           device_count=1, devices=[{"index": 0, "name": "AMD Instinct MI300X",
                                                                     "cc": "9.4"}])
    return f


def apple_mps():
    f = cpu_machine()
    f["system"].update(os="Darwin", machine="arm64", distro=None, shm_bytes=None)
    f["frameworks"]["torch"] = torch_probe("2.10.0", cuda=None, mps_built=True, mps_available=True)
    return f


# (situation, backends, explicit, check id, status, a piece of the summary, a piece of the fix)
SITUATIONS = [
    (old_driver, ("torch",), False, "gpu.driver_too_old_for_torch", "fail", "needs driver >= 525.60.13",
     "driver >= 570.26"),
    (old_driver, ("torch",), False, "torch.cuda_available", "fail", "too old (found version 11040)",
     "gpu.driver_too_old_for_torch"),
    (old_driver, ("torch",), False, "gpu.driver", "warn", "predates CUDA 12", "driver >= "),
    (pascal_with_cu128, ("torch",), False, "torch.arch_coverage", "fail", "CC 6.0", "whl/cu126"),
    (pascal_with_cu128, ("torch",), False, "torch.compute", "fail", "no kernel image", "whl/cu126"),
    (blackwell_with_cu126, ("torch",), False, "torch.arch_coverage", "fail", "CC 12.0", "whl/cu128"),
    (wsl2_linux_driver_inside, ("torch",), False, "system.wsl", "fail", "Linux libcuda", "remove the Linux driver"),
    (wsl2_healthy, ("torch",), False, "system.wsl", "ok", "Windows driver", None),
    (wsl2_without_libcuda, ("torch",), False, "system.wsl", "fail", "/usr/lib/wsl/lib/libcuda.so.1", "wsl --update"),
    (wsl2_on_old_windows, ("torch",), False, "system.wsl", "fail", "/dev/dxg", "build >= 19044"),
    (wsl2_windows_driver_below_minor_compat, ("torch",), False, "gpu.driver_too_old_for_torch", "fail",
     "needs driver >= 528.33", "airlab setup --backend torch"),
    (wsl1, ("torch",), False, "system.wsl", "fail", "WSL 1", "wsl --set-version"),
    (mig_without_instances, ("torch",), False, "gpu.mig", "fail", "no GPU instances", "nvidia-smi mig -i 0 -cgi"),
    (mig_without_instances, ("torch",), False, "torch.cuda_available", "fail", "No CUDA GPUs", "see gpu.mig"),
    (mig_with_instances, ("torch",), False, "gpu.mig", "warn", "3 instances", "CUDA_VISIBLE_DEVICES=MIG-"),
    (no_nvml_smi_works, ("torch",), False, "gpu.nvml", "warn", "facts from nvidia-smi", "nvidia-ml-py"),
    (no_nvml_no_smi, ("torch",), False, "gpu.nvml", "warn", "/proc/driver/nvidia", "libnvidia-ml.so.1"),
    (no_nvml_no_smi, ("torch",), False, "torch.arch_coverage", "ok", "CC 8.0", None),  # CC from torch's view
    (no_nvml_no_smi, ("torch",), False, "gpu.health", "skip", "need NVML", None),
    (no_nvidia_smi, ("torch",), False, "gpu.nvml", "ok", "nvidia-smi is not on PATH", None),
    (cpu_machine, ("torch",), False, "gpu.present", "skip", "no NVIDIA GPU", "--gpus all"),
    (cpu_machine, ("torch",), False, "torch.build", "ok", "CPU build", None),
    (torch_absent, ("torch", "tensorflow"), False, "torch.import", "warn", "not installed", "airlab setup --backend torch"),
    (torch_absent, ("torch",), True, "torch.import", "fail", "not installed", "whl/cpu"),
    (torch_import_raising, ("torch",), False, "torch.import", "fail", "libcudnn.so.9", "reinstall"),
    (tf_absent, ("torch", "tensorflow"), False, "tensorflow.import", "skip", "not installed",
     "airlab setup --backend tensorflow"),
    (tf_absent, ("tensorflow",), True, "tensorflow.import", "fail", "not installed", "tensorflow-cpu"),
    (tf_import_hanging, ("tensorflow",), False, "tensorflow.import", "fail", "hung", "importtime"),
    (tf_crash_sigill, ("tensorflow",), False, "tensorflow.import", "fail", "SIGILL", "AVX"),
    (cpu_torch_on_gpu_machine, ("torch",), False, "torch.build", "fail", "CPU build", "whl/cu128"),
    (tf_missing_cudnn, ("tensorflow",), False, "tensorflow.gpu_visible", "fail", "libcudnn.so.9",
     "tensorflow[and-cuda]"),
    (tf_missing_cudnn, ("tensorflow",), False, "tensorflow.libraries", "fail", "Could not load dynamic library",
     "tensorflow[and-cuda]"),
    (tf_cpu_build_on_gpu_machine, ("tensorflow",), False, "tensorflow.build", "fail", "CPU build",
     "tensorflow[and-cuda]"),
    (tf_healthy_gpu, ("tensorflow",), False, "tensorflow.gpu_visible", "ok", "sees 1 GPU", None),
    (ld_library_path_shadows_cudnn, ("torch",), False, "cuda.library_path", "warn", "libcudnn.so.8",
     "LD_LIBRARY_PATH"),
    (clashing_pynvml, ("torch",), False, "gpu.nvml_packages", "warn", "pynvml 11.5.0", "pip uninstall -y pynvml"),
    (old_torch_cve, ("torch",), False, "security.torch", "fail", "CVE-2025-32434", "airlab setup --backend torch"),
    (small_shm, ("torch",), False, "system.shm", "warn", "64 MiB", "--shm-size"),
    (remap_failure, ("torch",), False, "gpu.health", "fail", "remapping failed", "CUDA_VISIBLE_DEVICES"),
    (thermal_throttle, ("torch",), False, "gpu.health", "warn", "hw_thermal_slowdown", "cooling"),
    (narrow_pcie, ("torch",), False, "gpu.pcie", "warn", "x8 of x16", "slot"),
    (nvcc_major_mismatch, ("torch",), False, "cuda.toolkit", "warn", "CUDA 12.8", "CUDA_HOME=/usr/local/cuda-12.8"),
    (ptx_only_old_driver, ("torch",), False, "torch.arch_coverage", "fail", "only by PTX", "driver >= 570.26"),
    (ptx_only_new_driver, ("torch",), False, "torch.arch_coverage", "warn", "PTX JIT (compute_80)", None),
    (minor_compat_driver, ("torch",), False, "gpu.driver_too_old_for_torch", "warn", "minor-version compatibility",
     "driver >= 570.26"),
    (cuda_visible_devices_empty, ("torch",), False, "torch.cuda_available", "fail", "is False",
     "unset CUDA_VISIBLE_DEVICES"),
    (wrong_matmul, ("torch",), False, "torch.compute", "fail", "differs from the CPU", "gpu.health"),
    (driver_loaded_no_gpu_visible, ("torch",), False, "gpu.present", "warn", "no GPU is visible", "--gpus all"),
    (no_avx, ("tensorflow",), False, "system.cpu", "warn", "no AVX", "AVX"),
    (rocm_build_with_amd_gpu, ("torch",), False, "torch.build", "ok", "ROCm 6.3.42131 build", None),
    (rocm_build_with_amd_gpu, ("torch",), False, "torch.cuda_available", "ok", "1 ROCm device", None),
    (apple_mps, ("torch",), False, "torch.build", "ok", "MPS available", None),
    (apple_mps, ("torch",), False, "system.shm", "skip", "no /dev/shm", None),
    (gpu_machine, ("torch",), False, "torch.arch_coverage", "ok", "sm_80", None),
    (gpu_machine, ("torch",), False, "torch.compute", "ok", "cuda:0", None),
]


@pytest.mark.parametrize("make, backends, explicit, cid, status, summary, fix", SITUATIONS,
                         ids=[f"{s[0].__name__}-{s[3]}" for s in SITUATIONS])
def test_situation_gives_check_and_fix(make, backends, explicit, cid, status, summary, fix):
    checks = by_id(evaluate(make(), backends, explicit=explicit))
    c = checks[cid]
    assert c.status == status, (c.summary, c.fix)
    assert summary in c.summary
    if fix is not None:
        assert c.fix and fix in c.fix, c.fix
    if status in ("warn", "fail"):
        assert c.fix, f"{cid} {status} without a fix"


def test_the_cpu_machine_passes_and_says_there_is_no_gpu():
    checks = evaluate(cpu_machine(), ("torch", "tensorflow"))
    assert not [c for c in checks if c.status == "fail"]
    c = by_id(checks)
    assert c["gpu.present"].status == "skip" and "no NVIDIA GPU" in c["gpu.present"].summary
    assert "CPU build" in c["torch.build"].summary
    assert all(c[i].status in ("skip", "ok") for i in c if i.startswith("gpu."))


def test_healthy_gpu_machine_has_no_failures_or_warnings():
    f = tf_healthy_gpu()
    checks = evaluate(f, ("torch", "tensorflow"))
    assert [c.id for c in checks if c.status in ("fail", "warn")] == []


def _all_situations():
    return sorted({s[0] for s in SITUATIONS}, key=lambda f: f.__name__)


@pytest.mark.parametrize("backends", [("torch",), ("tensorflow",), ("torch", "tensorflow")])
def test_the_same_stable_ids_appear_in_every_situation(backends):
    ids = None
    for make in _all_situations():
        got = [c.id for c in evaluate(make(), backends)]
        assert len(got) == len(set(got)), f"duplicate ids in {make.__name__}"
        if ids is None:
            ids = got
        assert got == ids, make.__name__


def test_every_check_is_well_formed():
    for make in _all_situations():
        for c in evaluate(make(), ("torch", "tensorflow")):
            assert c.status in STATUSES
            assert c.section in ("system", "gpu", "cuda", "torch", "tensorflow", "security")
            assert c.summary and "\n" not in c.summary, (make.__name__, c.id)
            assert c.fix is None or "\n" not in c.fix


def test_evaluate_does_not_change_the_facts():
    f = blackwell_with_cu126()
    before = clone(f)
    evaluate(f, ("torch", "tensorflow"))
    assert f == before
