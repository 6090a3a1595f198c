"""Where a run stands as a job, from the store alone (no Ray connection, so any page or
command can say it): a run handed to Ray and not yet started by a worker is *queued*, with
its place in line by the time it was handed over; a running one shows how many of its
variants are finished. Ray orders the tasks that wait for the same resources (a pilot asking
the box's one GPU waits for the pilot holding it); the place counts every queued run of the
store, so on a cluster with free room a run may start before the ones listed ahead of it.
"""
from __future__ import annotations

from collections.abc import Iterable

from engine.core.domain import Run, Status


def queue_places(runs: Iterable[Run]) -> dict[int, int]:
    """``{run id: place}`` (1 = next to start) of the queued runs among ``runs``."""
    queued = sorted((r for r in runs if r.queued), key=lambda r: (r.queued_at, r.id))
    return {r.id: i for i, r in enumerate(queued, 1)}


def run_now(store, run_id: int) -> tuple[Run, str]:
    """The run as stored now and ``job_state`` of it, for whatever polls a job (the Run pilot
    page's watch, a followed CLI pilot). A run whose process died is marked interrupted
    first; the other runs are read only while this one is queued (for its place)."""
    from engine.pilot.liveness import reap_dead_runs

    reap_dead_runs(store)
    run = store.get_run(run_id)
    return run, job_state(run, queue_places(store.list_runs()) if run.queued else {})


def ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def job_state(run: Run, places: dict[int, int]) -> str:
    """``queued (2nd in line)``, ``running (1 of 3 variants done)`` with where the pilot is
    when its process has said (``; fp8-weights: pass 2/3: generating 1-32 of 32``), or the
    run's status."""
    if run.id in places:
        return f"queued ({ordinal(places[run.id])} in line)"
    if run.status == Status.RUNNING:
        done = sum(v.status == Status.DONE for v in run.variants)
        now = f"; {run.progress.variant}: {run.progress.message}" if run.progress else ""
        return f"running ({done} of {len(run.variants)} variants done{now})"
    return str(run.status)
