"""Results: one run's business case, re-priced live, with every number traceable.

The answer comes first, its caveats (unstable figures, random weights, failed variants, the
age of the prices) right under it, then the downloads; the detail follows. Tables read in
labels and units (app.ui.readable), '-' where a figure was not measured and '*' after one the
protocol found unstable; each CSV download holds the same table, rounded as shown.

Prompts and model outputs are user content: they are shown only through st.dataframe,
st.text and st.json, never as markdown or HTML.
"""
from __future__ import annotations

import streamlit as st

from app import case_view, charts, data, nav, stability_view, ui
from app.views import run_pilot
from engine.business.case import require_measured_baseline
from engine.business.types import BusinessCase
from engine.core.domain import Run, Status
from engine.core.errors import RoilabError
from engine.economics.decision import RANDOM_WEIGHTS, SPEED_MEMORY_ONLY
from engine.pilot.protocol import BASELINE_DRIFT, UNSTABLE_SPREAD
from engine.pilot.report import (
    PilotReport,
    serving_lines,
    speed_memory_findings,
    speed_memory_only,
)
from engine.pilot.runner import CANCELLABLE, RESUMABLE
from engine.pilot.stability import stability_frame, stability_lines
from engine.pilot.startup import EXPLAINED as STARTUP_EXPLAINED
from engine.reports.pilot_pdf import UNSTABLE_LEGEND, any_unstable, unstable_flags


def render() -> None:
    st.title("Results")
    runs = {r.id: r for r in data.runs()}
    if not runs:
        st.info("No runs yet.")
        st.page_link(nav.page("run"), label="Run a pilot", icon=":material/play_arrow:")
        return
    run = runs[_select_run(runs)]
    _render_status(run)
    rep = _render_assumptions(run)
    case = _render_kpis(rep)
    _render_caveats(rep, case)
    _render_downloads(rep, case)
    if rep.run.status in _BASELINE_TO_COME and rep.run.variants[0].status != Status.DONE:
        return  # nothing measured to explain yet: the status above says where it stands
    _render_summary(rep)
    _render_charts(rep, case)
    _render_variant_table(rep)
    _render_stability(rep)
    _render_technique_figures(rep)
    _render_side_by_side(rep)
    _render_traceability(run)
    st.page_link(nav.page("business"), label="Business case: right-sizing, ROI, payback and "
                 "the CFO PDF", icon=":material/savings:", query_params={"run": rep.run.id})


def _select_run(runs: dict[int, Run]) -> int:
    ids = list(runs)
    wanted = st.query_params.get("run", "")
    if wanted and (not wanted.isdigit() or int(wanted) not in runs):
        st.warning(f"There is no run {ui.escape_md(wanted)}; showing the latest.")
    index = ids.index(int(wanted)) if wanted.isdigit() and int(wanted) in runs else 0
    chosen = st.selectbox("Run", ids, index=index, format_func=lambda i: (
        f"#{i} {runs[i].name} - {'queued' if runs[i].queued else runs[i].status} - "
        f"{runs[i].created_at:%Y-%m-%d %H:%M}"))
    st.query_params["run"] = str(chosen)  # the URL always names the run shown
    return chosen


def _render_status(run: Run) -> None:
    if not run.status.finished:
        st.info(f"Run #{run.id} is {'queued' if run.queued else run.status}; figures below "
                "cover the variants finished so far and follow as it goes. If its process "
                "dies (killed, machine restarted), the run shows here as interrupted, ready "
                "to resume.")
        run_pilot.watch_run(run.id, rerun_page_when_finished=True)
    elif run.status == Status.FAILED and run.error:
        st.error(f"Run #{run.id} failed.")
        st.code(run.error, language=None)
    elif run.status in (Status.INTERRUPTED, Status.CANCELLED):
        how = "interrupted" if run.status == Status.INTERRUPTED else "cancelled"
        st.warning(f"Run #{run.id} was {how}; figures below cover the variants that finished "
                   f"before it stopped. Resume runs only the others (as `roilab resume "
                   f"{run.id}`).")
        st.code(run.error or "no reason recorded", language=None)
    elif run.status == Status.PARTIAL:
        st.warning(f"Run #{run.id} is partial: some variants failed; the others are measured "
                   "against the baseline.")
        st.code(run.error or "no reason recorded", language=None)
    _render_resume_cancel(run)


