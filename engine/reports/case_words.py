"""The business case (engine.business.case.BusinessCase) in words: the exact strings every
page, command and PDF prints for it.

``business_figures(case)`` holds the headline strings, so a test can compute them from the
case; ``decision_sentence(case)`` is the decision in one sentence, ``cfo_figures(case)`` the
figures beside it and ``caveats(case)`` (engine.reports.case_caveats) one short line per
caveat that applies: together the CFO's page (page 1 of the business-case PDF, the top of
the Overview and Business case pages). ``case_headline(case)`` is the short answer ``roilab show`` and the pilot
measurements PDF print; ``executive_summary(case)`` is the detail that follows page 1
(why, what it takes, what is left out), never repeating it. Every bill names the devices it
pays for and the one cost model (``engine.economics.traffic.COST_MODEL``); every hardware is
named, not keyed; every projected figure says so and every unstable one carries ``*``.
"""
from __future__ import annotations

from engine.business.flags import baseline_label, volume_words
from engine.business.types import BusinessCase, VariantCase
from engine.economics.decision import SPEED_MEMORY_ONLY, metric_label
from engine.economics.roi import Interval
from engine.economics.traffic import COST_MODEL
from engine.pilot.protocol import BASELINE_DRIFT, UNSTABLE_SPREAD
from engine.reports.pdf import (
    NA,
    fmt_money,
    fmt_score,
)

DASH = "-"  # a missing figure, wherever a person reads it
UNSTABLE_MARK = "*"
UNSTABLE_LEGEND = (f"* unstable: the figure's timed passes spread more than "
                   f"{UNSTABLE_SPREAD:.0%} (or the baseline drifted more than "
                   f"{BASELINE_DRIFT:.0%} by the end of the run), so it may move when measured "
                   "again.")
NOTHING_SPENT = "nothing is spent or saved"  # the payback when nothing moves
_DECISION_FLAGS = ("No move:", "No variant passes")  # case.flags that repeat the decision

