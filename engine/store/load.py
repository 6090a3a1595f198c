"""Storage of load tests: a run (its LoadSpec) and its per-request samples.

New tables only, so ``create_all`` adds them to an existing database without touching the
pilot tables. Mixed into ``engine.store.store.Store``; like the rest of the store, ORM rows never
leave this module.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import ForeignKey, String, Text, func, select
from sqlalchemy.orm import Mapped, mapped_column

from engine.core.domain import LoadRun, LoadSample
from engine.store.base import Base, CleanText, _now
from engine.store.tables import WorkloadRow

if TYPE_CHECKING:  # imported where used: `roilab ingest` should not pay for pandas
    import pandas as pd


class LoadRunRow(Base):
    __tablename__ = "load_runs"
    id: Mapped[int] = mapped_column(primary_key=True)
    workload_id: Mapped[int] = mapped_column(ForeignKey("workloads.id"), index=True)
    name: Mapped[str] = mapped_column(CleanText)
    spec_json: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(20), default="pending")
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=_now)
    finished_at: Mapped[datetime | None]


class LoadSampleRow(Base):
    __tablename__ = "load_samples"
    id: Mapped[int] = mapped_column(primary_key=True)
    load_run_id: Mapped[int] = mapped_column(ForeignKey("load_runs.id"), index=True)
    variant: Mapped[str] = mapped_column(CleanText)
    level: Mapped[float]
    request_index: Mapped[int]
    arrival_s: Mapped[float]
    sent_s: Mapped[float]
    first_token_s: Mapped[float | None]
    end_s: Mapped[float]
    output_tokens: Mapped[int]
    prompt_tokens: Mapped[int | None]
    chunk_times_json: Mapped[str] = mapped_column(Text, default="[]")
    error: Mapped[str | None] = mapped_column(Text)


_SAMPLE_FIELDS = [f for f in LoadSample.__dataclass_fields__ if f != "chunk_times_s"]


class LoadStoreMixin:
    """Load-test methods of the Store (uses its ``_session`` and ``_get``)."""

    def create_load_run(self, workload_id: int, name: str, spec: dict[str, Any]) -> LoadRun:
        with self._session() as s:
            self._get(s, WorkloadRow, workload_id)
            row = LoadRunRow(workload_id=workload_id, name=name, spec_json=json.dumps(spec))
            s.add(row)
            s.flush()
            return _load_run(row, 0)

    def set_load_run_status(self, run_id: int, status: str, error: str | None = None) -> None:
        with self._session() as s:
            row = self._get(s, LoadRunRow, run_id)
            row.status, row.error = status, error
            if status in ("done", "failed"):
                row.finished_at = _now()

    def add_load_samples(self, run_id: int, samples: Sequence[LoadSample]) -> None:
        """Store one level's samples in one transaction."""
        with self._session() as s:
            self._get(s, LoadRunRow, run_id)
            s.add_all(LoadSampleRow(load_run_id=run_id, chunk_times_json=json.dumps(
                list(x.chunk_times_s)), **{f: getattr(x, f) for f in _SAMPLE_FIELDS})
                for x in samples)

    def list_load_runs(self) -> list[LoadRun]:
        with self._session() as s:
            counts = dict(s.execute(select(LoadSampleRow.load_run_id, func.count())
                                    .group_by(LoadSampleRow.load_run_id)).all())
            rows = s.scalars(select(LoadRunRow).order_by(LoadRunRow.id.desc())).all()
            return [_load_run(r, counts.get(r.id, 0)) for r in rows]

    def get_load_run(self, run_id: int) -> LoadRun:
        with self._session() as s:
            row = self._get(s, LoadRunRow, run_id)
            n = s.scalar(select(func.count()).where(LoadSampleRow.load_run_id == run_id))
            return _load_run(row, int(n or 0))

    def get_load_samples(self, run_id: int) -> list[LoadSample]:
        with self._session() as s:
            q = select(LoadSampleRow).where(LoadSampleRow.load_run_id == run_id) \
                .order_by(LoadSampleRow.id)
            return [LoadSample(**{f: getattr(r, f) for f in _SAMPLE_FIELDS},
                               chunk_times_s=tuple(json.loads(r.chunk_times_json)))
                    for r in s.scalars(q)]

    def load_samples_frame(self, run_id: int) -> pd.DataFrame:
        """One row per request of a load run (chunk times as a tuple column)."""
        import pandas as pd

        rows = [asdict(x) for x in self.get_load_samples(run_id)]
        return pd.DataFrame(rows, columns=list(LoadSample.__dataclass_fields__))


def _load_run(r: LoadRunRow, n: int) -> LoadRun:
    return LoadRun(id=r.id, workload_id=r.workload_id, name=r.name,
                   spec=json.loads(r.spec_json), status=r.status, created_at=r.created_at,
                   finished_at=r.finished_at, error=r.error, n_samples=n)
