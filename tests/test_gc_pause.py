"""A timed pass freezes the heap that was there before it (engine.pilot.gcpause): a full
collection inside the pass walks only what the pass made, and the pauses it took are kept."""
from __future__ import annotations

import gc
from types import SimpleNamespace

import pandas as pd
import pytest

from engine.pilot import stability
from engine.pilot.gcpause import heap_frozen


def test_the_heap_from_before_is_frozen_for_the_pass_and_given_back_after() -> None:
    before = [[i] for i in range(200_000)]  # long-lived objects, like a loaded engine's
    assert gc.get_freeze_count() == 0
    with heap_frozen() as pauses:
        assert gc.get_freeze_count() >= len(before)
        made = [[i] for i in range(1000)]  # what the pass makes
        gc.collect()  # a full collection mid-pass, as Python starts one
        assert pauses.full == 1 and pauses.seconds > 0
        assert gc.is_tracked(made[0])
    assert gc.get_freeze_count() == 0
    assert pauses.full == 1  # counting stopped with the block
    gc.collect()
    assert pauses.full == 1


def test_a_pass_that_fails_still_unfreezes_and_stops_counting() -> None:
    callbacks = list(gc.callbacks)
    with pytest.raises(RuntimeError), heap_frozen():
        raise RuntimeError("the backend failed mid-pass")
    assert gc.get_freeze_count() == 0
    assert gc.callbacks == callbacks


def _passes(walls: list[float], gc_s: list[float | None]) -> pd.DataFrame:
    """A variant's three timed passes as ``Store.passes_frame`` gives them: 24,192 tokens
    each (the H100 run's baseline: 12 requests x 48 tokens x 42 replays)."""
    return pd.DataFrame([{"variant": "baseline", "variant_id": 1, "pass_index": i,
                          "role": "timed", "wall_s": w, "throughput_tok_s": 24192 / w,
                          "output_tokens": 24192, "latency_p50_s": 0.13,
                          "latency_p95_s": 0.14, "peak_mem_bytes": 2**30, "gc_pause_s": g}
                         for i, (w, g) in enumerate(zip(walls, gc_s, strict=True))])


def _lines(stab: stability.Stability) -> list[str]:
    v = SimpleNamespace(name="baseline", device="cuda:0 NVIDIA H100 80GB HBM3 (vLLM)",
                        busy=None, baseline_drift=None, **{
                            k: getattr(stab, k) for k in ("passes", "unstable",
                                                          "gc_pause_max_s", "gc_pause_share")})
    return stability.stability_lines(SimpleNamespace(hardware=SimpleNamespace(kind="gpu"),
                                                     variants=[v], baseline=v))


def test_a_pass_slowed_by_garbage_collection_says_so_beside_its_flag() -> None:
    """The H100 run's shape (10.1-10.5 s passes, one of 12.0 s): where the slow pass spent
    1.9 s collecting garbage, the flag says so; where it spent none, the flag alone."""
    stab = stability.variant_stability(_passes([10.47, 10.12, 12.03], [0.01, 0.0, 1.9]))
    assert stab.unstable == ("tokens/s",) and stab.gc_pause_max_s == 1.9
    assert stab.gc_pause_share == pytest.approx(1.9 / 10.47)
    (line,) = _lines(stab)
    assert line.startswith("Unstable: baseline's tokens/s varied by more than 10%")
    assert line.endswith("One of its passes spent 1.9 s (18% of a pass) collecting the "
                         "interpreter's garbage.")
    quiet = stability.variant_stability(_passes([10.47, 10.12, 12.03], [0.01, 0.0, 0.02]))
    (line,) = _lines(quiet)
    assert "garbage" not in line
    before = stability.variant_stability(_passes([10.47, 10.12, 12.03], [None] * 3))
    assert before.gc_pause_max_s is None and "garbage" not in _lines(before)[0]
