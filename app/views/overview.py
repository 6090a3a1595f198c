"""Overview: the headline of the latest finished run, and every earlier run."""
from __future__ import annotations

import streamlit as st

from app import data, nav, ui
from engine.core.domain import Run, Status
from engine.economics.decision import RANDOM_WEIGHTS
from engine.pilot.report import accuracy_retention, speed_memory_only


def render() -> None:
    st.title("roilab")
    st.caption("Replay your own LLM requests through a baseline and compressed variants, "
               "and see what compression would save - measured, not estimated.")
    runs = data.runs()
    if not data.workloads():
        _render_empty()
        return
    # partial: the baseline and some variants were measured, the rest failed (said below)
    finished = next((r for r in runs if r.status in (Status.DONE, Status.PARTIAL)), None)
    if finished:
        _render_headline(finished)
    else:
        st.info("No finished run yet.")
        st.page_link(nav.page("run"), label="Run a pilot", icon=":material/play_arrow:")
    _render_runs()
    _render_workloads()


def _render_empty() -> None:
    st.info("Nothing stored yet. Start by uploading a request log (JSONL or CSV) or loading "
            "one of the bundled samples.")
    st.page_link(nav.page("upload"), label="Upload a log", icon=":material/upload_file:")


def _render_headline(run: Run) -> None:
    rep = data.report(run.id)
    best = rep.best_saving()
    st.subheader(f"Latest finished run #{run.id}")
    st.text(f"{run.name} - {rep.workload.name} - {rep.hardware.name} at "
            f"${rep.price_per_hour:g}/h, {rep.requests_per_month:,} requests/month")
    if run.status == Status.PARTIAL:
        st.warning(ui.escape_md(f"Partial run: {run.error}"))
    unscored = speed_memory_only(rep)
    if unscored:
        st.caption(ui.escape_md(f"{', '.join(unscored)}: {RANDOM_WEIGHTS}."))
    cols = st.columns(3)
    cols[0].metric("Baseline cost / month", ui.money(rep.baseline.monthly_cost))
    if best is None or not best.monthly_savings or best.monthly_savings <= 0:
        cols[1].metric("Best saving / month", "none",
                       help="No variant was cheaper than the baseline on this hardware.")
    else:
        holds = " if quality holds" if best.name in unscored else ""
        cols[1].metric(f"Best saving / month ({ui.escape_md(best.name)}){holds}",
                       ui.money(best.monthly_savings), delta=ui.pct(best.savings_fraction))
        if holds:
            cols[2].metric("Its accuracy", "not measured", help=RANDOM_WEIGHTS)
        else:
            cols[2].metric("Its accuracy retention",
                           ui.pct(accuracy_retention(rep, best.name)),
                           help="Reference match of the variant as a share of the baseline's.")
    st.page_link(nav.page("results"), label=f"Open run #{run.id}",
                 query_params={"run": str(run.id)}, icon=":material/bar_chart:")


def _render_runs() -> None:
    st.subheader("Runs")
    frame = data.runs_frame()
    if frame.empty:
        st.caption("No runs yet.")
        return
    ui.dataframe(frame, hide_index=True)


def _render_workloads() -> None:
    st.subheader("Workloads")
    ui.dataframe(data.workloads_frame(), hide_index=True)
