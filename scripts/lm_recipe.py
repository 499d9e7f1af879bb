"""The char LM's recipe against the reference recipe, side by side, scored the same way.

The reference recipe (what the well-known minimal char-level GPT training script does on a CPU for
tiny shakespeare, restated here):

    model     a GPT of 4 layers, 4 heads, 128 wide, context 64; learned position embeddings;
              pre-LayerNorm blocks (causal self-attention, then an MLP 4x as wide with exact
              GELU); no biases in any Linear or LayerNorm; no dropout; the output head shares its
              weight with the token embedding.
    init      every Linear and Embedding weight normal(0, 0.02); the two residual output
              projections of each block normal(0, 0.02 / sqrt(2 * n_layer)); LayerNorm gains 1.
    optimizer AdamW, betas (0.9, 0.99), eps 1e-8, weight decay 0.1 on every tensor of rank >= 2
              (embeddings included; the tied matrix once), none on the LayerNorm gains; the
              gradient's global norm clipped to 1.0.
    schedule  peak lr 1e-3; linear warm-up lr * (it + 1) / (warmup + 1) over 100 iterations, then
              a half cosine from the peak down to 1e-4 at iteration 2000.
    data      batches of 12 windows, each start drawn uniformly at random from the training text
              afresh every iteration (with replacement, from the framework's global generator);
              fp32 on the CPU, no compilation.
    result    it publishes val 1.88 nats (a 20-batch estimate); on the whole validation split it
              lands at about 1.89-1.91 (issue #14).

Here that recipe is a small plain-PyTorch loop (`reference_run`; one thread). Its model uses the
same parameter names as airlab's torch GPT, so after training its weights are loaded into an
airlab torch backend built for evaluation and scored by that backend's `evaluate("val")`: the
same windows (every `context` tokens over the whole validation split), the same batches and the
same averaging as an airlab run's final val loss. A check that both models give the same logits
on one batch comes first. The reference does 2000 optimizer steps like airlab (the script it
restates runs one more, at the minimum lr, which changes nothing measurable).

airlab's arm is `airlab train CONFIG data.name=pycorpus seed=S train.steps=N train.threads=1`
in a subprocess (val loss from summary.json's `final.val.loss`), on each backend asked for.
Every (arm, seed) is its own process, `--jobs` at a time, one thread each.

    python scripts/lm_recipe.py --seeds 0,1,2 --backends torch,tensorflow --steps 2000 --jobs 2

Exploration: `--ref KEY=VALUE` runs a variant of the reference loop beside it (keys of
`Recipe`: lr, min_lr, warmup, betas2, wd, wd_embeddings, clip, tie, proj_scale, ...), and
`--set KEY=VALUE` passes overrides to airlab's arm (e.g. `--set train.lr=2e-3`).
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import dataclasses
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


@dataclasses.dataclass
class Recipe:
    """The reference recipe's numbers (defaults) and the knobs an exploration may turn."""

    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    context: int = 64
    batch: int = 12
    lr: float = 1e-3
    min_lr: float = 1e-4
    warmup: int = 100
    beta1: float = 0.9
    beta2: float = 0.99
    wd: float = 0.1
    wd_embeddings: bool = True  # decay the token and position tables too (rank >= 2)
    clip: float = 1.0
    tie: bool = True  # head weight = token embedding
    proj_scale: bool = True  # residual projections at 0.02 / sqrt(2 n_layer)


# -- the reference: a minimal GPT and its training loop ------------------------------------------


