"""The probes, driven by fakes: a fake NVML module, a fake nvidia-smi, a fake /proc tree, and fake
torch / tensorflow packages put first on PYTHONPATH for the real probe scripts. No GPU needed."""

from __future__ import annotations

import json
import os
import stat
import sys
import textwrap
from pathlib import Path

import pytest

from airlab.doctor import frameworks
from airlab.doctor.checks import evaluate
from airlab.doctor.nvidia import cuda_int_to_str, probe_library_path, probe_nvidia
from airlab.doctor.system import probe_system
from doctor_fakes import cpu_machine, gpu, gpu_machine, nvidia

# --- NVML ---------------------------------------------------------------------------------------


class NVMLError(Exception):
    pass


class FakeNVML:
    """The pynvml functions the probe calls; a missing one is 'not supported'."""

    NVML_TEMPERATURE_GPU, NVML_CLOCK_SM, NVML_CLOCK_MEM = 0, 1, 2

    def __init__(self, gpus, driver="570.124.06", cuda=12080, init_error=None):
        self.gpus, self.driver, self.cuda, self.init_error = gpus, driver, cuda, init_error
        self.shutdown = False

    def nvmlInit(self):
        if self.init_error:
            raise self.init_error

    def nvmlShutdown(self):
        self.shutdown = True

    def nvmlSystemGetDriverVersion(self):
        return self.driver.encode()  # old bindings return bytes

    def nvmlSystemGetCudaDriverVersion(self):
        return self.cuda

    def nvmlDeviceGetCount(self):
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, i):
        return self.gpus[i]

    def nvmlDeviceGetName(self, h):
        return h["name"]

    def nvmlDeviceGetUUID(self, h):
        return h["uuid"]

    def nvmlDeviceGetMemoryInfo(self, h):
        return type("Mem", (), {"total": h["mem"], "used": 2**30, "free": h["mem"] - 2**30})()

    def nvmlDeviceGetCudaComputeCapability(self, h):
        return h["cc"]

    def nvmlDeviceGetCurrPcieLinkWidth(self, h):
        return h.get("width", 16)

    def nvmlDeviceGetMaxPcieLinkWidth(self, h):
        return 16

    def nvmlDeviceGetCurrPcieLinkGeneration(self, h):
        return 1  # idle

    def nvmlDeviceGetMaxPcieLinkGeneration(self, h):
        return 5

    def nvmlDeviceGetTemperature(self, h, sensor):
        return 41

    def nvmlDeviceGetPowerUsage(self, h):
        return 71000

    def nvmlDeviceGetEnforcedPowerLimit(self, h):
        return 700000

    def nvmlDeviceGetCurrentClocksEventReasons(self, h):
        return h.get("reasons", 0x1)

    def nvmlDeviceGetEccMode(self, h):
        return (1, 1)

    def nvmlDeviceGetTotalEccErrors(self, h, kind, counter):
        return h.get("ecc_uncorrected", 0)

    def nvmlDeviceGetRemappedRows(self, h):
        return (0, 0, False, h.get("remap_failure", False))

    def nvmlDeviceGetMigMode(self, h):
        if "mig" not in h:
            raise NVMLError("Not Supported")
        return (1 if h["mig"] is not None else 0, 0)

    def nvmlDeviceGetMaxMigDeviceCount(self, h):
        return 7

    def nvmlDeviceGetMigDeviceHandleByIndex(self, h, j):
        if j >= (h["mig"] or 0):
            raise NVMLError("Not Found")
        return ("mig", j)


H100 = {"name": "NVIDIA H100 80GB HBM3", "uuid": "GPU-1111", "mem": 80 * 2**30, "cc": (9, 0)}


def no_which(name):
    return None


