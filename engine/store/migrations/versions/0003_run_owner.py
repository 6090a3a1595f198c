"""Revision 0003: who runs a run (process id, host, heartbeat), and the last VARCHARs go.

``runs.owner_pid``, ``owner_host`` and ``heartbeat_at`` (all nullable) let a reader tell a
run whose process was killed (SIGKILL, a reboot, an out-of-memory kill) from one still
running, and mark it interrupted so ``roilab resume`` can finish it (engine.pilot.liveness).
Runs stored before this revision have none: they are never guessed dead.

``load_runs.name`` (VARCHAR(200)) and ``load_samples.variant`` (VARCHAR(80)) become TEXT, as
revision 0002 did for the other free-text columns, so a long name fails on no backend.
On SQLite that part is a no-op for the reason 0002 gives (type affinity).

Revision ID: 0003
Revises: 0002
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

OWNER_COLUMNS = (("owner_pid", sa.Integer()), ("owner_host", sa.Text()),
                 ("heartbeat_at", sa.DateTime()))
TEXT = {"load_runs": ("name",), "load_samples": ("variant",)}


def upgrade() -> None:
    bind = op.get_bind()
    inspector = sa.inspect(bind)
    have = {c["name"] for c in inspector.get_columns("runs")}
    for name, type_ in OWNER_COLUMNS:
        if name not in have:  # ADD COLUMN of a nullable column: no table copy on either backend
            op.add_column("runs", sa.Column(name, type_, nullable=True))
    if bind.dialect.name == "sqlite":
        return
    for table, names in TEXT.items():
        columns = {c["name"]: c for c in inspector.get_columns(table)}
        for name in names:
            if not isinstance(columns[name]["type"], sa.Text):
                op.alter_column(table, name, type_=sa.Text(),
                                existing_type=columns[name]["type"],
                                existing_nullable=columns[name]["nullable"])


def downgrade() -> None:
    """The columns are only ever added; a store is never taken back below its revision."""
