"""What one full garbage collection costs a pilot's process, with and without the heap frozen
as a timed pass freezes it (engine.pilot.gcpause), side by side in one run.

    python bench/bench_gc_pause.py [--vllm] [--copies N]

Builds the heap of a pilot's process (torch and transformers imported, the embedded model
loaded N times as a pilot keeps N variants loaded; with --vllm, vLLM imported too), then times
``gc.collect()`` five times as Python would start it mid-pass, and five times inside
``heap_frozen()``. Prints the objects on the heap, both medians and their ratio.
"""
from __future__ import annotations

import argparse
import gc
import statistics
import time


def _median_collect(times: int = 5) -> float:
    spent = []
    for _ in range(times):
        t0 = time.perf_counter()
        gc.collect()
        spent.append(time.perf_counter() - t0)
    return statistics.median(spent)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vllm", action="store_true", help="import vLLM as well")
    ap.add_argument("--copies", type=int, default=2, help="copies of the model held (variants)")
    args = ap.parse_args()
    import torch  # noqa: F401
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from engine.core.settings import get_settings
    from engine.models.prep import prepare_embedded_model
    from engine.pilot.gcpause import heap_frozen

    if args.vllm:
        import vllm  # noqa: F401
    folder = prepare_embedded_model(get_settings())
    held = [(AutoModelForCausalLM.from_pretrained(folder), AutoTokenizer.from_pretrained(folder))
            for _ in range(args.copies)]
    gc.collect()
    print(f"heap: {len(gc.get_objects()):,} objects the collector tracks "
          f"({args.copies} model copies{', vLLM imported' if args.vllm else ''})")
    open_heap = _median_collect()
    with heap_frozen() as pauses:
        frozen = _median_collect()
    print(f"full collection, heap as it is:        {open_heap * 1000:9.3f} ms (median of 5)")
    print(f"full collection, heap frozen (a pass): {frozen * 1000:9.3f} ms (median of 5; "
          f"{pauses.full} counted, {pauses.seconds * 1000:.3f} ms in all)")
    print(f"ratio: {open_heap / frozen:,.0f}x shorter inside a pass" if frozen else "ratio: -")
    del held


if __name__ == "__main__":
    main()
