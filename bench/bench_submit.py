"""Issue 20: what submitting a pilot to Ray costs on the local default.

The same pilot (``random:tiny-llama``, baseline + int8 weights, 4 requests, 4 new tokens,
one timed pass) several ways, in one fresh data dir:

- ``roilab pilot --in-process`` (no Ray: the command's wall time to the finished run);
- ``roilab pilot --detach`` with no local Ray yet (the first submit starts the head);
- ``roilab pilot --detach`` again on the running head;
- ``roilab pilot``, the default: a Ray task on that head, followed to the finished run;
- ``--in-process`` again (the first run of a fresh process tree pays cold file caches).

For a detached pilot it prints how long the command took to return, the time from submit to
the run's status *running* (the Ray task picked it up, opened the store, claimed the run)
and to its first stored pass, and to the finished run. The head is stopped at the end.

    python bench/bench_submit.py
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TINY = "random:tiny-llama"
PILOT = ["pilot", "--workload", "1", "--model", TINY, "--variants", "int8", "--max-requests",
         "4", "--max-new-tokens", "4", "--batch-size", "2", "--price", "1"]


def roilab(env: dict, *args: str) -> float:
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-m", "engine.cli.main", *args], env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.monotonic() - t0


def watch(store, run_id: int, t0: float) -> dict[str, float]:
    """Seconds from ``t0`` to running, to the first stored pass, to finished."""
    seen: dict[str, float] = {}
    while True:
        run = store.get_run(run_id)
        now = time.monotonic() - t0
        if run.status != "pending":
            seen.setdefault("running", now)
        if any(store.get_passes(v.id) for v in run.variants):
            seen.setdefault("first_pass", now)
        if run.status not in ("pending", "running"):
            seen["finished"] = now
            return seen
        time.sleep(0.2)


def main() -> None:
    from engine.core.settings import Settings
    from engine.jobs.cluster import stop_local_head
    from engine.store.store import Store

    data = Path(tempfile.mkdtemp(prefix="bench-submit-"))
    env = dict(os.environ, ROILAB_DATA_DIR=str(data), ROILAB_REPEATS="1",
               ROILAB_WARM_UP="minimal", HF_HUB_OFFLINE="1")
    env.pop("ROILAB_RAY_ADDRESS", None)
    env.pop("ROILAB_DB_URL", None)
    log = data / "w.jsonl"
    log.write_text("".join(f'{{"prompt": "Tell me about item {i}."}}\n' for i in range(6)))
    roilab(env, "ingest", str(log))
    store = Store(f"sqlite:///{data / 'roilab.db'}")
    try:
        fg = roilab(env, *PILOT, "--in-process")
        print(f"`roilab pilot --in-process`: {fg:.1f} s to the finished run (no Ray)")
        for label in ("detached, local head started by this submit",
                      "detached, local head already running"):
            t0 = time.monotonic()
            returned = roilab(env, *PILOT, "--detach")
            run_id = store.list_runs()[0].id
            seen = watch(store, run_id, t0)
            print(f"{label}: command returned in {returned:.1f} s; running at "
                  f"{seen['running']:.1f} s, first pass stored at "
                  f"{seen.get('first_pass', float('nan')):.1f} s, finished at "
                  f"{seen['finished']:.1f} s ({store.get_run(run_id).status})")
        followed = roilab(env, *PILOT)
        print(f"`roilab pilot` (the default: a Ray task on the running head, followed): "
              f"{followed:.1f} s to the finished run")
        fg = roilab(env, *PILOT, "--in-process")  # again, warm: the first paid cold caches
        print(f"`roilab pilot --in-process` again: {fg:.1f} s to the finished run; the "
              f"default costs {followed - fg:+.1f} s ({followed / fg:.2f}x)")
    finally:
        os.environ["ROILAB_DATA_DIR"] = str(data)
        stop_local_head(Settings(data_dir=data))


if __name__ == "__main__":
    main()
