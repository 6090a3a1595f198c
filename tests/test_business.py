"""ROI, quality gate, recommendation and the business case over a stored run.

Every expected number is worked out by hand in the comment beside it.
"""
from __future__ import annotations

import math

import pytest

from engine.business.case import Assumptions, build_business_case
from engine.business.portfolio import portfolio
from engine.core.domain import LogRequest, ParsedLog, RequestResult, VariantMeasurements
from engine.core.errors import SpecError
from engine.economics.decision import (
    RANDOM_WEIGHTS,
    Candidate,
    accuracy_value,
    gate,
    missing_reason,
    pareto_front,
    recommend,
)
from engine.economics.hardware import CATALOG
from engine.economics.roi import (
    bootstrap_mean,
    net_after,
    one_time_cost,
    payback_months,
    roi,
    tornado,
)
from engine.reports.business_pdf import executive_summary, if_quality_holds, variant_rows
from engine.store.store import Store

# --- ROI ---------------------------------------------------------------------------------


def test_one_time_payback_and_net_by_hand():
    # 10 days x $800 + 20 GPU hours x $1.79 = 8,000 + 35.80 = $8,035.80
    assert one_time_cost(10, 800, 20, 1.79) == pytest.approx(8035.8)
    r = roi(8035.8, 2000.0)
    assert r.payback_months == pytest.approx(4.0179)  # 8,035.8 / 2,000
    assert r.net_12 == pytest.approx(15_964.2)  # 2,000 x 12 - 8,035.8
    assert r.net_36 == pytest.approx(63_964.2)  # 2,000 x 36 - 8,035.8
    assert len(r.curve) == 37 and r.curve[0] == (0, -8035.8)
    assert r.curve[36][1] == pytest.approx(63_964.2)
    assert net_after(4, 8035.8, 2000.0) == pytest.approx(-35.8)  # not yet paid back at 4
    assert payback_months(8035.8, 0.0) is None  # never pays back
    assert payback_months(8035.8, -10.0) is None
    assert payback_months(0.0, 5.0) == 0.0
    with pytest.raises(ValueError, match=">= 0"):
        one_time_cost(-1, 800, 0, 1)


def test_tornado_sorted_by_swing():
    # metric x*y at base x=2, y=10 (=20): x 1..3 -> 10..30 (swing 20); y 5..20 -> 10..40 (30)
    rows = tornado(lambda d: d["x"] * d["y"], {"x": 2, "y": 10}, {"x": (1, 3), "y": (5, 20)})
    assert [r.factor for r in rows] == ["y", "x"]
    assert (rows[0].low_value, rows[0].high_value, rows[0].swing) == (10, 40, 30)
    assert (rows[1].low_value, rows[1].high_value, rows[1].base_value) == (10, 30, 20)


def test_bootstrap_by_hand():
    # all values equal: every resample's mean is 3
    iv = bootstrap_mean([3.0, 3.0, 3.0], n_resamples=200)
    assert (iv.point, iv.low, iv.high) == (3.0, 3.0, 3.0)
    # two values 0 and 10: resample means are 0 (p=1/4), 5 (1/2), 10 (1/4), so with 4,000
    # resamples p5 = 0 and p95 = 10; the point is the mean of all, 5
    iv = bootstrap_mean([0.0, 10.0, None], n_resamples=4000, seed=1)  # None dropped
    assert (iv.point, iv.low, iv.high) == (5.0, 0.0, 10.0)
    assert "2 requests, 4000 resamples, seed 1, p5-p95" in iv.method
    # seeded: the same call gives the same range
    a = bootstrap_mean([1.0, 2.0, 4.0, 8.0], seed=7)
    assert a == bootstrap_mean([1.0, 2.0, 4.0, 8.0], seed=7)
    assert 1.0 <= a.low <= a.point == 3.75 <= a.high <= 8.0


# --- quality gate and recommendation -----------------------------------------------------


