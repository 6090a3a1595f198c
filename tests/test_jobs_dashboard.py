"""Issue 20, phase 3: the dashboard hands pilots to Ray and watches them from the store.

On the session's shared Ray head (one CPU: a second pilot waits for the first, as it would
for the box's one GPU) through Streamlit's AppTest: two pilots started from the Run pilot
page one after the other, the second shown queued with its place on the page, in the run
list and in `roilab runs`; the queued one cancelled from Results leaves Ray's queue without
running anything; a running one cancelled from Results stops within seconds and is stored
cancelled, finished results kept; Resume hands the rest to Ray and every result is stored
once. (That a pilot outlives its browser session is in test_e2e_browser.py.)
"""
from __future__ import annotations

import time

import psutil
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest
from test_jobs import wait_finished

from engine.cli.main import main
from engine.core.domain import Status
from engine.core.settings import Settings
from engine.ingest.logs import parse_log
from engine.store.store import Store

pytestmark = pytest.mark.slow

LOG = b"".join(f'{{"prompt": "Tell me about item {i}.", "reference": "item"}}\n'.encode()
               for i in range(3))


@pytest.fixture
def env(model_settings, dashboard_ray, monkeypatch) -> Settings:
    monkeypatch.setenv("ROILAB_DATA_DIR", str(model_settings.data_dir))
    monkeypatch.setenv("ROILAB_DB_URL", model_settings.resolved_db_url())
    st.cache_data.clear()
    Store(model_settings.resolved_db_url()).add_workload("w", "w.jsonl", LOG,
                                                         parse_log(LOG, "w.jsonl"))
    return model_settings


def _page(name: str, **query: str) -> AppTest:
    at = AppTest.from_string(f"from app.views import {name}\n{name}.render()",
                             default_timeout=300)
    for key, value in query.items():
        at.query_params[key] = value
    return at.run()


def _start_pilot(at: AppTest, name: str, new_tokens: int) -> AppTest:
    """Fill the Run pilot form (baseline + int8 weights on the embedded model) and submit."""
    at.text_input[0].set_value(name)
    at.checkbox[4].uncheck()  # no LLMLingua
    at.number_input[0].set_value(3)  # max requests
    at.number_input[1].set_value(new_tokens)
    at.button[0].click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    return at


def _progress(at: AppTest) -> list[str]:
    return [p.proto.text for p in at.get("progress")]


def _owner_pid(store: Store, run_id: int) -> int:
    """The pid of the Ray worker running ``run_id`` (the owner it claimed the run as)."""
    deadline = time.monotonic() + 60
    while not (owners := [o for o in store.active_run_owners() if o.run_id == run_id]):
        assert time.monotonic() < deadline, f"run {run_id} running with no owner"
        time.sleep(0.3)
    return owners[0].pid


def _wait_status(store: Store, run_id: int, status: Status, timeout_s: float = 240.0) -> None:
    deadline = time.monotonic() + timeout_s
    while store.get_run(run_id).status != status:
        assert time.monotonic() < deadline, f"run {run_id} never {status}"
        time.sleep(0.3)


def test_a_second_pilot_queues_behind_the_first_and_leaves_the_queue_when_cancelled(
        env, capsys) -> None:
    store = Store(env.resolved_db_url())
    first = _start_pilot(_page("run_pilot"), "first", 24)
    second = _start_pilot(_page("run_pilot"), "second", 8)  # another browser session
    assert store.get_run(2).queued and store.get_run(1).status in (Status.PENDING,
                                                                   Status.RUNNING)
    _wait_status(store, 1, Status.RUNNING)
    assert store.get_run(2).queued  # the head's one CPU is the first pilot's
    worker = _owner_pid(store, 1)
    assert _progress(second.run()) == ["Pilot #2: queued (1st in line)"]
    assert _progress(first.run())[0].startswith("Pilot #1: running (")
    capsys.readouterr()
    assert main(["runs"]) == 0
    listed = capsys.readouterr().out
    assert "#2 " in listed and "queued (1st in line) workload 1 'second'" in listed, listed

    results = _page("results", run="2")
    assert any(o.startswith("#2 second - queued - ") for o in results.selectbox[0].options)
    assert any(i.value.startswith("Run #2 is queued; ") for i in results.info)
    assert _progress(results) == ["Pilot #2: queued (1st in line)"]
    results.button(key="results.cancel.2").click().run()
    assert not results.exception and not results.error, [e.value for e in results.error]
    cancelled = store.get_run(2)
    assert cancelled.status == Status.CANCELLED and not cancelled.queued
    assert [v.status for v in cancelled.variants] == [Status.CANCELLED, Status.CANCELLED]
    assert store.get_run_node(2) is None  # no worker ever picked it up
    assert all(store.get_results(v.id) == [] for v in cancelled.variants)

    done = wait_finished(store, 1)
    assert done.status == Status.DONE
    assert store.get_run(2).status == Status.CANCELLED  # the freed CPU did not start it
    # the worker process ends with its pilot: the next pilot on that node gets a fresh one,
    # not one holding the last pilot's engines (and their memory)
    deadline = time.monotonic() + 60
    while psutil.pid_exists(worker) and psutil.Process(worker).status() != "zombie":
        assert time.monotonic() < deadline, f"the worker {worker} of run 1 outlived its pilot"
        time.sleep(0.5)
    assert "Results stored as run #1." in [s.value for s in first.run().success]


def test_a_running_pilot_cancelled_from_results_stops_and_resumes_once(env) -> None:
    store = Store(env.resolved_db_url())
    _start_pilot(_page("run_pilot"), "long", 64)
    _wait_status(store, 1, Status.RUNNING)
    results = _page("results", run="1")
    assert any(i.value.startswith("Run #1 is running; ") for i in results.info)
    t0 = time.monotonic()
    results.button(key="results.cancel.1").click().run()
    took = time.monotonic() - t0
    assert not results.exception and not results.error, [e.value for e in results.error]
    run = store.get_run(1)
    assert run.status == Status.CANCELLED and run.error == "Cancelled by the user"
    # interrupted (1-2 s here), else killed after the 30 s grace (once in CI, int8 running)
    assert took < 75, f"cancelling a running pilot took {took:.0f} s"
    assert any("was cancelled" in w.value for w in results.warning)
    kept = {v.name: store.get_results(v.id) for v in run.variants if v.status == Status.DONE}

    results.button(key="results.resume.1").click().run()
    assert not results.exception and not results.error, [e.value for e in results.error]
    assert store.get_run(1).queued_at is not None
    done = wait_finished(store, 1)
    assert done.status == Status.DONE
    for v in done.variants:
        indices = [r.request_index for r in store.get_results(v.id)]
        assert sorted(indices) == [0, 1, 2], (v.name, indices)  # each result once
        if v.name in kept:
            assert store.get_results(v.id) == kept[v.name]  # not run again
