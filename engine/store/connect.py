"""From a database URL to a SQLAlchemy engine, with the errors that say how to fix the URL.

Shared by ``Store`` and ``engine.store.migrate`` (``roilab db`` opens a store's database
without opening the store, which would upgrade it). Every message masks the password.
"""
from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine, create_engine, event, make_url
from sqlalchemy.exc import ArgumentError

from engine.core.errors import StorageError
from engine.core.redact import DB_URL_EXAMPLE, mask_db_url, scrub


def sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")  # readers don't block the writer
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def open_engine(url: str) -> Engine:
    """An engine for ``url`` (connections are made on first use). A plain ``postgresql://``
    means psycopg 3, the driver roilab ships; a SQLite file's folder is created."""
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).expanduser().parent.mkdir(parents=True,
                                                                       exist_ok=True)
    shown = mask_db_url(url)  # never put a password into a message
    try:
        sa_url = make_url(url)
    except (ArgumentError, ValueError) as exc:  # no scheme, a port that is not a number
        raise StorageError(
            f"ROILAB_DB_URL is not a database URL ({shown}): {scrub(first_line(exc), url)}. "
            f"Give one like {DB_URL_EXAMPLE} or sqlite:////absolute/path/roilab.db, or unset "
            "it to use data/roilab.db.") from None
    try:
        if sa_url.drivername in ("postgresql", "postgres"):  # our driver: psycopg 3
            sa_url = sa_url.set(drivername="postgresql+psycopg")
        server = sa_url.get_backend_name() != "sqlite"
        # a shared server may restart or drop idle connections: check each before use
        engine = create_engine(sa_url, future=True, pool_pre_ping=server)
    except Exception as exc:  # bad URL or missing driver
        raise StorageError(f"Cannot open results store {shown}: {scrub(str(exc), url)}. "
                           "Fix ROILAB_DB_URL.") from None
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", sqlite_pragmas)
    return engine


def first_line(exc: Exception) -> str:
    """The first line of a driver's error (the SQL and parameters that follow are noise)."""
    return str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