def test_accuracy_value_and_gate():
    base, var = {"ref_contains": 0.8, "base_cosine": None}, {"ref_contains": 0.6, "base_cosine": 0.93}
    assert accuracy_value("ref_contains", var, base) == 0.6
    assert accuracy_value("ref_contains_retention", var, base) == pytest.approx(0.75)  # 0.6/0.8
    assert accuracy_value("base_cosine", base, base, is_baseline=True) == 1.0  # itself
    assert accuracy_value("ref_contains_retention", base, base, is_baseline=True) == 1.0
    assert gate("base_cosine", 0.9, 0.93) == (True, "")
    ok, why = gate("ref_contains", 0.9, 0.6)
    assert not ok and why == "reference answer contained 0.600 is below the required 0.9"
    ok, why = gate("ref_f1", 0.5, None)
    assert not ok and why == "no figure for word overlap (F1) with the reference answer"
    with pytest.raises(SpecError, match="ref_contains_retention"):  # lists the known ones
        accuracy_value("bleu", var, base)


def test_a_missing_accuracy_figure_gives_its_cause_not_a_guess():
    def why(metric, **kw):
        args = dict(random_weights=False, baseline_random_weights=False, is_baseline=False,
                    references=3, requests=3, baseline_value=0.8) | kw
        return missing_reason(metric, **args)

    # random weights: said so, whatever the metric; the log is not blamed
    for metric in ("base_cosine", "ref_contains", "ref_f1_retention"):
        assert why(metric, random_weights=True) == RANDOM_WEIGHTS
    assert RANDOM_WEIGHTS == "random weights: speed and memory only; accuracy not measured"
    assert gate("base_cosine", 0.9, None, RANDOM_WEIGHTS) == (False, RANDOM_WEIGHTS)
    # a reference metric on requests without reference answers: how many had one
    no_refs = why("ref_contains", references=0)
    assert "none of the 3 requests replayed has a reference answer in the log" in no_refs
    assert "choose base_cosine or base_rouge_l" in no_refs
    # a random-weights baseline: nothing to compare with, and it is the baseline's doing
    base = why("base_cosine", baseline_random_weights=True)
    assert "the baseline has random weights" in base and "log" not in base
    assert "the baseline has random weights" in why("ref_contains_retention",
                                                    baseline_random_weights=True)
    assert "the baseline scores 0 on ref_contains" in why("ref_contains_retention",
                                                          baseline_value=0.0)
    # references were there but no figure was stored: say exactly that
    assert why("ref_f1", references=2) == ("no ref_f1 figure was stored for this variant (2 of "
                                           "the 3 requests replayed have a reference answer)")


def test_recommend_cheapest_passing_gate_and_slo():
    cands = [Candidate("a", 100.0, 0.7, False, True, "below gate"),
             Candidate("b", 150.0, 0.95, True, True, ""),
             Candidate("c", 120.0, 0.92, True, False, "too slow"),
             Candidate("d", 200.0, 0.99, True, True, "")]
    rec = recommend(cands)
    assert rec.name == "b" and "($150.00 per month)" in rec.reason  # a fails gate, c fails SLO
    none = recommend([cands[0], cands[2]])
    assert none.name is None and "a: below gate" in none.reason and "c: too slow" in none.reason


def test_pareto_front():
    # a (100, .90) beats c (120, .85); b (150, .95) beats d (200, .94); e has no cost
    pts = [("a", 100, 0.90), ("b", 150, 0.95), ("c", 120, 0.85), ("d", 200, 0.94), ("e", None, 1)]
    assert pareto_front(pts) == ["a", "b"]


def test_assumptions_refuse_bad_values_by_name():
    with pytest.raises(SpecError, match="'utilisation'.*e.g. 0.7"):
        Assumptions(utilisation=70)
    with pytest.raises(SpecError, match="'peak_factor'"):
        Assumptions(peak_factor=0.5)
    with pytest.raises(SpecError, match="Unknown accuracy metric"):
        Assumptions(accuracy_metric="bleu")


