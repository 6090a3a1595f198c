"""Revision 0009: when a run was handed to Ray (issue 20, pilots queue).

``runs.queued_at`` (nullable TIMESTAMP): set when a pilot is submitted to the Ray executor
(``roilab pilot --detach``, ``portfolio-pilot``, the dashboard's Run pilot and Resume). A run
that is pending with no owner yet and a ``queued_at`` waits in Ray's queue; its place in line
is its rank by ``queued_at`` among such runs (engine.jobs.queue). Runs created before this
revision, or run in the foreground, keep NULL.

Revision ID: 0009
Revises: 0008
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    have = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("runs")}
    if "queued_at" not in have:  # ADD COLUMN of a nullable column: no table copy
        op.add_column("runs", sa.Column("queued_at", sa.DateTime(), nullable=True))


def downgrade() -> None:
    """A store is never taken back below its revision."""
