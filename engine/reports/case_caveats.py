"""The caveats of a business case (engine.business.case.BusinessCase) in words: one short
line per caveat that applies (``caveats(case)``), as page 1 of the business-case PDF, the
Overview and the Business case pages print them, and the age of the catalog prices the
shown bills use (``price_caveat(case)``). The other words of the case are
engine.reports.case_words'.
"""
from __future__ import annotations

import re

from engine.business.types import FAILED_IN_PILOT, BusinessCase, VariantCase
from engine.economics.decision import SPEED_MEMORY_ONLY
from engine.economics.sizing import CROSS_KIND_CHECK
from engine.pilot.protocol import BASELINE_DRIFT, UNSTABLE_SPREAD
from engine.reports.case_words import measured_on, other_flags
from engine.reports.pdf import PRICE_STALE_MONTHS, price_age_months


def _check_error() -> str:
    """The error the project measured for a CPU-to-GPU projection, e.g. ``23x to 191x``."""
    m = re.search(r"(\d+x)\b.*?to (\d+x)", CROSS_KIND_CHECK)
    return f"{m.group(1)} to {m.group(2)}" if m else "far"


def caveats(case: BusinessCase) -> list[str]:
    """One short line per caveat that applies, most decisive first: variants the run did not
    measure (a partial run), unstable speed figures (the line that says what ``*`` means, so
    no separate legend beside it), random weights, figures projected to other hardware (one
    line per pair of devices, with the error measured for such a projection, or that none
    was) or not settled until a pilot on another device, a busy machine, a catalog price
    older than ``PRICE_STALE_MONTHS``; then the case's other flags (the baseline missing the
    target, a cheaper hosted API, a minimum bill). Empty when none applies."""
    rows = [r for r in case.rows if r.ok]
    out = []
    failed = [r for r in case.rows if not r.ok]
    if failed:
        which = (f"'{failed[0].name}' was not measured ({_failure(failed[0])})"
                 if len(failed) == 1 else f"{len(failed)} variants were not measured ("
                 + "; ".join(f"'{r.name}': {_failure(r)}" for r in failed) + ")")
        out.append(f"Partial run: {which}, so the case weighs only the variants that were.")
    shaky = [r.name for r in rows if r.cost_unstable or r.latency_unstable]
    if shaky:
        drift = any("baseline drift" in r.unstable for r in rows)
        out.append(f"* Speed figures unstable ({', '.join(shaky)}"
                   + ("; the baseline drifted by the end of the run" if drift else "")
                   + f"): a bill or p95 marked * comes from timed passes that spread more than "
                   f"{UNSTABLE_SPREAD:.0%} (or a baseline that drifted more than "
                   f"{BASELINE_DRIFT:.0%}), so it may move when measured again; run the pilot "
                   "again on a quiet machine.")
    unscored = [r.name for r in rows if r.speed_memory_only]
    if unscored:
        out.append(f"Random weights ({', '.join(unscored)}): {SPEED_MEMORY_ONLY}, accuracy not "
                   "measured, so never recommended until it is.")
    out.extend(_projection_caveats(case))
    busy = [f"{r.name} ({r.busy})" for r in rows if r.busy]
    if busy:
        out.append(f"Machine busy during the run: {'; '.join(busy)}; speed figures are low "
                   "and noisy.")
    stale = price_caveat(case)
    if stale:
        out.append(stale)
    return out + other_flags(case)


def _failure(row: VariantCase) -> str:
    """Why a failed variant has no figures, in one short clause: the pilot's error, its first
    line, cut at 160 characters."""
    text = (row.reason.removeprefix(FAILED_IN_PILOT).strip().splitlines() or ["no output"])[0]
    text = text.rstrip(". ")
    if len(text) > 160:
        text = text[:157].rstrip() + "..."
    return text[:1].lower() + text[1:] if text[1:2].islower() else text


def _shown(case: BusinessCase) -> list[VariantCase]:
    """The rows whose bills page 1 shows: the baseline, and the recommended one on a move."""
    return list(dict.fromkeys(
        [case.rows[0]] + ([case.recommended] if case.moves and case.recommended else [])))


def price_caveat(case: BusinessCase) -> str | None:
    """The age of the catalog prices the shown bills are priced with (the measured
    hardware's when no device serves the baseline), when older than
    ``PRICE_STALE_MONTHS`` at the time the case was made; None when they are recent."""
    hws = {r.target.hardware.key: r.target.hardware for r in _shown(case) if r.target} or \
        {case.measured_hardware.key: case.measured_hardware}
    today = case.generated_at.date()
    stale = []
    for hw in hws.values():
        age = price_age_months(hw.price_date, today)
        if age is not None and age > PRICE_STALE_MONTHS:
            stale.append((hw.price_date, age, hw.name))
    if not stale:
        return None
    # each price named by its device: the PDF's header gives the measured device's date,
    # which read as a contradiction beside an undated "Prices as of" of another device
    return ("Prices " + " and ".join(f"of {name} as of {when} ({age} months old)"
                                     for when, age, name in sorted(stale))
            + f": check today's price{'s' if len(stale) > 1 else ''} before signing.")


def _projection_caveats(case: BusinessCase) -> list[str]:
    """One line per (measured device, target device) of the shown bills that are projected,
    naming every variant priced that way."""
    groups: dict[tuple[str, str, bool], list[VariantCase]] = {}
    for r in _shown(case):
        if r.projected:
            groups.setdefault((measured_on(r), r.target_name or "", r.indicative), []).append(r)
    out = []
    for (measured, target, indicative), group in groups.items():
        first, *rest = group
        priced = _and([f"'{first.name}' is priced on {first.devices_label}",
                       *[f"'{r.name}' on {r.devices_label}" for r in rest]])
        if indicative:
            out.append(f"Indicative only: {priced}, projected from the {measured} "
                       f"{'it' if len(group) == 1 else 'they'} ran on; a CPU-to-GPU projection "
                       f"was {_check_error()} too fast when checked, so it never counts as "
                       f"meeting the p95 target. Run the pilot on {target} to measure it.")
        else:
            kind = group[0].measured_kind.upper() or "device"
            out.append(f"Projected, not measured: the pilot ran on {measured}; {priced} by "
                       "the memory-bandwidth ratio (capped by compute); the error of a "
                       f"projection between two {kind}s has not been measured yet. Run the "
                       f"pilot on {target} to measure it.")
    hopes: dict[str, list[str]] = {}
    for r in case.rows:
        if r.alternative is not None:
            hopes.setdefault(r.alternative.hardware_name, []).append(f"'{r.name}'")
    for hw, names in hopes.items():
        out.append(f"Not settled: projected from the {measured_on(case.rows[0])}, "
                   f"{', '.join(names)} would meet the {case.assumptions.p95_target_s:g} s p95 "
                   f"target on {hw}, but such a projection was {_check_error()} too fast when "
                   f"checked, so it is not counted. Run the pilot on {hw} to measure it.")
    return out


def _and(items: list[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"
