#!/usr/bin/env python
"""airlab against a hand-tuned plain loop, per model, side by side in one process (issue 14).

Each model trains with its shipped hyper-parameters (configs/<model>.yaml: model spec, batch
size, optimizer, lr, betas, weight decay, schedule, grad_clip) for a fixed number of steps, on
data that needs no download: `shapes` for the image models (mlp, cnn, autoencoder, vae, and the
rnn, which reads each 28x28 image as 28 rows of 28 pixels: the shapes of row-sequential MNIST,
which configs/rnn.yaml names), `pycorpus` for the Transformer LM.

Arms, each a full pass of `steps` steps, in rounds that rotate which arm runs first:

- airlab: `Trainer(config).run()` in this process with airlab's defaults; its figure is
  summary.json `samples_per_s` (training steps and their logging; no evaluation or saving).
- tuned: plain PyTorch written as an expert would for this device: the model built from the
  same spec through airlab's registry (the expert's module would be the same: nn.Linear/Conv2d,
  nn.LSTM, and F.scaled_dot_product_attention(is_causal=True) in the Transformer), the loss of
  the same task, the whole split on the device before the clock starts (float32 in [0, 1]) and
  each step's batch gathered from it in the step with index_select (the fastest gather: a loop
  over a dataset gathers its batches, as the TensorFlow tuned loop does), the fastest of fused /
  foreach / for-loop Adam(W) (measured below), clip_grad_norm_(foreach=True), bf16 autocast and
  torch.compile only where measured faster here (measured below), zero_grad(set_to_none=True),
  and one sync (`.item()`) at the end. No non-finite guard: the expert takes that risk.
- control: the tuned arm again; its ratio to the tuned arm is what the same code scores against
  itself, so its distance from 1.000 is the resolution of the run.
- minimal: the minimal loop of scripts/bench_trainer_overhead.py (torch's default optimizer
  implementation, default clip, fp32, eager, batches gathered each step), for every task.

Ratios are medians over rounds of the per-round ratio, with the IQR. TensorFlow arms come from
scripts/tuned_tf.py's `tuned_tf_arms(model_name, cfg, steps, threads)` when it exists.

`--clock cpu` (with --threads 1) times every torch arm by this thread's CPU time instead of the
wall clock (airlab's training clock too: airlab.train.loop's perf_counter is swapped for
thread_time): on a machine shared with other tenants, their load moves wall times by 10-50 %
and CPU time far less. It leaves out nothing the arms compute; it does leave out time spent
waiting (none here: one thread, no data-loading threads on the device placement). TensorFlow's
arms keep the wall clock (TensorFlow runs its own threads), and TensorFlow/torch is printed only
with the wall clock.

`--scale K` trains K times the default steps per arm (~K s). Every arm's figure includes its first
step; TensorFlow's traces the step there (0.1 s for the MLP, ~1 s for the Transformer), which a ~1 s
arm weighs as a sizeable part of the run and a long run does not: --scale 4 measures nearer the rate
a long run trains at.

    python scripts/bench_vs_tuned.py [--backend torch|tensorflow|both] [--models mlp,cnn,...]
                                     [--rounds 8] [--steps N | --scale K] [--threads N] [--compile]

Targets (issue 14): airlab/tuned >= 0.98 and airlab/minimal >= 1.0 on every model (torch);
airlab/tuned >= 0.95 and TensorFlow/torch >= 0.8 on TensorFlow.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ratios import paired, rounds_of  # noqa: E402

from airlab import registry  # noqa: E402
from airlab.backends.torch import losses  # noqa: E402
from airlab.config import load_config  # noqa: E402
from airlab.tasks import get_task  # noqa: E402
from airlab.train import loop as loop_module  # noqa: E402
from airlab.train.loop import Trainer, _load_data, make_plan  # noqa: E402
from airlab.train.order import BatchOrder  # noqa: E402
from airlab.train.progress import Reporter  # noqa: E402
from airlab.train.schedule import lr_function  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
MODELS = ("mlp", "cnn", "rnn", "autoencoder", "vae", "transformer")
STEPS = {"mlp": 200, "cnn": 40, "rnn": 60, "autoencoder": 40, "vae": 200, "transformer": 100}  # ~1 s each here
DATA = {"transformer": ["data.name=pycorpus", "data.val_fraction=0.02"]}
IMAGES = ["data.name=shapes", "data.size=6000", "data.val_fraction=0.02"]
IMPLS = {"for_loop": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}


def config_for(model: str, steps: int, threads: int | None, runs_root: str):
    """configs/<model>.yaml with offline data, `steps` steps, one log line, one checkpoint."""
    over = [*DATA.get(model, IMAGES), "train.epochs=null", f"train.steps={steps}", f"train.log_every={steps}",
            f"train.checkpoint_every={steps}", f"train.eval_every={steps}", "train.keep_checkpoints=1",
            "train.early_stopping=null", "device=cpu", "output.curves=false", f"output.runs_root={runs_root}"]
    if threads:
        over.append(f"train.threads={threads}")
    return load_config(ROOT / "configs" / f"{model}.yaml", over, check_resources=False)


class Loop:
    """One plain PyTorch training loop over the trainer's own batches (a fresh model per run)."""

    clock = staticmethod(time.perf_counter)  # time.thread_time under --clock cpu

    def __init__(self, cfg, dataset, task, *, impl: str | None, precision: str = "fp32", compiled: bool = False,
                 tuned: bool = True):
        self.cfg, self.dataset, self.task = cfg, dataset, task
        self.impl, self.amp, self.compiled, self.tuned = impl, precision == "bf16", compiled, tuned
        plan = make_plan(cfg, dataset, task)
        order = BatchOrder(task, len(dataset.train), cfg.seed, plan.context, plan.batch_size,
                           plan.steps_per_epoch, plan.total_steps)
        self.indices = [torch.from_numpy(order.global_batch(s)) for s in range(plan.total_steps)]
        lr_at = lr_function(cfg.train, plan.total_steps)
        self.lrs = [lr_at(s) for s in range(plan.total_steps)]
        self.windows = task.batches == "windows"
        x = np.asarray(dataset.train.materialize())
        if self.windows:
            self.x_all = torch.as_tensor(x.astype(np.int64))  # (N,) token ids
            self.window = torch.arange(plan.context + 1)
            self.y_all = None
        else:
            x = torch.as_tensor(x).float().mul_(1.0 / 255.0) if x.dtype == np.uint8 else torch.as_tensor(x)
            self.x_all = x.reshape(-1).view(x.shape)  # row-major strides (a (N, 1, H, W) array may carry others)
            self.y_all = None if dataset.train.y is None else torch.as_tensor(np.asarray(dataset.train.y, np.int64))
        # convolutional models in channels-last format (oneDNN's pooling is ~10x faster so on a CPU);
        # not the minimal arm, which takes the default layout
        self.channels_last = tuned and not self.windows and self.x_all.dim() == 4 and any(
            isinstance(m, torch.nn.Conv2d) for m in registry.builder(cfg.model.name, "torch")(
                cfg.model, dataset.info).modules())
        self.loss_fn = losses.TRAIN[task.name]
        self._model = None

    def gather(self, idx):
        """This step's batch: index_select for the tuned arm (a few times faster than indexing on a
        CPU), plain indexing for the minimal one."""
        if self.windows:
            pos = idx[:, None] + self.window  # (B, T+1)
            w = self.x_all.index_select(0, pos.view(-1)).view(pos.shape) if self.tuned else self.x_all[pos]
            return w[:, :-1], w[:, 1:]
        if not self.tuned:
            return self.x_all[idx], (None if self.y_all is None else self.y_all[idx])
        x = self.x_all.index_select(0, idx)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, (None if self.y_all is None else self.y_all.index_select(0, idx))

    def build(self):
        t = self.cfg.train
        torch.manual_seed(self.cfg.seed)
        model = registry.builder(self.cfg.model.name, "torch")(self.cfg.model, self.dataset.info)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        params = [p for p in model.parameters() if p.requires_grad]
        groups = ([{"params": [p for p in params if p.dim() >= 2], "weight_decay": t.weight_decay},
                   {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
                  if t.weight_decay > 0 else [{"params": params, "weight_decay": 0.0}])
        kw = IMPLS[self.impl] if self.impl else {}
        if t.optimizer == "sgd":
            opt = torch.optim.SGD(groups, lr=t.lr, momentum=t.momentum, nesterov=t.nesterov, **kw)
        else:
            cls = torch.optim.AdamW if t.optimizer == "adamw" else torch.optim.Adam
            opt = cls(groups, lr=t.lr, betas=t.betas, eps=t.eps, **kw)
        forward = model
        if self.compiled:
            if self._model is None:  # compiled once; later runs reuse it (its code is cached)
                self._model = torch.compile(model)
            forward = self._model
        return model, forward, params, opt

    def run(self, steps: int | None = None) -> float:
        """Train `steps` steps (default: all) and return samples/s; the last loss in self.loss."""
        model, forward, params, opt = self.build()
        clip, spec = self.cfg.train.grad_clip, self.cfg.model
        foreach = {"foreach": True} if self.impl else {}
        amp = torch.autocast("cpu", dtype=torch.bfloat16) if self.amp else nullcontext()
        n = len(self.indices) if steps is None else steps
        model.train()
        lr_now, seen = None, 0
        t0 = self.clock()
        for s in range(n):
            x, y = self.gather(self.indices[s])
            if self.lrs[s] != lr_now:
                lr_now = self.lrs[s]
                for g in opt.param_groups:
                    g["lr"] = lr_now
            with amp:
                loss, _ = self.loss_fn(forward, x, y, spec=spec)
            loss.backward()
            if clip:
                torch.nn.utils.clip_grad_norm_(params, clip, **foreach)
            opt.step()
            opt.zero_grad(set_to_none=True)
            seen += x.shape[0]
        self.loss = loss.item()  # the one sync
        return seen / (self.clock() - t0)


class _ThreadClock:
    """airlab.train.loop's `time` under --clock cpu: its training clock reads this thread's CPU time."""

    perf_counter = staticmethod(time.thread_time)

    def __getattr__(self, name):
        return getattr(time, name)


def airlab_arm(cfg) -> float:
    return Trainer(cfg, reporter=Reporter(quiet=True)).run().summary["samples_per_s"]


def optimizer_impls(loop: Loop, repeats: int = 5, steps: int = 30) -> dict[str, float]:
    """Microseconds per optimizer.step() of each implementation on this model's parameters and
    fixed gradients (median of `repeats`, interleaved)."""
    times: dict[str, list[float]] = {k: [] for k in IMPLS}
    setups = {}
    for impl in IMPLS:
        loop.impl = impl
        model, _, params, opt = loop.build()
        g = torch.Generator().manual_seed(0)
        for p in params:
            p.grad = torch.randn(p.shape, generator=g) * 1e-3
        opt.step()  # state allocated
        setups[impl] = opt
    for _ in range(repeats):
        for impl, opt in setups.items():
            t0 = Loop.clock()
            for _ in range(steps):
                opt.step()
            times[impl].append((Loop.clock() - t0) / steps * 1e6)
    return {k: statistics.median(v) for k, v in times.items()}


def compare(arms: dict, rounds: int) -> dict[str, list[float]]:
    rounds_of({k: (lambda f=f: f()) for k, f in arms.items()}, 1)  # warm-up
    return rounds_of(arms, rounds)


def torch_model(model: str, args, tmp: str) -> dict:
    steps = args.steps or STEPS[model] * args.scale
    cfg = config_for(model, steps, args.threads, tmp)
    dataset = _load_data(cfg)
    task = get_task(registry.get_model(model).task)
    tuned = Loop(cfg, dataset, task, impl="for_loop")
    print(f"\n== {model} ({cfg.model.name} on {cfg.data.name}, batch {cfg.data.batch_size}, {steps} steps, "
          f"{cfg.train.optimizer}, clip {cfg.train.grad_clip})")

    us = optimizer_impls(tuned)
    best = min(us, key=us.get)
    print("   optimizer.step(): " + ", ".join(f"{k} {v:,.0f} us" for k, v in us.items())
          + f"  -> {best} (x{us['for_loop'] / us[best]:.2f} over for_loop)")
    tuned.impl = best

    short = max(10, steps // 2)
    bf16 = Loop(cfg, dataset, task, impl=best, precision="bf16")
    got = compare({"fp32": lambda: tuned.run(short), "bf16": lambda: bf16.run(short)}, max(3, args.rounds // 2))
    r, r1, r3 = paired(got["bf16"], got["fp32"])
    print(f"   bf16 autocast / fp32: x{r:.3f} (IQR {r1:.3f}-{r3:.3f}); last loss fp32 {tuned.loss:.4f}, "
          f"bf16 {bf16.loss:.4f}  -> {'bf16' if r > 1.03 else 'fp32'}")
    if r > 1.03:
        tuned.amp = True

    compile_note = "not measured (--compile)"
    if args.compile:
        compiled = Loop(cfg, dataset, task, impl=best, precision="bf16" if tuned.amp else "fp32", compiled=True)
        try:
            t0 = time.perf_counter()
            compiled.run(2)
            first = time.perf_counter() - t0
            got = compare({"eager": lambda: tuned.run(), "compiled": lambda: compiled.run()}, 3)
            eager_sps, comp_sps = statistics.median(got["eager"]), statistics.median(got["compiled"])
            per_step_gain = cfg.data.batch_size * (1 / eager_sps - 1 / comp_sps)  # seconds saved per step
            total = steps * (args.rounds + 1) * 2  # the steps of the tuned and control arms
            repaid = per_step_gain * total > first
            compile_note = (f"compile {first:.1f} s, steady x{comp_sps / eager_sps:.3f}; repaid after "
                            + (f"{first / per_step_gain:,.0f} steps" if per_step_gain > 0 else "never")
                            + f" (benchmark: {total} steps) -> {'compiled' if repaid else 'eager'}")
            if repaid:
                tuned = compiled
        except Exception as e:  # no compiler, an inductor failure: the expert stays eager
            compile_note = f"failed ({type(e).__name__}: {str(e).splitlines()[0][:120]}) -> eager"
    print(f"   torch.compile: {compile_note}")

    minimal = Loop(cfg, dataset, task, impl=None, tuned=False)
    arms = {"airlab": lambda: airlab_arm(cfg), "tuned": tuned.run, "control": tuned.run, "minimal": minimal.run}
    got = compare(arms, args.rounds)
    med = {k: statistics.median(v) for k, v in got.items()}
    r, r1, r3 = paired(got["airlab"], got["tuned"])
    c, c1, c3 = paired(got["control"], got["tuned"])
    m, m1, m3 = paired(got["airlab"], got["minimal"])
    print(f"   samples/s: airlab {med['airlab']:,.0f}, tuned {med['tuned']:,.0f}, minimal {med['minimal']:,.0f}")
    print(f"   airlab/tuned {r:.3f} (IQR {r1:.3f}-{r3:.3f})   control {c:.3f} (IQR {c1:.3f}-{c3:.3f})   "
          f"airlab/minimal {m:.3f} (IQR {m1:.3f}-{m3:.3f})")
    for k, v in got.items():
        print(f"   {k:>8}: {', '.join(f'{x:,.0f}' for x in v)}")
    return {"cfg": cfg, "airlab": med["airlab"], "ratio": r, "control": c, "minimal": m}


def tensorflow_model(model: str, args, torch_result: dict | None, tmp: str) -> dict | None:
    try:
        from tuned_tf import tuned_tf_arms
    except ImportError:
        print("tensorflow: scripts/tuned_tf.py not ready")
        return None
    steps = args.steps or STEPS[model] * args.scale
    cfg = config_for(model, steps, args.threads, tmp)
    arms = tuned_tf_arms(model, cfg, steps, args.threads)
    arms["control"] = arms["tuned"]
    clock, loop_module.time = loop_module.time, time  # TensorFlow's arms: the wall clock (its threads)
    try:
        got = compare(arms, args.rounds)
    finally:
        loop_module.time = clock
    r, r1, r3 = paired(got["airlab"], got["tuned"])
    c, c1, c3 = paired(got["control"], got["tuned"])
    a = statistics.median(got["airlab"])
    line = f"   tensorflow: airlab {a:,.0f} samples/s, tuned {statistics.median(got['tuned']):,.0f}, " \
           f"airlab/tuned {r:.3f} (IQR {r1:.3f}-{r3:.3f}), control {c:.3f} (IQR {c1:.3f}-{c3:.3f})"
    if torch_result is not None:
        line += f", TensorFlow/torch {a / torch_result['airlab']:.3f}"
    print(line)
    return {"airlab": a, "ratio": r}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backend", choices=("torch", "tensorflow", "both"), default="both")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--rounds", type=int, default=8,
                    help="rounds of every arm (8: each of the four torch arms runs in each position twice)")
    ap.add_argument("--steps", type=int, default=None, help="steps per arm (default: per model, about 1 s each)")
    ap.add_argument("--scale", type=int, default=1,
                    help="arms of K times the default steps: TensorFlow's first step (tracing, 0.1-1 s) weighs "
                         "on ~1 s arms; longer arms measure the rate a long run trains at")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads (default: the framework's own choice)")
    ap.add_argument("--compile", action="store_true", help="also measure torch.compile (slow: minutes per model)")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="cpu: time the torch arms by this thread's CPU time (needs --threads 1)")
    args = ap.parse_args()
    if args.clock == "cpu":
        if args.threads != 1:
            ap.error("--clock cpu needs --threads 1 (CPU time of one thread is the whole work only then)")
        loop_module.time = _ThreadClock()
        Loop.clock = staticmethod(time.thread_time)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, cpu capability "
          f"{torch.backends.cpu.get_cpu_capability()}, {args.rounds} rounds, {args.clock} clock")
    summary = []
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models.split(","):
            t = torch_model(model, args, tmp) if args.backend in ("torch", "both") else None
            tf = (tensorflow_model(model, args, t if args.clock == "wall" else None, tmp)
                  if args.backend in ("tensorflow", "both") else None)
            summary.append((model, t, tf))
    print(f"\n{'model':12} {'airlab/tuned':>12} {'control':>8} {'airlab/minimal':>14} {'TF airlab/tuned':>16} "
          f"{'TF/torch':>9}")
    for model, t, tf in summary:
        cells = [f"{t['ratio']:.3f}" if t else "-", f"{t['control']:.3f}" if t else "-",
                 f"{t['minimal']:.3f}" if t else "-", f"{tf['ratio']:.3f}" if tf else "-",
                 f"{tf['airlab'] / t['airlab']:.3f}" if t and tf and args.clock == "wall" else "-"]
        print(f"{model:12} {cells[0]:>12} {cells[1]:>8} {cells[2]:>14} {cells[3]:>16} {cells[4]:>9}")


if __name__ == "__main__":
    main()
