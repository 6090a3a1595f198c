"""The claims scorecard (engine.business.claims, issue 21 item 5): each rule on hand-built
variant summaries, the claims table and its errors, and the section in a stored run's
business-case PDF."""
from __future__ import annotations

import dataclasses
import json
import re
import shutil
import subprocess
from types import SimpleNamespace

import pytest

from engine.business import claims as cl
from engine.business.claims import (
    HELD,
    NOT_HELD,
    NOT_TESTED,
    VERDICTS,
    load_claims,
    score,
    scorecard_rows,
    weight_quantization,
)
from engine.core.domain import Status
from engine.core.errors import SpecError
from engine.pilot.report import VariantSummary
from engine.specs.backends import VllmOptions
from engine.specs.pilot import CompressPrompt, QuantizeWeights, VariantSpec
from engine.techniques.kv_cache import QuantizeKVCache
from engine.techniques.qat import QuantAwareTraining

CLAIMS = {c.id: c for c in load_claims()}


def summary(name: str, status=Status.DONE, **figures) -> VariantSummary:
    """A VariantSummary with every measured figure None but those given."""
    empty = {f.name: None for f in dataclasses.fields(VariantSummary)
             if f.default is dataclasses.MISSING}
    return VariantSummary(**(empty | {"name": name, "status": status, "techniques": "",
                                      "n_requests": 4} | figures))


def spec(name: str, **fields) -> VariantSpec:
    return VariantSpec(name=name, **fields)


def report(*pairs, technique_reports: list[dict] | None = None) -> SimpleNamespace:
    """A report-like object: ``pairs`` of (VariantSpec, VariantSummary), the baseline first;
    ``technique_reports`` gives it a ``run`` whose variants stored those reports."""
    rep = SimpleNamespace(variants=tuple(s for _, s in pairs),
                          spec=SimpleNamespace(variants=tuple(v for v, _ in pairs)))
    if technique_reports is not None:
        rep.run = SimpleNamespace(variants=[SimpleNamespace(technique_report=t)
                                            for t in technique_reports])
    return rep


def one(claim_id: str, rep, case=None) -> cl.ClaimResult:
    (result,) = score(rep, case, [CLAIMS[claim_id]])
    assert result.verdict in VERDICTS and result.claim is CLAIMS[claim_id]
    assert result.note  # every verdict says what decided it, or what would test it
    return result


BASE = (spec("baseline", dtype="bfloat16"),
        summary("baseline", weight_bytes=16e9, tokens_per_s=10.0, kv_bytes_per_token=131_072.0))
INT4 = spec("int4", dtype="bfloat16", techniques=(QuantizeWeights(bits=4),))
INT8 = spec("int8", dtype="bfloat16", techniques=(QuantizeWeights(bits=8),))
FP8 = spec("fp8-weights", backend="vllm", dtype="bfloat16", vllm=VllmOptions(quantization="fp8"))
FP8_KV = spec("fp8-kv", backend="vllm", dtype="bfloat16", vllm=VllmOptions(kv_cache_dtype="fp8"))
LINGUA = spec("lingua", techniques=(CompressPrompt(rate=0.5),))


# --- 1. post-training quantization: 2-4x ------------------------------------------------------
def test_ptq_held_on_weight_bytes_with_the_best_variant_and_its_speed_beside():
    rep = report(BASE, (INT8, summary("int8", weight_bytes=8.2e9, tokens_per_s=9.0)),
                 (INT4, summary("int4", weight_bytes=4.1e9, tokens_per_s=12.0)))
    r = one("ptq", rep)
    assert (r.verdict, r.variant) == (HELD, "int4")  # 3.9x beats 1.95x
    assert r.figure.startswith("3.9x fewer weight bytes (int4: 4.10 GB vs 16.00 GB)")
    assert "tokens/s 1.20x the baseline's" in r.figure
    assert "Decided by weight bytes (3.90x >= 2x" in r.note and "not 2x faster" in r.note


