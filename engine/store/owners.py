"""Which process runs a pilot run: its id, host and heartbeat (revision 0003), and the node
it ran on (revision 0008). Mixed into ``engine.store.store.Store``; ``engine.pilot.liveness``
decides from these whether the process is gone. ORM rows never leave this module."""
from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select, update

from engine.core.domain import RunOwner, RunProgress, Status, VariantRun
from engine.store.base import _now
from engine.store.tables import RunRow, VariantRow


class RunOwnerStoreMixin:
    """Run-ownership methods of the Store (uses its ``_session`` and ``_get``)."""

    def claim_run(self, run_id: int, pid: int, host: str) -> None:
        """Record that process ``pid`` on ``host`` runs this run from now on."""
        with self._session() as s:
            row = self._get(s, RunRow, run_id)
            row.owner_pid, row.owner_host, row.heartbeat_at = pid, host, _now()
            row.progress_json = None  # a resumed run: the last owner's word no longer holds

    def beat(self, run_id: int, pid: int, progress: RunProgress | None = None) -> bool:
        """The owner is alive: refresh the heartbeat, and store where the pilot is when
        ``progress`` is given. False when another process has claimed the run since (a resume
        elsewhere), so the old owner's heartbeat stops counting."""
        values: dict[str, Any] = {"heartbeat_at": _now()}
        if progress is not None:
            values["progress_json"] = json.dumps(progress.as_dict())
        with self._session() as s:
            done = s.execute(update(RunRow).where(RunRow.id == run_id, RunRow.owner_pid == pid)
                             .values(**values))
            return done.rowcount == 1

    def active_run_owners(self) -> list[RunOwner]:
        """Owners of every pending or running run that has one (runs stored before revision
        0003 have none)."""
        with self._session() as s:
            q = select(RunRow).where(RunRow.status.in_([Status.PENDING, Status.RUNNING]),
                                     RunRow.owner_pid.is_not(None))
            return [RunOwner(r.id, Status(r.status), r.owner_pid, r.owner_host or "",
                             r.heartbeat_at) for r in s.scalars(q)]

    def requeue_run(self, run_id: int) -> None:
        """A run handed to Ray (new, or stopped and resumed): pending and queued from now,
        with no owner until the worker that picks it up claims it, so the liveness check
        does not take an old, dead owner for the queued run's.
        Its variants not done are pending again (to be run), not "failed" by the stop that
        ended the run before."""
        with self._session() as s:
            row = self._get(s, RunRow, run_id)
            row.status, row.error, row.finished_at = Status.PENDING.value, None, None
            row.owner_pid = row.owner_host = row.heartbeat_at = None
            row.queued_at = _now()
            s.execute(update(VariantRow).where(VariantRow.run_id == run_id,
                                               VariantRow.status != Status.DONE.value)
                      .values(status=Status.PENDING.value, error=None))

    def unqueue_run(self, run_id: int, status: Status, error: str | None,
                    variants: tuple[VariantRun, ...] = ()) -> None:
        """Ray did not take the run after all: back to ``status`` (as it was), not queued,
        and ``variants`` (as they were before ``requeue_run``) with their statuses."""
        with self._session() as s:
            row = self._get(s, RunRow, run_id)
            row.status, row.error, row.queued_at = Status(status).value, error, None
            if Status(status).finished:
                row.finished_at = _now()
            for v in variants:
                s.execute(update(VariantRow).where(VariantRow.id == v.id)
                          .values(status=Status(v.status).value, error=v.error))

    def set_run_node(self, run_id: int, node: dict[str, Any]) -> None:
        """Record where the run's pilot runs (engine.jobs.node.this_node: host, GPUs, Ray
        node id), written by the process that runs it when the pilot starts."""
        with self._session() as s:
            self._get(s, RunRow, run_id).node_json = json.dumps(node, sort_keys=True)

    def set_run_hardware(self, run_id: int, key: str) -> None:
        """Price the run as catalog entry ``key`` (its spec's ``cost.hardware``): a pilot
        priced as the detected device, re-detected on the node that runs it."""
        with self._session() as s:
            row = self._get(s, RunRow, run_id)
            spec = json.loads(row.spec_json)
            spec.setdefault("cost", {})["hardware"] = key
            row.spec_json = json.dumps(spec)

    def get_run_node(self, run_id: int) -> dict[str, Any] | None:
        """Where the run's pilot ran; None for a run stored before revision 0008 or one
        whose pilot has not started."""
        with self._session() as s:
            text = s.scalar(select(RunRow.node_json).where(RunRow.id == run_id))
        return json.loads(text) if text else None