def _gpt(r: Recipe, vocab: int):
    import torch
    from torch import nn
    from torch.nn import functional as F

    class Attention(nn.Module):
        def __init__(self):
            super().__init__()
            self.c_attn = nn.Linear(r.n_embd, 3 * r.n_embd, bias=False)
            self.c_proj = nn.Linear(r.n_embd, r.n_embd, bias=False)

        def forward(self, x):
            B, T, C = x.shape
            q, k, v = (t.view(B, T, r.n_head, C // r.n_head).transpose(1, 2) for t in self.c_attn(x).split(C, dim=2))
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, nh, T, hs)
            return self.c_proj(y.transpose(1, 2).reshape(B, T, C))

    class Mlp(nn.Module):
        def __init__(self):
            super().__init__()
            self.c_fc = nn.Linear(r.n_embd, 4 * r.n_embd, bias=False)
            self.c_proj = nn.Linear(4 * r.n_embd, r.n_embd, bias=False)

        def forward(self, x):
            return self.c_proj(F.gelu(self.c_fc(x)))

    class Layer(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln_1 = nn.LayerNorm(r.n_embd, bias=False)
            self.attn = Attention()
            self.ln_2 = nn.LayerNorm(r.n_embd, bias=False)
            self.mlp = Mlp()

        def forward(self, x):
            x = x + self.attn(self.ln_1(x))
            return x + self.mlp(self.ln_2(x))

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.transformer = nn.ModuleDict(dict(
                wte=nn.Embedding(vocab, r.n_embd), wpe=nn.Embedding(r.context, r.n_embd),
                h=nn.ModuleList(Layer() for _ in range(r.n_layer)), ln_f=nn.LayerNorm(r.n_embd, bias=False)))
            self.lm_head = nn.Linear(r.n_embd, vocab, bias=False)
            if r.tie:
                self.lm_head.weight = self.transformer.wte.weight
            for name, p in self.named_parameters():
                if p.dim() >= 2:
                    std = 0.02 / math.sqrt(2 * r.n_layer) if (r.proj_scale and name.endswith("c_proj.weight")) else 0.02
                    nn.init.normal_(p, 0.0, std)

        def forward(self, idx):
            T = idx.shape[1]
            x = self.transformer.wte(idx) + self.transformer.wpe(torch.arange(T))
            for layer in self.transformer.h:
                x = layer(x)
            return self.lm_head(self.transformer.ln_f(x))  # (B, T, vocab)

    return Net()


def reference_lr(it: int, r: Recipe, steps: int) -> float:
    if it < r.warmup:
        return r.lr * (it + 1) / (r.warmup + 1)
    if it > steps:
        return r.min_lr
    ratio = (it - r.warmup) / (steps - r.warmup)
    return r.min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (r.lr - r.min_lr)


def _score_config(r: Recipe, seed: int, steps: int):
    """An airlab config of the reference's model, for the evaluation backend (fp32)."""
    from airlab.config.load import load_config

    over = [f"seed={seed}", "data.name=pycorpus", f"train.steps={steps}", "train.precision=fp32",
            f"model.n_layer={r.n_layer}", f"model.n_head={r.n_head}", f"model.n_embd={r.n_embd}",
            f"model.context_length={r.context}", f"data.batch_size={r.batch}", "model.dropout=0.0",
            "model.bias=false", "train.threads=1", "backend=torch"]
    cfg = load_config(ROOT / "configs" / "transformer.yaml", over)
    fields = type(cfg.model).model_fields
    extra = {k: v for k, v in (("tie_weights", r.tie), ("scaled_init", r.proj_scale)) if k in fields}
    if extra:
        cfg = cfg.model_copy(update={"model": cfg.model.model_copy(update=extra)})
    return cfg


def reference_run(r: Recipe, seed: int, steps: int) -> dict:
    """Train the reference recipe on pycorpus; val loss scored by airlab's evaluate."""
    import numpy as np
    import torch

    from airlab.backends import backend_class
    from airlab.data import load_dataset
    from airlab.tasks import get_task

    torch.set_num_threads(1)
    cfg = _score_config(r, seed, steps)
    d = cfg.data
    ds = load_dataset(d.name, path=d.path, val_fraction=d.val_fraction, seed=cfg.seed, size=d.size, limit=d.limit,
                      options=d)
    train = torch.from_numpy(np.asarray(ds.train.x).astype(np.int64))
    torch.manual_seed(seed)
    model = _gpt(r, ds.info.vocab_size)
    params = [p for p in model.parameters()]
    emb = {id(model.transformer.wte.weight), id(model.transformer.wpe.weight)}
    decay = [p for p in params if p.dim() >= 2 and (r.wd_embeddings or id(p) not in emb)]
    rest = [p for p in params if all(p is not q for q in decay)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": r.wd}, {"params": rest, "weight_decay": 0.0}],
                            lr=r.lr, betas=(r.beta1, r.beta2))
    offsets = torch.arange(r.context + 1)
    t0 = time.perf_counter()
    model.train()
    for it in range(steps):
        for g in opt.param_groups:
            g["lr"] = reference_lr(it, r, steps)
        starts = torch.randint(len(train) - r.context, (r.batch,))
        w = train[starts[:, None] + offsets]  # (B, T + 1)
        logits = model(w[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), w[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if r.clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), r.clip)
        opt.step()
    train_s = time.perf_counter() - t0

    scorer = backend_class("torch")(cfg, ds, get_task("lm"), training=False)
    missing = scorer.model.load_state_dict(model.state_dict(), strict=False)
    if missing.missing_keys or missing.unexpected_keys:
        raise SystemExit(f"reference and airlab layouts differ: {missing}")
    model.eval()
    scorer.model.eval()
    with torch.no_grad():
        probe = torch.from_numpy(np.asarray(ds.val.x)[: r.context].astype(np.int64))[None]
        diff = (model(probe) - scorer.model(probe)).abs().max().item()
    if diff > 1e-4:
        raise SystemExit(f"reference and airlab models differ on one batch (max |logit diff| {diff:.2e})")
    return {"val": scorer.evaluate("val")["loss"], "train_s": round(train_s, 1)}


# -- airlab's arm ------------------------------------------------------------------------------


def airlab_run(config: str, backend: str, seed: int, steps: int, sets: list[str]) -> dict:
    with tempfile.TemporaryDirectory(prefix="lm_recipe-") as tmp:
        run_dir = Path(tmp) / "run"
        cmd = [sys.executable, "-m", "airlab", "train", config, "data.name=pycorpus", f"seed={seed}",
               f"backend={backend}", f"train.steps={steps}", "train.threads=1", "train.checkpoint_every=100000",
               f"train.eval_every={steps}", *sets, "--run-dir", str(run_dir)]
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr.strip()[-400:]}")
        s = json.loads((run_dir / "summary.json").read_text())
        return {"val": s["final"]["val"]["loss"], "train_s": round(s["train_time_s"], 1)}


def _child(argv: list[str]) -> None:
    """`--child JSON`: one reference run in this process; prints one JSON line."""
    job = json.loads(argv[0])
    print(json.dumps(reference_run(Recipe(**job["recipe"]), job["seed"], job["steps"])))


def reference_job(r: Recipe, seed: int, steps: int) -> dict:
    job = json.dumps({"recipe": dataclasses.asdict(r), "seed": seed, "steps": steps})
    proc = subprocess.run([sys.executable, __file__, "--child", job], cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"reference seed {seed} exited {proc.returncode}: {proc.stderr.strip()[-400:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _parse_kv(items: list[str]) -> dict:
    out = {}
    fields = {f.name: f.type for f in dataclasses.fields(Recipe)}
    for item in items:
        key, _, value = item.partition("=")
        if key not in fields:
            raise SystemExit(f"--ref {item}: {key!r} is not a Recipe field ({', '.join(fields)})")
        kind = fields[key]
        out[key] = (value.lower() in ("1", "true", "yes")) if kind in ("bool", bool) else (
            int(value) if kind in ("int", int) else float(value))
    return out


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _child(sys.argv[2:])
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--backends", default="torch", help="airlab's backends, comma-separated ('' for none)")
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--config", default="configs/transformer.yaml")
    ap.add_argument("--jobs", type=int, default=2, help="runs at once (one thread each)")
    ap.add_argument("--no-reference", action="store_true", help="skip the reference arm")
    ap.add_argument("--ref", action="append", default=[], metavar="KEY=VALUE",
                    help="also run a variant of the reference loop with these Recipe fields")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="overrides for airlab's arm")
    ap.add_argument("--json", help="write the table's figures to this file")
    a = ap.parse_args()
    seeds = [int(s) for s in a.seeds.split(",") if s]
    base = Recipe()
    arms: dict[str, callable] = {}
    if not a.no_reference:
        arms["reference"] = lambda s: reference_job(base, s, a.steps)
    if a.ref:
        variant = dataclasses.replace(base, **_parse_kv(a.ref))
        arms["ref[" + ",".join(a.ref) + "]"] = lambda s: reference_job(variant, s, a.steps)
    for b in [b for b in a.backends.split(",") if b]:
        arms[f"airlab-{b}" + (f"[{','.join(a.set)}]" if a.set else "")] = (
            lambda s, b=b: airlab_run(a.config, b, s, a.steps, a.set))

    t0 = time.time()
    results: dict[str, dict[int, dict]] = {name: {} for name in arms}
    with cf.ThreadPoolExecutor(max_workers=a.jobs) as pool:  # seeds rotate across arms: load hits all alike
        futs = {pool.submit(fn, s): (name, s) for s in seeds for name, fn in arms.items()}
        for fut in cf.as_completed(futs):
            name, s = futs[fut]
            try:
                results[name][s] = fut.result()
            except RuntimeError as e:  # one failed run is reported; the others go on
                print(f"  {name} seed {s}: FAILED {e}", flush=True)
                results[name][s] = {"val": float("nan"), "train_s": float("nan")}
            print(f"  {name} seed {s}: val {results[name][s]['val']:.4f} ({results[name][s]['train_s']} s training)",
                  flush=True)
    print(f"\nval loss (nats/char, whole pycorpus val split), {a.steps} steps, {time.time() - t0:.0f} s in all")
    w = max(len(n) for n in arms)
    print(f"{'arm':<{w}}  " + "  ".join(f"seed {s:<3}" for s in seeds) + "    mean   train s/run")
    for name in arms:
        vals = [results[name][s]["val"] for s in seeds]
        secs = statistics.median(results[name][s]["train_s"] for s in seeds)
        print(f"{name:<{w}}  " + "  ".join(f"{v:8.4f}" for v in vals) + f"  {statistics.fmean(vals):.4f}   {secs:.0f}")
    if a.json:
        Path(a.json).write_text(json.dumps({"steps": a.steps, "seeds": seeds, "results": results}, indent=1))


if __name__ == "__main__":
    main()
