"""Issue 20: `roilab pilot` on the local default Ray (a head this module's data dir starts on
first use, stopped at the end), real SQLite, the real tiny model ``random:tiny-llama`` (two
layers: seconds a pilot). A detached pilot finishes with the same shape of figures as the
same pilot run ``--in-process``, records the node it ran on (shown by `roilab show`), and
`roilab resume --detach` finishes a stopped run. Without --detach, `roilab pilot` and `roilab
resume` run the pilot as a Ray task all the same and follow it (table, exit status, Ctrl+C)."""
from __future__ import annotations

import re
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import make_settings

from engine.cli.main import main
from engine.core.domain import Status
from engine.core.settings import Settings
from engine.jobs.cluster import disconnect, stop_local_head
from engine.pilot.runner import cancel_run, create_pilot_run
from engine.specs.pilot import GenerationSettings, PilotSpec, VariantSpec
from engine.store.store import Store

pytestmark = pytest.mark.slow  # Ray and a pilot
TINY = "random:tiny-llama"
FINISHED = (Status.DONE, Status.PARTIAL, Status.FAILED, Status.INTERRUPTED, Status.CANCELLED)
PILOT = ["pilot", "--workload", "1", "--model", TINY, "--variants", "int8",
         "--max-requests", "4", "--max-new-tokens", "4", "--batch-size", "2", "--price", "1"]


@contextmanager
def local_ray_dir(data_dir: Path, ingest: Callable[[Path], None],
                  model_dir: Path) -> Iterator[Settings]:
    """A data dir (and so one local Ray head) with what ``ingest`` stores in it, as the
    environment's data dir; the head is stopped afterwards. For a module-scoped fixture.
    ``model_dir``: the session's converted embedded model, shared (a random: shape takes its
    tokenizer; without it each data dir's first pilot converts the GGUF again, ~45 s)."""
    settings = make_settings(data_dir, model_dir)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ROILAB_DATA_DIR", str(settings.data_dir))
        mp.setenv("ROILAB_DB_URL", settings.resolved_db_url())
        mp.delenv("ROILAB_RAY_ADDRESS", raising=False)
        ingest(settings.data_dir)
        try:
            yield settings
        finally:
            disconnect()
            stop_local_head(settings)


def ingest_prompts(data_dir: Path) -> None:
    """Workload 1: six short prompts."""
    log = data_dir / "w.jsonl"
    log.write_text("".join(f'{{"prompt": "Tell me about item {i}."}}\n' for i in range(6)))
    assert main(["ingest", str(log)]) == 0


@pytest.fixture(scope="module")
def local_ray(tmp_path_factory, embedded_model_dir):
    """One data dir (and so one local Ray head) for the module, with a workload stored."""
    with local_ray_dir(tmp_path_factory.mktemp("jobs") / "data", ingest_prompts,
                       embedded_model_dir) as settings:
        yield settings