TORNADO_LABELS = {"price_factor": "hardware $/hour -/+20%",
                  "requests_per_day": "requests per month -/+20%",
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


def measured_on(row: VariantCase) -> str:
    return row.measured_hardware_name or row.measured_hardware


def basis_detail(row: VariantCase) -> str:
    """Where the row's figures come from, with the projection method when projected."""
    memory = f"; {row.memory_method}" if row.memory_method else ""
    if row.target is None:
        return f"measured on {measured_on(row)}; no device to serve it{memory}"
    if row.projected:  # row.method already ends with the memory figures' source
        return f"projected from {measured_on(row)} to {row.target_name}: {row.method}"
    return f"measured on {measured_on(row)}{memory}"


def priced_at(case: BusinessCase) -> str:
    """The volume, target and cost model the case was priced with, in one sentence."""
    a = case.assumptions
    target = (f"on {case.rows[0].target_name or a.target_hardware}" if a.target_hardware else
              "on the device with the lowest monthly cost that meets the p95 target, per "
              f"variant ({', '.join(k.upper() for k in a.candidate_kinds)} in the catalog)")
    return (f"Priced at {volume_words(a)} ({a.peak_factor:g}x at peak, "
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
            "volume": volume_words(case.assumptions),
            "cost_model": COST_MODEL}


def decision(case: BusinessCase) -> str:
    """``move to 'int4'``, ``keep the baseline`` or ``no variant passes``."""
    rec = case.recommended
    if rec is None:
        return "no variant passes"
    return "keep the baseline" if rec.is_baseline else f"move to '{rec.name}'"


def case_headline(case: BusinessCase) -> list[str]:
    """The decision in one sentence, its payback on a move, how it was priced, then the flags
    (engine.business.flags) that do not repeat the decision."""
    f = business_figures(case)
    pays = ([f"Payback {f['payback']} on a one-time {f['one_time']}."] if case.moves else [])
    return [decision_sentence(case), *pays, priced_at(case), *other_flags(case)]


def other_flags(case: BusinessCase) -> list[str]:
    """``case.flags`` without the one that restates the decision."""
    return [f for f in case.flags if not f.startswith(_DECISION_FLAGS)]


def star(text: str, unstable: bool) -> str:
    """``text`` with the unstable mark when the figure is unstable (``UNSTABLE_LEGEND``)."""
    return text + UNSTABLE_MARK if unstable and text not in (NA, DASH) else text


def dash(text: str) -> str:
    """"-" for a missing figure (the PDF helpers write "n/a")."""
    return DASH if text in (NA, "None", "nan", "") else text


def on_devices(row: VariantCase) -> str:
    """``3 x AWS c7i.large``, with ``(projected)`` when its figures are not measured there."""
    return row.devices_label + (" (projected)" if row.projected else "")


def decision_sentence(case: BusinessCase) -> str:
    """The decision in one sentence, starting with a capital, the bills rounded as in
    ``business_figures``."""
    f, base, rec = business_figures(case), case.rows[0], case.recommended
    before = f"{f['baseline_monthly']} per month on {on_devices(base)}"
    if case.moves and rec is not None:
        return (f"Move to '{rec.name}' ({rec.techniques}): {f['recommended_monthly']} per month "
                f"on {on_devices(rec)} instead of {before}, a saving of "
                f"{f['monthly_savings']} per month.")
    if rec is not None:
        return (f"Keep {baseline_label(base)}: {before}; no variant costs less while passing "
                f"the quality gate and the {case.assumptions.p95_target_s:g} s p95 target.")
    if all(r.speed_memory_only for r in case.rows if r.ok):
        why = ("every measured variant has random weights, so none has an accuracy figure "
               "yet")
    else:
        why = (f"none passes the quality gate and the {case.assumptions.p95_target_s:g} s p95 "
               "target")
    today = f"today {baseline_label(base)} costs {before}" if case.baseline_monthly_cost \
        is not None else f"{baseline_label(base)} has no monthly cost either"
    return f"No variant is recommended: {why}; {today}."


def cfo_figures(case: BusinessCase) -> list[tuple[str, str]]:
    """(label, value) of the CFO's figures: before / after / saving with its range, payback,
    the volume and the hardware priced; unstable bills marked ``*``."""
    f, a, base, rec = business_figures(case), case.assumptions, case.rows[0], case.recommended
    moves = case.moves and rec is not None
    saving = star(f["monthly_savings"], moves and (base.cost_unstable or rec.cost_unstable))
    iv = case.savings_interval
    rng = f" (range {f['savings_range']})" if iv and moves else ""
    payback = (f"{f['payback']} on a one-time {f['one_time']}" if moves else
               f"none: {NOTHING_SPENT}")
    return [
        ("Monthly cost before", f"{star(f['baseline_monthly'], base.cost_unstable)} on "
                                f"{on_devices(base)}"),
        ("Monthly cost after", f"{star(f['recommended_monthly'], rec.cost_unstable)} on "
                               f"{on_devices(rec)}" if moves and rec else
         "no change: nothing moves"),
        ("Monthly saving", f"{saving}{rng}"),
        ("Payback", payback),
        ("Volume", f"{volume_words(a)} ({a.peak_factor:g}x at peak, p95 target "
                   f"{a.p95_target_s:g} s)"),
        ("Hardware priced", hardware_priced(case))]


def hardware_priced(case: BusinessCase) -> str:
    """Each bill's device and its $/hour, and whether the figures were measured there."""
    rows = [case.rows[0]] + ([case.recommended] if case.moves and case.recommended else [])
    parts = []
    for r in rows:
        if r.target is None:
            parts.append(f"{r.name}: no device can serve it")
            continue
        how = (f"projected from the {measured_on(r)} the pilot ran on" if r.projected else
               "measured there")
        parts.append(f"{r.target_name} at {fmt_money(r.target.hardware.price_per_hour)}/h "
                     f"per device ({how})")
    return "; ".join(dict.fromkeys(parts))


def settle_lines(case: BusinessCase) -> list[str]:
    """Per variant with an uncounted projection to another kind of device: what it would
    take there, and the pilot that would settle it."""
    out = []
    for r in case.rows:
        alt, plan = r.alternative, r.provisioning
        if alt is None or plan is None:
            continue
        out.append(f"'{r.name}' misses the {case.assumptions.p95_target_s:g} s p95 target on "
                   f"{r.devices_label} (p95 {plan.latency_p95_s:,.2f} s); projected to "
                   f"{alt.devices_label} it would take {alt.latency_p95_s:,.2f} s at "
                   f"{fmt_money(alt.monthly_bill)} per month (projected, indicative only). Run "
                   f"the pilot on {alt.hardware_name} to measure it.")
    return out


def executive_summary(case: BusinessCase) -> list[str]:
    """What follows the CFO's page, in the order a reader asks next: why this decision, what
    getting there costs and risks, what was left out and why, what would settle the rest,
    and the hosted-API comparison. Never repeats page 1 (``decision_sentence``,
    ``cfo_figures``, ``caveats``, ``priced_at``)."""
    f, a, rec = business_figures(case), case.assumptions, case.recommended
    out = [f"Why: {case.recommendation.reason}"]
    if case.moves and rec is not None:
        iv = case.savings_interval
        out.append(f"Range of the saving: {iv.method}." if iv else
                   "No range for the saving: the pilot has no paired requests to resample.")
        out.append(f"Getting there costs {f['one_time']} once ({a.engineering_days:g} "
                   f"engineering days at {fmt_money(a.day_rate)}/day plus {a.gpu_hours:g} GPU "
                   f"hours); the net after 12 months is {f['net_12']} and after 36 months "
                   f"{f['net_36']}.")
        out.append(_risk(case, rec, case.rows[0]))
    excluded = [f"'{r.name}' ({r.reason})" for r in case.rows if r.reason and not r.recommended]
    if excluded:
        out.append("Shown but not recommended: " + "; ".join(excluded) + ".")
    eligible = [f"'{r.name}' ({fmt_money(r.monthly_cost)} on {r.devices_label})" for r in case.rows
                if not r.reason and not r.recommended and r.monthly_cost is not None]
    if eligible and rec is not None:
        out.append("Pass the gate but cost no less at this volume: " + "; ".join(eligible) + ".")
    out.extend(settle_lines(case))
    holds = if_quality_holds(case)
    if holds:
        out.append(f"{SPEED_MEMORY_ONLY.capitalize()} (random weights, accuracy not measured): "
                   + " ".join(holds))
    if case.quality_check:
        out.append(case.quality_check)
    if case.api_baseline_monthly_cost is not None:
        out.append(_api_sentence(case))
    return out


VARIANT_HEADER = ("Variant", "Techniques", "Accuracy", "Gate", "Figures", "Target hardware",
                  "Devices", "p95 (s)", "Meets p95", "$/month", "Saving/month", "API $/month",
                  "Decision")


def variant_rows(case: BusinessCase) -> list[tuple[str, ...]]:
    """The per-variant table, heading first, as the PDF and the Business case page show it:
    accuracy and gate, measured or projected (in every projected cell), the devices the bill
    pays for, unstable figures marked ``*``, "-" where a figure is missing."""
    rows = [VARIANT_HEADER]
    for r in case.rows:
        plan = r.provisioning
        unscored = r.speed_memory_only and r.ok  # random weights: no gate to pass or fail
        proj = " (projected)" if r.projected else ""
        if plan is None:
            meets = DASH
        elif r.indicative and r.target and plan.latency_p95_s <= case.assumptions.p95_target_s:
            meets = "not counted (indicative)"
        else:
            meets = "yes" if plan.meets_slo else "no"
        saving = (DASH if r.monthly_savings is None else
                  signed_money(r.monthly_savings, "saved", "more") + proj
                  + (" if quality holds" if unscored and not r.is_baseline else ""))
        decision = "RECOMMENDED" if r.recommended else (r.reason or "eligible, not cheapest")
        rows.append((r.name, r.techniques, "not measured" if unscored else dash(fmt_score(r.accuracy)),
                     DASH if unscored else "pass" if r.passes_gate else "fail",
                     figures_label(r), r.target_name or DASH,
                     f"{plan.gpus:,} ({plan.replicas:,} replica{'s' if plan.replicas > 1 else ''}"
                     f" of {r.devices})" if plan and r.devices > 1 else
                     f"{plan.gpus:,}" if plan else DASH,
                     star(f"{plan.latency_p95_s:,.2f}", r.latency_unstable) + proj if plan
                     else DASH, meets,
                     star(dash(fmt_money(r.monthly_cost)), r.cost_unstable) + (proj if plan else ""),
                     DASH if r.is_baseline else saving,
                     dash(fmt_money(r.api_monthly_cost)), decision))
    return rows


def figures_label(row: VariantCase) -> str:
    """``measured``, ``projected`` or ``projected (indicative)`` (CPU to GPU or back)."""
    return "projected (indicative)" if row.indicative else basis(row)


def signed_money(x: float, plus: str, minus: str) -> str:
    """``$572.32 saved`` / ``$12.00 more``: a difference in words, never a bare sign."""
    if x == 0:
        return "$0.00"
    return f"{fmt_money(abs(x))} {plus if x > 0 else minus}"


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
    text = (f"Risk: on {metric_label(a.accuracy_metric)}, '{rec.name}' scores "
            f"{fmt_score(rec.accuracy)}{rng} "
            f"against {fmt_score(base.accuracy)} for the baseline; the workflow requires "
            f"{a.accuracy_threshold:g}. ")
    text += (f"Its cost is projected, not measured ({rec.method}); the pilot ran on "
             f"{measured_on(rec)}. " if rec.projected else
             f"Its cost is measured on {measured_on(rec)}, where the pilot ran. ")
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
