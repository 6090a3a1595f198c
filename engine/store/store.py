"""Results storage: SQLAlchemy 2.0 over SQLite by default (any SQLAlchemy URL works).

ORM rows never leave this module: callers get frozen domain objects or DataFrames.
Every write happens in one transaction that commits or rolls back as a whole, so a
failure never leaves half-written results. SQLite runs in WAL mode so the dashboard can
read while a pilot writes. PostgreSQL (``postgresql+psycopg://...``) serves a shared store;
the same contract tests run against both. Column types are chosen so a server database
accepts whatever SQLite does: free text is TEXT (no VARCHAR limit), byte counts are 64-bit,
and NUL characters and NaN are normalised the same way on every backend.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from engine.core.domain import (
    LogRequest,
    ParsedLog,
    RequestResult,
    RowIssue,
    Run,
    RunProgress,
    Status,
    StoredRequest,
    VariantMeasurements,
    VariantRun,
    Workload,
)
from engine.core.errors import StorageError
from engine.ingest.stats import TokenCounter, is_current, workload_stats
from engine.store.base import _now, clean_text  # shared by all tables
from engine.store.connect import open_engine
from engine.store.hardware import HardwareStoreMixin
from engine.store.load import LoadStoreMixin
from engine.store.migrate import upgrade
from engine.store.owners import RunOwnerStoreMixin
from engine.store.passes import PassStoreMixin
from engine.store.tables import RequestRow, ResultRow, RunRow, UploadRow, VariantRow, WorkloadRow

if TYPE_CHECKING:  # pandas costs ~80 MiB of memory; `roilab ingest` never needs it
    import pandas as pd


_RESULT_FIELDS = [f for f in RequestResult.__dataclass_fields__]
_VARIANT_MEASURES = [f for f in VariantMeasurements.__dataclass_fields__
                     if f not in ("technique_report", "passes")]  # the variants table's columns


class Store(LoadStoreMixin, HardwareStoreMixin, RunOwnerStoreMixin, PassStoreMixin):
    """The one storage contract used by the engine, CLI and dashboard."""

    def __init__(self, url: str) -> None:
        """Open the store at a SQLAlchemy URL (``sqlite:///data/roilab.db``,
        ``postgresql+psycopg://user:pass@host/db``): an empty database gets the tables, an
        older store is upgraded to this code's schema (engine.store.migrate; one read when
        it is current), a store newer than this code is refused with the fix."""
        self.engine = open_engine(url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        try:
            upgrade(self.engine)
        except StorageError:
            self.engine.dispose()
            raise
        self.url = url

    @contextmanager
    def _session(self) -> Iterator[Session]:
        session = self._sessions()
        try:
            yield session
            session.commit()
        except SQLAlchemyError as exc:
            session.rollback()
            raise StorageError(f"Results store error (nothing was written): {exc}") from exc
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    # ---- workloads -------------------------------------------------------------------
    def add_workload(self, name: str, filename: str, raw: bytes, parsed: ParsedLog,
                     count_tokens: TokenCounter | None = None) -> Workload:
        """Store the original upload unchanged, its parsed requests and their prompt
        statistics (engine.ingest.stats; tokens counted when ``count_tokens`` is given),
        atomically.

        Requests go in as bulk INSERTs of ``_INSERT_BATCH`` rows straight to the driver (no
        ORM object per request): 100,000 requests in about a second. The statistics are
        worked out before the transaction begins, so the write lock is not held while the
        tokenizer counts (a thread beside the inserts was slower on 2 cores: GIL convoy).
        """
        _check_counts(parsed.requests)
        stats = json.dumps(workload_stats(parsed.requests, count_tokens))
        fields = dict(name=clean_text(name), filename=clean_text(filename), format=parsed.format,
                      sha256=hashlib.sha256(raw).hexdigest(), n_requests=len(parsed.requests),
                      issues_json=json.dumps([asdict(i) for i in parsed.issues]),
                      created_at=_now())
        with self._session() as s:
            conn = s.connection()
            result = conn.execute(insert(WorkloadRow.__table__).values(raw=b"", stats_json=stats,
                                                                       **fields))
            workload_id = result.inserted_primary_key[0]
            self._write_upload(conn, workload_id, raw)
            sql, order = _insert_sql(conn.dialect)
            for first in range(0, len(parsed.requests), _INSERT_BATCH):
                batch = parsed.requests[first:first + _INSERT_BATCH]
                values = [_request_values(workload_id, first + i, r)
                          for i, r in enumerate(batch)]
                conn.exec_driver_sql(sql, [tuple(v[k] for k in order) for v in values]
                                     if order else values)
        return Workload(id=workload_id, name=fields["name"], filename=fields["filename"],
                        format=parsed.format, n_requests=len(parsed.requests),
                        n_issues=len(parsed.issues), created_at=fields["created_at"],
                        issues=tuple(parsed.issues))

    def workload_stats(self, workload_id: int,
                       count_tokens: TokenCounter | None = None) -> dict[str, Any]:
        """The workload's prompt statistics (engine.ingest.stats.workload_stats), as stored
        at ingest: one row read, never its requests. Where none are stored (a workload from
        before revision 0005), they are of an older shape, or they lack token counts that
        ``count_tokens`` can now give (the model was prepared after ingest), they are worked
        out once from the stored requests and saved."""
        stats = self.stored_workload_stats(workload_id)
        if is_current(stats, want_tokens=count_tokens is not None):
            return stats
        stats = workload_stats([r.request for r in self.get_requests(workload_id)],
                               count_tokens)
        with self._session() as s:
            s.execute(update(WorkloadRow).where(WorkloadRow.id == workload_id)
                      .values(stats_json=json.dumps(stats)))
        return stats

    def stored_workload_stats(self, workload_id: int) -> dict[str, Any] | None:
        """The prompt statistics as stored, whatever their shape; None where none are."""
        with self._session() as s:
            self._get(s, WorkloadRow, workload_id)
            stored = s.scalar(select(WorkloadRow.stats_json).where(WorkloadRow.id == workload_id))
        return json.loads(stored) if stored else None

    def list_workloads(self) -> list[Workload]:
        with self._session() as s:
            rows = s.scalars(select(WorkloadRow).order_by(WorkloadRow.id.desc())).all()
            return [_workload(r) for r in rows]

    def get_workload(self, workload_id: int) -> Workload:
        with self._session() as s:
            return _workload(self._get(s, WorkloadRow, workload_id))

    def get_raw_upload(self, workload_id: int) -> bytes:
        with self._session() as s:
            upload = s.get(UploadRow, workload_id)
            return upload.raw if upload is not None else self._get(s, WorkloadRow,
                                                                   workload_id).raw

    @staticmethod
    def _write_upload(conn: Any, workload_id: int, raw: bytes) -> None:
        """The upload into its own row; on SQLite through an in-place BLOB write."""
        table = UploadRow.__table__
        if conn.dialect.name != "sqlite" or not raw:
            conn.execute(insert(table).values(workload_id=workload_id, raw=raw))
            return
        conn.execute(insert(table).values(workload_id=workload_id,
                                          raw=func.zeroblob(len(raw))))
        rowid = conn.exec_driver_sql("SELECT rowid FROM uploads WHERE workload_id = ?",
                                     (workload_id,)).scalar_one()
        with conn.connection.driver_connection.blobopen("uploads", "raw", rowid) as blob:
            blob.write(raw)

    def get_requests(self, workload_id: int, limit: int | None = None,
                     indices: Iterable[int] | None = None) -> list[StoredRequest]:
        """The workload's requests in order: all, the first ``limit``, or those at
        ``indices`` (0-based positions; a page of a side-by-side table reads only its rows).
        Read as plain rows, not ORM objects: 100,000 requests in about a second."""
        t = RequestRow.__table__
        q = select(*(t.c[c] for c in _READ_COLS)).where(t.c.workload_id == workload_id)
        if indices is not None:
            wanted = sorted(set(indices))
            if not wanted:
                return []
            q = q.where(t.c.idx.in_(wanted))  # an expanding IN: one parameter list per query
        with self._session() as s:
            rows = s.connection().execute(q.order_by(t.c.idx).limit(limit))
            return [_stored_request(workload_id, *r) for r in rows]

    # ---- runs ------------------------------------------------------------------------
    def create_run(self, workload_id: int, name: str, spec: dict[str, Any],
                   variant_specs: list[dict[str, Any]]) -> Run:
        with self._session() as s:
            self._get(s, WorkloadRow, workload_id)
            run = RunRow(workload_id=workload_id, name=name, spec_json=json.dumps(spec))
            s.add(run)
            s.flush()
            s.add_all(VariantRow(run_id=run.id, position=i, name=v["name"],
                                 spec_json=json.dumps(v)) for i, v in enumerate(variant_specs))
        return self.get_run(run.id)

    def set_run_status(self, run_id: int, status: str, error: str | None = None) -> None:
        with self._session() as s:
            run = self._get(s, RunRow, run_id)
            status = Status(status)  # "ok" is done; an unknown status is a ValueError
            run.status, run.error = status.value, error
            if status.finished:  # the runner's outcome, an interrupt or a cancel
                run.finished_at = _now()

    def set_variant_status(self, variant_id: int, status: str, error: str | None = None) -> None:
        with self._session() as s:
            row = self._get(s, VariantRow, variant_id)
            row.status, row.error = Status(status).value, error

    def finish_variant(self, variant_id: int, results: list[RequestResult],
                       measured: VariantMeasurements) -> None:
        """Write a variant's per-request results, measurements and timed passes in one
        transaction."""
        if not isinstance(measured, VariantMeasurements):  # a dict would store NULLs silently
            raise TypeError(f"finish_variant takes VariantMeasurements, got {type(measured)}")
        with self._session() as s:
            row = self._get(s, VariantRow, variant_id)
            for key in _VARIANT_MEASURES:
                setattr(row, key, getattr(measured, key))
            row.technique_report_json = json.dumps(measured.technique_report)
            row.status, row.error = Status.DONE.value, None
            s.add_all(ResultRow(variant_id=variant_id, **asdict(r)) for r in results)
            s.add_all(self._pass_rows(variant_id, measured.passes))

    def list_runs(self, workload_id: int | None = None) -> list[Run]:
        with self._session() as s:
            q = select(RunRow).order_by(RunRow.id.desc())
            if workload_id is not None:
                q = q.where(RunRow.workload_id == workload_id)
            return [self._run(s, r) for r in s.scalars(q)]

    def get_run(self, run_id: int) -> Run:
        with self._session() as s:
            return self._run(s, self._get(s, RunRow, run_id))

    def get_results(self, variant_id: int) -> list[RequestResult]:
        with self._session() as s:
            q = select(ResultRow).where(ResultRow.variant_id == variant_id) \
                .order_by(ResultRow.request_index)
            return [RequestResult(**{f: getattr(r, f) for f in _RESULT_FIELDS})
                    for r in s.scalars(q)]

    def result_indices(self, run_id: int) -> list[int]:
        """The workload positions (request indices) the run's variants have results for."""
        with self._session() as s:
            q = select(ResultRow.request_index).distinct().join(
                VariantRow, VariantRow.id == ResultRow.variant_id).where(
                VariantRow.run_id == run_id).order_by(ResultRow.request_index)
            return list(s.scalars(q))

    def results_frame(self, run_id: int) -> pd.DataFrame:
        """All per-request results of a run, one row per (variant, request)."""
        import pandas as pd

        run = self.get_run(run_id)
        frames = []
        for v in run.variants:
            rows = [asdict(r) for r in self.get_results(v.id)]
            if rows:
                frames.append(pd.DataFrame(rows).assign(variant=v.name, variant_id=v.id))
        if not frames:
            return pd.DataFrame(columns=["variant", "variant_id", *_RESULT_FIELDS])
        return pd.concat(frames, ignore_index=True)

    # ---- helpers ---------------------------------------------------------------------
    @staticmethod
    def _get(s: Session, model: type, key: int):
        row = s.get(model, key)
        if row is None:
            raise StorageError(f"No {model.__tablename__[:-1]} with id {key}; "
                               "list what exists with `roilab runs` / `roilab workloads`.")
        return row

    @staticmethod
    def _run(s: Session, row: RunRow) -> Run:
        vq = select(VariantRow).where(VariantRow.run_id == row.id).order_by(VariantRow.position)
        return Run(id=row.id, workload_id=row.workload_id, name=row.name,
                   spec=json.loads(row.spec_json), status=Status(row.status), error=row.error,
                   created_at=row.created_at, finished_at=row.finished_at,
                   queued_at=row.queued_at, variants=tuple(_variant(v) for v in s.scalars(vq)),
                   progress=_progress(row.progress_json))


