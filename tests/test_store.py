"""The storage contract, run against every storage mode: a real SQLite file and a real
PostgreSQL server the tests start (tests/pg_server.py). Round trips, atomicity, clear errors;
SQLite's WAL mode has its own test."""
from __future__ import annotations

import math
import sqlite3
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from engine.core.domain import (
    LogRequest,
    ParsedLog,
    RequestResult,
    RowIssue,
    Status,
    VariantMeasurements,
)
from engine.core.errors import StorageError
from engine.store.store import Store

BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(params=BACKENDS)
def store_url(request, tmp_path) -> str:
    """A fresh, empty store URL of each backend (a new file / a new database)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'data' / 'roilab.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def store(store_url: str):
    s = Store(store_url)
    yield s
    s.engine.dispose()  # release server connections before the database is dropped


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


def test_workload_stats_and_bounded_request_reads(store: Store) -> None:
    """Prompt statistics stored at ingest read back as worked out; requests read by
    position; a run's result positions (issue 12 item 7: pages read bounded data)."""
    from engine.ingest.stats import workload_stats

    parsed = _parsed(5)
    w = store.add_workload("w", "w.jsonl", b"x", parsed,
                           count_tokens=lambda texts: [2 * len(t) for t in texts])
    expected = workload_stats(parsed.requests, lambda texts: [2 * len(t) for t in texts])
    assert store.workload_stats(w.id) == expected
    assert store.workload_stats(w.id)["prompt_tokens"]["max"] == 2 * len("q4 ünï")
    assert [r.index for r in store.get_requests(w.id, indices=[4, 0, 2])] == [0, 2, 4]
    assert store.get_requests(w.id, indices=[1])[0].request == parsed.requests[1]
    run = store.create_run(w.id, "p", {}, [{"name": "baseline"}])
    store.finish_variant(run.variants[0].id, [_result(3), _result(1)],
                         VariantMeasurements(wall_s=1.0))
    assert store.result_indices(run.id) == [1, 3]


def test_run_variants_results_round_trip(store: Store) -> None:
    w = store.add_workload("w", "w.jsonl", b"x", _parsed(2))
    run = store.create_run(w.id, "p", {"workload_id": w.id},
                           [{"name": "baseline"}, {"name": "int8"}])
    assert [v.name for v in run.variants] == ["baseline", "int8"]
    assert all(v.status == "pending" for v in run.variants)
    base, var = run.variants
    store.finish_variant(base.id, [_result(0), _result(1)],
                         VariantMeasurements(load_s=1.0, weight_bytes=100, throughput_tok_s=2.5,
                                             wall_s=4.0, device="cpu"))
    store.set_variant_status(var.id, "failed", "no GPU")
    store.set_run_status(run.id, "partial", "1 of 2 variants failed")  # runner.pilot_outcome
    got = store.get_run(run.id)
    assert got.status == "partial" and got.finished_at is not None
    assert got.error == "1 of 2 variants failed"
    assert got.variants[0].status == "done" and got.variants[0].weight_bytes == 100
    assert got.variants[1].status == "failed" and got.variants[1].error == "no GPU"
    assert store.get_results(base.id) == [_result(0), _result(1)]
    frame = store.results_frame(run.id)
    assert list(frame.variant) == ["baseline", "baseline"]
    assert [r.id for r in store.list_runs()] == [run.id]


def test_a_misspelt_measurement_fails_where_it_is_built(store: Store) -> None:
    """Measurements are typed: a wrong name is a TypeError, never a NULL in the store."""
    with pytest.raises(TypeError, match="wal_s"):
        VariantMeasurements(wal_s=1.0)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        VariantMeasurements(1.0)  # type: ignore[misc]  # keyword-only: no silent reordering
    w = store.add_workload("w", "w.jsonl", b"x", _parsed(1))
    run = store.create_run(w.id, "p", {}, [{"name": "baseline"}])
    with pytest.raises(TypeError, match="VariantMeasurements"):  # the old dict form
        store.finish_variant(run.variants[0].id, [_result(0)], {"wall_s": 1.0})  # type: ignore[arg-type]
    assert store.get_run(run.id).variants[0].status == "pending"


