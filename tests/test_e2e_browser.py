"""End to end in real Chromium: upload a log, run a tiny pilot, read the results, export the PDF.

Starts the real dashboard (``streamlit run app/main.py``) on a free port over a fresh data dir
that shares the prepared embedded model, and drives it with Playwright through Debian's
/usr/bin/chromium (Playwright's own browser download is not needed). The PDF's headline
figures are checked against ``headline_figures(build_report(...))`` computed from the same
database, so the browser, the page and the PDF must all agree with the stored measurements.

Pilots go to Ray (the session's shared head, ``dashboard_ray_head``), not into the Streamlit
script: test_a_dashboard_pilot_outlives_its_browser_session closes the tab mid-pilot and
watches it finish from a new browser.

Every test's browser fails it if any request leaves 127.0.0.1 (an air-gapped install is a
stated use); test_no_request_leaves_the_machine_on_any_page visits every page to check it.

Screenshots land in /tmp/e2e_upload.png, /tmp/e2e_results.png and /tmp/e2e_business.png.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from conftest import make_settings
from dashboard_server import CHROMIUM, CHROMIUM_ARGS, streamlit_server

from engine.business.case import build_business_case
from engine.core.settings import Settings
from engine.pilot.report import build_report
from engine.reports.business_pdf import business_figures, fmt_money, fmt_months
from engine.reports.pilot_pdf import headline_figures
from engine.store.store import Store

pytestmark = [pytest.mark.slow, pytest.mark.browser]

sync_api = pytest.importorskip("playwright.sync_api")
if not Path(CHROMIUM).exists() or shutil.which("pdftotext") is None:
    pytest.skip("needs /usr/bin/chromium and pdftotext (make system-deps)",
                allow_module_level=True)

UPLOAD_PNG, RESULTS_PNG = Path("/tmp/e2e_upload.png"), Path("/tmp/e2e_results.png")
BUSINESS_PNG = Path("/tmp/e2e_business.png")
BOOT_S = 60        # server up and answering /_stcore/health
PAGE_MS = 120_000  # a script run: the first one imports torch/transformers on 2 cores
PILOT_MS = 300_000  # the whole pilot: load, quantize, generate, score
WORKLOAD = "e2e chat log"
# the Run pilot page's answer to "Run pilot": the pilot went to Ray, not into this script
HANDED_TO_RAY = re.compile(r"Pilot #1 \(2 variants\) handed to Ray at \S+, asking 1 CPU "
                           r"\(a whole node[^)]*\)\. It runs on its own")
BAD_LINE = 2  # the deliberately broken row of the log below
LOG_LINES = [
    json.dumps({"messages": [{"role": "user", "content": "What is 2 + 2? Answer with a number."}],
                "reference": "4"}),
    '{"messages": [{"role": "user", "content": "unterminated',  # line 2: invalid JSON
    json.dumps({"messages": [{"role": "system", "content": "Answer in one word."},
                             {"role": "user", "content": "What is the capital of France?"}],
                "reference": "Paris"}),
    json.dumps({"messages": [{"role": "user", "content": "Name a primary colour."}],
                "reference": "red"}),
]



@pytest.fixture
def dashboard(tmp_path: Path, embedded_model_dir: Path,
              dashboard_ray_head: str) -> Iterator[tuple[str, Settings]]:
    """The real dashboard on a free port over a fresh data dir; stopped afterwards. Its
    pilots go to the session's shared Ray head (ROILAB_RAY_ADDRESS), as a deployment's
    would go to its cluster: without one it would start a local head in the data dir."""
    settings = make_settings(tmp_path / "data", embedded_model_dir)
    env = dict(os.environ, ROILAB_DATA_DIR=str(settings.data_dir),
               ROILAB_DB_URL=settings.resolved_db_url(), HF_HUB_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false", ROILAB_RAY_ADDRESS=dashboard_ray_head)
    log_path = tmp_path / "streamlit.log"
    try:
        with streamlit_server(env, log_path, BOOT_S) as url:
            yield url, settings
    finally:
        print(f"\n--- streamlit log (tail) ---\n{log_path.read_text()[-3000:]}")


@pytest.fixture
def chromium_pages():
    """Opens Chromium pages, each in a browser context of its own (so closing one ends its
    Streamlit session); afterwards, no JavaScript error in any of them and no request off
    this machine from any of them."""
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        errors: list[str] = []
        requests: list[str] = []

        def new_page():
            context = browser.new_context(accept_downloads=True,
                                          viewport={"width": 1400, "height": 1000})
            context.on("request", lambda r: requests.append(r.url))  # every page, every type
            page = context.new_page()
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.set_default_timeout(30_000)
            return page

        sync_api.expect.set_options(timeout=30_000)
        try:
            yield new_page
        finally:
            browser.close()  # and every context still open
        assert not errors, f"JavaScript errors in the page: {errors}"
        outside = sorted({u for u in requests if not _on_this_machine(u)})
        assert not outside, f"requests left 127.0.0.1 (fails air-gapped): {outside}"


@pytest.fixture
def browser_page(chromium_pages):
    """A Chromium page; afterwards, no JavaScript error and no request off this machine."""
    return chromium_pages()


# ---- helpers -----------------------------------------------------------------------------
def _submit_pilot(page, form, new_tokens: int) -> None:
    """The Run pilot form as a new user fills it for a tiny pilot: LLMLingua unticked (int8
    weights stays ticked), 3 requests, ``new_tokens`` new tokens; submitted, and the page
    says the pilot went to Ray."""
    expect = sync_api.expect
    form.get_by_text("LLMLingua prompt compression").click()
    expect(form.get_by_role("checkbox", name="LLMLingua prompt compression")).not_to_be_checked()
    expect(form.get_by_role("checkbox", name="int8 weights")).to_be_checked()
    for label, value in (("Max requests", "3"), ("Max new tokens", str(new_tokens))):
        box = form.get_by_label(label, exact=True)
        box.fill(value)
        box.press("Tab")  # number inputs commit on blur
        expect(box).to_have_value(value)
    form.get_by_role("button", name="Run pilot").click()
    expect(page.get_by_text(HANDED_TO_RAY)).to_be_visible(timeout=PAGE_MS)


def _on_this_machine(url: str) -> bool:
    """Served by the dashboard on loopback, or inline (data:, blob:)."""
    parts = urlsplit(url)
    return parts.scheme in ("data", "blob") or (
        parts.scheme in ("http", "https", "ws", "wss")
        and parts.hostname in ("127.0.0.1", "localhost", "::1"))


def _settled(page) -> None:
    """Wait until Streamlit is not running a script (the 'Running...' widget is gone)."""
    sync_api.expect(page.get_by_test_id("stStatusWidget")).to_have_count(0, timeout=PAGE_MS)


def _go(page, title: str, heading: str) -> None:
    """Navigate with the sidebar (same session), then wait for the page's heading."""
    page.get_by_test_id("stSidebarNav").get_by_role("link", name=title).click()
    sync_api.expect(page.get_by_role("heading", name=heading)).to_be_visible(timeout=PAGE_MS)
    _settled(page)


