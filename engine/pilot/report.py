"""The one report object of a pilot, rebuilt from stored data (no re-running inference).

The dashboard, CLI table and PDF all consume ``PilotReport``; every figure is either a
stored measurement or a pure function (engine.economics.cost) of stored measurements.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime

import numpy as np
import pandas as pd

from engine.core.domain import Run, Status, Workload
from engine.economics import cost
from engine.economics.devices import devices_of, memory_of
from engine.economics.hardware import Hardware
from engine.pilot import stability, startup
from engine.specs.pilot import PilotSpec, VariantSpec
from engine.store.store import Store


@dataclass(frozen=True)
class LatencySummary:
    mean: float
    p50: float
    p90: float
    p95: float
    p99: float

    @classmethod
    def of(cls, values) -> LatencySummary | None:
        arr = np.asarray([v for v in values if v is not None], dtype=float)
        if arr.size == 0:
            return None
        p50, p90, p95, p99 = np.percentile(arr, [50, 90, 95, 99])
        return cls(float(arr.mean()), float(p50), float(p90), float(p95), float(p99))


@dataclass(frozen=True)
class VariantSummary:
    name: str
    status: Status
    error: str | None
    techniques: str  # human-readable, e.g. "8-bit weights (torchao)"
    device: str | None
    n_requests: int
    load_s: float | None
    weight_bytes: int | None
    peak_mem_bytes: int | None
    tokens_per_s: float | None
    requests_per_s: float | None
    latency: LatencySummary | None
    ttft: LatencySummary | None
    prompt_tokens_original: float | None  # mean per request
    prompt_tokens_sent: float | None
    output_tokens: float | None
    ref_exact: float | None  # means over requests with a reference
    ref_contains: float | None
    ref_f1: float | None
    base_rouge_l: float | None  # means over requests, vs the baseline's output
    base_cosine: float | None
    cost_per_1k_requests: float | None
    cost_per_1m_output_tokens: float | None
    monthly_cost: float | None
    monthly_savings: float | None
    savings_fraction: float | None
    # What its engine occupied and reserved (engine.economics.devices): priced at devices x $/hour.
    devices: int = 1
    price_per_hour: float | None = None  # devices x the run's per-device $/hour
    kv_cache_tokens: int | None = None  # KV-cache capacity the engine reserved, in tokens
    kv_cache_bytes: int | None = None  # bytes it reserved for that cache
    kv_bytes_per_token: float | None = None  # measured by the backend; None = not measured
    kv_method: str | None = None
    peak_method: str | None = None
    device_memory_bytes: int | None = None  # one device's memory
    # The measurement protocol (engine.pilot.stability): tokens/s, latency and peak memory
    # above are medians over ``passes`` timed passes; spreads are (max - min) / median.
    passes: int = 1
    tokens_per_s_spread: float | None = None
    latency_p95_spread: float | None = None
    peak_mem_spread: float | None = None
    baseline_drift: float | None = None  # the baseline only: its end re-measure vs its passes
    unstable: tuple[str, ...] = ()  # figures whose spread (or the baseline's drift) is too big
    busy: str | None = None  # why the machine was busy while it ran, else None
    gc_pause_max_s: float | None = None  # most seconds one timed pass spent collecting garbage
    gc_pause_share: float | None = None  # that, over the median pass's wall seconds
    # Engine start-up (engine.pilot.startup): load + compile where reported apart; None with
    # engine_reused when its vLLM engine was started for another variant (engine_shared_with).
    cold_start_s: float | None = None
    warm_up_s: float | None = None  # the protocol's untimed warm-up rounds, where stored
    engine_reused: bool = False
    engine_shared_with: str | None = None

    @property
    def cold_start_text(self) -> str:
        """"12.3", "shared with baseline", "reused" or "n/a"."""
        return startup.cold_start_text(self.cold_start_s, self.engine_reused,
                                       self.engine_shared_with)


@dataclass(frozen=True)
class PilotReport:
    run: Run
    spec: PilotSpec  # the run's stored spec, read back through the spec classes
    workload: Workload
    hardware: Hardware
    price_per_hour: float
    requests_per_month: int
    variants: tuple[VariantSummary, ...]
    results: pd.DataFrame  # per-request rows, all variants
    generated_at: datetime

    @property
    def baseline(self) -> VariantSummary:
        return self.variants[0]

    def frame(self) -> pd.DataFrame:
        """One row per variant, flat columns (latency p50/p95 in seconds)."""
        rows = []
        for v in self.variants:
            d = {k: val for k, val in asdict(v).items() if k not in ("latency", "ttft")}
            d["latency_p50_s"] = v.latency.p50 if v.latency else None
            d["latency_p95_s"] = v.latency.p95 if v.latency else None
            d["ttft_p50_s"] = v.ttft.p50 if v.ttft else None
            rows.append(d)
        return pd.DataFrame(rows)

    def best_saving(self) -> VariantSummary | None:
        ok = [v for v in self.variants[1:] if v.monthly_savings is not None]
        return max(ok, key=lambda v: v.monthly_savings) if ok else None


def describe_techniques(spec: VariantSpec) -> str:
    """Human-readable technique list of a variant spec, e.g. "8-bit weights (torchao)"."""
    from engine.techniques import technique_module

    parts = []
    for t in spec.techniques:
        module = technique_module(t.kind)
        if hasattr(module, "describe"):
            parts.append(module.describe(t))
        else:
            parts.append(", ".join([t.kind, *(f"{k}={v}" for k, v in t.model_dump().items()
                                              if k != "kind")]))
    return " + ".join(parts) or "none (baseline)"


def build_report(store: Store, run_id: int, price_per_hour: float | None = None,
                 requests_per_month: int | None = None, hardware: str | None = None
                 ) -> PilotReport:
    """Summarise a stored run; cost assumptions default to those stored with the run.

    ``price_per_hour`` is per device: each variant is priced at it times the devices its
    engine occupied (``engine.economics.devices.devices_of``). Hardware keys resolve through the
    store (``Store.get_hardware``), so a run priced on the user's own entry reads back."""
    run = store.get_run(run_id)
    spec = PilotSpec.from_run(run)
    hw = store.get_hardware(hardware or spec.cost.hardware)
    price = price_per_hour if price_per_hour is not None else (
        spec.cost.price_per_hour or hw.price_per_hour)
    volume = requests_per_month if requests_per_month is not None else \
        spec.cost.requests_per_month
    results = store.results_frame(run_id)
    measured = []
    for v in run.variants:
        sub = results[results.variant_id == v.id]
        ok = v.status == Status.DONE and len(sub) and v.wall_s
        measured.append(cost.MeasuredThroughput(v.name, int(sub.output_tokens.sum()) if ok else 0,
                                                len(sub) if ok else 0, v.wall_s or 0.0,
                                                devices_of(v.spec)))
    costs = cost.variant_costs(measured, price, volume, run.variants[0].name)
    passes = store.passes_frame(run_id)
    run_drift = stability.baseline_drift(passes[passes.variant_id == run.variants[0].id])
    starts = startup.cold_starts(run.variants)
    summaries = tuple(
        replace(_summarise(v, vs, results[results.variant_id == v.id], c, price),
                **asdict(stability.variant_stability(passes[passes.variant_id == v.id],
                                                     run_drift, i == 0)),
                cold_start_s=s.seconds, warm_up_s=s.warm_up_s, engine_reused=s.reused,
                engine_shared_with=s.shared_with)
        for i, (v, vs, c, s) in enumerate(zip(run.variants, spec.variants, costs, starts,
                                              strict=True)))
    return PilotReport(run=run, spec=spec, workload=store.get_workload(run.workload_id), hardware=hw,
                       price_per_hour=price, requests_per_month=volume, variants=summaries,
                       results=results, generated_at=datetime.now(UTC))


