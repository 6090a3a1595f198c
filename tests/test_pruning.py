"""engine.techniques.pruning: masks and check() refusals on small tensors (fast), and the
real embedded model pruned by magnitude, 2:4 and Wanda, iteratively with recovery, and
through a mini pilot (``slow``)."""
from __future__ import annotations

import copy

import pytest
import torch

from engine.core.errors import SpecError
from engine.techniques import pruning
from engine.techniques.base import TechniqueContext
from engine.techniques.calibration import target_linears
from engine.techniques.pruning import Prune, prune_mask

CALIBRATION = [[{"role": "user", "content": "What is the capital of France?"}],
               [{"role": "system", "content": "You are a support agent for a shoe shop."},
                {"role": "user", "content": "How long do refunds take?"}]]


# --- fast: masks and refusals ------------------------------------------------------------

def test_masks_drop_exactly_the_lowest_scores() -> None:
    w = torch.randn(8, 16)
    keep = prune_mask(w, 0.25, "tensor")
    assert (~keep).sum() == 32 and w.abs()[~keep].max() <= w.abs()[keep].min()
    keep = prune_mask(w, 0.5, "row")
    assert ((~keep).sum(dim=1) == 8).all()
    keep = prune_mask(w, 0.5, "n:4").view(8, 4, 4)
    assert (keep.sum(dim=-1) == 2).all()
    groups = w.abs().view(8, 4, 4)
    kept_min = groups.masked_fill(~keep, float("inf")).amin(-1)
    dropped_max = groups.masked_fill(keep, -1.0).amax(-1)
    assert (kept_min >= dropped_max).all()  # in every group of 4 the 2 largest stay


def test_activation_norms_change_the_row_mask() -> None:
    w = torch.ones(2, 4)
    norms = torch.tensor([4.0, 3.0, 2.0, 1.0])  # Wanda: quiet input channels go first
    assert prune_mask(w, 0.5, "row", norms).tolist() == [[True, True, False, False]] * 2


@pytest.mark.parametrize("spec, needle", [
    (Prune(method="2:4", sparsity=0.3), "always 0.5"),
    (Prune(method="magnitude", score="wanda"), "method='wanda'"),
    (Prune(iterations=3), "recovery_steps"),
    (Prune(method="wanda", semi_structured=True), "2:4"),
    (Prune(method="2:4", semi_structured=True), "CUDA"),
])
def test_check_refuses_what_cannot_run(spec: Prune, needle: str) -> None:
    with pytest.raises(SpecError, match=needle):
        pruning.check(spec, "cpu")


def test_check_accepts_sensible_specs_and_describe_names_them() -> None:
    for spec in (Prune(), Prune(method="2:4", score="wanda"),
                 Prune(method="wanda", iterations=2, recovery_steps=2)):
        pruning.check(spec, "cpu")
    assert pruning.describe(Prune(method="wanda", sparsity=0.3)) == "prune 30% wanda (all)"
    assert pruning.describe(Prune(method="2:4", score="wanda")) == "prune 2:4 wanda (all)"


def test_wanda_without_calibration_says_how_to_fix() -> None:
    model = torch.nn.ModuleDict({"layer": torch.nn.ModuleDict({"mlp": torch.nn.ModuleDict(
        {"up_proj": torch.nn.Linear(4, 4)})})})  # named like a decoder: layer.mlp.up_proj
    with pytest.raises(SpecError, match="calibration requests"):
        pruning.apply(model, Prune(method="wanda"), TechniqueContext("cpu", "x", None))


# --- slow: the real embedded model ----------------------------------------------------------

