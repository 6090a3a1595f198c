"""The business case (engine.business.case.BusinessCase) as PDF pages.

Page 1 is the CFO's page: the decision in one sentence, the monthly before / after /
saving with its range, payback, the volume and the hardware priced, the before/after chart
(a sentence when nothing moves) and one line per caveat that applies. The rest follows in
the order a reader asks next, never repeating page 1: why, what getting there costs and
risks, what was left out (engine.reports.case_words.executive_summary), the per-variant
table, the charts (engine.reports.case_charts), the assumptions and methodology, and the
pilot's measurements (engine.reports.pilot_pdf) with its appendix of sample outputs. The words
are engine.reports.case_words' and engine.reports.case_caveats' (re-exported here);
``business_pdf_for_run`` builds everything from a stored run. Every projected figure is
labelled projected, with its method.
"""
from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from engine.business.case import Assumptions, BusinessCase, case_from_report
from engine.business.claims import ClaimResult, score
from engine.business.flags import gate_words
from engine.core.domain import Status
from engine.economics import traffic
from engine.economics.decision import SPEED_MEMORY_ONLY
from engine.economics.hardware import Hardware
from engine.economics.traffic import COST_MODEL
from engine.pilot.report import PilotReport, build_report, side_by_side
from engine.reports.case_caveats import caveats
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
    cfo_figures,
    decision_sentence,
    executive_summary,
    fmt_months,
    fmt_range,
    if_quality_holds,
    priced_at,
    variant_rows,
)
from engine.reports.pdf import NA, fmt_money, fmt_pct, new_doc, table, write_file
from engine.reports.pilot_pdf import appendix, pilot_sections, title_block

__all__ = ["AFTER", "BAD", "BEFORE", "GOOD", "TORNADO_LABELS", "assumption_rows", "basis",
           "basis_detail", "business_figures", "business_pdf_for_run", "business_title",
           "case_headline", "caveats", "cfo_figures", "cfo_page", "charts_png", "claims_section",
           "decision_sentence", "executive_summary", "fmt_money", "fmt_months", "fmt_range",
           "if_quality_holds", "methodology", "priced_at", "render_business_pdf", "variant_rows",
           "write_business_pdf"]

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
        ("Requests per month", f"{traffic.requests_per_month(a.requests_per_day):,.0f}"),
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
        ("Quality gate", f"{gate_words(a)} (metric {a.accuracy_metric})"),
        ("Hosted API price", f"{fmt_money(a.api_price_in_per_1m)} in / "
                             f"{fmt_money(a.api_price_out_per_1m)} out per 1M tokens"),
        ("Hosted API source", a.api_price_source),
        ("Price multiplier", f"{a.price_factor:g}"),
        ("Bootstrap", f"{a.bootstrap_resamples} resamples, seed {a.seed}, p5-p95"),
        ("Monthly cost model", COST_MODEL),
        ("Measured on", f"{hw.name} at {fmt_money(hw.price_per_hour)}/hour per device "
                        f"({hw.price_source}, {hw.price_date}); a variant pays that x its "
                        "devices (tensor x pipeline parallel size)")]


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
    """The CFO's page (``cfo_page``), then the detail in the order a reader asks next: why
    and what it takes (``executive_summary``), the per-variant table, the charts, the
    assumptions and methodology, the claims scorecard (``claims_section``), the pilot's
    measurements and the appendix of sample outputs (engine.reports.pilot_pdf)."""
    title = business_title(report)
    pdf = new_doc(title)
    pdf.add_page()
    cfo_page(pdf, case, title, report)
    pdf.add_page()
    pdf.heading("Why, and what it takes")
    for text in executive_summary(case):
        pdf.para(text, 9)
    pdf.add_page(orientation="L")
    pdf.heading("Per variant (measured vs projected)")
    table(pdf, variant_rows(case), (22, 32, 15, 10, 19, 30, 14, 17, 17, 22, 22, 18, 39), size=7)
    pdf.para("Where each row's serving figures come from:", 8, "B")
    for r in case.rows:
        pdf.para(f"{r.name}: {basis_detail(r)}", 7.5)
    pdf.para(f"Accuracy is the quality-gate metric ({gate_words(case.assumptions)}); a variant "
             "that fails the gate or the p95 target is shown but never recommended, nor is one "
             "whose p95 is projected from another kind of device (indicative only). $/month is "
             f"the monthly cost ({COST_MODEL}) on the target hardware; saving is against the "
             "baseline's.", 7.5, "I")
    if any(r.speed_memory_only for r in case.rows):
        pdf.para(f"Accuracy 'not measured': random weights, {SPEED_MEMORY_ONLY}; such a "
                 "variant's saving holds only if its quality does, so it is never recommended. "
                 + case.quality_check, 7.5, "I")
    pdf.add_page()
    pdf.heading("Charts (as on the dashboard)")
    pdf.image(io.BytesIO(charts_png(case)), w=pdf.epw)
    for note in chart_notes(case).values():  # the sentences drawn in place of a chart
        pdf.para(note, 8, "I")
    pdf.heading("Assumptions")
    table(pdf, [("Assumption", "Value"), *assumption_rows(case)], (58, 122), size=8)
    pdf.heading("Methodology")
    table(pdf, [("What", "How"), *methodology(case, report)], (36, 144), size=7.5)
    claims_section(pdf, score(report, case))
    pdf.add_page()
    pdf.para("The pages below are the pilot as measured, on the hardware it ran on: unit costs "
             "($/1k requests, $/1M tokens) for its busy time only. Every monthly figure is the "
             f"business case's above ({COST_MODEL}).", 8, "I")
    pilot_sections(pdf, report, prefix="Pilot measurements: ")
    appendix(pdf, report, samples)
    return bytes(pdf.output())


def claims_section(pdf, results: Sequence[ClaimResult]) -> None:
    """The claims scorecard (engine.business.claims): each claim of the article that sent the
    team here, held / not held / not tested by this run, with the figure and its variant, then
    the rule each verdict used."""
    pdf.heading("Claims scorecard")
    pdf.para("The claims of the article that sent you here, tested against this run. A claim "
             "the run cannot test says what would test it.", 8, "I")
    table(pdf, [("Claim", "Verdict", "Measured figure", "Variant / note"),
                *((r.claim.claim, r.verdict, r.figure or "-",
                   f"{r.variant}: {r.note}" if r.variant else r.note) for r in results)],
          (38, 17, 55, 80), size=7)
    for r in results:
        pdf.para(f"{r.claim.claim} ({r.claim.source}): {r.rule}", 7, "I")


def cfo_page(pdf, case: BusinessCase, title: str, report: PilotReport) -> None:
    """Page 1: the decision in one sentence, the figures beside it, the before/after chart
    (only when something moves: otherwise the sentence says it) and one line per caveat."""
    title_block(pdf, title, report)
    pdf.heading("The answer")
    pdf.para(decision_sentence(case), 11, "B")
    table(pdf, [("Figure", "Value"), *cfo_figures(case)], (40, 140), size=9)
    pdf.para(priced_at(case), 7.5, "I")
    if case.moves:
        pdf.image(io.BytesIO(before_after_png(case)), w=pdf.epw * 0.8)
    elif "before_after" in chart_notes(case) and case.baseline_monthly_cost is None:
        pdf.para(chart_notes(case)["before_after"], 8, "I")
    lines = caveats(case)
    if lines:
        pdf.heading("Caveats")
        for line in lines:  # the unstable line, when shown, is the legend of the '*'
            pdf.para(line, 8.5)


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
