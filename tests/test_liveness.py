"""Issue 13, item 2: a run whose process died is detected (process id, host and heartbeat
stored) and marked interrupted, on a real SQLite store with real processes. The end-to-end
SIGKILL of a real `roilab pilot` is in tests/test_pilot_interrupt.py."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import pytest

from engine.core.domain import LogRequest, ParsedLog, RunOwner, Status
from engine.pilot import liveness
from engine.pilot.liveness import Heartbeat, owner_is_gone, reap_dead_runs
from engine.store.store import Store


def _dead_pid() -> int:
    """The id of a process that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _owner(pid: int, host: str, age_s: float = 0.0) -> RunOwner:
    return RunOwner(1, Status.RUNNING, pid, host, datetime.now(UTC) - timedelta(seconds=age_s))


def test_a_live_process_on_this_host_is_not_gone():
    assert owner_is_gone(_owner(os.getpid(), liveness.this_host())) is None


def test_a_dead_process_on_this_host_is_gone_at_once():
    why = owner_is_gone(_owner(pid := _dead_pid(), liveness.this_host(), age_s=2))
    assert why is not None and f"process {pid}" in why and "is gone" in why


def test_another_hosts_process_is_judged_by_its_heartbeat_only():
    fresh = _owner(_dead_pid(), "some-other-box", age_s=30)  # its pid means nothing here
    assert owner_is_gone(fresh) is None
    stale = _owner(os.getpid(), "some-other-box", age_s=liveness.STALE_S + 1)
    assert "stopped its heartbeat" in owner_is_gone(stale)


def test_a_reused_pid_on_this_host_is_caught_by_the_stale_heartbeat():
    why = owner_is_gone(_owner(os.getpid(), liveness.this_host(), age_s=liveness.STALE_S + 5))
    assert why is not None and "heartbeat" in why


def _run(store: Store) -> int:
    reqs = (LogRequest(line=1, messages=({"role": "user", "content": "q"},)),)
    w = store.add_workload("w", "w.jsonl", b"x", ParsedLog("prompt_jsonl", reqs, (), 1))
    run = store.create_run(w.id, "p", {"workload_id": w.id},
                           [{"name": "baseline"}, {"name": "int8"}, {"name": "lingua"}])
    store.set_run_status(run.id, Status.RUNNING)
    store.set_variant_status(run.variants[0].id, Status.DONE)
    store.set_variant_status(run.variants[1].id, Status.RUNNING)
    return run.id


def test_reaping_marks_only_runs_whose_owner_is_gone(store: Store):
    dead, alive, unowned = _run(store), _run(store), _run(store)
    store.claim_run(dead, _dead_pid(), liveness.this_host())
    store.claim_run(alive, os.getpid(), liveness.this_host())
    reaped = reap_dead_runs(store)
    assert [r.id for r in reaped] == [dead]
    run = store.get_run(dead)
    assert run.status == Status.INTERRUPTED
    assert f"roilab resume {dead}" in run.error and "is gone" in run.error
    # the finished variant keeps its status; the unfinished ones failed with the reason
    assert [v.status for v in run.variants] == [Status.DONE, Status.FAILED, Status.FAILED]
    assert store.get_run(alive).status == Status.RUNNING  # its process is this test
    assert store.get_run(unowned).status == Status.RUNNING  # stored before owners: no guess
    assert reap_dead_runs(store) == []  # nothing left to reap


def test_the_heartbeat_claims_the_run_and_stops_speaking_when_claimed_elsewhere(store: Store):
    run_id = _run(store)
    with Heartbeat(store, run_id, every_s=0.05):
        [owner] = store.active_run_owners()
        assert (owner.run_id, owner.pid, owner.host) == (run_id, os.getpid(),
                                                         liveness.this_host())
        first = owner.heartbeat_at
        time.sleep(0.3)
        assert store.active_run_owners()[0].heartbeat_at > first  # it beats
    assert store.beat(run_id, os.getpid())
    store.claim_run(run_id, os.getpid() + 1, "resumed-elsewhere")
    assert not store.beat(run_id, os.getpid())  # a resume elsewhere owns it now


@pytest.fixture
def store(tmp_path) -> Store:
    return Store(f"sqlite:///{tmp_path / 'roilab.db'}")