# --- the business case of a stored run ---------------------------------------------------
#
# Measured on an A100 80 GB ($1.79/h), 4 requests, batch 4. Per request: 1,000 prompt tokens
# (500 after LLMLingua), 200 output tokens, time to first token 0.5 s.
#   baseline: fp16 16e9 B, wall 8 s -> 800 / 8 = 100 tok/s, 4 / 8 = 0.5 req/s,
#             latencies 1.5, 2, 2, 2.5 -> p95 = 2 + 0.85 x 0.5 = 2.425 s
#   int4:     4.5e9 B, wall 4 s -> 200 tok/s, 1 req/s, latencies halved -> p95 1.2125 s,
#             base_cosine 0.88, 0.94, 0.94, 1.0 (mean 0.94), ref_contains 1, 1, 1, 0
#   lingua:   16e9 B, wall 6 s -> 0.6667 req/s, base_cosine 0.5 (fails a 0.9 gate)
# Catalog: A10G and A100 80 GB only. KV 131,072 B/token, concurrency 64.
LAT = {"baseline": [1.5, 2.0, 2.0, 2.5], "int4": [0.75, 1.0, 1.0, 1.25],
       "lingua": [1.0, 1.5, 1.5, 2.0]}
COS = {"baseline": [None] * 4, "int4": [0.88, 0.94, 0.94, 1.0], "lingua": [0.5] * 4}
CONTAINS = {"baseline": [1.0] * 4, "int4": [1.0, 1.0, 1.0, 0.0], "lingua": [1.0] * 4}
SENT = {"baseline": 1000, "int4": 1000, "lingua": 500}
MEASURES = {"baseline": (16e9, 8.0), "int4": (4.5e9, 4.0), "lingua": (16e9, 6.0)}
CAT = {k: CATALOG[k] for k in ("nvidia-a10g", "nvidia-a100-80gb")}
ASSUME = Assumptions(requests_per_day=8640, peak_factor=2.0, p95_target_s=5.0, utilisation=1.0,
                     concurrency=64, kv_bytes_per_token=131_072, engineering_days=10,
                     day_rate=800, gpu_hours=20, accuracy_metric="base_cosine",
                     accuracy_threshold=0.9, bootstrap_resamples=200)


def _stored_run(store: Store, random: tuple[str, ...] = ()) -> int:
    """The hand-worked run; variants named in ``random`` have random weights, stored as the
    runner stores them: same speed and memory, no accuracy figures."""
    reqs = tuple(LogRequest(line=i + 1, messages=({"role": "user", "content": f"q{i}"},),
                            reference=f"a{i}") for i in range(4))
    w = store.add_workload("support", "s.jsonl", b"x", ParsedLog("prompt_jsonl", reqs, (), 4))
    specs = [{"name": "baseline"},
             {"name": "int4", "techniques": [{"kind": "quantize_weights", "bits": 4}]},
             {"name": "lingua", "techniques": [{"kind": "compress_prompt", "rate": 0.5}]}]
    specs = [s | {"model": "random:llama-3.1-8b"} if s["name"] in random else s for s in specs]
    run = store.create_run(w.id, "support pilot", {"workload_id": w.id, "generation":
                           {"batch_size": 4}, "cost": {"hardware": "nvidia-a100-80gb"}}, specs)
    for v in run.variants:
        results = [RequestResult(
            request_index=i, output_text="o", prompt_tokens_logged=None,
            prompt_tokens_original=1000, prompt_tokens_sent=SENT[v.name], output_tokens=200,
            ttft_s=0.5, latency_s=LAT[v.name][i],
            ref_contains=None if v.name in random else CONTAINS[v.name][i],
            base_cosine=None if v.name in random else COS[v.name][i]) for i in range(4)]
        weight, wall = MEASURES[v.name]
        store.finish_variant(v.id, results, VariantMeasurements(weight_bytes=weight, wall_s=wall,
                                                                device="cuda"))
    store.set_run_status(run.id, "done")
    return run.id


