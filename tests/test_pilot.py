"""The pilot, end to end on the real embedded model, writing every measurement to SQLite."""
from __future__ import annotations

import json

import pytest

from engine.ingest.logs import parse_log
from engine.pilot.report import build_report
from engine.pilot.runner import run_pilot
from engine.specs.pilot import (
    CompressPrompt,
    GenerationSettings,
    PilotSpec,
    QuantizeWeights,
    VariantSpec,
)
from engine.store.store import Store

pytestmark = pytest.mark.slow
N = 10


@pytest.fixture(scope="module")
def pilot(tmp_path_factory, embedded_model_dir):
    from tests.conftest import make_settings

    settings = make_settings(tmp_path_factory.mktemp("pilot") / "data", embedded_model_dir)
    store = Store(settings.resolved_db_url())
    raw = (settings.samples_dir / "support_chat.jsonl").read_bytes()
    workload = store.add_workload("support", "support_chat.jsonl", raw,
                                  parse_log(raw, "support_chat.jsonl"))
    spec = PilotSpec(workload_id=workload.id, max_requests=N,
                     generation=GenerationSettings(max_new_tokens=16, batch_size=5),
                     variants=(VariantSpec(name="baseline"),
                               VariantSpec(name="int8", techniques=(QuantizeWeights(),)),
                               VariantSpec(name="lingua", techniques=(CompressPrompt(rate=0.5),))))
    seen = []
    run = run_pilot(spec, store, settings, on_progress=seen.append)
    return store, spec, run, seen


def test_every_variant_ran_and_every_measurement_is_stored(pilot) -> None:
    store, spec, run, _ = pilot
    assert run.status == "done"
    assert [v.status for v in run.variants] == ["done", "done", "done"], [v.error for v in run.variants]
    for v in run.variants:
        assert v.load_s > 0 and v.wall_s > 0 and v.throughput_tok_s > 0
        assert v.weight_bytes > 0 and v.peak_mem_bytes is not None and v.device.startswith("cpu")
        results = store.get_results(v.id)
        assert [r.request_index for r in results] == list(range(N))
        for r in results:
            assert r.output_text and r.output_tokens > 0
            assert 0 < r.ttft_s <= r.latency_s
            assert r.prompt_tokens_sent > 0 and r.prompt_tokens_original > 0
            assert r.ref_contains in (0.0, 1.0) and 0.0 <= r.ref_f1 <= 1.0  # sample has refs
    # the spec stored with the run is exactly the one that ran
    assert run.spec == json.loads(spec.model_dump_json())
    assert [v.spec for v in run.variants] == [json.loads(v.model_dump_json())
                                              for v in spec.variants]


def test_int8_shrinks_the_weights_it_reports(pilot) -> None:
    _, _, run, _ = pilot
    base, int8 = run.variants[0], run.variants[1]
    rep = int8.technique_report["quantize_weights"]
    assert rep["layers_quantized"] == 30 * 7  # 30 decoder layers x (q,k,v,o,gate,up,down)
    assert rep["weight_type"] == "Int8Tensor"
    assert int8.weight_bytes == rep["weight_bytes_after"]
    assert int8.weight_bytes < 0.5 * base.weight_bytes


def test_prompt_compression_sends_fewer_tokens_and_counts_its_time(pilot) -> None:
    store, _, run, _ = pilot
    lingua = run.variants[2]
    results = store.get_results(lingua.id)
    sent = sum(r.prompt_tokens_sent for r in results)
    original = sum(r.prompt_tokens_original for r in results)
    assert sent < 0.85 * original
    assert all(r.compress_s > 0 for r in results)
    assert all(r.latency_s > r.compress_s for r in results)
    assert lingua.technique_report["compress_prompt"]["mean_ratio"] > 1.2


def test_agreement_with_baseline_is_scored_for_variants_only(pilot) -> None:
    store, _, run, _ = pilot
    assert all(r.base_rouge_l is None for r in store.get_results(run.variants[0].id))
    for v in run.variants[1:]:
        for r in store.get_results(v.id):
            assert 0.0 <= r.base_rouge_l <= 1.0 and -1.0 <= r.base_cosine <= 1.0001