def _grids(page) -> list[dict[str, list[str]]]:
    """Every st.dataframe on the page as {column: cells}, read from glide-data-grid's
    accessible table (the grid itself is a canvas)."""
    return page.get_by_test_id("stDataFrame").evaluate_all("""frames => frames.map(el => {
        const text = cells => [...cells].map(c => c.textContent.trim());
        const head = text(el.querySelectorAll('table[role=grid] thead th'));
        const rows = [...el.querySelectorAll('table[role=grid] tbody tr')]
            .map(tr => text(tr.querySelectorAll('td')));
        return Object.fromEntries(head.map((h, i) => [h, rows.map(r => r[i])]));
    })""")


def _grid_with(page, column: str, n_rows: int, timeout_s: float = 30) -> dict[str, list[str]]:
    """The first table with this column, once it shows n_rows (the grid fills in lazily)."""
    deadline = time.monotonic() + timeout_s
    while True:
        grids = [g for g in _grids(page) if column in g]
        if grids and len(grids[0][column]) == n_rows:
            return grids[0]
        assert time.monotonic() < deadline, f"no {n_rows}-row table with {column!r}: {grids}"
        page.wait_for_timeout(200)


def _metric(page, *labels: str) -> str:
    """The value of the tile labelled one of ``labels`` (or ``label, projected``), without
    the '*' that marks an unstable figure."""
    names = "|".join(re.escape(label) for label in labels)
    box = page.get_by_test_id("stMetric").filter(
        has=page.get_by_test_id("stMetricLabel").get_by_text(
            re.compile(rf"^({names})(, projected)?$")))
    return box.get_by_test_id("stMetricValue").inner_text().strip().rstrip("*")


