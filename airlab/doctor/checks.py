"""Judge the facts: every check has a stable id, a status (ok/warn/fail/skip), one line, and a fix.

`evaluate(facts, backends)` is pure over the fact dict that airlab.doctor.core gathers (the seam
the tests use: a fake situation is a fact dict). Sections are the id prefixes: system, gpu,
cuda, torch, tensorflow, security. For a given --backend the same ids appear on every machine;
checks that do not apply say `skip` and why.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from airlab.doctor.compat import Compat, cc_str, coverage, load, parse_arch_list, parse_cc, parse_version, \
    toolkit_variant, version_at_least

STATUSES = ("ok", "warn", "fail", "skip")
SECTIONS = ("system", "gpu", "cuda", "torch", "tensorflow", "security")
GiB = 2**30


@dataclass
class Check:
    id: str
    status: str
    summary: str
    fix: str | None = None

    @property
    def section(self) -> str:
        return self.id.split(".", 1)[0]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["section"] = self.section
        return d


def ok(id, summary, fix=None):
    return Check(id, "ok", summary, fix)


def warn(id, summary, fix=None):
    return Check(id, "warn", summary, fix)


def fail(id, summary, fix=None):
    return Check(id, "fail", summary, fix)


def skip(id, summary, fix=None):
    return Check(id, "skip", summary, fix)


def gib(n) -> str:
    return "?" if n is None else f"{n / GiB:.1f} GiB"


# --- views over the facts -----------------------------------------------------------------------


def os_kind(facts: dict) -> str:
    s = facts.get("system", {})
    if s.get("os") == "Darwin":
        return "darwin"
    if s.get("os") == "Windows":
        return "windows"
    if s.get("wsl"):
        return "wsl"
    return "linux"


def column(facts: dict) -> str:
    return "windows" if os_kind(facts) in ("windows", "wsl") else "linux"


def gpus(facts: dict) -> list[dict]:
    """NVIDIA GPUs, with compute capability filled in from torch's view when the driver's source
    (e.g. /proc) did not give it."""
    out = [dict(g) for g in facts.get("nvidia", {}).get("gpus", [])]
    tdev = (facts.get("frameworks", {}).get("torch", {}).get("data") or {}).get("devices") or []
    if not out and tdev and not (facts.get("frameworks", {}).get("torch", {}).get("data") or {}).get("hip"):
        out = [{"index": d.get("index"), "name": d.get("name"), "cc": d.get("cc"), "from": "torch"} for d in tdev]
    for g in out:
        if not g.get("cc"):
            for d in tdev:
                if d.get("index") == g.get("index") and d.get("cc"):
                    g["cc"] = d["cc"]
    return out


def gpu_label(g: dict) -> str:
    cc = f", CC {g['cc']}" if g.get("cc") else ""
    return f"GPU {g.get('index', '?')} ({g.get('name') or 'unknown'}{cc})"


def probe(facts: dict, name: str) -> dict:
    return facts.get("frameworks", {}).get(name) or {"status": "not_run"}


def plan_fix(facts: dict, backend: str) -> str:
    """The fix command for a wrong framework build: what `airlab setup` would install here."""
    try:
        from airlab.setup.plan import Machine, plan_setup

        m = Machine(driver=facts.get("nvidia", {}).get("driver_version"),
                    gpus=tuple(g["cc"] for g in gpus(facts) if g.get("cc")),
                    python=facts.get("system", {}).get("python", {}).get("version", "3.11"),
                    os=os_kind(facts), arch=facts.get("system", {}).get("machine") or "x86_64",
                    installed=dict(facts.get("packages") or {}))
        choice = plan_setup(m, [backend]).choices[0]
        if choice.action == "none":
            return f"airlab setup --backend {backend}"
        steps = [f"pip uninstall -y {' '.join(choice.uninstall)}"] if choice.uninstall else []
        steps.append(choice.display_command().replace("pip install ", "pip install --force-reinstall ", 1)
                     if choice.action == "keep" else choice.display_command())
        return f"airlab setup --backend {backend}  (runs: {'; '.join(steps)})"
    except Exception:  # the fix line must never break the doctor
        return f"airlab setup --backend {backend}"


# --- system -------------------------------------------------------------------------------------


def system_checks(facts: dict, compat: Compat) -> list[Check]:
    s = facts.get("system", {})
    out = []
    out.append(ok("system.os", f"{s.get('distro') or s.get('os')} (kernel {s.get('kernel')}, {s.get('machine')})"))
    c = s.get("container")
    out.append(ok("system.container", f"in a {c} container" if c else "not in a container"))
    wsl = s.get("wsl")
    if not wsl:
        out.append(skip("system.wsl", "not WSL"))
    elif wsl.get("version") == 1:
        out.append(fail("system.wsl", "WSL 1 has no GPU support",
                        "in Windows: wsl --set-version <distro> 2"))
    elif wsl.get("dxg") is False:  # None: facts from before this check
        build = compat.tf_rules["wsl2_min_windows_build"]
        out.append(fail("system.wsl", "WSL2 without /dev/dxg: no GPU can reach this WSL (GPU paravirtualization "
                        f"needs Windows build >= {build}, i.e. Windows 10 21H2 or Windows 11, and a current WSL "
                        "kernel)",
                        f"in Windows: update Windows to build >= {build} (`winver` shows it), then `wsl --update` "
                        "and `wsl --shutdown`"))
    elif wsl.get("linux_libcuda"):
        out.append(fail("system.wsl", f"a Linux libcuda ({', '.join(wsl['linux_libcuda'])}) shadows WSL's "
                        f"/usr/lib/wsl/lib/libcuda.so.1: a Linux NVIDIA driver was installed inside WSL",
                        "remove the Linux driver inside WSL (e.g. sudo apt-get remove --purge 'libnvidia-compute-*' "
                        "'nvidia-driver-*'); WSL2 uses the Windows driver"))
    elif not wsl.get("wsl_libcuda"):
        out.append(fail("system.wsl", "WSL2 without /usr/lib/wsl/lib/libcuda.so.1: the Windows driver's GPU "
                        "support is not reaching WSL",
                        "in Windows: install the NVIDIA driver (>= 528.33 for CUDA 12), then `wsl --update` "
                        "and `wsl --shutdown`"))
    else:
        out.append(ok("system.wsl", "WSL2; CUDA through the Windows driver's /usr/lib/wsl/lib/libcuda.so.1"))
    py = s.get("python", {})
    env = "conda" if py.get("conda") else "venv" if py.get("venv") else "system Python"
    pv = parse_version(py.get("version", "0"))
    if pv and pv[:2] < (3, 11):
        out.append(fail("system.python", f"Python {py.get('version')} is older than airlab's 3.11",
                        "use Python >= 3.11 (e.g. uv venv --python 3.11)"))
    else:
        out.append(ok("system.python", f"Python {py.get('version')} ({py.get('implementation')}, {env}) at "
                                       f"{py.get('executable')}"))
    cpu = s.get("cpu", {})
    flags = cpu.get("flags") or {}
    isa = [n for n, f in (("AVX2", "avx2"), ("AVX-512", "avx512f"), ("AVX512-BF16", "avx512_bf16"),
                          ("AMX", "amx_tile")) if flags.get(f)]
    cores = f"{cpu.get('usable_cores')} usable cores"
    if cpu.get("logical_cores") and cpu.get("usable_cores") and cpu["usable_cores"] < cpu["logical_cores"]:
        cores += f" of {cpu['logical_cores']}"
    line = f"{cpu.get('model') or 'unknown CPU'}; {cores}; ISA: {', '.join(isa) or 'no AVX2'}"
    if s.get("machine") in ("x86_64", "AMD64") and flags and not flags.get("avx"):
        out.append(warn("system.cpu", line + " — no AVX: TensorFlow's wheels will not import",
                        "use a CPU with AVX, or build TensorFlow from source"))
    else:
        out.append(ok("system.cpu", line))
    mem = s.get("memory", {})
    total, avail, limit = mem.get("total_bytes"), mem.get("available_bytes"), mem.get("cgroup_limit_bytes")
    line = f"{gib(total)} RAM, {gib(avail)} available" + (f"; container limit {gib(limit)}" if limit else "")
    effective = min(x for x in (total, limit) if x) if (total or limit) else None
    if effective is not None and effective < 4 * GiB:
        out.append(warn("system.memory", line + " — under 4 GiB: data loading and larger models will run out",
                        "close other programs, or raise the container's memory limit"))
    else:
        out.append(ok("system.memory", line))
    disk = s.get("disk", {})
    low = [(k, d) for k, d in disk.items() if d.get("free_bytes") is not None and d["free_bytes"] < 5 * GiB]
    line = "; ".join(f"{k.replace('_', ' ')} {d.get('path')}: {gib(d.get('free_bytes'))} free" for k, d in disk.items())
    if low:
        out.append(warn("system.disk", line + " — under 5 GiB where datasets or checkpoints go",
                        "free space, or point AIRLAB_DATA_DIR / output.runs_root at a bigger disk"))
    else:
        out.append(ok("system.disk", line or "unknown"))
    shm = s.get("shm_bytes")
    if shm is None:
        out.append(skip("system.shm", "no /dev/shm"))
    elif shm < GiB:
        out.append(warn("system.shm", f"/dev/shm is {shm / 2**20:.0f} MiB: DataLoader workers share tensors "
                        "through it and fail with 'bus error' when it fills",
                        "docker run --shm-size=8g (or --ipc=host); on Kubernetes mount an emptyDir with medium: Memory"))
    else:
        out.append(ok("system.shm", f"/dev/shm {gib(shm)}"))
    return out


# --- NVIDIA -------------------------------------------------------------------------------------


def gpu_checks(facts: dict, compat: Compat) -> list[Check]:
    nv = facts.get("nvidia", {})
    gs = gpus(facts)
    driver = nv.get("driver_version")
    container = facts.get("system", {}).get("container")
    out = []
    if gs:
        desc = "; ".join(f"{gpu_label(g)}" + (f" {gib(g['memory_total_bytes'])}" if g.get("memory_total_bytes") else "")
                         for g in gs)
        out.append(ok("gpu.present", f"{len(gs)} NVIDIA GPU{'s' if len(gs) > 1 else ''}: {desc}"))
    elif driver:
        out.append(warn("gpu.present", f"NVIDIA driver {driver} is loaded but no GPU is visible",
                        "in a container: docker run --gpus all (NVIDIA Container Toolkit); "
                        "check CUDA_VISIBLE_DEVICES and `nvidia-smi -L`"))
    else:
        why = [nv.get("nvml", {}).get("error") and "no NVML", "no /proc/driver/nvidia",
               None if nv.get("nvidia_smi") else "no nvidia-smi"]
        fix = ("if the host has an NVIDIA GPU: docker run --gpus all … (NVIDIA Container Toolkit)" if container else
               "nothing to fix for CPU-only use; with an NVIDIA GPU, install its driver")
        out.append(skip("gpu.present", f"no NVIDIA GPU ({', '.join(w for w in why if w)}): airlab runs on the CPU",
                        fix))
    # NVML and the fallbacks
    src = nv.get("source")
    nvml_err = nv.get("nvml", {}).get("error")
    if not gs and not driver:
        out.append(skip("gpu.nvml", "no NVIDIA driver"))
    elif src == "nvml":
        extra = "" if nv.get("nvidia_smi") else " (nvidia-smi is not on PATH; not needed)"
        out.append(ok("gpu.nvml", f"NVML answers (driver {driver}){extra}"))
    elif src == "nvidia-smi":
        out.append(warn("gpu.nvml", f"NVML through Python failed ({nvml_err}); facts from nvidia-smi",
                        "pip install --force-reinstall nvidia-ml-py"))
    else:
        libmissing = "LibraryNotFound" in (nvml_err or "") or "not found" in (nvml_err or "").lower()
        fix = ("the driver's NVML library (libnvidia-ml.so.1) is missing: reinstall the driver's user-space "
               "libraries; in a container run with --gpus all (NVIDIA Container Toolkit)" if libmissing else
               "pip install --force-reinstall nvidia-ml-py")
        out.append(warn("gpu.nvml", f"NVML unavailable ({nvml_err}) and "
                        f"{'nvidia-smi failed' if nv.get('nvidia_smi') else 'no nvidia-smi'}; facts from "
                        f"/proc/driver/nvidia only (no compute capability, memory or health)", fix))
    # driver
    if not driver:
        out.append(skip("gpu.driver", "no NVIDIA driver"))
    else:
        cuda = nv.get("cuda_driver_version") or compat.max_toolkit_for_driver(driver, column(facts))
        need12 = compat.minor_compat_min(12, column(facts))
        if not version_at_least(driver, need12):
            full = compat.driver_min(_newest_torch_toolkit(compat, 12), column(facts))
            out.append(warn("gpu.driver", f"driver {driver} (CUDA {cuda}) predates CUDA 12 (needs >= {need12}): "
                            "current PyTorch and TensorFlow CUDA wheels will not load",
                            f"install NVIDIA driver >= {full} (e.g. `sudo ubuntu-drivers install` on Ubuntu, "
                            f"or nvidia.com/drivers)"))
        else:
            out.append(ok("gpu.driver", f"driver {driver}; supports CUDA up to {cuda}"
                          + (" (Windows driver, seen through WSL2)" if os_kind(facts) == "wsl" else "")))
    # MIG
    if not gs:
        out.append(skip("gpu.mig", "no GPU"))
    else:
        mig = [(g, (g.get("mig") or {})) for g in gs]
        empty = [g for g, m in mig if m.get("enabled") and m.get("instances") == 0]
        on = [(g, m) for g, m in mig if m.get("enabled")]
        if empty:
            g = empty[0]
            out.append(fail("gpu.mig", f"{gpu_label(g)} has MIG enabled but no GPU instances: CUDA sees no device there",
                            f"create instances: sudo nvidia-smi mig -i {g['index']} -cgi <profile> -C "
                            f"(profiles: nvidia-smi mig -lgip), or disable MIG: sudo nvidia-smi -i {g['index']} -mig 0"))
        elif on:
            g, m = on[0]
            n = m.get("instances")
            out.append(warn("gpu.mig", f"{gpu_label(g)} has MIG enabled"
                            + (f" ({n} instance{'s' if n != 1 else ''})" if n is not None else "")
                            + ": CUDA sees MIG instances, not the whole GPU, and a process uses one instance",
                            "pick one: export CUDA_VISIBLE_DEVICES=MIG-<uuid> (nvidia-smi -L lists them); "
                            f"or for the whole GPU: sudo nvidia-smi -i {g['index']} -mig 0"))
        elif any(m.get("enabled") is False for _, m in mig):
            out.append(ok("gpu.mig", "MIG disabled"))
        else:
            out.append(ok("gpu.mig", "MIG not supported or not reported"))
    # health: throttling, temperature, ECC, retired/remapped pages
    if not gs:
        out.append(skip("gpu.health", "no GPU"))
    else:
        problems, fail_fix, warn_fix = [], None, None
        for g in gs:
            reasons = set(g.get("throttle_reasons") or [])
            bad = reasons & {"hw_slowdown", "hw_thermal_slowdown", "sw_thermal_slowdown", "hw_power_brake_slowdown"}
            if bad:
                problems.append(("warn", f"{gpu_label(g)} throttled: {', '.join(sorted(bad))}"))
                warn_fix = warn_fix or "check cooling and power delivery (nvidia-smi -q -d PERFORMANCE,TEMPERATURE)"
            t = g.get("temperature_c")
            if t is not None and t >= 85:
                problems.append(("warn", f"{gpu_label(g)} at {t} °C"))
                warn_fix = warn_fix or "check cooling (nvidia-smi -q -d TEMPERATURE)"
            ecc = g.get("ecc") or {}
            if ecc.get("uncorrected_volatile"):
                problems.append(("warn", f"{gpu_label(g)} has {ecc['uncorrected_volatile']} uncorrected ECC errors"))
                warn_fix = warn_fix or f"when idle: sudo nvidia-smi -r -i {g.get('index')} (GPU reset)"
            if ecc.get("retired_pages_pending") or ecc.get("remap_pending"):
                problems.append(("warn", f"{gpu_label(g)} has memory pages waiting to be retired/remapped"))
                warn_fix = warn_fix or f"reset the GPU (sudo nvidia-smi -r -i {g.get('index')}) or reboot"
            if ecc.get("remap_failure"):
                problems.append(("fail", f"{gpu_label(g)}: memory row remapping failed"))
                fail_fix = (f"the GPU needs service (RMA); meanwhile hide it: export CUDA_VISIBLE_DEVICES "
                            f"without {g.get('index')}")
        if any(p[0] == "fail" for p in problems):
            out.append(fail("gpu.health", "; ".join(p[1] for p in problems), fail_fix))
        elif problems:
            out.append(warn("gpu.health", "; ".join(p[1] for p in problems), warn_fix))
        elif src != "nvml":
            out.append(skip("gpu.health", "throttling and ECC need NVML"))
        else:
            temps = [g.get("temperature_c") for g in gs if g.get("temperature_c") is not None]
            out.append(ok("gpu.health", "no hardware throttling, no ECC problems"
                          + (f", {max(temps)} °C max" if temps else "")))
    # PCIe link
    links = [(g, g.get("pcie") or {}) for g in gs]
    links = [(g, p) for g, p in links if p.get("width") and p.get("width_max")]
    if not links:
        out.append(skip("gpu.pcie", "no GPU" if not gs else "PCIe link not reported"))
    else:
        narrow = [(g, p) for g, p in links if p["width"] < p["width_max"]]
        if narrow:
            g, p = narrow[0]
            out.append(warn("gpu.pcie", f"{gpu_label(g)} PCIe link x{p['width']} of x{p['width_max']}: host transfers "
                            "run at a fraction of their speed",
                            "reseat the card in a full-width slot; check riser and BIOS lane settings"))
        else:
            parts = [f"Gen{p.get('gen')}/{p.get('gen_max')} x{p['width']}" for _, p in links]
            out.append(ok("gpu.pcie", f"{', '.join(sorted(set(parts)))} (generation drops when idle; width is full)"))
    # clashing NVML bindings
    pk = facts.get("packages", {})
    if "pynvml" in pk and parse_version(pk["pynvml"]) < (12,) and "nvidia-ml-py" in pk:
        out.append(warn("gpu.nvml_packages", f"pynvml {pk['pynvml']} and nvidia-ml-py {pk['nvidia-ml-py']} both "
                        "install pynvml.py: whichever came last wins",
                        "pip uninstall -y pynvml && pip install --force-reinstall nvidia-ml-py"))
    elif "pynvml" in pk and parse_version(pk["pynvml"]) < (12,):
        out.append(warn("gpu.nvml_packages", f"pynvml {pk['pynvml']} is the unmaintained NVML binding",
                        "pip uninstall -y pynvml && pip install nvidia-ml-py"))
    else:
        out.append(ok("gpu.nvml_packages", f"nvidia-ml-py {pk.get('nvidia-ml-py', 'not installed')}; no clashing pynvml"))
    return out


def _newest_torch_toolkit(compat: Compat, major: int) -> str:
    newest = compat.torch_release(compat.torch_releases()[0])["cuda"]
    same = [t for t in newest if t.split(".")[0] == str(major)]
    return max(same or newest, key=parse_version)


def cuda_checks(facts: dict) -> list[Check]:
    nv = facts.get("nvidia", {})
    tk = nv.get("toolkit") or {}
    out = []
    torch_cuda = (probe(facts, "torch").get("data") or {}).get("cuda")
    installs = tk.get("installs") or []
    several = f"; {len(installs)} installs: {', '.join(i['path'] for i in installs)}" if len(installs) > 1 else ""
    if not tk.get("nvcc") and not tk.get("cuda_home"):
        out.append(ok("cuda.toolkit", "no CUDA toolkit on PATH: not needed (pip wheels bring their CUDA libraries; "
                      "nvcc only builds extensions)" + several))
    else:
        nvcc_v, home_v = tk.get("nvcc_version"), tk.get("cuda_home_version")
        line = f"nvcc {nvcc_v or '?'} ({tk.get('nvcc') or 'not on PATH'}); CUDA_HOME {tk.get('cuda_home') or 'unset'}" \
               + several
        if nvcc_v and home_v and nvcc_v != home_v:
            out.append(warn("cuda.toolkit", line + f" — nvcc is CUDA {nvcc_v} but CUDA_HOME is {home_v}",
                            f"export PATH=\"{tk['cuda_home']}/bin:$PATH\" (or point CUDA_HOME at the nvcc you use)"))
        elif torch_cuda and nvcc_v and nvcc_v.split(".")[0] != torch_cuda.split(".")[0]:
            match = [i["path"] for i in installs if (i.get("version") or "").split(".")[0] == torch_cuda.split(".")[0]]
            fix = (f"export CUDA_HOME={match[0]} PATH={match[0]}/bin:$PATH" if match else
                   f"install CUDA toolkit {torch_cuda} for building extensions")
            out.append(warn("cuda.toolkit", line + f" — torch is built with CUDA {torch_cuda}: building CUDA "
                            "extensions (torch.utils.cpp_extension) will fail on the major version", fix))
        else:
            note = "" if (nv.get("driver_version") or nv.get("gpus")) else "; no driver here, so it can compile only"
            out.append(ok("cuda.toolkit", line + note))
    lp = nv.get("library_path") or {}
    shadow = lp.get("shadowing") or []
    loaded = (probe(facts, "torch").get("data") or {}).get("loaded_libs") or []
    foreign = [p for p in loaded if "/site-packages/" not in p and "/dist-packages/" not in p
               and any(p.rsplit("/", 1)[-1].startswith(s) for s in lp.get("pip_cuda_libs") or [])]
    if shadow or foreign:
        what = [f"{s['dir']}/{s['lib']} shadows pip's {s['pip'].rsplit('/', 1)[-1]}" for s in shadow]
        what += [f"torch loaded {p} instead of pip's copy" for p in foreign]
        dirs = sorted({s["dir"] for s in shadow})
        out.append(warn("cuda.library_path", "; ".join(what[:3]) + (" …" if len(what) > 3 else ""),
                        f"drop {', '.join(dirs)} from LD_LIBRARY_PATH (or unset LD_LIBRARY_PATH)" if dirs else
                        "unset LD_LIBRARY_PATH and check /etc/ld.so.conf.d for CUDA directories"))
    else:
        entries = lp.get("LD_LIBRARY_PATH") or []
        out.append(ok("cuda.library_path", "LD_LIBRARY_PATH unset" if not entries else
                      "no LD_LIBRARY_PATH entry shadows pip's CUDA libraries"))
    return out


# --- PyTorch ------------------------------------------------------------------------------------

TORCH_IDS = ("torch.import", "torch.build", "gpu.driver_too_old_for_torch", "torch.arch_coverage",
             "torch.cuda_available", "torch.compute", "torch.cudnn", "torch.precision")


def _import_check(facts, name, label, explicit) -> tuple[Check, dict | None]:
    p = probe(facts, name)
    st = p.get("status")
    cid = f"{name}.import"
    if st == "ok" or (st == "timeout" and (p.get("data") or {}).get("status") == "imported"):
        d = p["data"]
        if st == "timeout":
            return fail(cid, f"{label} {d.get('version')} imported, then hung at stage '{p.get('stage')}': "
                        f"{p.get('error')}", f"run `python -c \"import {_mod(name)}\"` then the stage by hand; "
                        "check the driver (nvidia-smi) and CUDA_VISIBLE_DEVICES"), d
        return ok(cid, f"{label} {d.get('version')} imports ({d.get('import_s', 0):.1f} s) from {d.get('path')}"), d
    if st == "absent":
        maker = fail if explicit else (warn if name == "torch" else skip)
        return maker(cid, f"{label} is not installed" + ("" if name == "torch" else " (optional backend)"),
                     plan_fix(facts, name)), None
    if st == "not_run":
        return skip(cid, f"{label} not probed"), None
    err = p.get("error") or "unknown error"
    if st == "timeout":
        return fail(cid, f"import {_mod(name)} hung: {err}",
                    f"run `python -X importtime -c \"import {_mod(name)}\"` to see where it stops; check network "
                    "file systems, a stuck driver (nvidia-smi), or reinstall: " + plan_fix(facts, name)), None
    if st == "crashed":
        sigill = "SIGILL" in err
        return fail(cid, f"{label} crashed the process: {err}",
                    "the CPU lacks instructions this wheel needs (AVX): use a matching build" if sigill else
                    f"run `python -c \"import {_mod(name)}\"` to see the crash; reinstall: " + plan_fix(facts, name)), None
    return fail(cid, f"import {_mod(name)} raised {err}", "reinstall: " + plan_fix(facts, name)), None


def _mod(name):
    return "tensorflow" if name == "tensorflow" else name


def torch_checks(facts: dict, compat: Compat, explicit: bool = False) -> list[Check]:
    imp, d = _import_check(facts, "torch", "torch", explicit)
    out = [imp]
    if d is None:
        why = "torch not installed" if probe(facts, "torch").get("status") == "absent" else "torch did not import"
        return out + [skip(i, why) for i in TORCH_IDS[1:]]
    gs = gpus(facts)
    nv = facts.get("nvidia", {})
    driver = nv.get("driver_version")
    version, tcuda, hip = d.get("version"), d.get("cuda"), d.get("hip")
    col = column(facts)
    # build
    if hip:
        out.append(ok("torch.build", f"torch {version} is a ROCm {hip} build"))
    elif tcuda:
        out.append(ok("torch.build", f"torch {version} is a CUDA {tcuda} build"
                      + ("" if gs else "; no NVIDIA GPU here, so it runs on the CPU")))
    elif gs:
        out.append(fail("torch.build", f"torch {version} is a CPU build, but this machine has "
                        f"{len(gs)} NVIDIA GPU{'s' if len(gs) > 1 else ''}", plan_fix(facts, "torch")))
    elif d.get("mps_built"):
        out.append(ok("torch.build", f"torch {version} (MPS {'available' if d.get('mps_available') else 'not available'})"))
    else:
        out.append(ok("torch.build", f"torch {version} is a CPU build: right for this machine, which has no GPU"))
    # driver vs torch's CUDA
    cid = "gpu.driver_too_old_for_torch"
    if not tcuda:
        out.append(skip(cid, "not a CUDA build of torch"))
    elif not driver:
        out.append(skip(cid, "no NVIDIA driver"))
    else:
        rule, full = compat.loadability(tcuda, driver, col)
        major = tcuda.split(".")[0]
        minor = compat.minor_compat_min(major, col)
        if rule == "no":
            out.append(fail(cid, f"torch {version} (CUDA {tcuda}) needs driver >= {minor} (CUDA {major} "
                            f"minor-version compatibility); driver {driver} is too old",
                            f"install NVIDIA driver >= {full} (full CUDA {tcuda} support), or a wheel this driver "
                            f"loads: {plan_fix(facts, 'torch')}"))
        elif rule == "minor":
            out.append(warn(cid, f"driver {driver} is below {full}, CUDA {tcuda}'s full-support minimum: torch loads "
                            f"by CUDA {major} minor-version compatibility (>= {minor}), without PTX JIT",
                            f"install NVIDIA driver >= {full} to lift this"))
        else:
            out.append(ok(cid, f"driver {driver} fully supports CUDA {tcuda} (>= {full})"))
    # arch coverage
    cid = "torch.arch_coverage"
    if not tcuda:
        out.append(skip(cid, "not a CUDA build of torch"))
    elif not gs:
        out.append(skip(cid, "no GPU"))
    else:
        arch_items = d.get("arch_list") or []
        source = "torch.cuda.get_arch_list()"
        try:
            entries = parse_arch_list(arch_items) if arch_items else None
        except ValueError:
            entries = None
        if not entries:
            table = compat.torch_arch_list(toolkit_variant(tcuda), facts.get("system", {}).get("machine") or "x86_64")
            entries = table[0] if table else None
            source = f"airlab's table for {toolkit_variant(tcuda)}"
        if not entries:
            out.append(warn(cid, f"torch {version}'s arch list is unknown", "run airlab doctor --deep"))
        else:
            rule, full = compat.loadability(tcuda, driver, col) if driver else ("unknown", None)
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
            span = f"{entries[0]} … {entries[-1]}" if len(entries) > 1 else str(entries[0])
            if bad:
                g = bad[0]
                out.append(fail(cid, f"{gpu_label(g)} has no code in torch {version} ({source}: {span}): kernels "
                                "fail with 'no kernel image is available for execution on the device'",
                                plan_fix(facts, "torch")))
            elif ptx_bad:
                g, e = ptx_bad[0]
                out.append(fail(cid, f"{gpu_label(g)} runs torch {version} only by PTX JIT ({e}), which needs driver "
                                f">= {full} (full CUDA {tcuda} support); driver {driver}",
                                f"install NVIDIA driver >= {full}, or: {plan_fix(facts, 'torch')}"))
            elif ptx_ok:
                g, e = ptx_ok[0]
                out.append(warn(cid, f"{gpu_label(g)} runs torch {version} by PTX JIT ({e}): slow first kernels, "
                                "no native code", plan_fix(facts, "torch")))
            elif unknown:
                out.append(warn(cid, f"compute capability unknown for {gpu_label(unknown[0])}",
                                "make NVML work (see gpu.nvml) so coverage can be judged"))
            else:
                out.append(ok(cid, "native code for every GPU: " +
                              ", ".join(f"CC {g['cc']} ← {e}" for g, e in good)))
    # is_available
    cid = "torch.cuda_available"
    n_seen = d.get("device_count") or 0
    if hip and n_seen:  # AMD GPUs: NVML does not see them, torch does
        out.append(ok(cid, f"torch sees {n_seen} ROCm device{'s' if n_seen != 1 else ''}"))
    elif not gs:
        out.append(skip(cid, "no GPU"))
    elif not (tcuda or hip):
        out.append(skip(cid, "CPU build of torch (see torch.build)"))
    elif not d.get("cuda_available"):
        reason = d.get("cuda_error") or "no reason given"
        cvd = facts.get("env", {}).get("CUDA_VISIBLE_DEVICES")
        if any((g.get("mig") or {}).get("enabled") for g in gs):
            fix = "MIG is enabled: see gpu.mig"
        elif cvd is not None and cvd.strip() in ("", "-1"):
            fix = f"CUDA_VISIBLE_DEVICES={cvd!r} hides every GPU: unset CUDA_VISIBLE_DEVICES"
        elif "driver" in reason.lower() and ("old" in reason.lower() or "insufficient" in reason.lower()):
            fix = "update the NVIDIA driver (see gpu.driver_too_old_for_torch)"
        else:
            fix = "check `nvidia-smi`; in a container run with --gpus all; then airlab doctor --deep"
        out.append(fail(cid, f"torch.cuda.is_available() is False although {len(gs)} GPU(s) are present: {reason}",
                        fix))
    elif n_seen < len(gs):
        cvd = facts.get("env", {}).get("CUDA_VISIBLE_DEVICES")
        mig = any((g.get("mig") or {}).get("enabled") for g in gs)
        out.append(ok(cid, f"torch sees {n_seen} of {len(gs)} GPUs"
                      + (f" (CUDA_VISIBLE_DEVICES={cvd})" if cvd is not None else "")
                      + (" (MIG instances count as devices)" if mig else "")))
    else:
        out.append(ok(cid, f"torch sees {n_seen} CUDA device{'s' if n_seen != 1 else ''}"))
    # compute
    cid = "torch.compute"
    rows = d.get("compute") or []
    dev_rows = [r for r in rows if r.get("device") != "cpu"]
    cpu_row = next((r for r in rows if r.get("device") == "cpu"), None)
    if probe(facts, "torch").get("status") == "timeout":
        out.append(fail(cid, f"the torch probe hung at stage '{probe(facts, 'torch').get('stage')}'",
                        "run airlab doctor --deep --backend torch; check nvidia-smi for a stuck GPU"))
    elif cpu_row and cpu_row.get("error"):
        out.append(fail(cid, f"CPU matmul raised {cpu_row['error']}", "reinstall: " + plan_fix(facts, "torch")))
    elif not dev_rows:
        out.append(skip(cid, "no GPU to check; CPU matmul correct" if cpu_row else "no GPU"))
    else:
        errs = [r for r in dev_rows if r.get("error")]
        wrong = [r for r in dev_rows if r.get("rel_err") is not None and r["rel_err"] > _tolerance(r.get("dtype"))]
        if errs:
            r = errs[0]
            out.append(fail(cid, f"{r['device']} {r['dtype']} raised {r['error']}",
                            "install a build with code for this GPU: " + plan_fix(facts, "torch")
                            if "kernel image" in r["error"] else
                            "run airlab doctor --deep; check nvidia-smi, the driver and gpu.health"))
        elif wrong:
            r = wrong[0]
            out.append(fail(cid, f"{r['device']} {r['dtype']} matmul differs from the CPU (relative error "
                            f"{r['rel_err']:.2g})", "check gpu.health; reset the GPU or report the hardware"))
        else:
            out.append(ok(cid, "matmul on " + ", ".join(sorted({r['device'] for r in dev_rows}))
                          + f" matches the CPU ({len(dev_rows)} check{'s' if len(dev_rows) > 1 else ''})"))
    # cuDNN
    cid = "torch.cudnn"
    if not tcuda:
        out.append(skip(cid, "not a CUDA build of torch"))
    elif not gs:
        out.append(skip(cid, "no GPU"))
    elif d.get("cudnn") is None:
        out.append(warn(cid, "torch reports no cuDNN" + (f" ({d['cudnn_error']})" if d.get("cudnn_error") else ""),
                        "see cuda.library_path; reinstall: " + plan_fix(facts, "torch")))
    else:
        out.append(ok(cid, f"cuDNN {d['cudnn']}"))
    # precision
    cid = "torch.precision"
    if gs and d.get("cuda_available"):
        devs = d.get("devices") or []
        old = [x for x in devs if parse_cc(x.get("cc")) and parse_cc(x.get("cc")) < (8, 0)]
        if d.get("bf16") and not old:
            out.append(ok(cid, "bf16 and TF32 supported: train.precision auto picks bf16"))
        else:
            out.append(ok(cid, "no bf16/TF32 on " + (", ".join(f"cuda:{x['index']} (CC {x['cc']})" for x in old) or
                                                     "this GPU") + ": use precision fp16 (with a grad scaler) or fp32"))
    else:
        cap = d.get("cpu_capability")
        out.append(skip(cid, f"no GPU; CPU kernels use {cap}" if cap else "no GPU"))
    return out


def _tolerance(dtype: str | None) -> float:
    return 5e-2 if dtype and "bfloat16" in dtype else 2e-2 if dtype and "conv" in dtype else 1e-3


# --- TensorFlow ---------------------------------------------------------------------------------

TF_IDS = ("tensorflow.import", "tensorflow.build", "gpu.driver_too_old_for_tensorflow", "tensorflow.gpu_visible",
          "tensorflow.libraries", "tensorflow.compute")


def tensorflow_checks(facts: dict, compat: Compat, explicit: bool = False) -> list[Check]:
    imp, d = _import_check(facts, "tensorflow", "TensorFlow", explicit)
    out = [imp]
    p = probe(facts, "tensorflow")
    if d is None:
        why = "TensorFlow not installed" if p.get("status") == "absent" else "TensorFlow did not import"
        return out + [skip(i, why) for i in TF_IDS[1:]]
    gs = gpus(facts)
    driver = facts.get("nvidia", {}).get("driver_version")
    version = d.get("version") or "?"
    build = d.get("build") or {}
    cuda_build = bool(build.get("is_cuda_build"))
    okind = os_kind(facts)
    findings = p.get("log_findings") or []
    tested = compat.tf_config(version)
    # build
    cid = "tensorflow.build"
    if cuda_build:
        out.append(ok(cid, f"TensorFlow {version} built with CUDA {build.get('cuda_version')}, "
                      f"cuDNN {build.get('cudnn_version')}" + ("" if gs else "; no GPU here, so it runs on the CPU")))
    elif gs and okind == "windows":
        out.append(warn(cid, f"TensorFlow {version} on native Windows has no GPU support (it ended with "
                        f"{compat.tf_rules['windows_native_gpu_max']})",
                        f"use WSL2 (Windows build >= {compat.tf_rules['wsl2_min_windows_build']}) and "
                        "pip install 'tensorflow[and-cuda]'"))
    elif gs and okind in ("linux", "wsl"):
        out.append(fail(cid, f"TensorFlow {version} is a CPU build, but this machine has an NVIDIA GPU",
                        plan_fix(facts, "tensorflow")))
    else:
        out.append(ok(cid, f"TensorFlow {version} is a CPU build" + ("" if gs else ": right for this machine, which "
                                                                              "has no GPU")))
    # driver
    cid = "gpu.driver_too_old_for_tensorflow"
    need = compat.tf_rules["driver_min"]["wsl" if okind == "wsl" else "linux"]
    if not cuda_build:
        out.append(skip(cid, "not a CUDA build of TensorFlow"))
    elif not driver:
        out.append(skip(cid, "no NVIDIA driver"))
    else:
        tcuda = build.get("cuda_version") or (tested[3] if tested else None)
        if tcuda:
            rule, full = compat.loadability(".".join(str(tcuda).split(".")[:2]), driver, column(facts))
        else:
            rule, full = ("minor" if version_at_least(driver, need) else "no"), None
        if rule == "no" or not version_at_least(driver, need):
            out.append(fail(cid, f"TensorFlow {version} (CUDA {tcuda}) needs driver >= {need}; driver {driver} "
                            "is too old", f"install NVIDIA driver >= {full or need}"))
        else:
            out.append(ok(cid, f"driver {driver} >= {need} (TensorFlow's CUDA 12 minimum)"))
    # GPUs visible
    cid = "tensorflow.gpu_visible"
    seen = d.get("gpus") or []
    missing_libs = [f["detail"] for f in findings if f["kind"] == "missing_library" and f.get("detail")]
    if not gs:
        out.append(skip(cid, "no GPU"))
    elif not cuda_build:
        out.append(skip(cid, "CPU build of TensorFlow (see tensorflow.build)"))
    elif not seen:
        if missing_libs:
            fix = (f"pip install 'tensorflow[and-cuda]=={'.'.join(version.split('.')[:2])}.*' (pip's CUDA libraries); "
                   "if they are installed, see cuda.library_path")
            why = f"it could not load {', '.join(missing_libs[:3])}"
        elif any(f["kind"] == "no_driver" for f in findings):
            fix = ("WSL2: see system.wsl" if okind == "wsl" else
                   "the driver's libcuda.so.1 is not found: reinstall the driver, or run the container with --gpus all")
            why = "it found no CUDA driver"
        else:
            fix, why = "run airlab doctor --deep --backend tensorflow and read tensorflow.libraries", "no reason logged"
        out.append(fail(cid, f"TensorFlow sees no GPU: {why}", fix))
    else:
        out.append(ok(cid, f"TensorFlow sees {len(seen)} GPU{'s' if len(seen) > 1 else ''}: "
                      + ", ".join(f"{g.get('name')} (CC {g.get('cc')})" for g in seen)))
    # library log lines
    cid = "tensorflow.libraries"
    if findings and (gs or cuda_build):
        lines = [f["line"] for f in findings][:2]
        bad = "fail" if gs and (missing_libs or any(f["kind"] in ("dlopen_failed", "cudnn_mismatch") for f in findings)) \
            else "warn"
        out.append(Check(cid, bad, "TensorFlow logged: " + " | ".join(lines),
                         "pip install 'tensorflow[and-cuda]' for pip's CUDA libraries; if installed, "
                         "see cuda.library_path"))
    elif findings:
        out.append(ok(cid, f"TensorFlow logged {len(findings)} library message(s); harmless without a GPU"))
    else:
        out.append(ok(cid, "no missing-library messages in TensorFlow's log"))
    # compute
    cid = "tensorflow.compute"
    rows = d.get("compute") or []
    dev_rows = [r for r in rows if "GPU" in str(r.get("device"))]
    if p.get("status") == "timeout":
        out.append(fail(cid, f"the TensorFlow probe hung at stage '{p.get('stage')}'",
                        "run airlab doctor --backend tensorflow; check nvidia-smi"))
    elif any(r.get("error") for r in rows):
        r = next(r for r in rows if r.get("error"))
        out.append(fail(cid, f"{r.get('device')} matmul raised {r['error']}", "see tensorflow.libraries and gpu.health"))
    elif not dev_rows:
        out.append(skip(cid, "no GPU to check; CPU matmul correct" if rows else "no GPU"))
    else:
        wrong = [r for r in dev_rows if (r.get("rel_err") or 0) > 1e-3]
        if wrong:
            out.append(fail(cid, f"{wrong[0]['device']} matmul differs from the CPU (relative error "
                            f"{wrong[0]['rel_err']:.2g})", "check gpu.health"))
        else:
            out.append(ok(cid, f"matmul on {len(dev_rows)} GPU(s) matches the CPU"))
    return out


# --- security -----------------------------------------------------------------------------------


def security_checks(facts: dict, compat: Compat) -> list[Check]:
    pk = facts.get("packages", {})
    out = []
    for package in ("torch", "pyyaml", "keras"):
        cid = f"security.{package}"
        have = pk.get(package)
        if not have:
            out.append(skip(cid, f"{package} not installed"))
            continue
        hv = parse_version(have)
        hits = [a for a in compat.advisories(package)
                if hv < parse_version(a["fixed_in"]) and hv >= parse_version(a.get("min_affected", "0"))]
        if not hits:
            ids = ", ".join(a["id"] for a in compat.advisories(package))
            out.append(ok(cid, f"{package} {have} has the fixes for {ids}"))
            continue
        newest_fix = max((a["fixed_in"] for a in hits), key=parse_version)
        status = "fail" if any(a["severity"] == "fail" for a in hits) else "warn"
        line = "; ".join(f"{a['id']} ({a['what']}; fixed in {a['fixed_in']})" for a in hits)
        pipname = {"pyyaml": "PyYAML"}.get(package, package)
        fix = (plan_fix(facts, "torch") if package == "torch" else f"pip install -U '{pipname}>={newest_fix}'")
        out.append(Check(cid, status, f"{package} {have}: {line}", fix))
    return out


# --- --deep -------------------------------------------------------------------------------------

DEEP_N = 1024  # the probes' matmul size under --deep (128 otherwise)
DEEP_GPU_WORK = {"torch": (f"bigger matmuls ({DEEP_N}x{DEEP_N})", "a bf16 matmul", "a cuDNN convolution"),
                 "tensorflow": (f"bigger matmuls ({DEEP_N}x{DEEP_N})",)}


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def _on_cpu(row: dict) -> bool:
    return str(row.get("device", "")).lower() in ("cpu", "/cpu:0", "?", "")


def deep_checks(facts: dict, backends: tuple[str, ...] | list[str]) -> list[Check]:
    """`gpu.deep`: what --deep ran on the GPUs, or, without one, what it skipped (its GPU work)."""
    cid = "gpu.deep"
    work: list[str] = []
    for b in backends:
        work += [w for w in DEEP_GPU_WORK.get(b, ()) if w not in work]
    rows = [r for b in backends for r in (probe(facts, b).get("data") or {}).get("compute") or []]
    gpu_rows = [r for r in rows if not _on_cpu(r)]
    if gpu_rows:
        kinds = {"float32": f"matmuls ({DEEP_N}x{DEEP_N})", "bfloat16": "a bf16 matmul",
                 "conv2d(cudnn)": "a cuDNN convolution"}
        ran = list(dict.fromkeys(kinds.get(str(r.get("dtype")), str(r.get("dtype"))) for r in gpu_rows))
        devices = list(dict.fromkeys(str(r["device"]) for r in gpu_rows))
        return [ok(cid, f"--deep ran {_and(ran)} on {', '.join(devices)} (results: "
                        + ", ".join(f"{b}.compute" for b in backends) + ")")]
    gs = gpus(facts)
    if not gs:
        why, fix = "no GPU", None
    else:
        why = f"{len(gs)} GPU{'s' if len(gs) > 1 else ''} but no framework ran on {'them' if len(gs) > 1 else 'it'}"
        fix = "see " + " and ".join(f"{b}.cuda_available" if b == "torch" else f"{b}.build" for b in backends)
    cpu_ran = any(_on_cpu(r) and r.get("rel_err") is not None for r in rows)
    return [skip(cid, f"--deep: {why}, skipped: {_and(work) if work else 'the GPU checks'} on the GPU"
                      + (f"; the CPU matmul ran at {DEEP_N}x{DEEP_N}" if cpu_ran else ""), fix)]


# --- all ----------------------------------------------------------------------------------------


def evaluate(facts: dict, backends: tuple[str, ...] | list[str] = ("torch", "tensorflow"),
             explicit: bool = False, compat: Compat | None = None, deep: bool | None = None) -> list[Check]:
    """Every check for these facts, in section order. `explicit`: the user asked for these backends
    by name (--backend torch), so a missing one fails instead of warning. `deep` (default: the facts'
    options) adds `gpu.deep`, which says what --deep ran on the GPUs or skipped without one."""
    compat = compat or load()
    if deep is None:
        deep = bool((facts.get("options") or {}).get("deep"))
    checks = system_checks(facts, compat) + gpu_checks(facts, compat)
    if deep:
        checks += deep_checks(facts, backends)
    checks += cuda_checks(facts)
    if "torch" in backends:
        checks += torch_checks(facts, compat, explicit)
    if "tensorflow" in backends:
        checks += tensorflow_checks(facts, compat, explicit)
    checks += security_checks(facts, compat)
    return checks
