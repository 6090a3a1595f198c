"""The dashboard's one data module: every page reads and writes through here.

The Store is a cached resource (one per database URL); queries are cached for a short
time and cleared after every write, so results appear as soon as a run finishes while
a second browser sees them within ``QUERY_TTL_S``. Only plain values (ids, frozen domain
objects, DataFrames) leave this module; engine objects never go into session state.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from engine.business.capacity import capacity_assumption
from engine.business.case import (
    Assumptions,
    BusinessCase,
    MeasuredVariant,
    assemble_case,
    case_from_report,
    measured_variants,
    run_assumptions,
)
from engine.business.playbook import Playbook, workload_playbook
from engine.business.portfolio import Portfolio, portfolio
from engine.core.domain import LoadRun, LogRequest, Run, Status, Workload
from engine.core.settings import Settings, get_settings
from engine.economics.hardware import CATALOG, Hardware
from engine.ingest.logs import parse_log
from engine.ingest.review import field_notes
from engine.ingest.stats import TokenCounter, is_current, tokenizer_counter
from engine.jobs.queue import job_state, queue_places, run_now
from engine.jobs.ray_executor import Submitted, cancel_pilot, submit_new, submit_resume
from engine.load.metrics import Capacity, capacity_at_slo
from engine.load.replay import LoadProgress, load_levels, run_load
from engine.load.spec import LoadSpec
from engine.models.prep import embedded_model_dir, is_prepared
from engine.pilot.liveness import reap_dead_runs
from engine.pilot.report import PilotReport, build_report, side_by_side, technique_figures
from engine.reports.business_pdf import basis, basis_detail, business_pdf_for_run
from engine.reports.pilot_pdf import (
    assumptions,
    readable_figures,
    render_pdf,
    summary_paragraphs,
)
from engine.specs.pilot import PilotSpec
from engine.store.store import Store

QUERY_TTL_S = 15


def settings() -> Settings:
    return get_settings()


def db_url() -> str:
    return settings().resolved_db_url()


@st.cache_resource(show_spinner=False)
def _store(url: str) -> Store:
    return Store(url)


def store() -> Store:
    return _store(db_url())


def clear_queries() -> None:
    """Forget cached query results; call after every write."""
    st.cache_data.clear()


# ---- reads ---------------------------------------------------------------------------
@st.cache_data(ttl=QUERY_TTL_S, show_spinner=False)
def _workloads(url: str) -> list[Workload]:
    return _store(url).list_workloads()


def workloads() -> list[Workload]:
    return _workloads(db_url())


@st.cache_data(ttl=QUERY_TTL_S, show_spinner=False)
def _runs(url: str) -> list[Run]:
    store = _store(url)
    reap_dead_runs(store)  # a run whose process died shows as interrupted, not running
    return store.list_runs()


def runs() -> list[Run]:
    return _runs(db_url())


def runs_frame() -> pd.DataFrame:
    """Earlier runs, newest first, as a display table."""
    names = {w.id: w.name for w in workloads()}
    places = queue_places(runs())
    rows = [{"run": r.id, "name": r.name, "workload": names.get(r.workload_id, r.workload_id),
             "status": job_state(r, places),
             "variants ok": f"{sum(v.status == Status.DONE for v in r.variants)}/{len(r.variants)}",
             "created": r.created_at, "finished": r.finished_at} for r in runs()]
    return pd.DataFrame(rows)


def workloads_frame() -> pd.DataFrame:
    rows = [{"workload": w.id, "name": w.name, "file": w.filename, "format": w.format,
             "valid requests": w.n_requests, "invalid rows": w.n_issues,
             "uploaded": w.created_at} for w in workloads()]
    return pd.DataFrame(rows)


def issues_frame(workload: Workload) -> pd.DataFrame:
    return pd.DataFrame([asdict(i) for i in workload.issues], columns=["line", "field", "reason"])


@st.cache_data(ttl=QUERY_TTL_S, show_spinner=False)
def _report(url: str, run_id: int, price: float | None, volume: int | None,
            hardware: str | None) -> PilotReport:
    return build_report(_store(url), run_id, price_per_hour=price, requests_per_month=volume,
                        hardware=hardware)


def report(run_id: int, price: float | None = None, volume: int | None = None,
           hardware: str | None = None) -> PilotReport:
    """The run's PilotReport, re-priced with these assumptions (None = stored ones)."""
    return _report(db_url(), run_id, price, volume, hardware)