def test_ptq_not_held_under_2x_and_vllm_fp8_counts_as_weight_quantization():
    r = one("ptq", report(BASE, (FP8, summary("fp8-weights", weight_bytes=9e9,
                                                  tokens_per_s=25.0))))
    assert (r.verdict, r.variant) == (NOT_HELD, "fp8-weights")
    assert "1.8x fewer weight bytes" in r.figure and "(1.78x < 2x" in r.note
    assert "at least 2x faster too" in r.note  # speed reported, not scored
    assert weight_quantization(FP8).bits == 8
    assert weight_quantization(spec("q", techniques=(QuantAwareTraining(bits=4),))).bits == 4
    assert weight_quantization(LINGUA) is None and weight_quantization(FP8_KV) is None


def test_ptq_only_done_variants_count_and_untested_says_what_to_run():
    failed = summary("int4", status=Status.FAILED, weight_bytes=1e9)
    r = one("ptq", report(BASE, (INT4, failed)))
    assert (r.verdict, r.figure, r.variant) == (NOT_TESTED, "", None)
    assert "int4 is failed: it measured nothing" in r.note and "--variants int8" in r.note
    r = one("ptq", report(BASE, (LINGUA, summary("lingua"))))
    assert r.verdict == NOT_TESTED and "No variant of this run quantizes its weights" in r.note
    r = one("ptq", report(BASE, (INT4, summary("int4"))))  # done, no weight bytes stored
    assert r.verdict == NOT_TESTED and "not measured" in r.note


def test_a_quantized_checkpoint_folder_is_a_weight_variant(tmp_path):
    """A `roilab export` W4A16 folder: its config.json says compressed-tensors int4."""
    (tmp_path / "config.json").write_text(json.dumps({"quantization_config": {
        "quant_method": "compressed-tensors", "config_groups": {"group_0": {
            "weights": {"type": "int", "num_bits": 4}, "input_activations": None}}}}))
    w4 = spec("w4a16", backend="vllm", model=str(tmp_path), dtype="bfloat16")
    q = weight_quantization(w4)
    assert (q.bits, q.how) == (4, "W4A16 (compressed-tensors)")
    r = one("ptq", report(BASE, (w4, summary("w4a16", weight_bytes=5e9))))
    assert (r.verdict, r.variant) == (HELD, "w4a16") and "tokens/s not measured" in r.figure
    assert weight_quantization(spec("plain", model=str(tmp_path.parent))) is None


def test_the_baseline_must_be_done():
    base = (BASE[0], summary("baseline", status=Status.FAILED, weight_bytes=16e9))
    for claim in ("ptq", "kv_quant", "7b_4bit_a10g"):
        r = one(claim, report(base, (INT4, summary("int4", weight_bytes=4e9)),
                              (FP8_KV, summary("fp8-kv", kv_bytes_per_token=1.0))))
        assert r.verdict == NOT_TESTED and "baseline (baseline) is failed" in r.note


# --- 2. KV-cache quantization: ~60% -----------------------------------------------------------
def test_kv_held_from_half_and_not_held_below():
    r = one("kv_quant", report(BASE, (FP8_KV, summary("fp8-kv", kv_bytes_per_token=65_536.0))))
    assert (r.verdict, r.variant) == (HELD, "fp8-kv")
    assert r.figure == "50% less KV cache per token (fp8-kv: 65,536 vs 131,072 bytes/token)"
    r = one("kv_quant", report(BASE, (FP8_KV, summary("fp8-kv", kv_bytes_per_token=72_000.0))))
    assert r.verdict == NOT_HELD and "45.1% cut is under 50%" in r.note


