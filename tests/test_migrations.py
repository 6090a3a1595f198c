"""Schema migrations (engine.store.migrate) on stores that OLD roilab code made.

tests/data/stores/ holds SQLite stores made by the store code of earlier commits (README.md
there says which and how) and the DDL an old ``create_all`` sent to PostgreSQL. Every test
works on a copy; the committed files are never opened in place.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import sqlite as sqlite_dialect

from engine.cli import db as db_cli
from engine.core.errors import StorageError
from engine.store import migrate
from engine.store.base import Base
from engine.store.store import Store

STORES = Path(__file__).parent / "data" / "stores"
REPO = Path(__file__).resolve().parents[1]
# commit -> (had hardware and load-test tables, had the uploads table)
OLD = {"dce1028": (False, False), "5860b82": (True, False), "966cc42": (True, False)}
RAW = b'{"messages": [{"role": "user", "content": "question 0"}]}\n' * 3  # make_store.py's


def _copy(tmp_path: Path, commit: str, name: str | None = None) -> str:
    target = tmp_path / f"{name or commit}.db"
    shutil.copyfile(STORES / f"{commit}.db", target)
    return f"sqlite:///{target}"


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _assert_rows(store: Store, had_extras: bool, device: str | None = "cpu") -> None:
    """Everything make_store.py stored, read back through the store's public methods."""
    [w] = store.list_workloads()
    assert (w.name, w.filename, w.format, w.n_requests) == ("support log ü", "support.jsonl",
                                                            "chat_jsonl", 3)
    assert [(i.line, i.field) for i in w.issues] == [(4, "messages")]
    assert store.get_raw_upload(w.id) == RAW  # from workloads.raw: no uploads row for it
    reqs = store.get_requests(w.id)
    assert [r.request.messages[0]["content"] for r in reqs] == [
        f"question {i} ünï" for i in range(3)]
    assert [(r.request.reference, r.request.logged_output, r.request.logged_prompt_tokens,
             r.request.request_id, r.request.metadata) for r in reqs][2] == (
        "answer 2", "logged 2", 12, "req-2", {"team": "support", "i": 2})
    [run] = store.list_runs()
    assert (run.name, run.status, run.spec) == ("pilot ✓", "done", {"max_new_tokens": 8})
    assert [v.name for v in run.variants] == ["baseline", "int8"]
    for v in run.variants:
        assert v.status in ("ok", "done") and v.technique_report == {"technique": v.name}
        assert (v.weight_bytes, v.peak_mem_bytes, v.device) == (2_000_000_000,
                                                                2_000_000_001, device)
        results = store.get_results(v.id)
        assert [r.output_text for r in results] == [f"out {i} ✓" for i in range(3)]
        assert results[1].ref_exact == (1.0 if v.name == "int8" else None)
        assert results[2].latency_s == pytest.approx(0.3)
    if had_extras:
        assert store.get_hardware("my-a10g").price_per_hour == 0.6
        [load_run] = store.list_load_runs()
        samples = store.get_load_samples(load_run.id)
        assert load_run.n_samples == 2 and samples[1].chunk_times_s == pytest.approx((0.12, 0.15))
    else:
        assert store.list_hardware() == [] and store.list_load_runs() == []


def _schema_diff(engine: sa.Engine) -> list:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"version_table": migrate.VERSION_TABLE,
                                                     "compare_type": True})
        return compare_metadata(ctx, Base.metadata)


def _affinity(type_: sa.types.TypeEngine) -> str:
    """SQLite's type affinity for a declared type (the rules of sqlite.org/datatype3)."""
    name = str(type_.compile(dialect=sqlite_dialect.dialect())).upper()
    for marker, affinity in (("INT", "INTEGER"), ("CHAR", "TEXT"), ("CLOB", "TEXT"),
                             ("TEXT", "TEXT"), ("BLOB", "BLOB")):
        if marker in name:
            return affinity
    return "REAL" if any(m in name for m in ("REAL", "FLOA", "DOUB")) else "NUMERIC"


# ---- the revisions -------------------------------------------------------------------------

def test_the_code_lists_the_revisions_the_script_directory_has() -> None:
    from alembic.script import ScriptDirectory

    scripts = ScriptDirectory(str(migrate.SCRIPTS))
    assert tuple(s.revision for s in reversed(list(scripts.walk_revisions()))) == \
        migrate.REVISIONS
    assert migrate.head_revision() == migrate.HEAD == "0011"


