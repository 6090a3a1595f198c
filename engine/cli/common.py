"""What every roilab subcommand shares: the store it opens from the settings."""
from __future__ import annotations

from engine.core.settings import Settings


def open_store(settings: Settings):
    """The results store named by the settings (``ROILAB_DB_URL`` or the local SQLite file)."""
    from engine.store.store import Store

    return Store(settings.resolved_db_url())
