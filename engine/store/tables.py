"""The results store's tables (SQLAlchemy ORM rows). They never leave engine.store: the
store turns them into frozen domain objects. A change here needs a migration
(engine/store/migrations)."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Index, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from engine.store.base import Base, CleanText, Measure, _now


class WorkloadRow(Base):
    __tablename__ = "workloads"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(CleanText)
    filename: Mapped[str] = mapped_column(CleanText)
    format: Mapped[str] = mapped_column(String(40))
    # the upload, byte for byte, for workloads stored before the uploads table; deferred, so
    # listing workloads never reads a 50 MB blob
    raw: Mapped[bytes] = mapped_column(LargeBinary, deferred=True)
    sha256: Mapped[str] = mapped_column(String(64))
    n_requests: Mapped[int]
    issues_json: Mapped[str] = mapped_column(CleanText, default="[]")
    created_at: Mapped[datetime] = mapped_column(default=_now)
    # engine.ingest.stats.workload_stats as JSON, written at ingest (revision 0005); NULL for
    # a workload stored before it, until its statistics are first read
    stats_json: Mapped[str | None] = mapped_column(CleanText, deferred=True)


class UploadRow(Base):
    """The upload, byte for byte, for workloads stored since issue 13 (older ones keep it in
    ``workloads.raw``). The bytes are the row's last column, so SQLite writes them into a
    preallocated zeroblob in place; bound as a parameter (or in mid-record) SQLite would
    hold two more copies of a 50 MB upload in memory while inserting it."""

    __tablename__ = "uploads"
    workload_id: Mapped[int] = mapped_column(ForeignKey("workloads.id"), primary_key=True,
                                             autoincrement=False)
    raw: Mapped[bytes] = mapped_column(LargeBinary)


class RequestRow(Base):
    __tablename__ = "requests"
    # (workload, position): the first N requests and those at given positions are index
    # lookups, not a scan and sort of a 100,000-request workload (revision 0005)
    __table_args__ = (Index("ix_requests_workload_idx", "workload_id", "idx"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    workload_id: Mapped[int] = mapped_column(ForeignKey("workloads.id"))
    idx: Mapped[int]
    line: Mapped[int]
    messages_json: Mapped[str] = mapped_column(CleanText)
    reference: Mapped[str | None] = mapped_column(CleanText)
    logged_output: Mapped[str | None] = mapped_column(CleanText)
    logged_prompt_tokens: Mapped[int | None]
    logged_output_tokens: Mapped[int | None]
    request_id: Mapped[str | None] = mapped_column(CleanText)
    metadata_json: Mapped[str] = mapped_column(CleanText, default="{}")


class RunRow(Base):
    __tablename__ = "runs"
    id: Mapped[int] = mapped_column(primary_key=True)
    workload_id: Mapped[int] = mapped_column(ForeignKey("workloads.id"), index=True)
    name: Mapped[str] = mapped_column(CleanText)
    spec_json: Mapped[str] = mapped_column(CleanText)
    status: Mapped[str] = mapped_column(String(20), default="pending")
    error: Mapped[str | None] = mapped_column(CleanText)
    created_at: Mapped[datetime] = mapped_column(default=_now)
    finished_at: Mapped[datetime | None]
    # The process running it (revision 0003): a run whose process died is found by these and
    # marked interrupted (engine.pilot.liveness), instead of staying "running" forever.
    owner_pid: Mapped[int | None]
    owner_host: Mapped[str | None] = mapped_column(CleanText)
    heartbeat_at: Mapped[datetime | None]
    # Where it ran (revision 0008): host, GPUs, Ray node id as JSON (engine.jobs.node)
    node_json: Mapped[str | None] = mapped_column(CleanText)
    # When it was handed to Ray (revision 0009): a pending run with one and no owner is queued
    queued_at: Mapped[datetime | None]
    # Where the pilot is, as its process last said (revision 0011): engine.core.domain.RunProgress
    progress_json: Mapped[str | None] = mapped_column(CleanText)


class VariantRow(Base):
    __tablename__ = "variants"
    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"), index=True)
    position: Mapped[int]
    name: Mapped[str] = mapped_column(CleanText)
    spec_json: Mapped[str] = mapped_column(CleanText)
    status: Mapped[str] = mapped_column(String(20), default="pending")
    error: Mapped[str | None] = mapped_column(CleanText)
    load_s: Mapped[float | None] = mapped_column(Measure)
    weight_bytes: Mapped[int | None] = mapped_column(BigInteger)  # an 8B model: 16e9 > 2**31
    peak_mem_bytes: Mapped[int | None] = mapped_column(BigInteger)
    throughput_tok_s: Mapped[float | None] = mapped_column(Measure)
    wall_s: Mapped[float | None] = mapped_column(Measure)
    device: Mapped[str | None] = mapped_column(CleanText)  # e.g. "endpoint <its URL>"
    technique_report_json: Mapped[str] = mapped_column(CleanText, default="{}")


class ResultRow(Base):
    __tablename__ = "results"
    id: Mapped[int] = mapped_column(primary_key=True)
    variant_id: Mapped[int] = mapped_column(ForeignKey("variants.id"), index=True)
    request_index: Mapped[int]
    output_text: Mapped[str] = mapped_column(CleanText)
    prompt_tokens_logged: Mapped[int | None]
    prompt_tokens_original: Mapped[int]
    prompt_tokens_sent: Mapped[int]
    output_tokens: Mapped[int]
    ttft_s: Mapped[float] = mapped_column(Measure)
    latency_s: Mapped[float] = mapped_column(Measure)
    compress_s: Mapped[float] = mapped_column(Measure, default=0.0)
    error: Mapped[str | None] = mapped_column(CleanText)
    ref_exact: Mapped[float | None] = mapped_column(Measure)
    ref_contains: Mapped[float | None] = mapped_column(Measure)
    ref_f1: Mapped[float | None] = mapped_column(Measure)
    base_rouge_l: Mapped[float | None] = mapped_column(Measure)
    base_cosine: Mapped[float | None] = mapped_column(Measure)


class PassRow(Base):
    """Every timed pass of a variant (revision 0004): the variant row holds their medians."""

    __tablename__ = "variant_passes"
    id: Mapped[int] = mapped_column(primary_key=True)
    variant_id: Mapped[int] = mapped_column(ForeignKey("variants.id"), index=True)
    pass_index: Mapped[int]
    role: Mapped[str] = mapped_column(String(20), default="timed")
    wall_s: Mapped[float] = mapped_column(Measure)
    throughput_tok_s: Mapped[float] = mapped_column(Measure)
    output_tokens: Mapped[int]
    latency_p50_s: Mapped[float | None] = mapped_column(Measure)
    latency_p95_s: Mapped[float | None] = mapped_column(Measure)
    peak_mem_bytes: Mapped[int | None] = mapped_column(BigInteger)
    others_cpu_pct: Mapped[float | None] = mapped_column(Measure)
    load_avg_1m: Mapped[float | None] = mapped_column(Measure)
    gpu_util_pct: Mapped[float | None] = mapped_column(Measure)
    gpu_other_procs: Mapped[int | None]
    replays: Mapped[int | None]  # revision 0006
    others_load: Mapped[float | None] = mapped_column(Measure)  # revision 0006
    gc_pause_s: Mapped[float | None] = mapped_column(Measure)  # revision 0010