def _screenshot(page, path: Path) -> None:
    """The whole page: Streamlit scrolls inside stMain, so grow the viewport to fit it."""
    height = page.evaluate("() => document.querySelector('[data-testid=stMain]').scrollHeight")
    size = page.viewport_size
    page.set_viewport_size({"width": size["width"], "height": max(size["height"], height)})
    page.wait_for_timeout(500)  # let Plotly re-layout to the new size
    page.screenshot(path=str(path), full_page=True)
    page.set_viewport_size(size)
    assert path.stat().st_size > 10_000


def _squash(text: str) -> str:
    return re.sub(r"\s+", " ", text)


# ---- the test ----------------------------------------------------------------------------
def test_upload_run_results_pdf_in_chromium(dashboard, browser_page, tmp_path: Path):
    url, settings = dashboard
    page = browser_page
    expect = sync_api.expect
    log_file = tmp_path / "e2e-chat.jsonl"
    log_file.write_text("\n".join(LOG_LINES) + "\n")

    # A deep link works on a fresh server (a folder named "pages" beside main.py would make
    # Streamlit run the page module as a legacy page and show a blank page until "/" ran).
    page.goto(f"{url}/upload")
    expect(page.get_by_role("heading", name="Upload a request log")).to_be_visible(timeout=PAGE_MS)
    page.goto(url)
    expect(page.get_by_role("heading", name="roilab")).to_be_visible(timeout=PAGE_MS)
    _settled(page)

    # -- 1. upload: validation report and the stored workload ------------------------------
    _go(page, "Upload log", "Upload a request log")
    page.locator("[data-testid=stFileUploader] input[type=file]").set_input_files(str(log_file))
    expect(page.get_by_text(log_file.name)).to_be_visible()
    page.get_by_label("Workload name").fill(WORKLOAD)
    page.get_by_role("button", name="Validate and store").click()
    # 1 of 4 rows rejected is over engine.ingest.review.REJECTED_WARN_FRACTION: a warning
    expect(page.get_by_text("Stored workload #1, but 1 of 4 rows was rejected (25%")) \
        .to_be_visible(timeout=PAGE_MS)
    expect(page.get_by_role("heading", name="Validation report")).to_be_visible()
    _settled(page)
    assert _metric(page, "Valid requests") == "3"
    assert _metric(page, "Invalid rows") == "1"
    assert _metric(page, "Rows read") == "4"
    expect(page.get_by_test_id("stDataFrame").first).to_be_visible()
    issues = _grid_with(page, "reason (how to fix)", 1)
    assert issues["line"] == [str(BAD_LINE)], issues
    assert issues["field"] == ["json"] and "invalid JSON" in issues["reason (how to fix)"][0], issues
    expect(page.get_by_role("combobox", name="Inspect stored workload")) \
        .to_have_value(f"#1 {WORKLOAD} ({log_file.name})")
    expect(page.locator(".js-plotly-plot")).to_have_count(1, timeout=PAGE_MS)  # histogram
    _screenshot(page, UPLOAD_PNG)
    store = Store(settings.resolved_db_url())
    [workload] = store.list_workloads()
    assert (workload.name, workload.n_requests, workload.n_issues) == (WORKLOAD, 3, 1)

    # -- 2. run a tiny pilot: baseline + int8 weights, 3 requests, 8 new tokens -------------
    _go(page, "Run pilot", "Run a pilot")
    form = page.get_by_test_id("stForm")
    select = page.get_by_role("combobox", name="Workload", exact=True)  # outside the form
    expect(select).to_have_value(f"#1 {WORKLOAD} (3 requests)")
    expect(page.get_by_text("This workload has 3 requests: a pilot on 3 requests")).to_be_visible()
    _submit_pilot(page, form, new_tokens=8)
    expect(page.get_by_text("Results stored as run #1.")).to_be_visible(timeout=PILOT_MS)
    expect(page.get_by_text("Pilot #1: done", exact=True)).to_be_visible()  # the progress bar
    expect(page.get_by_text("variants failed")).to_have_count(0)
    _settled(page)
    run = store.get_run(1)
    assert run.status == "done" and [v.name for v in run.variants] == ["baseline", "int8-weights"]
    assert [v.status for v in run.variants] == ["done", "done"]
    assert run.spec["max_requests"] == 3
    assert run.spec["generation"]["max_new_tokens"] == 8

    # -- 3. results: KPIs, charts, per-variant table ----------------------------------------
    page.get_by_role("link", name="Open results of run #1").click()
    expect(page.get_by_role("heading", name="Results")).to_be_visible(timeout=PAGE_MS)
    expect(page).to_have_url(re.compile(r"/results\?run=1$"))
    expect(page.get_by_role("heading", name="Per variant")).to_be_visible(timeout=PAGE_MS)
    _settled(page)
    report = build_report(store, run.id)  # the stored assumptions, as the page defaults to
    figures = headline_figures(report)
    # the headline is the run's business case, as on every page (issue 12)
    case = business_figures(build_business_case(store, run.id))
    assert _metric(page, "Before / month", "Monthly cost") == case["baseline_monthly"]
    plots = page.locator(".js-plotly-plot")
    expect(plots).to_have_count(5, timeout=PAGE_MS)  # cost, latency, accuracy, speed, memory
    for plot in plots.all():
        expect(plot.locator(".main-svg").first).to_be_visible()
    titles = page.locator(".js-plotly-plot .gtitle").all_text_contents()
    assert len(titles) == 5 and all(titles), titles
    per_variant = _grid_with(page, "techniques", 2)  # off-screen columns are not in the DOM
    assert per_variant["variant"] == ["baseline", "int8-weights"], per_variant
    assert per_variant["status"] == ["done", "done"], per_variant
    assert per_variant["techniques"][0] == "none (baseline)", per_variant
    _screenshot(page, RESULTS_PNG)

    # -- 4. the PDF: headline figures equal the ones computed from the database --------------
    with page.expect_download(timeout=PAGE_MS) as info:
        page.get_by_role("button", name="Download pilot measurements PDF").click()
    download = info.value
    assert download.suggested_filename == "roilab-run-1-measurements.pdf"
    pdf = tmp_path / download.suggested_filename
    download.save_as(pdf)
    assert pdf.read_bytes()[:5] == b"%PDF-"
    text = subprocess.run(["pdftotext", "-layout", str(pdf), "-"], check=True,
                          capture_output=True, text=True).stdout
    flat = _squash(text)
    assert figures["best_variant"] == "int8-weights"
    assert _squash(case["baseline_monthly"]) in flat  # the case, stated up front
    for key in ("baseline_cost_per_1k", "baseline_cost_per_1m_tokens",
                "price_per_hour", "best_cost_per_1k", "unit_cost_change", "best_rouge_l",
                "best_cosine",
                "best_tokens_per_s", "baseline_tokens_per_s", "best_ref_contains",
                "baseline_ref_contains"):
        assert _squash(figures[key]) in flat, f"{key}={figures[key]!r} not in the PDF"
    for name in ("baseline", "int8-weights", WORKLOAD):
        assert name in flat, f"{name!r} not in the PDF"


