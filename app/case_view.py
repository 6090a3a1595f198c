"""The business case's answer as the pages draw it: the same headline and figures on the
Overview, the Results page and the Business case page.

Every string comes from engine.reports.case_words (as in the PDFs and `roilab show`);
this module only lays them out. Flags (no variant passes, the baseline misses the target,
a hosted API is cheaper, a minimum bill) are warnings, never silent.
"""
from __future__ import annotations

import streamlit as st

from app import ui
from engine.business.types import BusinessCase
from engine.reports.case_words import business_figures, case_headline


def render_answer(case: BusinessCase, with_payback: bool = True) -> None:
    """The recommendation (or why there is none) and the monthly figures, devices beside
    each bill; no "After" figure when nothing moves, the decision instead."""
    f, rec = business_figures(case), case.recommended
    first, priced, *flags = case_headline(case)
    if rec is None:
        st.error(ui.escape_md(first), icon=":material/block:")
    elif rec.is_baseline:
        st.warning(ui.escape_md(first), icon=":material/balance:")
    else:
        st.success(ui.escape_md(first), icon=":material/thumb_up:")
    cols = st.columns(4 if with_payback else 3)
    cols[0].metric("Before / month", f["baseline_monthly"],
                   help=f"{case.rows[0].name} on {f['baseline_devices']}")
    if case.moves:
        cols[1].metric("After / month", f["recommended_monthly"],
                       help=f"{f['recommended']} on {f['recommended_devices']}")
    else:
        cols[1].metric("Decision", f["decision"], help=case.recommendation.reason)
    cols[2].metric("Saving / month", f["monthly_savings"])
    if with_payback:
        cols[3].metric("Payback", f["payback"])
    after = (f"; after: {f['recommended_monthly']} on {f['recommended_devices']}"
             if case.moves else "; no 'after': nothing moves")
    st.caption(ui.escape_md(f"Before: {f['baseline_monthly']} on {f['baseline_devices']}{after}. "
                            + priced))
    for flag in flags:
        st.warning(ui.escape_md(flag), icon=":material/flag:")
