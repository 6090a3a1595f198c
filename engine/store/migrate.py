"""Schema migrations of the results store: Alembic, configured here (no alembic.ini).

Every store records its schema revision in the ``roilab_schema_version`` table (Alembic's
version table under roilab's own name, so a database shared with another Alembic project
keeps both). ``Store()`` calls ``upgrade`` on open:

- at ``HEAD`` already: one read of that table and nothing else (no Alembic import);
- otherwise it takes the database's write lock (SQLite: ``BEGIN IMMEDIATE``; PostgreSQL: a
  transaction-scoped advisory lock), so two processes opening at once (the dashboard and a
  pilot) take turns, reads the revision again under the lock, and
  - an empty database: ``create_all`` and stamp ``HEAD``;
  - tables but no version table (made by roilab before migrations) or an older revision:
    runs ``migrations/versions/`` from there up to ``HEAD``;
  - a revision this code does not know (a newer roilab upgraded the store): StorageError
    naming the fix, and nothing is touched.

An upgrade is one transaction: SQLite and PostgreSQL both roll DDL back, so a failure leaves
the store as it was. ``roilab db upgrade`` / ``roilab db current`` call the same functions.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import (
    Column,
    Connection,
    Engine,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    create_engine,
    event,
    inspect,
)
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.pool import NullPool

from engine.core.errors import StorageError
from engine.core.redact import scrub
from engine.store import hardware, load, tables  # noqa: F401  (their tables join Base)
from engine.store.base import Base
from engine.store.connect import first_line, open_engine

REVISIONS = ("0001", "0002", "0003", "0004", "0005", "0006", "0007", "0008", "0009", "0010",
             "0011")  # migrations/versions/, oldest first (a test checks they agree)
HEAD = REVISIONS[-1]
VERSION_TABLE = "roilab_schema_version"
SCRIPTS = Path(__file__).with_name("migrations")
_PG_LOCK_KEY = 0x726F696C6162  # "roilab" in ASCII: the advisory lock schema changes hold

# Alembic's own version table, made here so a fresh store is stamped without loading Alembic
_VERSION = Table(VERSION_TABLE, MetaData(), Column("version_num", String(32), nullable=False),
                 PrimaryKeyConstraint("version_num", name=f"{VERSION_TABLE}_pkc"))


def head_revision() -> str:
    """The newest revision in ``migrations/versions`` (what ``upgrade`` brings a store to)."""
    return _scripts().get_current_head()


def current_revision(target: Engine | str) -> str | None:
    """The store's revision; None for an empty database or one made before migrations.
    Reads only: never creates or changes anything."""
    engine, owned = _engine(target)
    try:
        with engine.connect() as conn:
            return _version(conn)
    except SQLAlchemyError as exc:
        raise _cannot_open(engine, exc) from None
    finally:
        if owned:
            engine.dispose()


def upgrade(target: Engine | str) -> tuple[str | None, str]:
    """Bring the store at ``target`` (an engine or a URL) to ``HEAD``; returns the revision
    it had (None: none recorded) and the one it has now. StorageError, with the fix and the
    URL's password masked, for a store newer than this code or a database that fails."""
    engine, owned = _engine(target)
    try:
        try:
            with engine.connect() as conn:  # the fast path: one read
                found = _fast_version(conn)
        except SQLAlchemyError as exc:
            raise _cannot_open(engine, exc) from None
        if found == HEAD:
            return HEAD, HEAD
        if found is not None:
            _refuse_unknown(engine, found)
        try:
            return _upgrade_locked(engine)
        except SQLAlchemyError as exc:
            raise StorageError(
                f"Cannot upgrade the results store {_shown(engine)} to schema revision "
                f"{HEAD}: {_scrub(engine, first_line(exc))}. Nothing was changed (the upgrade "
                "is one transaction). Run `roilab db upgrade` to retry; if it fails again, "
                "check that this database user may alter the tables.") from None
    finally:
        if owned:
            engine.dispose()