def _render_resume_cancel(run: Run) -> None:
    """Resume (the unfinished variants, handed to Ray) and Cancel (its Ray task too, queued
    or running), for the runs the CLI's `roilab resume` / `roilab cancel` accept; the engine
    refuses the rest (a live foreground run elsewhere) with the reason."""
    resumable, cancellable = run.status in RESUMABLE, run.status in CANCELLABLE
    if not (resumable or cancellable):
        return
    left, right, _ = st.columns([1, 1, 4])
    if resumable and left.button("Resume", key=f"results.resume.{run.id}", type="primary",
                                 help="Run only the variants that are not done; finished "
                                      "ones keep their results."):
        _resume(run)
    if cancellable and right.button("Cancel run", key=f"results.cancel.{run.id}",
                                    help="Stop it (a queued pilot leaves Ray's queue, a "
                                         "running one stops) and mark it cancelled; finished "
                                         "variants keep their results, and it can be resumed "
                                         "later."):
        try:
            with st.spinner(f"Cancelling run #{run.id}"):
                data.cancel_run(run.id)
        except RoilabError as exc:
            ui.show_error(exc)
        else:
            st.rerun()


def _resume(run: Run) -> None:
    try:
        with st.spinner(f"Handing run #{run.id}'s unfinished variants to Ray"):
            data.resume_run(run.id)
    except RoilabError as exc:
        ui.show_error(exc)
        return
    st.rerun()  # the run is queued now: the page watches it


def _render_assumptions(run: Run) -> PilotReport:
    hw0, price0, volume0 = data.stored_assumptions(run)
    st.subheader("Assumptions", help="Change them to re-price the same measurements.")
    a, b, c = st.columns(3)
    catalog = data.hardware_catalog()  # the built-ins and the user's own entries
    keys = list(catalog)
    hw = a.selectbox("Hardware", keys, index=keys.index(hw0), key=f"results.hw.{run.id}",
                     format_func=lambda k: catalog[k].name)
    default_price = price0 if hw == hw0 else catalog[hw].price_per_hour
    price = b.number_input("$/hour", min_value=0.0, value=default_price, step=0.001,
                           format="%.5f", key=f"results.price.{run.id}.{hw}",
                           help="Per device: a variant that spans several devices (tensor or "
                                "pipeline parallel) pays this times its device count.")
    volume = c.number_input("Requests / month", min_value=0, value=volume0, step=100_000,
                            key=f"results.volume.{run.id}",
                            help="The business case's volume (served as requests/month x "
                                 "24 / 730 a day); the Business case page changes the rest.")
    entry = catalog[hw]
    own = "" if abs(float(price) - entry.price_per_hour) < 1e-12 else \
        f"; your price, the catalog's is {ui.price(entry.price_per_hour)}"
    st.caption(ui.escape_md(
        f"{int(volume):,} requests/month on {entry.name} at {ui.price(float(price))} per "
        f"device{own} ({entry.price_source}, prices as of {entry.price_date})."))
    return data.report(run.id, price=float(price), volume=int(volume), hardware=hw)


def _render_kpis(rep: PilotReport) -> BusinessCase | None:
    """The run's business case at these inputs: the same answer as every other page."""
    try:
        case = data.run_case(rep.run.id, rep.price_per_hour, rep.requests_per_month,
                             rep.hardware.key)
    except RoilabError:  # no measured baseline: the downloads below say why and what to do
        if rep.run.status not in _BASELINE_TO_COME:
            st.caption("No business case for this run: its baseline was not measured (why, "
                       "and what to do, just below).")
        return None
    case_view.render_answer(case)
    return case


