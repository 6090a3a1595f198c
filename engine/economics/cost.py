"""Cost arithmetic: turn measured throughput into $/1M tokens, $/1k requests and $/month.

Everything here is a pure function of its arguments (no I/O, no clocks, no model code), so
every dollar figure the app shows can be recomputed by hand from the measured throughput
and the hourly price.

Prices come in as numbers: the hardware catalog is engine.economics.hardware, and a key
resolves in one place, the store's merged catalog (``Store.get_hardware``), which includes
the user's own entries.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

SECONDS_PER_HOUR = 3600.0


def _require_positive(value: float, what: str) -> None:
    if not value > 0:  # also rejects NaN
        raise ValueError(f"{what} must be > 0 to compute a cost, got {value!r}.")


def cost_per_million_tokens(price_per_hour: float, tokens_per_s: float) -> float:
    """USD per 1M tokens: ``price_per_hour / (tokens_per_s * 3600) * 1e6``.

    Raises ValueError when ``tokens_per_s <= 0`` (no throughput, no finite cost).
    """
    _require_positive(tokens_per_s, "tokens_per_s")
    return price_per_hour / (tokens_per_s * SECONDS_PER_HOUR) * 1e6


def occupied_price_per_hour(price_per_device_hour: float, devices: int = 1) -> float:
    """USD per hour of what one engine occupies: ``price_per_device_hour * devices``.

    A variant served with tensor parallel size 2 holds two GPUs for every hour it runs, so it
    pays two GPUs' price (``engine.economics.devices.devices_of`` reads the count from a stored spec).
    Raises ValueError when ``devices < 1``.
    """
    if devices < 1:
        raise ValueError(f"devices must be >= 1 (tensor x pipeline parallel size), got "
                         f"{devices!r}.")
    return price_per_device_hour * devices


def cost_per_1k_requests(price_per_hour: float, requests_per_s: float) -> float:
    """USD per 1,000 requests: ``price_per_hour / (requests_per_s * 3600) * 1000``.

    Raises ValueError when ``requests_per_s <= 0``.
    """
    _require_positive(requests_per_s, "requests_per_s")
    return price_per_hour / (requests_per_s * SECONDS_PER_HOUR) * 1000.0


def requests_per_s(n_requests: int, wall_s: float) -> float:
    """Measured request throughput: ``n_requests / wall_s``.

    Raises ValueError when ``wall_s <= 0`` or ``n_requests < 0``.
    """
    _require_positive(wall_s, "wall_s")
    if n_requests < 0:
        raise ValueError(f"n_requests must be >= 0, got {n_requests!r}.")
    return n_requests / wall_s


def monthly_cost(
    price_per_hour: float,
    requests_per_s_capacity: float,
    requests_per_month: float,
    utilisation: float = 1.0,
) -> float:
    """USD to serve a monthly request volume, paying only for busy hours.

    ``hours = requests_per_month / (requests_per_s_capacity * utilisation * 3600)``
    ``cost = hours * price_per_hour``

    Pay-per-busy-hour model: no idle or reserved capacity is charged. ``utilisation`` in
    (0, 1] is the fraction of measured capacity actually achieved in production; values
    below 1 inflate the cost (0.5 doubles it). Raises ValueError on non-positive capacity,
    utilisation outside (0, 1], or a negative volume.
    """
    _require_positive(requests_per_s_capacity, "requests_per_s_capacity")
    if not 0 < utilisation <= 1:
        raise ValueError(f"utilisation must be in (0, 1], got {utilisation!r}.")
    if requests_per_month < 0:
        raise ValueError(f"requests_per_month must be >= 0, got {requests_per_month!r}.")
    hours = requests_per_month / (requests_per_s_capacity * utilisation * SECONDS_PER_HOUR)
    return hours * price_per_hour


def savings(baseline_cost: float, variant_cost: float) -> tuple[float, float]:
    """``(absolute, fraction)`` saved by the variant versus the baseline.

    ``absolute = baseline_cost - variant_cost`` (positive = the variant is cheaper);
    ``fraction = absolute / baseline_cost``, or 0.0 when ``baseline_cost == 0``.
    """
    absolute = baseline_cost - variant_cost
    fraction = absolute / baseline_cost if baseline_cost != 0 else 0.0
    return absolute, fraction


@dataclass(frozen=True)
class UnitCosts:
    """$/1M input tokens, $/1M output tokens and $/1k requests at a stated utilisation."""

    cost_per_1m_input_tokens: float | None  # None when no input tokens / no prefill time
    cost_per_1m_output_tokens: float | None
    cost_per_1k_requests: float | None
    prefill_fraction: float  # share of GPU time charged to input tokens
    utilisation: float
    method: str


UNIT_COST_METHOD = (
    "GPU time split by phase: the pilot's paid time (wall time / utilisation) x $/h is "
    "shared between input and output tokens by the measured time to first token (prefill, "
    "including prompt compression) versus the rest of each request's latency (decode); "
    "each share is divided by the tokens of its phase.")


def unit_costs(price_per_hour: float, wall_s: float, n_requests: int, input_tokens: float,
               output_tokens: float, prefill_s: float, decode_s: float,
               utilisation: float = 1.0) -> UnitCosts:
    """Price the measured work per token of each kind and per request.

    ``dollars = price_per_hour * wall_s / 3600 / utilisation`` (what the pilot's work costs
    when the hardware is busy ``utilisation`` of the time it is paid for);
    ``f = prefill_s / (prefill_s + decode_s)``; ``$/1M input = dollars * f / input_tokens *
    1e6``; ``$/1M output = dollars * (1 - f) / output_tokens * 1e6``; ``$/1k requests =
    dollars / n_requests * 1000``. With ``f = 0`` and utilisation 1 the output figure is
    exactly the standard ``$/h / (tokens/s * 3600) * 1e6``. Raises ValueError on a
    non-positive wall time, utilisation outside (0, 1] or negative times.
    """
    _require_positive(wall_s, "wall_s")
    if not 0 < utilisation <= 1:
        raise ValueError(f"utilisation must be in (0, 1], got {utilisation!r}.")
    if prefill_s < 0 or decode_s < 0:
        raise ValueError("prefill_s and decode_s must be >= 0 (seconds from the results).")
    dollars = price_per_hour * wall_s / SECONDS_PER_HOUR / utilisation
    phase_s = prefill_s + decode_s
    f = prefill_s / phase_s if phase_s > 0 else 0.0
    return UnitCosts(
        cost_per_1m_input_tokens=dollars * f / input_tokens * 1e6 if input_tokens > 0 else None,
        cost_per_1m_output_tokens=(dollars * (1 - f) / output_tokens * 1e6
                                   if output_tokens > 0 else None),
        cost_per_1k_requests=dollars / n_requests * 1000 if n_requests > 0 else None,
        prefill_fraction=f, utilisation=utilisation, method=UNIT_COST_METHOD)


@dataclass(frozen=True)
class MeasuredThroughput:
    """What a replay measured for one variant: the inputs to ``variant_costs``."""

    name: str
    output_tokens_total: int
    n_requests: int
    wall_s: float
    devices: int = 1  # devices its engine occupied: priced at devices x the $/hour


@dataclass(frozen=True)
class VariantCost:
    """Cost figures for one variant; every cost is None when throughput was zero/failed."""

    name: str
    tokens_per_s: float | None
    requests_per_s: float | None
    cost_per_1m_output_tokens: float | None
    cost_per_1k_requests: float | None
    monthly_cost: float | None
    monthly_savings: float | None  # vs the baseline; positive = cheaper than the baseline
    savings_fraction: float | None


def _throughput(count: float, wall_s: float) -> float | None:
    """``count / wall_s``, or None when either is not positive (failed or empty run)."""
    if not (wall_s > 0 and count > 0):
        return None
    return count / wall_s


def _cost_row(run: MeasuredThroughput, price_per_device: float,
              requests_per_month: float) -> VariantCost:
    tok_s = _throughput(run.output_tokens_total, run.wall_s)
    req_s = _throughput(run.n_requests, run.wall_s)
    price_per_hour = occupied_price_per_hour(price_per_device, run.devices)
    return VariantCost(
        name=run.name,
        tokens_per_s=tok_s,
        requests_per_s=req_s,
        cost_per_1m_output_tokens=(
            cost_per_million_tokens(price_per_hour, tok_s) if tok_s is not None else None
        ),
        cost_per_1k_requests=(
            cost_per_1k_requests(price_per_hour, req_s) if req_s is not None else None
        ),
        monthly_cost=(
            monthly_cost(price_per_hour, req_s, requests_per_month) if req_s is not None else None
        ),
        monthly_savings=None,
        savings_fraction=None,
    )


def variant_costs(
    rows: Iterable[MeasuredThroughput | tuple],
    price_per_hour: float,
    requests_per_month: float,
    baseline_name: str,
) -> list[VariantCost]:
    """Cost every variant on the same hardware price and monthly volume.

    ``rows`` are MeasuredThroughput or ``(name, output_tokens_total, n_requests, wall_s[,
    devices])`` tuples. ``price_per_hour`` is per device: a row occupying ``devices`` devices
    is priced at ``devices x price_per_hour``.
    ``tokens_per_s = output_tokens_total / wall_s``; ``requests_per_s = n_requests / wall_s``;
    the costs follow from the functions above. Savings are against the row named
    ``baseline_name``; they are None for a variant without a monthly cost, or when the
    baseline is missing or has none. A failed variant (zero tokens, requests or time) gets
    None costs instead of raising. Order of ``rows`` is kept.
    """
    runs = [r if isinstance(r, MeasuredThroughput) else MeasuredThroughput(*r) for r in rows]
    costed = [_cost_row(r, price_per_hour, requests_per_month) for r in runs]
    base = next((c.monthly_cost for c in costed if c.name == baseline_name), None)
    return [_with_savings(c, base) for c in costed]


def _with_savings(row: VariantCost, baseline_monthly: float | None) -> VariantCost:
    if row.monthly_cost is None or baseline_monthly is None:
        return row
    absolute, fraction = savings(baseline_monthly, row.monthly_cost)
    return replace(row, monthly_savings=absolute, savings_fraction=fraction)
