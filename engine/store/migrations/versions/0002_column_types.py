"""Revision 0002: free text is TEXT and byte counts are BIGINT on stores made before 5334999.

Commit 5334999 changed the tables so a server database accepts whatever SQLite does:
VARCHAR(n) -> TEXT for free text (an endpoint URL as ``variants.device`` overflowed 80
characters) and INTEGER -> BIGINT for ``variants.weight_bytes`` / ``peak_mem_bytes`` (an 8B
model's 16e9 bytes overflow 32 bits). ``create_all`` never alters a column, so a PostgreSQL
store made before that kept the old types and still fails on such values. This revision
alters, on the columns listed below, every one whose type is not already TEXT / BIGINT
(found by inspection, so a store made by ``create_all`` after 5334999 changes nothing).
On PostgreSQL VARCHAR -> TEXT rewrites nothing (binary-compatible); INTEGER -> BIGINT
rewrites the variants table, which holds a row per variant: small.

SQLite: nothing to do, on purpose. SQLite never enforces VARCHAR's length and gives VARCHAR
and TEXT the same (TEXT) affinity; INTEGER and BIGINT both have INTEGER affinity and store
64-bit values, so an old SQLite store already holds everything the new types do. Only the
declared type names in its schema differ. Changing them means batch mode (a copy of each
table: the requests of every log, every result) while every other process waits on the
write lock, on the first open after upgrading roilab, for no change in what can be stored.

Revision ID: 0002
Revises: 0001
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TEXT = {  # the CleanText columns (TEXT); those that were VARCHAR before 5334999 are marked
    "workloads": ("name", "filename", "issues_json"),  # name VARCHAR(200), filename (500)
    "requests": ("messages_json", "reference", "logged_output", "request_id",  # (200)
                 "metadata_json"),
    "runs": ("name", "spec_json", "error"),  # name VARCHAR(200)
    "variants": ("name", "spec_json", "error", "device", "technique_report_json"),  # 80, 80
    "results": ("output_text", "error"),
    "hardware": ("name", "price_source"),  # name VARCHAR(200)
}
BIGINT = {"variants": ("weight_bytes", "peak_mem_bytes")}  # were INTEGER


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":  # see the docstring: type affinity makes it a no-op
        return
    inspector = sa.inspect(bind)
    for table in {**TEXT, **BIGINT}:
        columns = {c["name"]: c for c in inspector.get_columns(table)}
        for name in TEXT.get(table, ()):
            _alter(table, columns[name], sa.Text(), lambda t: isinstance(t, sa.Text))
        for name in BIGINT.get(table, ()):
            _alter(table, columns[name], sa.BigInteger(),
                   lambda t: isinstance(t, sa.BigInteger))


def _alter(table: str, column: dict, new: sa.types.TypeEngine, is_new) -> None:
    if not is_new(column["type"]):
        op.alter_column(table, column["name"], type_=new, existing_type=column["type"],
                        existing_nullable=column["nullable"])


def downgrade() -> None:
    """Nothing to undo: TEXT and BIGINT hold every value the old types did, and shrinking
    them back could fail on values stored since."""
