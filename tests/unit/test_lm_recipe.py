"""The Transformer LM's recipe switches (airlab.specs.transformer) and the reference of
scripts/lm_recipe.py: each does what it says (torch only: fast)."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from airlab.backends.torch.models.transformer import build  # noqa: E402
from airlab.specs.base import DataInfo  # noqa: E402
from airlab.specs.transformer import TransformerSpec  # noqa: E402

INFO = DataInfo(input_shape=(), vocab_size=65)
ROOT = Path(__file__).resolve().parents[2]


def _script():
    spec = importlib.util.spec_from_file_location("lm_recipe", ROOT / "scripts" / "lm_recipe.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("lm_recipe", module)  # (dataclasses look their module up there)
    spec.loader.exec_module(module)
    return module


def test_tied_head_shares_the_token_tables_storage():
    torch.manual_seed(0)
    m = build(TransformerSpec(n_layer=1, n_embd=32, n_head=2, context_length=8), INFO)
    assert m.lm_head.weight.data_ptr() == m.transformer.wte.weight.data_ptr()
    assert sum(p.numel() for p in m.parameters()) == TransformerSpec(n_layer=1, n_embd=32, n_head=2,
                                                                       context_length=8).num_params(INFO)


def test_untied_head_is_a_weight_of_its_own_counted_once_more():
    torch.manual_seed(0)
    spec = TransformerSpec(n_layer=1, n_embd=32, n_head=2, context_length=8, tie_weights=False)
    m = build(spec, INFO)
    assert m.lm_head.weight.data_ptr() != m.transformer.wte.weight.data_ptr()
    assert not torch.equal(m.lm_head.weight, m.transformer.wte.weight)
    n = sum(p.numel() for p in m.parameters())
    assert n == spec.num_params(INFO) == spec.model_copy(update={"tie_weights": True}).num_params(INFO) + 65 * 32
    assert abs(m.lm_head.weight.std().item() - 0.02) < 0.002  # normal(0, 0.02) like the table


def test_residual_projections_start_scaled_by_depth():
    torch.manual_seed(0)
    spec = TransformerSpec(n_layer=8, n_embd=128, n_head=4, context_length=8)
    m = build(spec, INFO)
    want = 0.02 / math.sqrt(2 * 8)
    for name, p in m.named_parameters():
        if name.endswith("c_proj.weight"):
            assert abs(p.std().item() - want) < 0.1 * want, name
        elif name.endswith("c_fc.weight") or name.endswith("c_attn.weight"):
            assert abs(p.std().item() - 0.02) < 0.002, name


@pytest.mark.parametrize("tie", [True, False])
def test_the_reference_model_is_airlabs_function(tie):
    """scripts/lm_recipe.py scores the reference by loading its weights into airlab's model: the
    layouts match and so do the logits."""
    s = _script()
    r = s.Recipe(n_layer=2, n_head=2, n_embd=32, context=16, tie=tie)
    torch.manual_seed(0)
    ref = s._gpt(r, 65)
    ours = build(TransformerSpec(n_layer=2, n_head=2, n_embd=32, context_length=16, tie_weights=tie), INFO)
    result = ours.load_state_dict(ref.state_dict(), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    idx = torch.randint(0, 65, (2, 16))
    ref.eval(), ours.eval()
    with torch.no_grad():
        torch.testing.assert_close(ours(idx), ref(idx), rtol=0, atol=1e-5)


def test_the_reference_schedule():
    s = _script()
    r = s.Recipe()
    assert s.reference_lr(0, r, 2000) == pytest.approx(1e-3 / 101)
    assert s.reference_lr(99, r, 2000) == pytest.approx(1e-3 * 100 / 101)
    assert s.reference_lr(100, r, 2000) == pytest.approx(1e-3)
    assert s.reference_lr(1050, r, 2000) == pytest.approx((1e-3 + 1e-4) / 2)
    assert s.reference_lr(2000, r, 2000) == pytest.approx(1e-4)