def test_kv_reads_the_kv_technique_figure_not_the_full_precision_one():
    """The transformers backend stores the config's full-precision bytes/token for every
    variant; the KV technique's own report holds the quantized figure."""
    kv4 = spec("kv4", techniques=(QuantizeKVCache(bits=4),))
    fp = {"_model": {"kv_bytes_per_token": 131_072}}
    rep = report(BASE, (kv4, summary("kv4", kv_bytes_per_token=131_072.0)),
                 technique_reports=[fp, {**fp, "quantize_kv_cache":
                                         {"kv_bytes_per_token_quantized": 36_864}}])
    r = one("kv_quant", rep)
    assert (r.verdict, r.variant) == (HELD, "kv4") and r.figure.startswith("72% less")


def test_kv_not_tested_without_a_kv_variant():
    r = one("kv_quant", report(BASE, (INT4, summary("int4", kv_bytes_per_token=1.0))))
    assert r.verdict == NOT_TESTED and "--variants fp8-kv" in r.note


# --- 3. prompt compression: up to 20x ---------------------------------------------------------
@pytest.mark.parametrize(("sent", "verdict", "words"), [
    (50.0, HELD, "the claimed 20x was reached"),
    (400.0, HELD, "20x was not reached"),
    (600.0, NOT_HELD, "1.67x is under 2x"),
])
def test_prompt_compression_ratio_and_whether_20x_was_reached(sent, verdict, words):
    lingua = summary("lingua", prompt_tokens_original=1000.0, prompt_tokens_sent=sent)
    r = one("prompt_compression", report(BASE, (LINGUA, lingua)))
    assert (r.verdict, r.variant) == (verdict, "lingua") and words in r.note
    assert r.figure.startswith(f"{1000 / sent:.1f}x fewer input tokens (lingua: {sent:,.0f} "
                               "sent of 1,000 per request)")


def test_prompt_compression_not_tested_without_it():
    r = one("prompt_compression", report(BASE, (INT4, summary("int4"))))
    assert r.verdict == NOT_TESTED and "--variants llmlingua" in r.note


# --- 4. a 7B model in 4-bit on one A10G (24 GB) -----------------------------------------------
def test_7b_in_4_bit_held_when_its_serving_memory_fits_24_gb():
    r = one("7b_4bit_a10g", report(BASE, (INT4, summary("int4", weight_bytes=4.5e9,
                                                        peak_mem_bytes=6e9, device="cuda"))))
    assert (r.verdict, r.variant) == (HELD, "int4")
    assert r.figure == "6.00 GB needed of 24.00 GB (int4: peak 6.00 GB; weights 4.50 GB)"
    assert "about 8.0e9 parameters" in r.note and "not on an A10G" in r.note
    r = one("7b_4bit_a10g", report(BASE, (INT4, summary("int4", weight_bytes=4.5e9,
                                                        peak_mem_bytes=30e9))))
    assert r.verdict == NOT_HELD and "30.00 GB does not fit" in r.note


def test_7b_on_vllm_leaves_out_the_kv_cache_reserved_to_fill_the_device(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"quantization_config": {
        "quant_method": "gptq", "bits": 4}}))
    w4 = spec("w4", backend="vllm", model=str(tmp_path), dtype="bfloat16")
    r = one("7b_4bit_a10g", report(BASE, (w4, summary("w4", weight_bytes=5e9, peak_mem_bytes=70e9,
                                                      kv_cache_bytes=62e9))))
    assert (r.verdict, r.variant) == (HELD, "w4")  # 70 - 62 = 8 GB
    assert "8.00 GB needed" in r.figure and "less the 62.00 GB KV cache" in r.figure


