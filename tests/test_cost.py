"""engine.economics.cost: every expected number is worked out by hand in the comment beside it."""
from __future__ import annotations

import dataclasses
import math

import pytest

from engine.core.errors import SpecError
from engine.economics.cost import (
    MeasuredThroughput,
    VariantCost,
    cost_per_1k_requests,
    cost_per_million_tokens,
    monthly_cost,
    requests_per_s,
    savings,
    variant_costs,
)
from engine.economics.hardware import CATALOG, Hardware, get_hardware

REQUIRED_KEYS = {
    "cpu-c7i-large",
    "nvidia-a10g",
    "nvidia-l4",
    "nvidia-a100-80gb",
    "nvidia-h100-80gb",
    "nvidia-h200",
}


# --- catalog -------------------------------------------------------------------------------


def test_catalog_has_required_keys_and_consistent_entries():
    assert REQUIRED_KEYS <= set(CATALOG)
    for key, hw in CATALOG.items():
        assert hw.key == key
        assert hw.kind in ("gpu", "cpu")
        assert hw.price_per_hour > 0 and hw.memory_gb > 0
        assert hw.price_source.strip()
        assert len(hw.price_date) == 7 and hw.price_date[4] == "-"  # "YYYY-MM"
    assert CATALOG["cpu-c7i-large"].kind == "cpu"
    assert CATALOG["nvidia-a10g"].price_per_hour == pytest.approx(1.006)


def test_hardware_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        CATALOG["nvidia-a10g"].price_per_hour = 0.0  # type: ignore[misc]


def test_get_hardware_known_and_unknown():
    assert isinstance(get_hardware("nvidia-l4", CATALOG), Hardware)
    with pytest.raises(SpecError) as err:
        get_hardware("tpu-v5", CATALOG)
    msg = str(err.value)
    assert "tpu-v5" in msg
    for key in REQUIRED_KEYS:
        assert key in msg


# --- per-unit costs ------------------------------------------------------------------------


def test_cost_per_million_tokens_hand_worked():
    # $1.006/h at 50 tok/s -> 1.006 / (50 * 3600) * 1e6 = 1.006 / 180000 * 1e6 = $5.5889
    assert cost_per_million_tokens(1.006, 50) == pytest.approx(5.588888, rel=1e-6)
    # $3.60/h at 1000 tok/s -> 3.6 / 3.6e6 * 1e6 = $1.00
    assert cost_per_million_tokens(3.6, 1000) == pytest.approx(1.0)


@pytest.mark.parametrize("price,tps", [(0.0893, 7.3), (2.95, 1234.5), (1.0, 1e-3)])
def test_cost_per_million_tokens_is_the_standard_formula(price, tps):
    assert cost_per_million_tokens(price, tps) == pytest.approx(price / (tps * 3600) * 1e6)


@pytest.mark.parametrize("bad", [0, 0.0, -5.0, math.nan])
def test_cost_per_million_tokens_rejects_zero_throughput(bad):
    with pytest.raises(ValueError, match="tokens_per_s must be > 0"):
        cost_per_million_tokens(1.0, bad)


def test_cost_per_1k_requests_hand_worked():
    # $0.8048/h at 2 req/s -> 0.8048 / (2 * 3600) * 1000 = 0.8048 / 7200 * 1000 = $0.11178
    assert cost_per_1k_requests(0.8048, 2) == pytest.approx(0.111778, rel=1e-5)
    # formula exactly
    assert cost_per_1k_requests(3.5, 0.7) == pytest.approx(3.5 / (0.7 * 3600) * 1000)


def test_cost_per_1k_requests_rejects_zero_throughput():
    with pytest.raises(ValueError, match="requests_per_s must be > 0"):
        cost_per_1k_requests(1.0, 0)


def test_requests_per_s():
    # 120 requests in 60 s -> 2 req/s
    assert requests_per_s(120, 60.0) == pytest.approx(2.0)
    assert requests_per_s(0, 10.0) == 0.0
    with pytest.raises(ValueError, match="wall_s"):
        requests_per_s(10, 0.0)
    with pytest.raises(ValueError, match="n_requests"):
        requests_per_s(-1, 1.0)


# --- monthly cost and savings --------------------------------------------------------------