def test_business_case_from_a_stored_run_by_hand(store: Store):
    case = build_business_case(store, _stored_run(store), ASSUME, catalog=CAT)
    base, int4, lingua = case.rows
    assert (case.name, case.workload, case.measured_hardware.key) == \
        ("support pilot", "support", "nvidia-a100-80gb")

    # measured unit costs, baseline: dollars = 1.79 x 8 / 3600 = $0.0039778; prefill share
    # f = sum ttft / sum latency = 2.0 / 8.0 = 0.25
    u = base.unit_costs
    assert u.prefill_fraction == pytest.approx(0.25)
    assert u.cost_per_1m_input_tokens == pytest.approx(0.248611, rel=1e-5)  # x .25 / 4,000 x 1e6
    assert u.cost_per_1m_output_tokens == pytest.approx(3.729167, rel=1e-5)  # x .75 / 800 x 1e6
    assert u.cost_per_1k_requests == pytest.approx(0.994444, rel=1e-5)  # / 4 x 1000

    # peak = 8,640 / 86,400 x 2 = 0.2 req/s.
    # baseline: KV 131,072 x 1,200 x 64 = 10.07e9 B; 16e9 + 10.07e9 + 2.4e9 > 24e9 on the
    # A10G -> A100 only, measured: ceil(0.2 / 0.5) = 1 GPU -> 1 x 1.79 x 730 = $1,306.70
    assert base.target_hardware == "nvidia-a100-80gb" and not base.projected
    assert base.provisioning.gpus == 1 and base.monthly_cost == pytest.approx(1306.70)
    # int4: 4.5e9 + 10.07e9 + 2.4e9 = 16.97e9 fits the A10G; projected x 600/2039 = 0.29426:
    # 0.29426 req/s -> 1 GPU -> 1.006 x 730 = $734.38; p95 1.2125 / 0.29426 = 4.12 s <= 5 s
    assert int4.target_hardware == "nvidia-a10g" and int4.projected
    assert "600/2039 GB/s" in int4.method
    assert int4.provisioning.latency_p95_s == pytest.approx(4.1205, rel=1e-4)
    assert int4.monthly_cost == pytest.approx(734.38)
    assert int4.monthly_savings == pytest.approx(572.32)  # 1,306.70 - 734.38
    # lingua: 16e9 + 131,072 x 700 x 64 (5.87e9) + 2.4e9 = 24.27e9 > 24e9 -> A100, $1,306.70;
    # below the gate: kept in the table, never recommended, with the reason
    assert lingua.monthly_cost == pytest.approx(1306.70) and not lingua.passes_gate
    assert "similarity to the baseline's answers (cosine) 0.500 is below the required 0.9" in lingua.reason
    assert int4.accuracy == pytest.approx(0.94) and base.accuracy == 1.0

    # recommendation and ROI: one-time = 10 x 800 + 20 h x $1.006 (A10G) = $8,020.12
    assert case.recommendation.name == "int4" and int4.recommended
    assert (case.baseline_monthly_cost, case.recommended_monthly_cost) == \
        (pytest.approx(1306.70), pytest.approx(734.38))
    assert case.roi.one_time == pytest.approx(8020.12)
    assert case.roi.payback_months == pytest.approx(14.0134, rel=1e-4)  # 8,020.12 / 572.32
    assert case.roi.net_12 == pytest.approx(-1152.28)  # 572.32 x 12 - 8,020.12
    assert case.roi.net_36 == pytest.approx(12_583.40)  # 572.32 x 36 - 8,020.12
    assert case.roi.curve[0] == (0, pytest.approx(-8020.12))

    # hosted API: 8,640 x 730 / 24 = 262,800 requests a month;
    # baseline (1,000 x 2.50 + 200 x 10) / 1e6 = $0.0045 -> $1,182.60;
    # lingua (500 x 2.50 + 2,000) / 1e6 = $0.00325 -> $854.10, saving $328.50
    assert case.api_baseline_monthly_cost == pytest.approx(1182.60)
    assert lingua.api_monthly_cost == pytest.approx(854.10)
    assert lingua.api_monthly_savings == pytest.approx(328.50)

    # Pareto: int4 (734, .94) and baseline (1,307, 1.0); lingua (1,307, .5) is dominated
    assert case.pareto == ("int4", "baseline")

    # bootstrap: latency resamples move capacity by at most 2.0/1.5 and 2.0/2.5, and one
    # device still serves 0.2 req/s either way (A10G 0.294 x 0.8 = 0.235), so the always-on
    # bill, and the saving, do not move: the range is one figure, honestly
    iv = case.savings_interval
    assert (iv.low, iv.point, iv.high) == pytest.approx((572.32, 572.32, 572.32))
    acc = int4.accuracy_interval
    assert acc.point == pytest.approx(0.94) and 0.88 <= acc.low <= 0.94 <= acc.high <= 1.0
    assert base.latency_interval.point == pytest.approx(2.0)

    # tornado of the 36-month net (base $12,583.40):
    # accuracy threshold 0.85 -> unchanged; 0.95 -> int4 (0.94) fails the gate, the
    # baseline is kept, net $0: swing $12,583.40, the largest
    top, price = case.tornado[0], case.tornado[1]
    assert top.factor == "accuracy_threshold" and top.base_value == pytest.approx(12_583.40)
    assert (top.low_value, top.high_value) == (pytest.approx(12_583.40), 0.0)
    # price x0.8: saving 572.32 x 0.8 = 457.856, one-time 8,000 + 20 x 0.8048 = 8,016.096
    #       -> 457.856 x 36 - 8,016.096 = $8,466.72
    # price x1.2: saving 686.784, one-time 8,000 + 20 x 1.2072 = 8,024.144 -> $16,700.08
    assert price.factor == "price_factor"
    assert (price.low_value, price.high_value) == (pytest.approx(8466.72), pytest.approx(16_700.08))
    # volume +-20% and utilisation 0.8..1.0 still need one device each: no swing
    assert [r.swing for r in case.tornado[2:]] == [0.0, 0.0]
    assert {r.factor for r in case.tornado[2:]} == {"requests_per_day", "utilisation"}
    frame = case.frame()
    assert list(frame.variant) == ["baseline", "int4", "lingua"]
    assert list(frame.projected) == [False, True, False]
    assert set(case.methods) >= {"measured", "unit_costs", "sizing", "traffic", "roi"}


