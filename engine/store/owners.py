"""Which process runs a pilot run: its id, host and heartbeat (revision 0003). Mixed into
``engine.store.store.Store``; ``engine.pilot.liveness`` decides from these whether the
process is gone. ORM rows never leave this module."""
from __future__ import annotations

from sqlalchemy import select, update

from engine.core.domain import RunOwner, Status
from engine.store.base import _now
from engine.store.tables import RunRow


class RunOwnerStoreMixin:
    """Run-ownership methods of the Store (uses its ``_session`` and ``_get``)."""

    def claim_run(self, run_id: int, pid: int, host: str) -> None:
        """Record that process ``pid`` on ``host`` runs this run from now on."""
        with self._session() as s:
            row = self._get(s, RunRow, run_id)
            row.owner_pid, row.owner_host, row.heartbeat_at = pid, host, _now()

    def beat(self, run_id: int, pid: int) -> bool:
        """The owner is alive: refresh the heartbeat. False when another process has claimed
        the run since (a resume elsewhere), so the old owner's heartbeat stops counting."""
        with self._session() as s:
            done = s.execute(update(RunRow).where(RunRow.id == run_id, RunRow.owner_pid == pid)
                             .values(heartbeat_at=_now()))
            return done.rowcount == 1

    def active_run_owners(self) -> list[RunOwner]:
        """Owners of every pending or running run that has one (runs stored before revision
        0003 have none)."""
        with self._session() as s:
            q = select(RunRow).where(RunRow.status.in_([Status.PENDING, Status.RUNNING]),
                                     RunRow.owner_pid.is_not(None))
            return [RunOwner(r.id, Status(r.status), r.owner_pid, r.owner_host or "",
                             r.heartbeat_at) for r in s.scalars(q)]
