"""The business case (engine.business.case.BusinessCase) in words, charts and PDF pages.

``business_figures(case)`` holds the exact strings the executive summary prints, so a test
can compute them from the case; ``executive_summary(case)`` writes the summary from those
numbers; ``charts_png(case)`` draws the four charts the dashboard shows (cost versus
accuracy with the Pareto front, before/after monthly cost, payback curve, tornado).
``render_business_pdf`` puts them in front of the pilot's measured report
(engine.reports.pilot_pdf) and its appendix of sample outputs; ``business_pdf_for_run`` builds
everything from a stored run. Every projected figure is labelled projected, with its method.
"""
from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from engine.business.case import Assumptions, BusinessCase, VariantCase, case_from_report
from engine.core.domain import Status
from engine.economics.decision import SPEED_MEMORY_ONLY
from engine.economics.hardware import Hardware
from engine.economics.roi import Interval
from engine.pilot.report import PilotReport, build_report, side_by_side
from engine.reports.pdf import (
    NA,
    fmt_money,
    fmt_pct,
    fmt_score,
    new_doc,
    png,
    table,
    to_latin1,
    write_file,
)
from engine.reports.pilot_pdf import appendix, pilot_sections, report_title, title_block

TORNADO_LABELS = {"price_factor": "hardware $/hour -/+20%",
                  "requests_per_day": "requests per day -/+20%",
                  "utilisation": "utilisation -/+0.2",
                  "accuracy_threshold": "accuracy threshold -/+0.05"}
_METHOD_LABELS = {"measured": "Measured prices", "unit_costs": "Unit costs ($/1M, $/1k)",
                  "sizing": "Right-sizing", "traffic": "Traffic and bill", "roi": "ROI",
                  "bootstrap": "Ranges (bootstrap)", "tornado": "Sensitivity (tornado)",
                  "api": "Hosted API price"}
BEFORE, AFTER, GOOD, BAD = "#8C8C8C", "#4C72B0", "#55A868", "#C44E52"


# ---- words -------------------------------------------------------------------------------
def fmt_months(x: float | None) -> str:
    """``14.0 months``; ``never`` when the saving is zero or negative."""
    return "never" if x is None else f"{x:.1f} months"


def fmt_range(iv: Interval | None) -> str:
    return NA if iv is None else f"{fmt_money(iv.low)} to {fmt_money(iv.high)}"


def basis(row: VariantCase) -> str:
    """``measured`` or ``projected``: how the row's serving figures were obtained."""
    return "projected" if row.projected else "measured"


def basis_detail(row: VariantCase) -> str:
    """Where the row's figures come from, with the projection method when projected."""
    memory = f"; {row.memory_method}" if row.memory_method else ""
    if row.target is None:
        return f"measured on {row.measured_hardware}; no device to serve it{memory}"
    if row.projected:  # row.method already ends with the memory figures' source
        return f"projected from {row.measured_hardware} to {row.target_hardware}: {row.method}"
    return f"measured on {row.measured_hardware}{memory}"


def business_figures(case: BusinessCase) -> dict[str, str]:
    """The exact strings of the headline: recommendation, costs, savings range, payback."""
    r = case.roi
    return {"recommended": case.recommendation.name or "none",
            "baseline_monthly": fmt_money(case.baseline_monthly_cost),
            "recommended_monthly": fmt_money(case.recommended_monthly_cost),
            "monthly_savings": fmt_money(case.monthly_savings),
            "savings_range": fmt_range(case.savings_interval),
            "one_time": fmt_money(r.one_time), "payback": fmt_months(r.payback_months),
            "net_12": fmt_money(r.net_12), "net_36": fmt_money(r.net_36)}


def _device(row: VariantCase) -> str:
    if not (row.target and row.provisioning):
        return "no device"
    plan = row.provisioning
    spans = (f" ({plan.replicas} replica{'s' if plan.replicas > 1 else ''} of "
             f"{plan.devices_per_replica})" if plan.devices_per_replica > 1 else "")
    return f"{plan.gpus} x {row.target.hardware.name}{spans}"


