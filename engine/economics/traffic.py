"""Traffic: from requests per day to GPUs, the monthly bill, and the hosted-API alternative.

Provisioning is always-on at peak: a variant needs

    gpus = ceil(peak_requests_per_s / (requests_per_s_per_gpu * utilisation)),  at least 1
    peak_requests_per_s = requests_per_day / 86400 * peak_factor

and the bill is ``gpus * price_per_hour * 730`` hours a month (the hours in an average
month, 8760 / 12), paid whether busy or not. A variant whose engine spans several devices
(tensor x pipeline parallel size ``d``) is provisioned in replicas of ``d`` devices:
``replicas = ceil(peak / (requests_per_s_per_replica * utilisation))`` and
``gpus = replicas * d``, each device at the per-device $/hour. ``utilisation`` is the share of a device's
measured capacity you plan to load it to (headroom for bursts). A variant whose p95
latency exceeds the target does not meet the SLO: it is still sized, and flagged.

A team calling a hosted API pays per token instead::

    monthly = requests_per_month * (input_tokens * $in + output_tokens * $out) / 1e6

so prompt compression (fewer input tokens sent) is priced with the same volume.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from engine.economics.hardware import Hardware

HOURS_PER_MONTH = 730.0
DAYS_PER_MONTH = HOURS_PER_MONTH / 24  # 30.4167, consistent with the 730-hour month
SECONDS_PER_DAY = 86_400.0
# The one monthly cost model every page, command and PDF prices with (and names):
COST_MODEL = "always-on at peak: devices x $/hour per device x 730 hours"


def peak_requests_per_s(requests_per_day: float, peak_factor: float) -> float:
    """``requests_per_day / 86400 * peak_factor``; peak_factor >= 1 (peak over average)."""
    if requests_per_day < 0:
        raise ValueError(f"requests_per_day must be >= 0, got {requests_per_day!r}.")
    if not peak_factor >= 1:
        raise ValueError(f"peak_factor is peak over average traffic, so >= 1; got {peak_factor!r}.")
    return requests_per_day / SECONDS_PER_DAY * peak_factor


def gpus_needed(peak_rps: float, capacity_rps_per_gpu: float) -> int:
    """``ceil(peak / capacity)``, at least 1 (a service is never provisioned at zero)."""
    if not capacity_rps_per_gpu > 0:
        raise ValueError("capacity_rps_per_gpu must be > 0 (a variant that served nothing "
                         "cannot be provisioned).")
    # the tolerance keeps 2.0000000000000004 from becoming 3 devices
    return max(1, math.ceil(peak_rps / capacity_rps_per_gpu - 1e-9))


def monthly_bill(gpus: int, price_per_hour: float) -> float:
    """``gpus * price_per_hour * 730``: always on, at peak provisioning."""
    return gpus * price_per_hour * HOURS_PER_MONTH


@dataclass(frozen=True)
class Provisioning:
    """What serving a traffic profile takes on one hardware type."""

    hardware_key: str
    peak_rps: float
    capacity_rps_per_gpu: float  # requests_per_s * utilisation, per replica (of devices_per_replica)
    gpus: int  # devices in all: replicas x devices_per_replica
    monthly_bill: float
    latency_p95_s: float
    p95_target_s: float
    meets_slo: bool
    reason: str  # "" when the SLO is met, else what misses it
    devices_per_replica: int = 1  # tensor x pipeline parallel size of the variant's engine

    @property
    def replicas(self) -> int:
        return self.gpus // self.devices_per_replica


def provision(hw: Hardware, requests_per_s: float, latency_p95_s: float, requests_per_day: float,
              peak_factor: float, p95_target_s: float, utilisation: float = 1.0,
              price_per_hour: float | None = None, devices_per_replica: int = 1) -> Provisioning:
    """Devices and monthly bill for ``hw`` at the given (measured or projected) speed.

    ``requests_per_s`` is what one replica serves; a replica occupies ``devices_per_replica``
    devices, each billed at ``price_per_hour`` (default ``hw.price_per_hour``, per device).
    """
    if devices_per_replica < 1:
        raise ValueError(f"devices_per_replica must be >= 1, got {devices_per_replica!r}.")
    if not 0 < utilisation <= 1:
        raise ValueError(f"utilisation must be in (0, 1], got {utilisation!r}.")
    if not p95_target_s > 0:
        raise ValueError(f"p95_target_s must be > 0 seconds, got {p95_target_s!r}.")
    peak = peak_requests_per_s(requests_per_day, peak_factor)
    capacity = requests_per_s * utilisation
    gpus = gpus_needed(peak, capacity) * devices_per_replica
    price = hw.price_per_hour if price_per_hour is None else price_per_hour
    meets = latency_p95_s <= p95_target_s
    reason = "" if meets else (f"p95 latency {latency_p95_s:.2f} s exceeds the "
                               f"{p95_target_s:g} s target")
    return Provisioning(hw.key, peak, capacity, gpus, monthly_bill(gpus, price), latency_p95_s,
                        p95_target_s, meets, reason, devices_per_replica)


def requests_per_month(requests_per_day: float) -> float:
    """``requests_per_day * 730 / 24`` (30.42 days)."""
    return requests_per_day * DAYS_PER_MONTH


def requests_per_day(requests_per_month: float) -> float:
    """``requests_per_month * 24 / 730``: the inverse of ``requests_per_month``."""
    if requests_per_month < 0:
        raise ValueError(f"requests_per_month must be >= 0, got {requests_per_month!r}.")
    return requests_per_month / DAYS_PER_MONTH


def api_cost_per_request(input_tokens: float, output_tokens: float, price_in_per_1m: float,
                         price_out_per_1m: float) -> float:
    """USD per request on a hosted API billed per token."""
    if min(input_tokens, output_tokens, price_in_per_1m, price_out_per_1m) < 0:
        raise ValueError("token counts and API prices must be >= 0.")
    return (input_tokens * price_in_per_1m + output_tokens * price_out_per_1m) / 1e6


def api_monthly_cost(input_tokens: float, output_tokens: float, requests_per_day: float,
                     price_in_per_1m: float, price_out_per_1m: float) -> float:
    """Monthly hosted-API bill for mean input/output tokens per request at this volume."""
    return requests_per_month(requests_per_day) * api_cost_per_request(
        input_tokens, output_tokens, price_in_per_1m, price_out_per_1m)
