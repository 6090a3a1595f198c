"""Issue 20, phase 2, faults: the Ray worker running a detached pilot is killed with SIGKILL
mid-variant (the first variant done, the second started). The liveness check marks the run
interrupted (read through `roilab runs`: the worker's pid, stored as the run's owner, is
gone), `roilab resume RUN --detach` runs only the unfinished variant, and every result is
stored exactly once. Local default Ray (one head for the module, stopped at the end), real
SQLite, the real tiny model; each timed pass lasts at least a few seconds (--min-pass-s) so
the kill lands inside the second variant."""
from __future__ import annotations

import os
import signal
import time
from collections import Counter

import psutil
import pytest
from test_jobs import TINY, ingest_prompts, local_ray_dir, wait_finished

from engine.cli.main import main
from engine.core.domain import Status
from engine.jobs.ray_executor import task_name
from engine.store.store import Store

pytestmark = pytest.mark.slow
REQUESTS = 3
PILOT = ["pilot", "--workload", "1", "--model", TINY, "--variants", "int8", "--max-requests",
         str(REQUESTS), "--max-new-tokens", "4", "--batch-size", "2", "--price", "1",
         "--no-interleave", "--min-pass-s", "6", "--detach"]


@pytest.fixture(scope="module")
def local_ray(tmp_path_factory, embedded_model_dir):
    with local_ray_dir(tmp_path_factory.mktemp("faults") / "data", ingest_prompts,
                       embedded_model_dir) as settings:
        yield settings


def second_variant_started(store: Store, run_id: int, timeout_s: float = 300.0):
    """Wait until the baseline is done and the second variant runs; the run's owner."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        run = store.get_run(run_id)
        assert run.status in (Status.PENDING, Status.RUNNING), run.error
        if [v.status for v in run.variants] == [Status.DONE, Status.RUNNING]:
            return next(o for o in store.active_run_owners() if o.run_id == run_id)
        time.sleep(0.2)
    raise AssertionError(f"run {run_id}: the second variant did not start in {timeout_s} s")


def test_a_worker_killed_mid_variant_is_interrupted_and_resumed_exactly_once(
        local_ray, capsys) -> None:
    store = Store(local_ray.resolved_db_url())
    assert main(PILOT) == 0
    [run] = store.list_runs()
    owner = second_variant_started(store, run.id)
    worker = psutil.Process(owner.pid)
    title = " ".join(worker.cmdline())
    assert owner.pid != os.getpid() and task_name(local_ray, run.id) in title, title  # Ray
    base = run.variants[0]
    base_passes = Counter(p.role for p in store.get_passes(base.id))
    os.kill(owner.pid, signal.SIGKILL)
    worker.wait(timeout=30)

    capsys.readouterr()
    assert main(["runs"]) == 0  # the liveness check reads the dead owner: interrupted
    listed = capsys.readouterr().out
    assert f"#{run.id} " in listed and "interrupted" in listed, listed
    stopped = store.get_run(run.id)
    assert stopped.status == Status.INTERRUPTED and f"process {owner.pid}" in stopped.error
    assert [v.status for v in stopped.variants] == [Status.DONE, Status.FAILED]
    assert store.get_results(stopped.variants[1].id) == []  # nothing half-stored

    assert main(["resume", str(run.id), "--detach"]) == 0
    assert f"Run {run.id} submitted to Ray" in capsys.readouterr().out
    done = wait_finished(store, run.id)
    assert done.status == Status.DONE, done.error
    for v in done.variants:  # every result exactly once, per variant and request
        assert Counter(r.request_index for r in store.get_results(v.id)) == \
            dict.fromkeys(range(REQUESTS), 1), v.name
    # the baseline was not run again: its passes as before, plus the end-of-run re-measure
    after = Counter(p.role for p in store.get_passes(base.id))
    assert after - Counter(baseline_end=1) == base_passes, (base_passes, after)
    assert Counter(p.role for p in store.get_passes(done.variants[1].id))["timed"] == 1
    assert store.get_run_node(run.id)["ray_node_id"]

