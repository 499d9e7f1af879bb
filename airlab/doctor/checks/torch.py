"""Section `torch`: PyTorch's import, build, driver, GPU code, devices, a matmul per device, cuDNN
and precision, judged from what probes/torch_probe.py learned (facts["frameworks"]["torch"]).
Every check after the import needs it: when torch is missing or did not import, they say `skip`."""

from __future__ import annotations

from airlab.doctor.checks.registry import check, fail, ok, skip, warn
from airlab.doctor.checks.views import (DEEP_N, column, data, driver, gpu_label, gpus, import_finding, plan_fix,
                                        probe)
from airlab.doctor.compat import coverage, parse_arch_list, parse_cc, toolkit_variant

# what --deep runs on each GPU (gpu.deep names what it skipped without one)
DEEP_GPU_WORK = (f"bigger matmuls ({DEEP_N}x{DEEP_N})", "a bf16 matmul", "a cuDNN convolution")


@check("torch.import")
def import_(facts, ctx):
    return import_finding(facts, ctx, "torch", "torch", optional=False)


@check("torch.build", needs="torch.import")
def build(facts, ctx):
    d, gs = data(facts, "torch"), gpus(facts)
    version = d.get("version")
    if d.get("hip"):
        return ok(f"torch {version} is a ROCm {d['hip']} build")
    if d.get("cuda"):
        return ok(f"torch {version} is a CUDA {d['cuda']} build"
                  + ("" if gs else "; no NVIDIA GPU here, so it runs on the CPU"))
    if gs:
        return fail(f"torch {version} is a CPU build, but this machine has "
                    f"{len(gs)} NVIDIA GPU{'s' if len(gs) > 1 else ''}", plan_fix(facts, "torch"))
    if d.get("mps_built"):
        return ok(f"torch {version} (MPS {'available' if d.get('mps_available') else 'not available'})")
    return ok(f"torch {version} is a CPU build: right for this machine, which has no GPU")


@check("gpu.driver_too_old_for_torch", needs="torch.import", section="torch")
def driver_too_old(facts, ctx):
    """The driver against torch's CUDA."""
    d, nv_driver = data(facts, "torch"), driver(facts)
    version, tcuda = d.get("version"), d.get("cuda")
    if not tcuda:
        return skip("not a CUDA build of torch")
    if not nv_driver:
        return skip("no NVIDIA driver")
    col = column(facts)
    rule, full = ctx.compat.loadability(tcuda, nv_driver, col)
    major = tcuda.split(".")[0]
    minor = ctx.compat.minor_compat_min(major, col)
    if rule == "no":
        return fail(f"torch {version} (CUDA {tcuda}) needs driver >= {minor} (CUDA {major} "
                    f"minor-version compatibility); driver {nv_driver} is too old",
                    f"install NVIDIA driver >= {full} (full CUDA {tcuda} support), or a wheel this driver "
                    f"loads: {plan_fix(facts, 'torch')}")
    if rule == "minor":
        return warn(f"driver {nv_driver} is below {full}, CUDA {tcuda}'s full-support minimum: torch loads "
                    f"by CUDA {major} minor-version compatibility (>= {minor}), without PTX JIT",
                    f"install NVIDIA driver >= {full} to lift this")
    return ok(f"driver {nv_driver} fully supports CUDA {tcuda} (>= {full})")


