"""The tests' PyTorch adapter (see adapters/__init__.py)."""

from __future__ import annotations

import contextlib

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_model, save_model

from adapters import Adapter
from airlab.registry import builder


class TorchAdapter(Adapter):
    name = "torch"
    checkpoint_files = frozenset({"model.safetensors", "optimizer.pt", "rng.safetensors", "trainer.json"})
    resumed_files = ("model.safetensors", "optimizer.pt", "rng.safetensors")
    rng_state = "torch_cpu"

    @contextlib.contextmanager
    def numerics(self):
        before = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(before)

    def versions(self):
        return {"name": "torch", "torch": torch.__version__}

    def build(self, model, spec, info, seed=0):
        torch.manual_seed(seed)
        return builder(model, "torch")(spec, info)

    def count_params(self, model):
        return sum(p.numel() for p in model.parameters())

    def weights(self, model):
        return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}

    def save(self, model, path):
        save_model(model, str(path))

    def load(self, model, path):
        missing, unexpected = load_model(model, str(path))
        assert not missing and not unexpected, (missing, unexpected)

    def tensor(self, array):
        return torch.from_numpy(array.astype(np.int64) if array.dtype.kind in "iu" else array)

    def forward(self, model, x, *, training, seed=None):
        model.train(training)
        if seed is not None:
            torch.manual_seed(seed)
        with torch.set_grad_enabled(training):
            return model(x)

    def arrays(self, out):
        return tuple(t.detach().numpy() for t in (out if isinstance(out, tuple) else (out,)))

    def cross_entropy(self, logits, labels):
        return F.cross_entropy(logits.flatten(0, -2), labels.flatten())

    def bce_with_logits(self, logits, targets):
        return F.binary_cross_entropy_with_logits(logits, targets, reduction="none")

    sigmoid, exp, sum, mean = staticmethod(torch.sigmoid), staticmethod(torch.exp), staticmethod(torch.sum), \
        staticmethod(torch.mean)

    def adam_steps(self, model, x, loss_of, steps, lr=1e-3):
        model.train()
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        losses = []
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            loss = loss_of(model(x))
            losses.append(loss.item())
            loss.backward()
            opt.step()
        return losses


ADAPTER = TorchAdapter()