def test_7b_not_tested_for_a_small_model_an_8_bit_variant_or_no_peak():
    small = (spec("baseline"), summary("baseline", weight_bytes=540e6))  # 135M in float32
    r = one("7b_4bit_a10g", report(small, (INT4, summary("int4", weight_bytes=1e8,
                                                         peak_mem_bytes=2e8))))
    assert r.verdict == NOT_TESTED and "about 0.135e9 parameters" in r.note
    assert "GPU pilot with W4A16" in r.note
    # 16e9 bytes in float32 is a 4e9-parameter model: not 7B-class
    f32 = (spec("baseline"), summary("baseline", weight_bytes=16e9))
    assert one("7b_4bit_a10g", report(f32, (INT4, summary("int4", weight_bytes=4e9,
                                                          peak_mem_bytes=5e9)))).verdict \
        == NOT_TESTED
    r = one("7b_4bit_a10g", report(BASE, (INT8, summary("int8", weight_bytes=8e9,
                                                        peak_mem_bytes=9e9))))
    assert r.verdict == NOT_TESTED and "4-bit variant of a 7B-class model" in r.note
    r = one("7b_4bit_a10g", report(BASE, (INT4, summary("int4", weight_bytes=4e9))))
    assert r.verdict == NOT_TESTED and "peak memory was not measured" in r.note


def test_7b_takes_the_stored_parameter_count_first():
    f32 = (spec("baseline"), summary("baseline", weight_bytes=16e9))  # 4e9 by its bytes
    rep = report(f32, (INT4, summary("int4", weight_bytes=4.5e9, peak_mem_bytes=6e9)),
                 technique_reports=[{"_model": {"parameters": 8_030_000_000}}, {}])
    r = one("7b_4bit_a10g", rep)
    assert r.verdict == HELD and "about 8.0e9 parameters" in r.note


# --- 5. 50-70% cost savings (in under a week) -------------------------------------------------
def case(savings: float, base: float | None = 1000.0, name: str | None = "int4",
         moves: bool = True, rows=()) -> SimpleNamespace:
    return SimpleNamespace(baseline_monthly_cost=base, monthly_savings=savings, moves=moves,
                           recommendation=SimpleNamespace(name=name, reason="none passes."),
                           rows=rows)


def test_cost_savings_of_the_recommended_variant():
    rep = report(BASE, (INT4, summary("int4")))
    r = one("cost_savings", rep, case(600.0))
    assert (r.verdict, r.variant) == (HELD, "int4")
    assert r.figure == "60% saved ($600.00 of $1,000.00 a month, int4)"
    assert "under a week" in r.note and "not tested" in r.note
    r = one("cost_savings", rep, case(438.0))
    assert r.verdict == NOT_HELD and "43.8% is under 50%" in r.note


def test_cost_savings_without_a_case_or_a_move():
    rep = report(BASE, (INT4, summary("int4")))
    r = one("cost_savings", rep, None)
    assert r.verdict == NOT_TESTED and "business case" in r.note and "under a week" in r.note
    assert one("cost_savings", rep, case(0.0, base=None)).verdict == NOT_TESTED
    row = SimpleNamespace(is_baseline=False, ok=True, speed_memory_only=False)
    r = one("cost_savings", rep, case(0.0, name=None, moves=False, rows=(row,)))
    assert (r.verdict, r.figure) == (NOT_HELD, "0% saved (no variant recommended)")
    assert "none passes." in r.note
    random = SimpleNamespace(is_baseline=False, ok=True, speed_memory_only=True)
    r = one("cost_savings", rep, case(0.0, name=None, moves=False, rows=(random,)))
    assert r.verdict == NOT_TESTED and "random weights" in r.note


# --- the table ---------------------------------------------------------------------------------
def test_the_table_loads_every_scored_claim_and_states_each_threshold():
    assert list(CLAIMS) == list(cl.SCORERS)
    rules = {k: c.rule for k, c in CLAIMS.items()}
    assert f"{cl.PTQ_MIN_BYTES_RATIO:g}x" in rules["ptq"]
    assert f"{cl.KV_MIN_REDUCTION:.0%}" in rules["kv_quant"]
    assert f"{cl.PROMPT_MIN_RATIO:g}x" in rules["prompt_compression"]
    assert f"{cl.PROMPT_CLAIMED_RATIO:g}x" in rules["prompt_compression"]
    assert f"{cl.A10G_BYTES / 1e9:g} GB" in rules["7b_4bit_a10g"]
    assert f"{cl.SAVINGS_MIN_FRACTION:.0%}" in rules["cost_savings"]
    assert all(c.source and c.test for c in CLAIMS.values())


