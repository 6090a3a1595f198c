"""Benchmark: baseline and every compression technique over one sample workload, one run.

Runs a real pilot (engine.pilot.runner.run_pilot) with one variant per technique and prints, per
variant, the memory ratio, tokens/s ratio and quality retention versus the baseline, all
measured in the same process over the same requests. Variants whose technique is not
registered in this checkout, or that cannot run on this device, are listed with the reason.

    python bench/bench_techniques.py --requests 8 --max-new-tokens 32
    python bench/bench_techniques.py --only quantize_weights,prune     # a subset by kind
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from engine.core.settings import REPO_ROOT, Settings, get_settings
from engine.ingest.logs import parse_log
from engine.pilot.report import build_report, technique_figures
from engine.pilot.runner import run_pilot
from engine.specs.pilot import parse_pilot_spec
from engine.store.store import Store
from engine.techniques import MODULES

# One variant per technique (and a combination), as JSON specs: the same thing a user stores.
VARIANTS: list[tuple[str, list[dict]]] = [
    ("int8-torchao", [{"kind": "quantize_weights", "bits": 8, "method": "torchao"}]),
    ("int4-torchao", [{"kind": "quantize_weights", "bits": 4, "method": "torchao"}]),
    ("int8-quanto", [{"kind": "quantize_weights", "bits": 8, "method": "quanto"}]),
    ("int4-quanto", [{"kind": "quantize_weights", "bits": 4, "method": "quanto"}]),
    ("int8-bnb", [{"kind": "quantize_weights", "bits": 8, "method": "bnb"}]),
    ("nf4-bnb", [{"kind": "quantize_weights", "bits": 4, "method": "bnb"}]),
    ("int4-hqq", [{"kind": "quantize_weights", "bits": 4, "method": "hqq"}]),
    ("kv4-quanto", [{"kind": "quantize_kv_cache", "bits": 4, "backend": "quanto"}]),
    ("kv2-quanto", [{"kind": "quantize_kv_cache", "bits": 2, "backend": "quanto"}]),
    ("prune-mag-30", [{"kind": "prune", "method": "magnitude", "sparsity": 0.3}]),
    ("prune-2:4", [{"kind": "prune", "method": "2:4", "sparsity": 0.5}]),
    ("prune-wanda-50", [{"kind": "prune", "method": "wanda", "sparsity": 0.5}]),
    ("prune-iterative-50", [{"kind": "prune", "method": "wanda", "sparsity": 0.5,
                             "iterations": 2, "recovery_steps": 4}]),
    ("low-rank-0.9", [{"kind": "low_rank", "rank_fraction": 0.9}]),
    ("distill-20-layers", [{"kind": "distill", "student_layers": 20}]),
    ("qat-int4", [{"kind": "qat", "bits": 4}]),
    ("llmlingua-0.5", [{"kind": "compress_prompt", "rate": 0.5}]),
    ("longllmlingua-0.5", [{"kind": "compress_prompt", "rate": 0.5, "method": "longllmlingua"}]),
    ("int4-torchao+llmlingua", [{"kind": "quantize_weights", "bits": 4, "method": "torchao"},
                                {"kind": "compress_prompt", "rate": 0.5}]),
]


def _ratio(a, b) -> str:
    return f"{a / b:.2f}x" if a is not None and b else "n/a"


def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sample", default="support_chat.jsonl")
    ap.add_argument("--requests", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--only", default="", help="comma list of technique kinds to include")
    ap.add_argument("--data-dir", default="", help="default: a fresh temp dir")
    ap.add_argument("--json", default="", help="also write the per-variant table here")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--no-repeat-baseline", action="store_true", help="skip the baseline's "
                    "second run at the end (it shows how far the machine drifted meanwhile)")
    ap.add_argument("--gguf", default="", help="convert the embedded model from this GGUF "
                    "when the data dir has no converted copy (a bare GPU box)")
    args = ap.parse_args()
    only = {k for k in args.only.split(",") if k}
    data_dir = Path(args.data_dir or tempfile.mkdtemp(prefix="roilab-bench-"))
    (data_dir / "models").mkdir(parents=True, exist_ok=True)
    embedded = get_settings().models_dir / "smollm2-135m-instruct"
    link = data_dir / "models" / embedded.name
    if embedded.exists() and not link.exists():
        os.symlink(embedded, link)  # reuse the prepared model instead of converting again
    settings = Settings(data_dir=data_dir, db_url=f"sqlite:///{data_dir / 'bench.db'}")
    if args.gguf:
        from gpu_pilot import ensure_model
        ensure_model(settings, Path(args.gguf))
    store = Store(settings.resolved_db_url())
    raw = (REPO_ROOT / "data" / "samples" / args.sample).read_bytes()
    workload = store.add_workload(args.sample, args.sample, raw, parse_log(raw, args.sample))

    variants = [{"name": "baseline", "device": args.device}]
    for name, techniques in VARIANTS:
        kinds = {t["kind"] for t in techniques}
        missing = kinds - set(MODULES)
        if only and not kinds <= only:
            continue
        if missing:
            print(f"skip {name}: technique(s) {sorted(missing)} not in this checkout")
            continue
        variants.append({"name": name, "techniques": techniques, "device": args.device})
    if not args.no_repeat_baseline:
        # Same spec again, last: its ratios to the first run are the noise floor of the table.
        variants.append({"name": "baseline-repeat", "device": args.device})
    spec = parse_pilot_spec({"name": "bench-techniques", "workload_id": workload.id,
                             "variants": variants, "max_requests": args.requests,
                             "generation": {"max_new_tokens": args.max_new_tokens,
                                            "batch_size": args.batch_size}})
    t0 = time.perf_counter()
    run = run_pilot(spec, store, settings,
                    on_progress=lambda p: print(f"\r{p.fraction:5.1%} {p.variant}: "
                                                f"{p.message[:50]:50}", end="", flush=True))
    print()
    report = build_report(store, run.id)
    b = report.baseline
    print(f"\n{len(spec.variants)} variants x {args.requests} requests of {args.sample}, "
          f"max_new_tokens {args.max_new_tokens}, device {b.device}, "
          f"{time.perf_counter() - t0:.0f} s in all")
    print(f"baseline: {_fmt(b.tokens_per_s)} tok/s, peak {(b.peak_mem_bytes or 0) / 2**20:.0f} MiB, "
          f"weights {(b.weight_bytes or 0) / 2**20:.0f} MiB, p50 latency "
          f"{_fmt(b.latency.p50 if b.latency else None)} s; ratios vs baseline:")
    header = (f"{'variant':24} {'status':7} {'peak mem':>9} {'weights':>8} {'tok/s':>7} "
              f"{'ROUGE-L':>8} {'cosine':>7} {'ref kept':>9} {'tech s':>8}")
    print(header)
    rows = []
    for v in report.variants:
        ref_kept = (v.ref_contains / b.ref_contains if v.ref_contains is not None
                    and b.ref_contains else None)
        row = {"variant": v.name, "status": v.status,
               "peak_mem_ratio": _ratio(v.peak_mem_bytes, b.peak_mem_bytes),
               "weight_ratio": _ratio(v.weight_bytes, b.weight_bytes),
               "tok_s_ratio": _ratio(v.tokens_per_s, b.tokens_per_s),
               "rouge_l": _fmt(v.base_rouge_l), "cosine": _fmt(v.base_cosine),
               "ref_contains_retained": _fmt(ref_kept), "error": v.error}
        row["tokens_per_s"] = v.tokens_per_s
        row["peak_mem_bytes"] = v.peak_mem_bytes
        row["device"] = v.device
        row["technique_s"] = _technique_seconds(run, v.name)
        rows.append(row)
        print(f"{v.name:24} {v.status:7} {row['peak_mem_ratio']:>9} {row['weight_ratio']:>8} "
              f"{row['tok_s_ratio']:>7} {row['rouge_l']:>8} {row['cosine']:>7} "
              f"{row['ref_contains_retained']:>9} {_fmt(row['technique_s']):>8}")
        if v.error:
            print(f"{'':24} -> {v.error[:150]}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
        figures = technique_figures(report)
        figures.to_csv(Path(args.json).with_suffix(".figures.csv"), index=False)


_TIME_KEYS = {"seconds", "train_s", "teacher_generation_s", "convert_s", "compress_s_total"}


def _technique_seconds(run, name: str) -> float | None:
    """Seconds the techniques themselves took (calibration, training, compression), summed."""
    def walk(d) -> float:
        return sum(walk(x) if isinstance(x, dict) else float(x) if k in _TIME_KEYS
                   and isinstance(x, (int, float)) else 0.0 for k, x in d.items())
    for v in run.variants:
        if v.name == name:
            return round(walk({k: x for k, x in v.technique_report.items()
                               if isinstance(x, dict) and k != "_model"}), 2)
    return None


if __name__ == "__main__":
    main()