def _render_caveats(rep: PilotReport, case: BusinessCase | None) -> None:
    """What limits the answer above, right under it: how the figures were measured
    (unstable, drifting, busy, priced as another device), the '*' legend, failed variants,
    random weights, and a catalog price past its age. The answer's own caveat box (when
    there is a case) says the first ones in short, with the legend: here they are in full,
    folded, and the legend is not repeated."""
    if case is None:
        stability_view.render_warnings(rep)
    elif stability_lines(rep):
        with st.expander("How the speed figures were measured"):
            stability_view.render_warnings(rep)
    legend_shown = case is not None and any(
        r.cost_unstable or r.latency_unstable for r in case.rows if r.ok)
    if any_unstable(rep) and not legend_shown:  # the page's one legend of the '*'
        st.caption(UNSTABLE_LEGEND)
    _render_failures(rep)
    _, age = ui.price_dates([rep.hardware.price_date])
    if age and not rep.hardware.user_defined and case is None:  # else among the caveats
        st.warning(ui.escape_md(age), icon=":material/event_busy:")


def _render_summary(rep: PilotReport) -> None:
    sentences = data.summary_sentences(rep)
    if sentences:
        st.text("\n\n".join(sentences))  # quotes workload and variant names: plain text
    with st.expander("Assumptions and formulas behind every dollar figure"):
        ui.dataframe(data.assumptions_frame(rep), hide_index=True)


def _render_failures(rep: PilotReport) -> None:
    for v in rep.variants:
        if v.status == Status.FAILED:
            st.error(f"Variant {ui.escape_md(v.name)} failed; no figures for it.")
            st.code(v.error or "no reason recorded", language=None)
    unscored = speed_memory_only(rep)
    if unscored:
        st.info(ui.escape_md(f"{', '.join(unscored)}: {RANDOM_WEIGHTS} (its model is built "
                             "from an architecture config, so its answers mean nothing)."),
                icon=":material/speed:")


# a run whose baseline is still to be measured (queued, running, or stopped by the user
# before it was): no business case yet, which is not an error to show
_BASELINE_TO_COME = (Status.PENDING, Status.RUNNING, Status.INTERRUPTED, Status.CANCELLED)


def _render_downloads(rep: PilotReport, case: BusinessCase | None) -> None:
    """The PDF and the per-variant CSV, near the top: what a reader forwards."""
    try:  # a report of n/a figures helps no one: say why there is none
        require_measured_baseline(rep.run)
    except RoilabError as exc:
        if rep.run.status in _BASELINE_TO_COME:  # not a failure: the status above says so
            st.caption(f"No downloads yet: run #{rep.run.id}'s baseline is not measured; "
                       f"{'they appear once it is' if not rep.run.status.finished else 'Resume measures it'}.")
        else:
            ui.show_error(exc)
        return
    left, right, _ = st.columns([2, 2, 3])
    with left:  # built on click (deferred), so live re-pricing does not re-render the PDF
        st.download_button("Download pilot measurements PDF",
                           data=lambda: data.pdf_report(rep, case),
                           file_name=ui.file_name(rep.run.id, "measurements", "pdf"),
                           mime="application/pdf", icon=":material/picture_as_pdf:",
                           on_click="ignore")
    with right:
        ui.download_csv(ui.csv_frame(_variant_frame(rep), _variant_columns(rep)),
                        ui.file_name(rep.run.id, "per variant"),
                        "Download per-variant CSV", key="results.csv.variants")


def _render_charts(rep: PilotReport, case: BusinessCase | None) -> None:
    if not any(v.status == Status.DONE for v in rep.variants):
        st.info("No variant finished, so there is nothing to chart yet.")
        return
    frame, marks = rep.frame(), unstable_flags(rep)
    if not charts.compares(frame, ["cost_per_1k_requests"]):
        st.caption("Only one variant has figures, so there is nothing to compare in a chart; "
                   "its figures are in the table below.")
        return
    target = case.assumptions.p95_target_s if case is not None else None
    left, right = st.columns(2)
    left.plotly_chart(charts.cost_chart(frame, rep.price_per_hour, rep.hardware.name),
                      key="chart.cost")
    right.plotly_chart(charts.latency_chart(frame, target, marks), key="chart.latency")
    if charts.compares(frame, list(charts.ACCURACY), skip_baseline=True):
        st.plotly_chart(charts.accuracy_chart(frame), key="chart.accuracy")
    else:
        st.caption("No accuracy to compare: no variant beside the baseline has an accuracy "
                   "figure (random weights, or it failed).")
    st.caption("Speed and memory are measured separately: a quantized model can be smaller "
               "yet slower (e.g. int8 weights on a CPU without fast int8 kernels).")
    for finding in speed_memory_findings(rep):
        st.warning(ui.escape_md(finding), icon=":material/balance:")
    left, right = st.columns(2)
    left.plotly_chart(charts.speed_chart(frame, marks), key="chart.speed")
    right.plotly_chart(charts.memory_chart(frame, marks), key="chart.memory")


