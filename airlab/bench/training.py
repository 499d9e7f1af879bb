"""Training throughput: samples/s of a registered model on a backend, through the Backend protocol.

Framework-free: the model is built by the backend's own class (airlab.backends.backend_class),
fed batches in the run loop's own order (make_plan, task.epoch_indices) and timed with the
harness, the device synchronized through `backend.synchronize()`. So any backend that trains
(TensorFlow included, once it lands) is benchmarked by the same code, on the same data and sizes.

Data: `shapes` (generated 28x28 images) for image models and `pycorpus` (characters of the
standard library's docstrings, built offline) for the language model; fixed batch sizes from the
plan; fp32; data already on the device; optimizer step included.
"""

from __future__ import annotations

from dataclasses import dataclass

from airlab import registry
from airlab.bench.harness import Stats, WallClock, measure
from airlab.bench.plans import Plan


@dataclass
class TrainingResult:
    stats: Stats
    samples_per_step: int
    params: int
    meta: dict


class DataCache:
    """Datasets are generated once per bench run."""

    def __init__(self, plan: Plan):
        self.plan = plan
        self._data: dict[str, object] = {}

    def get(self, task_name: str):
        name = "pycorpus" if task_name == "lm" else "shapes"
        if name not in self._data:
            from airlab.data import load_dataset

            size = self.plan.pycorpus_size if name == "pycorpus" else self.plan.shapes_size
            self._data[name] = load_dataset(name, val_fraction=0.1, seed=self.plan.seed, size=size)
        return name, self._data[name]


def config_for(model: str, backend: str, device: str, data_name: str, batch: int, seed: int):
    from airlab.config import validate

    return validate({
        "name": f"bench-{model}", "seed": seed, "backend": backend, "device": device,
        "model": {"name": model},
        "data": {"name": data_name, "batch_size": batch, "val_fraction": 0.1},
        "train": {"steps": 1_000_000, "optimizer": "adam", "lr": 1e-3, "precision": "fp32"},
    })


def train_throughput(backend: str, device: str, model: str, plan: Plan, data: DataCache,
                     on_window=None) -> TrainingResult:
    from airlab.backends import backend_class
    from airlab.tasks import get_task
    from airlab.train.loop import make_plan

    entry = registry.get_model(model)
    task = get_task(entry.task)
    batch = plan.train_batch["lm" if entry.task == "lm" else "image"]
    data_name, dataset = data.get(entry.task)
    cfg = config_for(model, backend, device, data_name, batch, plan.seed)
    run_plan = make_plan(cfg, dataset, task)
    impl = backend_class(backend)(cfg, dataset, task)
    n = len(dataset.train)
    state = {"step": 0}

    def batch_at(step: int):
        epoch, pos = divmod(step, run_plan.steps_per_epoch)
        order = task.epoch_indices(n, cfg.seed, epoch, run_plan.context)
        return order[pos * batch:(pos + 1) * batch]

    batches = [batch_at(s) for s in range(run_plan.steps_per_epoch)]  # one epoch, reused

    def step() -> None:
        i = state["step"]
        impl.train_step(batches[i % len(batches)], 1e-3)
        state["step"] = i + 1

    clock = WallClock(impl.synchronize)
    stats = measure(step, clock, warmup=plan.train_warmup_steps, repeats=plan.train_repeats,
                    min_window_s=plan.train_window_s / plan.train_repeats, on_window=on_window,
                    budget_s=plan.train_budget_s)
    impl.pop_train_metrics()  # the accumulated losses: drop them (and let the device drain)
    meta = {"dataset": data_name, "batch_size": batch, "precision": "fp32", "optimizer": "adam",
            "context_length": run_plan.context, "steps_timed": stats.repeats * stats.inner,
            "device": impl.device}
    return TrainingResult(stats=stats, samples_per_step=batch, params=impl.num_params(), meta=meta)
