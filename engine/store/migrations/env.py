"""Alembic environment for the results store, run by ``engine.store.migrate`` only.

roilab opens the connection, takes the write lock and begins the one transaction every
revision runs in, then hands the connection over in ``config.attributes``; Alembic sees a
transaction already begun and leaves committing to roilab. There is no alembic.ini and no
offline (``--sql``) mode.
"""
from alembic import context

config = context.config
connection = config.attributes.get("connection")
if connection is None:
    raise RuntimeError("Run the store's migrations with `roilab db upgrade` (or open the "
                       "store): engine.store.migrate passes the connection they run on.")

context.configure(connection=connection, version_table=config.attributes["version_table"])
with context.begin_transaction():
    context.run_migrations()
