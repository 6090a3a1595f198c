"""Load test: sweep an endpoint through a form, then read any stored sweep back.

Long work starts from the form's submit and writes to the store level by level; the charts
and table below are rebuilt from the stored samples (app.data), so a refresh or a second
browser shows the same figures. Names and URLs are user content: shown as plain text.
"""
from __future__ import annotations

from typing import Any

import streamlit as st

from app import data, load_charts, ui
from engine.core.domain import LoadRun, Status
from engine.core.errors import RoilabError
from engine.load.replay import LoadProgress
from engine.load.spec import LoadSpec, parse_levels, parse_load_spec, stored_load_spec


def render() -> None:
    st.title("Load test")
    st.caption("Replays a stored workload against an OpenAI-compatible endpoint (a deployed "
               "vLLM, TGI, a hosted API) at fixed concurrency, a Poisson arrival-rate sweep "
               "or the log's own timing, and measures TTFT, inter-token and end-to-end "
               "latency, throughput and goodput at your SLO per load level.")
    runs = {r.id: r for r in data.load_runs()}
    _render_form(expanded=not runs)
    if not runs:
        st.info("No load tests stored yet: start one with the form above.")
        return
    run = runs[_select_run(runs)]
    try:
        spec = stored_load_spec(run)
    except RoilabError as exc:
        ui.show_error(exc)
        return
    _render_status(run, spec)
    if run.n_samples == 0:
        return
    levels = data.load_levels_frame(run.id)
    _render_capacity(run)
    st.plotly_chart(load_charts.latency_vs_load(levels, spec.schedule), key="chart.load_latency")
    st.plotly_chart(load_charts.throughput_vs_load(levels, spec.schedule),
                    key="chart.load_throughput")
    _render_table(levels)
    with st.expander("Load spec, exactly as run"):
        st.json(run.spec, expanded=True)


def _select_run(runs: dict[int, LoadRun]) -> int:
    ids = list(runs)
    wanted = st.query_params.get("load_run", "")
    index = ids.index(int(wanted)) if wanted.isdigit() and int(wanted) in runs else 0
    chosen = st.selectbox("Load run", ids, index=index, format_func=lambda i: (
        f"#{i} {runs[i].name} - {runs[i].status} - {runs[i].created_at:%Y-%m-%d %H:%M}"))
    st.query_params["load_run"] = str(chosen)
    return chosen


def _render_status(run: LoadRun, spec: LoadSpec) -> None:
    slo = spec.slo.model_dump(exclude_none=True)
    levels = ", ".join(f"{x:g}" for x in spec.levels)
    length = (f"exactly {spec.max_new_tokens} new tokens each (fixed output)"
              if spec.fixed_output else f"up to {spec.max_new_tokens} new tokens (natural "
                                        "output: see output tokens/request)")
    st.text(f"{spec.schedule} levels {levels}, {spec.requests_per_level} requests per level, "
            f"{length}; SLO: "
            + (", ".join(f"{k} <= {v:g}" for k, v in slo.items()) or "none"))
    if run.status in (Status.PENDING, Status.RUNNING):
        st.info(f"Load run #{run.id} is {run.status}; the levels finished so far are shown.")
        if st.button("Refresh"):
            data.clear_queries()
            st.rerun()
    elif run.status == Status.FAILED:
        st.error(f"Load run #{run.id} failed.")
        st.code(run.error or "no reason recorded", language=None)


def _render_capacity(run: LoadRun) -> None:
    caps = data.load_capacity(run.id)
    cols = st.columns(max(1, len(caps)))
    for col, cap in zip(cols, caps.values(), strict=False):
        value = "none" if cap.requests_per_s is None else f"{cap.requests_per_s:.2f} req/s"
        col.metric(f"Capacity at SLO: {ui.escape_md(cap.variant)}", value,
                   help="Highest requests/s of a level where at least 90% of requests met "
                        "every SLO threshold; the business case can size with it.")
        if cap.output_tokens_per_request is not None:
            col.caption(f"{cap.output_tokens_per_request:.1f} output tokens/request at level "
                        f"{cap.level:g}")


_COLUMNS = {"variant": ("variant", None), "level": ("level", "%g"), "n_ok": ("ok", "%d"),
            # up front: the work the figures are of (64.0 fixed vs e.g. 48.5 natural)
            "output_tokens_per_request": ("output tokens/request", "%.1f"),
            "ttft_p50_s": ("TTFT p50 (s)", "%.3f"), "ttft_p90_s": ("TTFT p90 (s)", "%.3f"),
            "ttft_p99_s": ("TTFT p99 (s)", "%.3f"), "itl_p50_s": ("ITL p50 (s)", "%.4f"),
            "itl_p90_s": ("ITL p90 (s)", "%.4f"), "itl_p99_s": ("ITL p99 (s)", "%.4f"),
            "e2e_p50_s": ("E2E p50 (s)", "%.3f"), "e2e_p90_s": ("E2E p90 (s)", "%.3f"),
            "e2e_p99_s": ("E2E p99 (s)", "%.3f"),
            "output_tokens_per_s": ("output tokens/s", "%.1f"),
            "requests_per_s": ("requests/s", "%.3f"), "goodput_rps": ("goodput (req/s)", "%.3f"),
            "slo_attainment": ("in SLO", "%.2f")}


