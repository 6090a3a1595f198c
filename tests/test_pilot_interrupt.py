"""Issue 13, item 2: a real `roilab pilot` subprocess stopped with
SIGTERM or Ctrl+C (SIGINT) mid-variant prints one line, no traceback, exits 143 / 130, and
leaves the run stored as interrupted, not "running" for ever, nor "failed".

The pilot is ``random:tiny-llama`` on the CPU with the transformers backend over a real
SQLite file (tests/test_pilot_outcome.py), given enough tokens that a variant is still
running when the signal comes (``SIGNAL_TOKENS``: seconds per variant against a 50 ms poll);
a test that stops no process mid-variant runs ``SHORT_TOKENS``.

The pilot runs ``--in-process`` here (the signal lands in the process that runs it); a pilot
run the default way, as a Ray task followed by the command, is stopped the same way in
tests/test_jobs.py.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from engine.cli.main import main
from engine.cli.pilot import INTERRUPTED_EXIT
from engine.core.settings import REPO_ROOT
from engine.store.store import Store

TINY = "random:tiny-llama"
# tiny-llama never stops early: each request generates exactly this many tokens, ~6 ms each
# at batch 1 on a quiet 2-core CPU, so a variant of 4 requests is "running" for ~4 s (its
# load, then ~3 s of generation): the window a signal must land in, polled every 50 ms.
SIGNAL_TOKENS = 128
SHORT_TOKENS = 8  # where nothing is signalled mid-variant: the run's length does not matter
pytestmark = pytest.mark.slow  # a real pilot in a subprocess (seconds)


@pytest.fixture
def pilot_cmd(model_settings, monkeypatch, tmp_path):
    """`python -m engine.cli.main pilot --spec ...` over a fresh SQLite file with one workload."""
    monkeypatch.setenv("ROILAB_DATA_DIR", str(model_settings.data_dir))
    monkeypatch.setenv("ROILAB_DB_URL", model_settings.resolved_db_url())
    log = tmp_path / "log.jsonl"
    log.write_text("".join(json.dumps({"prompt": f"Count to {n}, slowly."}) + "\n"
                           for n in range(4)))
    assert main(["ingest", str(log)]) == 0
    spec = tmp_path / "pilot.json"
    spec.write_text(json.dumps({
        "workload_id": 1, "max_requests": 4,
        "variants": [{"name": n, "model": TINY} for n in ("base", "second", "third")],
        "generation": {"max_new_tokens": SIGNAL_TOKENS, "batch_size": 1}}))
    return [sys.executable, "-m", "engine.cli.main", "pilot", "--in-process", "--workload", "1",
            "--spec", str(spec)]


def _with_tokens(pilot_cmd: list[str], tokens: int) -> list[str]:
    """The same pilot, each request generating ``tokens`` tokens (its spec file rewritten)."""
    spec = json.loads(open(pilot_cmd[-1]).read())
    spec["generation"]["max_new_tokens"] = tokens
    with open(pilot_cmd[-1], "w") as f:
        f.write(json.dumps(spec))
    return pilot_cmd


def _wait_for_running_variant(store: Store, proc: subprocess.Popen, timeout: float = 180,
                              first_ok: bool = False):
    """Until a variant is running (with ``first_ok``: the second, the baseline being ok)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the pilot ended before it was stopped: {proc.communicate()}")
        runs = store.list_runs()
        status = [v.status for v in runs[0].variants] if runs else []
        if (status[:2] == ["done", "running"]) if first_ok else "running" in status:
            return
        time.sleep(0.05)
    raise AssertionError("no variant started running in time")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signalled_pilot_says_one_line_and_is_stored_interrupted(
        sig, pilot_cmd, model_settings) -> None:
    store = Store(model_settings.resolved_db_url())
    proc = subprocess.Popen(pilot_cmd, cwd=REPO_ROOT, env=os.environ.copy(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_running_variant(store, proc)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == INTERRUPTED_EXIT[sig.name] == 128 + sig.value
    assert "Traceback" not in err and "Traceback" not in out
    lines = [ln for ln in err.replace("\r", "\n").splitlines() if ln.startswith("interrupted")]
    assert lines == [f"interrupted: run 1 stopped by {sig.name}; it is stored as interrupted, "
                     "finished variants keep their results"]
    run = store.get_run(1)
    assert run.status == "interrupted" and f"stopped by {sig.name}" in run.error
    assert run.finished_at is not None
    assert "running" not in [v.status for v in run.variants]
    assert "pending" not in [v.status for v in run.variants]
    stopped = [v for v in run.variants if v.status == "failed"]
    assert stopped and all("Interrupted" in v.error for v in stopped)


def _results_once_each(store: Store, run_id: int) -> dict[str, list[int]]:
    """Each variant's stored request indices; the run's every variant must be ok."""
    run = store.get_run(run_id)
    assert run.status == "done", run.error
    return {v.name: [r.request_index for r in store.get_results(v.id)] for v in run.variants}


def _stop_mid_pilot(cmd, store: Store, sig) -> subprocess.Popen:
    """Start the pilot, signal it once the baseline is ok and the second variant running."""
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=os.environ.copy(), text=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_for_running_variant(store, proc, first_ok=True)
        proc.send_signal(sig)
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc


def test_sigkill_is_detected_then_resume_keeps_each_result_exactly_once(
        pilot_cmd, model_settings, capsys) -> None:
    """SIGKILL leaves the process no chance to say anything: the run's stored owner (pid,
    host, heartbeat) shows its process is gone, so the next reader marks it interrupted and
    `roilab resume` finishes it at once, with every result stored exactly once."""
    store = Store(model_settings.resolved_db_url())
    proc = _stop_mid_pilot(pilot_cmd, store, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL
    killed = store.get_run(1)
    assert killed.status == "running"  # nothing could say otherwise...
    [owner] = store.active_run_owners()
    assert owner.pid == proc.pid  # ...but the run names the process that ran it
    assert [v.status for v in killed.variants][:2] == ["done", "running"]
    kept = {v.name: store.get_results(v.id) for v in killed.variants if v.status == "done"}
    assert list(kept) == ["base"] and len(kept["base"]) == 4
    assert main(["runs"]) == 0  # any reader finds the process gone
    out = capsys.readouterr().out
    assert "#1" in out and "interrupted" in out
    detected = store.get_run(1)
    assert detected.status == "interrupted"
    assert f"process {proc.pid}" in detected.error and "roilab resume 1" in detected.error
    assert main(["resume", "1", "--in-process"]) == 0
    indices = _results_once_each(store, 1)
    assert list(indices) == ["base", "second", "third"]
    assert all(ix == list(range(4)) for ix in indices.values()), indices
    for v in store.get_run(1).variants:  # the finished ones are the very rows stored before
        if v.name in kept:
            assert store.get_results(v.id) == kept[v.name]


def test_a_live_run_is_neither_resumed_nor_cancelled_from_elsewhere(
        pilot_cmd, model_settings, capsys) -> None:
    """While its process runs, resume and cancel say where it runs and how to stop it."""
    store = Store(model_settings.resolved_db_url())
    proc = subprocess.Popen(pilot_cmd, cwd=REPO_ROOT, env=os.environ.copy(), text=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_for_running_variant(store, proc)
        capsys.readouterr()
        assert main(["resume", "1", "--in-process"]) == 2
        assert f"Run 1 is running in process {proc.pid} on this machine" in \
            capsys.readouterr().err
        assert main(["cancel", "1"]) == 2
        assert "stop it with Ctrl+C there" in capsys.readouterr().err
        assert store.get_run(1).status == "running"  # neither touched it
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
    assert store.get_run(1).status == "interrupted"
    assert main(["cancel", "1"]) == 0  # a stopped run can be cancelled
    assert store.get_run(1).status == "cancelled"


def test_resume_after_sigterm_runs_only_the_unfinished_variants(
        pilot_cmd, model_settings) -> None:
    store = Store(model_settings.resolved_db_url())
    assert _stop_mid_pilot(pilot_cmd, store, signal.SIGTERM).returncode == 143
    assert store.get_run(1).status == "interrupted"
    assert main(["resume", "1", "--in-process"]) == 0
    assert all(ix == list(range(4)) for ix in _results_once_each(store, 1).values())


def test_a_finished_run_is_neither_resumed_nor_cancelled(pilot_cmd, model_settings,
                                                         capsys) -> None:
    cmd = _with_tokens(pilot_cmd, SHORT_TOKENS)  # runs to the end: no signal to wait for
    assert subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True).returncode == 0
    assert main(["resume", "1", "--in-process"]) == 2
    assert "Run 1 is done; only an interrupted, cancelled, partial, failed run can be " \
           "resumed (every variant already ran)." in capsys.readouterr().err
    assert main(["cancel", "1"]) == 2
    assert "Run 1 is done, already finished" in capsys.readouterr().err
    assert Store(model_settings.resolved_db_url()).get_run(1).status == "done"


# ---- the dashboard: the same resume and cancel, from the Results page ----------------------
def _results_page(run_id: int):
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    st.cache_data.clear()
    at = AppTest.from_string("from app.views import results\nresults.render()",
                             default_timeout=600)
    at.query_params["run"] = str(run_id)
    return at.run()


def _errors_beside_the_decision(at) -> list[str]:
    """Errors other than the business case's answer (random weights: nothing recommended)."""
    return [e.value for e in at.error if "No variant is recommended" not in e.value]


def test_the_results_page_resumes_a_killed_pilot(pilot_cmd, model_settings,
                                                 dashboard_ray_head, monkeypatch) -> None:
    """SIGKILL mid-variant; the Results page shows the run interrupted (its process is gone)
    with a Resume button, which hands only the unfinished variants to Ray: the page then
    shows the run queued or running, and once it is done, each result once."""
    from test_jobs import wait_finished

    store = Store(model_settings.resolved_db_url())
    assert _stop_mid_pilot(pilot_cmd, store, signal.SIGKILL).returncode == -signal.SIGKILL
    kept = store.get_results(store.get_run(1).variants[0].id)
    # the dashboard's Ray from here on (the pilot above ran in its own process, no cluster
    # named: a cluster would have run it as a Ray task)
    monkeypatch.setenv("ROILAB_RAY_ADDRESS", dashboard_ray_head)
    at = _results_page(1)
    assert not at.exception
    assert any("was interrupted" in w.value for w in at.warning)
    at.button(key="results.resume.1").click().run()
    assert not at.exception
    assert store.get_run(1).queued_at is not None  # handed to Ray
    assert any(re.match(r"Run #1 is (queued|running); ", i.value) for i in at.info), at.info
    assert not _errors_beside_the_decision(at)  # no "no measured baseline" while it runs
    wait_finished(store, 1)
    at.run()
    assert not at.exception and not _errors_beside_the_decision(at)
    indices = _results_once_each(store, 1)
    assert all(ix == list(range(4)) for ix in indices.values()), indices
    assert store.get_results(store.get_run(1).variants[0].id) == kept  # the baseline's rows
    assert not [b for b in at.button if b.key == "results.resume.1"]  # done: nothing to resume


def test_the_results_page_cancels_a_stopped_pilot(pilot_cmd, model_settings) -> None:
    store = Store(model_settings.resolved_db_url())
    assert _stop_mid_pilot(pilot_cmd, store, signal.SIGTERM).returncode == 143
    at = _results_page(1)
    at.button(key="results.cancel.1").click().run()
    assert not at.exception and not _errors_beside_the_decision(at)
    run = store.get_run(1)
    assert run.status == "cancelled" and run.variants[0].status == "done"
    assert any("was cancelled" in w.value for w in at.warning)
    assert [b for b in at.button if b.key == "results.resume.1"]  # and it can be resumed


def test_a_dashboard_rerun_mid_pilot_leaves_it_interrupted_not_failed(pilot_cmd, model_settings,
                                                                       tmp_path) -> None:
    """Streamlit stops a script run (a rerun, a closed tab) by raising its own
    StopException/RerunException, BaseExceptions, inside whatever the script was doing: here
    the pilot's progress callback. The run is stored interrupted (resumable), not failed."""
    from streamlit.runtime.scriptrunner_utils.exceptions import StopException

    from engine.pilot.runner import resume_pilot, run_pilot
    from engine.specs.pilot import PilotSpec

    store = Store(model_settings.resolved_db_url())
    # stopped at a progress call, not by a signal: no window to hold open, few tokens do
    spec = PilotSpec.model_validate(json.loads(open(_with_tokens(pilot_cmd,
                                                                 SHORT_TOKENS)[-1]).read()))

    def stop_in_second_variant(p) -> None:
        if p.variant_index == 1 and p.done:
            raise StopException()

    with pytest.raises(StopException):
        run_pilot(spec, store, model_settings, on_progress=stop_in_second_variant)
    run = store.get_run(1)
    assert run.status == "interrupted" and "StopException" in run.error
    assert [v.status for v in run.variants] == ["done", "failed", "failed"]
    assert resume_pilot(1, store, model_settings).status == "done"
    assert all(ix == list(range(4)) for ix in _results_once_each(store, 1).values())


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # the drop
def test_a_signal_dropped_inside_a_gc_callback_still_stops_the_pilot(capsys) -> None:
    """The CI failure this guards (exit 0 for SIGTERM): Python drops an exception raised by
    a signal handler that happens to run inside a gc callback (the pilot's GC-pause meter
    is one, in every timed pass) or a ``__del__``, and the pilot ran on to "done". The
    signal's landing spot is the injected fault; the stop must come at the pilot's next
    progress instead."""
    import gc
    import os
    from types import SimpleNamespace

    from engine.cli.pilot import _watched

    def signal_inside_a_gc_callback(phase, _info):
        if phase == "start" and not landed:
            landed.append(True)
            os.kill(os.getpid(), signal.SIGTERM)
            sum(range(1000))  # bytecode for the handler to run in: its raise is dropped

    landed: list[bool] = []
    ran_on: list[str] = []

    def pilot(on_progress):
        gc.callbacks.append(signal_inside_a_gc_callback)
        try:
            gc.collect()
        finally:
            gc.callbacks.remove(signal_inside_a_gc_callback)
        ran_on.append("after the signal")  # the drop is real: the pilot went on
        on_progress(SimpleNamespace(fraction=0.5, variant="second", message="generating"))
        ran_on.append("after its next progress")
        return None

    with pytest.raises(SystemExit) as stopped:
        _watched(1, None, pilot)
    assert landed and ran_on == ["after the signal"]
    assert stopped.value.code == INTERRUPTED_EXIT["SIGTERM"]
    assert "interrupted: run 1 stopped by SIGTERM" in capsys.readouterr().err


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # the drop
def test_a_ray_cancel_dropped_inside_a_gc_callback_still_stops_the_task() -> None:
    """The same drop in a Ray worker: ``ray.cancel`` interrupts the task through the main
    thread's SIGINT handler, which the pilot task keeps and notes (engine.pilot.stops);
    CI saw a pilot cancelled from Results run on to "done". The progress callback the task
    gives run_pilot raises it again."""
    import _thread
    import gc
    from types import SimpleNamespace

    from engine.pilot.stops import stops_kept

    def cancel_inside_a_gc_callback(phase, _info):
        if phase == "start" and not landed:
            landed.append(True)
            _thread.interrupt_main()  # what Ray's cancel does
            sum(range(1000))  # bytecode for the handler to run in: its raise is dropped

    landed: list[bool] = []
    ran_on: list[str] = []
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        with stops_kept((signal.SIGINT,)) as stops:
            gc.callbacks.append(cancel_inside_a_gc_callback)
            try:
                gc.collect()
            finally:
                gc.callbacks.remove(cancel_inside_a_gc_callback)
            ran_on.append("after the cancel")
            stops.again(SimpleNamespace(fraction=0.5, variant="int8", message="generating"))
            ran_on.append("after its next progress")
    assert landed and ran_on == ["after the cancel"]
    assert signal.getsignal(signal.SIGINT) is before  # Ray's handler is put back