_VARIANT_COLUMNS = {  # frame column -> how a person reads it; memory in MiB, as `roilab show`
    "name": ui.Col("variant"), "status": ui.Col("status"), "techniques": ui.Col("techniques"),
    "measures": ui.Col("measured"), "devices": ui.Col("pilot devices", "int"),
    "tokens_per_s": ui.Col("tokens/s", "f1"), "latency_p50_s": ui.Col("p50 latency (s)", "f2"),
    "latency_p95_s": ui.Col("p95 latency (s)", "f2"), "ttft_p50_s": ui.Col("p50 TTFT (s)", "f3"),
    "peak_mem_bytes": ui.Col("peak memory (MiB)", "mib"),
    "weight_bytes": ui.Col("weights (MiB)", "mib"),
    "kv_cache_tokens": ui.Col("KV cache (tokens)", "int"),
    "ref_contains": ui.Col("reference contained", "f2"), "ref_f1": ui.Col("token F1", "f2"),
    "base_rouge_l": ui.Col("ROUGE-L vs baseline", "f2"),
    "base_cosine": ui.Col("cosine vs baseline", "f2"),
    "cost_per_1k_requests": ui.Col("$ per 1k requests", "money"),
    "cost_per_1m_output_tokens": ui.Col("$ per 1M output tokens", "money"),
    "start_up": ui.Col("engine start-up (s)"), "unstable_figures": ui.Col("unstable figures"),
    "device": ui.Col("device"), "error": ui.Col("error"),
}


def _variant_columns(rep: PilotReport) -> dict[str, ui.Col]:
    """The per-variant columns; "unstable figures" only when the protocol found one."""
    return {k: c for k, c in _VARIANT_COLUMNS.items()
            if k != "unstable_figures" or any(v.unstable for v in rep.variants)}


def _variant_frame(rep: PilotReport):
    unscored = speed_memory_only(rep)
    return rep.frame().assign(
        measures=lambda f: [SPEED_MEMORY_ONLY if n in unscored else
                            "speed, memory and accuracy" for n in f.name],
        start_up=[v.cold_start_text for v in rep.variants],
        unstable_figures=[", ".join(v.unstable) or None for v in rep.variants])


def _render_variant_table(rep: PilotReport) -> None:
    st.subheader("Per variant")
    st.caption("Each variant is priced at the $/hour above times the devices its engine "
               "occupied in the pilot (vLLM tensor x pipeline parallel size; the business case "
               "right-sizes the count it bills). Peak memory, weights and the KV-cache capacity "
               "its engine reserved are as the backend measured them ('-': not measured). "
               + STARTUP_EXPLAINED)
    ui.dataframe(ui.readable(_variant_frame(rep), _variant_columns(rep), unstable_flags(rep)),
                 hide_index=True, key="table.variants")


_STABILITY_COLUMNS = {
    "variant": ui.Col("variant"), "passes": ui.Col("timed passes", "int"),
    "tokens_per_s": ui.Col("tokens/s (median)", "f1"),
    "tokens_per_s_spread": ui.Col("tokens/s spread", "pct"),
    "latency_p95_s": ui.Col("p95 latency (s)", "f2"),
    "latency_p95_spread": ui.Col("p95 latency spread", "pct"),
    "peak_mem_spread": ui.Col("peak memory spread", "pct"),
    "baseline_drift": ui.Col("baseline drift", "pct"),
    "unstable": ui.Col("unstable figures"), "machine_busy": ui.Col("machine busy"),
}


