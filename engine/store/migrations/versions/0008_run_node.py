"""Revision 0008: where a pilot ran (issue 20, pilots as Ray tasks).

``runs.node_json`` (nullable TEXT): the machine the process running the pilot found itself
on when the pilot started, as JSON (engine.jobs.node.this_node): its host name, the GPUs
NVML sees there (name and count; none on a CPU box) and, for a pilot run as a Ray task, the
Ray node id. With pilots submitted to a cluster the host that created a run is no longer
the one that ran it, and ``roilab show`` prints this beside the hardware the run is priced
as. Runs stored before this revision keep NULL: not recorded.

Revision ID: 0008
Revises: 0007
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    have = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("runs")}
    if "node_json" not in have:  # ADD COLUMN of a nullable column: no table copy
        op.add_column("runs", sa.Column("node_json", sa.Text(), nullable=True))


def downgrade() -> None:
    """A store is never taken back below its revision."""