def test_nvml_facts(tmp_path):
    fake = FakeNVML([dict(H100, mig=2), dict(H100, uuid="GPU-2222", width=8, reasons=0x1 | 0x40)])
    nv = probe_nvidia(nvml=fake, which=no_which, root=tmp_path, env={}, pip_dirs=[])
    assert nv["source"] == "nvml" and nv["nvml"]["ok"] and fake.shutdown
    assert nv["driver_version"] == "570.124.06" and nv["cuda_driver_version"] == "12.8"
    g0, g1 = nv["gpus"]
    assert g0["name"] == "NVIDIA H100 80GB HBM3" and g0["cc"] == "9.0" and g0["memory_total_bytes"] == 80 * 2**30
    assert g0["mig"] == {"enabled": True, "instances": 2}
    assert g0["pcie"] == {"gen": 1, "gen_max": 5, "width": 16, "width_max": 16}
    assert g0["power_w"] == 71.0 and g0["power_limit_w"] == 700.0
    assert g1["throttle_reasons"] == ["gpu_idle", "hw_thermal_slowdown"]
    checks = {c.id: c for c in evaluate({"system": cpu_machine()["system"], "nvidia": nv, "frameworks": {},
                                         "packages": {}}, ())}
    assert checks["gpu.present"].status == "ok" and "2 NVIDIA GPUs" in checks["gpu.present"].summary
    assert checks["gpu.mig"].status == "warn"
    assert checks["gpu.pcie"].status == "warn" and "x8 of x16" in checks["gpu.pcie"].summary
    assert checks["gpu.health"].status == "warn" and "hw_thermal_slowdown" in checks["gpu.health"].summary


def test_nvml_unsupported_functions_are_just_absent(tmp_path):
    class Minimal:
        def nvmlInit(self):
            pass

        def nvmlSystemGetDriverVersion(self):
            return "535.104.05"

        def nvmlDeviceGetCount(self):
            return 1

        def nvmlDeviceGetHandleByIndex(self, i):
            return object()

    nv = probe_nvidia(nvml=Minimal(), which=no_which, root=tmp_path, env={}, pip_dirs=[])
    assert nv["source"] == "nvml" and nv["driver_version"] == "535.104.05"
    assert nv["gpus"][0]["cc"] is None and nv["gpus"][0]["mig"]["enabled"] is None


def test_cuda_version_encoding():
    assert cuda_int_to_str(12080) == "12.8" and cuda_int_to_str(11040) == "11.4" and cuda_int_to_str(13000) == "13.0"
    assert cuda_int_to_str(0) is None


# --- fallbacks: nvidia-smi, /proc ---------------------------------------------------------------


