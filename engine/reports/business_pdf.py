"""The business case (engine.business.case.BusinessCase) as PDF pages.

Page 1 says the answer: the recommendation (or why there is none), the volume, target
hardware and cost model it was priced with, the flags (engine.business.flags), the headline
figures and the before/after chart. Then the assumptions and methodology, the four charts
(engine.reports.case_charts), the per-variant table, and the pilot's measurements
(engine.reports.pilot_pdf) with its appendix of sample outputs. The words are
engine.reports.case_words (re-exported here); ``business_pdf_for_run`` builds everything from
a stored run. Every projected figure is labelled projected, with its method.
"""
from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from engine.business.case import Assumptions, BusinessCase, case_from_report
from engine.core.domain import Status
from engine.economics.decision import SPEED_MEMORY_ONLY
from engine.economics.hardware import Hardware
from engine.economics.traffic import COST_MODEL
from engine.pilot.report import PilotReport, build_report, side_by_side
from engine.reports.case_charts import (
    AFTER,
    BAD,
    BEFORE,
    GOOD,
    before_after_png,
    chart_notes,
    charts_png,
)
from engine.reports.case_words import (
    TORNADO_LABELS,
    basis,
    basis_detail,
    business_figures,
    case_headline,
    executive_summary,
    fmt_months,
    fmt_range,
    if_quality_holds,
    priced_at,
)
from engine.reports.pdf import NA, fmt_money, fmt_pct, fmt_score, new_doc, table, write_file
from engine.reports.pilot_pdf import appendix, pilot_sections, title_block

__all__ = ["AFTER", "BAD", "BEFORE", "GOOD", "TORNADO_LABELS", "assumption_rows", "basis",
           "basis_detail", "business_figures", "business_pdf_for_run", "business_title",
           "case_headline", "charts_png", "executive_summary", "fmt_money", "fmt_months",
           "fmt_range", "if_quality_holds", "methodology", "priced_at", "render_business_pdf",
           "variant_rows", "write_business_pdf"]

_METHOD_LABELS = {"measured": "Measured prices", "unit_costs": "Unit costs ($/1M, $/1k)",
                  "sizing": "Right-sizing", "traffic": "Traffic and bill", "roi": "ROI",
                  "bootstrap": "Ranges (bootstrap)", "tornado": "Sensitivity (tornado)",
                  "api": "Hosted API price"}


def business_title(report: PilotReport) -> str:
    return f"roilab business case - {report.run.name} (run #{report.run.id})"


def assumption_rows(case: BusinessCase) -> list[tuple[str, str]]:
    """(label, value) of every input of the case, with units."""
    a, hw = case.assumptions, case.measured_hardware
    kv = "as stored with the run (measured by the engine, KV technique or model config)" + (
        f", else {a.kv_bytes_per_token:,.0f} bytes" if a.kv_bytes_per_token is not None
        else ", else not counted")
    return [
        ("Requests per day", f"{a.requests_per_day:,.0f}"),
        ("Peak-to-average traffic", f"{a.peak_factor:g}x"),
        ("p95 latency target", f"{a.p95_target_s:g} s"),
        ("Utilisation", f"{fmt_pct(a.utilisation)} of measured capacity"),
        ("Concurrency per device", f"{a.concurrency} requests (KV cache sizing)"),
        ("KV cache per token", kv),
        ("Memory held back", fmt_pct(a.overhead_fraction)),
        ("Engine efficiency (CPU to GPU)", fmt_pct(a.engine_efficiency)),
        ("Target hardware", a.target_hardware or "auto: cheapest monthly bill that meets the "
                                                  f"p95 target ({', '.join(a.candidate_kinds)})"),
        ("Engineering days x day rate", f"{a.engineering_days:g} x {fmt_money(a.day_rate)}"),
        ("GPU hours (compression, validation)", f"{a.gpu_hours:g} h at the target's $/hour"),
        ("Quality gate", f"{a.accuracy_metric} >= {a.accuracy_threshold:g}"),
        ("Hosted API price", f"{fmt_money(a.api_price_in_per_1m)} in / "
                             f"{fmt_money(a.api_price_out_per_1m)} out per 1M tokens"),
        ("Hosted API source", a.api_price_source),
        ("Price multiplier", f"{a.price_factor:g}"),
        ("Bootstrap", f"{a.bootstrap_resamples} resamples, seed {a.seed}, p5-p95"),
        ("Monthly cost model", COST_MODEL),
        ("Measured on", f"{hw.name} at {fmt_money(hw.price_per_hour)}/hour per device "
                        f"({hw.price_source}, {hw.price_date}); a variant pays that x its "
                        "devices (tensor x pipeline parallel size)")]