@st.cache_data(ttl=QUERY_TTL_S, show_spinner=False)
def _comparison(url: str, run_id: int, variant: str) -> pd.DataFrame:
    rep = _report(url, run_id, None, None, None)
    return side_by_side(rep, _store(url), variant)


def comparison(rep: PilotReport, variant: str) -> pd.DataFrame:
    """Per-request side-by-side table of one variant against the baseline (the prompts
    and references of the run's requests only, never the whole workload)."""
    return _comparison(db_url(), rep.run.id, variant)


@st.cache_data(ttl=QUERY_TTL_S, show_spinner=False)
def _requests(url: str, workload_id: int, limit: int) -> list[LogRequest]:
    return [r.request for r in _store(url).get_requests(workload_id, limit=limit)]


def requests(workload_id: int, limit: int) -> list[LogRequest]:
    """The workload's first ``limit`` requests (a page shows a bounded preview, never all)."""
    return _requests(db_url(), workload_id, limit)


def stored_assumptions(run: Run) -> tuple[str, float, int]:
    """(hardware key, $/hour, requests/month) the run was stored with, catalog price filled in."""
    cost = PilotSpec.from_run(run).cost  # the spec classes' defaults where it lacks one
    hw = store().get_hardware(cost.hardware)  # user entries too
    price = cost.price_per_hour or hw.price_per_hour
    return hw.key, float(price), int(cost.requests_per_month)


@st.cache_data(ttl=QUERY_TTL_S, show_spinner=False)
def _catalog(url: str) -> dict[str, Hardware]:
    return _store(url).hardware_catalog()


def hardware_catalog() -> dict[str, Hardware]:
    """Built-in entries with the user's own stored over them by key."""
    return _catalog(db_url())


def catalog_frame() -> pd.DataFrame:
    """The merged catalog; ``overrides`` says which user entries replace a built-in."""
    rows = [asdict(h) | {"overrides": h.user_defined and h.key in CATALOG}
            for h in hardware_catalog().values()]
    return pd.DataFrame(rows)


def sample_logs() -> list[Path]:
    folder = settings().samples_dir
    return sorted(p for p in folder.glob("*") if p.suffix in (".jsonl", ".json", ".csv"))


# ---- prompt statistics ---------------------------------------------------------------
@st.cache_resource(show_spinner="Loading the embedded model's tokenizer")
def _counter(tokenizer_json: str) -> TokenCounter:
    return tokenizer_counter(Path(tokenizer_json))


def token_counter() -> TokenCounter | None:
    """Count tokens with the embedded model's tokenizer, if that model is already prepared.

    Never prepares the model here (that downloads and converts it); without it, the
    statistics are in words and characters.
    """
    if not is_prepared(settings()):
        return None
    return _counter(str(embedded_model_dir(settings()) / "tokenizer.json"))


@st.cache_data(ttl=QUERY_TTL_S, show_spinner="Reading the prompt statistics")
def _profile(url: str, workload_id: int, tokens: bool) -> dict[str, Any]:
    stats = _store(url).stored_workload_stats(workload_id)
    if is_current(stats, want_tokens=tokens):  # as nearly always: no tokenizer to load
        return stats
    return _store(url).workload_stats(workload_id, token_counter() if tokens else None)


def workload_profile(workload_id: int) -> dict[str, Any]:
    """The workload's prompt statistics as stored at ingest (engine.ingest.stats), with the
    per-prompt length histograms: one row read. A workload stored before they were (or
    before the model was prepared, so without tokens) has them worked out once here."""
    return _profile(db_url(), workload_id, is_prepared(settings()))


@st.cache_data(ttl=QUERY_TTL_S, show_spinner="Reading the workload's runs")
def _playbook(url: str, workload_id: int, tokens: bool) -> Playbook:
    return workload_playbook(_store(url), workload_id,
                             count_tokens=token_counter() if tokens else None)


def playbook(workload_id: int) -> Playbook:
    """The workload's playbook (engine.business.playbook): its steps and the techniques that
    fit it, from its statistics and runs."""
    return _playbook(db_url(), workload_id, is_prepared(settings()))


# ---- writes --------------------------------------------------------------------------
def ingest_log(name: str, filename: str, raw: bytes) -> tuple[Workload, list[str]]:
    """Parse an upload and store it (raw bytes unchanged); the workload and what parsing
    noticed (reference and ignored columns, as text). LogFormatError: nothing stored."""
    parsed = parse_log(raw, filename)
    workload = store().add_workload(name.strip() or filename, filename, raw, parsed,
                                    count_tokens=token_counter())
    clear_queries()
    return workload, field_notes(parsed)


