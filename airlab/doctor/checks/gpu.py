"""Section `gpu`: the NVIDIA GPUs, NVML, the driver, MIG, health, the PCIe link, the NVML
bindings, and (under --deep) what the framework probes ran on the GPUs."""

from __future__ import annotations

import importlib

from airlab.backends import table
from airlab.doctor.checks.registry import check, fail, ok, role_id, section_module, skip, warn
from airlab.doctor.checks.views import DEEP_N, column, driver, gib, gpu_label, gpus, os_kind, probe
from airlab.doctor.compat import Compat, parse_version, version_at_least


@check("gpu.present")
def present(facts, ctx):
    nv = facts.get("nvidia", {})
    gs = gpus(facts)
    if gs:
        desc = "; ".join(f"{gpu_label(g)}" + (f" {gib(g['memory_total_bytes'])}" if g.get("memory_total_bytes") else "")
                         for g in gs)
        return ok(f"{len(gs)} NVIDIA GPU{'s' if len(gs) > 1 else ''}: {desc}")
    if driver(facts):
        return warn(f"NVIDIA driver {driver(facts)} is loaded but no GPU is visible",
                    "in a container: docker run --gpus all (NVIDIA Container Toolkit); "
                    "check CUDA_VISIBLE_DEVICES and `nvidia-smi -L`")
    why = [nv.get("nvml", {}).get("error") and "no NVML", "no /proc/driver/nvidia",
           None if nv.get("nvidia_smi") else "no nvidia-smi"]
    fix = ("if the host has an NVIDIA GPU: docker run --gpus all … (NVIDIA Container Toolkit)"
           if facts.get("system", {}).get("container") else
           "nothing to fix for CPU-only use; with an NVIDIA GPU, install its driver")
    return skip(f"no NVIDIA GPU ({', '.join(w for w in why if w)}): airlab runs on the CPU", fix)


@check("gpu.nvml")
def nvml(facts, ctx):
    """NVML and the fallbacks."""
    nv = facts.get("nvidia", {})
    src = nv.get("source")
    nvml_err = nv.get("nvml", {}).get("error")
    if not gpus(facts) and not driver(facts):
        return skip("no NVIDIA driver")
    if src == "nvml":
        extra = "" if nv.get("nvidia_smi") else " (nvidia-smi is not on PATH; not needed)"
        return ok(f"NVML answers (driver {driver(facts)}){extra}")
    if src == "nvidia-smi":
        return warn(f"NVML through Python failed ({nvml_err}); facts from nvidia-smi",
                    "pip install --force-reinstall nvidia-ml-py")
    libmissing = "LibraryNotFound" in (nvml_err or "") or "not found" in (nvml_err or "").lower()
    fix = ("the driver's NVML library (libnvidia-ml.so.1) is missing: reinstall the driver's user-space "
           "libraries; in a container run with --gpus all (NVIDIA Container Toolkit)" if libmissing else
           "pip install --force-reinstall nvidia-ml-py")
    return warn(f"NVML unavailable ({nvml_err}) and "
                f"{'nvidia-smi failed' if nv.get('nvidia_smi') else 'no nvidia-smi'}; facts from "
                f"/proc/driver/nvidia only (no compute capability, memory or health)", fix)


@check("gpu.driver")
def driver_(facts, ctx):
    version = driver(facts)
    if not version:
        return skip("no NVIDIA driver")
    compat = ctx.compat
    cuda = facts.get("nvidia", {}).get("cuda_driver_version") or compat.max_toolkit_for_driver(version, column(facts))
    need12 = compat.minor_compat_min(12, column(facts))
    if not version_at_least(version, need12):
        full = compat.driver_min(_newest_torch_toolkit(compat, 12), column(facts))
        return warn(f"driver {version} (CUDA {cuda}) predates CUDA 12 (needs >= {need12}): "
                    "current PyTorch and TensorFlow CUDA wheels will not load",
                    f"install NVIDIA driver >= {full} (e.g. `sudo ubuntu-drivers install` on Ubuntu, "
                    f"or nvidia.com/drivers)")
    return ok(f"driver {version}; supports CUDA up to {cuda}"
              + (" (Windows driver, seen through WSL2)" if os_kind(facts) == "wsl" else ""))


