"""Revision 0007: a variant's ``wall_s`` is one replay of the request set (issue 18).

Since revision 0006 a timed pass may replay the requests several times to last the minimum
pass time; the variant row kept the median *pass* wall while its results hold one replay's
tokens, so the tokens/s, requests/s and costs derived from ``variants.wall_s`` read
``replays`` times too slow (an H100 run: 411.7 tokens/s for passes of 4,529). roilab now
stores the median of ``wall_s / replays`` over the variant's timed passes; this revision
divides the rows stored before it the same way. Every pass of a variant replays the same
number of times, so dividing the median by that number gives the same figure. Rows whose
passes replayed once (or hold no count: stored before 0006) are left as they are.

Revision ID: 0007
Revises: 0006
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    replays = ("(SELECT MAX(p.replays) FROM variant_passes p "
               "WHERE p.variant_id = variants.id AND p.role = 'timed')")
    op.get_bind().execute(sa.text(
        f"UPDATE variants SET wall_s = wall_s / {replays} "
        f"WHERE wall_s IS NOT NULL AND {replays} > 1"))


def downgrade() -> None:
    """A store is never taken back below its revision."""
