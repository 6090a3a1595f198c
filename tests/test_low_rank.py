"""engine.techniques.low_rank: SVD factorisation of one layer (fast) and of the real embedded
model, checked by counting its parameters and comparing its logits (``slow``)."""
from __future__ import annotations

import copy

import pytest
import torch

from engine.core.errors import SpecError
from engine.techniques import low_rank
from engine.techniques.low_rank import LowRank, LowRankLinear, factorise, rank_for


def test_full_rank_factorisation_reproduces_the_layer() -> None:
    torch.manual_seed(0)
    lin = torch.nn.Linear(12, 20)
    lr, energy = factorise(lin, 12)
    x = torch.randn(3, 12)
    assert isinstance(lr, LowRankLinear) and lr.rank == 12 and energy == pytest.approx(1.0)
    torch.testing.assert_close(lr(x), lin(x), atol=1e-5, rtol=1e-5)


def test_truncation_keeps_the_top_singular_directions() -> None:
    torch.manual_seed(0)
    lin = torch.nn.Linear(16, 16, bias=False).requires_grad_(False)
    s = torch.linalg.svdvals(lin.weight)
    lr, energy = factorise(lin, 4)
    assert energy == pytest.approx(float((s[:4] ** 2).sum() / (s ** 2).sum()), rel=1e-6)
    w = lr.up.weight @ lr.down.weight  # the best rank-4 approximation (Eckart-Young)
    err = torch.linalg.matrix_norm(w.detach() - lin.weight)
    assert float(err) == pytest.approx(float(s[4:].pow(2).sum().sqrt()), rel=1e-4)


def test_rank_choice_describe_and_check() -> None:
    assert rank_for(LowRank(rank_fraction=0.5), 576, 1536) == 288
    assert rank_for(LowRank(rank=1000), 576, 192) == 192  # clamped to full rank
    assert low_rank.describe(LowRank()) == "low-rank SVD r=50% (mlp)"
    assert low_rank.describe(LowRank(rank=64, targets="all")) == "low-rank SVD r=64 (all)"
    low_rank.check(LowRank(rank=64), "cpu")
    with pytest.raises(SpecError, match="not both"):
        low_rank.check(LowRank(rank=64, rank_fraction=0.3), "cpu")


@pytest.fixture(scope="module")
def base(embedded_model_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(embedded_model_dir).eval()


def _params(model) -> int:
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


@pytest.mark.slow
@pytest.mark.parametrize("targets", ["mlp", "all"])
def test_parameter_count_read_back_matches_the_ranks(base, targets) -> None:
    model = copy.deepcopy(base)
    before = _params(model)
    rep = low_rank.apply(model, LowRank(rank_fraction=0.5, targets=targets))
    factorised = [m for m in model.modules() if isinstance(m, LowRankLinear)]
    assert len(factorised) == rep["layers_factorised"] == 30 * (3 if targets == "mlp" else 7)
    expected = before - sum(m.in_features * m.out_features for m in factorised) \
        + sum(m.rank * (m.in_features + m.out_features) for m in factorised)
    assert _params(model) == expected == rep["parameters_after"]
    assert rep["parameters_before"] == before
    gate = rep["projections"]["mlp.gate_proj"]
    assert gate["ranks"] == [288] and gate["break_even_rank"] == pytest.approx(418.9, abs=0.1)
    assert gate["saves_parameters"] and 0 < rep["energy_retained"] < 1
    assert rep["energy_retained_min"] <= rep["energy_retained"]
    if targets == "all":  # k/v_proj are 576 -> 192: rank 96 of 192, break-even 144
        assert rep["projections"]["self_attn.k_proj"]["ranks"] == [96]


@pytest.mark.slow
def test_full_rank_model_matches_the_original_logits(base) -> None:
    model = copy.deepcopy(base)
    rep = low_rank.apply(model, LowRank(rank_fraction=1.0, targets="all"))
    assert rep["energy_retained"] == pytest.approx(1.0)
    assert "MORE parameters" in rep["note"]  # full rank is above break-even everywhere
    ids = torch.tensor([[1, 504, 3458, 282, 4649, 314, 5165, 47, 2]])
    with torch.no_grad():
        want, got = base(input_ids=ids).logits, model(input_ids=ids).logits
    torch.testing.assert_close(got, want, atol=1e-3, rtol=0)
