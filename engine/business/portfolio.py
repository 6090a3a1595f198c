"""Portfolio: several pilots (workflows) rolled up into one annual view.

Per pilot: baseline annual cost (12 x the baseline's monthly bill), recommended annual cost
(12 x the recommended variant's; the baseline's when none passes), annual savings, the
one-time cost of getting there and its payback. The total's payback is the summed
one-time cost over the summed monthly savings (None when they are <= 0).
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from engine.business.types import BusinessCase
from engine.economics.roi import payback_months


@dataclass(frozen=True)
class PortfolioRow:
    name: str  # the pilot / workflow
    recommended: str | None  # variant name; None = none passes, keep the baseline
    baseline_annual: float
    recommended_annual: float
    annual_savings: float
    one_time: float
    payback_months: float | None


@dataclass(frozen=True)
class Portfolio:
    rows: tuple[PortfolioRow, ...]
    total: PortfolioRow  # name "Total", recommended None
    skipped: tuple[str, ...]  # pilots without a baseline monthly cost, with the reason


def portfolio(cases: Iterable[BusinessCase]) -> Portfolio:
    """Roll business cases up; a case whose baseline could not be costed is listed in
    ``skipped`` rather than counted as zero."""
    rows, skipped = [], []
    for c in cases:
        label = c.name or f"run {c.run_id}"
        if c.baseline_monthly_cost is None:
            skipped.append(f"{label}: the baseline has no monthly cost (failed or fits nowhere)")
            continue
        after = c.recommended_monthly_cost if c.recommended_monthly_cost is not None \
            else c.baseline_monthly_cost
        rows.append(PortfolioRow(label, c.recommendation.name, 12 * c.baseline_monthly_cost,
                                 12 * after, 12 * c.monthly_savings, c.roi.one_time,
                                 c.roi.payback_months))
    base = sum(r.baseline_annual for r in rows)
    after = sum(r.recommended_annual for r in rows)
    saved = sum(r.annual_savings for r in rows)
    one_time = sum(r.one_time for r in rows)
    total = PortfolioRow("Total", None, base, after, saved, one_time,
                         payback_months(one_time, saved / 12))
    return Portfolio(tuple(rows), total, tuple(skipped))