@check("torch.arch_coverage", needs="torch.import")
def arch_coverage(facts, ctx):
    """Does torch carry code (native or PTX) for every GPU's compute capability?"""
    d, gs, nv_driver = data(facts, "torch"), gpus(facts), driver(facts)
    version, tcuda = d.get("version"), d.get("cuda")
    if not tcuda:
        return skip("not a CUDA build of torch")
    if not gs:
        return skip("no GPU")
    entries, source = _arch_entries(facts, ctx, d)
    if not entries:
        return warn(f"torch {version}'s arch list is unknown", "run airlab doctor --deep")
    rule, full = ctx.compat.loadability(tcuda, nv_driver, column(facts)) if nv_driver else ("unknown", None)
    bad, ptx_bad, ptx_ok, good, unknown = _coverage(gs, entries, rule)
    span = f"{entries[0]} … {entries[-1]}" if len(entries) > 1 else str(entries[0])
    if bad:
        return fail(f"{gpu_label(bad[0])} has no code in torch {version} ({source}: {span}): kernels "
                    "fail with 'no kernel image is available for execution on the device'", plan_fix(facts, "torch"))
    if ptx_bad:
        g, e = ptx_bad[0]
        return fail(f"{gpu_label(g)} runs torch {version} only by PTX JIT ({e}), which needs driver "
                    f">= {full} (full CUDA {tcuda} support); driver {nv_driver}",
                    f"install NVIDIA driver >= {full}, or: {plan_fix(facts, 'torch')}")
    if ptx_ok:
        g, e = ptx_ok[0]
        return warn(f"{gpu_label(g)} runs torch {version} by PTX JIT ({e}): slow first kernels, "
                    "no native code", plan_fix(facts, "torch"))
    if unknown:
        return warn(f"compute capability unknown for {gpu_label(unknown[0])}",
                    "make NVML work (see gpu.nvml) so coverage can be judged")
    return ok("native code for every GPU: " + ", ".join(f"CC {g['cc']} ← {e}" for g, e in good))


def _arch_entries(facts: dict, ctx, d: dict) -> tuple[list | None, str]:
    """torch's arch list as it reported it, else airlab's table for its CUDA variant; and which."""
    arch_items = d.get("arch_list") or []
    try:
        entries = parse_arch_list(arch_items) if arch_items else None
    except ValueError:
        entries = None
    if entries:
        return entries, "torch.cuda.get_arch_list()"
    variant = toolkit_variant(d.get("cuda"))
    table = ctx.compat.torch_arch_list(variant, facts.get("system", {}).get("machine") or "x86_64")
    return (table[0] if table else None), f"airlab's table for {variant}"


def _coverage(gs: list[dict], entries: list, rule: str) -> tuple[list, list, list, list, list]:
    """Sort the GPUs: no code, PTX the driver cannot JIT, PTX it can, native code, CC unknown."""
    bad, ptx_bad, ptx_ok, good, unknown = [], [], [], [], []
    for g in gs:
        cc = parse_cc(g.get("cc"))
        if cc is None:
            unknown.append(g)
            continue
        kind, entry = coverage(cc, entries)
        if kind == "none":
            bad.append(g)
        elif kind == "ptx":
            (ptx_ok if rule == "full" else ptx_bad).append((g, entry))
        else:
            good.append((g, entry))
    return bad, ptx_bad, ptx_ok, good, unknown


@check("torch.cuda_available", needs="torch.import", role="gpu_use")
def cuda_available(facts, ctx):
    """torch.cuda.is_available(), and how many devices torch sees."""
    d, gs = data(facts, "torch"), gpus(facts)
    n_seen = d.get("device_count") or 0
    if d.get("hip") and n_seen:  # AMD GPUs: NVML does not see them, torch does
        return ok(f"torch sees {n_seen} ROCm device{'s' if n_seen != 1 else ''}")
    if not gs:
        return skip("no GPU")
    if not (d.get("cuda") or d.get("hip")):
        return skip("CPU build of torch (see torch.build)")
    if not d.get("cuda_available"):
        reason = d.get("cuda_error") or "no reason given"
        return fail(f"torch.cuda.is_available() is False although {len(gs)} GPU(s) are present: {reason}",
                    _unavailable_fix(facts, gs, reason))
    if n_seen < len(gs):
        cvd = facts.get("env", {}).get("CUDA_VISIBLE_DEVICES")
        mig = any((g.get("mig") or {}).get("enabled") for g in gs)
        return ok(f"torch sees {n_seen} of {len(gs)} GPUs"
                  + (f" (CUDA_VISIBLE_DEVICES={cvd})" if cvd is not None else "")
                  + (" (MIG instances count as devices)" if mig else ""))
    return ok(f"torch sees {n_seen} CUDA device{'s' if n_seen != 1 else ''}")


