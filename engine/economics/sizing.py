"""Right-sizing: which hardware a variant fits on, and its projected speed and cost there.

Memory (what must fit on one GPU, GB = 1e9 bytes)::

    weights + kv_bytes_per_token * context_tokens * concurrency + overhead * memory <= memory

``overhead`` (default 10%) is memory held back for activations, the CUDA context and
allocator fragmentation; it matches vLLM's default ``gpu_memory_utilization=0.9``.
``context_tokens`` should be the workload's long case (p95 prompt + output tokens) so the
KV cache fits the requests that matter, at the ``concurrency`` you plan to serve.

A variant whose engine spans ``d`` devices (vLLM tensor x pipeline parallel size) is one
replica of ``d`` devices of the candidate hardware: weights and KV cache are spread over
them, so it must fit ``d x memory`` (overhead held back on each), and it is priced at
``d x`` the per-device $/hour.

Projection (every projected figure carries ``projected=True`` and its ``method``):

* same hardware as measured: the measurement itself (``projected=False``);
* GPU to GPU: decode is memory-bandwidth bound at serving batch sizes, so
  ``tok/s_target = tok/s_measured * min(bw_target / bw_measured, tflops_target / tflops_measured)``.
  The compute ratio caps the gain: where the target has more bandwidth than compute
  relative to the measured card, prefill and larger-batch matmuls stop scaling with
  bandwidth, so the smaller of the two ratios is the defensible one (also on a slowdown);
* CPU to GPU (a measurement on another kind of machine does not scale; indicative only, with
  the error the project measured in ``CROSS_KIND_CHECK``): the roofline
  bound ``engine.economics.roofline.decode_bound_tok_s`` at the pilot's batch size and the p95
  context, times an engine efficiency (default 50%, what a static cache + torch.compile
  reached on an H200; eager transformers reaches ~6%, vLLM ~75%). For a compressed variant
  the bound is the baseline's (its bytes and KV), times the variant's speed relative to the
  baseline as measured (``speed_vs_baseline``): crediting a quantized variant with its
  fewer bytes would assume fused low-bit kernels, and ours measured int8 slower than fp32
  on both the CPU and an H200 (docs/gpu-h200-2026-11-27-techniques);
* no bandwidth figure on either side: no projection (the option says why).

Requests/s scale by the same factor as tokens/s, and p95 latency by its inverse (the same
batch, each step faster or slower by the same factor).
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from engine.economics import cost
from engine.economics.hardware import Hardware
from engine.economics.roofline import decode_bound_tok_s

# What the project measured when it checked this projection (bench/bench_projection.py): the
# embedded model's CPU pilot projected to an H200 against the same pilot run there. A small
# model is launch-bound, not bandwidth-bound, so the roofline overstates it most.
CROSS_KIND_CHECK = ("indicative only: checked on the embedded 135M model, a CPU pilot projected "
                    "to an H200 this way was 23x (vLLM) to 191x (transformers eager) the tokens/s "
                    "measured there (docs/gpu-h200-2026-11-30-projection); run the pilot on the "
                    "target before deciding")

DEFAULT_OVERHEAD_FRACTION = 0.10
DEFAULT_ENGINE_EFFICIENCY = 0.50


@dataclass(frozen=True)
class MemoryFit:
    """Bytes a variant needs on one device and whether they fit."""

    hardware_key: str
    weight_bytes: float
    kv_bytes: float  # kv_bytes_per_token * context_tokens * concurrency
    overhead_bytes: float  # overhead_fraction * memory
    memory_bytes: float  # of all the replica's devices
    fits: bool
    max_concurrency: int  # requests of context_tokens that fit beside the weights (0 = none)
    devices: int = 1

    @property
    def total_bytes(self) -> float:
        return self.weight_bytes + self.kv_bytes + self.overhead_bytes


def memory_fit(hw: Hardware, weight_bytes: float, kv_bytes_per_token: float,
               context_tokens: float, concurrency: int,
               overhead_fraction: float = DEFAULT_OVERHEAD_FRACTION,
               devices: int = 1) -> MemoryFit:
    """Does ``weights + KV x concurrency + overhead x memory <= memory`` hold on ``devices``
    devices of ``hw`` (``memory = devices x hw.memory_bytes``)?"""
    if weight_bytes < 0 or kv_bytes_per_token < 0 or context_tokens < 0 or concurrency < 1:
        raise ValueError("weight_bytes, kv_bytes_per_token, context_tokens must be >= 0 and "
                         "concurrency >= 1.")
    if not 0 <= overhead_fraction < 1:
        raise ValueError(f"overhead_fraction must be in [0, 1), got {overhead_fraction!r}.")
    if devices < 1:
        raise ValueError(f"devices must be >= 1 (tensor x pipeline parallel size), got "
                         f"{devices!r}.")
    mem = hw.memory_bytes * devices
    per_request = kv_bytes_per_token * context_tokens
    kv = per_request * concurrency
    overhead = overhead_fraction * mem
    room = mem - overhead - weight_bytes
    if room < 0:
        max_conc = 0
    elif per_request == 0:
        max_conc = 10**9  # KV not counted: any concurrency fits beside the weights
    else:
        max_conc = math.floor(room / per_request)
    return MemoryFit(hw.key, weight_bytes, kv, overhead, mem,
                     fits=weight_bytes + kv + overhead <= mem, max_concurrency=max_conc,
                     devices=devices)


@dataclass(frozen=True)
class Measured:
    """What the pilot measured for one variant, on the hardware it ran on."""

    hardware: Hardware
    tokens_per_s: float  # output tokens / wall time
    requests_per_s: float
    latency_p95_s: float
    batch: int = 1  # the pilot's batch size
    devices: int = 1  # devices the measured engine occupied (one replica)


@dataclass(frozen=True)
class Projection:
    """Throughput and latency on ``hardware_key``; ``projected`` False = measured there."""

    hardware_key: str
    tokens_per_s: float
    requests_per_s: float
    latency_p95_s: float
    factor: float  # tokens_per_s / measured tokens_per_s
    projected: bool
    method: str


def project(measured: Measured, target: Hardware, weight_bytes: float = 0.0,
            kv_bytes_per_token: float = 0.0, context_tokens: float = 0.0,
            efficiency: float = DEFAULT_ENGINE_EFFICIENCY,
            baseline: tuple[float, ...] | None = None) -> Projection | None:
    """Scale a measurement to ``target`` by the module's stated method; None if it can't be.

    ``baseline`` = (weight bytes, KV bytes/token, measured tok/s[, devices]) of the pilot's
    baseline, for a variant: across CPU/GPU the roofline is then the baseline's (on its
    devices), times the variant's measured speed relative to it. Without it the roofline
    reads the weights over all ``measured.devices`` devices' bandwidth (one replica).
    """
    src = measured.hardware
    if target.key == src.key:
        return Projection(target.key, measured.tokens_per_s, measured.requests_per_s,
                          measured.latency_p95_s, 1.0, False, "measured on this hardware")
    if not target.bandwidth_gbs or (src.kind == target.kind and not src.bandwidth_gbs):
        return None
    if src.kind == target.kind:
        bw = target.bandwidth_gbs / src.bandwidth_gbs  # type: ignore[operator]
        factor, method = bw, (f"decode memory-bandwidth bound: measured x {target.bandwidth_gbs:g}"
                              f"/{src.bandwidth_gbs:g} GB/s")
        if src.bf16_tflops and target.bf16_tflops:
            compute = target.bf16_tflops / src.bf16_tflops
            if compute < bw:
                factor = compute
                method += (f", capped by peak bf16 compute {target.bf16_tflops:g}"
                           f"/{src.bf16_tflops:g} TFLOP/s")
    else:
        if measured.tokens_per_s <= 0 or weight_bytes <= 0:
            return None
        relative, whose, credit, devices = 1.0, "", "", measured.devices
        if baseline is not None and baseline[2] > 0 and baseline[0] > 0:
            weight_bytes, kv_bytes_per_token = baseline[0], baseline[1]
            devices = int(baseline[3]) if len(baseline) > 3 else 1
            relative = measured.tokens_per_s / baseline[2]
            whose = "the baseline's "
            credit = (f" x this variant's measured speed vs the baseline ({relative:.2f}x on "
                      f"{src.key}; its own smaller bytes are not credited)")
        bandwidth = target.bandwidth_gbs * devices  # type: ignore[operator]
        bound = decode_bound_tok_s(weight_bytes, kv_bytes_per_token, context_tokens,
                                   measured.batch, bandwidth * 1e9)
        factor = bound * efficiency * relative / measured.tokens_per_s
        on = f"{devices} x {target.bandwidth_gbs:g}" if devices > 1 else f"{bandwidth:g}"
        method = (f"{whose}roofline bound at batch {measured.batch} ({bound:,.0f} tok/s on "
                  f"{on} GB/s) x {efficiency:.0%} engine efficiency{credit}; "
                  f"a bound, not a measurement: the pilot ran on a {src.kind.upper()}, whose speed "
                  f"cannot be carried over to a {target.kind.upper()} by a ratio; "
                  f"{CROSS_KIND_CHECK}")
    return Projection(target.key, measured.tokens_per_s * factor,
                      measured.requests_per_s * factor, measured.latency_p95_s / factor,
                      factor, True, method)


@dataclass(frozen=True)
class SizingOption:
    """One candidate device for a variant: memory fit, projection and unit costs there."""

    hardware: Hardware
    fit: MemoryFit
    projection: Projection | None
    cost_per_1m_output_tokens: float | None  # at the projection, utilisation 1, all devices
    cost_per_1k_requests: float | None
    note: str  # why it does not fit / cannot be projected; "" when fine
    devices: int = 1  # devices of ``hardware`` one replica occupies

    @property
    def price_per_hour(self) -> float:
        """One replica's $/hour: devices x the hardware's per-device price."""
        return cost.occupied_price_per_hour(self.hardware.price_per_hour, self.devices)


@dataclass(frozen=True)
class RightSizing:
    options: tuple[SizingOption, ...]  # every candidate, in the order given
    cheapest: SizingOption | None  # the fitting option with the lowest $/hour
    reason: str  # how cheapest was chosen, or why there is none

    @property
    def fitting(self) -> tuple[SizingOption, ...]:
        return tuple(o for o in self.options if o.fit.fits)


def right_size(measured: Measured, weight_bytes: float, kv_bytes_per_token: float,
               context_tokens: float, concurrency: int, candidates: Iterable[Hardware],
               overhead_fraction: float = DEFAULT_OVERHEAD_FRACTION,
               efficiency: float = DEFAULT_ENGINE_EFFICIENCY,
               baseline: tuple[float, ...] | None = None) -> RightSizing:
    """Fit and project a variant on each candidate; the cheapest fit is by $/hour.

    $/hour (one replica, always on) is how a team with modest traffic provisions; when
    volume needs several, ``engine.economics.traffic.provision`` compares monthly bills. A replica is
    ``measured.devices`` devices of the candidate, priced and fitted as such.
    Ties go to the faster projection.
    """
    options, d = [], measured.devices
    for hw in candidates:
        fit = memory_fit(hw, weight_bytes, kv_bytes_per_token, context_tokens, concurrency,
                         overhead_fraction, d)
        proj = project(measured, hw, weight_bytes, kv_bytes_per_token, context_tokens,
                       efficiency, baseline)
        of = f"{d} x {hw.memory_gb:g}" if d > 1 else f"{hw.memory_gb:g}"
        note = "" if fit.fits else (
            f"needs {fit.total_bytes / 1e9:.1f} GB (weights {weight_bytes / 1e9:.1f} + KV "
            f"{fit.kv_bytes / 1e9:.1f} + overhead {fit.overhead_bytes / 1e9:.1f}) of "
            f"{of} GB")
        if proj is None:
            note = "; ".join(filter(None, [note, "no bandwidth figure to project from/to"]))
        price = cost.occupied_price_per_hour(hw.price_per_hour, d)
        options.append(SizingOption(
            hw, fit, proj,
            cost.cost_per_million_tokens(price, proj.tokens_per_s)
            if proj and proj.tokens_per_s > 0 else None,
            cost.cost_per_1k_requests(price, proj.requests_per_s)
            if proj and proj.requests_per_s > 0 else None, note, d))
    fitting = [o for o in options if o.fit.fits]
    if not fitting:
        return RightSizing(tuple(options), None,
                           f"fits none of the {len(options)} candidates at concurrency "
                           f"{concurrency} and {context_tokens:g} tokens of context")
    best = min(fitting, key=lambda o: (o.price_per_hour,
                                       -(o.projection.tokens_per_s if o.projection else 0)))
    return RightSizing(tuple(options), best,
                       f"lowest $/hour among {len(fitting)} fitting: {best.hardware.name}")
