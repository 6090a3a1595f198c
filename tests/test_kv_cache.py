"""Quantized KV cache: the capacity arithmetic by hand, refusals, and the real model."""
from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from engine.core.errors import SpecError
from engine.core.memory import tensor_bytes
from engine.techniques import kv_cache
from engine.techniques.base import TechniqueContext
from engine.techniques.kv_cache import (
    KVShape,
    QuantizeKVCache,
    kv_capacity,
    kv_request_bytes,
    kv_shape,
)

SMOLLM2 = KVShape(layers=30, kv_heads=3, head_dim=64, dtype_bytes=4)  # fp32


def test_bytes_per_token_worked_out_by_hand() -> None:
    # 2 x 30 layers x 3 kv heads x 64 = 11,520 values per token; x 4 bytes = 46,080
    assert SMOLLM2.fp_bytes_per_token() == 46_080
    # 4-bit: 11,520 / 2 = 5,760 bytes + 180 groups of 64 x (scale + zero) x 4 bytes = 1,440
    assert SMOLLM2.quantized_bytes_per_token(4, 64) == 7_200
    assert SMOLLM2.quantized_bytes_per_token(2, 64) == 2_880 + 1_440
    bf16 = KVShape(30, 3, 64, 2)  # scales and zeros follow the model's dtype
    assert (bf16.fp_bytes_per_token(), bf16.quantized_bytes_per_token(4, 64)) == (23_040, 6_480)


def test_capacity_worked_out_by_hand() -> None:
    # 1 GB budget - 100 MB weights = 900 MB free; 100 tokens x 1,000 B = 100 kB a request
    assert kv_capacity(1e9, 1e8, 100, 1000) == 9000
    # quantized: 10 residual tokens x 1,000 + 90 x 200 = 28,000 B; 9e8 / 28,000 = 32,142.9
    assert kv_request_bytes(100, 1000, 200, 10) == 28_000
    assert kv_capacity(1e9, 1e8, 100, 1000, 200, residual_length=10) == 32_142
    # shorter than the residual window: all full precision
    assert kv_capacity(1e9, 1e8, 5, 1000, 200, residual_length=10) == 180_000
    assert kv_capacity(1e9, 2e9, 100, 1000) == 0  # the weights alone do not fit
    # SmolLM2 fp32 at 24 GB, 1,000-token requests: (24e9 - 538,060,288) / 46,080,000 = 509.2
    free_weights = 538_060_288
    assert kv_capacity(24e9, free_weights, 1000, 46_080) == 509
    # 16 x 46,080 + 984 x 7,200 = 7,822,080 B a request -> 2,999.4
    assert kv_capacity(24e9, free_weights, 1000, 46_080, 7_200, 16) == 2_999


def test_spec_is_strict_and_described() -> None:
    assert kv_cache.describe(QuantizeKVCache()) == "4-bit KV cache (quanto)"
    assert kv_cache.describe(QuantizeKVCache(bits=2, backend="hqq")) == "2-bit KV cache (hqq)"
    for bad in ({"backend": "HQQ"}, {"bits": 8}, {"residual_length": 0}, {"nbits": 4}):
        with pytest.raises(ValidationError):
            QuantizeKVCache(**bad)


def test_check_passes_here_and_refuses_a_missing_library(monkeypatch) -> None:
    import transformers.utils as tu

    kv_cache.check(QuantizeKVCache(), "cpu")
    kv_cache.check(QuantizeKVCache(backend="hqq", bits=2), "cpu")
    monkeypatch.setattr(tu, "is_optimum_quanto_available", lambda: False)
    with pytest.raises(SpecError, match="pip install 'optimum-quanto==0.2.7'"):
        kv_cache.check(QuantizeKVCache(), "cpu")
    monkeypatch.setattr(tu, "is_optimum_quanto_available", lambda: True)
    monkeypatch.setattr(tu, "is_quanto_greater", lambda *a, **k: False)
    with pytest.raises(SpecError, match=">= 0.2.5"):
        kv_cache.check(QuantizeKVCache(), "cuda")
    monkeypatch.setattr(tu, "is_hqq_available", lambda: False)
    with pytest.raises(SpecError, match="hqq==0.2.8.post1"):
        kv_cache.check(QuantizeKVCache(backend="hqq"), "cpu")


