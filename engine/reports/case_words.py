"""The business case (engine.business.case.BusinessCase) in words: the exact strings every
page, command and PDF prints for it.

``business_figures(case)`` holds the headline strings, so a test can compute them from the
case; ``case_headline(case)`` is the short answer the Overview, the Results page,
``roilab show`` and the pilot measurements PDF print; ``executive_summary(case)`` is the
business-case PDF's first page. Every bill names the devices it pays for and the one cost
model (``engine.economics.traffic.COST_MODEL``); every hardware is named, not keyed.
"""
from __future__ import annotations

from engine.business.flags import baseline_label
from engine.business.types import BusinessCase, VariantCase
from engine.economics.decision import SPEED_MEMORY_ONLY
from engine.economics.roi import Interval
from engine.economics.traffic import COST_MODEL
from engine.reports.pdf import NA, fmt_money, fmt_score

TORNADO_LABELS = {"price_factor": "hardware $/hour -/+20%",
                  "requests_per_day": "requests per day -/+20%",
                  "utilisation": "utilisation -/+0.2",
                  "accuracy_threshold": "accuracy threshold -/+0.05"}


def fmt_months(x: float | None) -> str:
    """``14.0 months``; ``never`` when the saving is zero or negative."""
    return "never" if x is None else f"{x:,.1f} months"


def fmt_range(iv: Interval | None) -> str:
    return NA if iv is None else f"{fmt_money(iv.low)} to {fmt_money(iv.high)}"


def basis(row: VariantCase) -> str:
    """``measured`` or ``projected``: how the row's serving figures were obtained."""
    return "projected" if row.projected else "measured"


def _measured_on(row: VariantCase) -> str:
    return row.measured_hardware_name or row.measured_hardware


def basis_detail(row: VariantCase) -> str:
    """Where the row's figures come from, with the projection method when projected."""
    memory = f"; {row.memory_method}" if row.memory_method else ""
    if row.target is None:
        return f"measured on {_measured_on(row)}; no device to serve it{memory}"
    if row.projected:  # row.method already ends with the memory figures' source
        return f"projected from {_measured_on(row)} to {row.target_name}: {row.method}"
    return f"measured on {_measured_on(row)}{memory}"


def priced_at(case: BusinessCase) -> str:
    """The volume, target and cost model the case was priced with, in one sentence."""
    a = case.assumptions
    target = (f"on {case.rows[0].target_name or a.target_hardware}" if a.target_hardware else
              "on the device with the lowest monthly cost that meets the p95 target, per "
              f"variant ({', '.join(k.upper() for k in a.candidate_kinds)} in the catalog)")
    return (f"Priced at {a.requests_per_day:,.0f} requests/day ({a.peak_factor:g}x at peak, "
            f"p95 target {a.p95_target_s:g} s, {a.utilisation:.0%} utilisation) {target}; "
            f"monthly cost = {COST_MODEL}.")


def business_figures(case: BusinessCase) -> dict[str, str]:
    """The exact strings of the headline: recommendation, costs, devices, savings, payback.
    ``recommended_monthly`` is "none" when nothing moves (no "after" figure)."""
    r, base, rec = case.roi, case.rows[0], case.recommended
    return {"recommended": case.recommendation.name or "none",
            "decision": decision(case),
            "baseline_monthly": fmt_money(case.baseline_monthly_cost),
            "baseline_devices": base.devices_label,
            "recommended_monthly": fmt_money(case.recommended_monthly_cost)
            if case.moves else "none",
            "recommended_devices": rec.devices_label if case.moves and rec else "none",
            "monthly_savings": fmt_money(case.monthly_savings),
            "savings_range": fmt_range(case.savings_interval),
            "one_time": fmt_money(r.one_time), "payback": fmt_months(r.payback_months),
            "net_12": fmt_money(r.net_12), "net_36": fmt_money(r.net_36),
            "requests_per_day": f"{case.assumptions.requests_per_day:,.0f}",
            "cost_model": COST_MODEL}


def decision(case: BusinessCase) -> str:
    """``move to 'int4'``, ``keep the baseline`` or ``no variant passes``."""
    rec = case.recommended
    if rec is None:
        return "no variant passes"
    return "keep the baseline" if rec.is_baseline else f"move to '{rec.name}'"


def case_headline(case: BusinessCase) -> list[str]:
    """The answer in two or three sentences, then the flags (engine.business.flags)."""
    f, base, rec = business_figures(case), case.rows[0], case.recommended
    before = f"{f['baseline_monthly']} per month on {f['baseline_devices']}"
    if case.moves and rec is not None:
        first = (f"Recommended: '{rec.name}' ({rec.techniques}). Monthly cost "
                 f"{f['baseline_monthly']} on {f['baseline_devices']} -> "
                 f"{f['recommended_monthly']} on {f['recommended_devices']}: a saving of "
                 f"{f['monthly_savings']} per month; payback {f['payback']}.")
    elif rec is not None:
        first = f"Keep {baseline_label(base)}: {before}. {case.recommendation.reason}"
    else:
        first = (f"No variant is recommended. {case.recommendation.reason} Today "
                 f"{baseline_label(base)} costs {before}.")
    return [first, priced_at(case), *case.flags]


def executive_summary(case: BusinessCase) -> list[str]:
    """The one-page summary in plain sentences, written from the case's numbers."""
    f, a, base, rec = business_figures(case), case.assumptions, case.rows[0], case.recommended
    gate = f"{a.accuracy_metric} >= {a.accuracy_threshold:g}"
    if rec is None:
        out = [f"No variant is recommended. {case.recommendation.reason}"]
    elif rec.is_baseline:
        out = [f"Keep {baseline_label(base)} on {base.devices_label} ({f['baseline_monthly']} "
               f"per month): no variant is cheaper while passing the quality gate ({gate}) and "
               f"the p95 latency target of {a.p95_target_s:g} s."]
        if base.projected:
            out.append(f"That bill is projected, not measured ({base.method}); the pilot ran on "
                       f"{_measured_on(base)}.")
    else:
        iv = case.savings_interval
        rng = (f" (range {f['savings_range']}: {iv.method})"
               if iv else " (no range: the pilot has no paired requests to resample)")
        out = [f"Recommendation: serve '{case.workload}' with '{rec.name}' ({rec.techniques}) on "
               f"{rec.devices_label} instead of '{base.name}' on {base.devices_label}.",
               f"Monthly cost goes from {f['baseline_monthly']} to {f['recommended_monthly']}: "
               f"a saving of {f['monthly_savings']} per month{rng}.",
               f"Getting there costs {f['one_time']} once ({a.engineering_days:g} engineering "
               f"days at {fmt_money(a.day_rate)}/day plus {a.gpu_hours:g} GPU hours), which pays "
               f"back in {f['payback']}; the net after 12 months is {f['net_12']} and after 36 "
               f"months {f['net_36']}.",
               _risk(case, rec, base)]
    out.append(priced_at(case))
    out.extend(case.flags)
    excluded = [f"'{r.name}' ({r.reason})" for r in case.rows if r.reason and not r.recommended]
    if excluded:
        out.append("Shown but not recommended: " + "; ".join(excluded) + ".")
    eligible = [f"'{r.name}' ({fmt_money(r.monthly_cost)} on {r.devices_label})" for r in case.rows
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
        cost_there = f"{fmt_money(r.monthly_cost)} per month on {r.devices_label}"
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
             f"{_measured_on(rec)}. " if rec.projected else
             f"Its cost is measured on {_measured_on(rec)}, where the pilot ran. ")
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
