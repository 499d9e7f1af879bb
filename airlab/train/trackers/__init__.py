"""Trackers: sinks that show a run in a tool people already use (TensorBoard, MLflow).

One file per tracker; each is registered here by name as "module:Class" (imported only by a run
that asks for it) with the extra that installs its library. A run names its trackers in
`output.trackers`; `airlab export RUN --to NAME` replays a finished run's metrics.jsonl through
the same class.
"""

from __future__ import annotations

# name -> the sink class, imported on first use
TRACKERS: dict[str, str] = {
    "tensorboard": "airlab.train.trackers.tensorboard:TensorBoard",
    "mlflow": "airlab.train.trackers.mlflow:MLflow",
}

# name -> the pip extra that installs its library: pip install "airlab[EXTRA]"
EXTRAS: dict[str, str] = {
    "tensorboard": "tensorboard",
    "mlflow": "mlflow",
}

__all__ = ["EXTRAS", "TRACKERS"]