def _progress(text: str | None) -> RunProgress | None:
    """The stored progress (revision 0011); None when never said, or unreadable (it is only
    a display hint: a bad one must not stop the run from being read)."""
    if not text:
        return None
    try:
        return RunProgress.from_dict(json.loads(text))
    except (ValueError, TypeError, AttributeError):
        return None


_INSERT_BATCH = 5_000  # requests per bulk INSERT: fast, and a bounded list of parameters
_MAX_INT = 2**31 - 1  # an INTEGER column: 32-bit on PostgreSQL (SQLite holds 64)


def _check_counts(requests: tuple[LogRequest, ...]) -> None:
    """StorageError before anything is written if a token count cannot be stored
    (engine.ingest.logs rejects such rows; this guards ParsedLogs made elsewhere)."""
    for r in requests:
        for count in (r.logged_prompt_tokens, r.logged_output_tokens):
            if count is not None and not 0 <= count <= _MAX_INT:
                shown = str(count) if count.bit_length() <= 128 else f"~2^{count.bit_length()}"
                raise StorageError(f"Request at line {r.line}: logged token count {shown} is "
                                   f"outside 0..{_MAX_INT}; fix or remove it.")


def _insert_sql(dialect: Any) -> tuple[str, tuple[str, ...] | None]:
    """The requests INSERT in the driver's own parameter style, and the column order of its
    parameters when they are positional (None: named). Values go to the driver as they are,
    so _request_values applies CleanText's rule itself."""
    compiled = insert(RequestRow.__table__).compile(dialect=dialect, column_keys=_REQUEST_COLS)
    return str(compiled), tuple(compiled.positiontup) if compiled.positional else None


