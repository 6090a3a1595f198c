"""The interpreter's garbage collector kept out of a timed pass, and what it still cost.

A full collection walks every object the process holds. Beside loaded vLLM engines, torch,
transformers and a prompt compressor's scorer that is a million objects or more: one full
collection takes 0.3-1 s (0.34 s here with vLLM and torch only imported), and while it runs
the process submits no batch, so the GPU idles. Python starts one when enough objects have
survived the younger collections, which with the results a pilot keeps happens every few
passes: on an H100 (the long-context sample, 4 variants of the embedded model on vLLM, passes
of 10 s) the third pass of two variants ran 16-19% slower, GPU utilisation 70% against 80-88%,
and the run was flagged unstable on a quiet machine: a stall of about 2 s in a pass, the size
of a full collection or two, and nothing else on the box.

So before its clock starts a pass freezes the heap (``gc.freeze``: what exists now moves
to a permanent generation no collection walks; a list splice, not a walk) and unfreezes it
after. It does not collect first: a full collection per pass would cost what it saves (the
transformers backend already collects before each pass to settle its memory figure; garbage
frozen with the heap is collected after the pass, like the rest). Collections during the
pass still run, over the objects the pass made, which is what a serving process pays; a
pass's ``gc_pause_s`` is the seconds they took, kept with the pass so a slow one can be told
apart from a slow machine. (Benchmark harnesses do
the same: ``timeit`` turns the collector off while it times; vLLM freezes its engine's heap
after start-up.)
"""
from __future__ import annotations

import gc
import time
from collections.abc import Iterator
from contextlib import contextmanager


class GcPauses:
    """Seconds spent in garbage collection, and full collections, while registered."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.full = 0
        self._t0: float | None = None

    def __call__(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._t0 = time.perf_counter()
        elif self._t0 is not None:
            self.seconds += time.perf_counter() - self._t0
            self._t0 = None
            self.full += info.get("generation") == 2


@contextmanager
def heap_frozen() -> Iterator[GcPauses]:
    """Freeze the heap for the block, then unfreeze it; yields the pauses the collector
    took inside the block (``gc.callbacks``)."""
    gc.freeze()
    pauses = GcPauses()
    gc.callbacks.append(pauses)
    try:
        yield pauses
    finally:
        gc.callbacks.remove(pauses)
        gc.unfreeze()
