"""Revision 0004: every timed pass of a variant (the measurement protocol, issue 12 item 1).

``variant_passes`` holds one row per timed pass of a variant over the pilot's requests
(wall time, tokens/s, latency p50/p95, peak memory, and how busy the machine was), plus the
baseline's pass measured again at the end of the run (``role`` "baseline_end"). The variant
row keeps the medians over its passes. Runs stored before this revision have no passes:
their one measurement is read as a single pass.

Revision ID: 0004
Revises: 0003
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def _float(name: str, nullable: bool = True) -> sa.Column:
    return sa.Column(name, sa.Float(), nullable=nullable)


def upgrade() -> None:
    if sa.inspect(op.get_bind()).has_table("variant_passes"):
        return
    op.create_table(
        "variant_passes",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("variant_id", sa.Integer(), sa.ForeignKey("variants.id"), nullable=False,
                  index=True),
        sa.Column("pass_index", sa.Integer(), nullable=False),
        sa.Column("role", sa.String(20), nullable=False),
        _float("wall_s", nullable=False), _float("throughput_tok_s", nullable=False),
        sa.Column("output_tokens", sa.Integer(), nullable=False),
        _float("latency_p50_s"), _float("latency_p95_s"),
        sa.Column("peak_mem_bytes", sa.BigInteger(), nullable=True),
        _float("others_cpu_pct"), _float("load_avg_1m"), _float("gpu_util_pct"),
        sa.Column("gpu_other_procs", sa.Integer(), nullable=True),
    )


def downgrade() -> None:
    """A store is never taken back below its revision."""