def variant_rows(case: BusinessCase) -> list[tuple[str, ...]]:
    """The per-variant table: accuracy and gate, measured vs projected, devices and bills."""
    rows = [("Variant", "Techniques", "Accuracy", "Gate", "Figures", "Target hardware",
             "Per replica", "GPUs", "p95 (s)", "$/month", "Saving/month", "API $/month",
             "Decision")]
    for r in case.rows:
        plan = r.provisioning
        decision = "RECOMMENDED" if r.recommended else (r.reason or "eligible, not cheapest")
        unscored = r.speed_memory_only and r.ok  # random weights: no gate to pass or fail
        rows.append((r.name, r.techniques, "not measured" if unscored else fmt_score(r.accuracy),
                     NA if unscored else "pass" if r.passes_gate else "fail", basis(r),
                     r.target_name or NA,
                     str(r.devices), f"{plan.gpus:,}" if plan else NA,
                     f"{plan.latency_p95_s:.2f}" if plan else NA, fmt_money(r.monthly_cost),
                     fmt_money(r.monthly_savings) + (" if quality holds" if unscored and
                                                     not r.is_baseline else ""),
                     fmt_money(r.api_monthly_cost), decision))
    return rows


def methodology(case: BusinessCase, report: PilotReport) -> list[tuple[str, str]]:
    """What was measured, what was projected, on which hardware, when, and each method."""
    b, hw = report.baseline, report.hardware
    devices = sorted({v.device for v in report.variants if v.device}) or [NA]
    projected = [f"{r.name}: {basis_detail(r)}" for r in case.rows if r.projected]
    targets = {r.target.hardware.key: r.target.hardware for r in case.rows if r.target}
    run = report.run
    return [
        ("What was measured", f"{b.n_requests} requests of workload '{report.workload.name}' replayed "
                     f"per variant on device {', '.join(devices)}, priced as {hw.name}: "
                     "throughput, latency, tokens, weights, accuracy."),
        ("What was projected", "; ".join(projected) or "nothing: every figure is on the measured hardware"),
        ("Hardware", "; ".join(_hw_line(h) for h in targets.values()) or NA),
        ("Dates", f"run created {run.created_at:%Y-%m-%d %H:%M} UTC"
                  + (f", finished {run.finished_at:%Y-%m-%d %H:%M} UTC" if run.finished_at else "")
                  + f"; business case generated {case.generated_at:%Y-%m-%d %H:%M} UTC"),
        *[(_METHOD_LABELS.get(k, k), v) for k, v in case.methods.items()]]


def _hw_line(h: Hardware) -> str:
    own = ", your own entry" if h.user_defined else ""
    return f"{h.name} {fmt_money(h.price_per_hour)}/h ({h.price_source}, {h.price_date}{own})"