def fake_nvidia_smi(tmp_path: Path, csv: str, header_cuda="12.4", rc=0) -> str:
    path = tmp_path / "bin" / "nvidia-smi"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!{sys.executable}\n" + textwrap.dedent(f"""
        import sys
        if any(a.startswith("--query-gpu") for a in sys.argv[1:]):
            sys.stdout.write({csv!r})
        else:
            print("| NVIDIA-SMI 550.54.14    Driver Version: 550.54.14    CUDA Version: {header_cuda} |")
        sys.exit({rc})
        """))
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return str(path)


def fake_proc(root: Path, driver="550.54.14") -> Path:
    d = root / "proc" / "driver" / "nvidia"
    (d / "gpus" / "0000:07:00.0").mkdir(parents=True)
    (d / "version").write_text(f"NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  {driver}  Release Build  "
                               "(dvs-builder@U16-I3-B03-4-3)  Thu Feb 22 01:44:30 UTC 2024\nGCC version:  gcc 12\n")
    (d / "gpus" / "0000:07:00.0" / "information").write_text(
        "Model: \t\t NVIDIA A100-SXM4-80GB\nIRQ:   \t\t 42\nGPU UUID: \t GPU-abcd\nBus Type: \t PCIe\n"
        "Bus Location: \t 0000:07:00.0\n")
    (root / "dev").mkdir()
    (root / "dev" / "nvidia0").write_text("")
    return root


NO_LIB = NVMLError("NVML Shared Library Not Found")


def test_no_nvml_falls_back_to_nvidia_smi(tmp_path):
    csv = "0, NVIDIA A100-SXM4-80GB, GPU-abcd, 81920, 1024, 8.0, 550.54.14, Disabled, 35, 60.5, 400.00, 4, 4, 16, 16\n"
    smi = fake_nvidia_smi(tmp_path, csv)
    nv = probe_nvidia(nvml=FakeNVML([], init_error=NO_LIB), which=lambda n: smi if n == "nvidia-smi" else None,
                      root=tmp_path, env={}, pip_dirs=[])
    assert nv["source"] == "nvidia-smi" and not nv["nvml"]["ok"]
    assert nv["driver_version"] == "550.54.14" and nv["cuda_driver_version"] == "12.4"
    g = nv["gpus"][0]
    assert g["cc"] == "8.0" and g["memory_total_bytes"] == 81920 * 2**20 and g["mig"]["enabled"] is False
    checks = {c.id: c for c in evaluate({"system": cpu_machine()["system"], "nvidia": nv, "frameworks": {},
                                         "packages": {}}, ())}
    assert checks["gpu.nvml"].status == "warn" and "nvidia-ml-py" in checks["gpu.nvml"].fix


def test_no_nvml_no_nvidia_smi_falls_back_to_proc(tmp_path):
    fake_proc(tmp_path)
    nv = probe_nvidia(nvml=FakeNVML([], init_error=NO_LIB), which=no_which, root=tmp_path, env={}, pip_dirs=[])
    assert nv["source"] == "proc"
    assert nv["driver_version"] == "550.54.14"
    assert nv["gpus"] == [{"index": 0, "name": "NVIDIA A100-SXM4-80GB", "uuid": "GPU-abcd", "cc": None,
                           "bus": "0000:07:00.0"}]
    assert nv["device_nodes"] == ["/dev/nvidia0"]
    checks = {c.id: c for c in evaluate({"system": cpu_machine()["system"], "nvidia": nv, "frameworks": {},
                                         "packages": {}}, ())}
    assert checks["gpu.nvml"].status == "warn" and "libnvidia-ml.so.1" in checks["gpu.nvml"].fix
    assert checks["gpu.driver"].status == "ok" and "12.4" in checks["gpu.driver"].summary  # from the table


def test_failing_nvidia_smi_still_falls_back_to_proc(tmp_path):
    fake_proc(tmp_path, driver="535.104.05")
    smi = fake_nvidia_smi(tmp_path, "", rc=9)
    nv = probe_nvidia(nvml=None, which=lambda n: smi if n == "nvidia-smi" else None, root=tmp_path, env={},
                      pip_dirs=[])
    assert nv["source"] == "proc" and nv["driver_version"] == "535.104.05"
    assert "exited 9" in nv["smi_error"]


def test_no_gpu_at_all(tmp_path):
    nv = probe_nvidia(nvml=FakeNVML([], init_error=NO_LIB), which=no_which, root=tmp_path, env={}, pip_dirs=[])
    assert nv["source"] is None and nv["gpus"] == [] and nv["driver_version"] is None
    checks = {c.id: c for c in evaluate({"system": cpu_machine()["system"], "nvidia": nv, "frameworks": {},
                                         "packages": {}}, ())}
    assert checks["gpu.present"].status == "skip"


def test_nvml_binding_that_cannot_be_imported(tmp_path):
    nv = probe_nvidia(nvml=None, which=no_which, root=tmp_path, env={}, pip_dirs=[])
    assert not nv["nvml"]["ok"] and "pynvml" in nv["nvml"]["error"]


def test_this_machine_real_probe_does_not_crash():
    nv = probe_nvidia()
    assert set(nv) >= {"source", "gpus", "driver_version", "toolkit", "library_path"}


# --- toolkits and library paths -----------------------------------------------------------------


def test_toolkits_and_cuda_home(tmp_path):
    for v in ("12.8", "13.0"):
        d = tmp_path / "usr" / "local" / f"cuda-{v}"
        d.mkdir(parents=True)
        (d / "version.json").write_text(json.dumps({"cuda": {"version": f"{v}.1"}}))
    (tmp_path / "usr" / "local" / "cuda").symlink_to(tmp_path / "usr" / "local" / "cuda-13.0")
    nvcc = tmp_path / "nvcc"
    nvcc.write_text(f"#!{sys.executable}\nprint('Cuda compilation tools, release 13.0, V13.0.88')\n")
    nvcc.chmod(0o755)
    nv = probe_nvidia(nvml=None, which=lambda n: str(nvcc) if n == "nvcc" else None, root=tmp_path,
                      env={"CUDA_HOME": str(tmp_path / "usr" / "local" / "cuda-12.8")}, pip_dirs=[])
    tk = nv["toolkit"]
    assert [i["version"] for i in tk["installs"]] == ["12.8", "13.0"]
    assert tk["nvcc_version"] == "13.0" and tk["cuda_home_version"] == "12.8"
    assert tk["usr_local_cuda"] == "/usr/local/cuda-13.0"
    f = gpu_machine()
    f["nvidia"]["toolkit"] = tk
    c = {c.id: c for c in evaluate(f, ("torch",))}["cuda.toolkit"]
    assert c.status == "warn" and "CUDA_HOME is 12.8" in c.summary


def test_ld_library_path_shadowing(tmp_path):
    pip_lib = tmp_path / "site-packages" / "nvidia" / "cudnn" / "lib"
    pip_lib.mkdir(parents=True)
    (pip_lib / "libcudnn.so.9").write_text("")
    (pip_lib / "libcudnn_ops.so.9").write_text("")
    sys_lib = tmp_path / "usr-local-cuda" / "lib64"
    sys_lib.mkdir(parents=True)
    (sys_lib / "libcudnn.so.8").write_text("")
    (sys_lib / "libcudart_static.a").write_text("")
    other = tmp_path / "other"
    other.mkdir()
    (other / "libfoo.so").write_text("")
    lp = probe_library_path({"LD_LIBRARY_PATH": f"{sys_lib}:{other}:{pip_lib}"}, [str(pip_lib)])
    assert lp["shadowing"] == [{"dir": str(sys_lib), "lib": "libcudnn.so.8", "pip": str(pip_lib / "libcudnn.so.9")}]
    assert probe_library_path({}, [str(pip_lib)])["shadowing"] == []


# --- system -------------------------------------------------------------------------------------


def test_system_facts_in_a_fake_wsl_container(tmp_path):
    (tmp_path / "proc" / "sys" / "kernel").mkdir(parents=True)
    (tmp_path / "proc" / "sys" / "kernel" / "osrelease").write_text("5.15.167.4-microsoft-standard-WSL2\n")
    (tmp_path / "usr" / "lib" / "wsl" / "lib").mkdir(parents=True)
    (tmp_path / "usr" / "lib" / "wsl" / "lib" / "libcuda.so.1").write_text("")
    (tmp_path / "usr" / "lib" / "x86_64-linux-gnu").mkdir(parents=True)
    (tmp_path / "usr" / "lib" / "x86_64-linux-gnu" / "libcuda.so.1").write_text("")
    (tmp_path / ".dockerenv").write_text("")
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "os-release").write_text('PRETTY_NAME="Ubuntu 24.04.1 LTS"\nID=ubuntu\n')
    (tmp_path / "proc" / "cpuinfo").write_text("model name\t: Fake CPU\nflags\t\t: fpu avx avx2 fma avx512f amx_tile\n")
    s = probe_system(root=tmp_path, env={"HOME": str(tmp_path), "AIRLAB_DATA_DIR": str(tmp_path / "data")},
                     cwd=tmp_path)
    assert s["container"] == "docker" and s["distro"] == "Ubuntu 24.04.1 LTS"
    assert s["wsl"]["version"] == 2 and s["wsl"]["wsl_libcuda"]
    assert s["wsl"]["linux_libcuda"] == ["/usr/lib/x86_64-linux-gnu/libcuda.so.1"]
    assert s["wsl"]["dxg"] is False  # no /dev/dxg under this fake root
    (tmp_path / "dev").mkdir()
    (tmp_path / "dev" / "dxg").write_text("")
    assert probe_system(root=tmp_path, env={"HOME": str(tmp_path)}, cwd=tmp_path)["wsl"]["dxg"] is True
    assert s["cpu"]["model"] == "Fake CPU" and s["cpu"]["flags"]["avx512f"] and not s["cpu"]["flags"]["avx512_bf16"]
    assert s["disk"]["data_cache"]["path"] == str(tmp_path / "data") and s["disk"]["data_cache"]["free_bytes"] > 0
    f = cpu_machine()
    f["system"] = s
    c = {c.id: c for c in evaluate(f, ())}
    assert c["system.wsl"].status == "fail" and c["system.container"].summary == "in a docker container"
    assert "AMX" in c["system.cpu"].summary


def test_container_detection(tmp_path):
    from airlab.doctor.system import detect_container

    assert detect_container(tmp_path, {"KUBERNETES_SERVICE_HOST": "10.0.0.1"}) == "kubernetes"
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / ".containerenv").write_text("")
    assert detect_container(tmp_path, {}) == "podman"
    assert detect_container(tmp_path / "nothing", {}) is None


def test_this_machine_system_probe():
    s = probe_system()
    assert s["python"]["executable"] == sys.executable
    assert s["cpu"]["usable_cores"] >= 1


# --- framework probes: the real scripts with fake frameworks ------------------------------------


def fake_package(root: Path, name: str, code: str) -> Path:
    (root / name).mkdir(parents=True, exist_ok=True)
    (root / name / "__init__.py").write_text(textwrap.dedent(code))
    return root


def run_probes(names, fake_root=None, timeout=20.0, commands=None):
    env = dict(os.environ)
    if fake_root is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(fake_root)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    commands = commands or {n: frameworks.probe_command(n) for n in names}
    return frameworks.finish(frameworks.start(commands, env=env), timeout)


ABSENT = """raise ModuleNotFoundError("No module named '{0}'", name="{0}")"""


def test_torch_absent(tmp_path):
    r = run_probes(["torch"], fake_package(tmp_path, "torch", ABSENT.format("torch")))["torch"]
    assert r["status"] == "absent"
    checks = {c.id: c for c in evaluate(dict(cpu_machine(), frameworks={"torch": r}), ("torch",))}
    assert checks["torch.import"].status == "warn" and "not installed" in checks["torch.import"].summary


def test_torch_import_raising(tmp_path):
    code = """raise OSError("libcudnn.so.9: cannot open shared object file: No such file or directory")"""
    r = run_probes(["torch"], fake_package(tmp_path, "torch", code))["torch"]
    assert r["status"] == "import_error" and "libcudnn.so.9" in r["error"]
    c = {c.id: c for c in evaluate(dict(cpu_machine(), frameworks={"torch": r}), ("torch",))}["torch.import"]
    assert c.status == "fail" and "libcudnn.so.9" in c.summary and "airlab setup --backend torch" in c.fix


def test_torch_import_of_a_missing_dependency_is_an_error_not_absence(tmp_path):
    code = """import numpy_that_is_missing_xyz"""
    r = run_probes(["torch"], fake_package(tmp_path, "torch", code))["torch"]
    assert r["status"] == "import_error" and "numpy_that_is_missing_xyz" in r["error"]


def test_torch_import_crashing_the_process(tmp_path):
    r = run_probes(["torch"], fake_package(tmp_path, "torch", "import os\nos.abort()\n"))["torch"]
    assert r["status"] == "crashed" and "SIGABRT" in r["error"] and r["stage"] == "import"


def test_tensorflow_absent(tmp_path):
    r = run_probes(["tensorflow"], fake_package(tmp_path, "tensorflow", ABSENT.format("tensorflow")))["tensorflow"]
    assert r["status"] == "absent"
    c = {c.id: c for c in evaluate(dict(cpu_machine(), frameworks={"tensorflow": r}),
                                   ("tensorflow",))}["tensorflow.import"]
    assert c.status == "skip" and "not installed" in c.summary


def test_tensorflow_import_hanging_is_killed_and_reported(tmp_path):
    fake_package(tmp_path, "tensorflow", "import time\ntime.sleep(120)\n")
    r = run_probes(["tensorflow"], tmp_path, timeout=3.0)["tensorflow"]
    assert r["status"] == "timeout" and r["stage"] == "import" and r["seconds"] < 30
    c = {c.id: c for c in evaluate(dict(cpu_machine(), frameworks={"tensorflow": r}),
                                   ("tensorflow",))}["tensorflow.import"]
    assert c.status == "fail" and "hung" in c.summary


FAKE_TF_MISSING_CUDNN = """
    import sys
    import numpy as np
    sys.stderr.write("2026-01-01 W tensorflow/compiler/xla/stream_executor/platform/default/dso_loader.cc:64] "
                     "Could not load dynamic library 'libcudnn.so.9'; dlerror: libcudnn.so.9: cannot open shared "
                     "object file: No such file or directory\\n")
    sys.stderr.write("W tensorflow/core/common_runtime/gpu/gpu_device.cc:2251] Cannot dlopen some GPU libraries. "
                     "Skipping registering GPU devices...\\n")
    __version__ = "2.21.0"

    class sysconfig:
        @staticmethod
        def get_build_info():
            return {"cuda_version": "12.5.1", "cudnn_version": "9", "is_cuda_build": True, "is_rocm_build": False}

    class _Experimental:
        @staticmethod
        def get_device_details(d):
            return {}

    class config:
        experimental = _Experimental
        @staticmethod
        def list_physical_devices(kind):
            return []

    class _T:
        def __init__(self, x):
            self.x = x
        def numpy(self):
            return self.x

    def constant(x):
        return _T(np.asarray(x))

    class linalg:
        @staticmethod
        def matmul(a, b):
            return _T(a.x @ b.x)

    class device:
        def __init__(self, name):
            pass
        def __enter__(self):
            return self
        def __exit__(self, *a):
            return False
