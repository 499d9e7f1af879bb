"""Section `tensorflow`: TensorFlow's import, build, driver, visible GPUs, the library messages in
its log, and a matmul per device, judged from what probes/tf_probe.py learned
(facts["frameworks"]["tensorflow"]). Every check after the import needs it."""

from __future__ import annotations

from airlab.doctor.checks.registry import check, fail, finding, ok, skip, warn
from airlab.doctor.checks.views import DEEP_N, column, data, driver, gpus, import_finding, os_kind, plan_fix, probe
from airlab.doctor.compat import version_at_least

# what --deep runs on each GPU (gpu.deep names what it skipped without one)
DEEP_GPU_WORK = (f"bigger matmuls ({DEEP_N}x{DEEP_N})",)


def _build(facts: dict) -> dict:
    return data(facts, "tensorflow").get("build") or {}


def _version(facts: dict) -> str:
    return data(facts, "tensorflow").get("version") or "?"


def _findings(facts: dict) -> list[dict]:
    """What frameworks.py read in TensorFlow's log (missing libraries, no driver, ...)."""
    return probe(facts, "tensorflow").get("log_findings") or []


def _missing_libs(facts: dict) -> list[str]:
    return [f["detail"] for f in _findings(facts) if f["kind"] == "missing_library" and f.get("detail")]


@check("tensorflow.import")
def import_(facts, ctx):
    return import_finding(facts, ctx, "tensorflow", "TensorFlow", optional=True)


@check("tensorflow.build", needs="tensorflow.import", role="gpu_use")
def build(facts, ctx):
    b, version, gs, okind = _build(facts), _version(facts), gpus(facts), os_kind(facts)
    if b.get("is_cuda_build"):
        return ok(f"TensorFlow {version} built with CUDA {b.get('cuda_version')}, "
                  f"cuDNN {b.get('cudnn_version')}" + ("" if gs else "; no GPU here, so it runs on the CPU"))
    if gs and okind == "windows":
        return warn(f"TensorFlow {version} on native Windows has no GPU support (it ended with "
                    f"{ctx.compat.tf_rules['windows_native_gpu_max']})",
                    f"use WSL2 (Windows build >= {ctx.compat.tf_rules['wsl2_min_windows_build']}) and "
                    "pip install 'tensorflow[and-cuda]'")
    if gs and okind in ("linux", "wsl"):
        return fail(f"TensorFlow {version} is a CPU build, but this machine has an NVIDIA GPU",
                    plan_fix(facts, "tensorflow"))
    return ok(f"TensorFlow {version} is a CPU build" + ("" if gs else ": right for this machine, which has no GPU"))


@check("gpu.driver_too_old_for_tensorflow", needs="tensorflow.import", section="tensorflow")
def driver_too_old(facts, ctx):
    """The driver against TensorFlow's CUDA (and its own CUDA 12 minimum)."""
    b, version, nv_driver = _build(facts), _version(facts), driver(facts)
    need = ctx.compat.tf_rules["driver_min"]["wsl" if os_kind(facts) == "wsl" else "linux"]
    if not b.get("is_cuda_build"):
        return skip("not a CUDA build of TensorFlow")
    if not nv_driver:
        return skip("no NVIDIA driver")
    tested = ctx.compat.tf_config(version)
    tcuda = b.get("cuda_version") or (tested[3] if tested else None)
    if tcuda:
        rule, full = ctx.compat.loadability(".".join(str(tcuda).split(".")[:2]), nv_driver, column(facts))
    else:
        rule, full = ("minor" if version_at_least(nv_driver, need) else "no"), None
    if rule == "no" or not version_at_least(nv_driver, need):
        return fail(f"TensorFlow {version} (CUDA {tcuda}) needs driver >= {need}; driver {nv_driver} "
                    "is too old", f"install NVIDIA driver >= {full or need}")
    return ok(f"driver {nv_driver} >= {need} (TensorFlow's CUDA 12 minimum)")


@check("tensorflow.gpu_visible", needs="tensorflow.import")
def gpu_visible(facts, ctx):
    seen = data(facts, "tensorflow").get("gpus") or []
    if not gpus(facts):
        return skip("no GPU")
    if not _build(facts).get("is_cuda_build"):
        return skip("CPU build of TensorFlow (see tensorflow.build)")
    if seen:
        return ok(f"TensorFlow sees {len(seen)} GPU{'s' if len(seen) > 1 else ''}: "
                  + ", ".join(f"{g.get('name')} (CC {g.get('cc')})" for g in seen))
    missing_libs = _missing_libs(facts)
    if missing_libs:
        version = _version(facts)
        fix = (f"pip install 'tensorflow[and-cuda]=={'.'.join(version.split('.')[:2])}.*' (pip's CUDA libraries); "
               "if they are installed, see cuda.library_path")
        why = f"it could not load {', '.join(missing_libs[:3])}"
    elif any(f["kind"] == "no_driver" for f in _findings(facts)):
        fix = ("WSL2: see system.wsl" if os_kind(facts) == "wsl" else
               "the driver's libcuda.so.1 is not found: reinstall the driver, or run the container with --gpus all")
        why = "it found no CUDA driver"
    else:
        fix, why = "run airlab doctor --deep --backend tensorflow and read tensorflow.libraries", "no reason logged"
    return fail(f"TensorFlow sees no GPU: {why}", fix)


@check("tensorflow.libraries", needs="tensorflow.import")
def libraries(facts, ctx):
    """The library log lines."""
    findings, gs = _findings(facts), gpus(facts)
    if findings and (gs or _build(facts).get("is_cuda_build")):
        lines = [f["line"] for f in findings][:2]
        bad = "fail" if gs and (_missing_libs(facts)
                                or any(f["kind"] in ("dlopen_failed", "cudnn_mismatch") for f in findings)) \
            else "warn"
        return finding(bad, "TensorFlow logged: " + " | ".join(lines),
                       "pip install 'tensorflow[and-cuda]' for pip's CUDA libraries; if installed, "
                       "see cuda.library_path")
    if findings:
        return ok(f"TensorFlow logged {len(findings)} library message(s); harmless without a GPU")
    return ok("no missing-library messages in TensorFlow's log")


@check("tensorflow.compute", needs="tensorflow.import", role="compute")
def compute(facts, ctx):
    p = probe(facts, "tensorflow")
    rows = data(facts, "tensorflow").get("compute") or []
    dev_rows = [r for r in rows if "GPU" in str(r.get("device"))]
    if p.get("status") == "timeout":
        return fail(f"the TensorFlow probe hung at stage '{p.get('stage')}'",
                    "run airlab doctor --backend tensorflow; check nvidia-smi")
    if any(r.get("error") for r in rows):
        r = next(r for r in rows if r.get("error"))
        return fail(f"{r.get('device')} matmul raised {r['error']}", "see tensorflow.libraries and gpu.health")
    if not dev_rows:
        return skip("no GPU to check; CPU matmul correct" if rows else "no GPU")
    wrong = [r for r in dev_rows if (r.get("rel_err") or 0) > 1e-3]
    if wrong:
        return fail(f"{wrong[0]['device']} matmul differs from the CPU (relative error "
                    f"{wrong[0]['rel_err']:.2g})", "check gpu.health")
    return ok(f"matmul on {len(dev_rows)} GPU(s) matches the CPU")
