"""Dashboard and report benchmark on a 100,000-request workload (issue 12 item 7, "Fast views").

Makes a temporary SQLite store, ingests a generated 100,000-request chat log through
``roilab ingest`` (as bench/bench_ingest.py writes it; the embedded model's tokenizer counts
its tokens when the model is prepared under data/models), runs a tiny real pilot on it (``roilab
pilot``: the embedded model, baseline and 8-bit weights, the first 4 requests, 4 new tokens,
one timed pass), then:

* every dashboard page through Streamlit's AppTest, as tests/test_app_pages.py drives them:
  cold (Streamlit's query caches emptied first; the first page also pays the imports and
  opening the store) and warm (another browser session: a new AppTest, the caches filled;
  the better of two);
* ``roilab report RUN`` (the business-case PDF) and ``roilab show RUN`` in child processes;

and prints the wall and CPU seconds of each (the machine may be shared: CPU seconds say what
the code costs) and the peak resident memory (this process for the pages; each child its
own, VmHWM). Issue 12 asks for every page under 2 s warm and the report under 5 s.

    .venv/bin/python bench/bench_views.py [--requests 100000] [--keep DIR]
"""
from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "bench")]

from bench_ingest import write_log  # noqa: E402  (the same generated log)

# page module -> query parameters (the run's pages are opened on the bench run)
PAGES = {"overview": {}, "upload": {}, "run_pilot": {}, "results": {"run": "1"},
         "business_case": {"run": "1"}, "hardware": {}, "load_test": {}}
TIMEOUT = 300


# Runs the CLI and, at exit, writes its own peak resident memory (VmHWM, KiB) to the file
# named by argv[1] (the CLI may route stderr to its log): a child's ru_maxrss is no use here,
# Linux carries the parent's peak into a vforked child.
_CHILD = ("import atexit, re, runpy, sys\n"
          "out = sys.argv.pop(1)\n"
          "def hwm():\n"
          "    with open('/proc/self/status') as f, open(out, 'w') as o:\n"
          "        o.write(re.search(r'VmHWM:\\s+(\\d+)', f.read())[1])\n"
          "atexit.register(hwm)\n"
          "sys.argv[0] = 'roilab'\n"
          "runpy.run_module('engine.cli.main', run_name='__main__')\n")


def child(argv: list[str], env: dict[str, str]) -> tuple[float, float, float, str]:
    """(seconds, CPU seconds, peak MiB, stdout) of one ``roilab`` command in a child process
    (interpreter start-up and imports included, as a user sees them)."""
    with tempfile.NamedTemporaryFile("r") as hwm:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", _CHILD, hwm.name, *argv], cwd=REPO,
                              env=env, capture_output=True, text=True, check=False)
        seconds = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        peak_kib = hwm.read().strip()
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    if done.returncode not in (0, 3):  # 3: a partial pilot, its baseline still measured
        raise SystemExit(f"roilab {' '.join(argv)} failed ({done.returncode}): "
                         f"{done.stderr[-2000:]}")
    peak = int(peak_kib) / 1024 if peak_kib else float("nan")
    return seconds, cpu, peak, done.stdout.strip()


def setup(folder: Path, n: int) -> dict[str, str]:
    """The store with the workload and the pilot run; the environment that points at it."""
    data = folder / "data"
    (data / "models").mkdir(parents=True, exist_ok=True)
    model = REPO / "data" / "models" / "smollm2-135m-instruct"
    link = data / "models" / model.name
    if model.is_dir() and not link.exists():
        link.symlink_to(model, target_is_directory=True)  # the tokenizer, and the pilot's model
    env = {**os.environ, "ROILAB_DATA_DIR": str(data), "ROILAB_REPEATS": "1",
           "ROILAB_DB_URL": f"sqlite:///{data / 'bench.db'}"}
    os.environ.update(env)  # the pages read ROILAB_* through get_settings
    if (data / "bench.db").exists():
        return env
    log = folder / f"bench_{n}.jsonl"
    write_log(log, n)
    seconds, cpu, peak, said = child(["ingest", str(log), "--name", "bench"], env)
    print(f"ingest of {n:,} requests: {seconds:.2f} s ({cpu:.2f} s CPU), peak {peak:.0f} MiB "
          f"RSS ({said.splitlines()[0]})")
    # --in-process: the figures below are the pilot's own CPU and peak, not a follower's
    seconds, cpu, peak, _ = child(["pilot", "--in-process", "--workload", "1", "--name", "bench",
                                   "--max-requests",
                              "4", "--max-new-tokens", "4", "--batch-size", "4", "--variants",
                              "int8"], env)
    print(f"pilot (4 requests, baseline + int8, 4 new tokens): {seconds:.1f} s ({cpu:.1f} s "
          f"CPU), peak {peak:.0f} MiB RSS")
    return env


def render(name: str, query: dict[str, str]) -> tuple[float, float]:
    """(seconds, CPU seconds of this process) of one render of ``app.views.<name>`` in a new
    AppTest (a new browser session)."""
    from streamlit.logger import set_log_level
    from streamlit.testing.v1 import AppTest

    set_log_level("error")  # again: loggers made since (AppTest's) start at warning
    at = AppTest.from_string(f"from app.views import {name}\n{name}.render()",
                             default_timeout=TIMEOUT)
    for key, value in query.items():
        at.query_params[key] = value
    start, cpu = time.perf_counter(), time.process_time()
    at.run()
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    if at.exception:
        raise SystemExit(f"page {name} raised: {at.exception[0].value}")
    return seconds, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--keep", type=Path, help="make (or reuse) the store here")
    args = parser.parse_args()
    import streamlit as st
    from streamlit.logger import set_log_level

    set_log_level("error")  # "No runtime found" / "missing ScriptRunContext": bare mode
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        env = setup(folder, args.requests)
        print(f"load average before the pages: {os.getloadavg()[0]:.1f} on {os.cpu_count()} "
              "CPUs (CPU seconds say what the code costs on a shared machine)")
        print(f"{'page':15} {'cold s':>7} {'(CPU)':>7} {'warm s':>7} {'(CPU)':>7}")
        for name, query in PAGES.items():
            st.cache_data.clear()
            cold = render(name, query)
            warm = min((render(name, query) for _ in range(2)), key=lambda t: t[0])
            print(f"{name:15} {cold[0]:7.2f} {cold[1]:7.2f} {warm[0]:7.2f} {warm[1]:7.2f}")
        pages_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"peak RSS of the page renders (this process): {pages_peak:.0f} MiB")
        for argv in (["report", "1", "-o", str(folder / "case.pdf")], ["show", "1"]):
            seconds, cpu, peak, _ = child(argv, env)
            print(f"roilab {argv[0]} 1: {seconds:.2f} s ({cpu:.2f} s CPU), peak {peak:.0f} MiB "
                  "RSS")

if __name__ == "__main__":
    main()
