"""Probe PyTorch: version, build (CUDA/ROCm/CPU), cuDNN, arch list, devices, a matmul per device.

Run by the doctor as `python torch_probe.py '{"deep": false}'`; prints `AIRLAB_PROBE {json}` lines.
"""

import json
import os
import sys
import time
import traceback

MARK = "AIRLAB_PROBE "
LIBS = ("libcudnn", "libcublas", "libcudart", "libnccl", "libnvrtc", "libnvJitLink", "libcusparse", "libcufft")


def emit(out):
    sys.stdout.write(MARK + json.dumps(out, default=str) + "\n")
    sys.stdout.flush()


def err(e):
    return f"{type(e).__name__}: {e}".strip()


def loaded_libs():
    try:
        with open("/proc/self/maps") as f:
            paths = {line.split()[-1] for line in f if ".so" in line and "/" in line}
    except OSError:
        return None
    return sorted(p for p in paths if any(os.path.basename(p).startswith(n) for n in LIBS))


def compare(torch, device, n, dtype):
    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=g)
    b = torch.randn(n, n, generator=g)
    ref = (a.double() @ b.double())
    got = (a.to(device, dtype) @ b.to(device, dtype)).double().cpu()
    scale = ref.abs().max().item() or 1.0
    return (got - ref).abs().max().item() / scale


def import_torch(out):
    """Import torch, recording how it went in `out`; None when it did not import."""
    t0 = time.perf_counter()
    try:
        import torch
    except ModuleNotFoundError as e:
        if e.name == "torch":
            out.update(status="absent", error=err(e))
        else:
            out.update(status="import_error", error=err(e), traceback=traceback.format_exc()[-2000:])
        return None
    except BaseException as e:  # noqa: BLE001 - any import failure is the finding
        out.update(status="import_error", error=err(e), traceback=traceback.format_exc()[-2000:])
        return None
    out["import_s"] = round(time.perf_counter() - t0, 3)
    out["status"] = "imported"
    out["version"] = getattr(torch, "__version__", None)
    out["path"] = os.path.dirname(getattr(torch, "__file__", "") or "")
    ver = getattr(torch, "version", None)
    out["cuda"] = getattr(ver, "cuda", None)
    out["hip"] = getattr(ver, "hip", None)
    return torch


def build_facts(torch, out):
    """CPU capability, threads, the CUDA arch list, MPS."""
    try:
        out["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    except Exception:
        out["cpu_capability"] = None
    try:
        out["threads"] = torch.get_num_threads()
    except Exception:
        pass
    try:
        out["arch_list"] = list(torch.cuda.get_arch_list())
    except Exception as e:
        out["arch_list"], out["arch_list_error"] = [], err(e)
    try:
        mps = getattr(torch.backends, "mps", None)
        out["mps_built"] = bool(mps and mps.is_built())
        out["mps_available"] = bool(mps and mps.is_available())
    except Exception:
        out["mps_built"] = out["mps_available"] = False


def cuda_facts(torch, out):
    """Whether CUDA works (and why not), cuDNN, bf16/TF32; returns the devices torch sees."""
    try:
        out["cuda_available"] = bool(torch.cuda.is_available())
    except Exception as e:
        out["cuda_available"], out["cuda_error"] = False, err(e)
    if not out["cuda_available"] and (out["cuda"] or out["hip"]) and "cuda_error" not in out:
        try:
            torch.cuda.init()
        except Exception as e:  # the reason is_available() said no
            out["cuda_error"] = err(e)
    try:
        out["cudnn"] = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    except Exception as e:
        out["cudnn"], out["cudnn_error"] = None, err(e)
    if not out["cuda_available"]:
        out["device_count"] = 0
        return []
    out["device_count"] = torch.cuda.device_count()
    devices = []
    for i in range(out["device_count"]):
        d = {"index": i}
        try:
            p = torch.cuda.get_device_properties(i)
            d.update(name=p.name, cc=f"{p.major}.{p.minor}", memory_bytes=int(p.total_memory))
        except Exception as e:
            d["error"] = err(e)
        devices.append(d)
    try:
        out["bf16"] = bool(torch.cuda.is_bf16_supported())
    except Exception:
        out["bf16"] = None
    try:
        out["tf32_matmul_enabled"] = bool(torch.backends.cuda.matmul.allow_tf32)
    except Exception:
        pass
    return devices


def conv_row(torch, dev):
    """A cuDNN convolution on `dev` against float64 on the CPU."""
    row = {"device": dev, "dtype": "conv2d(cudnn)"}
    try:
        g = torch.Generator().manual_seed(0)
        x = torch.randn(8, 16, 32, 32, generator=g)
        w = torch.randn(32, 16, 3, 3, generator=g)
        ref = torch.nn.functional.conv2d(x.double(), w.double(), padding=1)
        got = torch.nn.functional.conv2d(x.to(dev), w.to(dev), padding=1).double().cpu()
        row["rel_err"] = (got - ref).abs().max().item() / (ref.abs().max().item() or 1.0)
    except Exception as e:
        row["error"] = err(e)
    return row


def compute_rows(torch, devices, deep, bf16):
    """A matmul on the CPU and on every device (under --deep bigger, plus bf16 and a convolution)."""
    n = 1024 if deep else 128
    compute = []
    try:
        compute.append({"device": "cpu", "dtype": "float32", "rel_err": compare(torch, "cpu", n, torch.float32)})
    except Exception as e:
        compute.append({"device": "cpu", "dtype": "float32", "error": err(e)})
    for d in devices:
        dev = f"cuda:{d['index']}"
        dtypes = [torch.float32] + ([torch.bfloat16] if deep and bf16 else [])
        for dt in dtypes:
            row = {"device": dev, "dtype": str(dt).replace("torch.", "")}
            try:
                row["rel_err"] = compare(torch, dev, n, dt)
                torch.cuda.synchronize(d["index"])
            except Exception as e:
                row["error"] = err(e)
            compute.append(row)
        if deep:
            compute.append(conv_row(torch, dev))
    return compute


def main():
    opts = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
    deep = bool(opts.get("deep"))
    out = {"framework": "torch", "stage": "import", "status": "importing"}
    emit(out)
    torch = import_torch(out)
    if torch is None:
        emit(out)
        return
    out["stage"] = "build"
    emit(out)
    build_facts(torch, out)
    out["stage"] = "cuda"
    emit(out)
    out["devices"] = cuda_facts(torch, out)
    out["stage"] = "compute"
    emit(out)
    out["compute"] = compute_rows(torch, out["devices"], deep, out.get("bf16"))
    if out["cuda_available"]:
        out["loaded_libs"] = loaded_libs()
    out["stage"] = "done"
    out["status"] = "ok"
    emit(out)


if __name__ == "__main__":
    main()