def test_business_case_when_no_cheaper_variant_passes_and_portfolio(store: Store):
    run_id = _stored_run(store)
    # ref_contains retention >= 0.8: int4 keeps 0.75 / 1.0 = 0.75 -> fails; lingua keeps 1.0
    # but costs the same $1,306.70 as the baseline -> the tie goes to the baseline (first)
    strict = Assumptions(**{**ASSUME.__dict__, "accuracy_metric": "ref_contains_retention",
                            "accuracy_threshold": 0.8})
    keep = build_business_case(store, run_id, strict, catalog=CAT)
    assert keep.recommendation.name == "baseline" and keep.monthly_savings == 0.0
    assert keep.roi.one_time == 0.0 and keep.roi.payback_months is None
    assert "share of the baseline's reference answer contained kept 0.750 is below the required 0.8" in keep.rows[1].reason
    # SLO of 1 s: nothing meets it -> no recommendation, and it says why
    none = build_business_case(store, run_id, Assumptions(**{**ASSUME.__dict__,
                                                             "p95_target_s": 1.0}), catalog=CAT)
    assert none.recommendation.name is None and "exceeds the 1 s target" in none.recommendation.reason

    # portfolio of the two workflows (the int4 case and the keep-baseline case):
    # baseline annual 2 x 12 x 1,306.70 = $31,360.80; after 12 x 734.38 + 12 x 1,306.70 =
    # $24,492.96; saving $6,867.84 a year; one-time $8,020.12; payback 8,020.12 /
    # (6,867.84 / 12) = 14.01 months
    go = build_business_case(store, run_id, ASSUME, catalog=CAT)
    p = portfolio([go, keep])
    assert [r.recommended for r in p.rows] == ["int4", "baseline"]
    t = p.total
    assert t.baseline_annual == pytest.approx(31_360.80)
    assert t.recommended_annual == pytest.approx(24_492.96)
    assert t.annual_savings == pytest.approx(6867.84)
    assert t.one_time == pytest.approx(8020.12)
    assert t.payback_months == pytest.approx(14.0134, rel=1e-4)
    assert math.isclose(p.rows[1].annual_savings, 0.0) and p.skipped == ()


