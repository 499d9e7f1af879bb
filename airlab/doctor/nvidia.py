"""NVIDIA facts: GPUs and driver through NVML, with fallbacks; CUDA toolkits; library paths.

Sources, in order: NVML (the nvidia-ml-py module), `nvidia-smi` (which links the driver's NVML
itself, so it still answers when the Python binding is broken), `/proc/driver/nvidia` (the kernel
module: driver version and GPU models, no compute capability). Never raises.

Seams for tests: `nvml` (a module-like object with pynvml's functions, or None for "the binding
cannot be imported"), `which` (shutil.which), `run` (subprocess runner returning (rc, stdout)),
`root` (filesystem root for /proc, /dev, /usr/local) and `env`.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Callable

# NVML throttle / clock-event reason bits (nvml.h)
THROTTLE_BITS = {
    0x1: "gpu_idle", 0x2: "applications_clocks_setting", 0x4: "sw_power_cap", 0x8: "hw_slowdown",
    0x10: "sync_boost", 0x20: "sw_thermal_slowdown", 0x40: "hw_thermal_slowdown",
    0x80: "hw_power_brake_slowdown", 0x100: "display_clock_setting",
}

CUDA_LIBS = ("libcudnn", "libcublas", "libcublasLt", "libcudart", "libnccl", "libcusparse", "libcufft",
             "libcurand", "libcusolver", "libnvrtc", "libnvJitLink", "libcupti")

Runner = Callable[[list[str], float], tuple[int, str]]


def default_run(argv: list[str], timeout: float) -> tuple[int, str]:
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        return p.returncode, p.stdout + p.stderr
    except subprocess.TimeoutExpired:
        return 124, f"timed out after {timeout:g} s"
    except OSError as e:
        return 127, str(e)


def _s(v) -> str:
    return v.decode(errors="replace") if isinstance(v, (bytes, bytearray)) else str(v)


def _try(fn, *args):
    try:
        return fn(*args)
    except Exception:
        return None


def _call(nvml, name: str, *args):
    """nvml.name(*args), or None where the binding lacks it or the GPU does not support it."""
    fn = getattr(nvml, name, None)
    return None if fn is None else _try(fn, *args)


def cuda_int_to_str(v: int | None) -> str | None:
    """NVML / cudaDriverGetVersion encode 1000*major + 10*minor: 12080 -> '12.8'."""
    if not v:
        return None
    return f"{v // 1000}.{(v % 1000) // 10}"


# --- NVML ---------------------------------------------------------------------------------------


def _import_nvml():
    try:
        import pynvml  # nvidia-ml-py

        return pynvml, None
    except Exception as e:  # a clashing or broken binding is a finding, not a crash
        return None, f"cannot import pynvml ({type(e).__name__}: {e})"


def _nvml_gpu(nvml, i: int) -> dict:
    h = nvml.nvmlDeviceGetHandleByIndex(i)
    g: dict = {"index": i, "name": None, "uuid": None, "cc": None}
    name = _call(nvml, "nvmlDeviceGetName", h)
    g["name"] = _s(name) if name is not None else None
    uuid = _call(nvml, "nvmlDeviceGetUUID", h)
    g["uuid"] = _s(uuid) if uuid is not None else None
    mem = _call(nvml, "nvmlDeviceGetMemoryInfo", h)
    if mem is not None:
        g["memory_total_bytes"], g["memory_used_bytes"] = int(mem.total), int(mem.used)
    cc = _call(nvml, "nvmlDeviceGetCudaComputeCapability", h)
    if cc:
        g["cc"] = f"{cc[0]}.{cc[1]}"
    g["pcie"] = {
        "gen": _call(nvml, "nvmlDeviceGetCurrPcieLinkGeneration", h),
        "gen_max": _call(nvml, "nvmlDeviceGetMaxPcieLinkGeneration", h),
        "width": _call(nvml, "nvmlDeviceGetCurrPcieLinkWidth", h),
        "width_max": _call(nvml, "nvmlDeviceGetMaxPcieLinkWidth", h),
    }
    g["temperature_c"] = _call(nvml, "nvmlDeviceGetTemperature", h, getattr(nvml, "NVML_TEMPERATURE_GPU", 0))
    power = _call(nvml, "nvmlDeviceGetPowerUsage", h)
    limit = _call(nvml, "nvmlDeviceGetEnforcedPowerLimit", h)
    g["power_w"] = None if power is None else power / 1000
    g["power_limit_w"] = None if limit is None else limit / 1000
    sm, memclk = getattr(nvml, "NVML_CLOCK_SM", 1), getattr(nvml, "NVML_CLOCK_MEM", 2)
    g["clocks_mhz"] = {
        "sm": _call(nvml, "nvmlDeviceGetClockInfo", h, sm),
        "mem": _call(nvml, "nvmlDeviceGetClockInfo", h, memclk),
        "sm_max": _call(nvml, "nvmlDeviceGetMaxClockInfo", h, sm),
        "mem_max": _call(nvml, "nvmlDeviceGetMaxClockInfo", h, memclk),
    }
    reasons_fn = getattr(nvml, "nvmlDeviceGetCurrentClocksEventReasons", None) or \
        getattr(nvml, "nvmlDeviceGetCurrentClocksThrottleReasons", None)
    bits = _try(reasons_fn, h) if reasons_fn else None
    g["throttle_reasons"] = None if bits is None else [n for b, n in THROTTLE_BITS.items() if bits & b]
    ecc_mode = _call(nvml, "nvmlDeviceGetEccMode", h)
    ecc: dict = {"enabled": None if ecc_mode is None else bool(ecc_mode[0])}
    if ecc["enabled"]:
        ecc["uncorrected_volatile"] = _call(nvml, "nvmlDeviceGetTotalEccErrors", h,
                                           getattr(nvml, "NVML_MEMORY_ERROR_TYPE_UNCORRECTED", 1),
                                           getattr(nvml, "NVML_VOLATILE_ECC", 0))
        pending = _call(nvml, "nvmlDeviceGetRetiredPagesPendingStatus", h)
        ecc["retired_pages_pending"] = None if pending is None else bool(pending)
        rows = _call(nvml, "nvmlDeviceGetRemappedRows", h)
        if rows is not None:
            ecc["remap_pending"], ecc["remap_failure"] = bool(rows[2]), bool(rows[3])
    g["ecc"] = ecc
    mig = _call(nvml, "nvmlDeviceGetMigMode", h)
    g["mig"] = {"enabled": None if mig is None else bool(mig[0]), "instances": None}
    if g["mig"]["enabled"]:
        count = 0
        for j in range(_call(nvml, "nvmlDeviceGetMaxMigDeviceCount", h) or 0):
            if _call(nvml, "nvmlDeviceGetMigDeviceHandleByIndex", h, j) is not None:
                count += 1
        g["mig"]["instances"] = count
    return g


def probe_nvml(nvml) -> dict:
    """Driver and GPUs through NVML. {'ok': False, 'error': ...} when it cannot answer."""
    try:
        nvml.nvmlInit()
    except Exception as e:
        return {"ok": False, "error": f"{type(e).__name__}: {e}"}
    try:
        out = {"ok": True, "error": None}
        out["driver_version"] = _s(nvml.nvmlSystemGetDriverVersion())
        cuda = _call(nvml, "nvmlSystemGetCudaDriverVersion")
        out["cuda_driver_version"] = cuda_int_to_str(cuda)
        out["gpus"] = [_nvml_gpu(nvml, i) for i in range(nvml.nvmlDeviceGetCount())]
        return out
    except Exception as e:
        return {"ok": False, "error": f"{type(e).__name__}: {e}"}
    finally:
        _call(nvml, "nvmlShutdown")


# --- nvidia-smi ---------------------------------------------------------------------------------

SMI_FIELDS = ("index", "name", "uuid", "memory.total", "memory.used", "compute_cap", "driver_version",
              "mig.mode.current", "temperature.gpu", "power.draw", "power.limit",
              "pcie.link.gen.current", "pcie.link.gen.max", "pcie.link.width.current", "pcie.link.width.max")


def _num(v: str):
    try:
        return float(v) if "." in v else int(v)
    except ValueError:
        return None


def probe_nvidia_smi(path: str, run: Runner) -> dict:
    rc, text = run([path, f"--query-gpu={','.join(SMI_FIELDS)}", "--format=csv,noheader,nounits"], 10)
    fields = SMI_FIELDS
    if rc != 0 and "compute_cap" in text:  # older nvidia-smi without compute_cap
        fields = tuple(f for f in SMI_FIELDS if f != "compute_cap")
        rc, text = run([path, f"--query-gpu={','.join(fields)}", "--format=csv,noheader,nounits"], 10)
    if rc != 0:
        return {"ok": False, "error": f"nvidia-smi exited {rc}: {text.strip().splitlines()[-1] if text.strip() else ''}"}
    gpus, driver = [], None
    for line in text.strip().splitlines():
        vals = [v.strip() for v in line.split(",")]
        if len(vals) != len(fields):
            continue
        row = dict(zip(fields, vals))
        driver = row.get("driver_version") or driver
        mib = _num(row.get("memory.total", ""))
        used = _num(row.get("memory.used", ""))
        mig = row.get("mig.mode.current", "")
        gpus.append({
            "index": _num(row["index"]), "name": row.get("name"), "uuid": row.get("uuid"),
            "cc": row.get("compute_cap") if re.fullmatch(r"\d+\.\d+", row.get("compute_cap", "")) else None,
            "memory_total_bytes": None if mib is None else int(mib * 2**20),
            "memory_used_bytes": None if used is None else int(used * 2**20),
            "temperature_c": _num(row.get("temperature.gpu", "")),
            "power_w": _num(row.get("power.draw", "")), "power_limit_w": _num(row.get("power.limit", "")),
            "pcie": {"gen": _num(row.get("pcie.link.gen.current", "")), "gen_max": _num(row.get("pcie.link.gen.max", "")),
                     "width": _num(row.get("pcie.link.width.current", "")),
                     "width_max": _num(row.get("pcie.link.width.max", ""))},
            "mig": {"enabled": {"Enabled": True, "Disabled": False}.get(mig), "instances": None},
        })
    rc2, header = run([path], 10)
    m = re.search(r"CUDA Version:\s*(\d+\.\d+)", header) if rc2 == 0 else None
    return {"ok": True, "error": None, "driver_version": driver, "cuda_driver_version": m.group(1) if m else None,
            "gpus": gpus}


# --- /proc/driver/nvidia ------------------------------------------------------------------------


def probe_proc(root: Path) -> dict:
    try:
        text = (root / "proc/driver/nvidia/version").read_text(errors="replace")
    except OSError:
        return {"ok": False, "error": "no /proc/driver/nvidia/version (NVIDIA kernel module not loaded)"}
    first = text.strip().splitlines()[0] if text.strip() else ""
    m = re.search(r"Kernel Module(?:\s+for\s+\S+)?\s+(\d+\.\d+(?:\.\d+)?)", first) or \
        re.search(r"\b(\d{3,}\.\d+(?:\.\d+)?)\b", first)
    gpus = []
    for i, info in enumerate(sorted(glob.glob(str(root / "proc/driver/nvidia/gpus/*/information")))):
        try:
            lines = Path(info).read_text(errors="replace").splitlines()
        except OSError:
            continue
        kv = {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
        gpus.append({"index": i, "name": kv.get("Model"), "uuid": kv.get("GPU UUID"), "cc": None,
                     "bus": kv.get("Bus Location")})
    return {"ok": True, "error": None, "driver_version": m.group(1) if m else None, "cuda_driver_version": None,
            "gpus": gpus, "proc_version": first}


# --- CUDA toolkits and library paths ------------------------------------------------------------


def _toolkit_version(path: Path) -> str | None:
    try:
        data = json.loads((path / "version.json").read_text())
        return ".".join(data["cuda"]["version"].split(".")[:2])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    try:
        m = re.search(r"(\d+\.\d+)", (path / "version.txt").read_text())
        if m:
            return m.group(1)
    except OSError:
        pass
    m = re.search(r"cuda-(\d+\.\d+)$", path.name)
    return m.group(1) if m else None


def probe_toolkits(root: Path, env: dict, which: Callable, run: Runner) -> dict:
    installs = []
    for pattern in ("usr/local/cuda-*", "opt/cuda*", "usr/lib/cuda"):
        for p in sorted(glob.glob(str(root / pattern))):
            path = Path(p)
            if path.is_dir() and not path.is_symlink():
                installs.append({"path": str(Path("/") / path.relative_to(root)), "version": _toolkit_version(path)})
    nvcc = which("nvcc")
    nvcc_version = None
    if nvcc:
        rc, text = run([nvcc, "--version"], 10)
        m = re.search(r"release (\d+\.\d+)", text) if rc == 0 else None
        nvcc_version = m.group(1) if m else None
    cuda_home = env.get("CUDA_HOME") or env.get("CUDA_PATH")
    home_version = _toolkit_version(Path(cuda_home)) if cuda_home else None
    default = root / "usr/local/cuda"
    default_target = None
    if default.exists():
        default_target = os.path.realpath(default)
        if str(root) != "/":
            default_target = "/" + os.path.relpath(default_target, os.path.realpath(root))
    return {"nvcc": nvcc, "nvcc_version": nvcc_version, "cuda_home": cuda_home, "cuda_home_version": home_version,
            "usr_local_cuda": default_target, "installs": installs}


def pip_cuda_lib_dirs() -> list[str]:
    """lib directories of pip's nvidia-* packages (site-packages/nvidia/<pkg>/lib)."""
    import importlib.util

    try:
        spec = importlib.util.find_spec("nvidia")
    except (ImportError, ValueError):
        return []
    dirs = []
    for base in (spec.submodule_search_locations or []) if spec else []:
        dirs += sorted(glob.glob(os.path.join(base, "*", "lib")))
    return dirs