"""


def test_tensorflow_log_line_naming_a_missing_library_becomes_a_finding(tmp_path):
    r = run_probes(["tensorflow"], fake_package(tmp_path, "tensorflow", FAKE_TF_MISSING_CUDNN))["tensorflow"]
    assert r["status"] == "ok", r
    assert {f["kind"] for f in r["log_findings"]} == {"missing_library", "dlopen_failed"}
    f = gpu_machine()
    f["frameworks"]["tensorflow"] = r
    c = {c.id: c for c in evaluate(f, ("tensorflow",))}
    assert c["tensorflow.gpu_visible"].status == "fail" and "libcudnn.so.9" in c["tensorflow.gpu_visible"].summary
    assert "tensorflow[and-cuda]" in c["tensorflow.gpu_visible"].fix
    assert c["tensorflow.libraries"].status == "fail"


def test_probes_run_at_the_same_time(tmp_path):
    script = tmp_path / "slow.py"
    script.write_text(textwrap.dedent("""
        import json, sys, time
        t0 = time.time(); time.sleep(1.0); t1 = time.time()
        print("AIRLAB_PROBE " + json.dumps({"status": "ok", "stage": "done", "start": t0, "end": t1}), flush=True)
    """))
    r = run_probes(None, commands={n: [sys.executable, str(script)] for n in ("a", "b", "c")})
    spans = [(r[n]["data"]["start"], r[n]["data"]["end"]) for n in ("a", "b", "c")]
    assert all(r[n]["status"] == "ok" for n in r)
    assert max(s for s, _ in spans) < min(e for _, e in spans), "the probes did not overlap"


def test_a_hanging_probe_keeps_its_last_stage_and_others_still_report(tmp_path):
    hang = tmp_path / "hang.py"
    hang.write_text('import json, time\nprint("AIRLAB_PROBE " + json.dumps({"status": "imported", "stage": "cuda", '
                    '"version": "9.9"}), flush=True)\ntime.sleep(120)\n')
    quick = tmp_path / "quick.py"
    quick.write_text('import json\nprint("AIRLAB_PROBE " + json.dumps({"status": "ok", "stage": "done"}))\n')
    r = run_probes(None, timeout=3.0, commands={"torch": [sys.executable, str(hang)],
                                                "tensorflow": [sys.executable, str(quick)]})
    assert r["torch"]["status"] == "timeout" and r["torch"]["stage"] == "cuda"
    assert r["torch"]["data"]["version"] == "9.9"
    assert r["tensorflow"]["status"] == "ok"
    c = {c.id: c for c in evaluate(dict(cpu_machine(), frameworks=r), ("torch",))}
    assert c["torch.import"].status == "fail" and "then hung at stage 'cuda'" in c["torch.import"].summary


def test_garbage_output_and_a_missing_interpreter(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("print('AIRLAB_PROBE {not json')\nraise SystemExit(3)\n")
    r = run_probes(None, commands={"torch": [sys.executable, str(bad)],
                                   "tensorflow": [str(tmp_path / "no-such-python")]})
    assert r["torch"]["status"] == "crashed" and "status 3" in r["torch"]["error"]
    assert r["tensorflow"]["status"] == "error" and "could not start" in r["tensorflow"]["error"]


def test_tf_log_patterns():
    found = frameworks.tf_log_findings(
        "I tensorflow ... Could not find cuda drivers on your machine, GPU will not be used.\n"
        "E external/local_xla/xla/stream_executor/cuda/cuda_driver.cc:152] failed call to cuInit: "
        "INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)\n"
        "E Loaded runtime CuDNN library: 8.6.0 but source was compiled with: 8.9.4.\n")
    assert [f["kind"] for f in found] == ["no_driver", "cuinit_failed", "cudnn_mismatch"]
