"""``roilab db``: the results store's schema revision.

    roilab db current     # the store's revision and this roilab's newest; changes nothing
    roilab db upgrade     # bring the store to this roilab's schema (opening it does too)

Both act on ``ROILAB_DB_URL`` (or data/roilab.db) and print it with the password masked.
"""
from __future__ import annotations

from pathlib import Path

from engine.core.redact import mask_db_url
from engine.core.settings import Settings


def add_parser(sub) -> None:
    p = sub.add_parser("db", help="the results store's schema: current revision, upgrade")
    actions = p.add_subparsers(dest="db_command", required=True)
    actions.add_parser("current", help="print the store's schema revision; changes nothing")
    actions.add_parser("upgrade", help="upgrade the store to this roilab's schema")
    p.set_defaults(func=cmd_db)


def cmd_db(args, settings: Settings) -> int:
    from engine.store import migrate

    url = settings.resolved_db_url()
    shown = mask_db_url(url)
    if args.db_command == "upgrade":
        before, after = migrate.upgrade(url)
        if before == after:
            print(f"Results store {shown} is at schema revision {after} already; nothing to do.")
        else:
            print(f"Results store {shown}: schema revision {_name(before)} -> {after}.")
        return 0
    if _missing_sqlite_file(url):
        print(f"No results store at {shown} yet; any roilab command that uses it makes it.")
        return 0
    current, head = migrate.current_revision(url), migrate.HEAD
    if current == head:
        state = "up to date"
    elif current is None or current in migrate.REVISIONS:
        state = "older: `roilab db upgrade` (or any command that opens it) upgrades it"
    else:
        state = "newer than this roilab: upgrade roilab, or point ROILAB_DB_URL elsewhere"
    print(f"Results store {shown}: schema revision {_name(current)}; this roilab's newest is "
          f"{head} ({state}).")
    return 0


def _name(revision: str | None) -> str:
    return revision or "none (empty, or made before roilab had migrations)"


def _missing_sqlite_file(url: str) -> bool:
    """A SQLite file that does not exist: reading its revision would create it."""
    path = url.removeprefix("sqlite:///") if url.startswith("sqlite:///") else None
    return path is not None and path not in ("", ":memory:") and not Path(path).expanduser().exists()