def _render_stability(rep: PilotReport) -> None:
    """The measurement protocol: timed passes per variant, medians and spreads, the figures
    found unstable, the baseline's drift and how busy the machine was (engine.pilot.stability);
    its warnings are under the headline."""
    st.subheader("Measurement stability")
    st.caption(f"Each variant's speed, latency and peak memory above are medians over its timed "
               f"passes; spread is (max - min) / median over them. A figure is unstable when it "
               f"spreads by more than {UNSTABLE_SPREAD:.0%}, or when the baseline, timed again "
               f"after every other variant, drifted by more than {BASELINE_DRIFT:.0%}. Machine "
               "busy: other processes' CPU or GPU use while a pass ran.")
    marks = unstable_flags(rep)
    ui.dataframe(ui.readable(stability_frame(rep), _STABILITY_COLUMNS,
                             {"tokens_per_s": marks["tokens_per_s"],
                              "latency_p95_s": marks["latency_p95_s"]}),
                 hide_index=True, key="table.stability")


def _render_technique_figures(rep: PilotReport) -> None:
    figures = data.technique_figures_frame(rep)
    if figures.empty:
        return
    st.subheader("What each technique did")
    st.caption("Read back from the model after each technique ran, not copied from the spec.")
    for line in serving_lines(rep):  # vLLM's prefix cache and speculative decoding
        st.markdown(ui.escape_md(line))
    ui.dataframe(figures, hide_index=True, key="table.technique_figures")


def _render_side_by_side(rep: PilotReport) -> None:
    st.subheader("Per request, side by side")
    names = [v.name for v in rep.variants if v.status == Status.DONE]
    if not names:
        st.caption("No variant produced outputs.")
        return
    variant = st.selectbox("Variant", names, index=min(1, len(names) - 1),
                           key="results.sbs_variant")
    table = data.comparison(rep, variant)
    if table.empty:
        st.caption("No requests to compare.")
        return
    table = table.assign(request=table["request"] + 1)  # request 1 is the first, as line 1
    ui.dataframe(ui.readable(table, _REQUEST_COLUMNS), hide_index=True,
                 key="table.side_by_side")
    ui.download_csv(ui.csv_frame(table, _REQUEST_COLUMNS),
                    ui.file_name(rep.run.id, f"per request {variant}"),
                    "Download per-request CSV", key="results.csv.requests")
    rows = table.to_dict("records")
    pick = st.selectbox("Request", list(range(len(rows))), key="results.sbs_request",
                        format_func=lambda i: f"request {rows[i]['request']} "
                                              f"(line {rows[i]['line']})")
    for column in ("prompt", "reference", "baseline_output", "variant_output"):
        value = rows[pick][column]
        st.caption(_REQUEST_COLUMNS[column].label)
        st.text(value if isinstance(value, str) else "(none)")


_REQUEST_COLUMNS = {
    "request": ui.Col("request", "int"), "line": ui.Col("line", "int"),
    "prompt": ui.Col("prompt"), "reference": ui.Col("reference"),
    "baseline_output": ui.Col("baseline output"), "variant_output": ui.Col("variant output"),
    "latency_s": ui.Col("latency (s)", "f2"), "tokens_sent": ui.Col("prompt tokens sent", "int"),
    "ref_contains": ui.Col("contains the reference", "yesno"),
    "rouge_l_vs_base": ui.Col("ROUGE-L vs baseline", "f2"),
    "cosine_vs_base": ui.Col("cosine vs baseline", "f2"),
}


def _render_traceability(run: Run) -> None:
    st.subheader("What produced these numbers")
    for v in run.variants:
        with st.expander(f"{ui.escape_md(v.name)} - {v.status}"):
            st.caption("Technique report (what each technique did)")
            st.json(v.technique_report, expanded=True)
            st.caption("Variant spec, exactly as run")
            st.json(v.spec, expanded=False)
    with st.expander("Pilot spec"):
        st.json(run.spec, expanded=False)

