"""A stored pilot's measurements as the business case's input (``MeasuredVariant``).

``measured_variants(report)`` reads one ``PilotReport`` (engine.pilot.report): per variant its
throughput, latency, tokens, accuracy means and the memory figures the backend measured,
priced at the report's $/hour per device times the devices the variant occupied.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd

from engine.business.types import MeasuredVariant
from engine.core.domain import Status
from engine.economics.decision import RAW_METRICS as _METRICS
from engine.economics.devices import devices_of, memory_of
from engine.models.prep import is_random_model
from engine.specs.pilot import PilotSpec, VariantSpec, variant_generation


def _kv_figure(technique_report: dict) -> tuple[float | None, str]:
    """(KV bytes/token, where it comes from) of a stored variant, most trusted first: the
    KV-cache technique's own figure (it describes the quantized cache), the cache the
    engine reserved (technique_report["memory"]: its bytes over its tokens), then the model
    config's estimate (also what a dynamic cache, which reserves nothing, reports)."""
    quantized = technique_report.get("quantize_kv_cache", {}).get("kv_bytes_per_token_quantized")
    if quantized:
        return float(quantized), "from the KV-cache technique's report"
    mem = memory_of(technique_report)
    if mem.kv_bytes_per_token and mem.kv_cache_tokens:
        return mem.kv_bytes_per_token, f"measured: {mem.kv_method or 'reserved by the engine'}"
    config = technique_report.get("_model", {}).get("kv_bytes_per_token") or mem.kv_bytes_per_token
    return (float(config), "estimated from the model config") if config else (None, "")


def measured_variants(report) -> list[MeasuredVariant]:
    """Per-variant measurements of a ``PilotReport``, priced at the report's $/hour per
    device times the devices each variant occupied (``engine.economics.devices.devices_of``); weights
    and KV bytes/token as measured by the backend where it stored them."""
    hw = replace(report.hardware, price_per_hour=report.price_per_hour)
    spec: PilotSpec = report.spec
    res = report.results
    out = []
    for v, vs, s in zip(report.run.variants, spec.variants, report.variants, strict=True):
        sub = res[res.variant_id == v.id].sort_values("request_index") if len(res) else res
        ok = v.status == Status.DONE and len(sub) > 0 and (v.wall_s or 0) > 0 and bool(s.tokens_per_s)
        ttft = sub.ttft_s.astype(float) if ok else pd.Series(dtype=float)
        lat = sub.latency_s.astype(float) if ok else pd.Series(dtype=float)
        ctx = (sub.prompt_tokens_sent + sub.output_tokens).astype(float) if ok else None
        kv, kv_source = _kv_figure(v.technique_report)
        weights = memory_of(v.technique_report).weight_bytes or v.weight_bytes
        out.append(MeasuredVariant(
            name=v.name, techniques=s.techniques, ok=ok, error=v.error, hardware=hw,
            batch=variant_generation(spec.generation, vs).batch_size,  # a variant may set its own
            n_requests=len(sub) if ok else 0, wall_s=float(v.wall_s or 0.0),
            tokens_per_s=s.tokens_per_s if ok else None,
            requests_per_s=s.requests_per_s if ok else None,
            latency_p95_s=s.latency.p95 if ok and s.latency else None,
            weight_bytes=float(weights) if weights else None, kv_bytes_per_token=kv,
            input_tokens_total=float(sub.prompt_tokens_sent.sum()) if ok else 0.0,
            output_tokens_total=float(sub.output_tokens.sum()) if ok else 0.0,
            prefill_s=float(ttft.sum()), decode_s=float((lat - ttft).clip(lower=0).sum()),
            prompt_tokens_original=s.prompt_tokens_original, prompt_tokens_sent=s.prompt_tokens_sent,
            output_tokens=s.output_tokens,
            context_p95_tokens=float(np.percentile(ctx, 95)) if ctx is not None else 0.0,
            metrics={m: getattr(s, m) for m in _METRICS},
            request_index=tuple(int(i) for i in sub.request_index) if ok else (),
            latency_s=tuple(float(x) for x in lat),
            model=vs.model, random_weights=random_weights(vs),
            n_references=_references(sub) if ok and not random_weights(vs) else None,
            per_request={m: tuple(float(x) for x in sub[m].astype(float)) for m in _METRICS}
            if ok else {}, devices=devices_of(v.spec), kv_source=kv_source,
            speed_spread=s.tokens_per_s_spread or 0.0, unstable=tuple(s.unstable),
            busy=s.busy))
    return out


def random_weights(variant_spec: VariantSpec) -> bool:
    """Whether a variant's model has random weights (``random:<shape>``): its speed and
    memory are measured, its accuracy is not (engine.pilot.runner skips scoring)."""
    return is_random_model(variant_spec.model)


def _references(sub: pd.DataFrame) -> int:
    """Requests of a scored variant whose log entry has a reference answer: the runner
    stores reference metrics exactly for those."""
    refs = [m for m in _METRICS if m.startswith("ref_") and m in sub]
    return int(sub[refs].notna().any(axis=1).sum()) if refs and len(sub) else 0