def test_a_dashboard_pilot_outlives_its_browser_session(dashboard, chromium_pages):
    """Issue 20: a pilot started on Run pilot runs in Ray, not in the Streamlit script, so
    closing the tab (its browser context: the Streamlit session ends, which stopped the pilot
    before) changes nothing. A new browser opening Results watches it running and, without
    a reload, shows the finished run; the store has every variant done, each request's
    result stored once."""
    from engine.ingest.logs import parse_log

    url, settings = dashboard
    expect = sync_api.expect
    store = Store(settings.resolved_db_url())
    raw = ("\n".join(line for i, line in enumerate(LOG_LINES, 1) if i != BAD_LINE) + "\n").encode()
    store.add_workload(WORKLOAD, "e2e-chat.jsonl", raw, parse_log(raw, "e2e-chat.jsonl"))

    # -- 1. start the pilot from a first browser ------------------------------------------
    page = chromium_pages()
    page.goto(url)
    expect(page.get_by_role("heading", name="roilab")).to_be_visible(timeout=PAGE_MS)
    _settled(page)
    _go(page, "Run pilot", "Run a pilot")
    expect(page.get_by_role("combobox", name="Workload", exact=True)) \
        .to_have_value(f"#1 {WORKLOAD} (3 requests)")
    form = page.get_by_test_id("stForm")
    # long enough to be still going when the tab closes (two variants of 48 tokens each)
    _submit_pilot(page, form, new_tokens=48)
    expect(page.get_by_text(re.compile(
        r"^Pilot #1: (queued \(1st in line\)|running \(\d of 2 variants done(; .+)?\))$"))) \
        .to_be_visible(timeout=PAGE_MS)  # the watch fragment
    deadline = time.monotonic() + PILOT_MS / 1000
    while (status := store.get_run(1).status) == "pending":  # queued until a worker starts it
        assert time.monotonic() < deadline, "the pilot never started in Ray"
        time.sleep(0.5)
    assert status == "running", (status, store.get_run(1).error)

    # -- 2. close the tab: its context too, so the Streamlit session ends ---------------------
    context = page.context
    page.close()
    context.close()
    time.sleep(8)
    run = store.get_run(1)
    assert run.status in ("pending", "running"), (run.status, run.error)
    assert [v.status for v in run.variants if v.status not in ("pending", "running", "done")] \
        == [], run.variants

    # -- 3. a new browser: Results watches the run and shows it finished, with no reload ------
    page = chromium_pages()
    page.goto(f"{url}/results?run=1")
    expect(page.get_by_role("heading", name="Results")).to_be_visible(timeout=PAGE_MS)
    page.evaluate("() => { window.__sameDocument = true; }")  # gone if the page reloads
    # the pilot (~60 s on 2 busy cores) is still running: the page says so and watches it
    expect(page.get_by_text(re.compile(r"^Run #1 is running;"))).to_be_visible(timeout=PAGE_MS)
    expect(page.get_by_text(re.compile(r"^Pilot #1: running \(\d of 2 variants done(; .+)?\)$"))) \
        .to_be_visible(timeout=PAGE_MS)
    expect(page.get_by_role("combobox", name="Run", exact=True)) \
        .to_have_value(re.compile(r"^#1 pilot - done - "), timeout=PILOT_MS)
    expect(page.get_by_text(re.compile(r"^Run #1 is (queued|running);"))).to_have_count(0)
    expect(page.get_by_role("button", name="Download pilot measurements PDF")) \
        .to_be_visible(timeout=PAGE_MS)
    expect(page.get_by_role("heading", name="Per variant")).to_be_visible(timeout=PAGE_MS)
    _settled(page)
    per_variant = _grid_with(page, "techniques", 2)  # the per-variant table's own column
    assert per_variant["variant"] == ["baseline", "int8-weights"], per_variant
    assert per_variant["status"] == ["done", "done"], per_variant
    assert page.evaluate("() => window.__sameDocument === true"), "the page was reloaded"

    # -- 4. the store: done, each variant's requests measured once -----------------------------
    run = store.get_run(1)
    assert run.status == "done", (run.status, run.error)
    assert [(v.name, v.status) for v in run.variants] == [("baseline", "done"),
                                                          ("int8-weights", "done")]
    assert run.spec["generation"]["max_new_tokens"] == 48
    indexes = {}
    for variant in run.variants:
        got = [r.request_index for r in store.get_results(variant.id)]
        assert len(got) == 3 and len(set(got)) == 3, (variant.name, got)
        indexes[variant.name] = sorted(got)
    assert indexes["baseline"] == indexes["int8-weights"] == store.result_indices(1), indexes


