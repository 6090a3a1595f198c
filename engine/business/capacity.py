"""The link from a load test into the business case: a load run's capacity at its SLO as
``Assumptions`` fields, so the case sizes replicas with measured capacity under load.

It lives here, not in engine.load, because the business case sits above the load test in
the layers: engine.business reads load runs, engine.load knows nothing of the case.
"""
from __future__ import annotations

from typing import Any

from engine.load.metrics import capacity_at_slo
from engine.load.replay import load_levels
from engine.load.spec import stored_load_spec


def capacity_assumption(store, load_run_id: int, names: dict[str, str] | None = None,
                        min_attainment: float = 0.9) -> dict[str, Any]:
    """``Assumptions`` fields that size the business case with a load run's capacity at SLO.

    ``names`` maps the load run's variant names to the pilot's (same name when left out).
    Variants with no level meeting the SLO are left out (they keep single-stream sizing), and
    the source says so. The source also says how many tokens a request generated at each
    capacity level and whether the output length was fixed: capacities of variants that
    stopped at different lengths measure different work. Use:
    ``Assumptions(**capacity_assumption(store, 3), ...)``.
    """
    spec = stored_load_spec(store.get_load_run(load_run_id))
    caps = capacity_at_slo(load_levels(store, load_run_id), min_attainment)
    names = names or {}
    given = tuple((names.get(c.variant, c.variant), c.requests_per_s, c.e2e_p99_s)
                  for c in caps.values() if c.requests_per_s is not None)
    missed = [v for v, c in caps.items() if c.requests_per_s is None]
    tokens = ", ".join(f"{names.get(c.variant, c.variant)} {c.output_tokens_per_request:.1f}"
                       for c in caps.values() if c.output_tokens_per_request is not None)
    length = (f"fixed at {spec.max_new_tokens}" if spec.fixed_output
              else f"natural, up to {spec.max_new_tokens}")
    source = (f"load run {load_run_id}, levels with >= {min_attainment:.0%} of requests in SLO"
              + (f"; output tokens per request ({length}): {tokens}" if tokens else "")
              + (f"; no level met the SLO for {', '.join(missed)}" if missed else ""))
    return {"load_capacity": given, "load_capacity_source": source}
