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


# --- user hardware (merged over the built-in catalog) -----------------------------------

_MY_GPU = dict(key="onprem-a100", name="A100 80 GB (on-premise)", kind="gpu", memory_gb=80,
               price_per_hour=0.95, price_source="amortised capex", price_date="2025-06",
               bandwidth_gbs=2039, bf16_tflops=312)


def test_user_hardware_add_update_delete_and_merge(store: Store) -> None:
    from engine.cost import CATALOG

    hw = store.add_hardware(**_MY_GPU)
    assert hw.user_defined and hw.price_per_hour == 0.95
    assert store.list_hardware() == [hw]
    cat = store.hardware_catalog()
    assert list(cat)[: len(CATALOG)] == list(CATALOG)  # built-ins first, in order
    assert cat["onprem-a100"] == hw and store.get_hardware("onprem-a100") == hw
    # override a built-in's price by key: a user copy, the rest of the entry kept
    a10g = store.update_hardware("nvidia-a10g", price_per_hour=0.61,
                                 price_source="1-year reserved", price_date="2025-06")
    assert (a10g.price_per_hour, a10g.memory_gb, a10g.bandwidth_gbs) == (0.61, 24.0, 600.0)
    assert store.hardware_catalog()["nvidia-a10g"].price_per_hour == 0.61
    assert CATALOG["nvidia-a10g"].price_per_hour == 1.006  # built-in untouched
    store.update_hardware("onprem-a100", price_per_hour=1.10)
    assert store.get_hardware("onprem-a100").price_per_hour == 1.10
    store.delete_hardware("nvidia-a10g")  # the built-in comes back
    assert store.get_hardware("nvidia-a10g").price_per_hour == 1.006
    store.delete_hardware("onprem-a100")
    assert store.list_hardware() == []


@pytest.mark.parametrize("field,value,match", [
    ("key", "Bad Key!", "'key'"), ("name", " ", "'name'"), ("kind", "tpu", "'kind'"),
    ("memory_gb", 0, "'memory_gb' must be > 0"), ("price_per_hour", "cheap", "'price_per_hour'"),
    ("price_source", "", "'price_source'"), ("price_date", "June 2025", "YYYY-MM"),
    ("bandwidth_gbs", -1, "'bandwidth_gbs'")])
def test_user_hardware_invalid_field_named(store: Store, field, value, match) -> None:
    from engine.errors import SpecError

    with pytest.raises(SpecError, match=match):
        store.add_hardware(**{**_MY_GPU, field: value})
    assert store.list_hardware() == []


def test_user_hardware_refusals(store: Store) -> None:
    from engine.errors import SpecError

    store.add_hardware(**_MY_GPU)
    with pytest.raises(SpecError, match="already stored"):
        store.add_hardware(**_MY_GPU)
    with pytest.raises(SpecError, match="built-in"):
        store.delete_hardware("nvidia-l4")
    with pytest.raises(SpecError, match="add it with add_hardware"):
        store.update_hardware("nope", price_per_hour=1)
    with pytest.raises(SpecError, match="cannot change"):
        store.update_hardware("onprem-a100", key="other")
    with pytest.raises(SpecError, match="onprem-a100"):  # the known keys are listed
        store.get_hardware("nope")


def test_hardware_table_added_to_an_existing_database(tmp_path) -> None:
    path = tmp_path / "old.db"
    Store(f"sqlite:///{path}").add_workload("w", "w.jsonl", b"x", _parsed(1))
    con = sqlite3.connect(path)
    con.execute("DROP TABLE hardware")  # what a database from before the table looks like
    con.commit()
    con.close()
    store = Store(f"sqlite:///{path}")  # create_all adds the missing table only
    assert [w.name for w in store.list_workloads()] == ["w"]
    store.add_hardware(**_MY_GPU)
    assert store.get_hardware("onprem-a100").price_per_hour == 0.95
