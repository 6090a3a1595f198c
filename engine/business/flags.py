"""Sentences for the states of a business case that would otherwise read as answers.

Each is a pure function of the case's rows and assumptions; the dashboard, ``roilab show``
and both PDFs print the same sentences (``BusinessCase.flags``):

* no variant passes, or none beats the baseline: there is no "after", and why;
* the baseline itself misses the p95 target: "before" is not a service that meets it;
* a hosted API costs less than self-hosting for these tokens;
* the bill sits at its minimum (one always-on replica), so it does not move with volume.
"""
from __future__ import annotations

from collections.abc import Sequence

from engine.business.types import Assumptions, VariantCase
from engine.economics import traffic
from engine.economics.decision import Recommendation, metric_label


def _money(x: float) -> str:
    return f"{'-' if x < 0 else ''}${abs(x):,.2f}"


def volume_words(a: Assumptions) -> str:
    """The volume as every surface states it: ``1,000,000 requests/month``."""
    return f"{traffic.requests_per_month(a.requests_per_day):,.0f} requests/month"


def gate_words(a: Assumptions) -> str:
    """The quality gate in words: ``similarity to the baseline's answers (cosine) >= 0.9``."""
    return f"{metric_label(a.accuracy_metric)} >= {a.accuracy_threshold:g}"


def baseline_label(row: VariantCase) -> str:
    """``the baseline`` or ``the baseline ('fp16')``: its name only when it says more."""
    return "the baseline" if row.name.strip().lower() == "baseline" else \
        f"the baseline ('{row.name}')"


def case_flags(rows: Sequence[VariantCase], rec: Recommendation, a: Assumptions,
               api_baseline: float | None) -> tuple[str, ...]:
    """The flags of a case, most important first; () when none applies."""
    base = rows[0]
    chosen = next((r for r in rows if r.name == rec.name), None)
    out = []
    if chosen is None:
        out.append("No variant passes the quality gate and the p95 target, so there is no "
                   "'after' figure and nothing to pay back; each variant's reason is beside it.")
    elif chosen.is_baseline:
        out.append(f"No move: keep {baseline_label(base)}. No variant costs less while passing "
                   f"the quality gate ({gate_words(a)}) and the {a.p95_target_s:g} s p95 "
                   "target, so there is no 'after' figure.")
    if base.provisioning is None:
        out.append(f"{baseline_label(base).capitalize()} has no monthly cost: "
                   f"{base.reason or 'no device can serve it'}.")
    elif base.indicative:
        out.append(f"{baseline_label(base).capitalize()}'s p95 on {base.devices_label} is "
                   f"projected from a {base.measured_kind.upper()} measurement (indicative "
                   f"only), so it does not count as meeting the {a.p95_target_s:g} s target; "
                   "the 'before' bill is not a measured service either.")
    elif not base.provisioning.meets_slo:
        plan = base.provisioning
        out.append(f"{baseline_label(base).capitalize()} itself misses the p95 target: "
                   f"{plan.latency_p95_s:,.2f} s on {base.devices_label} against "
                   f"{a.p95_target_s:g} s, so the 'before' bill is for a service that does "
                   "not meet the target either.")
    ours = chosen.monthly_cost if chosen is not None and not chosen.is_baseline else \
        base.monthly_cost
    if api_baseline is not None and ours is not None and api_baseline < ours:
        out.append(f"A hosted API would cost less: {_money(api_baseline)} per month for the "
                   f"baseline's tokens ({a.api_price_source}) against {_money(ours)} self-hosted.")
    out.extend(_minimum_bills([base] + ([chosen] if chosen and not chosen.is_baseline else []),
                              a))
    return tuple(out)


def _minimum_bills(rows: Sequence[VariantCase], a: Assumptions) -> list[str]:
    """Rows billed for one replica that peak traffic leaves mostly idle."""
    out = []
    for r in rows:
        plan = r.provisioning
        if plan is None or plan.replicas != 1 or plan.capacity_rps_per_gpu <= 0:
            continue
        share = plan.peak_rps / plan.capacity_rps_per_gpu
        if share >= 0.5:
            continue
        out.append(f"At {volume_words(a)} (peak {plan.peak_rps:,.3g} req/s) "
                   f"one replica of '{r.name}' ({r.devices_label}) is loaded to {share:.0%} of "
                   f"what it may serve at peak; its {_money(plan.monthly_bill)} is the minimum "
                   f"bill ({traffic.COST_MODEL}), so it does not fall with less traffic.")
    return out
