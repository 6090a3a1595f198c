"""The storage contract on a real SQLite file: round trips, atomicity, WAL, clear errors."""
from __future__ import annotations

import sqlite3

import pytest

from engine.domain import LogRequest, ParsedLog, RequestResult, RowIssue
from engine.errors import StorageError
from engine.store import Store


def _parsed(n: int = 3) -> ParsedLog:
    reqs = tuple(LogRequest(line=i + 2, messages=({"role": "user", "content": f"q{i} ünï"},),
                            reference=f"a{i}", metadata={"k": i}) for i in range(n))
    return ParsedLog("prompt_jsonl", reqs, (RowIssue(1, "prompt", "missing"),), n + 1)


def _result(i: int, **kw) -> RequestResult:
    base = dict(request_index=i, output_text=f"out{i}", prompt_tokens_logged=None,
                prompt_tokens_original=10, prompt_tokens_sent=10, output_tokens=5,
                ttft_s=0.1, latency_s=0.5)
    return RequestResult(**{**base, **kw})


def test_workload_round_trip_keeps_raw_bytes_and_requests(store: Store) -> None:
    raw = b"\xef\xbb\xbfprompt\r\n\"multi\r\nline\"\r\n"
    w = store.add_workload("w", "w.csv", raw, _parsed())
    assert store.get_raw_upload(w.id) == raw
    assert (w.n_requests, w.n_issues, w.format) == (3, 1, "prompt_jsonl")
    assert store.get_workload(w.id).issues == (RowIssue(1, "prompt", "missing"),)
    reqs = store.get_requests(w.id)
    assert [r.request.line for r in reqs] == [2, 3, 4]
    assert reqs[1].request.messages[0]["content"] == "q1 ünï"
    assert reqs[2].request.metadata == {"k": 2}
    assert len(store.get_requests(w.id, limit=2)) == 2


def test_run_variants_results_round_trip(store: Store) -> None:
    w = store.add_workload("w", "w.jsonl", b"x", _parsed(2))
    run = store.create_run(w.id, "p", {"workload_id": w.id},
                           [{"name": "baseline"}, {"name": "int8"}])
    assert [v.name for v in run.variants] == ["baseline", "int8"]
    assert all(v.status == "pending" for v in run.variants)
    base, var = run.variants
    store.finish_variant(base.id, [_result(0), _result(1)],
                         {"load_s": 1.0, "weight_bytes": 100, "throughput_tok_s": 2.5,
                          "wall_s": 4.0, "device": "cpu"}, {})
    store.set_variant_status(var.id, "failed", "no GPU")
    store.set_run_status(run.id, "done")
    got = store.get_run(run.id)
    assert got.status == "done" and got.finished_at is not None
    assert got.variants[0].status == "ok" and got.variants[0].weight_bytes == 100
    assert got.variants[1].status == "failed" and got.variants[1].error == "no GPU"
    assert store.get_results(base.id) == [_result(0), _result(1)]
    frame = store.results_frame(run.id)
    assert list(frame.variant) == ["baseline", "baseline"]
    assert [r.id for r in store.list_runs()] == [run.id]


def test_failed_write_is_rolled_back_whole(store: Store) -> None:
    w = store.add_workload("w", "w.jsonl", b"x", _parsed(2))
    run = store.create_run(w.id, "p", {}, [{"name": "baseline"}])
    bad = _result(1, output_text=None)  # NOT NULL column: the second row fails
    with pytest.raises(StorageError, match="nothing was written"):
        store.finish_variant(run.variants[0].id, [_result(0), bad], {"wall_s": 1.0}, {})
    assert store.get_results(run.variants[0].id) == []
    assert store.get_run(run.id).variants[0].status == "pending"


def test_sqlite_is_in_wal_mode_and_readable_while_writing(store: Store, settings) -> None:
    path = settings.resolved_db_url().removeprefix("sqlite:///")
    w = store.add_workload("w", "w.jsonl", b"x", _parsed(1))
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.execute("BEGIN IMMEDIATE")  # a writer holds the lock...
    conn.execute("UPDATE workloads SET name='x'")
    assert store.get_workload(w.id).name == "w"  # ...and a reader still reads
    conn.rollback()


def test_unknown_ids_and_bad_urls_say_how_to_fix(store: Store) -> None:
    with pytest.raises(StorageError, match="No run with id 42"):
        store.get_run(42)
    with pytest.raises(StorageError, match="ROILAB_DB_URL"):
        Store("nosuchdialect://x")
