"""Section `system`: the OS, WSL, Python, CPU, memory, disk and shared memory."""

from __future__ import annotations

from airlab.doctor.checks.registry import check, fail, ok, skip, warn
from airlab.doctor.checks.views import GiB, gib
from airlab.doctor.compat import parse_version


@check("system.os")
def os_(facts, ctx):
    s = facts.get("system", {})
    return ok(f"{s.get('distro') or s.get('os')} (kernel {s.get('kernel')}, {s.get('machine')})")


@check("system.container")
def container(facts, ctx):
    c = facts.get("system", {}).get("container")
    return ok(f"in a {c} container" if c else "not in a container")


@check("system.wsl")
def wsl(facts, ctx):
    w = facts.get("system", {}).get("wsl")
    if not w:
        return skip("not WSL")
    if w.get("version") == 1:
        return fail("WSL 1 has no GPU support", "in Windows: wsl --set-version <distro> 2")
    if w.get("dxg") is False:  # None: facts from before this check
        build = ctx.compat.tf_rules["wsl2_min_windows_build"]
        return fail("WSL2 without /dev/dxg: no GPU can reach this WSL (GPU paravirtualization "
                    f"needs Windows build >= {build}, i.e. Windows 10 21H2 or Windows 11, and a current WSL "
                    "kernel)",
                    f"in Windows: update Windows to build >= {build} (`winver` shows it), then `wsl --update` "
                    "and `wsl --shutdown`")
    if w.get("linux_libcuda"):
        return fail(f"a Linux libcuda ({', '.join(w['linux_libcuda'])}) shadows WSL's "
                    f"/usr/lib/wsl/lib/libcuda.so.1: a Linux NVIDIA driver was installed inside WSL",
                    "remove the Linux driver inside WSL (e.g. sudo apt-get remove --purge 'libnvidia-compute-*' "
                    "'nvidia-driver-*'); WSL2 uses the Windows driver")
    if not w.get("wsl_libcuda"):
        return fail("WSL2 without /usr/lib/wsl/lib/libcuda.so.1: the Windows driver's GPU "
                    "support is not reaching WSL",
                    "in Windows: install the NVIDIA driver (>= 528.33 for CUDA 12), then `wsl --update` "
                    "and `wsl --shutdown`")
    return ok("WSL2; CUDA through the Windows driver's /usr/lib/wsl/lib/libcuda.so.1")


@check("system.python")
def python(facts, ctx):
    py = facts.get("system", {}).get("python", {})
    env = "conda" if py.get("conda") else "venv" if py.get("venv") else "system Python"
    pv = parse_version(py.get("version", "0"))
    if pv and pv[:2] < (3, 11):
        return fail(f"Python {py.get('version')} is older than airlab's 3.11",
                    "use Python >= 3.11 (e.g. uv venv --python 3.11)")
    return ok(f"Python {py.get('version')} ({py.get('implementation')}, {env}) at {py.get('executable')}")


@check("system.cpu")
def cpu(facts, ctx):
    s = facts.get("system", {})
    c = s.get("cpu", {})
    flags = c.get("flags") or {}
    isa = [n for n, f in (("AVX2", "avx2"), ("AVX-512", "avx512f"), ("AVX512-BF16", "avx512_bf16"),
                          ("AMX", "amx_tile")) if flags.get(f)]
    cores = f"{c.get('usable_cores')} usable cores"
    if c.get("logical_cores") and c.get("usable_cores") and c["usable_cores"] < c["logical_cores"]:
        cores += f" of {c['logical_cores']}"
    line = f"{c.get('model') or 'unknown CPU'}; {cores}; ISA: {', '.join(isa) or 'no AVX2'}"
    if s.get("machine") in ("x86_64", "AMD64") and flags and not flags.get("avx"):
        return warn(line + " — no AVX: TensorFlow's wheels will not import",
                    "use a CPU with AVX, or build TensorFlow from source")
    return ok(line)


@check("system.memory")
def memory(facts, ctx):
    mem = facts.get("system", {}).get("memory", {})
    total, avail, limit = mem.get("total_bytes"), mem.get("available_bytes"), mem.get("cgroup_limit_bytes")
    line = f"{gib(total)} RAM, {gib(avail)} available" + (f"; container limit {gib(limit)}" if limit else "")
    effective = min(x for x in (total, limit) if x) if (total or limit) else None
    if effective is not None and effective < 4 * GiB:
        return warn(line + " — under 4 GiB: data loading and larger models will run out",
                    "close other programs, or raise the container's memory limit")
    return ok(line)


@check("system.disk")
def disk(facts, ctx):
    d = facts.get("system", {}).get("disk", {})
    low = [k for k, v in d.items() if v.get("free_bytes") is not None and v["free_bytes"] < 5 * GiB]
    line = "; ".join(f"{k.replace('_', ' ')} {v.get('path')}: {gib(v.get('free_bytes'))} free" for k, v in d.items())
    if low:
        return warn(line + " — under 5 GiB where datasets or checkpoints go",
                    "free space, or point AIRLAB_DATA_DIR / output.runs_root at a bigger disk")
    return ok(line or "unknown")


@check("system.shm")
def shm(facts, ctx):
    n = facts.get("system", {}).get("shm_bytes")
    if n is None:
        return skip("no /dev/shm")
    if n < GiB:
        return warn(f"/dev/shm is {n / 2**20:.0f} MiB: DataLoader workers share tensors "
                    "through it and fail with 'bus error' when it fills",
                    "docker run --shm-size=8g (or --ipc=host); on Kubernetes mount an emptyDir with medium: Memory")
    return ok(f"/dev/shm {gib(n)}")
