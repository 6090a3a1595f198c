"""Benchmark: run-to-run spread of a pilot's figures, with one timed pass and with repeats.

Runs the same pilot (baseline + int8 weights on the embedded model, CPU) ``--runs`` times
with ``--repeats 1`` and as many times with ``--repeats N``, each into a fresh SQLite store,
and prints, per variant and figure, the relative run-to-run spread ((max - min) / median of
the runs' reported figures). The repeated protocol should disagree less between runs.

    python bench/bench_repeats.py --runs 2 --repeats 3 --requests 6 --max-new-tokens 16
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from engine.core.settings import Settings, get_settings
from engine.ingest.logs import parse_log
from engine.pilot.report import build_report
from engine.pilot.runner import run_pilot
from engine.specs.pilot import (
    GenerationSettings,
    MeasurementSettings,
    PilotSpec,
    QuantizeWeights,
    VariantSpec,
)
from engine.store.store import Store


def _one_run(repeats: int, args, base: Settings) -> dict[str, dict[str, float]]:
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'roilab.db'}"
        settings = base.model_copy(update={"db_url": url})
        store = Store(url)
        path = base.samples_dir / "support_chat.jsonl"
        raw = path.read_bytes()
        w = store.add_workload("support", path.name, raw, parse_log(raw, path.name))
        spec = PilotSpec(workload_id=w.id, max_requests=args.requests,
                         generation=GenerationSettings(max_new_tokens=args.max_new_tokens,
                                                       batch_size=args.requests),
                         measurement=MeasurementSettings(repeats=repeats),
                         variants=(VariantSpec(name="baseline", device="cpu"),
                                   VariantSpec(name="int8", device="cpu",
                                               techniques=(QuantizeWeights(),))))
        run = run_pilot(spec, store, settings)
        rep = build_report(store, run.id)
        store.engine.dispose()
        return {v.name: {"tokens/s": v.tokens_per_s, "p95 s": v.latency.p95 if v.latency else None,
                         "peak MiB": (v.peak_mem_bytes or 0) / 2**20} for v in rep.variants}


def _spread(values: list[float]) -> float:
    med = statistics.median(values)
    return (max(values) - min(values)) / med if med else 0.0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--requests", type=int, default=6)
    p.add_argument("--max-new-tokens", type=int, default=16)
    args = p.parse_args()
    base = get_settings()
    for repeats in (1, args.repeats):
        runs = [_one_run(repeats, args, base) for _ in range(args.runs)]
        print(f"\nrepeats={repeats}: run-to-run spread over {args.runs} runs "
              "((max - min) / median of each run's reported figure)")
        for name in runs[0]:
            cells = []
            for fig in runs[0][name]:
                vals = [r[name][fig] for r in runs if r[name][fig] is not None]
                cells.append(f"{fig} {_spread(vals):6.1%} ({', '.join(f'{v:.4g}' for v in vals)})")
            print(f"  {name:10} " + "   ".join(cells))


if __name__ == "__main__":
    main()
