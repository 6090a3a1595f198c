"""Playbook: one workload's walk from its log to a business case, as five steps with their
state and a link to where each is done, the request-length distribution and shared prefix
measured at ingest, and the techniques that fit it with the figure that says why
(engine.business.playbook). One button runs the suggested pilot (handed to Ray as the Run
pilot page does; watched here)."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from app import charts, data, nav, ui
from app.views.run_pilot import watch_run
from engine.backends.base import default_dtype
from engine.business.claims import scorecard_rows
from engine.core.errors import RoilabError
from engine.ingest.review import default_workload
from engine.ingest.stats import prefix_text

ICON = {"done": ":material/check_circle:", "next": ":material/arrow_circle_right:",
        "not started": ":material/radio_button_unchecked:"}
FITS = {True: ":material/check:", False: ":material/remove:"}
LINK = {"upload": "Open the workload's profile", "run": "Run a pilot",
        "results": "Open the results", "business": "Open the business case"}


def render() -> None:
    st.title("Playbook")
    st.caption("Pilot one workflow, measure before, apply 2-3 techniques that fit it, measure "
               "after, then roll it into the portfolio and pilot the next.")
    workloads = {w.id: w for w in data.workloads()}
    if not workloads:
        st.info("Step 1 is a request log: upload one (or pick a bundled sample).")
        st.page_link(nav.page("upload"), label="Upload a log", icon=":material/upload_file:")
        return
    workload_id = _pick_workload(workloads)
    book = data.playbook(workload_id)
    _render_steps(book)
    _render_profile(workload_id)
    _render_scorecard(book)
    _render_suggestions(book)


def _pick_workload(workloads: dict) -> int:
    ids = list(workloads)
    wanted = st.query_params.get("workload", "")
    default = (int(wanted) if wanted.isdigit() and int(wanted) in workloads
               else default_workload(list(workloads.values())).id)
    chosen = st.selectbox(
        "Workload", ids, index=ids.index(default), key="playbook.workload",
        format_func=lambda i: f"#{i} {workloads[i].name} ({workloads[i].n_requests} requests)")
    st.query_params["workload"] = str(chosen)  # the URL always names the workload shown
    return chosen


def _render_steps(book) -> None:
    st.subheader("Steps")
    for i, step in enumerate(book.steps, 1):
        left, right = st.columns([5, 2])
        label = {"done": "done", "next": "next", "not started": "not started"}[step.state]
        left.markdown(f"{ICON[step.state]} **{i}. {step.title}** - *{label}*  \n"
                      + ui.escape_md(step.detail))
        params = ({"workload": str(book.workload.id)} if step.page == "upload" else
                  {"run": str(step.run_id)} if step.run_id is not None else {})
        right.page_link(nav.page(step.page), label=LINK[step.page], query_params=params,
                        icon=":material/open_in_new:")


def _render_profile(workload_id: int) -> None:
    stats = data.workload_profile(workload_id)
    st.subheader("Input side, measured at ingest")
    unit = "tokens" if "tokens" in stats["histograms"] else "words"
    st.plotly_chart(charts.length_histogram(stats["histograms"][unit], unit),
                    key="playbook.lengths")
    if "prefix" in stats:
        st.markdown(ui.escape_md(prefix_text(stats["prefix"])))


def _render_scorecard(book) -> None:
    st.subheader("Claims scorecard")
    if not book.scorecard:
        st.caption("The claims that sent you here (2-4x from quantization, 60% less KV memory, "
                   "up to 20x fewer input tokens, a 7B 4-bit model on one A10G, 50-70% "
                   "savings) are tested against this workload's first run with a technique "
                   "measured.")
        return
    st.caption(f"The article's claims, tested against run #{book.scorecard_run} of this "
               "workload (its business case for the savings). A claim the run cannot test "
               "says which variant or pilot would.")
    # A static table, not a grid: its figures and notes are sentences, which a grid's
    # cells cut off at the page's width (1400 px showed half of each).
    ui.table(pd.DataFrame([{k: row[k] for k in ("claim", "verdict", "figure", "variant", "note")}
                           for row in scorecard_rows(book.scorecard)]).set_index("claim"))


def _render_suggestions(book) -> None:
    st.subheader(f"Techniques for this workload ({book.backend} backend)")
    for s in book.suggestions:  # text, not a table: the reason is the point, and long
        if s.fits and s.variant in book.suggested:
            where = f"fits: in the suggested pilot as {s.variant}"
        elif s.fits:
            where = f"fits, not in the one-click pilot: {s.how}"
        else:
            where = "not now"
        st.markdown(f"{FITS[s.fits]} **{ui.escape_md(s.technique)}** - "
                    f"*{ui.escape_md(where)}*  \n{ui.escape_md(s.reason)}.")
    if not book.suggested:
        st.info("No technique with a built-in variant fits on this backend; the Run pilot page "
                "takes variants of your own.")
        st.page_link(nav.page("run"), label="Run pilot", icon=":material/play_arrow:")
        return
    st.markdown(ui.escape_md(f"Suggested pilot: the baseline and {', '.join(book.suggested)} "
                             f"(the same as `{book.pilot_command()}`)."))
    left, _ = st.columns([1, 3])
    n = left.number_input("Requests to replay", min_value=1, max_value=book.workload.n_requests,
                          value=min(data.PLAYBOOK_MAX_REQUESTS, book.workload.n_requests),
                          key="playbook.requests",
                          help="The first requests of the workload; more give steadier figures "
                               "and take longer (the Run pilot page has every setting).")
    if st.button("Run the suggested pilot", type="primary", key="playbook.run"):
        try:
            with st.spinner("Handing the pilot to Ray (its first use on this machine starts "
                            "it, 10-30 s)"):
                run, _ = data.submit_playbook_pilot(
                    book, int(n), model=data.settings().default_model, device="auto",
                    dtype=default_dtype(book.backend, "auto"))
        except RoilabError as exc:  # no hardware matched, Ray unreachable: nothing created
            ui.show_error(exc)
            return
        st.session_state["playbook.run_id"] = run.id
    run_id = st.session_state.get("playbook.run_id")
    if run_id is not None:  # the steps above follow once it finishes (the page runs again)
        run, _ = data.live_run(run_id)
        watch_run(run_id, rerun_page_when_finished=not run.status.finished)
