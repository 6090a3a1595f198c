"""A timed pass freezes the heap that was there before it (engine.pilot.gcpause): a full
collection inside the pass walks only what the pass made, and the pauses it took are kept."""
from __future__ import annotations

import gc

import pytest

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
