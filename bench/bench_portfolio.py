"""Issue 20: the wall time of a 3-workload portfolio on a one-node vs a two-node Ray cluster.

Three stored workloads (4 requests each), one ``roilab portfolio-pilot --workloads 1,2,3
--ray-address ADDR`` (``random:tiny-llama``, baseline + int8 weights, 4 requests, 16 new
tokens, one timed pass of at least 3 s per variant), timed from the command's start to its
exit (submit, the pilots, the roll-up), on two clusters built on this machine, each with
its own temp dir:

- one node: ``ray start --head --num-cpus 1``: a pilot asks for one CPU, so the three run
  one after the other;
- two nodes: the same head plus ``ray start --address HEAD --num-cpus 1``: two at a time.

Each cluster runs the portfolio twice: cold (its first pilots start Ray workers and import
torch) and warm. The ideal ratio is 1.5 (3 pilots in 3 slots of time vs 2). The clusters'
processes are stopped by id at the end (engine.jobs.cluster.stop_nodes), as
tests/test_jobs_cluster.py does; the machine's other Ray instances are left alone.

    python bench/bench_portfolio.py
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TINY = "random:tiny-llama"
PORTFOLIO = ["portfolio-pilot", "--workloads", "1,2,3", "--model", TINY, "--variants", "int8",
             "--max-requests", "4", "--max-new-tokens", "16", "--batch-size", "2",
             "--min-pass-s", "3", "--price", "1"]


def roilab(env: dict, *args: str) -> tuple[float, int, str]:
    t0 = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "engine.cli.main", *args], env=env,
                          capture_output=True, text=True)
    return time.monotonic() - t0, done.returncode, done.stdout + done.stderr


def main() -> None:
    from engine.jobs.cluster import start_head, start_worker_node, stop_nodes
    from engine.store.store import Store

    data = Path(tempfile.mkdtemp(prefix="bench-portfolio-"))
    env = dict(os.environ, ROILAB_DATA_DIR=str(data), ROILAB_REPEATS="1",
               ROILAB_WARM_UP="minimal", HF_HUB_OFFLINE="1")
    env.pop("ROILAB_DB_URL", None)
    for name in ("support", "claims", "search"):
        log = data / f"{name}.jsonl"
        log.write_text("".join(f'{{"prompt": "{name}: tell me about item {i}."}}\n'
                               for i in range(4)))
        assert roilab(env, "ingest", str(log), "--name", name)[1] == 0
    store = Store(f"sqlite:///{data / 'roilab.db'}")
    walls: dict[tuple[str, str], float] = {}
    try:
        for layout, nodes in (("one node", 1), ("two nodes", 2)):
            temp_dir = tempfile.mkdtemp(prefix="roilab-ray-bench-")
            try:
                t0 = time.monotonic()
                head = start_head(num_cpus=1, temp_dir=temp_dir)
                if nodes == 2:
                    start_worker_node(head["address"], temp_dir, num_cpus=1)
                print(f"{layout}: cluster up in {time.monotonic() - t0:.1f} s at "
                      f"{head['address']}", flush=True)
                for pass_ in ("cold", "warm"):
                    before = {r.id for r in store.list_runs()}
                    wall, code, out = roilab(env, *PORTFOLIO, "--ray-address", head["address"])
                    runs = [r for r in store.list_runs() if r.id not in before]
                    ran_on = {(store.get_run_node(r.id) or {}).get("ray_node_id") for r in runs}
                    if code != 0:
                        print(out[-3000:])
                    walls[layout, pass_] = wall
                    print(f"  {pass_}: {wall:.1f} s, exit {code}, {len(runs)} runs "
                          f"({', '.join(sorted(str(r.status) for r in runs))}) on "
                          f"{len(ran_on)} Ray node(s)", flush=True)
            finally:
                stop_nodes(temp_dir)
                shutil.rmtree(temp_dir, ignore_errors=True)
        for pass_ in ("cold", "warm"):
            one, two = walls["one node", pass_], walls["two nodes", pass_]
            print(f"{pass_}: one node {one:.1f} s, two nodes {two:.1f} s: ratio {one / two:.2f} "
                  "(ideal 1.5)")
    finally:
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
