"""Right-sizing and traffic: every expected number is worked out by hand beside it."""
from __future__ import annotations

import pytest

from engine.economics.hardware import CATALOG
from engine.economics.sizing import Measured, memory_fit, project, right_size
from engine.economics.traffic import (
    api_monthly_cost,
    gpus_needed,
    monthly_bill,
    peak_requests_per_s,
    provision,
    requests_per_month,
)

A10G, A100, H100, H200 = (CATALOG[k] for k in ("nvidia-a10g", "nvidia-a100-80gb",
                                                "nvidia-h100-80gb", "nvidia-h200"))

# The seed's example, an 8B-class model (Llama-3.1-8B shapes):
#   fp16 weights: 8.0e9 params x 2 bytes = 16.0e9 B
#   4-bit weights: 8.0e9 x 4.5 bits / 8 (4 bits + group scales/zeros, norms) = 4.5e9 B
#   KV per token: 2 (K,V) x 32 layers x 8 KV heads x 128 head dim x 2 bytes = 131,072 B
#   context 2,048 tokens (p95 prompt + output) at 32 concurrent requests:
#   KV = 131,072 x 2,048 x 32 = 8,589,934,592 B
FP16, INT4, KV_TOK, CTX, CONC = 16.0e9, 4.5e9, 131_072, 2048, 32
KV = 8_589_934_592


def test_memory_fit_seed_example_by_hand():
    # A10G 24 GB, 10% held back = 2.4e9 B
    # 4-bit: 4.5e9 + 8.590e9 + 2.4e9 = 15.49e9 <= 24e9 -> fits
    q = memory_fit(A10G, INT4, KV_TOK, CTX, CONC)
    assert q.kv_bytes == KV and q.overhead_bytes == pytest.approx(2.4e9)
    assert q.total_bytes == pytest.approx(15.489934592e9) and q.fits
    # room for KV: 24e9 - 2.4e9 - 4.5e9 = 17.1e9; per request 131,072 x 2,048 = 268,435,456
    # -> floor(17.1e9 / 268,435,456) = floor(63.70) = 63 concurrent requests
    assert q.max_concurrency == 63
    # fp16: 16.0e9 + 8.590e9 + 2.4e9 = 26.99e9 > 24e9 -> does not fit
    f = memory_fit(A10G, FP16, KV_TOK, CTX, CONC)
    assert f.total_bytes == pytest.approx(26.989934592e9) and not f.fits
    # room 24e9 - 2.4e9 - 16e9 = 5.6e9 -> floor(5.6e9 / 268,435,456) = floor(20.86) = 20
    assert f.max_concurrency == 20
    # A100 80 GB: 16.0e9 + 8.590e9 + 8.0e9 = 32.59e9 <= 80e9 -> fits
    assert memory_fit(A100, FP16, KV_TOK, CTX, CONC).fits


