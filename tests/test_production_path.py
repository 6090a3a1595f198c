"""The production path: the decode bandwidth bound, random-weight production-shape models,
and the static-cache + torch.compile serving mode (refused on CPU, run in bench/bench_gpu.py).
"""
from __future__ import annotations

import json

import pytest
import torch

from engine.backends.base import RANDOM_TEXT
from engine.backends.transformers_backend import TransformersBackend
from engine.core.errors import ModelPrepError, SpecError
from engine.economics.roofline import decode_bound_tok_s, mean_decode_context
from engine.ingest.logs import parse_log
from engine.models.prep import CONFIGS_DIR, is_random_model, resolve_model
from engine.models.shape import kv_bytes_per_token, streamed_weight_bytes
from engine.pilot.runner import preflight, run_pilot
from engine.specs.pilot import GenerationSettings, PilotSpec, VariantSpec
from engine.store.store import Store


def test_decode_bound_by_hand() -> None:
    # 1 GB of weights + 2 sequences x 500 tokens x 1 MB of KV = 2 GB per step; at 2 TB/s a
    # step takes 1 ms and yields 2 tokens: 2,000 tok/s.
    assert decode_bound_tok_s(1e9, 1e6, 500, 2, 2e12) == pytest.approx(2000)
    # batch 1, no KV: 1 GB per step at 2 TB/s = 0.5 ms per token = 2,000 tok/s as well.
    assert decode_bound_tok_s(1e9, 0, 0, 1, 2e12) == pytest.approx(2000)
    assert mean_decode_context(256, 128) == 320
    with pytest.raises(ValueError):
        decode_bound_tok_s(1e9, 1e6, 500, 0, 2e12)


def test_llama_8b_bound_by_hand() -> None:
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(CONFIGS_DIR / "llama-3.1-8b.json")
    # K and V x 32 layers x 8 KV heads x 128 dims x 2 bytes (bf16) = 131,072 bytes per token.
    assert kv_bytes_per_token(config, 2) == 2 * 32 * 8 * 128 * 2 == 131_072
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    # 8,030,261,248 parameters x 2 bytes, less the untied 128,256 x 4,096 input embedding,
    # plus 512 bytes of rotary frequencies (two fp32 buffers of 64) = 15,009,849,856.
    assert streamed_weight_bytes(model) == 8_030_261_248 * 2 - 128_256 * 4096 * 2 + 512
    # H200 spec 4.8 TB/s, 256-token prompt + 128 new (mean context 320), batch 1:
    # 15,009,849,856 + 320 x 131,072 = 15,051,792,896 bytes per token -> 318.9 tok/s.
    bound = decode_bound_tok_s(streamed_weight_bytes(model), 131_072, 320, 1, 4.8e12)
    assert bound == pytest.approx(4.8e12 / 15_051_792_896) == pytest.approx(318.9, abs=0.05)


def test_variant_spec_compile_round_trips() -> None:
    spec = VariantSpec(name="fast", compile=True)
    assert VariantSpec.model_validate_json(spec.model_dump_json()).compile is True
    assert VariantSpec(name="plain").compile is False


def test_compile_is_refused_on_cpu_before_the_pilot() -> None:
    reason = preflight(VariantSpec(name="fast", device="cpu", compile=True))
    assert reason and "compile" in reason and "GPU" in reason
    with pytest.raises(SpecError, match="compile"):
        TransformersBackend.check(VariantSpec(name="fast", compile=True), "cpu")
    TransformersBackend.check(VariantSpec(name="fast", compile=True), "cuda")  # allowed there


def test_unknown_random_architecture_lists_the_known(settings) -> None:
    with pytest.raises(ModelPrepError, match="llama-3.1-8b"):
        resolve_model("random:no-such-arch", settings)
    with pytest.raises(ModelPrepError):
        resolve_model("random:../configs/llama-3.1-8b", settings)


