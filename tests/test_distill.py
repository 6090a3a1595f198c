"""engine.techniques.distill: layer selection and refusals on a tiny random Llama (fast), and
the real embedded model distilled into a depth-pruned student, full and LoRA (``slow``).
The pilot with a distilled variant is in test_qat.py (one pilot serves both techniques)."""
from __future__ import annotations

import pytest
import torch

from engine.core.errors import SpecError
from engine.techniques import distill
from engine.techniques.base import TechniqueContext
from engine.techniques.distill import Distill, LoRALinear, uniform_layers

CALIBRATION = [[{"role": "user", "content": "What is the capital of France?"}],
               [{"role": "system", "content": "You are a support agent for a shoe shop."},
                {"role": "user", "content": "How long do refunds take?"}]]


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: on the shared, oversubscribed 2-core box two OpenMP threads made
    generation 3-20x and a training step 6x slower than one (measured under load ~10)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_llama(layers: int = 6):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=256, hidden_size=32, intermediate_size=64,
                      num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                      tie_word_embeddings=True, eos_token_id=2, pad_token_id=2, bos_token_id=1)
    return LlamaForCausalLM(cfg).eval()


def load(model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return (AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval(),
            AutoTokenizer.from_pretrained(model_dir))


# --- fast ------------------------------------------------------------------------------------

def test_uniform_selection_spreads_layers_and_keeps_both_ends() -> None:
    assert uniform_layers(30, 20) == [0, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18, 20, 21, 23,
                                      24, 26, 27, 29]
    for keep in range(1, 30):
        got = uniform_layers(30, keep)
        assert len(set(got)) == keep and got == sorted(got) and got[0] == 0
        assert keep == 1 or got[-1] == 29


def test_dropping_layers_renumbers_the_cache_slots_and_still_generates() -> None:
    model = tiny_llama(6)
    distill.drop_layers(model, [0, 3, 5])
    assert model.config.num_hidden_layers == 3
    assert [layer.self_attn.layer_idx for layer in model.model.layers] == [0, 1, 2]
    out = model.generate(torch.tensor([[1, 5, 7]]), max_new_tokens=4, do_sample=False,
                         pad_token_id=2)
    assert out.shape == (1, 7)


def test_a_merged_lora_adapter_computes_what_the_wrapper_did() -> None:
    lin = torch.nn.Linear(16, 8, bias=False)
    lora = LoRALinear(lin, 4, torch.Generator().manual_seed(0))
    with torch.no_grad():
        lora.lora_b.normal_()
    x = torch.randn(3, 16)
    expected = lora(x).detach()
    merged = lora.merged()
    assert type(merged) is torch.nn.Linear
    torch.testing.assert_close(merged(x), expected, rtol=1e-5, atol=1e-5)


def test_refusals_say_how_to_fix_them() -> None:
    model = tiny_llama(4)
    ctx = TechniqueContext(device="cpu", model_path="tiny", tokenizer=None, calibration=[])
    with pytest.raises(SpecError, match="more requests than max_requests"):
        distill.apply(model, Distill(student_layers=2), ctx)
    ctx.calibration = CALIBRATION
    with pytest.raises(SpecError, match="fewer than the teacher's 4"):
        distill.apply(model, Distill(student_layers=4), ctx)
    with pytest.raises(ValueError, match="extra"):
        Distill(student_layer=3)


# --- slow: the real embedded model -----------------------------------------------------------

@pytest.mark.slow
def test_full_distillation_through_the_backend(embedded_model_dir) -> None:
    from engine.backends.transformers_backend import TransformersBackend
    from engine.specs.pilot import VariantSpec

    spec = Distill(student_layers=24, train_steps=8, learning_rate=1e-4, max_train_examples=2,
                   batch_size=2, teacher_max_new_tokens=12)
    vspec = VariantSpec(name="student", model=str(embedded_model_dir), device="cpu",
                        techniques=(spec,))
    backend = TransformersBackend(vspec, str(embedded_model_dir))
    try:
        info = backend.load(CALIBRATION, calibration_is_eval_set=False)
        rep = info.technique_report["distill"]
        model = backend.model
        per_layer = sum(p.numel() for p in model.model.layers[0].parameters())
        embed = model.get_input_embeddings().weight.numel()
        assert rep["teacher_parameters"] == 30 * per_layer + embed + model.config.hidden_size
        assert rep["student_parameters"] == rep["teacher_parameters"] - 6 * per_layer
        assert info.technique_report["_model"]["parameters"] == rep["student_parameters"]
        assert model.config.num_hidden_layers == rep["student_layers"] == 24
        assert [layer.self_attn.layer_idx for layer in model.model.layers] == list(range(24))
        assert rep["layers_kept"] == uniform_layers(30, 24)
        assert rep["train_examples"] == 2 and rep["calibration_is_eval_set"] is False
        assert "warning" not in rep and rep["teacher_generation_s"] > 0
        losses = rep["losses"]  # 2 examples, batch 2: the same batch at every step
        assert len(losses) == 8 and losses[-1] < 0.7 * losses[0], losses
        # Training's own memory: gradients + AdamW's two moments are 12 bytes per trained
        # fp32 parameter; more than 8 must show up above the loaded model.
        assert rep["train_mem_growth_bytes"] > 8 * rep["trained_parameters"], rep
        assert "RSS" in rep["train_mem_measure"]
        assert not any(p.requires_grad for p in model.parameters())
        gens = backend.generate([CALIBRATION[0]], max_new_tokens=8)
        assert gens[0].text and gens[0].output_tokens > 0
    finally:
        backend.close()


@pytest.mark.slow
def test_lora_distillation_merges_its_adapters(embedded_model_dir) -> None:
    model, tok = load(embedded_model_dir)
    before = [layer.mlp.down_proj.weight.clone() for layer in model.model.layers]
    ctx = TechniqueContext(device="cpu", model_path=str(embedded_model_dir), tokenizer=tok,
                           calibration=CALIBRATION, calibration_is_eval_set=True)
    spec = Distill(student_layers=28, layer_selection="importance", method="lora",
                   train_steps=3, learning_rate=1e-3, max_train_examples=2, batch_size=2,
                   teacher_max_new_tokens=8)
    rep = distill.apply(model, spec, ctx)
    assert not any(isinstance(m, LoRALinear) for m in model.modules())
    linears = [m for layer in model.model.layers for m in layer.modules()
               if isinstance(m, torch.nn.Linear)]
    assert len(linears) == rep["lora_layers_merged"] == 28 * 7
    assert all(type(m) is torch.nn.Linear for m in linears)
    assert rep["trained_parameters"] == sum(8 * (m.in_features + m.out_features) for m in linears)
    per_layer = sum(p.numel() for p in model.model.layers[0].parameters())
    assert rep["student_parameters"] == rep["teacher_parameters"] - 2 * per_layer
    # importance: the two layers whose output is most like their input were dropped
    scores = rep["layer_importance"]
    dropped = sorted(set(range(30)) - set(rep["layers_kept"]))
    assert len(dropped) == 2 and max(scores[i] for i in dropped) <= min(
        scores[i] for i in rep["layers_kept"])
    # the merged adapters changed the kept layers' weights
    changed = [not torch.equal(before[old], layer.mlp.down_proj.weight)
               for old, layer in zip(rep["layers_kept"], model.model.layers, strict=True)]
    assert all(changed)
    assert rep["calibration_is_eval_set"] is True and "max_requests" in rep["warning"]
    assert len(rep["losses"]) == 3
