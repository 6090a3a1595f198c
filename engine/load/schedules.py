"""When each request of a load level is sent (pure functions, no I/O).

- ``concurrency``: closed loop, ``level`` requests in flight at once;
- ``poisson``: open loop, arrivals at ``level`` requests/s with exponential gaps (seeded);
- ``trace``: the log's own arrival times (``metadata.timestamp`` and similar) sped up by
  ``level`` (2 = twice as fast). Refused, with the reason, when the requests carry none.
"""
from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import numpy as np

from engine.core.domain import LogRequest
from engine.core.errors import SpecError
from engine.load.spec import LoadSpec

TIMESTAMP_KEYS = ("timestamp", "created_at", "created", "time", "ts", "request_time")


def poisson_arrivals(rate: float, n: int, seed: int = 0) -> list[float]:
    """``n`` arrival offsets (s) of a Poisson process at ``rate``/s; the first at 0."""
    gaps = np.random.default_rng(seed).exponential(1.0 / rate, size=max(n - 1, 0))
    return [0.0, *np.cumsum(gaps).tolist()][:n]


def request_timestamp(req: LogRequest) -> float | None:
    """Epoch seconds of a request from its metadata (ISO 8601 or epoch s/ms), or None."""
    for key in TIMESTAMP_KEYS:
        value = req.metadata.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value) / (1000.0 if value > 1e11 else 1.0)  # ms since epoch
        if isinstance(value, str) and value.strip():
            try:
                return datetime.fromisoformat(value.strip().replace("Z", "+00:00")).timestamp()
            except ValueError:
                continue
    return None


def trace_arrivals(timestamps: Sequence[float], speedup: float) -> list[float]:
    """Offsets from the first (earliest) request, divided by ``speedup``, in log order."""
    t0 = min(timestamps)
    return [(t - t0) / speedup for t in timestamps]


def trace_order(requests: Sequence[LogRequest]) -> list[tuple[int, float]]:
    """(workload index, timestamp) sorted by time; SpecError when any request has none."""
    stamped = [(i, request_timestamp(r)) for i, r in enumerate(requests)]
    missing = [i for i, t in stamped if t is None]
    if missing:
        raise SpecError(f"The trace schedule replays the log's own timing, but {len(missing)} "
                        f"of {len(requests)} requests carry no timestamp in their metadata "
                        f"(looked for {', '.join(TIMESTAMP_KEYS)}; first without: request "
                        f"{missing[0]}). Use the concurrency or poisson schedule instead.")
    return sorted(stamped, key=lambda it: it[1])



def plan_levels(spec: LoadSpec, requests: Sequence[LogRequest]) -> dict[float, list[tuple[int, float]]]:
    """Per level: (workload index, arrival offset s) of each request to send.

    Concurrency levels have no offsets (0.0: a free worker sends at once); the workload is
    cycled when a level asks for more requests than it holds.
    """
    n = spec.requests_per_level
    if spec.schedule == "trace":
        order = trace_order(requests)[:n]
        return {lvl: list(zip([i for i, _ in order],
                              trace_arrivals([t for _, t in order], lvl), strict=True))
                for lvl in spec.levels}
    idx = [k % len(requests) for k in range(n)]
    if spec.schedule == "poisson":
        return {lvl: list(zip(idx, poisson_arrivals(lvl, n, spec.seed + j), strict=True))
                for j, lvl in enumerate(spec.levels)}
    return {lvl: [(i, 0.0) for i in idx] for lvl in spec.levels}
