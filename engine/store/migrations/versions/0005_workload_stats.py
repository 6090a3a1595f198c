"""Revision 0005: a workload's prompt statistics, stored with it (issue 12 item 7).

``workloads.stats_json`` (nullable TEXT) holds ``engine.ingest.stats.workload_stats``:
summaries of prompt words, characters and tokens, the reference and logged-output counts,
and fixed-bin histograms of prompt lengths. Ingest writes it, so no page reads every request
of a workload to show them (the Upload page took 116 s on a 100,000-request workload).

The index of ``requests`` on ``workload_id`` becomes one on ``(workload_id, idx)``: it serves
every lookup the old one did, and a workload's first N requests or those at given positions
(the Upload page's preview, a run's side-by-side table) without scanning and sorting all of
its rows.

Workloads stored before this revision keep NULL here: ``Store.workload_stats`` works theirs
out on first read and saves it. The migration does not: counting tokens needs the embedded
model's tokenizer, which may not be prepared (then the counts would be missing anyway), and
it would hold the store's write lock for seconds per large workload while every process
opening the store waits.

Revision ID: 0005
Revises: 0004
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    have = {c["name"] for c in inspector.get_columns("workloads")}
    if "stats_json" not in have:  # ADD COLUMN of a nullable column: no table copy
        op.add_column("workloads", sa.Column("stats_json", sa.Text(), nullable=True))
    indexes = {i["name"] for i in inspector.get_indexes("requests")}
    if "ix_requests_workload_idx" not in indexes:
        op.create_index("ix_requests_workload_idx", "requests", ["workload_id", "idx"])
    if "ix_requests_workload_id" in indexes:
        op.drop_index("ix_requests_workload_id", table_name="requests")


def downgrade() -> None:
    """A store is never taken back below its revision."""