def executive_summary(case: BusinessCase) -> list[str]:
    """The one-page summary in plain sentences, written from the case's numbers."""
    f, a, base, rec = business_figures(case), case.assumptions, case.rows[0], case.recommended
    gate = f"{a.accuracy_metric} >= {a.accuracy_threshold:g}"
    if rec is None:
        out = [f"No variant is recommended. {case.recommendation.reason}"]
    elif rec.is_baseline:
        out = [f"Keep the baseline '{base.name}' on {_device(base)} ({f['baseline_monthly']} per "
               f"month): no variant is cheaper while passing the quality gate ({gate}) and the "
               f"p95 latency target of {a.p95_target_s:g} s."]
        if base.projected:
            out.append(f"That bill is projected, not measured ({base.method}); the pilot ran on "
                       f"{base.measured_hardware}.")
    else:
        iv = case.savings_interval
        rng = (f" (range {f['savings_range']}: {iv.method})"
               if iv else " (no range: the pilot has no paired requests to resample)")
        out = [f"Recommendation: serve '{case.workload}' with '{rec.name}' ({rec.techniques}) on "
               f"{_device(rec)} instead of '{base.name}' on {_device(base)}.",
               f"Monthly cost goes from {f['baseline_monthly']} to {f['recommended_monthly']}: "
               f"a saving of {f['monthly_savings']} per month{rng}.",
               f"Getting there costs {f['one_time']} once ({a.engineering_days:g} engineering "
               f"days at {fmt_money(a.day_rate)}/day plus {a.gpu_hours:g} GPU hours), which pays "
               f"back in {f['payback']}; the net after 12 months is {f['net_12']} and after 36 "
               f"months {f['net_36']}.",
               _risk(case, rec, base)]
    excluded = [f"'{r.name}' ({r.reason})" for r in case.rows if r.reason and not r.recommended]
    if excluded:
        out.append("Shown but not recommended: " + "; ".join(excluded) + ".")
    eligible = [f"'{r.name}' ({fmt_money(r.monthly_cost)} on {_device(r)})" for r in case.rows
                if not r.reason and not r.recommended and r.monthly_cost is not None]
    if eligible and rec is not None:
        out.append("Pass the gate but cost no less at this volume: " + "; ".join(eligible) + ".")
    holds = if_quality_holds(case)
    if holds:
        out.append(f"{SPEED_MEMORY_ONLY.capitalize()} (random weights, accuracy not measured): "
                   + " ".join(holds))
    if case.quality_check:
        out.append(case.quality_check)
    if case.api_baseline_monthly_cost is not None:
        out.append(_api_sentence(case))
    return out


def if_quality_holds(case: BusinessCase) -> list[str]:
    """What each speed-and-memory-only variant would cost and save if its quality holds:
    costed like any other, never recommended until its accuracy is measured."""
    out, before = [], fmt_money(case.baseline_monthly_cost)
    for r in case.rows:
        if not (r.speed_memory_only and r.ok) or r.is_baseline or r.monthly_cost is None:
            continue
        cost_there = f"{fmt_money(r.monthly_cost)} per month on {_device(r)}"
        if r.monthly_savings is None:
            out.append(f"'{r.name}' would cost {cost_there} if its quality holds; the baseline "
                       "has no monthly cost to compare with.")
        elif r.monthly_savings > 0:
            out.append(f"'{r.name}' would save {fmt_money(r.monthly_savings)} per month if its "
                       f"quality holds ({cost_there} against {before} for the baseline).")
        else:
            out.append(f"'{r.name}' would save nothing even if its quality holds ({cost_there} "
                       f"against {before} for the baseline).")
    return out


def _risk(case: BusinessCase, rec: VariantCase, base: VariantCase) -> str:
    a = case.assumptions
    acc = rec.accuracy_interval
    rng = f" (range {fmt_score(acc.low)} to {fmt_score(acc.high)})" if acc else ""
    text = (f"Risk: on {a.accuracy_metric}, '{rec.name}' scores {fmt_score(rec.accuracy)}{rng} "
            f"against {fmt_score(base.accuracy)} for the baseline; the workflow requires "
            f"{a.accuracy_threshold:g}. ")
    text += (f"Its cost is projected, not measured ({rec.method}); the pilot ran on "
             f"{rec.measured_hardware}. " if rec.projected else
             f"Its cost is measured on {rec.measured_hardware}, where the pilot ran. ")
    if case.tornado:
        t = case.tornado[0]
        text += (f"The 36-month net is most sensitive to {TORNADO_LABELS.get(t.factor, t.factor)}"
                 f": {fmt_money(t.low_value)} to {fmt_money(t.high_value)}.")
    return text


