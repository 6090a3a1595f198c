"""The Load test page through Streamlit's AppTest over a real SQLite store (no model needed:
the stored sweep is written directly; the live sweep through the form is in
tests/test_e2e_load.py)."""
from __future__ import annotations

import json

import pytest
import streamlit as st
from sqlalchemy import text
from streamlit.testing.v1 import AppTest
from test_load_metrics import stored_spec

from engine.backends.vllm_serve import free_port
from engine.core.domain import LoadSample
from engine.economics.traffic import requests_per_month
from engine.ingest.logs import parse_log
from engine.load.replay import load_levels
from engine.reports.pdf import fmt_money
from engine.store.store import Store

TIMEOUT = 120


@pytest.fixture
def env(settings, monkeypatch):
    monkeypatch.setenv("ROILAB_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("ROILAB_DB_URL", settings.resolved_db_url())
    st.cache_data.clear()
    return settings


def _page(**query) -> AppTest:
    at = AppTest.from_string("from app.views import load_test\nload_test.render()",
                             default_timeout=TIMEOUT)
    for k, v in query.items():
        at.query_params[k] = v
    return at.run()


def _sample(level, arrival, chunks, end, out, variant="fp32"):
    return LoadSample(variant=variant, level=level, request_index=0, arrival_s=arrival,
                      sent_s=arrival, first_token_s=chunks[0], end_s=end, output_tokens=out,
                      chunk_times_s=tuple(chunks))


def _stored_sweep(settings) -> tuple[Store, int]:
    store = Store(settings.resolved_db_url())
    raw = (settings.samples_dir / "support_chat.jsonl").read_bytes()
    w = store.add_workload("support", "s.jsonl", raw, parse_log(raw, "s.jsonl"))
    run = store.create_load_run(w.id, "my sweep", stored_spec(
        w.id, schedule="concurrency", levels=[1, 2], requests_per_level=2, max_new_tokens=4,
        slo={"ttft_s": 0.5, "itl_s": None, "e2e_s": None}))
    # level 1: two requests one after the other, TTFT 0.1 and 0.2, 2 s -> 1 req/s, both in SLO
    # level 2: both at once, TTFT 0.3 and 0.9 (misses), 1 s -> 2 req/s, goodput 1 req/s
    store.add_load_samples(run.id, [
        _sample(1, 0.0, [0.1, 0.5, 0.9], 1.0, 3), _sample(1, 1.0, [1.2, 1.6], 2.0, 2),
        _sample(2, 0.0, [0.3, 0.6], 0.8, 2), _sample(2, 0.0, [0.9, 0.95], 1.0, 2),
        # a second variant, faster: both levels fully in SLO, 2 req/s then 4 req/s
        *[_sample(lvl, 0.0, [0.1, 0.2], 0.5, 2, variant="int8")
          for lvl in (1, 2) for _ in range(lvl)]])
    store.set_load_run_status(run.id, "done")
    return store, run.id


def test_empty_store_offers_the_form(env):
    at = _page()
    assert not at.exception
    assert "No load tests stored yet" in at.info[-1].value
    assert "Upload a request log first" in at.info[0].value


def test_stored_sweep_shows_charts_table_and_capacity(env):
    store, run_id = _stored_sweep(env)
    at = _page()
    assert not at.exception and at.query_params["load_run"] in (str(run_id), [str(run_id)])
    charts = at.get("plotly_chart")
    assert len(charts) == 2
    table = at.dataframe[0].value
    expected = load_levels(store, run_id)
    assert list(zip(table.variant, table.level, strict=True)) == [
        ("fp32", 1), ("fp32", 2), ("int8", 1), ("int8", 2)]
    assert table.requests_per_s.tolist() == pytest.approx([1.0, 2.0, 2.0, 4.0])
    assert table.goodput_rps.tolist() == pytest.approx([1.0, 1.0, 2.0, 4.0])
    assert table.ttft_p50_s.tolist() == pytest.approx(expected.ttft_p50_s.tolist())
    # tokens generated per request: fp32's level 1 stopped at 3 and 2, the others made 2
    assert table.output_tokens_per_request.tolist() == pytest.approx([2.5, 2.0, 2.0, 2.0])
    # one line per variant and series in each chart
    names = {t["name"].split(",")[0] for c in charts for t in json.loads(c.proto.spec)["data"]}
    assert names == {"fp32", "int8"}
    # capacity at SLO: fp32's level 2 has only 50% in SLO, so level 1's 1 req/s
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Capacity at SLO: fp32"] == "1.00 req/s"
    assert metrics["Capacity at SLO: int8"] == "4.00 req/s"
    assert [c.value for c in at.caption if "tokens/request" in c.value] == [
        "2.5 output tokens/request at level 1", "2.0 output tokens/request at level 2"]
    assert "concurrency levels 1, 2," in at.text[0].value and "ttft_s <= 0.5" in at.text[0].value
    assert "exactly 4 new tokens each (fixed output)" in at.text[0].value


def test_a_spec_stored_before_fixed_output_reads_as_natural_output(env):
    store, run_id = _stored_sweep(env)
    old = {k: v for k, v in store.get_load_run(run_id).spec.items() if k != "fixed_output"}
    with store.engine.begin() as conn:  # as an older roilab stored it
        conn.execute(text("UPDATE load_runs SET spec_json = :s WHERE id = :i"),
                     {"s": json.dumps(old), "i": run_id})
    at = _page()
    assert not at.exception
    assert "up to 4 new tokens (natural output" in at.text[0].value
    assert at.dataframe[0].value.output_tokens_per_request.tolist() == pytest.approx(
        [2.5, 2.0, 2.0, 2.0])


@pytest.mark.parametrize("tick", [True, False])
def test_fixed_output_checkbox_goes_into_the_stored_spec(env, tick):
    _stored_sweep(env)
    at = _page()
    box = next(c for c in at.checkbox if c.label == "Fixed output length")
    assert box.value is True  # on by default: variants compared on the same work
    if not tick:
        box.uncheck()
    inputs = {t.label: t for t in at.text_input}
    inputs["Endpoint base URL"].input(f"http://127.0.0.1:{free_port()}/v1")
    inputs["Served model name"].input("m")
    at.button[0].click().run()
    assert not at.exception
    latest = Store(env.resolved_db_url()).list_load_runs()[0]
    assert latest.name == "load test" and latest.spec["fixed_output"] is tick


def test_bad_levels_are_refused_with_the_form_of_the_fix(env):
    _stored_sweep(env)
    at = _page()
    inputs = {t.label: t for t in at.text_input}
    inputs["Endpoint base URL"].input("http://127.0.0.1:9/v1")
    inputs["Served model name"].input("m")
    inputs["Levels"].input("1, two")
    at.button[0].click().run()
    assert "numbers separated by commas" in at.error[0].value
    assert len(Store(env.resolved_db_url()).list_load_runs()) == 1  # nothing new stored


def test_unreachable_endpoint_fails_the_stored_run_and_says_how_to_fix(env):
    _stored_sweep(env)
    at = _page()
    inputs = {t.label: t for t in at.text_input}
    inputs["Endpoint base URL"].input(f"http://127.0.0.1:{free_port()}/v1")
    inputs["Served model name"].input("m")
    at.button[0].click().run()
    assert not at.exception
    assert "Cannot connect" in at.error[0].value
    latest = Store(env.resolved_db_url()).list_load_runs()[0]
    assert latest.status == "failed" and "Cannot connect" in latest.error


def test_business_case_can_size_with_a_load_runs_capacity(env):
    from test_app_pages import page
    from test_business import _stored_run

    from engine.business.capacity import capacity_assumption
    from engine.business.case import Assumptions, build_business_case

    store = Store(env.resolved_db_url())
    run_id = _stored_run(store)
    wid = store.get_run(run_id).workload_id
    load = store.create_load_run(wid, "prod sweep", stored_spec(wid))
    # the pilot's "baseline" at 4 req/s and 1 s E2E under load (level 4: 4 requests in 1 s)
    store.add_load_samples(load.id, [_sample(4, 0.0, [0.2, 0.5], 1.0, 2, variant="baseline")
                                     for _ in range(4)])
    store.set_load_run_status(load.id, "done")
    at = page("business_case", run=str(run_id))
    # 1,000,000 requests a day, asked per month as on every page: x 730 / 24
    next(n for n in at.number_input if n.label == "Requests per month").set_value(
        requests_per_month(1e6)).run()
    box = next(s for s in at.selectbox if s.label == "Requests/s per device")
    assert box.value is None  # single-stream by default: older cases unchanged
    box.select(load.id).run()
    assert not at.exception
    fields = capacity_assumption(store, load.id)
    case = build_business_case(store, run_id, Assumptions(requests_per_day=1e6, **fields))
    single = build_business_case(store, run_id, Assumptions(requests_per_day=1e6))
    assert case.rows[0].provisioning.gpus < single.rows[0].provisioning.gpus
    assert fields["load_capacity"] == (("baseline", pytest.approx(4.0), pytest.approx(1.0)),)
    table = next(d.value for d in at.dataframe if "Figures" in d.value.columns)
    assert table["$/month"][0].startswith(fmt_money(case.rows[0].monthly_cost))
    assert table.Devices[0] == f"{case.rows[0].provisioning.gpus:,}"


def test_form_sweeps_a_second_endpoint_after_the_first(env):
    _stored_sweep(env)
    at = _page()
    inputs = {t.label: t for t in at.text_input}
    for label in ("Endpoint base URL", "Second base URL"):
        inputs[label].input(f"http://127.0.0.1:{free_port()}/v1")
    inputs["Served model name"].input("base")
    inputs["Second served model name"].input("small")
    at.button[0].click().run()
    latest = Store(env.resolved_db_url()).list_load_runs()[0]
    assert [t["name"] for t in latest.spec["targets"]] == ["base", "small"]
    assert latest.status == "failed" and "Cannot connect" in latest.error
