"""Alembic's script directory for the results store: ``env.py`` and ``versions/``.

Not imported by roilab: ``engine.store.migrate`` points Alembic at this folder and runs it.
A package only so the files ship with roilab. To add a revision: change the tables, then add
``versions/NNNN_<what>.py`` (``down_revision`` = the previous one) and append it to
``engine.store.migrate.REVISIONS``; tests/test_migrations.py checks the two agree and that an
upgraded old store matches the tables.
"""