def _api_sentence(case: BusinessCase) -> str:
    text = (f"A team calling a hosted API instead pays {fmt_money(case.api_baseline_monthly_cost)}"
            f" per month for the baseline's tokens ({case.assumptions.api_price_source})")
    best = max((r for r in case.rows if (r.api_monthly_savings or 0) > 0),
               key=lambda r: r.api_monthly_savings or 0, default=None)
    if best is None:
        return text + "."
    return (text + f"; '{best.name}' sends fewer tokens and would cut that by "
            f"{fmt_money(best.api_monthly_savings)} per month.")


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
                     r.target_hardware or NA,
                     str(r.devices), str(plan.gpus) if plan else NA,
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


# ---- charts ------------------------------------------------------------------------------
def charts_png(case: BusinessCase, dpi: int = 150) -> bytes:
    """Cost vs accuracy (Pareto), before/after, payback curve, tornado: as on the dashboard."""
    fig = Figure(figsize=(7.4, 8.4), dpi=dpi, layout="constrained")
    grid = fig.add_gridspec(2, 2)
    _scatter(fig.add_subplot(grid[0, 0]), case)
    _before_after(fig.add_subplot(grid[0, 1]), case)
    _payback(fig.add_subplot(grid[1, 0]), case)
    _tornado(fig.add_subplot(grid[1, 1]), case)
    return png(fig, dpi)


def _scatter(ax, case: BusinessCase) -> None:
    pts = {r.name: r for r in case.rows if r.monthly_cost is not None and r.accuracy is not None}
    for r in pts.values():
        color = GOOD if r.passes_gate else BAD
        ax.scatter([r.monthly_cost], [r.accuracy], s=90 if r.recommended else 40,
                   marker="*" if r.recommended else "o", edgecolors=color,
                   facecolors="none" if r.projected else color, zorder=3)
        ax.annotate(to_latin1(r.name) + (" (projected)" if r.projected else ""),
                    (r.monthly_cost, r.accuracy), fontsize=6, xytext=(4, 4),
                    textcoords="offset points")
    front = [pts[n] for n in case.pareto if n in pts]
    if front:
        ax.plot([r.monthly_cost for r in front], [r.accuracy for r in front], "--", color=AFTER,
                lw=1, label="Pareto front")
    ax.axhline(case.assumptions.accuracy_threshold, color=BAD, lw=0.8, ls=":",
               label=f"gate {case.assumptions.accuracy_threshold:g}")
    ax.set_title("Monthly cost vs accuracy", fontsize=9)
    ax.set_xlabel("USD / month (hollow = projected)", fontsize=7)
    ax.set_ylabel(case.assumptions.accuracy_metric, fontsize=7)
    ax.tick_params(labelsize=6)
    ax.margins(x=0.25, y=0.15)
    ax.legend(fontsize=6, loc="best")


def _before_after(ax, case: BusinessCase) -> None:
    rec = case.recommendation.name or "none"
    labels = [f"before\n{to_latin1(case.rows[0].name)}", f"after\n{to_latin1(rec)}"]
    values = [case.baseline_monthly_cost or 0.0, case.recommended_monthly_cost or 0.0]
    bars = ax.bar(labels, values, color=[BEFORE, AFTER], width=0.55)
    ax.bar_label(bars, labels=[fmt_money(v) for v in values], fontsize=7)
    ax.set_title(f"Monthly cost (saving {fmt_money(case.monthly_savings)})", fontsize=9)
    ax.set_ylabel("USD / month", fontsize=7)
    ax.tick_params(labelsize=7)
    ax.margins(y=0.15)


def _payback(ax, case: BusinessCase) -> None:
    months, net = zip(*case.roi.curve, strict=True)
    ax.plot(months, net, color=AFTER, lw=1.5)
    ax.fill_between(months, net, 0, where=[n >= 0 for n in net], color=GOOD, alpha=0.2)
    ax.fill_between(months, net, 0, where=[n < 0 for n in net], color=BAD, alpha=0.2)
    ax.axhline(0, color="black", lw=0.6)
    pb = case.roi.payback_months
    if pb is not None and pb <= months[-1]:
        ax.axvline(pb, color=GOOD, ls="--", lw=0.8)
        ax.annotate(f"payback {fmt_months(pb)}", (pb, 0), fontsize=6, xytext=(4, -12),
                    textcoords="offset points")
    ax.set_title("Payback: cumulative net (USD)", fontsize=9)
    ax.set_xlabel("months", fontsize=7)
    ax.tick_params(labelsize=6)


