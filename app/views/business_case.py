"""Business case: one run's answer for a CFO, recomputed live as the assumptions change.

Every figure comes from engine.business.case (through app/data.py); this page only lays out
inputs, the answer, charts and tables. Its top is the CFO's page (app/case_view, the twin of
page 1 of the PDF), drawn above the inputs it is computed from. Its inputs start at the
run's stored assumptions, so untouched it shows the same case as the Overview, the Results
page, `roilab show` and the PDFs. Projected figures are labelled with their method; unstable
ones carry "*".
"""
from __future__ import annotations

import pandas as pd
import streamlit as st

from app import business_charts, case_view, data, nav, stability_view, ui
from engine.business.case import Assumptions, BusinessCase, require_measured_baseline
from engine.core.domain import Run, Status
from engine.core.errors import RoilabError
from engine.economics import traffic
from engine.economics.decision import ACCURACY_METRICS, threshold_bounds
from engine.reports.case_charts import chart_notes
from engine.reports.case_words import (
    basis_detail,
    executive_summary,
    fmt_money,
    variant_rows,
)

AUTO = "auto (right-size over the catalog)"


def render() -> None:
    st.title("Business case")
    runs = {r.id: r for r in data.runs() if any(v.status == Status.DONE for v in r.variants)}
    if not runs:
        st.info("No run with results yet: a business case needs a measured pilot.")
        st.page_link(nav.page("run"), label="Run a pilot", icon=":material/play_arrow:")
        return
    run_id = _select_run(runs)
    try:  # a case priced against nothing would be all n/a: say why there is none
        require_measured_baseline(runs[run_id])
    except RoilabError as exc:
        ui.show_error(exc)
        return
    top = st.container()  # the answer, drawn above the inputs it is computed from
    a = _render_assumptions(run_id, data.run_case_assumptions(run_id))
    if a is None:
        return
    case = data.business_case(run_id, a)
    with top:
        case_view.render_answer(case, with_chart=True)
    _render_detail(case)
    with st.expander("How the speed figures were measured"):
        stability_view.render_warnings(data.report(run_id))  # unstable figures, a busy machine
    _render_charts(case)
    _render_variant_table(case)
    _render_methods(case)
    _render_pdf(run_id, a)
    _render_portfolio(runs, run_id, a)


def _select_run(runs: dict[int, Run]) -> int:
    ids = list(runs)
    wanted = st.query_params.get("run", "")
    index = ids.index(int(wanted)) if wanted.isdigit() and int(wanted) in runs else 0
    chosen = st.selectbox("Run", ids, index=index, key="bc.run", format_func=lambda i: (
        f"#{i} {runs[i].name} - {runs[i].created_at:%Y-%m-%d %H:%M}"))
    st.query_params["run"] = str(chosen)
    return chosen


def _render_assumptions(run_id: int, _D: Assumptions) -> Assumptions | None:
    """The inputs, starting at the run's stored assumptions ``_D``; None (with the reason
    shown) when they do not make a valid Assumptions. Keys carry the run, so another run
    starts at its own."""
    st.subheader("Assumptions", help="Every figure below updates as you change these; they "
                 "start at the run's stored ones (its volume from the pilot's requests/month).")
    c = st.columns(4)
    low, high = threshold_bounds(_D.accuracy_metric)
    fields = dict(
        requests_per_day=traffic.requests_per_day(c[0].number_input(
            "Requests per month", min_value=0.0, step=100_000.0, format="%.0f",
            value=float(round(traffic.requests_per_month(_D.requests_per_day))),
            key=f"bc.requests_per_month.{run_id}")),
        peak_factor=c[1].number_input("Peak-to-average factor", min_value=1.0, step=0.5,
                                      value=_D.peak_factor, key=f"bc.peak_factor.{run_id}"),
        p95_target_s=c[2].number_input("p95 latency target (s)", min_value=0.01, step=1.0,
                                       value=_D.p95_target_s, key=f"bc.p95_target_s.{run_id}"),
        utilisation=c[3].slider("Utilisation", 0.05, 1.0, _D.utilisation, 0.05,
                                key=f"bc.utilisation.{run_id}"),
        engineering_days=c[0].number_input("Engineering days", min_value=0.0, step=1.0,
                                           value=_D.engineering_days, key=f"bc.engineering_days.{run_id}"),
        day_rate=c[1].number_input("Day rate ($)", min_value=0.0, step=100.0, value=_D.day_rate,
                                   key=f"bc.day_rate.{run_id}"),
        gpu_hours=c[2].number_input("GPU hours (compress + validate)", min_value=0.0, step=5.0,
                                    value=_D.gpu_hours, key=f"bc.gpu_hours.{run_id}"),
        concurrency=c[3].number_input("Concurrency per device", min_value=1, step=1,
                                      value=_D.concurrency, key=f"bc.concurrency.{run_id}"),
        accuracy_metric=c[0].selectbox("Accuracy metric", ACCURACY_METRICS,
                                       index=ACCURACY_METRICS.index(_D.accuracy_metric),
                                       key=f"bc.accuracy_metric.{run_id}"),
        accuracy_threshold=c[1].number_input("Accuracy threshold", min_value=low,
                                             max_value=high, step=0.01,
                                             value=_D.accuracy_threshold,
                                             help="Every accuracy metric is a mean of scores "
                                                  f"from {low:g} to {high:g}.",
                                             key=f"bc.accuracy_threshold.{run_id}"),
        api_price_in_per_1m=c[2].number_input("API $ / 1M input tokens", min_value=0.0,
                                              value=_D.api_price_in_per_1m, step=0.25,
                                              key=f"bc.api_in.{run_id}"),
        api_price_out_per_1m=c[3].number_input("API $ / 1M output tokens", min_value=0.0,
                                               value=_D.api_price_out_per_1m, step=0.5,
                                               key=f"bc.api_out.{run_id}"))
    catalog = data.hardware_catalog()
    left, right = st.columns(2)
    target = left.selectbox("Target hardware", [AUTO, *catalog], key=f"bc.target.{run_id}",
                            index=[AUTO, *catalog].index(_D.target_hardware or AUTO),
                            format_func=lambda k: k if k == AUTO else catalog[k].name)
    kv = right.number_input("KV cache bytes / token", min_value=0.0, value=None, step=1024.0,
                            key=f"bc.kv.{run_id}", placeholder="as stored with the run",
                            help="Sizes the KV cache for right-sizing where the run stored no "
                                 "KV bytes/token (runs stored before that was recorded); e.g. "
                                 "131072 for an 8B Llama in fp16.")
    capacity = _render_capacity_source()
    try:
        return Assumptions(**fields, target_hardware=None if target == AUTO else target,
                           kv_bytes_per_token=kv, **capacity)
    except RoilabError as exc:
        ui.show_error(exc)
        return None


