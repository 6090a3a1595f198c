"""Screenshots of the Playbook page of a stored workload, as a user sees it in Chromium, and
the claims scorecard section of its run's business PDF as text: the pictures docs/ keeps of
a playbook run (CPU here, or a GPU box's store copied back: the page only reads the store).

    python bench/playbook_screens.py DATA_DIR WORKLOAD OUT_DIR

DATA_DIR is a roilab data dir (its roilab.db); writes OUT_DIR/playbook-W.png and, where the
workload has a run with a technique measured, OUT_DIR/claims-RUN.txt (pdftotext of the
business PDF's "Claims scorecard" section) and OUT_DIR/case-RUN.pdf.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from dashboard_server import CHROMIUM, CHROMIUM_ARGS, streamlit_server  # noqa: E402


def main(data_dir: str, workload: int, out_dir: str) -> None:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = Path(data_dir).resolve()
    env = dict(os.environ, ROILAB_DATA_DIR=str(data),
               ROILAB_DB_URL=f"sqlite:///{data / 'roilab.db'}", HF_HUB_OFFLINE="1")
    os.environ.update(ROILAB_DATA_DIR=env["ROILAB_DATA_DIR"], ROILAB_DB_URL=env["ROILAB_DB_URL"])
    from playwright.sync_api import expect, sync_playwright

    with streamlit_server(env, out / "streamlit.log", 90) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"{url}/playbook?workload={workload}")
        expect(page.get_by_role("heading", name="Playbook")).to_be_visible(timeout=180_000)
        expect(page.get_by_test_id("stStatusWidget")).to_have_count(0, timeout=180_000)
        expect(page.locator(".js-plotly-plot .main-svg").first).to_be_visible(timeout=60_000)
        height = page.evaluate(
            "() => document.querySelector('[data-testid=stMain]').scrollHeight")
        page.set_viewport_size({"width": 1400, "height": max(1000, height)})
        page.wait_for_timeout(1000)
        page.screenshot(path=str(out / f"playbook-{workload}.png"), full_page=True)
        browser.close()
    print(f"wrote {out / f'playbook-{workload}.png'}")

    from engine.business.playbook import workload_playbook
    from engine.cli.common import open_store
    from engine.core.settings import get_settings
    from engine.reports.business_pdf import write_business_pdf

    store = open_store(get_settings())
    book = workload_playbook(store, workload)
    if book.scorecard_run is None:
        return
    pdf = out / f"case-{book.scorecard_run}.pdf"
    write_business_pdf(store, book.scorecard_run, pdf)
    text = subprocess.run(["pdftotext", "-layout", str(pdf), "-"], check=True,
                          capture_output=True, text=True).stdout
    start = text.index("Claims scorecard")
    end = text.find("The pages below are the pilot as measured", start)  # the next section
    (out / f"claims-{book.scorecard_run}.txt").write_text(text[start:end if end > 0 else None])
    print(f"wrote {pdf} and the claims section")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3])