def test_business_case_resolves_user_hardware(store: Store):
    run_id = _stored_run(store)
    # a reserved A10G at $0.50/h overrides the built-in: int4's bill 0.50 x 730 = $365.00
    store.update_hardware("nvidia-a10g", price_per_hour=0.50, price_source="1-year reserved",
                          price_date="2025-06")
    cat = {k: v for k, v in store.hardware_catalog().items() if k in CAT}
    case = build_business_case(store, run_id, ASSUME, catalog=cat)
    assert case.rows[1].monthly_cost == pytest.approx(365.0)
    # forcing one target device: everything on the A100 (int4 measured there: 1 GPU)
    forced = build_business_case(store, run_id, Assumptions(
        **{**ASSUME.__dict__, "target_hardware": "nvidia-a100-80gb"}), catalog=CAT)
    assert {r.target_hardware for r in forced.rows} == {"nvidia-a100-80gb"}
    assert not any(r.projected for r in forced.rows)


def test_random_weights_are_costed_if_quality_holds_never_recommended(store: Store):
    # int4 with random weights: the same speed and memory as above, no accuracy. Its bill
    # and saving are as worked out above ($734.38, saving $572.32), shown as what it would
    # save if its quality holds; the recommendation falls back to the baseline (lingua fails
    # the gate at 0.500, as above).
    case = build_business_case(store, _stored_run(store, random=("int4",)), ASSUME, catalog=CAT)
    base, int4, lingua = case.rows
    assert int4.speed_memory_only and not base.speed_memory_only
    assert int4.reason == RANDOM_WEIGHTS and int4.accuracy is None and not int4.passes_gate
    assert "log" not in int4.reason
    assert int4.monthly_cost == pytest.approx(734.38)
    assert int4.monthly_savings == pytest.approx(572.32)
    assert case.recommendation.name == "baseline" and case.monthly_savings == 0.0
    holds = if_quality_holds(case)
    assert len(holds) == 1 and holds[0].startswith(
        "'int4' would save $572.32 per month if its quality holds ($734.38 per month on ")
    summary = " ".join(executive_summary(case))
    assert holds[0] in summary and "Speed and memory only (random weights" in summary
    # what to run to measure its quality, with the workload and the shape to replace
    assert "roilab pilot --workload 1 --spec pilot.json" in case.quality_check
    assert "instead of random:llama-3.1-8b" in case.quality_check
    assert case.quality_check in summary
    frame = case.frame()
    assert list(frame.speed_memory_only) == [False, True, False]


def test_all_random_weights_show_every_cost_if_quality_holds(store: Store):
    # every variant random, the baseline too: nothing has an accuracy figure, so nothing is
    # recommended, but every bill is there: baseline $1,306.70; int4 saves $572.32;
    # lingua ($1,306.70 on the A100, as above) saves nothing
    names = ("baseline", "int4", "lingua")
    case = build_business_case(store, _stored_run(store, random=names), ASSUME, catalog=CAT)
    assert [r.reason for r in case.rows] == [RANDOM_WEIGHTS] * 3
    assert case.recommendation.name is None
    assert case.recommendation.reason.startswith(
        "No variant can be recommended yet: every measured variant has random weights "
        "(baseline, int4, lingua)")
    assert case.baseline_monthly_cost == pytest.approx(1306.70)
    assert [r.monthly_savings for r in case.rows] == pytest.approx([0.0, 572.32, 0.0])
    holds = if_quality_holds(case)
    assert holds[0].startswith("'int4' would save $572.32 per month if its quality holds")
    assert holds[1].startswith("'lingua' would save nothing even if its quality holds "
                               "($1,306.70 per month on ")
    header, *pdf_rows = variant_rows(case)
    acc, saving = header.index("Accuracy"), header.index("Saving/month")
    assert [r[acc] for r in pdf_rows] == ["not measured"] * 3
    assert pdf_rows[1][saving] == "$572.32 saved (projected) if quality holds"  # int4