def test_right_size_4bit_on_a10g_fp16_needs_a100():
    # both measured on the A100 80 GB; fp16 1,000 tok/s, 4 req/s; 4-bit 1,500 tok/s, 6 req/s
    fp16_m = Measured(A100, 1000.0, 4.0, 2.0, batch=8)
    int4_m = Measured(A100, 1500.0, 6.0, 1.5, batch=8)
    int4 = right_size(int4_m, INT4, KV_TOK, CTX, CONC, [A10G, A100])
    fp16 = right_size(fp16_m, FP16, KV_TOK, CTX, CONC, [A10G, A100])
    assert [o.hardware.key for o in int4.fitting] == ["nvidia-a10g", "nvidia-a100-80gb"]
    assert int4.cheapest.hardware.key == "nvidia-a10g"  # $1.006/h < $1.79/h
    assert [o.hardware.key for o in fp16.fitting] == ["nvidia-a100-80gb"]
    assert fp16.cheapest.hardware.key == "nvidia-a100-80gb"
    assert "needs 27.0 GB" in fp16.options[0].note and "of 24 GB" in fp16.options[0].note
    # projection to the A10G: bandwidth 600 / 2039 = 0.294262 (compute 125/312 = 0.4006 is
    # not the binding one): 1,500 x 0.294262 = 441.39 tok/s; 6 x 0.294262 = 1.7656 req/s;
    # p95 1.5 / 0.294262 = 5.0975 s
    p = int4.cheapest.projection
    assert p.projected and "600/2039 GB/s" in p.method and "capped" not in p.method
    assert p.factor == pytest.approx(0.2942619, rel=1e-6)
    assert p.tokens_per_s == pytest.approx(441.3928, rel=1e-6)
    assert p.requests_per_s == pytest.approx(1.7655713, rel=1e-6)
    assert p.latency_p95_s == pytest.approx(5.0975, rel=1e-4)
    # $/1M output there: 1.006 / (441.3928 x 3600) x 1e6 = 1.006e6 / 1,589,014 = $0.633097
    assert int4.cheapest.cost_per_1m_output_tokens == pytest.approx(0.633097, rel=1e-5)
    # on the measured A100 nothing is projected
    a100 = int4.options[1].projection
    assert not a100.projected and a100.tokens_per_s == 1500.0 and a100.method.startswith("measured")
    # the whole catalog: fp16 fits no 24 GB card
    full = right_size(fp16_m, FP16, KV_TOK, CTX, CONC, CATALOG.values())
    assert not any(o.hardware.memory_gb == 24 for o in full.fitting)


def test_fits_nowhere_says_so():
    rs = right_size(Measured(A100, 1.0, 1.0, 1.0), 200e9, 0, 0, 1, [A10G, A100])
    assert rs.cheapest is None and "fits none of the 2 candidates" in rs.reason


def test_projection_capped_by_compute_ratio():
    # H100 -> A100: bandwidth 2039/3350 = 0.60866, compute 312/989 = 0.31547 -> the compute
    # ratio is smaller, so 1,000 tok/s x 0.31547 = 315.47 tok/s
    p = project(Measured(H100, 1000.0, 2.0, 1.0), A100)
    assert p.tokens_per_s == pytest.approx(315.4702, rel=1e-6)
    assert "capped by peak bf16 compute 312/989" in p.method
    # A100 -> H200: bandwidth 4800/2039 = 2.35410, compute 989/312 = 3.17 -> bandwidth
    p2 = project(Measured(A100, 1000.0, 2.0, 1.0), H200)
    assert p2.tokens_per_s == pytest.approx(2354.095, rel=1e-6) and "capped" not in p2.method


def test_projection_from_cpu_uses_roofline_times_efficiency():
    cpu = CATALOG["cpu-c7i-large"]
    # bound at batch 8 on the A10G: 8 x 600e9 / (0.54e9 + 8 x 300 x 46,080)
    #   = 4.8e12 / (0.54e9 + 110,592,000) = 4.8e12 / 650,592,000 = 7,377.9 tok/s
    # x 50% efficiency = 3,688.9 tok/s; measured 20 tok/s -> factor 184.45
    p = project(Measured(cpu, 20.0, 0.5, 8.0, batch=8), A10G, weight_bytes=0.54e9,
                kv_bytes_per_token=46_080, context_tokens=300, efficiency=0.5)
    assert p.tokens_per_s == pytest.approx(3688.93, rel=1e-5)
    assert p.requests_per_s == pytest.approx(0.5 * 184.4466, rel=1e-5)
    assert p.projected and "roofline" in p.method and "50% engine efficiency" in p.method
    # CPU to another CPU: no bandwidth figure, no projection
    assert project(Measured(cpu, 20.0, 0.5, 8.0), CATALOG["cpu-c7i-2xlarge"]) is None


# --- traffic ---------------------------------------------------------------------------