def test_progress_is_reported_through_the_injected_callback(pilot) -> None:
    _, _, _, seen = pilot
    # the baseline is timed once more at the end (engine.pilot.protocol): its own section
    assert {p.variant for p in seen} == {"baseline", "int8", "lingua", "baseline (again)"}
    assert seen[-1].variant == "baseline (again)"
    fractions = [p.fraction for p in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0


def test_report_costs_follow_from_stored_measurements(pilot) -> None:
    store, _, run, _ = pilot
    report = build_report(store, run.id, price_per_hour=3.6, requests_per_month=1000)
    frame = store.results_frame(run.id)
    for v, s in zip(run.variants, report.variants, strict=True):
        rps = N / v.wall_s
        assert s.requests_per_s == pytest.approx(rps)
        assert s.cost_per_1k_requests == pytest.approx(3.6 / (rps * 3600) * 1000)
        toks = frame[frame.variant_id == v.id].output_tokens.sum()
        assert s.tokens_per_s == pytest.approx(toks / v.wall_s)


def test_a_failing_variant_is_recorded_and_the_others_still_run(model_settings) -> None:
    store = Store(model_settings.resolved_db_url())
    raw = b'{"prompt": "What is the capital of France?", "reference": "Paris"}\n'
    workload = store.add_workload("one", "one.jsonl", raw, parse_log(raw, "one.jsonl"))
    spec = PilotSpec(workload_id=workload.id, generation=GenerationSettings(max_new_tokens=8),
                     variants=(VariantSpec(name="baseline"),
                               VariantSpec(name="missing", model=str(model_settings.data_dir / "nope")),
                               VariantSpec(name="int8", techniques=(QuantizeWeights(),))))
    run = run_pilot(spec, store, model_settings)
    assert [v.status for v in run.variants] == ["done", "failed", "done"]
    assert "does not exist" in run.variants[1].error
    assert run.status == "partial" and run.error.startswith("1 of 3 variants failed ('missing'")
    assert store.get_results(run.variants[1].id) == []
    assert "Paris" in store.get_results(run.variants[0].id)[0].output_text


def test_an_interrupted_pilot_is_marked_interrupted_not_left_running(model_settings) -> None:
    store = Store(model_settings.resolved_db_url())
    raw = b'{"prompt": "Say hi."}\n'
    workload = store.add_workload("one", "one.jsonl", raw, parse_log(raw, "one.jsonl"))
    spec = PilotSpec(workload_id=workload.id, generation=GenerationSettings(max_new_tokens=4),
                     variants=(VariantSpec(name="baseline"), VariantSpec(name="second")))

    def interrupt_in_second_variant(p) -> None:  # the fault: Ctrl+C / a dashboard rerun
        if p.variant == "second":
            raise KeyboardInterrupt("user stopped")

    with pytest.raises(KeyboardInterrupt):
        run_pilot(spec, store, model_settings, on_progress=interrupt_in_second_variant)
    run = store.list_runs()[0]
    assert run.status == "interrupted" and "Interrupted" in run.error
    assert [v.status for v in run.variants] == ["done", "failed"]
    assert len(store.get_results(run.variants[0].id)) == 1  # finished work is kept


def test_a_variant_that_cannot_run_here_is_refused_before_the_pilot(model_settings) -> None:
    store = Store(model_settings.resolved_db_url())
    raw = b'{"prompt": "Say hi."}\n'
    workload = store.add_workload("one", "one.jsonl", raw, parse_log(raw, "one.jsonl"))
    seen = []
    spec = PilotSpec(workload_id=workload.id, generation=GenerationSettings(max_new_tokens=4),
                     variants=(VariantSpec(name="baseline"),
                               VariantSpec(name="gpu-only", device="cuda")))
    run = run_pilot(spec, store, model_settings, on_progress=seen.append)
    assert [v.status for v in run.variants] == ["done", "failed"]
    assert run.variants[1].error.startswith("Refused before the pilot started")
    assert run.status == "failed"  # every variant beside the baseline failed
    assert "no GPU is visible" in run.variants[1].error
    # refused up front: it never reached loading or generating
    assert not [p for p in seen if p.variant == "gpu-only" and "loading" in p.message]