_REQUEST_COLS = ["workload_id", "idx", "line", "messages_json", "reference", "logged_output",
                 "logged_prompt_tokens", "logged_output_tokens", "request_id", "metadata_json"]
_metadata_json = json.JSONEncoder(default=str).encode  # one encoder, not one per request


def _request_values(workload_id: int, idx: int, r: LogRequest) -> dict[str, Any]:
    def text(value: str | None) -> str | None:
        return None if value is None else clean_text(value)

    return dict(workload_id=workload_id, idx=idx, line=r.line,
                messages_json=clean_text(json.dumps(r.messages)), reference=text(r.reference),
                logged_output=text(r.logged_output), logged_prompt_tokens=r.logged_prompt_tokens,
                logged_output_tokens=r.logged_output_tokens, request_id=text(r.request_id),
                metadata_json=clean_text(_metadata_json(r.metadata)) if r.metadata else "{}")


_READ_COLS = ("id", "idx", "line", "messages_json", "reference", "logged_output",
              "logged_prompt_tokens", "logged_output_tokens", "request_id", "metadata_json")
_loads = json.JSONDecoder().decode


def _stored_request(workload_id: int, id_: int, idx: int, line: int, messages_json: str,
                    reference: str | None, logged_output: str | None,
                    logged_prompt_tokens: int | None, logged_output_tokens: int | None,
                    request_id: str | None, metadata_json: str) -> StoredRequest:
    req = LogRequest(line=line, messages=tuple(_loads(messages_json)), reference=reference,
                     logged_output=logged_output, logged_prompt_tokens=logged_prompt_tokens,
                     logged_output_tokens=logged_output_tokens, request_id=request_id,
                     metadata=_loads(metadata_json) if metadata_json != "{}" else {})
    return StoredRequest(id=id_, workload_id=workload_id, index=idx, request=req)


def _workload(r: WorkloadRow) -> Workload:
    issues = tuple(RowIssue(**i) for i in json.loads(r.issues_json))
    return Workload(id=r.id, name=r.name, filename=r.filename, format=r.format,
                    n_requests=r.n_requests, n_issues=len(issues), created_at=r.created_at,
                    issues=issues)


def _variant(v: VariantRow) -> VariantRun:
    return VariantRun(id=v.id, run_id=v.run_id, name=v.name, spec=json.loads(v.spec_json),
                      status=Status(v.status), error=v.error, load_s=v.load_s,  # "ok": done
                      weight_bytes=v.weight_bytes, peak_mem_bytes=v.peak_mem_bytes,
                      throughput_tok_s=v.throughput_tok_s, wall_s=v.wall_s, device=v.device,
                      technique_report=json.loads(v.technique_report_json))
