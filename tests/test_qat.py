"""engine.techniques.qat: torchao QAT prepare -> train -> convert on a tiny random Llama
(fast: 8-bit, refusals) and on the real embedded model (``slow``: 4-bit), and a mini pilot
with baseline, distilled student, 4-bit QAT and 4-bit PTQ on the same requests, training
only on the requests the pilot holds out."""
from __future__ import annotations

import json
import math

import pytest
import torch

from engine.core.errors import SpecError
from engine.techniques import qat
from engine.techniques.base import TechniqueContext
from engine.techniques.qat import QuantAwareTraining
from tests.test_distill import CALIBRATION, load, one_thread, tiny_llama  # noqa: F401


def _tiny_ctx(embedded_model_dir) -> TechniqueContext:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(embedded_model_dir)
    return TechniqueContext(device="cpu", model_path="tiny", tokenizer=tok,
                            calibration=CALIBRATION)


# --- fast ------------------------------------------------------------------------------------

def test_check_refuses_without_torchao_and_apply_refuses_a_bad_group(monkeypatch) -> None:
    model = tiny_llama(2)  # linears are 32 and 64 wide
    ctx = TechniqueContext(device="cpu", model_path="tiny", tokenizer=None,
                           calibration=CALIBRATION)
    with pytest.raises(SpecError, match="does not divide"):
        qat.apply(model, QuantAwareTraining(bits=4, group_size=48), ctx)
    qat.check(QuantAwareTraining(), "cpu")
    with pytest.raises(ValueError, match="group_size applies to 4-bit"):
        QuantAwareTraining(bits=8, group_size=64)
    monkeypatch.setattr(qat.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(SpecError, match="pip install 'torchao==0.18.0'"):
        qat.check(QuantAwareTraining(), "cpu")
    with pytest.raises(ValueError, match="group_size applies to 4-bit"):
        QuantAwareTraining(bits=8, group_size=64)


@pytest.mark.slow  # loads the embedded model
def test_8_bit_qat_converts_to_int8_weights(embedded_model_dir) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    ctx = _tiny_ctx(embedded_model_dir)  # the real tokenizer, so the vocab must match it
    cfg = LlamaConfig(vocab_size=len(ctx.tokenizer), hidden_size=32, intermediate_size=64,
                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                      tie_word_embeddings=True, eos_token_id=2, pad_token_id=2)
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).eval()
    rep = qat.apply(model, QuantAwareTraining(bits=8, train_steps=2, learning_rate=1e-3,
                                              max_train_examples=2, teacher_max_new_tokens=4),
                    ctx)
    assert rep["fake_quantized_linears"] == rep["layers_quantized"] == 2 * 7
    assert "int8" in rep["fake_quantize_config"] and "PerAxis(axis=0)" in rep["fake_quantize_config"]
    assert rep["fake_quantized_left"] == 0 and rep["weight_type"] == "Int8Tensor"
    assert type(model.model.layers[0].mlp.up_proj.weight).__name__ == "Int8Tensor"
    assert len(rep["losses"]) == 2 and all(math.isfinite(x) for x in rep["losses"])


# --- slow: the real embedded model -----------------------------------------------------------

@pytest.mark.slow
def test_4_bit_qat_on_the_embedded_model(embedded_model_dir) -> None:
    from torchao.quantization.qat import FakeQuantizedLinear

    model, tok = load(embedded_model_dir)
    ctx = TechniqueContext(device="cpu", model_path=str(embedded_model_dir), tokenizer=tok,
                           calibration=CALIBRATION)
    rep = qat.apply(model, QuantAwareTraining(bits=4, group_size=32, train_steps=3,
                                              learning_rate=1e-4, max_train_examples=2,
                                              batch_size=2, teacher_max_new_tokens=8), ctx)
    assert rep["fake_quantized_linears"] == 210 and rep["fake_quantized_left"] == 0
    assert "int4" in rep["fake_quantize_config"] and "PerGroup(group_size=32)" in (
        rep["fake_quantize_config"])
    assert not any(isinstance(m, FakeQuantizedLinear) for m in model.modules())
    assert rep["layers_quantized"] == 210 and rep["group_sizes"] == [32]
    w = model.model.layers[3].self_attn.q_proj.weight
    assert type(w).__name__ == rep["weight_type"] == "IntxUnpackedToInt8Tensor"
    assert type(model.lm_head.weight) is torch.nn.Parameter  # tied embedding left alone
    assert len(rep["losses"]) == 3 and rep["loss_start"] > 0 and rep["train_s"] > 0
    assert rep["weight_bytes_after"] < 0.5 * rep["weight_bytes_before"]
    ids = tok("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=4, do_sample=False, pad_token_id=2)
    assert out.shape[1] > ids.shape[1]  # it still generates (it may stop early at EOS)


WORKLOAD = [("What is the capital of France?", "Paris"),
            ("What colour is the sky on a clear day?", "blue"),
            ("How many days are in a week?", "seven"),
            ("What is 2 + 2?", "4"),
            ("Name the largest planet in the solar system.", "Jupiter"),
            ("What do bees make?", "honey")]


@pytest.mark.slow
def test_pilot_with_distill_qat_and_ptq_trains_on_held_out_requests(model_settings) -> None:
    from engine.ingest.logs import parse_log
    from engine.pilot.runner import run_pilot
    from engine.specs.pilot import GenerationSettings, PilotSpec, QuantizeWeights, VariantSpec
    from engine.store.store import Store
    from engine.techniques.distill import Distill

    store = Store(model_settings.resolved_db_url())
    raw = "".join(json.dumps({"prompt": q, "reference": a}) + "\n" for q, a in WORKLOAD).encode()
    workload = store.add_workload("six", "six.jsonl", raw, parse_log(raw, "six.jsonl"))
    train = {"train_steps": 3, "max_train_examples": 4, "teacher_max_new_tokens": 16}
    spec = PilotSpec(
        workload_id=workload.id, max_requests=2,  # 4 requests held out: the training data
        generation=GenerationSettings(max_new_tokens=8, batch_size=2),
        variants=(VariantSpec(name="baseline"),
                  VariantSpec(name="distill", techniques=(Distill(student_layers=24, **train),)),
                  VariantSpec(name="qat4", techniques=(QuantAwareTraining(bits=4, **train),)),
                  VariantSpec(name="ptq4", techniques=(
                      QuantizeWeights(bits=4, method="torchao", group_size=32),))))
    run = run_pilot(spec, store, model_settings)
    assert [v.status for v in run.variants] == ["done"] * 4, [v.error for v in run.variants]
    base, dist, qat4, ptq4 = run.variants
    for v, kind in ((dist, "distill"), (qat4, "qat")):
        rep = v.technique_report[kind]
        assert rep["calibration_is_eval_set"] is False and "warning" not in rep
        assert rep["train_examples"] == 4 and len(rep["losses"]) == 3
        assert len(store.get_results(v.id)) == 2
    assert dist.technique_report["distill"]["student_layers"] == 24
    assert dist.technique_report["_model"]["parameters"] < base.technique_report["_model"][
        "parameters"]
    # QAT converts to exactly the storage plain PTQ gives at the same bits and group size
    q, p = qat4.technique_report["qat"], ptq4.technique_report["quantize_weights"]
    assert q["layers_quantized"] == p["layers_quantized"] == 210
    assert q["weight_storage"] == p["weight_storage"] and q["weight_type"] == p["weight_type"]
    assert qat4.weight_bytes == ptq4.weight_bytes < 0.5 * base.weight_bytes
