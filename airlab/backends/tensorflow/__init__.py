"""The TensorFlow backend: native Keras 3 on TensorFlow (see backend.py).

Importing this package fixes Keras's backend to TensorFlow before Keras is imported (Keras reads
KERAS_BACKEND once, at its own import) and imports TensorFlow with its start-up chatter on the
C++ log (the absl pre-initialisation banner and the oneDNN notice) kept off the terminal; any
other line TensorFlow writes while importing is passed through.
"""

from __future__ import annotations

import os
import sys
import tempfile

_NOISE = ("All log messages before absl::InitializeLog() is called are written to STDERR",
          "oneDNN custom operations are on")


def _import_tensorflow_quietly() -> None:
    if "tensorflow" in sys.modules:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # no real stderr (some test runners): import as is
        import tensorflow  # noqa: F401
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    with tempfile.TemporaryFile(mode="w+b") as capture:
        os.dup2(capture.fileno(), fd)
        try:
            import tensorflow  # noqa: F401
        finally:
            sys.stderr.flush()
            os.dup2(saved, fd)
            os.close(saved)
            capture.seek(0)
            kept = [line for line in capture.read().decode("utf-8", "replace").splitlines()
                    if line.strip() and not any(n in line for n in _NOISE)]
            if kept:
                sys.stderr.write("\n".join(kept) + "\n")


def _fix_keras_backend() -> None:
    keras = sys.modules.get("keras")
    if keras is not None:
        current = keras.backend.backend() if hasattr(keras, "backend") else None
        if current not in (None, "tensorflow"):
            from airlab.errors import EnvironmentProblem

            raise EnvironmentProblem(
                f"Keras was already imported in this process with the {current!r} backend; the tensorflow "
                "backend needs KERAS_BACKEND=tensorflow",
                hint="run airlab in a fresh process (unset KERAS_BACKEND or set it to tensorflow)")
    os.environ["KERAS_BACKEND"] = "tensorflow"


def _quiet_python_logger() -> None:
    """TensorFlow's Python-side warnings (tf.function retracing advice, deprecations) are for
    library authors; airlab's users see errors only, unless they configured the logger."""
    import logging

    logger = logging.getLogger("tensorflow")
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.ERROR)


_fix_keras_backend()
_import_tensorflow_quietly()
_quiet_python_logger()
