"""Upload log: validate a request log, store it unchanged, and profile its prompts.

The profile shown is always read back from the store, so it survives a refresh: the
statistics and length histogram stored at ingest, and the first 20 requests, never all. What an
upload's parsing noticed (the reference column, ignored columns) is not stored: it is kept in
session state as text for this session's uploads. A refused upload shows its error and no
workload's report until one is picked, so an old report never reads as the new file's.
"""
from __future__ import annotations

import streamlit as st

from app import charts, data, nav, ui
from engine.core.domain import Workload
from engine.core.errors import RoilabError
from engine.ingest.log_request import REFERENCE_KEYS
from engine.ingest.review import rejected_warning
from engine.ingest.stats import prefix_text

SELECTED = "upload.workload_id"  # session state: workload inspected; None after a refused upload
NOTES = "upload.notes"  # session state: workload id -> what parsing it noticed (plain text)


def render() -> None:
    st.title("Upload a request log")
    st.caption("JSONL (chat messages, prompt, OpenAI Batch input or proxy logs) or CSV with "
               "a prompt column. Good rows are kept; bad rows are listed with the fix. The "
               "file is stored byte for byte. Files up to "
               f"{st.get_option('server.maxUploadSize')} MB (server.maxUploadSize in "
               ".streamlit/config.toml); a bigger log: `roilab ingest FILE`, which has no limit.")
    _render_upload_form()
    _render_samples()
    workload = _render_workload_picker()
    if workload is not None:
        _render_validation(workload)
        _render_statistics(workload)
        _render_preview(workload)
        st.page_link(nav.page("playbook"), label="Its playbook: the techniques that fit it, "
                     "and the pilot to run", icon=":material/route:",
                     query_params={"workload": str(workload.id)})
        st.page_link(nav.page("run"), label="Run a pilot on it", icon=":material/play_arrow:")


def _render_upload_form() -> None:
    with st.form("upload", clear_on_submit=False):
        file = st.file_uploader("Request log", type=["jsonl", "json", "ndjson", "csv"])
        name = st.text_input("Workload name", placeholder="defaults to the file name")
        submitted = st.form_submit_button("Validate and store", type="primary")
    if submitted:
        if file is None:
            st.warning("Choose a file first.")
        else:
            _ingest(name, file.name, file.getvalue())


def _render_samples() -> None:
    samples = {p.name: p for p in data.sample_logs()}
    if not samples:
        return
    with st.expander("Or load a bundled sample log"):
        choice = st.selectbox("Sample", list(samples), key="upload.sample")
        if st.button("Load sample", key="upload.load_sample"):
            path = samples[choice]
            _ingest(f"sample: {path.stem}", path.name, path.read_bytes())


def _ingest(name: str, filename: str, raw: bytes) -> None:
    try:
        workload, notes = data.ingest_log(name, filename, raw)
    except RoilabError as exc:  # LogFormatError: unusable file, nothing stored
        ui.show_error(exc)
        st.session_state[SELECTED] = None  # no earlier workload's report under the error
        return
    st.session_state[SELECTED] = workload.id
    st.session_state.setdefault(NOTES, {})[workload.id] = notes
    warning = rejected_warning(workload.n_requests, workload.issues)
    if warning:  # many broken rows: not a green tick, though the usable rows are stored
        st.warning(ui.escape_md(f"Stored workload #{workload.id}, but {warning}"),
                   icon=":material/warning:")
        return
    rejected = "1 rejected row" if workload.n_issues == 1 else f"{workload.n_issues} rejected rows"
    st.success(f"Stored workload #{workload.id}: {workload.n_requests} usable requests, "
               f"{rejected}.", icon=":material/check_circle:")


def _render_workload_picker() -> Workload | None:
    workloads = {w.id: w for w in data.workloads()}
    if not workloads:
        return None
    ids = list(workloads)
    asked = st.query_params.get("workload", "")  # a link from the Playbook page
    if asked.isdigit() and int(asked) in workloads and SELECTED not in st.session_state:
        st.session_state[SELECTED] = int(asked)
    wanted = st.session_state.get(SELECTED, ids[0])  # None: an upload was just refused
    st.divider()
    chosen = st.selectbox("Inspect stored workload", ids,
                          index=ids.index(wanted) if wanted in workloads else
                          None if wanted is None else 0,
                          placeholder="Choose a stored workload to see its report",
                          format_func=lambda i: f"#{i} {workloads[i].name} "
                                                f"({workloads[i].filename})")
    st.session_state[SELECTED] = chosen
    return workloads.get(chosen)


def _render_validation(workload: Workload) -> None:
    st.subheader("Validation report")
    cols = st.columns(4)
    cols[0].metric("Format", workload.format)
    cols[1].metric("Valid requests", f"{workload.n_requests:,}")
    cols[2].metric("Invalid rows", f"{workload.n_issues:,}")
    cols[3].metric("Rows read", f"{workload.n_requests + workload.n_issues:,}")
    for note in st.session_state.get(NOTES, {}).get(workload.id, ()):
        st.caption(ui.escape_md(note))  # reference column, ignored columns
    if workload.issues:
        st.caption("Rows left out, with how to fix each (line = line or row in your file):")
        ui.dataframe(data.issues_frame(workload), hide_index=True, column_config={
            "reason": st.column_config.TextColumn("reason (how to fix)", width="large")})
    else:
        st.caption("Every row was usable.")


def _render_statistics(workload: Workload) -> None:
    st.subheader("Prompt statistics")
    stats = data.workload_profile(workload.id)  # stored at ingest: no request is read
    units = [u for u in ("prompt_tokens", "prompt_words", "prompt_chars") if u in stats]
    table = {u.removeprefix("prompt_"): stats[u] for u in units}
    ui.dataframe(table, column_config={u: st.column_config.NumberColumn(format="localized")
                                       for u in table})  # thousands separated
    if "prompt_tokens" not in stats:
        st.caption("Token counts need the embedded model, which is not prepared yet "
                   "(it is on the first pilot run); showing words and characters.")
    st.text(f"{stats['with_reference']:,} of {stats['n']:,} requests have a reference answer; "
            f"{stats['with_logged_output']:,} have a logged output.")
    if not stats["with_reference"]:
        st.caption(ui.escape_md("A reference answer is read from a column (or JSON field) named "
                                f"one of {', '.join(REFERENCE_KEYS)} (any case)."))
    unit = "tokens" if "tokens" in stats["histograms"] else "words"
    st.plotly_chart(charts.length_histogram(stats["histograms"][unit], unit))
    if "prefix" in stats:
        st.markdown(ui.escape_md(prefix_text(stats["prefix"])))



def _render_preview(workload: Workload) -> None:
    with st.expander("First requests, as parsed"):
        rows = [{"line": r.line, "prompt": r.messages[-1]["content"], "reference": r.reference,
                 "logged output": r.logged_output} for r in data.requests(workload.id, 20)]
        ui.dataframe(rows, hide_index=True)