def test_business_case_payback_follows_an_assumption_in_chromium(dashboard, browser_page):
    """Open the business case of a stored run, change the day rate, see the payback move.

    The run is test_business's hand-worked one (stored measurements, no model run), so the
    expected figures come from engine.business.case over the same database."""
    from test_business import _stored_run

    url, settings = dashboard
    page, expect = browser_page, sync_api.expect
    store = Store(settings.resolved_db_url())
    run_id = _stored_run(store)

    stored = build_business_case(store, run_id).assumptions  # what the page starts at

    def case(**inputs):
        return build_business_case(store, run_id, replace(stored, **inputs))

    page.goto(f"{url}/business?run={run_id}")
    expect(page.get_by_role("heading", name="Business case")).to_be_visible(timeout=PAGE_MS)
    _settled(page)
    payback = page.get_by_test_id("stMetric").filter(
        has=page.get_by_test_id("stMetricLabel").get_by_text("Payback", exact=True)
    ).get_by_test_id("stMetricValue")
    default = case()
    expect(payback).to_have_text(fmt_months(default.roi.payback_months), timeout=PAGE_MS)
    assert _metric(page, "Saving / month") == fmt_money(default.monthly_savings)
    # cost vs accuracy, p95 latency with its target, payback, tornado, and before/after
    expect(page.locator(".js-plotly-plot")).to_have_count(5, timeout=PAGE_MS)

    box = page.get_by_label("Day rate ($)", exact=True)
    box.fill("2000")
    box.press("Tab")  # number inputs commit on blur
    changed = case(day_rate=2000.0)
    assert fmt_months(changed.roi.payback_months) != fmt_months(default.roi.payback_months)
    expect(payback).to_have_text(fmt_months(changed.roi.payback_months), timeout=PAGE_MS)
    _settled(page)
    assert _metric(page, "One-time cost") == fmt_money(changed.roi.one_time)
    _screenshot(page, BUSINESS_PNG)


