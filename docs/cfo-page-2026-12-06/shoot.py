"""Start the dashboard from a repo root over a data dir, screenshot / at 1440x900, stop it."""
import os
import socket
import subprocess
import sys
import time
import urllib.request

from playwright.sync_api import expect, sync_playwright

root, data, out, path = sys.argv[1], sys.argv[2], sys.argv[3], (sys.argv[4] if len(sys.argv) > 4 else "/")
with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
env = dict(os.environ, ROILAB_DATA_DIR=data, PYTHONPATH=root, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
env.pop("ROILAB_DB_URL", None)
log = open(out + ".streamlit.log", "wb")
proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app/main.py", "--server.port", str(port),
                         "--server.address", "127.0.0.1", "--server.headless", "true",
                         "--server.fileWatcherType", "none", "--browser.gatherUsageStats", "false"],
                        cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
url = f"http://127.0.0.1:{port}"
try:
    deadline = time.monotonic() + 90
    while True:
        assert proc.poll() is None, "streamlit exited"
        try:
            with urllib.request.urlopen(url + "/_stcore/health", timeout=2) as r:
                if r.read().strip() == b"ok":
                    break
        except OSError:
            pass
        assert time.monotonic() < deadline, "no health"
        time.sleep(0.5)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True,
                              args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"])
        page = b.new_page(viewport={"width": 1440, "height": 900})
        outside = []
        page.on("request", lambda r: outside.append(r.url) if not r.url.startswith(("http://127.0.0.1", "data:", "blob:")) else None)
        page.goto(url + path)
        page.wait_for_timeout(3000)
        expect(page.get_by_test_id("stStatusWidget")).to_have_count(0, timeout=180_000)
        page.wait_for_timeout(2500)
        expect(page.get_by_test_id("stStatusWidget")).to_have_count(0, timeout=60_000)
        page.screenshot(path=out)
        print("requests leaving 127.0.0.1:", sorted(set(outside)))
        print("text:", page.locator("section.stMain, [data-testid=stMain]").first.inner_text()[:3000])
        b.close()
finally:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
