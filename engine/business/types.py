"""The business case's data: its inputs (``Assumptions``, ``MeasuredVariant``) and its
answer (``VariantCase`` rows and the ``BusinessCase``). All frozen; built by
engine.business.case, consumed by the dashboard page and the PDF.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import datetime

import pandas as pd

from engine.core.errors import SpecError
from engine.economics import cost, roi, sizing, traffic
from engine.economics.decision import Recommendation, check_metric, check_threshold
from engine.economics.hardware import Hardware

DEFAULT_API = ("GPT-4o list price, $2.50 / 1M input, $10.00 / 1M output tokens "
               "(openai.com/api/pricing, as of 2025-01)")
# a failed variant's reason (VariantCase.reason): this, then the error the pilot stored
FAILED_IN_PILOT = "the variant failed in the pilot: "


@dataclass(frozen=True)
class Assumptions:
    """Every input of the business case, with defaults a user is expected to overwrite."""

    requests_per_day: float = 10_000
    peak_factor: float = 3.0  # peak-hour traffic over the daily average
    p95_target_s: float = 10.0  # latency SLO per request
    utilisation: float = 0.7  # share of a device's measured capacity we load it to
    concurrency: int = 8  # requests served at once per device (KV cache sizing)
    overhead_fraction: float = sizing.DEFAULT_OVERHEAD_FRACTION
    engine_efficiency: float = sizing.DEFAULT_ENGINE_EFFICIENCY  # CPU->GPU projections
    engineering_days: float = 10.0
    day_rate: float = 800.0  # USD per engineering day
    gpu_hours: float = 20.0  # compression + validation, at the target device's $/h
    accuracy_metric: str = "base_cosine"
    accuracy_threshold: float = 0.9
    api_price_in_per_1m: float = 2.50
    api_price_out_per_1m: float = 10.00
    api_price_source: str = DEFAULT_API
    target_hardware: str | None = None  # None = right-size each variant over the catalog
    candidate_kinds: tuple[str, ...] = ("gpu", "cpu")
    kv_bytes_per_token: float | None = None  # None = as stored with the run (KV technique or model config), else 0
    price_factor: float = 1.0  # multiplies every $/h (the tornado's price lever)
    bootstrap_resamples: int = 1000
    seed: int = 0
    # Capacity at the SLO from a load run (engine.business.capacity.capacity_assumption):
    # (variant, requests/s, latency s at that level) sizes those variants instead of their
    # single-stream pilot throughput; empty = single-stream for every variant.
    load_capacity: tuple[tuple[str, float, float | None], ...] = ()
    load_capacity_source: str = ""

    def __post_init__(self) -> None:
        positive = ("peak_factor", "p95_target_s", "utilisation", "concurrency",
                    "engine_efficiency", "price_factor", "bootstrap_resamples")
        for name in positive:
            if not getattr(self, name) > 0:
                raise SpecError(f"Assumption {name!r} must be > 0, got {getattr(self, name)!r}.")
        for name in ("requests_per_day", "engineering_days", "day_rate", "gpu_hours",
                     "api_price_in_per_1m", "api_price_out_per_1m", "accuracy_threshold"):
            if not getattr(self, name) >= 0:
                raise SpecError(f"Assumption {name!r} must be >= 0, got {getattr(self, name)!r}.")
        if self.utilisation > 1:
            raise SpecError(f"Assumption 'utilisation' is a share of capacity in (0, 1], got "
                            f"{self.utilisation!r}; e.g. 0.7 for 70%.")
        if self.peak_factor < 1:
            raise SpecError(f"Assumption 'peak_factor' is peak over average traffic, so >= 1; "
                            f"got {self.peak_factor!r}.")
        if not 0 <= self.overhead_fraction < 1:
            raise SpecError("Assumption 'overhead_fraction' must be in [0, 1), e.g. 0.1.")
        check_metric(self.accuracy_metric)
        check_threshold(self.accuracy_metric, self.accuracy_threshold)
        for name, rps, _lat in self.load_capacity:
            if not rps > 0:
                raise SpecError(f"Load capacity of {name!r} must be > 0 requests/s, got {rps!r}.")

    @classmethod
    def for_run(cls, requests_per_month: float, **changes) -> Assumptions:
        """The business case's inputs for a stored run: the one place a run's stored cost
        settings become assumptions. Its volume (``cost.requests_per_month``) is served
        as ``requests_per_month * 24 / 730`` requests a day; every other input is this
        class's default unless ``changes`` sets it (a ``requests_per_day`` there wins)."""
        return cls(**({"requests_per_day": traffic.requests_per_day(requests_per_month)}
                      | changes))

    def as_rows(self) -> list[tuple[str, object]]:
        """(name, value) pairs for an assumptions table."""
        return [(f.name, getattr(self, f.name)) for f in fields(self)]