def test_no_request_leaves_the_machine_on_any_page(dashboard, browser_page):
    """Every page in app.nav, over a stored pilot run and a stored load sweep, with every
    expander opened: icons, fonts, scripts and charts all come from the dashboard itself.
    The browser_page fixture records each request and fails on one that left 127.0.0.1."""
    from test_business import _stored_run
    from test_load_page import _stored_sweep

    from app import nav

    url, settings = dashboard
    page, expect = browser_page, sync_api.expect
    run_id = _stored_run(Store(settings.resolved_db_url()))
    _stored_sweep(settings)
    charted = {"upload", "results", "load", "playbook"}  # pages sure to draw Plotly charts over this data
    for key in nav.url_paths():
        page.goto(f"{url}/{key}?run={run_id}")
        expect(page.get_by_test_id("stMain").locator("h1").first).to_be_visible(timeout=PAGE_MS)
        _settled(page)
        if key in charted:
            expect(page.locator(".js-plotly-plot .main-svg").first).to_be_visible(timeout=PAGE_MS)
        for summary in page.locator("[data-testid=stExpander] summary").all():
            summary.click()  # content drawn only when opened still gets its chance to fetch
        page.wait_for_load_state("networkidle")
    # the tab's icon is roilab's own, inline (a ":material/...:" page_icon came from
    # fonts.gstatic.com)
    icon = page.locator("link[rel='shortcut icon']").get_attribute("href")
    assert icon.startswith("data:image/svg+xml"), icon