def _newest_torch_toolkit(compat: Compat, major: int) -> str:
    newest = compat.torch_release(compat.torch_releases()[0])["cuda"]
    same = [t for t in newest if t.split(".")[0] == str(major)]
    return max(same or newest, key=parse_version)


@check("gpu.mig")
def mig(facts, ctx):
    gs = gpus(facts)
    if not gs:
        return skip("no GPU")
    mig = [(g, (g.get("mig") or {})) for g in gs]
    empty = [g for g, m in mig if m.get("enabled") and m.get("instances") == 0]
    on = [(g, m) for g, m in mig if m.get("enabled")]
    if empty:
        g = empty[0]
        return fail(f"{gpu_label(g)} has MIG enabled but no GPU instances: CUDA sees no device there",
                    f"create instances: sudo nvidia-smi mig -i {g['index']} -cgi <profile> -C "
                    f"(profiles: nvidia-smi mig -lgip), or disable MIG: sudo nvidia-smi -i {g['index']} -mig 0")
    if on:
        g, m = on[0]
        n = m.get("instances")
        return warn(f"{gpu_label(g)} has MIG enabled"
                    + (f" ({n} instance{'s' if n != 1 else ''})" if n is not None else "")
                    + ": CUDA sees MIG instances, not the whole GPU, and a process uses one instance",
                    "pick one: export CUDA_VISIBLE_DEVICES=MIG-<uuid> (nvidia-smi -L lists them); "
                    f"or for the whole GPU: sudo nvidia-smi -i {g['index']} -mig 0")
    if any(m.get("enabled") is False for _, m in mig):
        return ok("MIG disabled")
    return ok("MIG not supported or not reported")


@check("gpu.health")
def health(facts, ctx):
    """Throttling, temperature, ECC, retired/remapped pages."""
    gs = gpus(facts)
    if not gs:
        return skip("no GPU")
    problems = [p for g in gs for p in _health_problems(g)]  # (status, line, fix)
    if any(p[0] == "fail" for p in problems):
        return fail("; ".join(p[1] for p in problems), [p[2] for p in problems if p[0] == "fail"][-1])
    if problems:
        return warn("; ".join(p[1] for p in problems), problems[0][2])
    if facts.get("nvidia", {}).get("source") != "nvml":
        return skip("throttling and ECC need NVML")
    temps = [g.get("temperature_c") for g in gs if g.get("temperature_c") is not None]
    return ok("no hardware throttling, no ECC problems" + (f", {max(temps)} °C max" if temps else ""))


def _health_problems(g: dict) -> list[tuple[str, str, str]]:
    out = []
    reasons = set(g.get("throttle_reasons") or [])
    bad = reasons & {"hw_slowdown", "hw_thermal_slowdown", "sw_thermal_slowdown", "hw_power_brake_slowdown"}
    if bad:
        out.append(("warn", f"{gpu_label(g)} throttled: {', '.join(sorted(bad))}",
                    "check cooling and power delivery (nvidia-smi -q -d PERFORMANCE,TEMPERATURE)"))
    t = g.get("temperature_c")
    if t is not None and t >= 85:
        out.append(("warn", f"{gpu_label(g)} at {t} °C", "check cooling (nvidia-smi -q -d TEMPERATURE)"))
    ecc = g.get("ecc") or {}
    if ecc.get("uncorrected_volatile"):
        out.append(("warn", f"{gpu_label(g)} has {ecc['uncorrected_volatile']} uncorrected ECC errors",
                    f"when idle: sudo nvidia-smi -r -i {g.get('index')} (GPU reset)"))
    if ecc.get("retired_pages_pending") or ecc.get("remap_pending"):
        out.append(("warn", f"{gpu_label(g)} has memory pages waiting to be retired/remapped",
                    f"reset the GPU (sudo nvidia-smi -r -i {g.get('index')}) or reboot"))
    if ecc.get("remap_failure"):
        out.append(("fail", f"{gpu_label(g)}: memory row remapping failed",
                    f"the GPU needs service (RMA); meanwhile hide it: export CUDA_VISIBLE_DEVICES "
                    f"without {g.get('index')}"))
    return out