# ---- the document ------------------------------------------------------------------------
def render_business_pdf(case: BusinessCase, report: PilotReport,
                        samples: pd.DataFrame | None = None) -> bytes:
    """The answer and the before/after chart on page 1, then the executive summary,
    assumptions, methodology, charts, per-variant table, the pilot's measurements and the
    appendix of sample outputs (engine.reports.pilot_pdf)."""
    title = business_title(report)
    pdf = new_doc(title)
    pdf.add_page()
    title_block(pdf, title, report)
    pdf.heading("The answer")
    for text in case_headline(case):
        pdf.para(text, 9.5)
    pdf.image(io.BytesIO(before_after_png(case)), w=pdf.epw * 0.8)
    f = business_figures(case)
    table(pdf, [("Figure", "Value"), ("Decision", f["decision"]),
                ("Monthly cost before", f"{f['baseline_monthly']} on {f['baseline_devices']}"),
                ("Monthly cost after", f"{f['recommended_monthly']} on "
                                       f"{f['recommended_devices']}" if case.moves else
                 "none: nothing moves"),
                ("Monthly saving (bootstrap range)", f"{f['monthly_savings']} ({f['savings_range']})"),
                ("One-time cost", f["one_time"]), ("Payback", f["payback"]),
                ("Net after 12 / 36 months", f"{f['net_12']} / {f['net_36']}")], (60, 120))
    pdf.add_page()
    pdf.heading("Executive summary")
    for text in executive_summary(case):
        pdf.para(text, 9.5)
    pdf.heading("Assumptions")
    table(pdf, [("Assumption", "Value"), *assumption_rows(case)], (58, 122), size=8)
    pdf.heading("Methodology")
    table(pdf, [("What", "How"), *methodology(case, report)], (36, 144), size=7.5)
    pdf.add_page()
    pdf.heading("Charts (as on the dashboard)")
    pdf.image(io.BytesIO(charts_png(case)), w=pdf.epw)
    for note in chart_notes(case).values():  # the sentences drawn in place of a chart
        pdf.para(note, 8, "I")
    pdf.add_page(orientation="L")
    pdf.heading("Per variant (measured vs projected)")
    table(pdf, variant_rows(case), (24, 36, 16, 11, 18, 30, 12, 11, 13, 20, 20, 20, 46), size=7)
    pdf.para("Where each row's serving figures come from:", 8, "B")
    for r in case.rows:
        pdf.para(f"{r.name}: {basis_detail(r)}", 7.5)
    pdf.para("Accuracy is the quality-gate metric; a variant that fails the gate or the p95 "
             f"target is shown but never recommended. $/month is the monthly cost ({COST_MODEL}) "
             "on the target hardware; saving is against the baseline's.", 7.5, "I")
    if any(r.speed_memory_only for r in case.rows):
        pdf.para(f"Accuracy 'not measured': random weights, {SPEED_MEMORY_ONLY}; such a "
                 "variant's saving holds only if its quality does, so it is never recommended. "
                 + case.quality_check, 7.5, "I")
    pdf.add_page()
    pdf.para("The pages below are the pilot as measured, on the hardware it ran on: unit costs "
             "($/1k requests, $/1M tokens) for its busy time only. Every monthly figure is the "
             f"business case's above ({COST_MODEL}).", 8, "I")
    pilot_sections(pdf, report, prefix="Pilot measurements: ")
    appendix(pdf, report, samples)
    return bytes(pdf.output())


def business_pdf_for_run(store, run_id: int, assumptions: Assumptions | None = None,
                         catalog: Mapping[str, Hardware] | None = None,
                         **pilot_pricing) -> tuple[bytes, BusinessCase]:
    """Build the case and the pilot report of a stored run and render the PDF; the samples
    in the appendix are the recommended variant's (else the baseline's) side by side.
    ``catalog`` narrows the devices right-sizing may pick (default: the store's merged
    catalog; the run's own hardware always resolves through the store).
    ``pilot_pricing`` (price_per_hour, requests_per_month; None = as stored) re-prices the
    run for the whole document: the case (its volume, when ``assumptions`` is None) and the
    pilot's unit costs alike, so the PDF gives one answer."""
    report = build_report(store, run_id, **{k: v for k, v in pilot_pricing.items()
                                            if v is not None})
    cat = dict(catalog) if catalog is not None else store.hardware_catalog()
    case = case_from_report(report, assumptions, cat)
    ok = [v.name for v in report.variants if v.status == Status.DONE]
    pick = case.recommendation.name if case.recommendation.name in ok else (ok[0] if ok else None)
    samples = side_by_side(report, store, pick) if pick else None
    return render_business_pdf(case, report, samples), case


def write_business_pdf(store, run_id: int, path: str | Path,
                       assumptions: Assumptions | None = None,
                       **pilot_pricing) -> tuple[Path, BusinessCase]:
    """Render and write the business-case PDF of a stored run; (path, case)."""
    pdf, case = business_pdf_for_run(store, run_id, assumptions, **pilot_pricing)
    return write_file(path, pdf), case