def test_one_status_vocabulary_and_old_ok_reads_back_as_done(store: Store) -> None:
    """Runs and variants share Status; a variant stored as "ok" (before there was one
    vocabulary) reads back as done, and writing "ok" stores done."""
    w = store.add_workload("w", "w.jsonl", b"x", _parsed(1))
    run = store.create_run(w.id, "p", {}, [{"name": "baseline"}, {"name": "int8"}])
    base, int8 = run.variants
    with store.engine.begin() as conn:  # as an older roilab wrote it
        conn.execute(sa.text("UPDATE variants SET status = 'ok' WHERE id = :id"), {"id": base.id})
    store.set_variant_status(int8.id, "ok")
    store.set_run_status(run.id, Status.DONE)
    got = store.get_run(run.id)
    assert [v.status for v in got.variants] == [Status.DONE, Status.DONE] == ["done", "done"]
    assert all(type(v.status) is Status for v in got.variants) and got.status is Status.DONE
    assert got.finished_at is not None
    with store.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT status FROM variants WHERE id = :id"),
                            {"id": int8.id}).scalar_one() == "done"
    with pytest.raises(ValueError, match="'finished' is not a valid Status"):
        store.set_run_status(run.id, "finished")


def test_failed_write_is_rolled_back_whole(store: Store) -> None:
    w = store.add_workload("w", "w.jsonl", b"x", _parsed(2))
    run = store.create_run(w.id, "p", {}, [{"name": "baseline"}])
    bad = _result(1, output_text=None)  # NOT NULL column: the second row fails
    with pytest.raises(StorageError, match="nothing was written"):
        store.finish_variant(run.variants[0].id, [_result(0), bad], VariantMeasurements(wall_s=1.0))
    assert store.get_results(run.variants[0].id) == []
    assert store.get_run(run.id).variants[0].status == "pending"


def test_sqlite_is_in_wal_mode_and_readable_while_writing(settings) -> None:
    store = Store(settings.resolved_db_url())
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
    from engine.economics.hardware import CATALOG

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
    from engine.core.errors import SpecError

    with pytest.raises(SpecError, match=match):
        store.add_hardware(**{**_MY_GPU, field: value})
    assert store.list_hardware() == []


def test_user_hardware_refusals(store: Store) -> None:
    from engine.core.errors import SpecError

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


def test_hardware_table_added_to_an_existing_database(store_url: str) -> None:
    first = Store(store_url)
    first.add_workload("w", "w.jsonl", b"x", _parsed(1))
    with first.engine.begin() as conn:  # what a database from before the table looks like
        conn.execute(sa.text("DROP TABLE hardware"))
        conn.execute(sa.text("DROP TABLE roilab_schema_version"))  # a store from before migrations
    first.engine.dispose()
    store = Store(store_url)  # create_all adds the missing table only
    assert [w.name for w in store.list_workloads()] == ["w"]
    store.add_hardware(**_MY_GPU)
    assert store.get_hardware("onprem-a100").price_per_hour == 0.95
    store.engine.dispose()


# --- what SQLite lets through and a server database does not --------------------------

def test_values_sqlite_never_checks_round_trip_everywhere(store: Store) -> None:
    """Long free-form strings (an endpoint URL as the device, a log's request id), byte
    counts past 2**31 (an 8B model's weights), every byte value in the upload, big text."""
    raw = bytes(range(256)) * 4
    long_id = "req-" + "x" * 600
    parsed = ParsedLog("chat_jsonl", (LogRequest(line=1, messages=(
        {"role": "user", "content": "é" * 200_000},), request_id=long_id),), (), 1)
    w = store.add_workload("n" * 300, "f" * 600 + ".jsonl", raw, parsed)
    assert store.get_raw_upload(w.id) == raw
    assert (w.name, w.filename) == ("n" * 300, "f" * 600 + ".jsonl")
    req = store.get_requests(w.id)[0].request
    assert req.request_id == long_id and len(req.messages[0]["content"]) == 200_000
    run = store.create_run(w.id, "r" * 300, {"cost": {"requests_per_month": 3 * 10**9}},
                           [{"name": "baseline"}])
    device = "endpoint https://" + "llm-gateway.example.com/" * 4 + "v1"
    store.finish_variant(run.variants[0].id, [_result(0, ttft_s=1e-9, latency_s=123456.789)],
                         VariantMeasurements(
                             weight_bytes=16_060_522_496, peak_mem_bytes=2**40 + 1, wall_s=1.25,
                             device=device, load_s=0.1, technique_report={
                                 "layers": 2**33, "nested": {"ratio": 0.5, "names": ["a", "ü"]}}))
    got = store.get_run(run.id)
    v = got.variants[0]
    assert (v.weight_bytes, v.peak_mem_bytes, v.device) == (16_060_522_496, 2**40 + 1, device)
    assert v.technique_report == {"layers": 2**33, "nested": {"ratio": 0.5, "names": ["a", "ü"]}}
    assert got.name == "r" * 300 and got.spec["cost"]["requests_per_month"] == 3 * 10**9
    assert store.get_results(v.id) == [_result(0, ttft_s=1e-9, latency_s=123456.789)]


