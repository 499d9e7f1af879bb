"""Section `cuda`: the CUDA toolkit (nvcc, CUDA_HOME) and what LD_LIBRARY_PATH does to pip's
CUDA libraries."""

from __future__ import annotations

from airlab.doctor.checks.registry import check, ok, warn
from airlab.doctor.checks.views import data


@check("cuda.toolkit")
def toolkit(facts, ctx):
    nv = facts.get("nvidia", {})
    tk = nv.get("toolkit") or {}
    torch_cuda = data(facts, "torch").get("cuda")
    installs = tk.get("installs") or []
    several = f"; {len(installs)} installs: {', '.join(i['path'] for i in installs)}" if len(installs) > 1 else ""
    if not tk.get("nvcc") and not tk.get("cuda_home"):
        return ok("no CUDA toolkit on PATH: not needed (pip wheels bring their CUDA libraries; "
                  "nvcc only builds extensions)" + several)
    nvcc_v, home_v = tk.get("nvcc_version"), tk.get("cuda_home_version")
    line = f"nvcc {nvcc_v or '?'} ({tk.get('nvcc') or 'not on PATH'}); CUDA_HOME {tk.get('cuda_home') or 'unset'}" \
           + several
    if nvcc_v and home_v and nvcc_v != home_v:
        return warn(line + f" — nvcc is CUDA {nvcc_v} but CUDA_HOME is {home_v}",
                    f"export PATH=\"{tk['cuda_home']}/bin:$PATH\" (or point CUDA_HOME at the nvcc you use)")
    if torch_cuda and nvcc_v and nvcc_v.split(".")[0] != torch_cuda.split(".")[0]:
        match = [i["path"] for i in installs if (i.get("version") or "").split(".")[0] == torch_cuda.split(".")[0]]
        fix = (f"export CUDA_HOME={match[0]} PATH={match[0]}/bin:$PATH" if match else
               f"install CUDA toolkit {torch_cuda} for building extensions")
        return warn(line + f" — torch is built with CUDA {torch_cuda}: building CUDA "
                    "extensions (torch.utils.cpp_extension) will fail on the major version", fix)
    note = "" if (nv.get("driver_version") or nv.get("gpus")) else "; no driver here, so it can compile only"
    return ok(line + note)


@check("cuda.library_path")
def library_path(facts, ctx):
    lp = facts.get("nvidia", {}).get("library_path") or {}
    shadow = lp.get("shadowing") or []
    loaded = data(facts, "torch").get("loaded_libs") or []
    foreign = [p for p in loaded if "/site-packages/" not in p and "/dist-packages/" not in p
               and any(p.rsplit("/", 1)[-1].startswith(s) for s in lp.get("pip_cuda_libs") or [])]
    if shadow or foreign:
        what = [f"{s['dir']}/{s['lib']} shadows pip's {s['pip'].rsplit('/', 1)[-1]}" for s in shadow]
        what += [f"torch loaded {p} instead of pip's copy" for p in foreign]
        dirs = sorted({s["dir"] for s in shadow})
        return warn("; ".join(what[:3]) + (" …" if len(what) > 3 else ""),
                    f"drop {', '.join(dirs)} from LD_LIBRARY_PATH (or unset LD_LIBRARY_PATH)" if dirs else
                    "unset LD_LIBRARY_PATH and check /etc/ld.so.conf.d for CUDA directories")
    entries = lp.get("LD_LIBRARY_PATH") or []
    return ok("LD_LIBRARY_PATH unset" if not entries else "no LD_LIBRARY_PATH entry shadows pip's CUDA libraries")
