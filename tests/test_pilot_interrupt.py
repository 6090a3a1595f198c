"""Issue 13, item 2 (the part done so far): a real `roilab pilot` subprocess stopped with
SIGTERM or Ctrl+C (SIGINT) mid-variant prints one line, no traceback, exits 143 / 130, and
leaves the run stored as interrupted, not "running" for ever, nor "failed".

The pilot is ``random:tiny-llama`` on the CPU with the transformers backend over a real
SQLite file (tests/test_pilot_outcome.py), given enough tokens that a variant is still
running when the signal comes.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from engine.cli import INTERRUPTED_EXIT, main
from engine.settings import REPO_ROOT
from engine.store import Store

TINY = "random:tiny-llama"
pytestmark = pytest.mark.slow  # a real pilot in a subprocess (seconds)


@pytest.fixture
def pilot_cmd(model_settings, monkeypatch, tmp_path):
    """`python -m engine.cli pilot --spec ...` over a fresh SQLite file with one workload."""
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
        "generation": {"max_new_tokens": 512, "batch_size": 1}}))
    return [sys.executable, "-m", "engine.cli", "pilot", "--workload", "1", "--spec", str(spec)]


def _wait_for_running_variant(store: Store, proc: subprocess.Popen, timeout: float = 180):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the pilot ended before it was stopped: {proc.communicate()}")
        runs = store.list_runs()
        if runs and any(v.status == "running" for v in runs[0].variants):
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