def test_text_with_nul_characters_is_stored_the_same_everywhere(store: Store) -> None:
    """PostgreSQL text can't hold U+0000 (a model can emit it, a log can carry it): it is
    stored as U+FFFD on every backend, so both give the same answer and no write fails."""
    parsed = ParsedLog("prompt_jsonl", (LogRequest(line=1, messages=(
        {"role": "user", "content": "a\x00b"},), reference="r\x00"),), (), 1)
    w = store.add_workload("w\x00", "w.jsonl", b"a\x00b", parsed)
    assert store.get_raw_upload(w.id) == b"a\x00b"  # bytes are kept as they are
    req = store.get_requests(w.id)[0].request
    assert req.messages[0]["content"] == "a\x00b"  # inside JSON it is escaped, so kept
    assert req.reference == "r\ufffd" and store.get_workload(w.id).name == "w\ufffd"
    run = store.create_run(w.id, "p", {}, [{"name": "baseline"}])
    store.finish_variant(run.variants[0].id, [_result(0, output_text="o\x00k")],
                         VariantMeasurements())
    assert store.get_results(run.variants[0].id)[0].output_text == "o\ufffdk"


def test_lone_surrogates_are_stored_as_replacement_everywhere(store: Store) -> None:
    """A file name or --name with bytes that are not UTF-8 reaches Python with lone
    surrogates, which no UTF-8 database can hold: stored as U+FFFD, and no write fails."""
    parsed = ParsedLog("prompt_jsonl", (LogRequest(line=1, messages=(
        {"role": "user", "content": "q\ud800"},), reference="r\udcff", request_id="\udfff",
        logged_output="o\ud83d"),), (RowIssue(2, "k\udc80", "bad \ud800"),), 2)
    w = store.add_workload("n\udcff", "f\udce9.jsonl", b"\xff", parsed)
    assert (w.name, w.filename) == ("n\ufffd", "f\ufffd.jsonl")
    got = store.get_workload(w.id)
    assert (got.name, got.filename) == ("n\ufffd", "f\ufffd.jsonl")
    assert got.issues == (RowIssue(2, "k\udc80", "bad \ud800"),)  # JSON-escaped, kept as is
    req = store.get_requests(w.id)[0].request
    assert (req.reference, req.request_id, req.logged_output) == ("r\ufffd", "\ufffd", "o\ufffd")
    assert store.get_raw_upload(w.id) == b"\xff"


@pytest.mark.parametrize("count", [2**31, 2**63, -1, 10**5000],
                         ids=["2^31", "2^63", "-1", "10^5000"])
def test_token_count_the_column_cannot_hold_is_refused_before_writing(store: Store,
                                                                      count: int) -> None:
    parsed = ParsedLog("prompt_jsonl", (LogRequest(line=7, messages=(
        {"role": "user", "content": "q"},), logged_prompt_tokens=count),), (), 1)
    with pytest.raises(StorageError, match=r"line 7: logged token count .* outside 0\.\.2147483647"):
        store.add_workload("w", "w.jsonl", b"x", parsed)
    assert store.list_workloads() == []
    ok = ParsedLog("prompt_jsonl", (LogRequest(line=7, messages=(
        {"role": "user", "content": "q"},), logged_prompt_tokens=2**31 - 1),), (), 1)
    w = store.add_workload("w", "w.jsonl", b"x", ok)
    assert store.get_requests(w.id)[0].request.logged_prompt_tokens == 2**31 - 1