@pytest.mark.slow
def test_random_tiny_model_runs_through_the_backend(model_settings) -> None:
    path = resolve_model("random:tiny-llama", model_settings)
    assert is_random_model(path) and json.loads(open(f"{path}/config.json").read())["hidden_size"] == 64
    backend = TransformersBackend(VariantSpec(name="tiny", model="random:tiny-llama",
                                              device="cpu"), path)
    info = backend.load()
    try:
        assert info.technique_report["_model"]["random_weights"] is True
        assert "accuracy not measured" in info.technique_report["_model"]["note"]
        assert info.weight_bytes > 0
        gens = backend.generate([[{"role": "user", "content": "hello"}]] * 2, 7)
        assert [g.output_tokens for g in gens] == [7, 7]  # EOS ignored: fixed-length decode
        assert gens[0].text == RANDOM_TEXT.format(n=7)
        assert 0 < gens[0].ttft_s <= gens[0].latency_s
        ids = torch.randint(0, 49152, (3, 32))  # synthetic prompts of an exact length
        gens = backend.generate_ids(ids, torch.ones_like(ids), 5)
        assert [(g.prompt_tokens, g.output_tokens) for g in gens] == [(32, 5)] * 3
        assert backend.serving_report() == {}  # eager: nothing compiled
    finally:
        backend.close()


@pytest.mark.slow
def test_random_model_pilot_measures_speed_not_accuracy(model_settings) -> None:
    store = Store(model_settings.resolved_db_url())
    raw = (model_settings.samples_dir / "support_chat.jsonl").read_bytes()
    workload = store.add_workload("support", "support_chat.jsonl", raw,
                                  parse_log(raw, "support_chat.jsonl"))
    spec = PilotSpec(workload_id=workload.id, max_requests=3,
                     generation=GenerationSettings(max_new_tokens=4, batch_size=2),
                     variants=(VariantSpec(name="tiny", model="random:tiny-llama", device="cpu"),
                               VariantSpec(name="tiny-compiled", model="random:tiny-llama",
                                           device="cpu", compile=True)))
    run = run_pilot(spec, store, model_settings)
    tiny, compiled = run.variants
    assert tiny.status == "done", tiny.error
    assert tiny.throughput_tok_s > 0 and tiny.peak_mem_bytes is not None
    assert tiny.technique_report["_model"]["random_weights"] is True
    for r in store.get_results(tiny.id):
        assert r.output_tokens == 4
        assert (r.ref_exact, r.ref_contains, r.ref_f1, r.base_rouge_l, r.base_cosine) == (None,) * 5
    assert compiled.status == "failed" and "compile" in compiled.error


@pytest.mark.slow  # a random: shape takes the embedded model's tokenizer
def test_a_random_models_tokenizer_decodes_every_id_it_can_generate(model_settings, tmp_path) -> None:
    """A random Llama-3 shape generates ids up to 128,255; the embedded tokenizer has 49,152.
    Padded, each id decodes (a server streaming text would otherwise stream nothing) and
    real text still encodes exactly as before."""
    from transformers import AutoTokenizer

    from engine.models.prep import embedded_model_dir, pad_tokenizer

    src = embedded_model_dir(model_settings)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        (tmp_path / f).write_bytes((src / f).read_bytes())
    assert pad_tokenizer(tmp_path / "tokenizer.json", 49_160) == 49_160
    base, padded = AutoTokenizer.from_pretrained(src), AutoTokenizer.from_pretrained(tmp_path)
    assert len(base) == 49_152 and len(padded) == 49_160
    assert base.decode([49_155]) == ""  # what a server would stream for such an id
    assert padded.decode([1000, 49_155, 49_159]) == base.decode([1000]) + "<r49155><r49159>"
    text = "Where is my order <r49155>? It was due on 3 March."
    assert padded(text)["input_ids"] == base(text)["input_ids"]
    assert pad_tokenizer(tmp_path / "tokenizer.json", 49_160) == 49_160  # idempotent


@pytest.mark.slow  # a random: shape takes the embedded model's tokenizer
def test_the_8b_shape_folder_has_a_tokenizer_as_large_as_its_vocabulary(model_settings) -> None:
    from transformers import AutoTokenizer

    path = resolve_model("random:llama-3.1-8b", model_settings)
    marker = json.loads(open(f"{path}/roilab_random.json").read())
    assert marker["tokenizer_padded_to"] == 128_256
    assert len(AutoTokenizer.from_pretrained(path)) == 128_256