def _cuda_libs(d: str) -> dict[str, str]:
    """{'libcudnn': 'libcudnn.so.9', ...}: CUDA libraries found in a directory."""
    found: dict[str, str] = {}
    try:
        names = sorted(os.listdir(d))
    except OSError:
        return found
    for n in names:
        m = re.match(r"(lib[A-Za-z_]+?)(?:\.so|\.\d|_)", n)
        if m and m.group(1) in CUDA_LIBS and ".so" in n:
            found.setdefault(m.group(1), n)
    return found


def probe_library_path(env: dict, pip_dirs: list[str] | None = None) -> dict:
    """LD_LIBRARY_PATH directories holding CUDA libraries that pip's nvidia-* packages also provide."""
    entries = [p for p in env.get("LD_LIBRARY_PATH", "").split(":") if p]
    pip_dirs = pip_cuda_lib_dirs() if pip_dirs is None else pip_dirs
    pip_libs: dict[str, str] = {}
    for d in pip_dirs:
        for stem, name in _cuda_libs(d).items():
            pip_libs.setdefault(stem, os.path.join(d, name))
    shadowing = []
    for d in entries:
        if any(os.path.realpath(d) == os.path.realpath(p) for p in pip_dirs):
            continue
        for stem, name in _cuda_libs(d).items():
            if stem in pip_libs:
                shadowing.append({"dir": d, "lib": name, "pip": pip_libs[stem]})
    return {"LD_LIBRARY_PATH": entries, "pip_cuda_libs": sorted(pip_libs), "shadowing": shadowing}