def test_cache_config_keeps_its_backend_when_transformers_pops_it() -> None:
    cfg = kv_cache._CacheConfig("hqq", nbits=4)
    assert [cfg.pop("backend", "quanto"), cfg.pop("backend", "quanto")] == ["hqq", "hqq"]
    assert dict(cfg) == {"nbits": 4}


class _Shell(torch.nn.Module):
    """A real config and dtype around a tiny module: generate_kwargs/report without weights."""

    def __init__(self, config) -> None:
        super().__init__()
        self.config = config
        self.lin = torch.nn.Linear(10, 10)  # 110 fp32 parameters = 440 weight bytes

    @property
    def dtype(self) -> torch.dtype:
        return torch.float32


@pytest.fixture(scope="module")
def shell(embedded_model_dir):
    from transformers import AutoConfig, AutoTokenizer

    return (_Shell(AutoConfig.from_pretrained(embedded_model_dir)),
            AutoTokenizer.from_pretrained(embedded_model_dir))


@pytest.mark.slow  # shell loads the embedded model's config and tokenizer
def test_model_dependent_refusals_at_load(shell) -> None:
    model, _ = shell
    assert kv_shape(model) == SMOLLM2
    assert kv_cache.generate_kwargs(QuantizeKVCache(), model)["cache_implementation"] == "quantized"
    with pytest.raises(SpecError, match="must divide the model's head dimension"):
        kv_cache.generate_kwargs(QuantizeKVCache(q_group_size=128), model)
    sliding = _Shell(model.config.__class__(**{**model.config.to_dict(), "sliding_window": 512}))
    with pytest.raises(SpecError, match="only full attention layers"):
        kv_cache.generate_kwargs(QuantizeKVCache(), sliding)