def _render_capacity_source() -> dict:
    """Size devices with single-stream throughput, or with a load run's capacity at SLO."""
    runs = {r.id: r for r in data.load_runs() if r.status == Status.DONE and r.n_samples}
    if not runs:
        return {}
    choice = st.selectbox(
        "Requests/s per device", [None, *runs], key="bc.load_run",
        format_func=lambda i: "single-stream throughput measured in the pilot" if i is None
        else f"capacity at SLO from load run #{i} {runs[i].name}",
        help="A load run's variants size the pilot's variants of the same name.")
    return data.load_capacity_fields(choice) if choice is not None else {}


def _render_detail(case: BusinessCase) -> None:
    """What follows the answer: the other figures, then why, what it takes and what was left
    out (``executive_summary``, as on page 2 of the PDF)."""
    r = case.roi
    row2 = st.columns(4)
    row2[0].metric("Hosted API / month", fmt_money(case.api_baseline_monthly_cost),
                   help="The baseline's tokens at the hosted-API prices above: "
                        + case.assumptions.api_price_source)
    row2[1].metric("One-time cost", fmt_money(r.one_time))
    row2[2].metric("Net after 12 months", fmt_money(r.net_12))
    row2[3].metric("Net after 36 months", fmt_money(r.net_36))
    with st.expander("Why, and what it takes (as on page 2 of the PDF)", expanded=True):
        st.text("\n\n".join(executive_summary(case)))  # quotes variant names: plain text


def _render_charts(case: BusinessCase) -> None:
    """The four charts; a sentence instead of one that would be empty or flat."""
    notes = chart_notes(case)
    charts = [("scatter", business_charts.cost_accuracy), ("latency", business_charts.latency),
              ("payback", business_charts.payback), ("tornado", business_charts.tornado)]
    for pair in (charts[:2], charts[2:]):
        for col, (name, draw) in zip(st.columns(2), pair, strict=True):
            if name in notes:
                col.info(ui.escape_md(notes[name]), icon=":material/info:")
            else:
                col.plotly_chart(draw(case), key=f"bc.chart.{name}")


def _render_variant_table(case: BusinessCase) -> None:
    st.subheader("Per variant")
    st.caption("The same table as the PDF's. 'Figures' says whether the serving figures were "
               "measured on the pilot's hardware or projected to the target (every projected "
               "cell says so; 'indicative' = projected from another kind of device, never "
               "counted as meeting the p95 target); the last column gives the method."
               + (" '*': unstable, as the caveats at the top say." if any(
                   r.cost_unstable or r.latency_unstable for r in case.rows if r.ok) else ""))
    header, *rows = variant_rows(case)
    frame = pd.DataFrame(rows, columns=header).assign(
        **{"Where the figures come from": [basis_detail(r) for r in case.rows]})
    ui.dataframe(frame, hide_index=True, key="bc.table.variants")


def _render_methods(case: BusinessCase) -> None:
    with st.expander("Methods: what was measured, what was projected and how"):
        for name, text in case.methods.items():
            st.caption(name.replace("_", " "))
            st.text(text)


def _render_pdf(run_id: int, a: Assumptions) -> None:
    st.download_button("Download business case PDF", data=lambda: data.business_pdf(run_id, a),
                       file_name=f"roilab-business-case-{run_id}.pdf", mime="application/pdf",
                       icon=":material/picture_as_pdf:", on_click="ignore", key="bc.pdf")


def _render_portfolio(runs: dict[int, Run], run_id: int, a: Assumptions) -> None:
    st.subheader("Portfolio", help="Several workflows (pilots) rolled up into one annual view, "
                                   "under the assumptions above.")
    runs = {i: r for i, r in runs.items() if r.variants[0].status == Status.DONE}  # priceable
    picked = st.multiselect("Runs in the portfolio", list(runs), default=[run_id],
                            key="bc.portfolio", format_func=lambda i: f"#{i} {runs[i].name}")
    if not picked:
        st.caption("Pick one or more runs.")
        return
    p = data.portfolio_of(picked, a)
    money = st.column_config.NumberColumn
    ui.dataframe(data.portfolio_frame(p), hide_index=True, key="bc.table.portfolio",
                 column_config={"baseline_annual": money("baseline $ / year", format="dollar"),
                                "recommended_annual": money("after $ / year", format="dollar"),
                                "annual_savings": money("saving $ / year", format="dollar"),
                                "one_time": money("one-time $", format="dollar"),
                                "payback_months": money("payback (months)", format="%.1f")})
    for line in p.skipped:
        st.warning(ui.escape_md(line))
