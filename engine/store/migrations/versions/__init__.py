"""The revisions, in order (0001, 0002, ...); Alembic loads each file by its path."""