def submit_run(spec: PilotSpec, reprice: bool = False) -> tuple[Run, Submitted]:
    """Create the pilot's run and hand it to Ray (engine.jobs: the local head, started on
    first use, or ROILAB_RAY_ADDRESS's cluster), as `roilab pilot --detach` does. It runs in
    a Ray worker, not in this script: a closed tab, a reload or a second browser change
    nothing. Ray that cannot be reached is a ClusterError and nothing is created.
    ``reprice``: the spec is priced as this machine's detected device; the node that runs
    it prices it as its own."""
    try:
        return submit_new(spec, store(), settings(), reprice=reprice)
    finally:
        clear_queries()


def submit_playbook_pilot(book: Playbook, max_requests: int, **common: Any
                          ) -> tuple[Run, Submitted]:
    """The suggested pilot of a playbook (the baseline and its suggested built-in variants over
    the workload's first ``max_requests``, the other settings the Run pilot form's), priced
    as this machine's detected device and re-priced by the node that runs it; submitted as
    ``submit_run``. SpecError when no
    catalog entry matches this machine (the Run pilot page lets the user choose one)."""
    from engine.pilot.detect import price_pilot
    from engine.specs.pilot import parse_pilot_spec, pilot_variants

    variants = pilot_variants(book.suggested, backend=book.backend, **common)
    spec = parse_pilot_spec({"name": "playbook", "workload_id": book.workload.id,
                             "variants": [v.model_dump(mode="json") for v in variants],
                             "max_requests": max_requests})
    priced = price_pilot(spec, store(), explicit=False)
    return submit_run(priced.spec, reprice=priced.detected)


PLAYBOOK_MAX_REQUESTS = 12  # the Playbook page's default, as the Run pilot form's


def resume_run(run_id: int) -> Submitted:
    """Hand the unfinished variants of a stopped run to Ray (as `roilab resume --detach`);
    SpecError says why a run cannot be resumed (finished, or still running elsewhere)."""
    try:
        return submit_resume(run_id, store(), settings())
    finally:
        clear_queries()


def cancel_run(run_id: int) -> Run:
    """Cancel a run (as `roilab cancel`): its Ray task, queued or running, cancelled first;
    the run stored cancelled, finished variants' results kept."""
    try:
        return cancel_pilot(run_id, store(), settings())
    finally:
        clear_queries()


def live_run(run_id: int) -> tuple[Run, str]:
    """The run as stored now (never cached: a page watching a job polls this) and where it
    stands as a job: "queued (2nd in line)", "running (1 of 3 variants done)", or its status.
    A run whose process died is marked interrupted first."""
    return run_now(store(), run_id)


def add_hardware(**fields: Any) -> Hardware:
    """Store a user entry; SpecError (names the bad field) stores nothing."""
    hw = store().add_hardware(**fields)
    clear_queries()
    return hw


def update_hardware(key: str, **changes: Any) -> Hardware:
    """Change an entry; changing a built-in stores a user copy that overrides it."""
    hw = store().update_hardware(key, **changes)
    clear_queries()
    return hw


def delete_hardware(key: str) -> None:
    store().delete_hardware(key)
    clear_queries()


# ---- business case -------------------------------------------------------------------
@st.cache_data(ttl=QUERY_TTL_S, show_spinner=False)
def _measured(url: str, run_id: int) -> tuple[list[MeasuredVariant], str, str, int]:
    """A run's measurements, read once per run: the page re-assembles the case from them
    (pure arithmetic) on every assumption change instead of re-reading every result row."""
    store = _store(url)
    rep = build_report(store, run_id)
    return measured_variants(rep), rep.run.name, rep.workload.name, rep.run.workload_id


@st.cache_data(ttl=QUERY_TTL_S, show_spinner="Working out the business case")
def _business_case(url: str, run_id: int, inputs: tuple[tuple[str, Any], ...]) -> BusinessCase:
    measured, name, workload, workload_id = _measured(url, run_id)
    return assemble_case(measured, Assumptions(**dict(inputs)), _store(url).hardware_catalog(),
                         name=name, run_id=run_id, workload=workload, workload_id=workload_id)


def business_case(run_id: int, a: Assumptions) -> BusinessCase:
    """The run's BusinessCase under these assumptions (cached per assumptions)."""
    return _business_case(db_url(), run_id, tuple(asdict(a).items()))