# ---- SQLite stores made by old code ---------------------------------------------------------

@pytest.mark.parametrize("commit", OLD)
def test_old_sqlite_store_is_upgraded_on_open_and_keeps_every_row(commit, tmp_path) -> None:
    committed = _sha(STORES / f"{commit}.db")
    url = _copy(tmp_path, commit)
    assert migrate.current_revision(url) is None  # made by create_all: no version table
    store = Store(url)
    assert migrate.current_revision(store.engine) == migrate.HEAD
    _assert_rows(store, had_extras=OLD[commit][0])
    # what the old schema lacked works now: the uploads table, user hardware
    w = store.add_workload("new", "new.jsonl", b"new bytes", _parsed())
    assert store.get_raw_upload(w.id) == b"new bytes"
    store.add_hardware(key="onprem", name="On-prem box", kind="gpu", memory_gb=80,
                       price_per_hour=1.0, price_source="amortised", price_date="2026-11")
    assert store.get_hardware("onprem").memory_gb == 80
    store.engine.dispose()
    assert _sha(STORES / f"{commit}.db") == committed  # the committed file is untouched


@pytest.mark.parametrize("commit", OLD)
def test_upgraded_sqlite_store_has_the_tables_a_new_store_has(commit, tmp_path) -> None:
    """Tables, columns and indexes as create_all makes them now; only declared type names
    may differ, and only between names with the same SQLite affinity (revision 0002)."""
    store = Store(_copy(tmp_path, commit))
    diffs = [d[0] if isinstance(d, list) else d for d in _schema_diff(store.engine)]
    assert {d[0] for d in diffs} <= {"modify_type"}, diffs
    for _, _, table, column, _, old, new in diffs:
        assert _affinity(old) == _affinity(new), (table, column, old, new)
    store.engine.dispose()


def test_revision_0001_completes_a_table_that_lacks_a_column_or_index(tmp_path) -> None:
    """No roilab version ever added a column to an existing table, but revision 0001 adds
    one that may be NULL (and a missing index) rather than fail later with "no such column";
    one that may not be NULL is refused by name, and nothing is changed."""
    url = _copy(tmp_path, "dce1028")
    with sa.create_engine(url).begin() as conn:
        conn.exec_driver_sql("ALTER TABLE variants DROP COLUMN device")
        conn.exec_driver_sql("DROP INDEX ix_results_variant_id")
    store = Store(url)
    _assert_rows(store, had_extras=False, device=None)  # the column is back, empty
    assert "ix_results_variant_id" in {i["name"] for i in sa.inspect(store.engine)
                                       .get_indexes("results")}
    store.engine.dispose()

    url = _copy(tmp_path, "dce1028", name="no-spec")
    with sa.create_engine(url).begin() as conn:
        conn.exec_driver_sql("ALTER TABLE runs DROP COLUMN spec_json")
    with pytest.raises(StorageError, match="no column 'spec_json'"):
        Store(url)
    assert migrate.current_revision(url) is None  # rolled back: still the old store, without
    assert "hardware" not in sa.inspect(sa.create_engine(url)).get_table_names()  # the table
    # 0001 made before it reached runs: the DDL was in the transaction (BEGIN IMMEDIATE)


def _store_as_revision_left_it(tmp_path, revision: str, undo: str) -> str:
    """A copy of an old store upgraded to head, then taken back to ``revision`` as that
    revision left it (``undo``: the SQL that removes what the next revision added)."""
    url = _copy(tmp_path, "966cc42")
    Store(url).engine.dispose()
    with sa.create_engine(url).begin() as conn:
        conn.exec_driver_sql(undo)
        conn.exec_driver_sql(f"UPDATE {migrate.VERSION_TABLE} SET version_num = '{revision}'")
    assert migrate.current_revision(url) == revision
    return url


def test_revision_0004_adds_timed_passes_to_a_0003_store_and_keeps_its_rows(tmp_path) -> None:
    """A store at revision 0003 (made here as 0003 left it: no ``variant_passes`` table)
    gains the table on open; its old variants have no passes, their rows are all kept, and a
    pass can be stored against them."""
    from engine.core.domain import TimedPass

    url = _store_as_revision_left_it(tmp_path, "0003", "DROP TABLE variant_passes")
    store = Store(url)
    assert migrate.current_revision(store.engine) == migrate.HEAD
    _assert_rows(store, had_extras=True)
    [run] = store.list_runs()
    base = run.variants[0]
    assert store.get_passes(base.id) == [] and store.passes_frame(run.id).empty
    store.add_passes(base.id, [TimedPass(pass_index=0, role="baseline_end", wall_s=2.0,
                                         throughput_tok_s=10.0, output_tokens=20,
                                         peak_mem_bytes=3_000_000_000)])
    [p] = store.get_passes(base.id)
    assert (p.role, p.wall_s, p.peak_mem_bytes) == ("baseline_end", 2.0, 3_000_000_000)
    assert list(store.passes_frame(run.id).variant) == ["baseline"]
    store.engine.dispose()


