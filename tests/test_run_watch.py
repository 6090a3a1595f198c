"""A running pilot as the Results page watches it (Streamlit AppTest, real SQLite): the
bar and the line under it say the same variant. Interleaved vLLM or transformers variants
are all 'running' at once, so the first running variant is not the one being measured;
the page once said "Now measuring 'baseline'" under a bar that said int8 was warming up
(seen in Chromium at 1440x900)."""
from __future__ import annotations

import time

import streamlit as st
from streamlit.testing.v1 import AppTest

from engine.core.domain import RunProgress, Status
from engine.ingest.logs import parse_log
from engine.pilot.liveness import Heartbeat
from engine.store.store import Store

RAW = b'{"prompt": "hi"}\n'


def _results(run_id: int) -> AppTest:
    at = AppTest.from_string("from app.views import results\nresults.render()",
                             default_timeout=60)
    at.query_params["run"] = str(run_id)
    return at.run()


def _captions(at: AppTest) -> list[str]:
    return [c.value.replace("\\", "") for c in at.caption]  # as read: markdown unescaped


def _said(store: Store, run_id: int, progress: RunProgress) -> None:
    """The pilot's heartbeat stores where it is, as a running pilot's does."""
    with Heartbeat(store, run_id, every_s=0.05) as beat:
        beat.record(progress)
        deadline = time.monotonic() + 10
        while store.get_run(run_id).progress != progress and time.monotonic() < deadline:
            time.sleep(0.05)


def test_the_line_under_the_bar_names_the_variant_the_pilot_is_at(settings,
                                                                    monkeypatch) -> None:
    monkeypatch.setenv("ROILAB_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("ROILAB_DB_URL", settings.resolved_db_url())
    st.cache_data.clear()
    store = Store(settings.resolved_db_url())
    w = store.add_workload("w", "w.jsonl", RAW, parse_log(RAW, "w.jsonl"))
    run = store.create_run(w.id, "interleaved", {}, [{"name": "baseline"},
                                                     {"name": "int8-weights"}])
    store.set_run_status(run.id, Status.RUNNING)
    for v in run.variants:  # interleaved rounds: both loaded and running
        store.set_variant_status(v.id, Status.RUNNING)

    at = _results(run.id)  # nothing said yet: the running variants, not one of them
    assert not at.exception
    assert "Now measuring 'baseline', 'int8-weights' in interleaved rounds." in \
        _captions(at)

    _said(store, run.id, RunProgress(0.1, "int8-weights", "warming up: round 1 (8 requests)"))
    at = _results(run.id)
    assert [p.proto.text for p in at.get("progress")] == [
        f"Pilot #{run.id}: running (0 of 2 variants done; int8-weights: warming up: round 1 "
        "(8 requests))"]
    captions = _captions(at)
    assert "Now measuring 'int8-weights' (variant 2 of 2)." in captions
    assert not any("'baseline'" in c for c in captions)

    store.set_variant_status(run.variants[1].id, Status.DONE)  # one running, nothing said
    store.claim_run(run.id, 4243, "box")  # another process: the last word is cleared
    store.set_run_status(run.id, Status.RUNNING)
    at = _results(run.id)
    assert "Now measuring 'baseline' (variant 1 of 2)." in _captions(at)
