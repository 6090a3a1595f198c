"""In real Chromium: a dashboard table's own "Download as CSV" (Streamlit's dataframe toolbar)
writes no live formula, though the run's prompt and outputs hold ``=HYPERLINK(...)``.

The toolbar saves through the File System Access API when the browser has it; headless
Chromium would open a save dialog no one answers, so the test removes
``window.showSaveFilePicker`` before the page loads and Streamlit falls back to its plain
download link, which Playwright catches. The CSV is written by Streamlit's frontend from the
cells it was sent, so what it proves is that the page sent neutralised cells.
"""
from __future__ import annotations

import csv
import io
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import make_settings
from dashboard_server import CHROMIUM, CHROMIUM_ARGS, streamlit_server
from hostile_run import HYPERLINK, hostile_run

from engine.store.store import Store

pytestmark = [pytest.mark.slow, pytest.mark.browser]

sync_api = pytest.importorskip("playwright.sync_api")
if not Path(CHROMIUM).exists():
    pytest.skip("needs /usr/bin/chromium (make system-deps)", allow_module_level=True)
BOOT_S, PAGE_MS = 60, 120_000



@pytest.fixture
def hostile_dashboard(tmp_path: Path) -> Iterator[tuple[str, int]]:
    """The real dashboard over a store holding the hostile run; yields (url, run id)."""
    settings = make_settings(tmp_path / "data", None)
    run_id = hostile_run(Store(settings.resolved_db_url()))
    env = {k: v for k, v in os.environ.items() if k != "ROILAB_DASHBOARD_PASSWORD"}
    env |= {"ROILAB_DATA_DIR": str(settings.data_dir), "ROILAB_DB_URL": settings.resolved_db_url()}
    log_path = tmp_path / "streamlit.log"
    with streamlit_server(env, log_path, BOOT_S) as url:
        yield url, run_id


def test_toolbar_download_as_csv_has_no_live_formula(hostile_dashboard, tmp_path: Path):
    url, run_id = hostile_dashboard
    expect = sync_api.expect
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(accept_downloads=True,
                                          viewport={"width": 1400, "height": 1000})
            context.add_init_script("delete window.showSaveFilePicker;")
            page = context.new_page()
            page.goto(f"{url}/results?run={run_id}")
            expect(page.get_by_role("heading", name="Per request, side by side")) \
                .to_be_visible(timeout=PAGE_MS)
            expect(page.get_by_test_id("stStatusWidget")).to_have_count(0, timeout=PAGE_MS)
            grid = page.get_by_test_id("stDataFrame").filter(
                has=page.locator("table[role=grid] th", has_text="baseline output"))
            expect(grid).to_have_count(1)
            grid.scroll_into_view_if_needed()
            grid.hover()
            button = grid.locator("xpath=..").get_by_role(
                "button", name=re.compile(r"^Download as CSV"))
            expect(button).to_be_visible()
            with page.expect_download(timeout=30_000) as info:
                # the toolbar floats over the grid's edge, where the grid's scroller can take
                # the pointer; the button's own click handler is what the test is after
                button.dispatch_event("click")
            saved = tmp_path / "export.csv"
            info.value.save_as(saved)
        finally:
            browser.close()
    text = saved.read_text(encoding="utf-8-sig")
    rows = list(csv.reader(io.StringIO(text)))
    header, cells = rows[0], [c for row in rows[1:] for c in row]
    assert {"prompt", "baseline output", "variant output"} <= set(header), header
    assert "'" + HYPERLINK in cells and "'@SUM(1+1)" in cells, rows
    # a lone '-' is a missing figure, not a formula: spreadsheets read it as text
    assert not [c for c in cells if c != "-" and c.startswith(("=", "+", "-", "@", "\t", "\r"))], \
        rows