def _upgrade_locked(engine: Engine) -> tuple[str | None, str]:
    with _write_lock(engine) as conn:
        before = _version(conn)  # again: another process may have upgraded meanwhile
        if before == HEAD:
            return HEAD, HEAD
        if before is not None:
            _refuse_unknown(engine, before)
        if before is None and not set(inspect(conn).get_table_names()) & set(Base.metadata.tables):
            Base.metadata.create_all(conn)  # an empty database: the tables as they are now
            _VERSION.create(conn)
            conn.execute(_VERSION.insert().values(version_num=HEAD))
        else:
            _run_alembic(conn)
        return before, HEAD


def _run_alembic(conn: Connection) -> None:
    from alembic import command

    command.upgrade(_config(conn), "head")


def _config(conn: Connection | None = None):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(SCRIPTS))
    cfg.attributes.update(connection=conn, version_table=VERSION_TABLE)
    return cfg


def _scripts():
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_config())


@contextmanager
def _write_lock(engine: Engine) -> Iterator[Connection]:
    """A connection in a transaction that holds the database's write lock till it ends."""
    if engine.dialect.name == "sqlite" and engine.url.database not in (None, "", ":memory:"):
        # pysqlite never begins a transaction before DDL on its own: a connection of its
        # own that says BEGIN IMMEDIATE (SQLAlchemy's recipe for transactional DDL on SQLite)
        locked = create_engine(engine.url, poolclass=NullPool)
        event.listen(locked, "connect", _sqlite_manual_transactions)
        event.listen(locked, "begin", lambda c: c.exec_driver_sql("BEGIN IMMEDIATE"))
        try:
            with locked.begin() as conn:
                yield conn
        finally:
            locked.dispose()
        return
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_PG_LOCK_KEY})")
        yield conn


def _sqlite_manual_transactions(dbapi_conn, _record) -> None:
    dbapi_conn.isolation_level = None  # the driver's own BEGIN handling off: ours is explicit
    dbapi_conn.execute("PRAGMA busy_timeout=30000")  # wait for the lock, as the store does


def _fast_version(conn: Connection) -> str | None:
    """The recorded revision in one query, None where the version table is missing."""
    try:
        rows = conn.exec_driver_sql(f"SELECT version_num FROM {VERSION_TABLE}").scalars().all()
    except DBAPIError:  # no such table: the locked path finds out what the store is
        return None
    return rows[0] if len(rows) == 1 else None


def _version(conn: Connection) -> str | None:
    if not inspect(conn).has_table(VERSION_TABLE):
        return None
    rows = conn.execute(_VERSION.select()).scalars().all()
    if len(rows) > 1:
        raise StorageError(f"The store's {VERSION_TABLE} table holds {len(rows)} revisions "
                           f"({', '.join(rows)}); roilab writes one. Keep the right one.")
    return rows[0] if rows else None


def _refuse_unknown(engine: Engine, revision: str) -> None:
    if revision in REVISIONS:
        return
    raise StorageError(
        f"The results store {_shown(engine)} has schema revision {revision!r}, which this "
        f"roilab does not know (its newest is {HEAD!r}): a newer roilab has upgraded it. "
        "Upgrade roilab on this machine (git pull, then pip install -e .), or point "
        "ROILAB_DB_URL at another store. Nothing was changed.")


def _engine(target: Engine | str) -> tuple[Engine, bool]:
    return (open_engine(target), True) if isinstance(target, str) else (target, False)


def _shown(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=True)


def _scrub(engine: Engine, text: str) -> str:
    return scrub(text, engine.url.render_as_string(hide_password=False))


def _cannot_open(engine: Engine, exc: Exception) -> StorageError:
    return StorageError(
        f"Cannot open results store {_shown(engine)}: {_scrub(engine, first_line(exc))}. Fix "
        "ROILAB_DB_URL (is the server running, does the database exist, may this user create "
        "tables in it?).")