@dataclass(frozen=True)
class MeasuredVariant:
    """One variant's stored measurements, the input of ``assemble_case``."""

    name: str
    techniques: str
    ok: bool
    error: str | None
    hardware: Hardware  # what it ran on (priced as); price_per_hour is per device
    batch: int
    n_requests: int
    wall_s: float
    tokens_per_s: float | None
    requests_per_s: float | None
    latency_p95_s: float | None
    weight_bytes: float | None
    kv_bytes_per_token: float | None
    input_tokens_total: float  # tokens sent (after prompt compression)
    output_tokens_total: float
    prefill_s: float  # sum of time to first token (incl. prompt compression)
    decode_s: float  # sum of latency - time to first token
    prompt_tokens_original: float | None  # mean per request
    prompt_tokens_sent: float | None
    output_tokens: float | None
    context_p95_tokens: float  # p95 of (sent prompt + output) tokens per request
    metrics: dict[str, float | None]  # means: ref_exact ... base_cosine
    request_index: tuple[int, ...] = ()
    latency_s: tuple[float, ...] = ()
    per_request: dict[str, tuple[float, ...]] = field(default_factory=dict)  # NaN = none
    model: str = ""  # as in the variant's spec, e.g. "random:llama-3.1-8b"
    random_weights: bool = False  # speed and memory only: the runner skipped accuracy
    n_references: int | None = None  # requests replayed with a reference answer; None: unscored
    devices: int = 1  # devices one engine (replica) occupies: tensor x pipeline parallel size
    # where kv_bytes_per_token comes from, e.g. "measured (reserved by vLLM)" or "estimated
    # from the model config"; weight_bytes are always read back from the loaded model
    kv_source: str = ""
    # (max - min) / median of tokens/s over the variant's timed passes (engine.pilot.protocol):
    # engine.business.ranges widens the bill's range by half of it either way.
    speed_spread: float = 0.0
    # figures the measurement protocol found unstable (engine.pilot.stability): "tokens/s",
    # "p95 latency", "peak memory", "baseline drift"; and why the machine was busy, if it was
    unstable: tuple[str, ...] = ()
    busy: str | None = None

    @property
    def price_per_hour(self) -> float:
        """What one replica costs an hour on the measured hardware: devices x $/device-hour."""
        return cost.occupied_price_per_hour(self.hardware.price_per_hour, self.devices)


@dataclass(frozen=True)
class Alternative:
    """A device of the other kind than the one measured on, where the indicative projection
    meets the p95 target: what it would take there, until a pilot on it measures it."""

    hardware_name: str
    gpus: int  # devices in all
    latency_p95_s: float  # projected
    monthly_bill: float  # projected

    @property
    def devices_label(self) -> str:
        return f"{self.gpus:,} x {self.hardware_name}"


@dataclass(frozen=True)
class VariantCase:
    """One row of the business case table."""

    name: str
    techniques: str
    is_baseline: bool
    ok: bool
    measured_hardware: str
    measured_tokens_per_s: float | None
    measured_requests_per_s: float | None
    measured_latency_p95_s: float | None
    unit_costs: cost.UnitCosts | None  # measured, on measured_hardware, at utilisation
    accuracy: float | None  # the gate metric
    passes_gate: bool
    sizing: sizing.RightSizing | None
    target: sizing.SizingOption | None  # chosen device; target.projection says how
    provisioning: traffic.Provisioning | None
    monthly_cost: float | None  # self-hosted, always-on at peak
    monthly_savings: float | None  # vs the baseline's monthly cost
    api_monthly_cost: float | None  # hosted API for this variant's tokens
    api_monthly_savings: float | None
    reason: str  # why it is not eligible for recommendation; "" when eligible
    accuracy_interval: roi.Interval | None = None
    latency_interval: roi.Interval | None = None
    monthly_cost_interval: roi.Interval | None = None
    recommended: bool = False
    # Random weights: accuracy not measured, so never recommended; its monthly cost and
    # saving are shown as what it would bring "if quality holds".
    speed_memory_only: bool = False
    devices: int = 1  # devices one replica occupies (tensor x pipeline parallel size)
    memory_method: str = ""  # where the sizing's weight and KV figures come from
    measured_hardware_name: str = ""  # readable name of measured_hardware (a catalog key)
    measured_kind: str = ""  # "cpu" or "gpu": the kind of device the pilot measured it on
    unstable: tuple[str, ...] = ()  # as MeasuredVariant.unstable
    busy: str | None = None  # why the machine was busy while it was measured
    # A device of the other kind whose indicative projection (``indicative``) would meet the
    # p95 target where the chosen one does not: not counted, named so a pilot there settles it.
    alternative: Alternative | None = None

    @property
    def projected(self) -> bool:
        return bool(self.target and self.target.projection and self.target.projection.projected)

    @property
    def indicative(self) -> bool:
        """Projected across device kinds (CPU to GPU or back): a bound the project measured
        to be far off (engine.economics.sizing.CROSS_KIND_CHECK), never counted as meeting
        the p95 target nor recommended."""
        return self.projected and bool(self.measured_kind) and \
            self.target.hardware.kind != self.measured_kind  # type: ignore[union-attr]

    @property
    def cost_unstable(self) -> bool:
        """Its speed (and so its bill) rests on passes that spread too far, or on a run whose
        baseline drifted."""
        return "tokens/s" in self.unstable or "baseline drift" in self.unstable

    @property
    def latency_unstable(self) -> bool:
        return "p95 latency" in self.unstable or "baseline drift" in self.unstable

    @property
    def method(self) -> str:
        """How the serving figures were projected, then where the memory figures come from."""
        proj = self.target.projection.method if self.target and self.target.projection else ""
        return "; ".join(filter(None, [proj, self.memory_method]))

    @property
    def target_hardware(self) -> str | None:
        return self.target.hardware.key if self.target else None

    @property
    def target_name(self) -> str | None:
        """The target device's readable name (``target_hardware`` is its catalog key)."""
        return self.target.hardware.name if self.target else None

    @property
    def devices_label(self) -> str:
        """``2 x NVIDIA A10G`` (what the bill pays for), ``no device`` when none serves it."""
        if not (self.target and self.provisioning):
            return "no device"
        plan = self.provisioning
        spans = (f" ({plan.replicas} replica{'s' if plan.replicas > 1 else ''} of "
                 f"{plan.devices_per_replica})" if plan.devices_per_replica > 1 else "")
        return f"{plan.gpus:,} x {self.target.hardware.name}{spans}"

    @property
    def meets_slo(self) -> bool:
        return bool(self.provisioning and self.provisioning.meets_slo)


