"""Return on investment: one-time cost, payback, net after 12/36 months, sensitivity, ranges.

* one-time cost = engineering days x day rate + GPU hours (compression, validation) x $/h
* payback (months) = one-time / monthly savings; None when savings <= 0 (never pays back)
* net after m months = monthly savings x m - one-time
* tornado: vary each input to a low and a high value with the others at base, record the
  output's range, sort by swing (|high - low|), largest first
* bootstrap: resample per-request values with replacement (seeded numpy Generator) and
  report the 5th-95th percentile of the statistic, so a figure is shown as a range

All pure functions; the business case (engine.business.case) feeds them.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


def one_time_cost(engineering_days: float, day_rate: float, gpu_hours: float,
                  gpu_price_per_hour: float) -> float:
    """``engineering_days * day_rate + gpu_hours * gpu_price_per_hour`` (USD)."""
    if min(engineering_days, day_rate, gpu_hours, gpu_price_per_hour) < 0:
        raise ValueError("engineering days, day rate, GPU hours and $/h must be >= 0.")
    return engineering_days * day_rate + gpu_hours * gpu_price_per_hour


def payback_months(one_time: float, monthly_savings: float) -> float | None:
    """Months until savings repay the one-time cost; None when it never does (savings <= 0)."""
    if monthly_savings <= 0:
        return None
    return one_time / monthly_savings


def net_after(months: float, one_time: float, monthly_savings: float) -> float:
    """Cumulative net after ``months``: ``monthly_savings * months - one_time``."""
    return monthly_savings * months - one_time


@dataclass(frozen=True)
class Roi:
    one_time: float
    monthly_savings: float
    payback_months: float | None  # None = never pays back
    net_12: float
    net_36: float
    curve: tuple[tuple[int, float], ...]  # (month, cumulative net), months 0..36


def roi(one_time: float, monthly_savings: float, horizon_months: int = 36) -> Roi:
    """Payback, 12/36-month net and the payback curve (month 0 = -one_time)."""
    curve = tuple((m, net_after(m, one_time, monthly_savings)) for m in range(horizon_months + 1))
    return Roi(one_time, monthly_savings, payback_months(one_time, monthly_savings),
               net_after(12, one_time, monthly_savings), net_after(36, one_time, monthly_savings),
               curve)


@dataclass(frozen=True)
class Interval:
    """A point estimate with its bootstrap range (``low``..``high`` percentiles)."""

    point: float
    low: float
    high: float
    n_resamples: int
    method: str


def bootstrap(n: int, statistic: Callable[[np.ndarray], float], n_resamples: int = 2000,
              seed: int = 0, low_pct: float = 5, high_pct: float = 95) -> Interval:
    """Resample ``n`` row indices with replacement; ``statistic(indices)`` per resample.

    Index-based so several per-request arrays can be resampled together (paired: a
    variant and its baseline keep the same requests). ``point`` is the statistic on all rows.
    """
    if n < 1:
        raise ValueError("bootstrap needs at least one value.")
    rng = np.random.default_rng(seed)
    stats = np.array([statistic(rng.integers(0, n, n)) for _ in range(n_resamples)])
    low, high = np.percentile(stats, [low_pct, high_pct])
    return Interval(float(statistic(np.arange(n))), float(low), float(high), n_resamples,
                    f"bootstrap over {n} requests, {n_resamples} resamples, seed {seed}, "
                    f"p{low_pct:g}-p{high_pct:g}")


def bootstrap_mean(values: Sequence[float], **kwargs: Any) -> Interval:
    """Bootstrap interval of the mean of per-request values (NaN/None dropped)."""
    arr = np.asarray([v for v in values if v is not None], dtype=float)
    arr = arr[~np.isnan(arr)]
    return bootstrap(len(arr), lambda idx: float(arr[idx].mean()), **kwargs)


@dataclass(frozen=True)
class TornadoRow:
    factor: str
    low_input: Any
    high_input: Any
    low_value: float  # output with this factor at its low input
    high_value: float
    base_value: float

    @property
    def swing(self) -> float:
        return abs(self.high_value - self.low_value)


def tornado(metric: Callable[[dict[str, Any]], float], base: Mapping[str, Any],
            ranges: Mapping[str, tuple[Any, Any]]) -> list[TornadoRow]:
    """One row per factor in ``ranges``: ``metric`` with that input at low and at high and
    every other input at ``base``; sorted by swing, largest first."""
    base_value = metric(dict(base))
    rows = [TornadoRow(name, lo, hi, metric({**base, name: lo}), metric({**base, name: hi}),
                       base_value) for name, (lo, hi) in ranges.items()]
    return sorted(rows, key=lambda r: r.swing, reverse=True)
