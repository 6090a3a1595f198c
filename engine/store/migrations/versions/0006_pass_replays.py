"""Revision 0006: how long a timed pass ran and how busy the rest of the machine was
(issue 18 item 2).

``variant_passes.replays`` (nullable INTEGER): how many times the pass replayed the pilot's
requests to last at least the minimum pass time (``MeasurementSettings.min_pass_s``): a
one-second pass on a GPU made any one-off stall over 10% of it. ``variant_passes.others_load``
(nullable REAL): the mean number of runnable tasks on the machine that are not this process's
or its children's threads, sampled during the pass. The 1-minute load average
(``load_avg_1m``, kept) counts the pilot's own threads, so a pilot that used every core
called a quiet machine busy.

Passes stored before this revision keep NULL in both: one replay, and no net load (the busy
check then reads other processes' CPU share alone).

Revision ID: 0006
Revises: 0005
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    have = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("variant_passes")}
    if "replays" not in have:  # ADD COLUMN of a nullable column: no table copy
        op.add_column("variant_passes", sa.Column("replays", sa.Integer(), nullable=True))
    if "others_load" not in have:
        op.add_column("variant_passes", sa.Column("others_load", sa.Float(), nullable=True))


def downgrade() -> None:
    """A store is never taken back below its revision."""
