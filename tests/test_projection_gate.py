"""A projection the project itself calls indicative only (measured on a CPU, projected to a
GPU: engine.economics.sizing.CROSS_KIND_CHECK, 23x to 191x off when checked) never counts as
meeting the p95 target nor as the recommendation, and the case names the pilot that would
settle it (issue 19, item 2).

A stored run shaped as the runner stores one (test_business's helper, on a CPU): measured on
the 2-vCPU c7i.large ($0.08925/h), 4 requests, batch 4, 200 output tokens each.
  baseline: 0.54e9 B of weights, wall 30 s -> 4 / 30 = 0.1333 req/s; latencies 6, 7, 8, 9 s
            -> p95 = 8 + 0.85 x 1 = 8.85 s (meets the 10 s target on the CPU)
  int8:     0.27e9 B, wall 40 s -> 0.1 req/s; latencies 10, 11, 11.5, 12 s -> p95 11.925 s
            (misses it on the CPU); cosine to the baseline 0.95 (passes a 0.9 gate)
Volume 172,800 requests/day at peak x1 = 2 req/s:
  baseline on the CPU: ceil(2 / 0.1333) = 15 devices x 0.08925 x 730 = $977.29
  RTX 4090 ($0.69/h): the roofline projection makes either variant serve 2 req/s on one card,
  $503.70, at a p95 far under 10 s. Counted, int8 there would be the cheapest passing variant
  ($503.70 < $977.29) and recommended on a bound; it must not be.
"""
from __future__ import annotations

from dataclasses import replace

import pytest

from engine.business.case import Assumptions, build_business_case
from engine.core.domain import LogRequest, ParsedLog, RequestResult, VariantMeasurements
from engine.economics.hardware import CATALOG
from engine.reports.case_caveats import caveats
from engine.reports.case_words import decision_sentence, settle_lines, variant_rows
from engine.store.store import Store

CAT = {k: CATALOG[k] for k in ("cpu-c7i-large", "nvidia-rtx-4090")}
LAT = {"baseline": [6.0, 7.0, 8.0, 9.0], "int8": [10.0, 11.0, 11.5, 12.0]}
MEASURES = {"baseline": (0.54e9, 30.0), "int8": (0.27e9, 40.0)}
ASSUME = Assumptions(requests_per_day=172_800, peak_factor=1.0, p95_target_s=10.0,
                     utilisation=1.0, concurrency=1, kv_bytes_per_token=0.0,
                     accuracy_metric="base_cosine", accuracy_threshold=0.9,
                     bootstrap_resamples=50)


def _cpu_run(store: Store) -> int:
    reqs = tuple(LogRequest(line=i + 1, messages=({"role": "user", "content": f"q{i}"},),
                            reference=f"a{i}") for i in range(4))
    w = store.add_workload("support", "s.jsonl", b"x", ParsedLog("prompt_jsonl", reqs, (), 4))
    specs = [{"name": "baseline"},
             {"name": "int8", "techniques": [{"kind": "quantize_weights", "bits": 8}]}]
    run = store.create_run(w.id, "cpu pilot", {"workload_id": w.id, "generation":
                           {"batch_size": 4}, "cost": {"hardware": "cpu-c7i-large"}}, specs)
    for v in run.variants:
        results = [RequestResult(
            request_index=i, output_text="o", prompt_tokens_logged=None,
            prompt_tokens_original=100, prompt_tokens_sent=100, output_tokens=200,
            ttft_s=0.5, latency_s=LAT[v.name][i], ref_contains=1.0,
            base_cosine=None if v.name == "baseline" else 0.95) for i in range(4)]
        weight, wall = MEASURES[v.name]
        store.finish_variant(v.id, results, VariantMeasurements(weight_bytes=weight, wall_s=wall,
                                                                device="cpu"))
    store.set_run_status(run.id, "done")
    return run.id


def test_a_cpu_measured_variant_projected_to_a_gpu_never_meets_p95_nor_is_recommended(
        store: Store):
    run_id = _cpu_run(store)
    case = build_business_case(store, run_id, ASSUME, catalog=CAT)
    base, int8 = case.rows
    # the baseline meets the target where it was measured: $977.29 on 15 c7i.large
    assert base.target_hardware == "cpu-c7i-large" and not base.projected and base.meets_slo
    assert base.provisioning.gpus == 15 and base.monthly_cost == pytest.approx(977.29, abs=0.01)
    # int8 misses it on the CPU (p95 11.925 s); the RTX 4090's projection would meet it, but
    # is indicative only: not counted, not the bill, named as the pilot that would settle it
    assert int8.passes_gate and not int8.meets_slo and not int8.recommended
    assert int8.target_hardware == "cpu-c7i-large" and not int8.indicative
    assert int8.provisioning.latency_p95_s == pytest.approx(11.925)
    assert int8.alternative is not None and int8.alternative.latency_p95_s < 10
    assert int8.alternative.hardware_name == CATALOG["nvidia-rtx-4090"].name
    assert int8.alternative.monthly_bill == pytest.approx(503.70)  # 0.69 x 730
    assert case.recommendation.name == "baseline" and not case.moves
    # no row anywhere counts a CPU-to-GPU projection as meeting the target
    assert not any(r.meets_slo for r in case.rows if r.indicative)
    # in words: the table says "no", the caveat and the detail name the pilot to run
    header, _, int8_row = variant_rows(case)
    assert int8_row[header.index("Meets p95")] == "no"
    gpu = CATALOG["nvidia-rtx-4090"].name
    said = " ".join(caveats(case))
    assert "Not settled" in said and f"Run the pilot on {gpu} to measure it." in said
    assert "23x to 191x too fast" in said and "'int8'" in said
    assert any(line.startswith("'int8' misses the 10 s p95 target") and
               f"Run the pilot on {gpu} to measure it." in line for line in settle_lines(case))
    assert decision_sentence(case).startswith("Keep the baseline: $977.29 per month on 15 x ")


def test_forced_onto_the_gpu_nothing_is_counted_as_meeting_the_target(store: Store):
    # every variant priced on the RTX 4090 it never ran on: every figure is a CPU-to-GPU
    # bound, so none meets the target and none is recommended, however fast it projects
    run_id = _cpu_run(store)
    forced = build_business_case(store, run_id, replace(ASSUME, target_hardware="nvidia-rtx-4090"),
                                 catalog=CAT)
    assert all(r.indicative and r.projected for r in forced.rows)
    assert all(r.provisioning.latency_p95_s < 10 and not r.meets_slo for r in forced.rows)
    assert all("indicative only" in r.reason for r in forced.rows)
    assert forced.recommendation.name is None and not forced.moves
    header, *rows = variant_rows(forced)
    assert {r[header.index("Meets p95")] for r in rows} == {"not counted (indicative)"}
    assert {r[header.index("Figures")] for r in rows} == {"projected (indicative)"}
    assert all(r[header.index("$/month")].endswith(" (projected)") for r in rows)
    said = " ".join(caveats(forced))
    assert "Indicative only: 'baseline' is priced on 1 x " in said
    assert decision_sentence(forced).startswith("No variant is recommended")