# --- all together -------------------------------------------------------------------------------


_MISSING = object()


def probe_nvidia(nvml=_MISSING, which: Callable = shutil.which, run: Runner = default_run,
                 root: str | Path = "/", env: dict | None = None, pip_dirs: list[str] | None = None) -> dict:
    root = Path(root)
    env = dict(os.environ if env is None else env)
    import_error = None
    if nvml is _MISSING:
        nvml, import_error = _import_nvml()
    elif nvml is None:
        import_error = "cannot import pynvml (nvidia-ml-py not installed)"
    nvml_result = probe_nvml(nvml) if nvml is not None else {"ok": False, "error": import_error}
    smi_path = which("nvidia-smi")
    facts: dict = {"nvml": {"ok": nvml_result["ok"], "error": nvml_result.get("error")},
                   "nvidia_smi": smi_path, "source": None, "driver_version": None, "cuda_driver_version": None,
                   "gpus": [], "smi_error": None}
    proc = probe_proc(root)
    facts["proc_version"] = proc.get("proc_version")
    facts["device_nodes"] = sorted(str(Path("/dev") / Path(p).name) for p in glob.glob(str(root / "dev/nvidia[0-9]*")))
    chosen = None
    if nvml_result["ok"]:
        chosen, facts["source"] = nvml_result, "nvml"
    elif smi_path:
        smi = probe_nvidia_smi(smi_path, run)
        if smi["ok"]:
            chosen, facts["source"] = smi, "nvidia-smi"
        else:
            facts["smi_error"] = smi["error"]
    if chosen is None and proc["ok"]:
        chosen, facts["source"] = proc, "proc"
    if chosen is not None:
        facts["driver_version"] = chosen.get("driver_version") or proc.get("driver_version")
        facts["cuda_driver_version"] = chosen.get("cuda_driver_version")
        facts["gpus"] = chosen.get("gpus") or []
    facts["toolkit"] = probe_toolkits(root, env, which, run)
    facts["library_path"] = probe_library_path(env, pip_dirs)
    return facts