def _mean(series: pd.Series) -> float | None:
    s = series.dropna()
    return float(s.mean()) if len(s) else None


def _summarise(v, vs: VariantSpec, sub: pd.DataFrame, c: cost.VariantCost, price: float
               ) -> VariantSummary:
    has, mem, devices = len(sub) > 0, memory_of(v.technique_report), devices_of(v.spec)
    return VariantSummary(
        name=v.name, status=v.status, error=v.error, techniques=describe_techniques(vs),
        device=v.device, n_requests=len(sub), load_s=v.load_s,
        weight_bytes=v.weight_bytes if v.weight_bytes is not None else mem.weight_bytes,
        peak_mem_bytes=v.peak_mem_bytes if v.peak_mem_bytes is not None else mem.peak_bytes,
        tokens_per_s=c.tokens_per_s,
        requests_per_s=c.requests_per_s,
        latency=LatencySummary.of(sub.latency_s) if has else None,
        ttft=LatencySummary.of(sub.ttft_s) if has else None,
        prompt_tokens_original=_mean(sub.prompt_tokens_original) if has else None,
        prompt_tokens_sent=_mean(sub.prompt_tokens_sent) if has else None,
        output_tokens=_mean(sub.output_tokens) if has else None,
        ref_exact=_mean(sub.ref_exact) if has else None,
        ref_contains=_mean(sub.ref_contains) if has else None,
        ref_f1=_mean(sub.ref_f1) if has else None,
        base_rouge_l=_mean(sub.base_rouge_l) if has else None,
        base_cosine=_mean(sub.base_cosine) if has else None,
        cost_per_1k_requests=c.cost_per_1k_requests,
        cost_per_1m_output_tokens=c.cost_per_1m_output_tokens, monthly_cost=c.monthly_cost,
        monthly_savings=c.monthly_savings, savings_fraction=c.savings_fraction,
        devices=devices, price_per_hour=cost.occupied_price_per_hour(price, devices),
        kv_cache_tokens=mem.kv_cache_tokens, kv_cache_bytes=mem.kv_cache_bytes,
        kv_bytes_per_token=mem.kv_bytes_per_token,
        kv_method=mem.kv_method, peak_method=mem.peak_method,
        device_memory_bytes=mem.device_total_bytes)