def test_peak_gpus_and_bill_by_hand():
    # 864,000 req/day = 10 req/s on average; x3 at peak = 30 req/s
    assert peak_requests_per_s(864_000, 3.0) == pytest.approx(30.0)
    # 30 / (2.0 req/s x 0.75) = 30 / 1.5 = exactly 20 GPUs (not 21 from rounding noise)
    assert gpus_needed(30.0, 2.0 * 0.75) == 20
    assert gpus_needed(30.1, 1.5) == 21
    assert gpus_needed(0.0, 1.5) == 1  # never zero devices
    # 20 x $1.006 x 730 h = $14,687.60 a month
    assert monthly_bill(20, 1.006) == pytest.approx(14_687.6)
    plan = provision(A10G, 2.0, 5.1, 864_000, 3.0, p95_target_s=4.0, utilisation=0.75)
    assert (plan.gpus, plan.capacity_rps_per_gpu) == (20, 1.5)
    assert plan.monthly_bill == pytest.approx(14_687.6)
    assert not plan.meets_slo and "5.10 s exceeds the 4 s target" in plan.reason
    assert provision(A10G, 2.0, 3.9, 864_000, 3.0, 4.0, 0.75).meets_slo


def test_traffic_rejects_bad_inputs():
    with pytest.raises(ValueError, match="peak_factor"):
        peak_requests_per_s(100, 0.5)
    with pytest.raises(ValueError, match="capacity"):
        gpus_needed(1.0, 0.0)
    with pytest.raises(ValueError, match="utilisation"):
        provision(A10G, 1.0, 1.0, 100, 1.0, 1.0, utilisation=1.5)


def test_hosted_api_baseline_prices_prompt_compression():
    # 10,000 req/day x 730/24 = 304,166.67 requests a month
    assert requests_per_month(10_000) == pytest.approx(304_166.667, rel=1e-6)
    # 1,000 in + 200 out at $2.50 / $10.00 per 1M: (2,500 + 2,000) / 1e6 = $0.0045 a request
    # -> 304,166.67 x 0.0045 = $1,368.75 a month
    full = api_monthly_cost(1000, 200, 10_000, 2.50, 10.00)
    assert full == pytest.approx(1368.75)
    # prompt compressed to 500 tokens: (1,250 + 2,000) / 1e6 = $0.00325 -> $988.54
    half = api_monthly_cost(500, 200, 10_000, 2.50, 10.00)
    assert half == pytest.approx(988.5417, rel=1e-6)
    assert full - half == pytest.approx(380.2083, rel=1e-6)


def test_a_variant_projected_from_cpu_carries_its_measured_speed_not_its_bytes():
    cpu = CATALOG["cpu-c7i-large"]
    # Baseline: 0.54e9 B weights, 46,080 B/token KV, 20 tok/s on the CPU. Its bound on the
    # A10G is 7,377.9 tok/s (worked in the test above), x 50% = 3,688.93 tok/s.
    # An int8 variant measured at 16 tok/s (0.8x the baseline) with 0.22e9 B of weights:
    # projected = 3,688.93 x 0.8 = 2,951.15 tok/s, NOT the bound of its own 0.22e9 bytes.
    p = project(Measured(cpu, 16.0, 0.4, 10.0, batch=8), A10G, weight_bytes=0.22e9,
                kv_bytes_per_token=46_080, context_tokens=300, efficiency=0.5,
                baseline=(0.54e9, 46_080, 20.0))
    assert p.tokens_per_s == pytest.approx(3688.93 * 0.8, rel=1e-5)
    assert p.factor == pytest.approx(3688.93 * 0.8 / 16.0, rel=1e-5)
    assert "0.80x" in p.method and "not credited" in p.method and p.projected
    # Without the baseline the variant's own bytes would give a bound 2.4x higher or so:
    own = project(Measured(cpu, 16.0, 0.4, 10.0, batch=8), A10G, weight_bytes=0.22e9,
                  kv_bytes_per_token=46_080, context_tokens=300, efficiency=0.5)
    assert own.tokens_per_s > 1.5 * p.tokens_per_s