def _render_table(levels) -> None:
    st.subheader("Per load level")
    config = {c: st.column_config.NumberColumn(label, format=fmt) if fmt
              else st.column_config.TextColumn(label) for c, (label, fmt) in _COLUMNS.items()}
    ui.dataframe(levels[list(_COLUMNS)], hide_index=True, column_config=config,
                 key="table.load_levels")


def _render_form(expanded: bool) -> None:
    workloads = {w.id: w for w in data.workloads()}
    with st.expander("Start a load test", expanded=expanded):
        if not workloads:
            st.info("Upload a request log first: its requests are what the sweep replays.")
            return
        values = _form(workloads)
    if values is not None:
        _run(values)


def _form(workloads) -> dict[str, Any] | None:
    with st.form("load_form"):
        v: dict[str, Any] = {}
        a, b = st.columns(2)
        v["workload_id"] = a.selectbox("Workload", list(workloads),
                                       format_func=lambda i: f"#{i} {workloads[i].name}")
        v["name"] = b.text_input("Name", value="load test")
        a, b, c = st.columns(3)
        v["base_url"] = a.text_input("Endpoint base URL", placeholder="http://127.0.0.1:8000/v1")
        v["model"] = b.text_input("Served model name", placeholder="as in GET /v1/models")
        v["variant"] = c.text_input("Variant name", placeholder="defaults to the model name")
        a, b, c, d = st.columns(4)
        v["schedule"] = a.selectbox("Schedule", ["concurrency", "poisson", "trace"],
                                    help="concurrency: requests in flight; poisson: arrivals "
                                         "per second; trace: the log's timestamps sped up")
        v["levels"] = b.text_input("Levels", value="1,2,4,8")
        v["requests_per_level"] = c.number_input("Requests per level", 1, 10_000, 16)
        v["max_new_tokens"] = d.number_input("Max new tokens", 1, 32_768, 64)
        v["fixed_output"] = st.checkbox(
            "Fixed output length", value=True,
            help="Every request generates exactly 'Max new tokens' (vLLM's ignore_eos and "
                 "min_tokens), so variants are compared on the same work; untick for the "
                 "answer lengths each model chooses, or for an endpoint that refuses those "
                 "fields.")
        a, b, c, d = st.columns(4)
        v["ttft_s"] = a.number_input("SLO: TTFT (s)", min_value=0.0, value=None, format="%.3f",
                                     placeholder="not checked")
        v["itl_s"] = b.number_input("SLO: inter-token (s)", min_value=0.0, value=None,
                                    format="%.4f", placeholder="not checked")
        v["e2e_s"] = c.number_input("SLO: end to end (s)", min_value=0.0, value=None,
                                    format="%.3f", placeholder="not checked")
        v["seed"] = d.number_input("Seed", 0, 2**31 - 1, 0)
        st.caption("Optional second endpoint, swept the same way after the first (e.g. the "
                   "compressed model beside the baseline):")
        a, b, c = st.columns(3)
        v["base_url2"] = a.text_input("Second base URL", placeholder="optional")
        v["model2"] = b.text_input("Second served model name")
        v["variant2"] = c.text_input("Second variant name")
        v["api_key_env"] = st.text_input("API key variable (optional)", placeholder="e.g. "
                                         "PROD_API_KEY: the NAME of an environment variable")
        submitted = st.form_submit_button("Run load test", type="primary")
    return v if submitted else None


def _target(v: dict[str, Any], n: str) -> dict[str, Any]:
    model = v[f"model{n}"].strip()
    return {"name": (v[f"variant{n}"].strip() or model or f"endpoint{n}")[:80],
            "base_url": v[f"base_url{n}"].strip() or None, "model": model or None,
            "api_key_env": v["api_key_env"].strip() or None}


def _spec(v: dict[str, Any]):
    """Form values -> LoadSpec (validated by the engine; SpecError names the field)."""
    targets = [_target(v, ""), *([_target(v, "2")] if v.get("base_url2", "").strip() else [])]
    slo = {k: (v[k] or None) for k in ("ttft_s", "itl_s", "e2e_s")}
    return parse_load_spec({
        "name": v["name"].strip() or "load test", "workload_id": v["workload_id"],
        "targets": targets, "schedule": v["schedule"], "levels": parse_levels(v["levels"]),
        "requests_per_level": int(v["requests_per_level"]),
        "max_new_tokens": int(v["max_new_tokens"]),
        "fixed_output": bool(v.get("fixed_output", True)), "slo": slo, "seed": int(v["seed"])})


def _run(v: dict[str, Any]) -> None:
    try:
        spec = _spec(v)
        run = data.create_load_run(spec)
    except RoilabError as exc:
        ui.show_error(exc)
        return
    bar = st.progress(0.0, text="Starting")
    line = st.empty()

    def on_progress(p: LoadProgress) -> None:
        bar.progress(p.fraction, text=f"{p.target}: level {min(p.level_index + 1, p.n_levels)}"
                                      f" of {p.n_levels}")
        line.text(p.message)  # plain text: may quote a server's error

    try:
        data.execute_load_run(spec, run.id, on_progress)
    except RoilabError as exc:
        ui.show_error(exc)
        return
    bar.progress(1.0, text="Done")
    st.query_params["load_run"] = str(run.id)
    st.rerun()  # show the new run from the store
