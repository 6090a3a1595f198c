"""The business case's answer as the pages draw it: the CFO's page on screen (the twin of
page 1 of the business-case PDF) at the top of the Overview and Business case pages, and the
same answer on the Results page.

Every string comes from engine.reports.case_words (as in the PDFs and `roilab show`);
this module only lays them out: the decision once, in one sentence (no warning or error
styling for keeping the baseline or recommending nothing yet); the monthly figures once
("Monthly cost" alone when nothing moves); the volume and hardware priced; the before/after
chart when something moves; one line per caveat that applies, in one box (its unstable line
is the legend of the '*').
"""
from __future__ import annotations

import streamlit as st

from app import business_charts, ui
from engine.business.types import BusinessCase
from engine.reports.case_caveats import caveats
from engine.reports.case_words import (
    NOTHING_SPENT,
    business_figures,
    decision_sentence,
    hardware_priced,
    priced_at,
    star,
)


def render_answer(case: BusinessCase, with_payback: bool = True,
                  with_chart: bool = False) -> None:
    """The decision in one sentence, the monthly figures (devices beside each bill; no
    "after" figure when nothing moves), how it was priced, the before/after chart
    (``with_chart``, only on a move) and the caveats."""
    _render_decision(case)
    _render_figures(case, with_payback)
    if with_chart and case.moves:
        st.plotly_chart(business_charts.before_after(case, compact=True), key="answer.chart")
    _render_caveats(case)


def _render_decision(case: BusinessCase) -> None:
    """A move in green; keeping the baseline, or no variant to recommend yet, in a neutral
    box: neither is the tool failing (red is for real errors)."""
    text = ui.escape_md(decision_sentence(case))
    if case.moves:
        st.success(text, icon=":material/thumb_up:")
    elif case.recommended is None:
        st.info(text, icon=":material/pause_circle:")
    else:  # keeping the baseline is a plain answer, not a warning
        st.info(text, icon=":material/balance:")


def _render_figures(case: BusinessCase, with_payback: bool) -> None:
    """The tiles (before, after on a move, saving, payback), then a caption with only what
    they and the sentence do not say: the saving's range, the hardware and its $/hour, the
    volume and the cost model."""
    f, base, rec = business_figures(case), case.rows[0], case.recommended
    moves = case.moves and rec is not None
    tiles = [(("Before / month" if moves else "Monthly cost")
              + (", projected" if base.projected else ""),
              star(f["baseline_monthly"], base.cost_unstable),
              f"{base.name} on {f['baseline_devices']}")]
    if moves:
        tiles.append(("After / month" + (", projected" if rec.projected else ""),
                      star(f["recommended_monthly"], rec.cost_unstable),
                      f"{rec.name} on {f['recommended_devices']}"))
    tiles.append(("Saving / month", star(f["monthly_savings"], moves and (
        base.cost_unstable or rec.cost_unstable)), f"range {f['savings_range']}" if moves
        else "nothing moves"))
    if with_payback:
        tiles.append(("Payback", f["payback"] if moves else "none",
                      f"one-time {f['one_time']}" if moves else NOTHING_SPENT))
    for col, (label, value, why) in zip(st.columns(len(tiles)), tiles, strict=True):
        col.metric(label, value, help=ui.escape_md(why) if why else None)
    rng = (f"Saving range {f['savings_range']}. "
           if moves and case.savings_interval is not None else "")
    st.caption(ui.escape_md(f"{rng}Hardware priced: {hardware_priced(case)}. "
                            + priced_at(case)))


def _render_caveats(case: BusinessCase) -> None:
    """One line per caveat; the unstable one says what '*' means (the legend)."""
    lines = caveats(case)
    if lines:
        st.warning("  \n".join(ui.escape_md(line) for line in lines), icon=":material/flag:")