def _table(tmp_path, entries) -> str:
    path = tmp_path / "claims.json"
    path.write_text(json.dumps({"claims": entries}))
    return str(path)


@pytest.mark.parametrize(("change", "words"), [
    (lambda e: e[1].pop("rule"), "entry 2 ('kv_quant'): rule missing"),
    (lambda e: e[2].update(source=""), "entry 3 ('prompt_compression'): source missing"),
    (lambda e: e[0].update(threshold=2), "entry 1 ('ptq'): unknown field(s) threshold"),
    (lambda e: e[3].update(id="seven_b"), "entry 4 ('seven_b'): no scorer for id 'seven_b'"),
    (lambda e: e[4].update(id="ptq"), "entry 5 ('ptq'): id 'ptq' listed twice"),
    (lambda e: e.__setitem__(1, "text"), "entry 2: an object with"),
])
def test_a_malformed_table_names_the_entry(tmp_path, change, words):
    entries = [dataclasses.asdict(c) for c in CLAIMS.values()]
    change(entries)
    with pytest.raises(SpecError, match=re.escape(words)):
        load_claims(_table(tmp_path, entries))


def test_a_table_that_is_not_json_or_has_no_claims(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{claims: ")
    with pytest.raises(SpecError, match="not valid JSON"):
        load_claims(bad)
    with pytest.raises(SpecError, match='non-empty list under "claims"'):
        load_claims(_table(tmp_path, []))


def test_scorecard_rows_for_a_table():
    rows = scorecard_rows(score(report(BASE, (INT4, summary("int4", weight_bytes=4e9)))))
    assert [r["verdict"] for r in rows] == [HELD, NOT_TESTED, NOT_TESTED, NOT_TESTED, NOT_TESTED]
    assert rows[0]["variant"] == "int4" and rows[1]["figure"] == "-" and rows[1]["variant"] == "-"
    assert set(rows[0]) == {"claim", "verdict", "figure", "variant", "note", "rule", "source"}


# --- the PDF -----------------------------------------------------------------------------------
def test_the_business_pdf_of_a_stored_run_has_the_scorecard(tmp_path):
    """The hand-worked stored run of tests/test_business.py (baseline, int4, lingua; no model
    loaded): its business-case PDF carries the section, each claim with its verdict."""
    from test_business import ASSUME, CAT, _stored_run

    from engine.reports.business_pdf import business_pdf_for_run
    from engine.store.store import Store

    assert shutil.which("pdftotext"), "pdftotext missing: apt-get install poppler-utils"
    store = Store(f"sqlite:///{tmp_path}/t.db")
    pdf, case_ = business_pdf_for_run(store, _stored_run(store), ASSUME, CAT)
    (tmp_path / "case.pdf").write_bytes(pdf)
    text = re.sub(r"\s+", " ", subprocess.run(["pdftotext", str(tmp_path / "case.pdf"), "-"],
                                              check=True, capture_output=True,
                                              text=True).stdout)
    section = text[text.index("Claims scorecard"):]
    for words in ("Post-training quantization gives 2-4x", "3.6x fewer weight bytes",
                  "KV-cache quantization cuts KV memory by ~60%", "--variants fp8-kv",
                  "2.0x fewer input tokens", "20x was not reached",
                  "A 7B model in 4-bit runs on one A10G (24 GB)", "GPU pilot with W4A16",
                  "44% saved ($572.32 of $1,306.70 a month, int4)", "under a week"):
        assert words in section, words
    assert section.count("not tested") >= 3 and "not held" in section
    assert case_.recommendation.name == "int4"
