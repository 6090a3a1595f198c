"""The dashboard's Run pilot page on a GPU box, through Streamlit's AppTest (issue 18): the
"Priced as hardware" box defaults to the detected GPU, and a pilot submitted without touching
it is stored and priced as that GPU. The page hands the pilot to Ray (a local head started on
first use, or ROILAB_RAY_ADDRESS) and the script waits for the run in the store. Runs FP8 weights against bf16 with vLLM on the 8B shape
(random weights; a short pilot: 8 requests x 32 tokens, passes of at least 2 s).

    ROILAB_DATA_DIR=... python3 bench/gpu_page_check.py   # a store with workload 1 in it
    PAGE_BACKEND=transformers PAGE_MODEL=embedded:smollm2-135m-instruct ...  # (a CPU check)

Prints the page's default, what the stored run is priced as, and PASS or FAIL per check."""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # app/ beside engine/

from streamlit.testing.v1 import AppTest  # noqa: E402

from engine.cli.common import open_store  # noqa: E402
from engine.core.settings import get_settings  # noqa: E402
from engine.economics.hardware import CATALOG  # noqa: E402
from engine.pilot.detect import detect_hardware  # noqa: E402


def main() -> int:
    store = open_store(get_settings())
    before = {r.id for r in store.list_runs()}
    at = AppTest.from_string("from app.views import run_pilot\nrun_pilot.render()",
                             default_timeout=600).run()
    box = next(s for s in at.selectbox if s.label == "Priced as hardware")
    detected = detect_hardware("auto", CATALOG)
    print(f"detected: {detected.describe(CATALOG)}")
    print(f"'Priced as hardware' default: {box.value}")
    for c in at.caption:
        if "Default hardware" in c.value:
            print(c.value.replace("\\", ""))
    boxes = {s.label: s for s in at.selectbox}
    boxes["Serving backend"].set_value(os.environ.get("PAGE_BACKEND", "vllm"))
    checks = {c.label.split(" (")[0]: c for c in at.checkbox}
    checks["int8 weights"].uncheck()
    checks["LLMLingua prompt compression"].uncheck()
    inputs = {n.label: n for n in at.number_input}
    inputs["Max requests"].set_value(8)
    inputs["Max new tokens"].set_value(32)
    inputs["Batch size"].set_value(8)
    inputs["Minimum seconds per pass"].set_value(2.0)
    next(t for t in at.text_input if t.label == "Model").set_value(
        os.environ.get("PAGE_MODEL", "random:llama-3.1-8b"))
    at.button[0].click().run(timeout=600)
    print("exception:", [e.value for e in at.exception] or "none")
    print("errors:", [e.value for e in at.error] or "none")
    print("success:", [s.value for s in at.success] or "none")
    new = [r for r in store.list_runs() if r.id not in before]
    if not new:
        print("FAIL: no run stored")
        return 1
    run = store.get_run(new[0].id)  # handed to Ray (the local head): wait for it
    deadline = time.monotonic() + 1800
    while not run.status.finished and time.monotonic() < deadline:
        time.sleep(5)
        run = store.get_run(run.id)
    at.run()  # as the page's watch does every few seconds
    print("after:", [s.value for s in at.success] or "none", [e.value for e in at.error] or "")
    hw = run.spec.get("cost", {}).get("hardware")
    print(f"run #{run.id}: {run.status}; variants "
          f"{[(v.name, v.status) for v in run.variants]}; priced as {hw}")
    ok = {"box defaults to the detected device": box.value == detected.key,
          "run priced as the detected device": hw == detected.key,
          "run done": run.status == "done"}
    for what, good in ok.items():
        print(f"{'PASS' if good else 'FAIL'}: {what}")
    return 0 if all(ok.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