@check("gpu.pcie")
def pcie(facts, ctx):
    gs = gpus(facts)
    links = [(g, g.get("pcie") or {}) for g in gs]
    links = [(g, p) for g, p in links if p.get("width") and p.get("width_max")]
    if not links:
        return skip("no GPU" if not gs else "PCIe link not reported")
    narrow = [(g, p) for g, p in links if p["width"] < p["width_max"]]
    if narrow:
        g, p = narrow[0]
        return warn(f"{gpu_label(g)} PCIe link x{p['width']} of x{p['width_max']}: host transfers "
                    "run at a fraction of their speed",
                    "reseat the card in a full-width slot; check riser and BIOS lane settings")
    parts = [f"Gen{p.get('gen')}/{p.get('gen_max')} x{p['width']}" for _, p in links]
    return ok(f"{', '.join(sorted(set(parts)))} (generation drops when idle; width is full)")


@check("gpu.nvml_packages")
def nvml_packages(facts, ctx):
    """Clashing NVML bindings."""
    pk = facts.get("packages", {})
    if "pynvml" in pk and parse_version(pk["pynvml"]) < (12,) and "nvidia-ml-py" in pk:
        return warn(f"pynvml {pk['pynvml']} and nvidia-ml-py {pk['nvidia-ml-py']} both "
                    "install pynvml.py: whichever came last wins",
                    "pip uninstall -y pynvml && pip install --force-reinstall nvidia-ml-py")
    if "pynvml" in pk and parse_version(pk["pynvml"]) < (12,):
        return warn(f"pynvml {pk['pynvml']} is the unmaintained NVML binding",
                    "pip uninstall -y pynvml && pip install nvidia-ml-py")
    return ok(f"nvidia-ml-py {pk.get('nvidia-ml-py', 'not installed')}; no clashing pynvml")


# --- --deep -------------------------------------------------------------------------------------
# What --deep runs on a GPU is each backend section's DEEP_GPU_WORK; where to look when a GPU went
# unused is its check with role "gpu_use"; its results are its check with role "compute". (A name
# not in the backend table has no section: the ids fall back to "<name>.compute" / "<name>.build".)

DEEP_KINDS = {"float32": f"matmuls ({DEEP_N}x{DEEP_N})", "bfloat16": "a bf16 matmul",
              "conv2d(cudnn)": "a cuDNN convolution"}


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def _on_cpu(row: dict) -> bool:
    return str(row.get("device", "")).lower() in ("cpu", "/cpu:0", "?", "")


def deep_gpu_work(backend: str) -> tuple[str, ...]:
    """What --deep runs on a GPU for this backend: its section's DEEP_GPU_WORK."""
    if backend not in table.BACKENDS:
        return ()
    return getattr(importlib.import_module(section_module(backend)), "DEEP_GPU_WORK", ())


@check("gpu.deep", when=lambda ctx: ctx.deep)
def deep(facts, ctx):
    """What --deep ran on the GPUs, or, without one, what it skipped (its GPU work)."""
    backends = list(ctx.backends)
    rows = [r for b in backends for r in (probe(facts, b).get("data") or {}).get("compute") or []]
    gpu_rows = [r for r in rows if not _on_cpu(r)]
    if gpu_rows:
        ran = list(dict.fromkeys(DEEP_KINDS.get(str(r.get("dtype")), str(r.get("dtype"))) for r in gpu_rows))
        devices = list(dict.fromkeys(str(r["device"]) for r in gpu_rows))
        return ok(f"--deep ran {_and(ran)} on {', '.join(devices)} (results: "
                  + ", ".join(role_id(b, "compute") or f"{b}.compute" for b in backends) + ")")
    work: list[str] = []
    for b in backends:
        work += [w for w in deep_gpu_work(b) if w not in work]
    gs = gpus(facts)
    if not gs:
        why, fix = "no GPU", None
    else:
        why = f"{len(gs)} GPU{'s' if len(gs) > 1 else ''} but no framework ran on {'them' if len(gs) > 1 else 'it'}"
        fix = "see " + " and ".join(role_id(b, "gpu_use") or f"{b}.build" for b in backends)
    cpu_ran = any(_on_cpu(r) and r.get("rel_err") is not None for r in rows)
    return skip(f"--deep: {why}, skipped: {_and(work) if work else 'the GPU checks'} on the GPU"
                + (f"; the CPU matmul ran at {DEEP_N}x{DEEP_N}" if cpu_ran else ""), fix)