def test_revision_0005_adds_workload_stats_to_a_0004_store_worked_out_once_on_read(
        tmp_path, monkeypatch) -> None:
    """A store at revision 0004 (no ``workloads.stats_json``) gains the column on open with
    every row kept; its workload's statistics are worked out from its requests on the first
    read, saved, and read back from the row after that."""
    from engine.ingest.stats import token_stats

    url = _store_as_revision_left_it(tmp_path, "0004",
                                     "ALTER TABLE workloads DROP COLUMN stats_json")
    store = Store(url)
    assert migrate.current_revision(store.engine) == migrate.HEAD
    _assert_rows(store, had_extras=True)
    [w] = store.list_workloads()
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT stats_json FROM workloads").scalar() is None
    requests = [r.request for r in store.get_requests(w.id)]
    stats = store.workload_stats(w.id, count_tokens=lambda texts: [len(t) for t in texts])
    assert {k: v for k, v in stats.items() if k not in ("histograms", "version")} == \
        token_stats(requests, count_tokens=len)
    assert sum(stats["histograms"]["tokens"]["counts"]) == 3
    monkeypatch.setattr(Store, "get_requests", lambda *a, **k: pytest.fail("requests read"))
    assert store.workload_stats(w.id) == stats  # saved: one row read
    store.engine.dispose()


def test_upgrade_is_idempotent(tmp_path) -> None:
    url = _copy(tmp_path, "5860b82")
    assert migrate.upgrade(url) == (None, migrate.HEAD)
    assert migrate.upgrade(url) == (migrate.HEAD, migrate.HEAD)
    store = Store(url)
    _assert_rows(store, had_extras=True)
    store.engine.dispose()


def test_a_fresh_store_is_stamped_at_head_and_reopening_reads_one_row(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'new' / 'roilab.db'}"
    Store(url).engine.dispose()
    assert migrate.current_revision(url) == migrate.HEAD
    statements: list[str] = []

    def record(conn, cursor, statement, *args) -> None:
        statements.append(statement)

    sa.event.listen(sa.Engine, "before_cursor_execute", record)
    try:
        store = Store(url)
    finally:
        sa.event.remove(sa.Engine, "before_cursor_execute", record)
    assert statements == [f"SELECT version_num FROM {migrate.VERSION_TABLE}"]
    assert store.list_workloads() == []
    store.engine.dispose()


def test_a_store_newer_than_the_code_is_refused_with_the_fix(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'roilab.db'}"
    Store(url).engine.dispose()
    with sa.create_engine(url).begin() as conn:
        conn.exec_driver_sql(f"UPDATE {migrate.VERSION_TABLE} SET version_num = '0099'")
    with pytest.raises(StorageError) as err:
        Store(url)
    says = str(err.value)
    assert "'0099'" in says and "Upgrade roilab" in says and "ROILAB_DB_URL" in says
    assert migrate.current_revision(url) == "0099"  # refused, not touched
    with pytest.raises(StorageError, match="Upgrade roilab"):
        migrate.upgrade(url)