def test_upload_stored_in_the_workloads_row_by_an_older_version_is_read(store: Store) -> None:
    """Uploads live in their own table since issue 13; a workload an older version stored
    keeps its bytes in workloads.raw and is still read back."""
    from engine.store.store import WorkloadRow

    with store.engine.begin() as conn:
        old_id = conn.execute(sa.insert(WorkloadRow.__table__).values(
            name="old", filename="old.jsonl", format="prompt_jsonl", raw=b"old \xff bytes",
            sha256="0" * 64, n_requests=0, issues_json="[]",
            created_at=datetime(2025, 1, 1))).inserted_primary_key[0]
    new = store.add_workload("new", "new.jsonl", b"new \x00 bytes", _parsed(1))
    assert store.get_raw_upload(old_id) == b"old \xff bytes"
    assert store.get_raw_upload(new.id) == b"new \x00 bytes"
    assert store.add_workload("empty", "e.jsonl", b"", _parsed(1)).id > new.id
    with pytest.raises(StorageError, match="No workload with id 999"):
        store.get_raw_upload(999)


def test_many_requests_are_stored_in_order(store: Store) -> None:
    """More requests than one bulk INSERT batch: every one stored once, in order."""
    n = 12_345
    reqs = tuple(LogRequest(line=i + 1, messages=({"role": "user", "content": f"q{i}"},),
                            logged_prompt_tokens=i) for i in range(n))
    w = store.add_workload("big", "big.jsonl", b"x", ParsedLog("prompt_jsonl", reqs, (), n))
    got = store.get_requests(w.id)
    assert [s.index for s in got] == list(range(n))
    assert [s.request for s in got] == list(reqs)
    assert len({s.id for s in got}) == n


def test_listing_filters_and_ordering(store: Store) -> None:
    w1 = store.add_workload("one", "a.jsonl", b"x", _parsed(1))
    w2 = store.add_workload("two", "b.jsonl", b"y", _parsed(2))
    assert [w.name for w in store.list_workloads()] == ["two", "one"]  # newest first
    r1 = store.create_run(w1.id, "a", {}, [{"name": "baseline"}])
    r2 = store.create_run(w2.id, "b", {}, [{"name": "baseline"}, {"name": "x"}])
    r3 = store.create_run(w2.id, "c", {}, [{"name": "baseline"}])
    assert [r.id for r in store.list_runs()] == [r3.id, r2.id, r1.id]
    assert [r.id for r in store.list_runs(w2.id)] == [r3.id, r2.id]
    assert store.list_runs(w2.id + 100) == []
    assert store.get_requests(w1.id + 100) == []
    frame = store.results_frame(r2.id)  # no results yet: empty, with the columns
    assert frame.empty and {"variant", "variant_id", "latency_s"} <= set(frame.columns)


def test_status_changes_and_timestamps(store: Store) -> None:
    before = datetime.now(UTC).replace(tzinfo=None) - timedelta(seconds=5)
    w = store.add_workload("w", "w.jsonl", b"x", _parsed(1))
    assert w.created_at.tzinfo is None and before <= w.created_at  # naive UTC everywhere
    run = store.create_run(w.id, "p", {}, [{"name": "baseline"}])
    assert (run.status, run.finished_at, run.created_at.tzinfo) == ("pending", None, None)
    store.set_run_status(run.id, "running")
    store.set_variant_status(run.variants[0].id, "running")
    got = store.get_run(run.id)
    assert (got.status, got.finished_at, got.variants[0].status) == ("running", None, "running")
    store.set_run_status(run.id, "failed", "out of memory ✗")
    got = store.get_run(run.id)
    assert (got.status, got.error) == ("failed", "out of memory ✗")
    assert got.finished_at is not None and got.finished_at >= got.created_at
    assert got.finished_at - got.created_at < timedelta(minutes=1)
    with pytest.raises(StorageError, match="No variant with id 999"):
        store.set_variant_status(999, "ok")
    with pytest.raises(StorageError, match="No workload with id 999"):
        store.create_run(999, "p", {}, [{"name": "baseline"}])
    assert [r.id for r in store.list_runs()] == [run.id]  # the refused run wasn't half-made


def test_nan_inf_and_missing_measures(store: Store) -> None:
    w = store.add_workload("w", "w.jsonl", b"x", _parsed(1))
    run = store.create_run(w.id, "p", {}, [{"name": "baseline"}])
    store.finish_variant(run.variants[0].id,
                         [_result(0, ref_f1=None, base_cosine=float("nan"), compress_s=0.25)],
                         VariantMeasurements(throughput_tok_s=float("inf")))
    v = store.get_run(run.id).variants[0]
    assert v.throughput_tok_s == math.inf and v.load_s is None and v.device is None
    r = store.get_results(v.id)[0]  # NaN reads back as "no value" (SQLite's way) everywhere
    assert r.ref_f1 is None and r.base_cosine is None and r.compress_s == 0.25