@pytest.fixture(scope="module")
def loaded(embedded_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(embedded_model_dir)
    model = AutoModelForCausalLM.from_pretrained(embedded_model_dir).eval()
    ctx = TechniqueContext("cpu", str(embedded_model_dir), tok, calibration=CALIBRATION,
                           calibration_is_eval_set=True)
    return model, ctx


def _weights_zero_fraction(model, targets="all") -> float:
    layers = target_linears(model, targets).values()
    numel = sum(m.weight.numel() for m in layers)
    return 1 - sum(int(torch.count_nonzero(m.weight)) for m in layers) / numel


@pytest.mark.slow
@pytest.mark.parametrize("method, sparsity", [("magnitude", 0.3), ("wanda", 0.5)])
def test_unstructured_sparsity_read_back_matches_target(loaded, method, sparsity) -> None:
    base, ctx = loaded
    model = copy.deepcopy(base)
    rep = pruning.apply(model, Prune(method=method, sparsity=sparsity), ctx)
    measured = _weights_zero_fraction(model)
    assert measured == pytest.approx(sparsity, abs=1e-3)  # a few weights were zero already
    assert rep["sparsity_targeted"] == pytest.approx(measured, abs=1e-6)
    assert rep["layers_pruned"] == 30 * 7
    assert torch.equal(model.lm_head.weight, base.lm_head.weight)  # (tied embedding) untouched
    assert rep["nonzero_parameters"] == sum(int(p.count_nonzero()) for p in model.parameters())
    assert 0.3 * sparsity < rep["sparsity_all"] < sparsity  # embeddings are not pruned
    assert "same FLOPs" in rep["speed_note"] and rep["semi_structured"]["ran"] is False
    if method == "wanda":
        assert rep["calibration_samples"] == 2 and rep["calibration_is_eval_set"] is True
        assert rep["wanda"]["activation_tokens"] > 20
        # Wanda's mask differs from plain magnitude pruning at the same level
        ref = copy.deepcopy(base)
        pruning.apply(ref, Prune(method="magnitude", sparsity=sparsity), ctx)
        a = model.model.layers[3].mlp.down_proj.weight == 0
        b = ref.model.layers[3].mlp.down_proj.weight == 0
        assert (a != b).float().mean() > 0.05
    else:
        assert rep["calibration_samples"] == 0 and "wanda" not in rep


@pytest.mark.slow
def test_two_four_pattern_holds_in_every_group(loaded) -> None:
    base, ctx = loaded
    model = copy.deepcopy(base)
    rep = pruning.apply(model, Prune(method="2:4", score="wanda", targets="mlp"), ctx)
    for lin in target_linears(model, "mlp").values():
        nonzero = (lin.weight != 0).view(lin.out_features, -1, 4).sum(dim=-1)
        assert (nonzero <= 2).all()
    assert rep["pattern"] == "n:4" and rep["score"] == "wanda" and rep["layers_pruned"] == 90
    assert rep["sparsity_targeted"] == pytest.approx(0.5, abs=1e-3)
    assert _weights_zero_fraction(model, "attention") < 0.01  # not targeted
    assert "CPU" in rep["semi_structured"]["reason"]


@pytest.mark.slow
def test_iterative_recovery_keeps_masks_and_reports_losses(loaded) -> None:
    base, ctx = loaded
    model = copy.deepcopy(base)
    spec = Prune(method="magnitude", sparsity=0.4, iterations=2, recovery_steps=2,
                 learning_rate=1e-4, targets="mlp")
    rep = pruning.apply(model, spec, ctx)
    assert [r["target_sparsity"] for r in rep["rounds"]] == [0.2, 0.4]
    for r, target in zip(rep["rounds"], (0.2, 0.4), strict=True):
        assert r["sparsity"] == pytest.approx(target, abs=1e-3)  # after fine-tuning
        assert r["loss_before"] > 0 and r["loss_after"] > 0
    assert _weights_zero_fraction(model, "mlp") == pytest.approx(0.4, abs=1e-3)
    rec = rep["recovery"]
    assert rec["dense_loss"] < rec["loss_before"]  # pruning hurt the dense model's answers
    assert rec["loss_after"] < rec["loss_before"]  # and fine-tuning won some of it back
    assert rec["answer_tokens"] > 0
    assert all(p.grad is None for p in model.parameters())
    # the weights that survived did move: recovery trained them
    mask = base.model.layers[0].mlp.up_proj.weight != 0
    moved = model.model.layers[0].mlp.up_proj.weight != base.model.layers[0].mlp.up_proj.weight
    assert (moved & mask).any()


@pytest.mark.slow
def test_mini_pilot_with_pruning_and_low_rank_variants(model_settings) -> None:
    from engine.ingest.logs import parse_log
    from engine.pilot.runner import run_pilot
    from engine.specs.pilot import GenerationSettings, PilotSpec, VariantSpec
    from engine.store.store import Store
    from engine.techniques.low_rank import LowRank

    store = Store(model_settings.resolved_db_url())
    raw = (b'{"prompt": "What is the capital of France?", "reference": "Paris"}\n'
           b'{"prompt": "Say hello.", "reference": "Hello"}\n')
    workload = store.add_workload("two", "two.jsonl", raw, parse_log(raw, "two.jsonl"))
    spec = PilotSpec(workload_id=workload.id, generation=GenerationSettings(max_new_tokens=8),
                     variants=(VariantSpec(name="baseline"),
                               VariantSpec(name="prune-0.3", techniques=(
                                   Prune(method="magnitude", sparsity=0.3),)),
                               VariantSpec(name="low-rank-0.9", techniques=(
                                   LowRank(rank_fraction=0.9),))))
    run = run_pilot(spec, store, model_settings)
    assert [v.status for v in run.variants] == ["done", "done", "done"], [v.error for v in run.variants]
    prune_rep = run.variants[1].technique_report["prune"]
    assert prune_rep["sparsity_targeted"] == pytest.approx(0.3, abs=1e-3)
    assert run.variants[1].technique_report["_model"]["nonzero_parameters"] == \
        prune_rep["nonzero_parameters"]
    lr_rep = run.variants[2].technique_report["low_rank"]
    assert lr_rep["parameters_after"] == run.variants[2].technique_report["_model"]["parameters"]
    assert all(len(store.get_results(v.id)) == 2 for v in run.variants)
