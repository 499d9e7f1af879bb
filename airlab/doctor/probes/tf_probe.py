"""Probe TensorFlow: version, build info (CUDA/cuDNN), visible GPUs and their details, a matmul
per device compared with the CPU. TensorFlow's own log lines go to stderr, where the doctor
reads the ones that name a missing library.

Run by the doctor as `python tf_probe.py '{"deep": false}'`; prints `AIRLAB_PROBE {json}` lines.
"""

import json
import os
import sys
import time
import traceback

MARK = "AIRLAB_PROBE "


def emit(out):
    sys.stdout.write(MARK + json.dumps(out, default=str) + "\n")
    sys.stdout.flush()


def err(e):
    return f"{type(e).__name__}: {e}".strip()


def import_tf(out):
    """Import TensorFlow, recording how it went in `out`; None when it did not import."""
    t0 = time.perf_counter()
    try:
        import tensorflow as tf
    except ModuleNotFoundError as e:
        if e.name == "tensorflow":
            out.update(status="absent", error=err(e))
        else:
            out.update(status="import_error", error=err(e), traceback=traceback.format_exc()[-2000:])
        return None
    except BaseException as e:  # noqa: BLE001
        out.update(status="import_error", error=err(e), traceback=traceback.format_exc()[-2000:])
        return None
    out["import_s"] = round(time.perf_counter() - t0, 3)
    out["status"] = "imported"
    out["version"] = getattr(tf, "__version__", None)
    out["path"] = os.path.dirname(getattr(tf, "__file__", "") or "")
    return tf


def build_facts(tf, out):
    try:
        info = dict(tf.sysconfig.get_build_info())
        out["build"] = {k: info.get(k) for k in ("cuda_version", "cudnn_version", "is_cuda_build", "is_rocm_build",
                                                  "cuda_compute_capabilities")}
    except Exception as e:
        out["build"], out["build_error"] = {}, err(e)


def gpu_facts(tf, out):
    """The GPUs TensorFlow sees, with their compute capability."""
    gpus = []
    try:
        for d in tf.config.list_physical_devices("GPU"):
            row = {"name": d.name}
            try:
                det = tf.config.experimental.get_device_details(d)
                cc = det.get("compute_capability")
                row["device_name"] = det.get("device_name")
                row["cc"] = f"{cc[0]}.{cc[1]}" if cc else None
            except Exception as e:
                row["error"] = err(e)
            gpus.append(row)
    except Exception as e:
        out["devices_error"] = err(e)
    return gpus


def compute_rows(tf, n_gpus, deep):
    """A float32 matmul on the CPU and on every GPU, against float64 in numpy."""
    compute = []
    n = 1024 if deep else 128
    try:
        import numpy as np

        rng = np.random.default_rng(0)
        a = rng.standard_normal((n, n)).astype("float32")
        b = rng.standard_normal((n, n)).astype("float32")
        ref = a.astype("float64") @ b.astype("float64")
        scale = float(np.abs(ref).max()) or 1.0
        for dev in ["/CPU:0"] + [f"/GPU:{i}" for i in range(n_gpus)]:
            row = {"device": dev, "dtype": "float32"}
            try:
                with tf.device(dev):
                    got = tf.linalg.matmul(tf.constant(a), tf.constant(b)).numpy().astype("float64")
                row["rel_err"] = float(np.abs(got - ref).max()) / scale
            except Exception as e:
                row["error"] = err(e)
            compute.append(row)
    except Exception as e:
        compute.append({"device": "?", "error": err(e)})
    return compute


def main():
    opts = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
    deep = bool(opts.get("deep"))
    out = {"framework": "tensorflow", "stage": "import", "status": "importing"}
    emit(out)
    tf = import_tf(out)
    if tf is None:
        emit(out)
        return
    out["stage"] = "build"
    emit(out)
    build_facts(tf, out)
    out["stage"] = "devices"
    emit(out)
    out["gpus"] = gpu_facts(tf, out)
    out["stage"] = "compute"
    emit(out)
    out["compute"] = compute_rows(tf, len(out["gpus"]), deep)
    out["stage"] = "done"
    out["status"] = "ok"
    emit(out)


if __name__ == "__main__":
    main()
