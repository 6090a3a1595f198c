"""Benchmark: variant vs baseline, and our instrumented generate vs raw HF generate.

Prints ratios measured side by side in one process, alternating the contenders round by
round so background load hits them alike (absolute times on a shared 2-core machine swing
several-fold; the ratios are what to read).

    python bench/bench_pilot.py --rounds 3 --requests 8 --max-new-tokens 32
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from engine.backends import get_backend
from engine.core.settings import get_settings
from engine.ingest.logs import parse_log
from engine.models.prep import resolve_model
from engine.specs.pilot import QuantizeWeights, VariantSpec


def _prompts(n: int) -> list[list[dict]]:
    path = get_settings().samples_dir / "support_chat.jsonl"
    parsed = parse_log(path.read_bytes(), path.name)
    return [list(r.messages) for r in parsed.requests[:n]]


def _raw_generate(backend, batch, max_new_tokens) -> int:
    """The reference: plain model.generate, no per-step clock, same inputs."""
    enc = backend._encode(batch)
    with torch.no_grad():
        out = backend.model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                     pad_token_id=backend._pad_id)
    new = out[:, enc["input_ids"].shape[1]:].tolist()
    return sum(next((j for j, t in enumerate(r) if t in backend._eos_ids), len(r)) for r in new)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--requests", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    args = ap.parse_args()
    model = resolve_model(get_settings().default_model, get_settings())
    batch = _prompts(args.requests)
    backends = {}
    for spec in (VariantSpec(name="baseline"),
                 VariantSpec(name="int8-weights", techniques=(QuantizeWeights(),))):
        b = get_backend("transformers")(spec, model)
        info = b.load()
        b.generate(batch[:1], 2)  # warm-up, as the runner does
        backends[spec.name] = (b, info)
    rates: dict[str, list[float]] = {"baseline": [], "int8-weights": [], "raw-hf-baseline": []}
    for r in range(args.rounds):
        for name, (b, _) in backends.items():
            t0 = time.perf_counter()
            toks = sum(g.output_tokens for g in b.generate(batch, args.max_new_tokens))
            rates[name].append(toks / (time.perf_counter() - t0))
        b = backends["baseline"][0]
        t0 = time.perf_counter()
        toks = _raw_generate(b, batch, args.max_new_tokens)
        rates["raw-hf-baseline"].append(toks / (time.perf_counter() - t0))
        print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.1f} tok/s" for k, v in rates.items()))
    med = {k: statistics.median(v) for k, v in rates.items()}
    base_info, q_info = backends["baseline"][1], backends["int8-weights"][1]
    print(f"\nbatch {len(batch)}, max_new_tokens {args.max_new_tokens}, {args.rounds} rounds, "
          f"{base_info.device}; medians:")
    for k, v in med.items():
        print(f"  {k:16} {v:7.1f} tok/s")
    print(f"int8 vs baseline: speed {med['int8-weights'] / med['baseline']:.2f}x, "
          f"weight bytes {q_info.weight_bytes / base_info.weight_bytes:.2f}x")
    print(f"ours vs raw HF generate (instrumentation overhead): "
          f"{med['baseline'] / med['raw-hf-baseline']:.3f}x")


if __name__ == "__main__":
    main()