def test_processes_opening_an_old_store_at_once_take_turns(tmp_path) -> None:
    """The dashboard and a pilot starting together: one upgrades, the others wait for the
    write lock, find the store at head and carry on; nothing fails, nothing is lost."""
    url = _copy(tmp_path, "5860b82")
    code = ("import sys; from engine.store.store import Store; s = Store(sys.argv[1]); "
            "print(len(s.list_runs()))")
    procs = [subprocess.Popen([sys.executable, "-c", code, url], cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(4)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, outs
    assert [o.strip() for o, _ in outs] == ["1"] * 4
    store = Store(url)
    assert migrate.current_revision(store.engine) == migrate.HEAD
    _assert_rows(store, had_extras=True)
    store.engine.dispose()


# ---- roilab db ------------------------------------------------------------------------------

def _db(argv: list[str], url: str, capsys) -> str:
    """``roilab db ...`` through argparse, the way engine/cli/main.py dispatches."""
    from engine.core.settings import Settings

    parser = argparse.ArgumentParser(prog="roilab")
    db_cli.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["db", *argv])
    assert args.func(args, Settings(db_url=url)) == 0
    return capsys.readouterr().out


def test_roilab_db_current_reads_and_upgrade_upgrades(tmp_path, capsys) -> None:
    url = _copy(tmp_path, "dce1028")
    out = _db(["current"], url, capsys)
    assert "revision none" in out and f"newest is {migrate.HEAD}" in out and "older" in out
    assert migrate.current_revision(url) is None  # `current` changed nothing
    assert f"none (empty, or made before roilab had migrations) -> {migrate.HEAD}" in \
        _db(["upgrade"], url, capsys)
    assert "already" in _db(["upgrade"], url, capsys)
    assert "up to date" in _db(["current"], url, capsys)
    missing = tmp_path / "nothing-here.db"
    assert "No results store" in _db(["current"], f"sqlite:///{missing}", capsys)
    assert not missing.exists()


def test_roilab_db_upgrade_as_a_command(tmp_path) -> None:
    """`python -m engine.cli.main db upgrade` once main.py adds the command; until then the
    same parser and handler through python -c."""
    url = _copy(tmp_path, "966cc42")
    wired = _main_has_db()
    code = ("import argparse, sys; from engine.cli import db; "
            "from engine.core.settings import get_settings; "
            "p = argparse.ArgumentParser(); db.add_parser(p.add_subparsers()); "
            "a = p.parse_args(sys.argv[1:]); sys.exit(a.func(a, get_settings()))")
    cmd = ["-m", "engine.cli.main"] if wired else ["-c", code]
    env = os.environ | {"ROILAB_DB_URL": url, "ROILAB_DATA_DIR": str(tmp_path)}
    proc = subprocess.run([sys.executable, *cmd, "db", "upgrade"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert f"Results store {url}: schema revision none" in proc.stdout
    assert f"-> {migrate.HEAD}" in proc.stdout
    assert migrate.current_revision(url) == migrate.HEAD


# ---- PostgreSQL: a store made by create_all before the column types changed -----------------

TEXT_NOW = {("workloads", "name"), ("workloads", "filename"), ("requests", "request_id"),
            ("runs", "name"), ("variants", "name"), ("variants", "device"),
            ("hardware", "name")}  # VARCHAR(n) before 5334999
BIGINT_NOW = {("variants", "weight_bytes"), ("variants", "peak_mem_bytes")}  # INTEGER before


def _old_postgres_store(url: str, tmp_path: Path) -> None:
    """The DDL 5860b82's create_all sent, and the rows its SQLite store holds."""
    pg = sa.create_engine(url)
    sqlite = sa.create_engine(_copy(tmp_path, "5860b82"))
    old = sa.MetaData()
    old.reflect(sqlite)
    ddl = "\n".join(line for line in (STORES / "5860b82_postgresql.sql").read_text()
                    .splitlines() if not line.startswith("--"))
    with pg.begin() as conn:
        for statement in filter(str.strip, ddl.split(";\n")):
            conn.exec_driver_sql(statement)
        new = sa.MetaData()
        new.reflect(conn)
        for table in new.sorted_tables:
            with sqlite.connect() as src:
                rows = [dict(r._mapping) for r in src.execute(old.tables[table.name].select())]
            if rows:
                conn.execute(table.insert(), rows)
            if "id" in table.c:  # rows came with their ids: move the sequence past them
                conn.exec_driver_sql(f"SELECT setval(pg_get_serial_sequence('{table.name}', "
                                     f"'id'), (SELECT max(id) FROM {table.name}))")
    pg.dispose()
    sqlite.dispose()


def _types(engine: sa.Engine) -> dict[tuple[str, str], sa.types.TypeEngine]:
    inspector = sa.inspect(engine)
    return {(t, c["name"]): c["type"] for t in inspector.get_table_names()
            for c in inspector.get_columns(t)}


def test_old_postgres_store_gets_text_and_bigint_and_keeps_its_rows(postgres_url,
                                                                     tmp_path) -> None:
    _old_postgres_store(postgres_url, tmp_path)
    engine = sa.create_engine(postgres_url)
    before = _types(engine)
    assert all(isinstance(before[c], sa.String) and not isinstance(before[c], sa.Text)
               for c in TEXT_NOW)
    assert all(not isinstance(before[c], sa.BigInteger) for c in BIGINT_NOW)
    assert ("uploads", "raw") not in before
    store = Store(postgres_url)
    after = _types(engine)
    assert all(isinstance(after[c], sa.Text) for c in TEXT_NOW), after
    assert all(isinstance(after[c], sa.BigInteger) for c in BIGINT_NOW), after
    assert _schema_diff(engine) == []  # exactly what create_all makes now
    _assert_rows(store, had_extras=True)
    # what the old types refused: a 16e9-byte model, an endpoint URL as device, long names
    [run] = store.list_runs()
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE variants SET weight_bytes = :b, device = :d, name = :n "
                             "WHERE id = :id"), {"b": 16 * 10**9, "d": "endpoint " + "u" * 300,
                                                 "n": "v" * 120, "id": run.variants[0].id})
    w = store.add_workload("w" * 300, "f" * 600, b"x", _parsed())
    v = store.get_run(run.id).variants[0]
    assert (v.weight_bytes, len(v.device), v.name) == (16 * 10**9, 309, "v" * 120)
    assert store.get_workload(w.id).name == "w" * 300 and store.get_raw_upload(w.id) == b"x"
    assert migrate.upgrade(postgres_url) == (migrate.HEAD, migrate.HEAD)
    store.engine.dispose()
    engine.dispose()


def test_postgres_stores_opened_at_once_upgrade_once(postgres_url, tmp_path) -> None:
    """Threads stand in for processes: each Store has its own engine and connections, and
    the advisory lock is per connection."""
    _old_postgres_store(postgres_url, tmp_path)
    errors: list[BaseException] = []
    stores: list[Store] = []

    def open_store() -> None:
        try:
            stores.append(Store(postgres_url))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=open_store) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == [] and len(stores) == 4
    _assert_rows(stores[0], had_extras=True)
    for s in stores:
        s.engine.dispose()