def test_login_screen_fetches_nothing_from_outside(tmp_path: Path, browser_page):
    """With a password set, the first screen is the login form: it too is served locally."""
    settings = make_settings(tmp_path / "data", None)
    env = dict(os.environ, ROILAB_DATA_DIR=str(settings.data_dir),
               ROILAB_DB_URL=settings.resolved_db_url(), ROILAB_DASHBOARD_PASSWORD="s3cret-e2e")
    page, expect = browser_page, sync_api.expect
    with streamlit_server(env, tmp_path / "streamlit.log", BOOT_S) as url:
        page.goto(url)
        page.get_by_label("Password", exact=True).fill("wrong")
        page.get_by_role("button", name="Log in").click()
        expect(page.get_by_text("Wrong password.")).to_be_visible(timeout=PAGE_MS)
        page.get_by_label("Password", exact=True).fill("s3cret-e2e")
        page.get_by_role("button", name="Log in").click()
        # the form's title is "roilab" too: the page list appears only once logged in
        expect(page.get_by_test_id("stSidebarNav")).to_be_visible(timeout=PAGE_MS)
        _settled(page)
        page.wait_for_load_state("networkidle")


def _in_first_screen(page, text: str) -> None:
    """``text`` (a prefix of a sentence the page draws) is shown whole inside the first
    1440x900 screen, before any scrolling."""
    node = page.get_by_text(text).first
    sync_api.expect(node).to_be_visible(timeout=PAGE_MS)
    box = node.bounding_box()
    assert box and 0 <= box["y"] and box["y"] + box["height"] <= 900, (text, box)


def test_the_decision_and_its_caveats_show_without_scrolling(dashboard, browser_page):
    """Issue 19: on Overview and Business case, at 1440x900, the decision sentence and
    every caveat line of the CFO's screen are visible before the reader scrolls."""
    from test_business import _stored_run

    from engine.reports.case_caveats import caveats
    from engine.reports.case_words import decision_sentence

    url, settings = dashboard
    page = browser_page
    page.set_viewport_size({"width": 1440, "height": 900})
    store = Store(settings.resolved_db_url())
    run_id = _stored_run(store, random=("lingua",))  # a random-weights caveat applies
    case = build_business_case(store, run_id)
    lines = caveats(case)
    assert lines, "the run should carry at least one caveat"
    for path, heading in (("/", "roilab"), (f"/business?run={run_id}", "Business case")):
        page.goto(url + path)
        sync_api.expect(page.get_by_role("heading", name=heading)).to_be_visible(
            timeout=PAGE_MS)
        _settled(page)
        _in_first_screen(page, decision_sentence(case).split("$")[0][:60])
        for line in lines:
            _in_first_screen(page, line.split("$")[0][:50])
        name = "overview" if path == "/" else "business"
        page.screenshot(path=f"/tmp/e2e_first_screen_{name}.png")  # the 1440x900 screen


def test_a_csv_download_has_readable_headers(dashboard, browser_page):
    """Issue 19: the per-variant CSV of the Results page has the table's labels as headers
    (no snake_case keys), values rounded as shown, and a file name naming the run."""
    import csv
    import io

    from test_business import _stored_run

    url, settings = dashboard
    page = browser_page
    run_id = _stored_run(Store(settings.resolved_db_url()))
    page.goto(f"{url}/results?run={run_id}")
    sync_api.expect(page.get_by_role("heading", name="Results")).to_be_visible(timeout=PAGE_MS)
    _settled(page)
    with page.expect_download() as got:
        page.get_by_role("button", name="Download per-variant CSV").click()
    download = got.value
    assert f"run-{run_id}" in download.suggested_filename, download.suggested_filename
    rows = list(csv.reader(io.StringIO(Path(download.path()).read_text(encoding="utf-8"))))
    header = rows[0]
    assert not [h for h in header if re.fullmatch(r"[a-z0-9]+(_[a-z0-9]+)+", h)], header
    assert any("per 1k requests" in h for h in header), header
    long_floats = [c for r in rows[1:] for c in r if re.fullmatch(r"-?\d+\.\d{6,}", c)]
    assert not long_floats, long_floats


