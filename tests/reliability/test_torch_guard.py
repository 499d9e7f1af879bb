"""The torch backend's non-finite guard, at the level of one train_step.

The guard reduces every gradient with a sum (the cheapest full reduction) or reuses the norm
that clipping computes; these tests put NaN and opposite infinities into gradients and check the
step is refused with the weights and the optimizer state untouched.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from airlab.backends.base import NonFiniteStep  # noqa: E402
from airlab.backends.torch.backend import TorchBackend  # noqa: E402
from airlab.config import validate  # noqa: E402
from airlab.data import load_dataset  # noqa: E402
from airlab.tasks import get_task  # noqa: E402


def backend(clip):
    cfg = validate({"name": "guard", "seed": 0, "device": "cpu",
                    "model": {"name": "mlp", "hidden": [8, 8]},
                    "data": {"name": "shapes", "size": 200, "batch_size": 16},
                    "train": {"steps": 4, "optimizer": "adam", "grad_clip": clip}})
    dataset = load_dataset("shapes", val_fraction=0.1, seed=0, size=200)
    return TorchBackend(cfg, dataset, get_task("classification"))


def poison(be, values: dict[int, float]):
    """Hooks that write values into the gradients of the parameters at the given positions."""
    params = list(be.model.parameters())
    handles = []
    for i, v in values.items():
        def hook(g, v=v):
            g = g.clone()
            g.view(-1)[0] = v
            return g
        handles.append(params[i].register_hook(hook))
    return handles


@pytest.mark.parametrize("clip", [None, 1.0])
@pytest.mark.parametrize("values", [{0: float("nan")}, {0: float("inf"), 2: float("-inf")}, {5: float("-inf")}],
                         ids=["nan", "opposite-infinities", "last-bias"])
def test_a_poisoned_gradient_refuses_the_step_and_keeps_everything(clip, values):
    be = backend(clip)
    index = np.arange(16)
    be.train_step(index, 1e-3, step=1)  # a good step first, so the optimizer has state
    weights = {k: v.clone() for k, v in be.model.state_dict().items()}
    opt_state = {k: {n: t.clone() for n, t in s.items() if torch.is_tensor(t)} for k, s in be.optimizer.state.items()}
    handles = poison(be, values)
    with pytest.raises(NonFiniteStep) as info:
        be.train_step(index, 1e-3, step=2)
    for h in handles:
        h.remove()
    assert info.value.step == 2
    assert not np.isfinite(info.value.grad_norm)
    for k, v in be.model.state_dict().items():
        assert torch.equal(v, weights[k]), k
    for k, s in be.optimizer.state.items():
        for n, t in opt_state[k].items():
            assert torch.equal(s[n], t), n
    assert all(p.grad is None for p in be.model.parameters())
    be.train_step(index, 1e-3, step=2)  # and training goes on from there
    assert any(not torch.equal(v, weights[k]) for k, v in be.model.state_dict().items())


def test_finite_gradients_pass():
    be = backend(None)
    for step in range(1, 4):
        be.train_step(np.arange(16) + step, 1e-3, step=step)
    assert np.isfinite(be.pop_train_metrics()["loss"])
