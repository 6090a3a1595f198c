"""Revision 0010: the seconds each timed pass spent collecting garbage (issue 18).

``variant_passes.gc_pause_s`` (nullable float): the interpreter's garbage-collection pauses
while the pass ran, the heap from before the pass frozen (engine.pilot.gcpause). A full
collection over a process holding vLLM engines, torch and a scorer model stops it for most of
a second; the column tells such a pass apart from a busy machine. Passes stored before keep
NULL.

Revision ID: 0010
Revises: 0009
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    have = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("variant_passes")}
    if "gc_pause_s" not in have:  # ADD COLUMN of a nullable column: no table copy
        op.add_column("variant_passes", sa.Column("gc_pause_s", sa.Float(), nullable=True))


def downgrade() -> None:
    """A store is never taken back below its revision."""
