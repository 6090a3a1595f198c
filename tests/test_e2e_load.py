"""A load sweep of the embedded model through the dashboard, in real Chromium.

The real dashboard (``streamlit run``, test_e2e_browser's fixtures) sweeps the session's real
``vllm serve`` of the embedded model (tests/conftest.py) through the Load test page's form:
2 concurrency levels, 3 requests each, exactly 16 new tokens (the "Fixed output length" box,
ticked by default). The charts must appear, and the per-level table must show what the store
holds. Screenshot: /tmp/e2e_load.png.
"""
from __future__ import annotations

from pathlib import Path

import pytest
from conftest import VLLM_SERVED
from test_e2e_browser import (  # noqa: F401 - fixtures used by name
    PAGE_MS,
    _grid_with,
    _metric,
    _screenshot,
    _settled,
    browser_page,
    chromium_pages,
    dashboard,
    sync_api,
)

from engine.ingest.logs import parse_log
from engine.load.replay import load_levels
from engine.store.store import Store

pytestmark = [pytest.mark.slow, pytest.mark.browser]

LOAD_PNG = Path("/tmp/e2e_load.png")
SWEEP_MS = 300_000


def test_load_sweep_through_the_form_draws_its_charts(dashboard, browser_page,  # noqa: F811
                                                     vllm_server):
    url, settings = dashboard
    page, expect = browser_page, sync_api.expect
    store = Store(settings.resolved_db_url())
    raw = (settings.samples_dir / "support_chat.jsonl").read_bytes()
    store.add_workload("support", "support_chat.jsonl", raw, parse_log(raw, "s.jsonl"))

    page.goto(f"{url}/load")
    expect(page.get_by_role("heading", name="Load test")).to_be_visible(timeout=PAGE_MS)
    _settled(page)
    form = page.get_by_test_id("stForm")
    for label, value in (("Endpoint base URL", vllm_server), ("Served model name", VLLM_SERVED),
                         ("Variant name", "smollm2-fp32"), ("Levels", "1,2"),
                         ("Requests per level", "3"), ("Max new tokens", "16"),
                         ("SLO: TTFT (s)", "5")):
        box = form.get_by_label(label, exact=True)
        box.fill(value)
        box.press("Tab")  # number inputs commit on blur
    expect(form.get_by_role("checkbox", name="Fixed output length")).to_be_checked()  # default
    form.get_by_role("button", name="Run load test").click()

    plots = page.locator(".js-plotly-plot")
    expect(plots).to_have_count(2, timeout=SWEEP_MS)  # latency vs load, throughput vs load
    _settled(page)
    for plot in plots.all():
        expect(plot.locator(".main-svg").first).to_be_visible()
    titles = page.locator(".js-plotly-plot .gtitle").all_text_contents()
    assert titles == ["Latency vs load (seconds)", "Throughput and goodput vs load"], titles

    [run] = store.list_load_runs()
    assert run.status == "done" and run.n_samples == 6, run.error
    assert run.spec["levels"] == [1.0, 2.0] and run.spec["max_new_tokens"] == 16
    assert run.spec["fixed_output"] is True
    expect(page.get_by_text("exactly 16 new tokens each (fixed output)")).to_be_visible()
    assert run.spec["targets"][0]["base_url"] == vllm_server
    levels = load_levels(store, run.id)
    table = _grid_with(page, "TTFT p50 (s)", 2)  # off-screen columns are not in the DOM
    assert table["variant"] == ["smollm2-fp32"] * 2, table
    shown = [float(x) for x in table["TTFT p50 (s)"]]  # the grid's accessible copy: raw values
    assert shown == pytest.approx(levels.ttft_p50_s.tolist()), table
    assert table["ok"] == ["3", "3"], table
    assert levels.output_tokens_per_request.tolist() == [16.0, 16.0]
    assert [float(x) for x in table["output tokens/request"]] == [16.0, 16.0], table
    cap = _metric(page, "Capacity at SLO: smollm2-fp32")
    assert cap.endswith("req/s"), cap
    expect(page).to_have_url(f"{url}/load?load_run={run.id}")
    _screenshot(page, LOAD_PNG)