def _unavailable_fix(facts: dict, gs: list[dict], reason: str) -> str:
    cvd = facts.get("env", {}).get("CUDA_VISIBLE_DEVICES")
    if any((g.get("mig") or {}).get("enabled") for g in gs):
        return "MIG is enabled: see gpu.mig"
    if cvd is not None and cvd.strip() in ("", "-1"):
        return f"CUDA_VISIBLE_DEVICES={cvd!r} hides every GPU: unset CUDA_VISIBLE_DEVICES"
    if "driver" in reason.lower() and ("old" in reason.lower() or "insufficient" in reason.lower()):
        return "update the NVIDIA driver (see gpu.driver_too_old_for_torch)"
    return "check `nvidia-smi`; in a container run with --gpus all; then airlab doctor --deep"


@check("torch.compute", needs="torch.import", role="compute")
def compute(facts, ctx):
    """A matmul (and under --deep bf16 and a cuDNN convolution) per device, against the CPU."""
    p = probe(facts, "torch")
    rows = data(facts, "torch").get("compute") or []
    dev_rows = [r for r in rows if r.get("device") != "cpu"]
    cpu_row = next((r for r in rows if r.get("device") == "cpu"), None)
    if p.get("status") == "timeout":
        return fail(f"the torch probe hung at stage '{p.get('stage')}'",
                    "run airlab doctor --deep --backend torch; check nvidia-smi for a stuck GPU")
    if cpu_row and cpu_row.get("error"):
        return fail(f"CPU matmul raised {cpu_row['error']}", "reinstall: " + plan_fix(facts, "torch"))
    if not dev_rows:
        return skip("no GPU to check; CPU matmul correct" if cpu_row else "no GPU")
    errs = [r for r in dev_rows if r.get("error")]
    wrong = [r for r in dev_rows if r.get("rel_err") is not None and r["rel_err"] > _tolerance(r.get("dtype"))]
    if errs:
        r = errs[0]
        return fail(f"{r['device']} {r['dtype']} raised {r['error']}",
                    "install a build with code for this GPU: " + plan_fix(facts, "torch")
                    if "kernel image" in r["error"] else
                    "run airlab doctor --deep; check nvidia-smi, the driver and gpu.health")
    if wrong:
        r = wrong[0]
        return fail(f"{r['device']} {r['dtype']} matmul differs from the CPU (relative error "
                    f"{r['rel_err']:.2g})", "check gpu.health; reset the GPU or report the hardware")
    return ok("matmul on " + ", ".join(sorted({r['device'] for r in dev_rows}))
              + f" matches the CPU ({len(dev_rows)} check{'s' if len(dev_rows) > 1 else ''})")


def _tolerance(dtype: str | None) -> float:
    return 5e-2 if dtype and "bfloat16" in dtype else 2e-2 if dtype and "conv" in dtype else 1e-3


@check("torch.cudnn", needs="torch.import")
def cudnn(facts, ctx):
    d = data(facts, "torch")
    if not d.get("cuda"):
        return skip("not a CUDA build of torch")
    if not gpus(facts):
        return skip("no GPU")
    if d.get("cudnn") is None:
        return warn("torch reports no cuDNN" + (f" ({d['cudnn_error']})" if d.get("cudnn_error") else ""),
                    "see cuda.library_path; reinstall: " + plan_fix(facts, "torch"))
    return ok(f"cuDNN {d['cudnn']}")


@check("torch.precision", needs="torch.import")
def precision(facts, ctx):
    d = data(facts, "torch")
    if gpus(facts) and d.get("cuda_available"):
        old = [x for x in d.get("devices") or [] if parse_cc(x.get("cc")) and parse_cc(x.get("cc")) < (8, 0)]
        if d.get("bf16") and not old:
            return ok("bf16 and TF32 supported: train.precision auto picks bf16")
        return ok("no bf16/TF32 on " + (", ".join(f"cuda:{x['index']} (CC {x['cc']})" for x in old) or "this GPU")
                  + ": use precision fp16 (with a grad scaler) or fp32")
    cap = d.get("cpu_capability")
    return skip(f"no GPU; CPU kernels use {cap}" if cap else "no GPU")
