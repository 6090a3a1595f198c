"""Revision 0001: the store's tables as roilab defined them when migrations began.

A frozen copy of engine/store/tables.py, hardware.py and load.py at that time (a revision
never imports the live tables: they will change, this must not).

On an empty database ``engine.store.migrate`` uses ``create_all`` and stamps the head
instead; this revision runs on stores that earlier roilab versions made with ``create_all``,
which has no version table. It creates the tables such a store lacks and leaves the others
alone. What git history says they can lack (``git log -p`` over engine/store*.py before the
engine/ split, d8d2c8b):

- dce1028 (the first store): workloads, requests, runs, variants, results;
- 46db4e3 added ``hardware``; 5860b82 added ``load_runs`` and ``load_samples``;
  aad027a added ``uploads`` (older workloads keep their bytes in ``workloads.raw``, which
  the store still reads);
- no column was ever added to an existing table, so there is no column to backfill; a
  column missing anyway (a table roilab did not make) is added when it may be NULL, and is
  refused with its name when it may not;
- 5334999 changed column types (VARCHAR -> TEXT, INTEGER -> BIGINT): revision 0002.

Revision ID: 0001
Revises: (none)
"""
from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa
from alembic import op

from engine.core.errors import StorageError

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _id() -> sa.Column:
    return sa.Column("id", sa.Integer(), primary_key=True)


def _fk(name: str, target: str) -> sa.Column:
    return sa.Column(name, sa.Integer(), sa.ForeignKey(target), nullable=False, index=True)


def _text(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.Text(), nullable=nullable)


def _status() -> sa.Column:
    return sa.Column("status", sa.String(20), nullable=False)


def _at(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(), nullable=nullable)


def _float(name: str, nullable: bool = True) -> sa.Column:
    return sa.Column(name, sa.Float(), nullable=nullable)


def _double(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.Double(), nullable=nullable)


def _int(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.Integer(), nullable=nullable)


# table -> its columns, parents before children (foreign keys)
TABLES: dict[str, Callable[[], list[sa.Column]]] = {
    "hardware": lambda: [
        sa.Column("key", sa.String(64), primary_key=True), _text("name"),
        sa.Column("kind", sa.String(10), nullable=False), _double("memory_gb"),
        _double("price_per_hour"), _text("price_source"),
        sa.Column("price_date", sa.String(7), nullable=False),
        _double("bandwidth_gbs", True), _double("bf16_tflops", True), _at("updated_at")],
    "workloads": lambda: [
        _id(), _text("name"), _text("filename"), sa.Column("format", sa.String(40),
                                                           nullable=False),
        sa.Column("raw", sa.LargeBinary(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False), _int("n_requests"),
        _text("issues_json"), _at("created_at")],
    "uploads": lambda: [
        sa.Column("workload_id", sa.Integer(), sa.ForeignKey("workloads.id"), primary_key=True,
                  autoincrement=False),
        sa.Column("raw", sa.LargeBinary(), nullable=False)],
    "requests": lambda: [
        _id(), _fk("workload_id", "workloads.id"), _int("idx"), _int("line"),
        _text("messages_json"), _text("reference", True), _text("logged_output", True),
        _int("logged_prompt_tokens", True), _int("logged_output_tokens", True),
        _text("request_id", True), _text("metadata_json")],
    "runs": lambda: [
        _id(), _fk("workload_id", "workloads.id"), _text("name"), _text("spec_json"),
        _status(), _text("error", True), _at("created_at"), _at("finished_at", True)],
    "variants": lambda: [
        _id(), _fk("run_id", "runs.id"), _int("position"), _text("name"), _text("spec_json"),
        _status(), _text("error", True), _float("load_s"),
        sa.Column("weight_bytes", sa.BigInteger(), nullable=True),
        sa.Column("peak_mem_bytes", sa.BigInteger(), nullable=True),
        _float("throughput_tok_s"), _float("wall_s"), _text("device", True),
        _text("technique_report_json")],
    "results": lambda: [
        _id(), _fk("variant_id", "variants.id"), _int("request_index"), _text("output_text"),
        _int("prompt_tokens_logged", True), _int("prompt_tokens_original"),
        _int("prompt_tokens_sent"), _int("output_tokens"), _float("ttft_s", False),
        _float("latency_s", False), _float("compress_s", False), _text("error", True),
        _float("ref_exact"), _float("ref_contains"), _float("ref_f1"),
        _float("base_rouge_l"), _float("base_cosine")],
    "load_runs": lambda: [
        _id(), _fk("workload_id", "workloads.id"),
        sa.Column("name", sa.String(200), nullable=False), _text("spec_json"), _status(),
        _text("error", True), _at("created_at"), _at("finished_at", True)],
    "load_samples": lambda: [
        _id(), _fk("load_run_id", "load_runs.id"),
        sa.Column("variant", sa.String(80), nullable=False), _double("level"),
        _int("request_index"), _double("arrival_s"), _double("sent_s"),
        _double("first_token_s", True), _double("end_s"), _int("output_tokens"),
        _int("prompt_tokens", True), _text("chunk_times_json"), _text("error", True)],
}


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    existing = set(inspector.get_table_names())
    for name, columns in TABLES.items():
        table = sa.Table(name, sa.MetaData(), *columns())
        if name not in existing:
            op.create_table(name, *columns())  # with its indexes (ix_<table>_<column>)
        else:
            _complete(name, table, inspector)


def _complete(name: str, table: sa.Table, inspector) -> None:
    """Add what an existing table lacks: nullable columns, then the indexes."""
    have = {c["name"] for c in inspector.get_columns(name)}
    for column in table.columns:
        if column.name in have:
            continue
        if not column.nullable:
            raise StorageError(
                f"Table {name!r} has no column {column.name!r} and it cannot be added to "
                "existing rows (NOT NULL, no default): this table was not made by roilab. "
                "Nothing was changed. Point ROILAB_DB_URL at a database of roilab's own.")
        op.add_column(name, sa.Column(column.name, column.type, nullable=True))
    indexes = {ix["name"] for ix in inspector.get_indexes(name)}
    for index in table.indexes:
        ix_name = f"ix_{name}_{index.columns[0].name}"
        if ix_name not in indexes:
            op.create_index(ix_name, name, [c.name for c in index.columns])


def downgrade() -> None:
    """Refused on purpose: below the first revision there is no store, and roilab never drops
    a table of results."""
    raise StorageError("Revision 0001 is the first: below it there is no store. roilab does not "
                       "drop tables; to go back, restore a backup of the database instead.")