def test_monthly_cost_hand_worked():
    # 1,000,000 req/month at 2 req/s capacity -> 1e6 / (2 * 3600) = 138.889 h
    # at $1.006/h -> 138.889 * 1.006 = $139.72
    assert monthly_cost(1.006, 2.0, 1_000_000) == pytest.approx(139.7222, rel=1e-6)
    # utilisation 0.5 halves effective capacity -> 277.778 h * 1.006 = $279.44
    assert monthly_cost(1.006, 2.0, 1_000_000, utilisation=0.5) == pytest.approx(279.4444, rel=1e-6)
    assert monthly_cost(1.006, 2.0, 0) == 0.0


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"requests_per_s_capacity": 0.0}, "requests_per_s_capacity"),
        ({"utilisation": 0.0}, "utilisation"),
        ({"utilisation": 1.5}, "utilisation"),
        ({"requests_per_month": -1}, "requests_per_month"),
    ],
)
def test_monthly_cost_rejects_bad_inputs(kwargs, match):
    args = {
        "price_per_hour": 1.0,
        "requests_per_s_capacity": 1.0,
        "requests_per_month": 100,
        **kwargs,
    }
    with pytest.raises(ValueError, match=match):
        monthly_cost(**args)


def test_savings_sign_and_fraction():
    # 100 -> 60: saves 40, 40 / 100 = 0.4
    assert savings(100.0, 60.0) == pytest.approx((40.0, 0.4))
    # 100 -> 125: costs 25 more, -25 / 100 = -0.25 (negative = the variant is dearer)
    assert savings(100.0, 125.0) == pytest.approx((-25.0, -0.25))
    # zero baseline: no division by zero
    assert savings(0.0, 5.0) == (-5.0, 0.0)


# --- variant_costs -------------------------------------------------------------------------


def test_variant_costs_with_failed_variant():
    price, volume = 1.006, 1_000_000
    rows = [
        # baseline: 9000 tokens, 100 requests in 100 s -> 90 tok/s, 1 req/s
        ("baseline", 9000, 100, 100.0),
        # int8: 9000 tokens, 100 requests in 50 s -> 180 tok/s, 2 req/s
        MeasuredThroughput("int8", 9000, 100, 50.0),
        # crashed: nothing produced
        ("broken", 0, 0, 0.0),
    ]
    out = variant_costs(rows, price, volume, baseline_name="baseline")
    assert [c.name for c in out] == ["baseline", "int8", "broken"]
    base, int8, broken = out
    assert all(isinstance(c, VariantCost) for c in out)

    # baseline: 1.006 / (90 * 3600) * 1e6 = $3.10494 per 1M tokens
    assert base.tokens_per_s == pytest.approx(90.0)
    assert base.cost_per_1m_output_tokens == pytest.approx(3.104938, rel=1e-6)
    # 1.006 / (1 * 3600) * 1000 = $0.27944 per 1k requests
    assert base.cost_per_1k_requests == pytest.approx(0.279444, rel=1e-5)
    # 1e6 / 3600 = 277.778 h * 1.006 = $279.444 per month
    assert base.monthly_cost == pytest.approx(279.4444, rel=1e-6)
    assert base.monthly_savings == pytest.approx(0.0)
    assert base.savings_fraction == pytest.approx(0.0)

    # int8 is twice as fast: half of everything; saves 279.444 - 139.722 = $139.72 (50 %)
    assert int8.requests_per_s == pytest.approx(2.0)
    assert int8.cost_per_1m_output_tokens == pytest.approx(1.552469, rel=1e-6)
    assert int8.monthly_cost == pytest.approx(139.7222, rel=1e-6)
    assert int8.monthly_savings == pytest.approx(139.7222, rel=1e-6)
    assert int8.savings_fraction == pytest.approx(0.5)

    assert broken == VariantCost("broken", None, None, None, None, None, None, None)


def test_variant_costs_zero_tokens_but_requests_and_missing_baseline():
    # 0 output tokens over 10 requests in 5 s: no $/1M tokens, but 2 req/s is costable
    (row,) = variant_costs([("empty-out", 0, 10, 5.0)], 3.6, 7200, baseline_name="nope")
    assert row.tokens_per_s is None and row.cost_per_1m_output_tokens is None
    # 3.6 / (2 * 3600) * 1000 = $0.50 per 1k requests; 7200 / 7200 = 1 h -> $3.60 / month
    assert row.cost_per_1k_requests == pytest.approx(0.5)
    assert row.monthly_cost == pytest.approx(3.6)
    # no baseline row with that name -> no savings, no crash
    assert row.monthly_savings is None and row.savings_fraction is None