def side_by_side(report: PilotReport, store: Store, variant: str) -> pd.DataFrame:
    """Per-request table: prompt, reference, baseline output and the variant's output. Reads
    only the requests the run has results for (a workload may hold 100,000)."""
    res = report.results
    wanted = sorted({int(i) for i in res.request_index}) if len(res) else []
    reqs = {r.index: r.request
            for r in store.get_requests(report.run.workload_id, indices=wanted)}
    base = res[res.variant == report.baseline.name].set_index("request_index")
    var = res[res.variant == variant].set_index("request_index")
    rows = []
    for idx in var.index:
        req = reqs[idx]
        rows.append({"request": idx, "line": req.line, "prompt": req.messages[-1]["content"],
                     "reference": req.reference,
                     "baseline_output": base.output_text.get(idx),
                     "variant_output": var.output_text[idx],
                     "latency_s": var.latency_s[idx], "tokens_sent": var.prompt_tokens_sent[idx],
                     "ref_contains": var.ref_contains[idx], "rouge_l_vs_base": var.base_rouge_l[idx],
                     "cosine_vs_base": var.base_cosine[idx]})
    return pd.DataFrame(rows)


def accuracy_retention(rep: PilotReport, variant_name: str) -> float | None:
    """Variant's reference accuracy (contains-match) as a fraction of the baseline's."""
    v = next(v for v in rep.variants if v.name == variant_name)
    base = rep.baseline.ref_contains
    if v.ref_contains is None or not base:
        return None
    return v.ref_contains / base


def speed_memory_only(rep: PilotReport) -> list[str]:
    """Names of the variants (failed ones aside: they measured nothing) whose model has
    random weights (``random:<shape>``): speed and memory measured, accuracy not
    (engine.economics.decision.RANDOM_WEIGHTS says so)."""
    from engine.models.prep import is_random_model

    return [v.name for v, vs in zip(rep.run.variants, rep.spec.variants, strict=True)
            if v.status != Status.FAILED and is_random_model(vs.model)]


def speed_memory_findings(rep: PilotReport) -> list[str]:
    """Plain sentences where a variant trades speed against memory versus the baseline."""
    b, out = rep.baseline, []
    for v in rep.variants[1:]:
        if None in (v.peak_mem_bytes, v.tokens_per_s, b.peak_mem_bytes, b.tokens_per_s) \
                or not b.peak_mem_bytes or not b.tokens_per_s:
            continue
        mem = v.peak_mem_bytes / b.peak_mem_bytes - 1
        speed = v.tokens_per_s / b.tokens_per_s - 1
        if (mem < 0) == (speed < 0):  # smaller and slower, or larger and faster
            verdict = "smaller but slower" if mem < 0 else "faster but larger"
            out.append(f"{v.name} is {verdict} than the baseline on {v.device or 'this device'}: "
                       f"peak memory {mem:+.0%}, generation speed {speed:+.0%} "
                       f"({v.tokens_per_s:.1f} vs {b.tokens_per_s:.1f} tokens/s).")
    return out


def technique_figures(report: PilotReport) -> pd.DataFrame:
    """What each technique reported it did, one row per (variant, technique, figure).

    Scalars from each variant's technique report (bits, sparsity, ratio, parameters kept,
    seconds...), flattened one level, so new techniques show up without UI changes.
    """
    rows = []
    for v in report.run.variants:
        for technique, figures in v.technique_report.items():
            if not isinstance(figures, dict):
                continue
            label = {"_model": "model (read back)",
                     "memory": "memory (measured by the backend)"}.get(technique, technique)
            for key, value in _flatten(figures):
                rows.append({"variant": v.name, "technique": label, "figure": key,
                             "value": _display(value)})
    return pd.DataFrame(rows, columns=["variant", "technique", "figure", "value"])


def _flatten(figures: dict, prefix: str = ""):
    for key, value in figures.items():
        if isinstance(value, dict) and not prefix:
            yield from _flatten(value, f"{key}.")
        elif isinstance(value, (str, int, float, bool)) or value is None:
            yield prefix + key, value


def _display(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10_000:
        return f"{value:,}"
    return str(value)


def serving_lines(report: PilotReport) -> list[str]:
    """What vLLM reported of its prefix cache and speculative decoding, per variant, in words
    (the vLLM backend's ``serving`` report; none for other backends)."""
    lines = []
    for v in report.run.variants:
        serving = v.technique_report.get("serving") or {}
        if hits := serving.get("prefix_cache_hits"):
            lines.append(f"{v.name}: prefix cache hit rate {hits['hit_rate']:.0%} "
                         f"({hits['cached_tokens']:,} of {hits['prompt_tokens']:,} prompt tokens "
                         "served from vLLM's prefix cache over the timed passes, emptied before "
                         "each replay)")
        if spec := serving.get("speculative_decoding"):
            rate = spec.get("acceptance_rate")
            lines.append(f"{v.name}: {spec['method']} speculative decoding, "
                         f"{spec['tokens_per_step']} drafted tokens per step; vLLM accepted "
                         + (f"{rate:.0%} of {spec['draft_tokens']:,} drafted"
                            if rate is not None else "none (nothing was drafted)"))
    return lines