@st.cache_data(ttl=QUERY_TTL_S, show_spinner="Working out the business case")
def _run_case(url: str, run_id: int, price: float | None, volume: int | None,
              hardware: str | None) -> BusinessCase:
    rep = _report(url, run_id, price, volume, hardware)
    return case_from_report(rep, None, _store(url).hardware_catalog())


def run_case(run_id: int, price: float | None = None, volume: int | None = None,
             hardware: str | None = None) -> BusinessCase:
    """THE business case of a run (engine.business.case.build_business_case): its stored
    assumptions, as on every page, `roilab show` and both PDFs. ``price``, ``volume`` and
    ``hardware`` re-price the run as the Results page's inputs do (None = as stored).
    RunError when its baseline was not measured."""
    return _run_case(db_url(), run_id, price, volume, hardware)


def run_case_assumptions(run_id: int) -> Assumptions:
    """The assumptions a run's case is priced with by default (its stored volume)."""
    return run_assumptions(report(run_id))


def variant_table(case: BusinessCase) -> pd.DataFrame:
    """case.frame() with the 'figures' label (measured / projected) and where they come from."""
    return case.frame().assign(figures=[basis(r) for r in case.rows],
                               basis=[basis_detail(r) for r in case.rows],
                               target_name=[r.target_name for r in case.rows])


def portfolio_of(run_ids: list[int], a: Assumptions) -> Portfolio:
    """Several runs' business cases, rolled up by engine.business.portfolio."""
    return portfolio(business_case(i, a) for i in run_ids)


def portfolio_frame(p: Portfolio) -> pd.DataFrame:
    return pd.DataFrame([asdict(r) for r in (*p.rows, p.total)])


def business_pdf(run_id: int, a: Assumptions) -> bytes:
    """The business-case PDF of a run under these assumptions."""
    return business_pdf_for_run(store(), run_id, a)[0]


# ---- report exports -------------------------------------------------------------------
def pdf_report(rep: PilotReport, case: BusinessCase | None = None) -> bytes:
    """The run's measurements PDF, with the baseline's prompts and references as the sample
    appendix and ``case`` (the run's business case) stated up front."""
    samples = side_by_side(rep, store(), rep.baseline.name)
    return render_pdf(rep, samples=samples, case=case)


def summary_sentences(rep: PilotReport) -> list[str]:
    """The headline in plain sentences, worded as in the PDF."""
    return summary_paragraphs(rep)


def technique_figures_frame(rep: PilotReport) -> pd.DataFrame:
    """What each technique did, in words (peak memory, not peak_bytes; MiB, not bytes)."""
    return readable_figures(technique_figures(rep))


def assumptions_frame(rep: PilotReport) -> pd.DataFrame:
    """Every input the cost figures depend on, with the formulas."""
    return pd.DataFrame(assumptions(rep), columns=["assumption", "value"])


# ---- load tests ------------------------------------------------------------------------
@st.cache_data(ttl=QUERY_TTL_S, show_spinner=False)
def _load_runs(url: str) -> list[LoadRun]:
    return _store(url).list_load_runs()


def load_runs() -> list[LoadRun]:
    """Stored load runs, newest first."""
    return _load_runs(db_url())


@st.cache_data(ttl=QUERY_TTL_S, show_spinner=False)
def _load_levels(url: str, run_id: int) -> pd.DataFrame:
    return load_levels(_store(url), run_id)


def load_levels_frame(run_id: int) -> pd.DataFrame:
    """Per (variant, level) figures of a load run, rebuilt from its stored samples."""
    return _load_levels(db_url(), run_id)


def load_capacity(run_id: int, min_attainment: float = 0.9) -> dict[str, Capacity]:
    """Per variant: the highest requests/s of a level where >= min_attainment met the SLO."""
    return capacity_at_slo(load_levels_frame(run_id), min_attainment)


def load_capacity_fields(run_id: int) -> dict[str, Any]:
    """Assumptions fields that size the business case with this load run's capacity at SLO."""
    return capacity_assumption(store(), run_id)


def create_load_run(spec: LoadSpec) -> LoadRun:
    run = store().create_load_run(spec.workload_id, spec.name, spec.model_dump(mode="json"))
    clear_queries()
    return run


def execute_load_run(spec: LoadSpec, run_id: int,
                     on_progress: Callable[[LoadProgress], None] | None = None) -> LoadRun:
    """Run a created load test in this script run; samples land in the store per level."""
    try:  # run_load marks the run failed if a rerun or closed tab interrupts it
        return run_load(spec, store(), settings(), on_progress=on_progress, run_id=run_id)
    finally:
        clear_queries()