PLAYBOOK_PNG = Path("/tmp/e2e_playbook.png")


def _step(page, number: int, title: str):
    """The Playbook page's row of one step (its text and its link)."""
    return page.get_by_test_id("stHorizontalBlock").filter(
        has=page.get_by_text(f"{number}. {title}", exact=True))


def test_a_new_user_follows_the_playbook_from_an_upload_to_a_business_case(
        dashboard, browser_page, tmp_path: Path):
    """Issue 21: from the Playbook page of an empty store, by its links and its one button
    alone: upload a log, back to its playbook, run the suggested pilot (handed to Ray, watched
    on the page), then every step done and its last link opening the run's business case."""
    url, settings = dashboard
    page, expect = browser_page, sync_api.expect
    log_file = tmp_path / "e2e-chat.jsonl"
    log_file.write_text("\n".join(LOG_LINES) + "\n")

    page.goto(f"{url}/playbook")
    expect(page.get_by_role("heading", name="Playbook")).to_be_visible(timeout=PAGE_MS)
    page.get_by_role("link", name="Upload a log").click()
    expect(page.get_by_role("heading", name="Upload a request log")).to_be_visible(timeout=PAGE_MS)
    page.locator("[data-testid=stFileUploader] input[type=file]").set_input_files(str(log_file))
    expect(page.get_by_text(log_file.name)).to_be_visible()
    page.get_by_label("Workload name").fill(WORKLOAD)
    page.get_by_role("button", name="Validate and store").click()
    expect(page.get_by_role("heading", name="Validation report")).to_be_visible(timeout=PAGE_MS)
    _settled(page)

    page.get_by_role("link", name=re.compile("^Its playbook")).click()
    expect(page.get_by_role("heading", name="Playbook")).to_be_visible(timeout=PAGE_MS)
    expect(page).to_have_url(re.compile(r"/playbook\?workload=1$"))
    _settled(page)
    expect(_step(page, 1, "Workload profile")).to_contain_text("done")
    expect(_step(page, 2, "Baseline measured")).to_contain_text("next")
    expect(page.get_by_text(re.compile(r"^Suggested pilot: the baseline and int8"))).to_be_visible()
    expect(page.get_by_label("Requests to replay", exact=True)).to_have_value("3")
    page.get_by_role("button", name="Run the suggested pilot").click()
    # the fragment watches it; when it ends the whole page runs again with the steps done
    expect(page.get_by_text("Pilot #1: done", exact=True)).to_be_visible(timeout=PILOT_MS)
    for number, title in enumerate(("Workload profile", "Baseline measured",
                                    "Techniques chosen", "After measured",
                                    "In the portfolio"), 1):
        expect(_step(page, number, title)).to_contain_text("done", timeout=PAGE_MS)
    _settled(page)
    run = Store(settings.resolved_db_url()).get_run(1)
    assert run.status == "done" and [v.name for v in run.variants] == ["baseline",
                                                                        "int8-weights"]
    _screenshot(page, PLAYBOOK_PNG)

    _step(page, 5, "In the portfolio").get_by_role("link").click()
    expect(page.get_by_role("heading", name="Business case")).to_be_visible(timeout=PAGE_MS)
    expect(page).to_have_url(re.compile(r"/business\?run=1$"))
    _settled(page)
    case = business_figures(build_business_case(Store(settings.resolved_db_url()), 1))
    assert _metric(page, "Before / month", "Monthly cost") == case["baseline_monthly"]
