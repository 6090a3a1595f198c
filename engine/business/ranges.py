"""Bootstrap ranges of the business case: a variant's accuracy, latency and monthly bill,
and the paired monthly saving, over the pilot's requests resampled with replacement.

Throughput of a resample scales with 1 / its mean latency; the bill is re-provisioned at
that capacity (engine.economics.traffic), so a range is as wide as the bill really moves.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from engine.business.types import Assumptions, MeasuredVariant, VariantCase
from engine.economics import roi, traffic

BOOTSTRAP_METHOD = ("requests resampled with replacement (seeded); throughput scales with "
                    "1 / mean latency of the resample; p5-p95 of the resampled figure")

def _lat_scale(lat: np.ndarray, idx: np.ndarray) -> float:
    """Throughput factor of a resample: mean latency of all / mean latency of the resample."""
    return float(lat.mean() / lat[idx].mean()) if lat[idx].mean() > 0 else 1.0


def _bill(plan: traffic.Provisioning, price: float, scale: float) -> float:
    replicas = traffic.gpus_needed(plan.peak_rps, plan.capacity_rps_per_gpu * scale)
    return traffic.monthly_bill(replicas * plan.devices_per_replica, price)


def with_intervals(row: VariantCase, mv: MeasuredVariant, a: Assumptions) -> VariantCase:
    if not mv.ok or not mv.latency_s:
        return row
    kw = {"n_resamples": a.bootstrap_resamples, "seed": a.seed}
    lat = np.asarray(mv.latency_s)
    raw = a.accuracy_metric.removesuffix("_retention")
    acc_iv = None
    values = [v for v in mv.per_request.get(raw, ()) if not np.isnan(v)]
    if values and not (row.is_baseline and raw.startswith("base_")) and \
            not a.accuracy_metric.endswith("_retention"):
        acc_iv = roi.bootstrap_mean(values, **kw)
    cost_iv = None
    if row.provisioning and row.target:
        price, plan = row.target.hardware.price_per_hour, row.provisioning
        cost_iv = _with_speed_spread(lambda f: roi.bootstrap(
            len(lat), lambda idx: _bill(plan, price, _lat_scale(lat, idx) * f), **kw),
            mv.speed_spread)
    return replace(row, accuracy_interval=acc_iv, latency_interval=roi.bootstrap_mean(lat, **kw),
                   monthly_cost_interval=cost_iv)


def savings_interval(mb: MeasuredVariant, rb: VariantCase, mv: MeasuredVariant, rv: VariantCase,
                      a: Assumptions) -> roi.Interval | None:
    """Baseline bill - variant bill over the same resampled requests (paired)."""
    if not (rb.provisioning and rv.provisioning and rb.target and rv.target):
        return None
    common = sorted(set(mb.request_index) & set(mv.request_index))
    if not common:
        return None
    pos_b = {r: i for i, r in enumerate(mb.request_index)}
    pos_v = {r: i for i, r in enumerate(mv.request_index)}
    lat_b = np.asarray([mb.latency_s[pos_b[r]] for r in common])
    lat_v = np.asarray([mv.latency_s[pos_v[r]] for r in common])

    def saving(f: float) -> roi.Interval:
        # f > 1: the baseline measured slower and the variant faster than their medians
        fb, fv = max(1e-6, 1 - (f - 1) * _half(mb)), max(1e-6, 1 + (f - 1) * _half(mv))

        def stat(idx: np.ndarray) -> float:
            return (_bill(rb.provisioning, rb.target.hardware.price_per_hour,
                          _lat_scale(lat_b, idx) * fb)
                    - _bill(rv.provisioning, rv.target.hardware.price_per_hour,
                            _lat_scale(lat_v, idx) * fv))
        return roi.bootstrap(len(common), stat, n_resamples=a.bootstrap_resamples, seed=a.seed)
    if not (mb.speed_spread or mv.speed_spread):
        return saving(1.0)
    point, low, high = saving(1.0), saving(0.0), saving(2.0)
    return replace(point, low=min(low.low, point.low), high=max(high.high, point.high),
                   method=point.method + SPREAD_METHOD)


SPREAD_METHOD = ("; widened by half the spread of tokens/s over the timed passes either way "
                 "(the measurement's own noise, engine.pilot.protocol)")


def _half(mv: MeasuredVariant) -> float:
    return mv.speed_spread / 2


def _with_speed_spread(interval_at, spread: float) -> roi.Interval:
    """``interval_at(speed factor)`` at the median speed, widened to cover the bill at the
    slowest and fastest passes (+-half the relative spread): the bill falls with speed."""
    point = interval_at(1.0)
    if not spread:
        return point
    fast, slow = interval_at(1 + spread / 2), interval_at(max(1e-6, 1 - spread / 2))
    return replace(point, low=min(fast.low, point.low), high=max(slow.high, point.high),
                   method=point.method + SPREAD_METHOD)
