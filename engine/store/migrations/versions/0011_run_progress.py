"""Revision 0011: where a running pilot is, as its process last said (issue 18's GPU run).

``runs.progress_json`` (nullable text): the pilot's latest progress, ``{"fraction",
"variant", "message"}``, written by the process that owns the run with its heartbeat
(engine.pilot.liveness.Heartbeat), off the pilot's own thread. A pilot that runs as a Ray
task is followed from the store (`roilab pilot` without --in-process, the Run pilot page):
without it the follower could only count finished variants and stored passes, and a vLLM
pilot on an H100 showed "0/3 variants done, 0 passes" for all of its 9.5 minutes of engine
start-ups and interleaved rounds. Runs stored before keep NULL.

Revision ID: 0011
Revises: 0010
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    have = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("runs")}
    if "progress_json" not in have:  # ADD COLUMN of a nullable column: no table copy
        op.add_column("runs", sa.Column("progress_json", sa.Text(), nullable=True))


def downgrade() -> None:
    """A store is never taken back below its revision."""