def test_two_stores_on_one_url_share_results(store_url: str) -> None:
    """What a shared store is for: a second process (dashboard, another pilot) sees writes."""
    a, b = Store(store_url), Store(store_url)  # the second create_all finds the tables
    w = a.add_workload("w", "w.jsonl", b"x", _parsed(1))
    run = a.create_run(w.id, "p", {}, [{"name": "baseline"}])
    a.finish_variant(run.variants[0].id, [_result(0)], VariantMeasurements(wall_s=1.0))
    assert b.get_results(run.variants[0].id) == [_result(0)]
    b.add_hardware(**_MY_GPU)
    assert a.get_hardware("onprem-a100").price_per_hour == 0.95
    a.engine.dispose()
    b.engine.dispose()


def test_unreachable_server_says_how_to_fix_without_the_password(postgres_server) -> None:
    url = postgres_server.url("roilab_nosuchdb")
    with pytest.raises(StorageError, match="ROILAB_DB_URL") as err:
        Store(url)
    assert "roilab-test-pw" not in str(err.value) and "nosuchdb" in str(err.value)
    bad_port = url.replace(f":{postgres_server.port}/", ":1/")
    with pytest.raises(StorageError, match="ROILAB_DB_URL"):
        Store(bad_port)
    with pytest.raises(StorageError, match="ROILAB_DB_URL") as err:
        Store("postgresql+nosuchdriver://u:secret@127.0.0.1/db")
    assert "secret" not in str(err.value)


def test_plain_postgresql_url_uses_psycopg(postgres_server) -> None:
    """`postgresql://` would mean psycopg2 to SQLAlchemy; we ship psycopg 3."""
    url = postgres_server.create_database().replace("postgresql+psycopg://", "postgresql://")
    store = Store(url)
    assert store.engine.dialect.driver == "psycopg" and store.list_workloads() == []
    store.engine.dispose()
    postgres_server.drop_database(url)


def test_report_from_postgres_matches_sqlite(postgres_url: str, settings) -> None:
    """A pilot's results (built from domain objects; no model run) written to PostgreSQL
    give the same report, via engine.pilot.report.build_report, as the SQLite file does."""
    from engine.pilot.report import build_report

    reports = []
    for url in (settings.resolved_db_url(), postgres_url):
        s = Store(url)
        w = s.add_workload("support", "chat.jsonl", b"{}", _parsed(3))
        run = s.create_run(w.id, "pilot", {"cost": {"hardware": "nvidia-a10g",
                                                    "requests_per_month": 2_000_000}},
                           [{"name": "baseline"}, {"name": "int8", "techniques": [
                               {"kind": "quantize_weights", "bits": 8}]}])
        base, int8 = run.variants
        s.finish_variant(base.id, [_result(i, output_tokens=20, latency_s=0.5 + i / 10,
                                           ref_f1=1.0) for i in range(3)],
                         VariantMeasurements(wall_s=3.0, weight_bytes=16_060_522_496,
                                             device="cuda"))
        s.finish_variant(int8.id, [_result(i, output_tokens=18, latency_s=0.4 + i / 10,
                                           ref_f1=0.9, base_cosine=0.97) for i in range(3)],
                         VariantMeasurements(wall_s=2.0, weight_bytes=8_030_261_248,
                                             device="cuda",
                                             technique_report={"layers_quantized": 224}))
        s.set_run_status(run.id, "done")
        reports.append(build_report(s, run.id))
        s.engine.dispose()
    sqlite_rep, other = reports
    assert other.frame().equals(sqlite_rep.frame())
    assert other.results.drop(columns="variant_id").equals(
        sqlite_rep.results.drop(columns="variant_id"))
    best = other.best_saving()
    assert best is not None and best.name == "int8" and best.weight_bytes == 8_030_261_248
    assert other.baseline.tokens_per_s == pytest.approx(60 / 3.0)


def test_missing_postgres_binaries_say_to_run_make_system_deps(monkeypatch) -> None:
    import pg_server

    monkeypatch.setattr(pg_server, "find_bindir", lambda: None)
    with pytest.raises(RuntimeError, match="make system-deps"):
        pg_server.PostgresServer.start()
