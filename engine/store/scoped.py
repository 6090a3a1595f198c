"""A store scoped to one run's requests, for readers that read a whole workload's requests
only to pick out those the run has results for.

``engine.pilot.report.side_by_side`` (the Results page's per-request table and both PDFs'
sample appendix) builds ``{index: request}`` from ``store.get_requests(workload_id)`` and then
looks up the run's result indices: 100,000 rows decoded (seconds) to show 12. Through
``RunRequests`` the same call reads only those 12 rows; every other method is the store's.
(When side_by_side asks ``get_requests(..., indices=...)`` itself, this wrapper can go.)
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from engine.core.domain import StoredRequest

if TYPE_CHECKING:
    from engine.store.store import Store


class RunRequests:
    """``store`` for everything, except that ``get_requests`` of the run's workload without
    ``indices`` returns only the requests the run's variants have results for."""

    def __init__(self, store: Store, run_id: int) -> None:
        self._store, self._run_id = store, run_id
        self._scope: tuple[int, list[int]] | None = None

    def get_requests(self, workload_id: int, limit: int | None = None,
                     indices: Iterable[int] | None = None) -> list[StoredRequest]:
        if indices is None:
            if self._scope is None:
                run = self._store.get_run(self._run_id)
                self._scope = run.workload_id, self._store.result_indices(self._run_id)
            if workload_id == self._scope[0]:
                indices = self._scope[1]
        return self._store.get_requests(workload_id, limit=limit, indices=indices)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)
