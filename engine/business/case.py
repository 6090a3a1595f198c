"""The business case of one pilot: what we pay today, with the recommended variant, what it
costs to get there, when it pays back, and how sure we are.

``build_business_case(store, run_id, assumptions)`` reads a stored run (measured figures
through ``engine.pilot.report.build_report``); ``assemble_case(measured, assumptions, catalog)``
does everything else as a pure function, so a page can recompute it live and the tornado
can re-run it with one input changed. The dashboard page and the PDF both consume the
returned ``BusinessCase`` (engine.business.types); every number they show is on it.

Per variant (``VariantCase``):

1. measured unit costs on the hardware it ran on (``engine.economics.cost.unit_costs`` at the
   stated utilisation): labelled measured;
2. right-sizing over the catalog (``engine.economics.sizing.right_size``), then provisioning on each
   fitting device (``engine.economics.traffic.provision``); the target is the device with the
   lowest monthly bill that meets the p95 target (if none meets it, the cheapest one, and
   the row says so). ``Assumptions.target_hardware`` forces one device instead. Figures
   on another device than the measured one are projected (``row.projected``, ``row.method``);
3. the quality gate (``engine.economics.decision``) and the hosted-API bill for its tokens.

Then: the recommendation (cheapest that passes gate and SLO; the baseline competes too),
ROI (``engine.economics.roi``) of moving from the baseline to it, bootstrap ranges over the pilot's
requests, a tornado of the 36-month net, and the cost-versus-accuracy Pareto front.
``Assumptions.price_factor`` scales every $/hour, measured and catalog alike.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime

from engine.business.flags import case_flags
from engine.business.measured import measured_variants, random_weights
from engine.business.ranges import BOOTSTRAP_METHOD, savings_interval, with_intervals
from engine.business.types import (
    FAILED_IN_PILOT,
    Alternative,
    Assumptions,
    BusinessCase,
    MeasuredVariant,
    VariantCase,
)
from engine.core.domain import Run, Status
from engine.core.errors import RunError
from engine.economics import cost, roi, sizing, traffic
from engine.economics.decision import (
    Candidate,
    Recommendation,
    accuracy_value,
    gate,
    missing_reason,
    pareto_front,
    recommend,
    threshold_bounds,
)
from engine.economics.hardware import Hardware, get_hardware

__all__ = ["Assumptions", "BusinessCase", "MeasuredVariant", "VariantCase", "assemble_case",
           "build_business_case", "case_from_report", "measured_variants", "random_weights",
           "require_measured_baseline", "TORNADO_METHOD"]

TORNADO_METHOD = ("36-month net with one input at a time at its low and high value: every "
                  "$/hour -20%/+20%, requests per day -20%/+20%, utilisation -0.2/+0.2 "
                  "(kept in (0, 1]), accuracy threshold -0.05/+0.05 (kept in the metric's range)")


def require_measured_baseline(run: Run) -> None:
    """Raise RunError, saying why and what to do, unless the run's baseline was measured.

    Every figure of a business case is priced against the baseline (the run's first
    variant): without it a case could only print n/a. The CLI's ``roilab report`` and the
    dashboard's PDF buttons and Business case page all ask this first.
    """
    base = run.variants[0] if run.variants else None
    if base is not None and base.status == Status.DONE:
        return
    if base is None:
        raise RunError(f"Run #{run.id} has no variants, so it has no baseline to price; run a "
                       "pilot with at least a baseline (`roilab pilot --workload ID`).")
    if not base.status.finished:
        raise RunError(f"Run #{run.id}'s baseline '{base.name}' has not been measured yet (it is "
                       f"{base.status}); wait for the pilot to finish (`roilab runs` shows its "
                       "status), then ask again.")
    raise RunError(
        f"Run #{run.id} has no measured baseline, so there is no business case to report: its "
        f"baseline '{base.name}' (the first variant, which every other is priced against) "
        f"failed: {(base.error or 'no reason recorded').rstrip('. ')}. Fix that and run the "
        f"pilot again (`roilab pilot --workload {run.workload_id} ...`, the same variants); "
        "`roilab runs` lists the runs whose baseline is ok.")


def build_business_case(store, run_id: int, assumptions: Assumptions | None = None,
                        catalog: Mapping[str, Hardware] | None = None) -> BusinessCase:
    """THE business case of a stored run: what the Overview, Results and Business case
    pages, ``roilab show``, ``roilab report`` and both PDFs show for it.

    ``assumptions`` None = the run's stored ones (``run_assumptions``); a page or a flag
    that changes one passes the full set. The run's own hardware resolves through the
    store (built-ins and the user's entries); ``catalog`` narrows the devices right-sizing
    may pick (default: the store's whole merged catalog)."""
    from engine.pilot.report import build_report

    cat = dict(catalog) if catalog is not None else store.hardware_catalog()
    return case_from_report(build_report(store, run_id), assumptions, cat)


def run_assumptions(report, **changes) -> Assumptions:
    """The assumptions a run's case is priced with: its stored volume
    (``Assumptions.for_run``), then ``changes``. ``report`` is its ``PilotReport``."""
    return Assumptions.for_run(report.requests_per_month, **changes)


def case_from_report(report, assumptions: Assumptions | None,
                     catalog: Mapping[str, Hardware]) -> BusinessCase:
    """The business case of an already built ``PilotReport`` (no store reads); RunError
    when the run's baseline was not measured (``require_measured_baseline``).
    ``assumptions`` None = the run's stored ones (``run_assumptions``)."""
    require_measured_baseline(report.run)
    a = assumptions if assumptions is not None else run_assumptions(report)
    return assemble_case(measured_variants(report), a, catalog,
                         name=report.run.name, run_id=report.run.id,
                         workload=report.workload.name, workload_id=report.run.workload_id)


def _scaled(hw: Hardware, factor: float) -> Hardware:
    return hw if factor == 1 else replace(hw, price_per_hour=hw.price_per_hour * factor)


def _place(mv: MeasuredVariant, a: Assumptions, catalog: Mapping[str, Hardware],
           base: MeasuredVariant | None = None):
    """Right-size, provision on every fitting device, pick the target; (sizing, option, plan,
    note, alternative). A plan on a projection across device kinds never meets the p95
    target (``_gate_indicative``); where the chosen plan misses it and such a projection
    would meet it, that device is the ``alternative`` a pilot there would settle.

    ``base`` (the pilot's baseline, for a variant) makes a CPU-to-GPU projection carry the
    variant's measured speed relative to the baseline instead of crediting its own bytes.
    """
    measured = sizing.Measured(mv.hardware, mv.tokens_per_s or 0.0, mv.requests_per_s or 0.0,
                               mv.latency_p95_s or 0.0, mv.batch, mv.devices)
    if a.target_hardware:
        cands = [get_hardware(a.target_hardware, catalog)]
    else:
        cands = [hw for hw in catalog.values()
                 if hw.kind in a.candidate_kinds or hw.key == mv.hardware.key]
    kv = mv.kv_bytes_per_token if mv.kv_bytes_per_token is not None else (a.kv_bytes_per_token or 0.0)
    ref = None
    if base is not None and base is not mv and base.ok and base.tokens_per_s and base.weight_bytes:
        base_kv = (base.kv_bytes_per_token if base.kv_bytes_per_token is not None
                   else (a.kv_bytes_per_token or 0.0))
        ref = (base.weight_bytes, base_kv, base.tokens_per_s, base.devices)
    rs = sizing.right_size(measured, mv.weight_bytes or 0.0, kv, mv.context_p95_tokens,
                           a.concurrency, cands, a.overhead_fraction, a.engine_efficiency, ref)
    plans = [(o, traffic.provision(o.hardware, o.projection.requests_per_s,
                                   o.projection.latency_p95_s, a.requests_per_day, a.peak_factor,
                                   a.p95_target_s, a.utilisation,
                                   devices_per_replica=mv.devices))
             for o in rs.options if o.fit.fits and o.projection and o.projection.requests_per_s > 0]
    if not plans:
        notes = "; ".join(f"{o.hardware.key}: {o.note}" for o in rs.options if o.note)
        return rs, None, None, f"no device can serve it ({notes or rs.reason})", None
    gated = [(o, _gate_indicative(o, p, mv, a)) for o, p in plans]
    # a measured (or same-kind) bill before an indicative one, even when neither meets the target
    option, plan = min(gated, key=lambda op: (not op[1].meets_slo, _indicative(op[0], mv),
                                              op[1].monthly_bill, op[0].price_per_hour))
    alternative = None
    if not plan.meets_slo:
        hope = [(o, p) for o, p in plans if _indicative(o, mv) and p.meets_slo]
        if hope:
            o, p = min(hope, key=lambda op: (op[1].monthly_bill, op[0].price_per_hour))
            alternative = Alternative(o.hardware.name, p.gpus, p.latency_p95_s, p.monthly_bill)
    return rs, option, plan, plan.reason, alternative


def _indicative(option: sizing.SizingOption, mv: MeasuredVariant) -> bool:
    """Projected across device kinds: indicative only (sizing.CROSS_KIND_CHECK)."""
    return bool(option.projection and option.projection.projected
                and option.hardware.kind != mv.hardware.kind)


def _gate_indicative(option: sizing.SizingOption, plan: traffic.Provisioning,
                     mv: MeasuredVariant, a: Assumptions) -> traffic.Provisioning:
    """A plan on an indicative projection never meets the p95 target: the project measured
    such projections 23x to 191x off (sizing.CROSS_KIND_CHECK), so only a pilot on that
    device can say it does."""
    if not (plan.meets_slo and _indicative(option, mv)):
        return plan
    return replace(plan, meets_slo=False, reason=(
        f"p95 {plan.latency_p95_s:,.2f} s on {option.hardware.name} is projected from a "
        f"{mv.hardware.kind.upper()} measurement (indicative only), so it does not count as "
        f"meeting the {a.p95_target_s:g} s target; run the pilot on {option.hardware.name} "
        "to measure it"))


def memory_method(mv: MeasuredVariant, a: Assumptions) -> str:
    """Where right-sizing's weight and KV-cache figures come from, for the row's method."""
    weights = (f"weights {mv.weight_bytes / 1e9:,.2f} GB measured" if mv.weight_bytes
               else "weights not measured (not counted)")
    if mv.kv_bytes_per_token is not None:
        kv = f"KV cache {mv.kv_bytes_per_token:,.0f} B/token {mv.kv_source or 'as stored'}"
    elif a.kv_bytes_per_token:
        kv = f"KV cache {a.kv_bytes_per_token:,.0f} B/token assumed"
    else:
        kv = "KV cache not counted (no figure stored or assumed)"
    return f"memory: {weights}, {kv}"


def _row(mv: MeasuredVariant, base: MeasuredVariant, a: Assumptions,
         catalog: Mapping[str, Hardware]) -> VariantCase:
    is_base = mv is base
    scored = mv.ok and not mv.random_weights  # random weights: speed and memory only
    acc = accuracy_value(a.accuracy_metric, mv.metrics, base.metrics, is_base) if scored else None
    passes, gate_reason = gate(a.accuracy_metric, a.accuracy_threshold, acc,
                               _missing_accuracy(mv, base, a.accuracy_metric))
    api = None
    if mv.ok and mv.prompt_tokens_sent is not None and mv.output_tokens is not None:
        api = traffic.api_monthly_cost(mv.prompt_tokens_sent, mv.output_tokens, a.requests_per_day,
                                       a.api_price_in_per_1m, a.api_price_out_per_1m)
    common = dict(name=mv.name, techniques=mv.techniques, is_baseline=is_base, ok=mv.ok,
                  measured_hardware=mv.hardware.key, measured_tokens_per_s=mv.tokens_per_s,
                  measured_requests_per_s=mv.requests_per_s,
                  measured_latency_p95_s=mv.latency_p95_s, accuracy=acc, passes_gate=passes,
                  speed_memory_only=mv.ok and mv.random_weights,
                  api_monthly_cost=api, monthly_savings=None, api_monthly_savings=None,
                  devices=mv.devices, measured_hardware_name=mv.hardware.name,
                  measured_kind=mv.hardware.kind, unstable=mv.unstable, busy=mv.busy)
    if not mv.ok:
        return VariantCase(**common, unit_costs=None, sizing=None, target=None,
                           provisioning=None, monthly_cost=None,
                           reason=f"{FAILED_IN_PILOT}{mv.error or 'no output'}")
    uc = cost.unit_costs(mv.price_per_hour, mv.wall_s, mv.n_requests,
                         mv.input_tokens_total, mv.output_tokens_total, mv.prefill_s,
                         mv.decode_s, a.utilisation)
    rs, option, plan, note, alternative = _place(mv, a, catalog, base)
    reason = "; ".join(filter(None, [gate_reason, note]))
    return VariantCase(**common, unit_costs=uc, sizing=rs, target=option, provisioning=plan,
                       monthly_cost=plan.monthly_bill if plan else None, reason=reason,
                       memory_method=memory_method(mv, a), alternative=alternative)


def _missing_accuracy(mv: MeasuredVariant, base: MeasuredVariant, metric: str) -> str:
    """Why ``mv`` has no figure for the gate metric (engine.economics.decision.missing_reason)."""
    return missing_reason(metric, random_weights=mv.random_weights,
                          baseline_random_weights=base.random_weights, is_baseline=mv is base,
                          references=mv.n_references, requests=mv.n_requests,
                          baseline_value=base.metrics.get(metric.removesuffix("_retention")))


def quality_check(measured: Sequence[MeasuredVariant], workload_id: int | None) -> str:
    """What to run to measure the quality of the random-weights variants; "" when none."""
    shapes = sorted({m.model for m in measured if m.random_weights})
    if not shapes:
        return ""
    wid = workload_id if workload_id is not None else "ID"
    return ("To measure their quality, run the same variants with real weights: in the pilot "
            "spec (the file you ran, or 'Pilot spec' on the Results page) set each variant's "
            f"\"model\" to a local checkpoint folder of that architecture instead of "
            f"{' / '.join(shapes)} (the folder holding config.json and the weights, e.g. "
            f"\"model\": \"/models/llama-3.1-8b-instruct\"), then run `roilab pilot --workload "
            f"{wid} --spec pilot.json`. The quality gate then scores each variant against the "
            "baseline's answers (and the log's reference answers where it has them).")


def _recommendation(rec: Recommendation, rows: Sequence[VariantCase]) -> Recommendation:
    """Say so when random weights, not quality, are why nothing is recommended."""
    unscored = [r.name for r in rows if r.ok and r.speed_memory_only]
    if rec.name is not None or not unscored:
        return rec
    if len(unscored) == sum(r.ok for r in rows):
        return Recommendation(None, (
            "No variant can be recommended yet: every measured variant has random weights "
            f"({', '.join(unscored)}), so none has an accuracy figure for the quality gate; "
            "their speed, memory and costs are measured. What each would save if its quality "
            "holds is shown beside it; measure quality before choosing."))
    return Recommendation(None, f"{rec.reason} {', '.join(unscored)}: random weights, so "
                                "measure their quality before choosing.")


def _with_savings(row: VariantCase, base: VariantCase) -> VariantCase:
    def diff(b, v):
        return b - v if b is not None and v is not None else None
    return replace(row, monthly_savings=diff(base.monthly_cost, row.monthly_cost),
                   api_monthly_savings=diff(base.api_monthly_cost, row.api_monthly_cost))


def assemble_case(measured: Sequence[MeasuredVariant], assumptions: Assumptions,
                  catalog: Mapping[str, Hardware], name: str = "", run_id: int | None = None,
                  workload: str = "", extras: bool = True,
                  workload_id: int | None = None) -> BusinessCase:
    """The whole case from measurements (baseline first) and assumptions; pure.

    ``extras=False`` skips the bootstrap ranges and the tornado (used inside the tornado).
    """
    if not measured:
        raise ValueError("assemble_case needs at least the baseline's measurements.")
    a = assumptions
    cat = {k: _scaled(hw, a.price_factor) for k, hw in catalog.items()}
    mvs = [_with_load_capacity(replace(m, hardware=_scaled(m.hardware, a.price_factor)), a)
           for m in measured]
    rows = [_row(m, mvs[0], a, cat) for m in mvs]
    rows = [_with_savings(r, rows[0]) for r in rows]
    rec = _recommendation(recommend(Candidate(r.name, r.monthly_cost, r.accuracy, r.passes_gate,
                                              r.meets_slo, r.reason) for r in rows), rows)
    rows = [replace(r, recommended=r.name == rec.name) for r in rows]
    chosen = next((r for r in rows if r.recommended), None)
    base_row = rows[0]
    savings = (chosen.monthly_savings or 0.0) if chosen else 0.0
    one_time = 0.0
    if chosen is not None and not chosen.is_baseline:
        price = chosen.target.hardware.price_per_hour if chosen.target else mvs[0].hardware.price_per_hour
        one_time = roi.one_time_cost(a.engineering_days, a.day_rate, a.gpu_hours, price)
    savings_iv, tornado_rows = None, ()
    if extras:
        rows = [with_intervals(r, m, a) for r, m in zip(rows, mvs, strict=True)]
        k = next((i for i, r in enumerate(rows) if r.recommended), None)
        if k is not None:
            savings_iv = savings_interval(mvs[0], rows[0], mvs[k], rows[k], a)
        tornado_rows = tuple(_tornado(measured, a, catalog))
    moves = chosen is not None and not chosen.is_baseline
    return BusinessCase(
        name=name, run_id=run_id, workload=workload, assumptions=a,
        measured_hardware=mvs[0].hardware, rows=tuple(rows), recommendation=rec,
        baseline_monthly_cost=base_row.monthly_cost,
        recommended_monthly_cost=chosen.monthly_cost if moves else None,
        monthly_savings=savings, savings_interval=savings_iv, roi=roi.roi(one_time, savings),
        api_baseline_monthly_cost=base_row.api_monthly_cost, tornado=tornado_rows,
        pareto=tuple(pareto_front((r.name, r.monthly_cost, r.accuracy) for r in rows)),
        methods=_methods(a, mvs[0].hardware), generated_at=datetime.now(UTC),
        quality_check=quality_check(mvs, workload_id),
        flags=case_flags(rows, rec, a, base_row.api_monthly_cost))


def _with_load_capacity(mv: MeasuredVariant, a: Assumptions) -> MeasuredVariant:
    """Size with the load run's requests/s at the SLO (and latency there) where one is given."""
    for name, rps, latency in a.load_capacity:
        if name == mv.name and mv.ok:
            return replace(mv, requests_per_s=rps,
                           latency_p95_s=mv.latency_p95_s if latency is None else latency)
    return mv


def _methods(a: Assumptions, hw: Hardware) -> dict[str, str]:
    capacity = {"capacity": "requests/s per device = capacity at the SLO from a load sweep "
                f"({a.load_capacity_source or 'load run'}) for "
                f"{', '.join(n for n, _, _ in a.load_capacity)}; single-stream pilot "
                "throughput for the others"} if a.load_capacity else {}
    return capacity | {
        "measured": f"measured on {hw.name} at ${hw.price_per_hour:g}/h per device "
                    f"({hw.price_source}, {hw.price_date}) over the pilot's own requests; "
                    "a variant is priced at that x the devices its engine occupies "
                    "(tensor x pipeline parallel size)",
        "unit_costs": cost.UNIT_COST_METHOD,
        "sizing": "weights + KV cache (p95 context x concurrency) + "
                  f"{a.overhead_fraction:.0%} of memory held back must fit one replica (one "
                  "device, or tensor x pipeline parallel size devices); weights and KV "
                  "bytes/token as measured by the serving engine where stored, else the "
                  "model config's estimate (each row's method says which); "
                  "projection per engine.economics.sizing (bandwidth ratio capped by compute ratio, "
                  "or roofline bound x engine efficiency across CPU/GPU)",
        "traffic": "replicas = ceil(peak req/s / (req/s per replica x utilisation)); "
                   "devices = replicas x devices per replica; "
                   f"monthly cost = {traffic.COST_MODEL} (paid whether busy or not), at "
                   f"{a.requests_per_day:,.0f} requests/day x {a.peak_factor:g} peak",
        "roi": "one-time = engineering days x day rate + GPU hours x target $/h; "
               "payback = one-time / monthly savings; net = savings x months - one-time",
        "bootstrap": BOOTSTRAP_METHOD, "tornado": TORNADO_METHOD, "api": a.api_price_source}


def _tornado(measured: Sequence[MeasuredVariant], a: Assumptions,
             catalog: Mapping[str, Hardware]) -> list[roi.TornadoRow]:
    def net36(inputs: dict) -> float:
        return assemble_case(measured, replace(a, **inputs), catalog, extras=False).roi.net_36

    u, t = a.utilisation, a.accuracy_threshold
    low, high = threshold_bounds(a.accuracy_metric)
    ranges = {"price_factor": (a.price_factor * 0.8, a.price_factor * 1.2),
              "requests_per_day": (a.requests_per_day * 0.8, a.requests_per_day * 1.2),
              "utilisation": (max(0.05, u - 0.2), min(1.0, u + 0.2)),
              "accuracy_threshold": (max(low, t - 0.05), min(high, t + 0.05))}
    base = {k: getattr(a, k) for k in ranges}
    return roi.tornado(net36, base, ranges)