def test_newer_postgres_store_is_refused_without_showing_the_password(postgres_url) -> None:
    Store(postgres_url).engine.dispose()
    engine = sa.create_engine(postgres_url)
    with engine.begin() as conn:
        conn.exec_driver_sql(f"UPDATE {migrate.VERSION_TABLE} SET version_num = '0099'")
    engine.dispose()
    with pytest.raises(StorageError) as err:
        Store(postgres_url)
    password = sa.make_url(postgres_url).password
    says = str(err.value)
    assert password not in says and ":***@" in says and "Upgrade roilab" in says


def _main_has_db() -> bool:
    from engine.cli.main import build_parser

    try:
        build_parser().parse_args(["db", "current"])
    except SystemExit:
        return False
    return True


def _parsed():
    from engine.core.domain import LogRequest, ParsedLog

    req = LogRequest(line=1, messages=({"role": "user", "content": "hi"},))
    return ParsedLog("prompt_jsonl", (req,), (), 1)


def test_revision_0007_gives_stored_variants_the_time_of_one_replay(tmp_path) -> None:
    """A store an H100 pilot wrote at revision 0006 (tests/data/stores/h100-0006.db: two runs
    of README's GPU pilot line, passes of 11-15 replays) kept each variant's median pass wall,
    so its tokens/s read 11x too slow (411.7 for passes of 4,529). Upgraded, a variant's
    wall_s is its passes' median over their replays and the report's tokens/s are the
    passes' again; a pass and a result are untouched."""
    from engine.pilot.report import build_report

    committed = _sha(STORES / "h100-0006.db")
    target = tmp_path / "h100.db"
    shutil.copyfile(STORES / "h100-0006.db", target)
    url = f"sqlite:///{target}"
    assert migrate.current_revision(url) == "0006"
    store = Store(url)
    assert migrate.current_revision(store.engine) == migrate.HEAD
    for run in store.list_runs():
        report = build_report(store, run.id)
        for v, s in zip(run.variants, report.variants, strict=True):
            timed = [p for p in store.get_passes(v.id) if p.role == "timed"]
            assert {p.replays for p in timed} and min(p.replays for p in timed) > 1
            assert v.wall_s == pytest.approx(statistics.median(p.wall_s / p.replays
                                                               for p in timed))
            assert s.tokens_per_s == pytest.approx(
                statistics.median(p.throughput_tok_s for p in timed), rel=0.02)
    store.engine.dispose()
    assert _sha(STORES / "h100-0006.db") == committed  # the committed file is untouched