def wait_finished(store: Store, run_id: int, timeout_s: float = 420.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        run = store.get_run(run_id)
        if run.status in FINISHED:
            return run
        time.sleep(1.0)
    raise AssertionError(f"run {run_id} still {store.get_run(run_id).status} after {timeout_s} s")


def shape(store: Store, run_id: int):
    """What a pilot's figures look like, whatever their values."""
    run = store.get_run(run_id)
    return run.status, [(v.name, v.status, len(store.get_results(v.id)),
                         sorted(p.role for p in store.get_passes(v.id))) for v in run.variants]


def test_a_detached_pilot_finishes_like_one_in_the_foreground(local_ray, capsys) -> None:
    store = Store(local_ray.resolved_db_url())
    t0 = time.monotonic()
    assert main([*PILOT, "--detach"]) == 0
    submit_s = time.monotonic() - t0
    out = capsys.readouterr().out
    [run] = store.list_runs()
    assert f"Run {run.id} submitted to Ray at 127.0.0.1:" in out and "(local)" in out
    assert f"roilab show {run.id}" in out
    assert re.search(r"asking \d+ CPUs? \(a whole node: a CPU measurement needs the machine\)",
                     out), out
    assert store.get_run(run.id).status in (Status.PENDING, Status.RUNNING)  # returned at once
    detached = wait_finished(store, run.id)
    assert main([*PILOT, "--in-process"]) == 0  # the same pilot in this process, no Ray
    foreground = store.list_runs()[0]
    assert foreground.id != detached.id
    assert shape(store, detached.id) == shape(store, foreground.id)
    status, variants = shape(store, detached.id)
    assert status == Status.DONE and [v[:3] for v in variants] == [
        ("baseline", "done", 4), ("int8-weights", "done", 4)]
    node = store.get_run_node(detached.id)
    assert node["host"] == socket.gethostname() and node["ray_node_id"]
    here = store.get_run_node(foreground.id)
    assert here["host"] == node["host"] and "ray_node_id" not in here
    capsys.readouterr()
    assert main(["show", str(detached.id)]) == 0
    shown = capsys.readouterr().out
    gpus = " (no GPU)" if not node["gpu_count"] else f": {node['gpu_count']} x"
    assert f"Ran on {node['host']}{gpus}" in shown and "Ray node" in shown and "priced as" in shown
    print(f"submit returned in {submit_s:.1f} s (the local head started in it)")


def test_resume_detach_runs_a_stopped_run_on_ray(local_ray, capsys) -> None:
    store = Store(local_ray.resolved_db_url())
    spec = PilotSpec(workload_id=1, name="stopped", max_requests=3,
                     variants=[VariantSpec(name="base", model=TINY)],
                     generation=GenerationSettings(max_new_tokens=4))
    run = create_pilot_run(spec, store)
    cancel_run(run.id, store)  # stopped before it ran: resumable
    assert main(["resume", str(run.id), "--detach"]) == 0
    assert f"Run {run.id} submitted to Ray" in capsys.readouterr().out
    done = wait_finished(store, run.id)
    assert done.status == Status.DONE and len(store.get_results(done.variants[0].id)) == 3
    assert main(["resume", str(run.id), "--detach"]) == 2  # done: nothing to resume
    assert "can be resumed" in capsys.readouterr().err
    again = create_pilot_run(spec, store)
    cancel_run(again.id, store)
    assert main(["resume", str(again.id)]) == 0  # no --detach: a Ray task, followed here
    out = capsys.readouterr().out
    assert f"Run {again.id} submitted to Ray" in out and "followed here" in out
    assert "base" in out  # the run's table, printed once the task finished
    assert store.get_run(again.id).status == Status.DONE
    assert store.get_run_node(again.id)["ray_node_id"]


def test_a_pilot_runs_as_a_task_and_is_followed_here(local_ray, capsys) -> None:
    """`roilab pilot` without --detach, on the local head (no address) and on a cluster
    named with --ray-address: the pilot runs as a Ray task and the command follows it from
    the store, printing the run's table and exiting as a pilot run in this process would (0
    when every variant ran)."""
    from engine.jobs.cluster import ensure_local_head

    store = Store(local_ray.resolved_db_url())
    address = ensure_local_head(local_ray)
    for named in ([], ["--ray-address", address]):
        capsys.readouterr()
        assert main([*PILOT, *named]) == 0
        out = capsys.readouterr().out
        run = store.list_runs()[0]
        where = f"{address} (local)" if not named else f"{address},"
        assert f"Run {run.id} submitted to Ray at {where}" in out, out
        assert "followed here (Ctrl+C stops it)" in out
        assert run.status == Status.DONE and "baseline" in out and "int8-weights" in out
        assert store.get_run_node(run.id)["ray_node_id"]  # it ran in a Ray worker
        assert run.progress is not None  # the worker's pilot said where it was, for followers


def test_ctrl_c_on_a_followed_pilot_interrupts_its_task_and_resume_finishes_it(
        local_ray) -> None:
    """Ctrl+C on a followed pilot: the Ray task is cancelled, the run stored interrupted
    with its finished variants, exit 130 and one line; `roilab resume --detach` then runs
    only the rest, each result once."""
    import os
    import signal
    import subprocess
    import sys

    from engine.core.settings import REPO_ROOT
    from engine.jobs.cluster import ensure_local_head

    store = Store(local_ray.resolved_db_url())
    before = {r.id for r in store.list_runs()}
    # 1,024 tokens a request (tiny-llama never stops early, 2,048 positions): a variant runs
    # for over 10 s, so Ctrl+C lands mid-pilot, and the pilot outlasts the follower's grace
    # (STOP_GRACE_S) should the task's KeyboardInterrupt be lost (seen once: the run went on
    # to "done"): its worker is then killed and the run stored interrupted all the same
    ensure_local_head(local_ray)
    cmd = [sys.executable, "-m", "engine.cli.main", *PILOT[:-2], "--price", "1",
           "--max-new-tokens", "1024"]  # the default: a Ray task on the local head, followed
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=os.environ.copy(), text=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    run_id = None
    while time.monotonic() < deadline:
        new = [r for r in store.list_runs() if r.id not in before]
        said = new[0].progress if new else None  # what the worker's pilot last stored
        if new and new[0].status == Status.RUNNING and said and "generating" in said.message:
            run_id = new[0].id  # mid-pass: the interrupt lands in a timed pass
            break
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.3)
    assert run_id is not None, "the followed pilot never started"
    time.sleep(2.5)  # the follower reads the store each FOLLOW_EVERY_S (1 s): it has shown it
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert f"interrupted: run {run_id} stopped by SIGINT" in err and "Traceback" not in err
    # the follower's bar showed where the pilot was, as the worker stored it (not only
    # "0/2 variants done", which is all a follower saw before revision 0011)
    assert f"{said.variant}: generating" in err, err[-2000:]
    stopped = store.get_run(run_id)
    assert stopped.status == Status.INTERRUPTED, (stopped.status, stopped.error)
    assert main(["resume", str(run_id), "--detach"]) == 0
    done = wait_finished(store, run_id)
    assert done.status == Status.DONE
    for v in done.variants:
        assert sorted(r.request_index for r in store.get_results(v.id)) == [0, 1, 2, 3]
