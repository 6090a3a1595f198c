"""Overview: the business case of the latest finished run (the same answer as the Results
and Business case pages, `roilab show` and the PDFs), and every earlier run."""
from __future__ import annotations

import streamlit as st

from app import case_view, data, nav, stability_view, ui
from engine.core.domain import Run, Status
from engine.core.errors import RoilabError
from engine.pilot.stability import stability_lines
from engine.reports.pdf import fmt_price


def render() -> None:
    st.title("roilab")
    st.caption("Replay your own LLM requests through a baseline and compressed variants, "
               "and see what compression would save - measured, not estimated.")
    runs = data.runs()
    if not data.workloads():
        _render_empty()
        return
    # partial: the baseline and some variants were measured, the rest failed (a caveat below)
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
    """The CFO's page on screen (app/case_view, the twin of the PDF's page 1: a partial run
    is one of its caveat lines), then the measurement warnings in full."""
    rep = data.report(run.id)
    st.subheader(f"Latest finished run #{run.id}")
    st.caption(ui.escape_md(f"{run.name} - {rep.workload.name} - measured on "
                            f"{rep.hardware.name} at {fmt_price(rep.price_per_hour)}/h per "
                            "device"))
    try:
        case = data.run_case(run.id)
    except RoilabError as exc:  # no measured baseline: say why, no figures
        if run.status == Status.PARTIAL:
            st.warning(ui.escape_md(f"Partial run: {run.error}"))
        ui.show_error(exc)
        stability_view.render_warnings(rep)
    else:
        case_view.render_answer(case, with_chart=True)
        if stability_lines(rep):  # the caveats above say it in short
            with st.expander("How the speed figures were measured"):
                stability_view.render_warnings(rep)
    st.page_link(nav.page("results"), label=f"Open run #{run.id}",
                 query_params={"run": str(run.id)}, icon=":material/bar_chart:")
    st.page_link(nav.page("business"), label="Business case: change the assumptions",
                 query_params={"run": str(run.id)}, icon=":material/savings:")


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
