"""The link from a load test into the business case: a load run's capacity at its SLO as
``Assumptions`` fields, so the case sizes replicas with measured capacity under load.

It lives here, not in engine.load, because the business case sits above the load test in
the layers: engine.business reads load runs, engine.load knows nothing of the case.
"""
from __future__ import annotations

from typing import Any

from engine.load.metrics import capacity_at_slo
from engine.load.replay import load_levels


def capacity_assumption(store, load_run_id: int, names: dict[str, str] | None = None,
                        min_attainment: float = 0.9) -> dict[str, Any]:
    """``Assumptions`` fields that size the business case with a load run's capacity at SLO.

    ``names`` maps the load run's variant names to the pilot's (same name when left out).
    Variants with no level meeting the SLO are left out (they keep single-stream sizing), and
    the source says so. Use: ``Assumptions(**capacity_assumption(store, 3), ...)``.
    """
    caps = capacity_at_slo(load_levels(store, load_run_id), min_attainment)
    names = names or {}
    given = tuple((names.get(c.variant, c.variant), c.requests_per_s, c.e2e_p99_s)
                  for c in caps.values() if c.requests_per_s is not None)
    missed = [v for v, c in caps.items() if c.requests_per_s is None]
    source = (f"load run {load_run_id}, levels with >= {min_attainment:.0%} of requests in SLO"
              + (f"; no level met the SLO for {', '.join(missed)}" if missed else ""))
    return {"load_capacity": given, "load_capacity_source": source}