def test_variant_costs_failed_baseline_gives_no_savings():
    rows = [("baseline", 0, 0, 0.0), ("int8", 100, 10, 10.0)]
    base, int8 = variant_costs(rows, 1.0, 1000, baseline_name="baseline")
    assert base.monthly_cost is None
    assert int8.monthly_cost is not None and int8.monthly_savings is None


# --- catalog specs and the input/output split ----------------------------------------------


def test_catalog_has_the_issue_gpus_with_specs():
    from engine.economics.hardware import CATALOG as HW_CATALOG

    assert HW_CATALOG is CATALOG  # engine.economics.cost re-exports the one catalog
    for key in ("nvidia-a10g", "nvidia-l4", "nvidia-l40s", "nvidia-a100-40gb",
                "nvidia-a100-80gb", "nvidia-h100-80gb", "nvidia-h200", "nvidia-rtx-4090"):
        hw = CATALOG[key]
        assert hw.kind == "gpu" and hw.bandwidth_gbs > 0 and hw.bf16_tflops > 0
        assert not hw.user_defined
    # datasheet figures the right-sizing tests rely on
    assert (CATALOG["nvidia-a10g"].memory_gb, CATALOG["nvidia-a10g"].bandwidth_gbs) == (24, 600)
    assert (CATALOG["nvidia-a100-80gb"].bandwidth_gbs, CATALOG["nvidia-h200"].memory_gb) == (2039, 141)
    assert sum(hw.kind == "cpu" for hw in CATALOG.values()) >= 2
    assert CATALOG["cpu-c7i-large"].bandwidth_gbs is None  # no public figure: not projected


def test_unit_costs_split_by_phase_hand_worked():
    from engine.economics.cost import unit_costs

    # $3.60/h, 100 s of wall time, 50 requests, 20,000 input and 5,000 output tokens;
    # prefill 10 s of 50 s request time -> f = 0.2.
    # dollars = 3.6 * 100 / 3600 / 1.0 = $0.10
    u = unit_costs(3.6, 100.0, 50, 20_000, 5_000, prefill_s=10.0, decode_s=40.0)
    assert u.prefill_fraction == pytest.approx(0.2)
    # input: 0.10 * 0.2 / 20,000 * 1e6 = $1.00 per 1M input tokens
    assert u.cost_per_1m_input_tokens == pytest.approx(1.0)
    # output: 0.10 * 0.8 / 5,000 * 1e6 = $16.00 per 1M output tokens
    assert u.cost_per_1m_output_tokens == pytest.approx(16.0)
    # requests: 0.10 / 50 * 1000 = $2.00 per 1k requests
    assert u.cost_per_1k_requests == pytest.approx(2.0)
    # the two shares add back to the whole bill: 1.0 * 0.02 + 16 * 0.005 = $0.10
    assert 20_000 / 1e6 * 1.0 + 5_000 / 1e6 * 16.0 == pytest.approx(0.10)
    # utilisation 0.5: paid for twice the time -> every figure doubles
    half = unit_costs(3.6, 100.0, 50, 20_000, 5_000, 10.0, 40.0, utilisation=0.5)
    assert half.cost_per_1m_output_tokens == pytest.approx(32.0)
    assert half.cost_per_1k_requests == pytest.approx(4.0)


@pytest.mark.parametrize("price,out_tokens,wall", [(1.006, 9000, 100.0), (2.95, 123_457, 61.7)])
def test_unit_costs_reduce_to_the_standard_formula(price, out_tokens, wall):
    from engine.economics.cost import unit_costs

    # no prefill time, utilisation 1: $/1M output = $/h / (tok/s * 3600) * 1e6
    u = unit_costs(price, wall, 10, 0, out_tokens, prefill_s=0.0, decode_s=5.0)
    tok_s = out_tokens / wall
    assert u.cost_per_1m_output_tokens == pytest.approx(price / (tok_s * 3600) * 1e6, rel=1e-12)
    assert u.cost_per_1m_output_tokens == pytest.approx(cost_per_million_tokens(price, tok_s),
                                                        rel=1e-12)
    assert u.cost_per_1m_input_tokens is None  # no input tokens: no input price


def test_unit_costs_rejects_bad_inputs():
    from engine.economics.cost import unit_costs

    with pytest.raises(ValueError, match="utilisation"):
        unit_costs(1.0, 10.0, 1, 1, 1, 1.0, 1.0, utilisation=0)
    with pytest.raises(ValueError, match="wall_s"):
        unit_costs(1.0, 0.0, 1, 1, 1, 1.0, 1.0)
