"""Is the process running a pilot run still there? A run records its owner (process id and
host) and a heartbeat while it runs; a reader that finds a pending or running run whose owner
is gone marks it interrupted, so ``roilab resume`` can finish it, instead of showing
"running" forever after a SIGKILL, a reboot or an out-of-memory kill.

Gone means: on this host, no process with that id, or one whose heartbeat stopped longer ago
than ``STALE_S`` (the id was reused by another process); on another host (a shared store),
only a heartbeat older than ``STALE_S``, since its process table cannot be read from here.
Runs stored before revision 0003 have no owner and are never guessed dead.
"""
from __future__ import annotations

import os
import socket
import threading
from datetime import UTC, datetime

from engine.core.domain import Run, RunOwner, RunProgress, Status
from engine.store.store import Store

HEARTBEAT_S = 10.0  # how often a running pilot says it is alive
STALE_S = 300.0  # a heartbeat this old means the owner is gone (long model loads stay under it)


def this_host() -> str:
    return socket.gethostname()


class Heartbeat:
    """Claims a run for this process and refreshes its heartbeat from a daemon thread until
    the block ends (the main thread may sit in one long model load or generation).

    ``record(progress)`` keeps where the pilot is, in memory only: the pilot calls it from
    its own thread, inside timed passes too, so it must cost nothing. The heartbeat's thread
    stores it with each beat (``Store.beat``), so a follower in another process (a Ray-run
    pilot's CLI or page) can show it; no more often than that: writes every 2 s raised a CPU
    pass's peak RSS by 16%."""

    def __init__(self, store: Store, run_id: int, every_s: float = HEARTBEAT_S):
        self.store, self.run_id, self.every_s = store, run_id, every_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._latest: RunProgress | None = None  # set by the pilot's thread (one reference)

    def record(self, progress: RunProgress) -> None:
        self._latest = progress

    def __enter__(self) -> Heartbeat:
        self.store.claim_run(self.run_id, os.getpid(), this_host())
        self._thread = threading.Thread(target=self._beat, name=f"roilab-heartbeat-{self.run_id}",
                                        daemon=True)
        self._thread.start()
        return self

    def _beat(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                if not self.store.beat(self.run_id, os.getpid(), self._latest):
                    return  # claimed by another process: stop speaking for it
            except Exception:  # noqa: BLE001 - a locked or unreachable store: try next beat
                continue

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.every_s + 5)
        if self._latest is not None:  # the last word, though no beat is due yet
            try:
                self.store.beat(self.run_id, os.getpid(), self._latest)
            except Exception:  # noqa: BLE001 - a display hint: never fail the run for it
                pass


def owner_is_gone(owner: RunOwner, now: datetime | None = None, host: str | None = None,
                  pid_exists=None) -> str | None:
    """Why ``owner`` is gone, or None while it may still be running."""
    import psutil

    now = now or datetime.now(UTC)
    beat = owner.heartbeat_at if owner.heartbeat_at.tzinfo else \
        owner.heartbeat_at.replace(tzinfo=UTC)
    age = (now - beat).total_seconds()
    where = f"process {owner.pid} on {owner.host}"
    if owner.host == (host or this_host()):
        if not (pid_exists or psutil.pid_exists)(owner.pid):
            return f"its {where} is gone (last heartbeat {age:,.0f} s before this check)"
    if age > STALE_S:
        return f"its {where} stopped its heartbeat {age:,.0f} s ago (limit {STALE_S:.0f} s)"
    return None


def stop_run(store: Store, run_id: int, status: Status, reason: str) -> None:
    """End a run that did not finish: its unfinished variants failed with ``reason`` (their
    finished siblings keep their results), the run ``status`` (interrupted or cancelled)."""
    for v in store.get_run(run_id).variants:
        if v.status in (Status.PENDING, Status.RUNNING):
            store.set_variant_status(v.id, Status.FAILED, reason)
    store.set_run_status(run_id, status, reason)


def reap_dead_runs(store: Store) -> list[Run]:
    """Mark interrupted every pending or running run whose owner is gone; the runs marked."""
    reaped = []
    for owner in store.active_run_owners():
        why = owner_is_gone(owner)
        if why is None:
            continue
        stop_run(store, owner.run_id, Status.INTERRUPTED,
                 f"Interrupted: {why}; `roilab resume {owner.run_id}` finishes it.")
        reaped.append(store.get_run(owner.run_id))
    return reaped