@pytest.mark.slow  # shell loads the embedded model's config and tokenizer
def test_report_sizes_capacity_from_the_workload_prompts(shell) -> None:
    model, tokenizer = shell
    prompts = [[{"role": "user", "content": "Hi"}], [{"role": "user", "content": "Hello " * 50}]]
    ctx = TechniqueContext(device="cpu", model_path="", tokenizer=tokenizer, calibration=prompts)
    texts = [tokenizer.apply_chat_template(m, tokenize=False, add_generation_prompt=True)
             for m in prompts]
    lens = [len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
    rep = kv_cache.report(QuantizeKVCache(output_tokens=100), model, ctx)
    assert (rep["kv_bytes_per_token_fp"], rep["kv_bytes_per_token_quantized"]) == (46_080, 7_200)
    assert rep["compression"] == 6.4 and rep["weight_bytes"] == 440
    context = rep["context_tokens"]
    assert context["prompt_mean"] == pytest.approx(sum(lens) / 2, abs=0.05)
    assert context["mean"] == -(-sum(lens) // 2) + 100 and context["p95"] > context["mean"]
    caps = rep["concurrent_requests"]
    assert caps["fp_mean"] == kv_capacity(24e9, 440, context["mean"], 46_080)
    assert caps["quantized_mean"] > 3 * caps["fp_mean"] and caps["quantized_p95"] < caps["quantized_mean"]
    fixed = kv_cache.report(QuantizeKVCache(context_tokens=1000, bits=2), model, ctx)
    assert fixed["context_tokens"]["mean"] == fixed["context_tokens"]["p95"] == 1000
    assert fixed["concurrent_requests"]["fp_mean"] == int((24e9 - 440) // 46_080_000)


# --- the real model ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def real(embedded_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(embedded_model_dir)
    tok.pad_token_id, tok.padding_side = tok.eos_token_id, "left"
    model = AutoModelForCausalLM.from_pretrained(embedded_model_dir, dtype=torch.float32).eval()
    prompts = [[{"role": "user", "content": "Write a short story about a cat who learns to fly."}],
               [{"role": "user", "content": "Explain how a bicycle works."}]]
    texts = [tok.apply_chat_template(m, tokenize=False, add_generation_prompt=True) for m in prompts]
    enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    return model, tok, enc


def _generate(real, n: int, **kwargs):
    model, tok, enc = real
    with torch.no_grad():
        return model.generate(**enc, max_new_tokens=n, do_sample=False, min_new_tokens=n,
                              pad_token_id=tok.pad_token_id, return_dict_in_generate=True,
                              **kwargs)


def _stored_bytes(cache) -> int:
    total = 0
    for layer in cache.layers:
        total += tensor_bytes(layer.keys) + tensor_bytes(layer.values)
        for q in (getattr(layer, "_quantized_keys", None), getattr(layer, "_quantized_values", None)):
            parts = [q] if isinstance(q, torch.Tensor) else [q[0], *q[1].values()] if q else []
            total += sum(tensor_bytes(t) for t in parts if isinstance(t, torch.Tensor))
    return total


@pytest.mark.slow
def test_past_the_residual_window_the_cache_shrinks_as_reported(real) -> None:
    model, _, enc = real
    n, batch, prompt = 64, enc["input_ids"].shape[0], enc["input_ids"].shape[1]
    base = _generate(real, n)
    fp = kv_shape(model).fp_bytes_per_token()
    assert _stored_bytes(base.past_key_values) == batch * (prompt + n - 1) * fp
    agree = {}
    for bits in (4, 2):
        spec = QuantizeKVCache(bits=bits, residual_length=16)
        out = _generate(real, n, **kv_cache.generate_kwargs(spec, model))
        new, ref = out.sequences[:, prompt:], base.sequences[:, prompt:]
        assert torch.equal(new[:, 0], ref[:, 0])  # the prefill step attends in full precision
        agree[bits] = (new == ref).float().mean().item()
        layer = out.past_key_values.layers[0]
        tokens, residual = layer.cumulative_length, layer.keys.shape[-2]
        assert tokens == prompt + n - 1 and 0 < residual < 16  # past the window, flushed at least once
        q = kv_shape(model).quantized_bytes_per_token(bits, 64)
        expected = batch * kv_request_bytes(tokens, fp, q, residual)
        assert _stored_bytes(out.past_key_values) == pytest.approx(expected, rel=0.02)
    # 4-bit follows full precision longer than 2-bit, and neither is identical to it
    assert agree[2] < agree[4] < 1.0, agree


@pytest.mark.slow
def test_hqq_backend_survives_a_second_generate_call(real) -> None:
    model, _, _ = real
    kwargs = kv_cache.generate_kwargs(QuantizeKVCache(backend="hqq", residual_length=2), model)
    for _ in range(2):  # a plain dict would lose "backend" in the first call and fall to quanto
        out = _generate(real, 3, **kwargs)
        assert type(out.past_key_values.layers[0]).__name__ == "HQQQuantizedLayer"


@pytest.mark.slow
def test_a_mini_pilot_runs_a_quantized_kv_variant_beside_the_baseline(model_settings) -> None:
    from engine.ingest.logs import parse_log
    from engine.pilot.runner import run_pilot
    from engine.specs.pilot import GenerationSettings, PilotSpec, VariantSpec
    from engine.store.store import Store

    store = Store(model_settings.resolved_db_url())
    raw = (model_settings.samples_dir / "support_chat.jsonl").read_bytes()
    workload = store.add_workload("support", "support_chat.jsonl", raw,
                                  parse_log(raw, "support_chat.jsonl"))
    spec = PilotSpec(workload_id=workload.id, max_requests=2,
                     generation=GenerationSettings(max_new_tokens=24, batch_size=2),
                     variants=(VariantSpec(name="baseline"),
                               VariantSpec(name="kv4", techniques=(
                                   QuantizeKVCache(residual_length=4),))))
    run = run_pilot(spec, store, model_settings)
    assert [v.status for v in run.variants] == ["done", "done"], [v.error for v in run.variants]
    rep = run.variants[1].technique_report["quantize_kv_cache"]
    assert (rep["kv_bytes_per_token_fp"], rep["kv_bytes_per_token_quantized"]) == (46_080, 7_200)
    # Every variant stores its full-precision KV figure from the config, for right-sizing.
    assert run.variants[0].technique_report["_model"]["kv_bytes_per_token"] == 46_080
    assert "workload prompts" in rep["context_tokens"]["source"]  # the 33 held-out requests
    caps = rep["concurrent_requests"]
    assert caps["quantized_mean"] > caps["fp_mean"] > 0
    assert all(r.output_text for r in store.get_results(run.variants[1].id))
