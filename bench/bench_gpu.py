"""GPU benchmark of the production path: what transformers reaches against the bandwidth bound.

Parts (each appends to ``<res>/random.json`` or writes ``<res>/pilot_*``, so a lease can
run them in separate calls; ``table`` prints everything side by side):

- ``bandwidth``: device-to-device copy bandwidth (bytes read + written), the bound's input.
- ``random``: Llama-3.1-8B shape with random bf16 weights (``random:llama-3.1-8b``), batch
  1 and 8, synthetic 256-token prompts, 128 new tokens: eager vs static cache +
  torch.compile, and quantized weights under compile. Speed and memory only: random
  weights, accuracy not measured. Compile warm-up is timed apart from serving.
- ``pilot``: the embedded SmolLM2 with real weights through ``engine.pilot.runner.run_pilot``:
  baseline and int8 weights, each eager and compiled, for accuracy on CUDA.

    HF_HUB_OFFLINE=1 python bench/bench_gpu.py bandwidth random --res /tmp/res \
        --variants eager,compiled,int8-compiled,int4-compiled --deadline-s 540
    HF_HUB_OFFLINE=1 python bench/bench_gpu.py pilot table --res /tmp/res \
        --data-dir /tmp/roi --gguf /tmp/SmolLM2-135M-Instruct.Q4_1.gguf
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

from engine.backends.transformers_backend import TransformersBackend  # noqa: E402
from engine.core.settings import Settings  # noqa: E402
from engine.economics.roofline import (  # noqa: E402
    GPU_BANDWIDTH_SPEC,
    decode_bound_tok_s,
    mean_decode_context,
)
from engine.models.prep import resolve_model  # noqa: E402
from engine.models.shape import kv_bytes_per_token, streamed_weight_bytes  # noqa: E402
from engine.specs.pilot import QuantizeWeights, VariantSpec  # noqa: E402
from engine.techniques.kv_cache import QuantizeKVCache  # noqa: E402
from engine.techniques.pruning import Prune  # noqa: E402

RANDOM_MODEL = "random:llama-3.1-8b"
# name -> (compile, techniques); all bf16 on CUDA
RANDOM_VARIANTS = {
    "eager": (False, ()),
    "compiled": (True, ()),
    "int8-eager": (False, (QuantizeWeights(bits=8),)),
    "int8-compiled": (True, (QuantizeWeights(bits=8),)),
    "int4-compiled": (True, (QuantizeWeights(bits=4, method="torchao", group_size=128),)),
    "nf4-compiled": (True, (QuantizeWeights(bits=4, method="bnb", group_size=64),)),
    "hqq4-compiled": (True, (QuantizeWeights(bits=4, method="hqq", group_size=64),)),
    "int8-bnb-eager": (False, (QuantizeWeights(bits=8, method="bnb"),)),
    "nf4-eager": (False, (QuantizeWeights(bits=4, method="bnb", group_size=64),)),
    "hqq4-eager": (False, (QuantizeWeights(bits=4, method="hqq", group_size=64),)),
    "int8-quanto-eager": (False, (QuantizeWeights(bits=8, method="quanto"),)),
    # Quantized KV cache is a dynamic cache: it has no static/compiled path in transformers.
    "kv4-quanto-eager": (False, (QuantizeKVCache(bits=4, backend="quanto"),)),
    "kv2-quanto-eager": (False, (QuantizeKVCache(bits=2, backend="quanto"),)),
    # 2:4 zeros in dense tensors vs the same weights stored for cuSPARSELt's sparse kernels.
    "2:4-dense-compiled": (True, (Prune(method="2:4", sparsity=0.5),)),
    "2:4-sparse-eager": (False, (Prune(method="2:4", sparsity=0.5, semi_structured=True),)),
    "2:4-sparse-compiled": (True, (Prune(method="2:4", sparsity=0.5, semi_structured=True),)),
}
# Rough seconds a variant needs: eager ~40 s; compiled = two compiles (batch 1 and 8), seen
# at 48 + 61 s for bf16, 84 + 194 s for torchao int4 and 176 s for int8's first on an H200.
EST_S = {True: 300, False: 60}


def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _load_json(path: Path, default):
    return json.loads(path.read_text()) if path.is_file() else default


# --- bandwidth -------------------------------------------------------------------------------

def measure_bandwidth(n_bytes: int = 2 << 30, reps: int = 20) -> float:
    """Device-to-device copy, bytes read plus written, median of ``reps`` timed copies."""
    src = torch.randn(n_bytes // 2, dtype=torch.bfloat16, device="cuda")
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        dst.copy_(src)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1000)
    assert torch.equal(dst[:1000], src[:1000])
    del src, dst
    torch.cuda.empty_cache()
    return 2 * n_bytes / statistics.median(times)


def part_bandwidth(res: Path) -> None:
    bw = measure_bandwidth()
    name = torch.cuda.get_device_name(0)
    info = {"gpu": name, "copy_bandwidth_B_s": bw, "spec_bandwidth_B_s": GPU_BANDWIDTH_SPEC.get(name),
            "torch": torch.__version__}
    (res / "bandwidth.json").write_text(json.dumps(info, indent=1))
    say(f"{name}: copy bandwidth {bw / 1e12:.2f} TB/s (spec {info['spec_bandwidth_B_s']})")


# --- random-weights production shape --------------------------------------------------------

def _measure(backend: TransformersBackend, batch: int, prompt: int, new: int, reps: int,
             vocab: int) -> dict:
    gen = torch.Generator().manual_seed(1000 + batch)
    ids = torch.randint(0, vocab, (batch, prompt), generator=gen).to(backend.device)
    mask = torch.ones_like(ids)
    warm0 = backend.warm_up_s
    t0 = time.perf_counter()
    backend.generate_ids(ids, mask, new if backend.spec.compile else 8)  # untimed
    warm_total = time.perf_counter() - t0
    if ids.is_cuda:
        torch.cuda.reset_peak_memory_stats()
    lat, ttft = [], []
    for _ in range(reps):
        gens = backend.generate_ids(ids, mask, new)
        assert all(g.output_tokens == new for g in gens), [g.output_tokens for g in gens]
        lat.append(max(g.latency_s for g in gens))
        ttft.append(gens[0].ttft_s)
    latency, first = statistics.median(lat), statistics.median(ttft)
    return {"batch": batch, "prompt_tokens": prompt, "new_tokens": new, "reps": reps,
            "latency_s": latency, "latency_spread_s": max(lat) - min(lat), "ttft_s": first,
            "tok_s": batch * new / latency,
            "decode_tok_s": batch * (new - 1) / (latency - first),
            "compile_s": round(backend.warm_up_s - warm0, 2),
            "first_call_s": round(warm_total, 2),
            "peak_mem_bytes": backend.peak_memory_bytes()}


def run_random_variant(name: str, args, settings: Settings, bandwidth: float) -> dict:
    compile_, techniques = RANDOM_VARIANTS[name]
    spec = VariantSpec(name=name, model=args.model, device=args.device, dtype="bfloat16",
                       compile=compile_, techniques=techniques)
    backend = TransformersBackend(spec, resolve_model(args.model, settings))
    row = {"variant": name, "spec": spec.model_dump(mode="json"), "status": "ok"}
    try:
        TransformersBackend.check(spec, args.device)
        from engine.techniques import technique_module

        for tech in spec.techniques:
            technique_module(tech.kind).check(tech, args.device)
        info = backend.load()
        model = backend.model
        weights = streamed_weight_bytes(model)
        kv = kv_bytes_per_token(model.config, 2)
        row.update(load_s=round(info.load_s, 1), weight_bytes=info.weight_bytes,
                   streamed_weight_bytes=weights, kv_bytes_per_token=kv,
                   technique_report=info.technique_report, runs=[])
        say(f"{name}: loaded in {info.load_s:.1f} s, weights {info.weight_bytes / 1e9:.2f} GB")
        context = mean_decode_context(args.prompt_tokens, args.new_tokens)
        for batch in args.batches:
            reps = args.reps if compile_ else args.eager_reps
            r = _measure(backend, batch, args.prompt_tokens, args.new_tokens, reps,
                         model.config.vocab_size)
            r["bound_tok_s"] = decode_bound_tok_s(weights, kv, context, batch, bandwidth)
            r["pct_of_bound"] = 100 * r["decode_tok_s"] / r["bound_tok_s"]
            row["runs"].append(r)
            say(f"{name} b{batch}: {r['tok_s']:.1f} tok/s (decode {r['decode_tok_s']:.1f}, "
                f"{r['pct_of_bound']:.0f}% of {r['bound_tok_s']:.0f}), compile {r['compile_s']} s,"
                f" peak {r['peak_mem_bytes'] / 1e9:.2f} GB")
        row["serving"] = backend.serving_report()
    except Exception as exc:  # noqa: BLE001 - record and go on to the next variant
        row.update(status="failed", error=f"{type(exc).__name__}: {str(exc)[:500]}")
        say(f"{name}: FAILED {row['error']}")
    finally:
        backend.close()
    return row


def part_random(res: Path, args) -> None:
    settings = Settings(data_dir=args.data_dir)
    bw_info = _load_json(res / "bandwidth.json", None) or {}
    gpu = torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu"
    bandwidth = bw_info.get("copy_bandwidth_B_s") or GPU_BANDWIDTH_SPEC.get(gpu, 4.8e12)
    path = res / "random.json"
    rows = _load_json(path, [])
    for name in args.variants:
        left = args.deadline_s - (time.perf_counter() - T_START)
        if left < EST_S[RANDOM_VARIANTS[name][0]]:
            say(f"{name}: skipped, {left:.0f} s left of the deadline")
            continue
        row = run_random_variant(name, args, settings, bandwidth)
        row.update(gpu=gpu, bandwidth_used_B_s=bandwidth)
        rows = [r for r in rows if r["variant"] != name] + [row]
        path.write_text(json.dumps(rows, indent=1, default=str))


# --- SmolLM2 pilot through the runner --------------------------------------------------------

def part_pilot(res: Path, args) -> None:
    import gpu_pilot  # bench/gpu_pilot.py: model conversion and the report columns

    from engine.ingest.logs import parse_log
    from engine.pilot.report import build_report
    from engine.pilot.runner import run_pilot
    from engine.specs.pilot import CostSettings, GenerationSettings, PilotSpec
    from engine.store.store import Store

    args.data_dir.mkdir(parents=True, exist_ok=True)
    settings = Settings(data_dir=args.data_dir, db_url=f"sqlite:///{args.data_dir / 'bench.db'}")
    gpu_pilot.ensure_model(settings, args.gguf)
    store = Store(settings.resolved_db_url())
    log = settings.samples_dir / "support_chat.jsonl"
    raw = log.read_bytes()
    workload = store.add_workload(log.stem, log.name, raw, parse_log(raw, log.name))
    int8 = (QuantizeWeights(bits=8),)
    dev = args.device
    variants = (VariantSpec(name="baseline", device=dev),
                VariantSpec(name="compiled", device=dev, compile=True),
                VariantSpec(name="int8", device=dev, techniques=int8),
                VariantSpec(name="int8-compiled", device=dev, compile=True, techniques=int8))
    spec = PilotSpec(name="gpu-compile-pilot", workload_id=workload.id, variants=variants,
                     generation=GenerationSettings(max_new_tokens=args.max_new_tokens,
                                                   batch_size=args.batch_size),
                     cost=CostSettings(hardware=gpu_pilot.default_hardware()),
                     max_requests=args.max_requests)
    run = run_pilot(spec, store, settings,
                    lambda p: say(f"{p.variant}: {p.message}") if p.message in (
                        "loading model", "warming up", "done") or p.message.startswith(
                        ("failed", "refused")) else None)
    report = build_report(store, run.id)
    frame = report.frame()
    table = frame[[c for c in gpu_pilot.COLUMNS if c in frame.columns]]
    table.to_csv(res / "pilot_summary.csv", index=False)
    meta = {"gpu": torch.cuda.get_device_name(0) if dev == "cuda" else "cpu", "spec": run.spec,
            "variants": [{"name": v.name, "status": v.status, "error": v.error,
                          "technique_report": v.technique_report} for v in run.variants],
            "summary": json.loads(table.to_json(orient="records"))}
    (res / "pilot_summary.json").write_text(json.dumps(meta, indent=1, default=str))
    report.results.to_csv(res / "pilot_results.csv", index=False)


# --- the side-by-side table -------------------------------------------------------------------

def part_table(res: Path, args) -> None:
    bw = _load_json(res / "bandwidth.json", {})
    if bw:
        print(f"\nGPU {bw['gpu']}: copy bandwidth {bw['copy_bandwidth_B_s'] / 1e12:.2f} TB/s "
              f"measured, {(bw['spec_bandwidth_B_s'] or 0) / 1e12:.2f} TB/s spec")
    rows = [r for r in _load_json(res / "random.json", []) if r["status"] == "ok"]
    base = {r["batch"]: r for row in rows if row["variant"] == "compiled" for r in row["runs"]}
    eager = {r["batch"]: r for row in rows if row["variant"] == "eager" for r in row["runs"]}
    print("\nLlama-3.1-8B shape, random bf16 weights (accuracy not measured), "
          f"{args.prompt_tokens}-token prompts, {args.new_tokens} new tokens; ratios vs compiled bf16")
    print(f"{'variant':15} {'b':>2} {'tok/s':>8} {'decode':>8} {'bound':>6} {'%bound':>6} "
          f"{'x comp':>6} {'x eager':>7} {'ttft ms':>7} {'peak GB':>7} {'wts GB':>6} {'compile s':>9}")
    for row in rows:
        for r in row["runs"]:
            b = r["batch"]
            vs = r["tok_s"] / base[b]["tok_s"] if b in base else float("nan")
            ve = r["tok_s"] / eager[b]["tok_s"] if b in eager else float("nan")
            print(f"{row['variant']:15} {b:>2} {r['tok_s']:8.1f} {r['decode_tok_s']:8.1f} "
                  f"{r['bound_tok_s']:6.0f} {r['pct_of_bound']:5.1f}% {vs:6.2f} {ve:7.2f} "
                  f"{1000 * r['ttft_s']:7.1f} {r['peak_mem_bytes'] / 1e9:7.2f} "
                  f"{row['weight_bytes'] / 1e9:6.2f} {r['compile_s']:9.1f}")
    for row in _load_json(res / "random.json", []):
        if row["status"] != "ok":
            print(f"{row['variant']}: {row['status']}: {row.get('error')}")
    pilot = _load_json(res / "pilot_summary.json", None)
    if pilot:
        import pandas as pd

        frame = pd.DataFrame(pilot["summary"]).set_index("name")
        cols = ["status", "tokens_per_s", "latency_p50_s", "ttft_p50_s", "peak_mem_bytes",
                "weight_bytes", "ref_contains", "ref_f1", "base_rouge_l", "base_cosine"]
        frame = frame[[c for c in cols if c in frame.columns]]
        frame.insert(2, "x_baseline", frame["tokens_per_s"] / frame.loc["baseline", "tokens_per_s"])
        print(f"\nSmolLM2-135M pilot on {pilot['gpu']} (fp32, real weights), via run_pilot")
        with pd.option_context("display.width", 200, "display.max_columns", 20,
                               "display.float_format", "{:.4g}".format):
            print(frame.to_string())
        for v in pilot["variants"]:
            serving = v["technique_report"].get("serving")
            if serving or v["error"]:
                print(f"- {v['name']}: {v['error'] or ''} {json.dumps(serving) if serving else ''}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("parts", nargs="+", choices=["bandwidth", "random", "pilot", "table"])
    ap.add_argument("--res", type=Path, required=True, help="results folder (appended to)")
    ap.add_argument("--data-dir", type=Path, default=Path("/tmp/roi"))
    ap.add_argument("--model", default=RANDOM_MODEL, help="random part: e.g. random:tiny-llama")
    ap.add_argument("--device", default="cuda", help="cpu only for a smoke run of this script")
    ap.add_argument("--variants", default="eager,compiled,int8-compiled,int4-compiled",
                    type=lambda s: s.split(","))
    ap.add_argument("--batches", default="1,8", type=lambda s: [int(x) for x in s.split(",")])
    ap.add_argument("--prompt-tokens", type=int, default=256)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--eager-reps", type=int, default=3)
    ap.add_argument("--deadline-s", type=float, default=540)
    ap.add_argument("--gguf", type=Path, default=None)
    ap.add_argument("--max-requests", type=int, default=32)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--batch-size", type=int, default=8)
    args = ap.parse_args()
    args.res.mkdir(parents=True, exist_ok=True)
    for part in args.parts:
        {"bandwidth": lambda: part_bandwidth(args.res), "random": lambda: part_random(args.res, args),
         "pilot": lambda: part_pilot(args.res, args), "table": lambda: part_table(args.res, args)
         }[part]()


T_START = time.perf_counter()

if __name__ == "__main__":
    main()