@dataclass(frozen=True)
class BusinessCase:
    """Everything the business-case page and PDF show, for one pilot."""

    name: str  # the pilot (run) name
    run_id: int | None
    workload: str
    assumptions: Assumptions
    measured_hardware: Hardware
    rows: tuple[VariantCase, ...]  # baseline first
    recommendation: Recommendation
    baseline_monthly_cost: float | None  # "before"
    # "after": the recommended variant's bill; None when nothing changes (the baseline is
    # kept, or no variant passes), so no "after" figure is ever shown for a non-move
    recommended_monthly_cost: float | None
    monthly_savings: float
    savings_interval: roi.Interval | None  # bootstrap range of monthly_savings
    roi: roi.Roi  # payback, net 12/36, curve months 0..36
    api_baseline_monthly_cost: float | None
    tornado: tuple[roi.TornadoRow, ...]  # 36-month net, sorted by swing
    pareto: tuple[str, ...]  # names on the cost-vs-accuracy front, by cost
    methods: dict[str, str]
    generated_at: datetime
    # What to run to measure the quality of speed-and-memory-only variants; "" when none.
    quality_check: str = ""
    # Plain sentences for states that would otherwise read as answers (engine.business.flags):
    # no variant passes, the baseline misses the target, a hosted API is cheaper, ...
    flags: tuple[str, ...] = ()

    @property
    def moves(self) -> bool:
        """Whether the case recommends moving off the baseline (an "after" exists)."""
        rec = self.recommended
        return rec is not None and not rec.is_baseline

    @property
    def recommended(self) -> VariantCase | None:
        return next((r for r in self.rows if r.recommended), None)

    def frame(self) -> pd.DataFrame:
        """One flat row per variant for tables and CSV."""
        return pd.DataFrame([{
            "variant": r.name, "techniques": r.techniques, "accuracy": r.accuracy,
            "passes_gate": r.passes_gate, "meets_slo": r.meets_slo,
            "measured_hardware": r.measured_hardware,
            "measured_tokens_per_s": r.measured_tokens_per_s,
            "cost_per_1m_input": r.unit_costs.cost_per_1m_input_tokens if r.unit_costs else None,
            "cost_per_1m_output": r.unit_costs.cost_per_1m_output_tokens if r.unit_costs else None,
            "cost_per_1k_requests": r.unit_costs.cost_per_1k_requests if r.unit_costs else None,
            "target_hardware": r.target_hardware, "projected": r.projected,
            "indicative": r.indicative, "method": r.method,
            "gpus": r.provisioning.gpus if r.provisioning else None,
            "devices_per_replica": r.devices,
            "replicas": r.provisioning.replicas if r.provisioning else None,
            "latency_p95_s": r.provisioning.latency_p95_s if r.provisioning else None,
            "monthly_cost": r.monthly_cost, "monthly_savings": r.monthly_savings,
            "api_monthly_cost": r.api_monthly_cost, "recommended": r.recommended,
            "speed_memory_only": r.speed_memory_only, "unstable": ", ".join(r.unstable),
            "reason": r.reason} for r in self.rows])