def _tornado(ax, case: BusinessCase) -> None:
    rows = list(reversed(case.tornado))  # largest swing on top
    if not rows:
        ax.text(0.5, 0.5, "no tornado (no costed variant)", ha="center", fontsize=7)
        ax.set_axis_off()
        return
    ys = range(len(rows))
    base = rows[0].base_value
    for y, r in zip(ys, rows, strict=True):
        ax.barh(y - 0.15, r.low_value - base, left=base, color=BAD, height=0.3)
        ax.barh(y + 0.15, r.high_value - base, left=base, color=GOOD, height=0.3)
        if r.swing == 0:
            ax.annotate("no change", (base, y), fontsize=6, xytext=(4, -2),
                        textcoords="offset points")
    ax.axvline(base, color="black", lw=0.8)
    ax.set_yticks(list(ys), [TORNADO_LABELS.get(r.factor, r.factor) for r in rows], fontsize=6)
    ax.set_title("36-month net: low (red) / high (green)", fontsize=9)
    ax.set_xlabel("USD", fontsize=7)
    ax.tick_params(axis="x", labelsize=6)


# ---- the document ------------------------------------------------------------------------
def render_business_pdf(case: BusinessCase, report: PilotReport,
                        samples: pd.DataFrame | None = None) -> bytes:
    """Executive summary, assumptions, charts, per-variant table and methodology, then the
    pilot's measured report and the appendix of sample outputs (engine.reports.pilot_pdf)."""
    title = report_title(report)
    pdf = new_doc(title)
    pdf.add_page()
    title_block(pdf, title, report)
    pdf.heading("Executive summary")
    for text in executive_summary(case):
        pdf.para(text, 10)
    f = business_figures(case)
    table(pdf, [("Figure", "Value"), ("Recommended variant", f["recommended"]),
                ("Monthly cost before / after", f"{f['baseline_monthly']} / "
                                                f"{f['recommended_monthly']}"),
                ("Monthly saving (bootstrap range)", f"{f['monthly_savings']} ({f['savings_range']})"),
                ("One-time cost", f["one_time"]), ("Payback", f["payback"]),
                ("Net after 12 / 36 months", f"{f['net_12']} / {f['net_36']}")], (60, 120))
    pdf.add_page()
    pdf.heading("Assumptions")
    table(pdf, [("Assumption", "Value"), *assumption_rows(case)], (58, 122), size=8)
    pdf.heading("Methodology")
    table(pdf, [("What", "How"), *methodology(case, report)], (36, 144), size=7.5)
    pdf.add_page()
    pdf.heading("Charts (as on the dashboard)")
    pdf.image(io.BytesIO(charts_png(case)), w=pdf.epw)
    pdf.add_page(orientation="L")
    pdf.heading("Per variant (measured vs projected)")
    table(pdf, variant_rows(case), (24, 36, 16, 11, 18, 30, 12, 11, 13, 20, 20, 20, 46), size=7)
    pdf.para("Where each row's serving figures come from:", 8, "B")
    for r in case.rows:
        pdf.para(f"{r.name}: {basis_detail(r)}", 7.5)
    pdf.para("Accuracy is the quality-gate metric; a variant that fails the gate or the p95 "
             "target is shown but never recommended. $/month is the always-on bill at peak "
             "provisioning on the target hardware; saving is against the baseline's bill.", 7.5, "I")
    if any(r.speed_memory_only for r in case.rows):
        pdf.para(f"Accuracy 'not measured': random weights, {SPEED_MEMORY_ONLY}; such a "
                 "variant's saving holds only if its quality does, so it is never recommended. "
                 + case.quality_check, 7.5, "I")
    pdf.add_page()
    pdf.para("The pages below are the pilot as measured: priced on the hardware it ran on at "
             f"the run's stored volume ({report.requests_per_month:,} requests/month, busy "
             "hours only). The business case above uses its own assumptions (table on page 2).",
             8, "I")
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
    ``pilot_pricing`` (price_per_hour, requests_per_month) re-prices the pilot section only."""
    measured = build_report(store, run_id)  # priced as the run was
    cat = dict(catalog) if catalog is not None else store.hardware_catalog()
    case = case_from_report(measured, assumptions, cat)
    report = build_report(store, run_id, **pilot_pricing) if pilot_pricing \
        else measured
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
