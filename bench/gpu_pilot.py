"""Run the default pilot (baseline, int8 weights, LLMLingua 0.5) end to end on whatever
device torch sees (CUDA when there is a GPU), and write the report table to a folder.

Self-contained for a bare GPU box: the store is a fresh SQLite file, the data folder is
separate from the repo's, and the embedded model is converted from a local GGUF when the
folder is not there yet (no network needed).

    HF_HUB_OFFLINE=1 python bench/gpu_pilot.py --data-dir /tmp/roi \
        --gguf /tmp/SmolLM2-135M-Instruct.Q4_1.gguf --out /tmp/out --max-requests 32
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pandas as pd  # noqa: E402
import torch  # noqa: E402

from engine.core.settings import REPO_ROOT, Settings  # noqa: E402
from engine.ingest.logs import parse_log  # noqa: E402
from engine.models import prep as model_prep  # noqa: E402
from engine.pilot.report import build_report  # noqa: E402
from engine.pilot.runner import Progress, run_pilot  # noqa: E402
from engine.specs.pilot import CostSettings, GenerationSettings, PilotSpec, default_variants  # noqa: E402
from engine.store.store import Store  # noqa: E402

COLUMNS = ["name", "status", "device", "n_requests", "tokens_per_s", "requests_per_s",
           "latency_p50_s", "latency_p95_s", "ttft_p50_s", "peak_mem_bytes", "weight_bytes",
           "load_s", "prompt_tokens_original", "prompt_tokens_sent", "output_tokens",
           "ref_exact", "ref_contains", "ref_f1", "base_rouge_l", "base_cosine",
           "cost_per_1k_requests", "cost_per_1m_output_tokens", "savings_fraction", "error"]


def default_hardware() -> str:
    if not torch.cuda.is_available():
        return "cpu-c7i-large"
    name = torch.cuda.get_device_name(0)
    return "nvidia-h200" if "H200" in name else "nvidia-h100-80gb" if "H100" in name \
        else "nvidia-a100-80gb"


def ensure_model(settings: Settings, gguf: Path | None) -> Path:
    """The embedded model's folder under settings.models_dir, converted from ``gguf`` if absent."""
    target = model_prep.embedded_model_dir(settings)
    if model_prep._is_complete(target):
        return target
    if gguf is None:
        raise SystemExit(f"No converted model at {target}; pass --gguf.")
    t0 = time.perf_counter()
    staging = target.parent / (target.name + ".staging")
    shutil.rmtree(staging, ignore_errors=True)
    model_prep._convert(gguf, staging)
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    print(f"converted {gguf.name} -> {target} in {time.perf_counter() - t0:.1f} s", flush=True)
    return target


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", type=Path, default=Path("/tmp/roilab_gpu"))
    ap.add_argument("--gguf", type=Path, default=None)
    ap.add_argument("--log", type=Path, default=REPO_ROOT / "data/samples/support_chat.jsonl")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--max-requests", type=int, default=32)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--hardware", default=None, help="engine.economics.cost key; default from the device")
    args = ap.parse_args()

    print(f"torch {torch.__version__}, cuda available: {torch.cuda.is_available()}"
          + (f", {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""), flush=True)
    args.data_dir.mkdir(parents=True, exist_ok=True)
    settings = Settings(data_dir=args.data_dir, db_url=f"sqlite:///{args.data_dir / 'pilot.db'}")
    ensure_model(settings, args.gguf)
    store = Store(settings.resolved_db_url())
    raw = args.log.read_bytes()
    workload = store.add_workload(args.log.stem, args.log.name, raw,
                                  parse_log(raw, args.log.name))
    hardware = args.hardware or default_hardware()
    spec = PilotSpec(name="gpu-pilot", workload_id=workload.id, variants=default_variants(),
                     generation=GenerationSettings(max_new_tokens=args.max_new_tokens,
                                                   batch_size=args.batch_size),
                     cost=CostSettings(hardware=hardware), max_requests=args.max_requests)
    t_start = time.perf_counter()
    last = {}

    def on_progress(p: Progress) -> None:
        # One line per stage change, not per request.
        stage = p.message.split(" ")[0]
        if last.get(p.variant) != stage or p.message.startswith(("done", "failed")):
            last[p.variant] = stage
            print(f"[{time.perf_counter() - t_start:7.1f}s] {p.variant}: {p.message}", flush=True)

    run = run_pilot(spec, store, settings, on_progress)
    report = build_report(store, run.id)
    frame = report.frame()
    table = frame[[c for c in COLUMNS if c in frame.columns]]

    print(f"\nworkload {workload.n_requests} requests, pilot on {len(report.results) // max(1, len(frame))}"
          f" per variant; hardware {report.hardware.key} at ${report.price_per_hour}/h; "
          f"max_new_tokens {args.max_new_tokens}, batch {args.batch_size}")
    for v in run.variants:
        print(f"- {v.name}: status {v.status}; device {v.device!r}; error {v.error!r}")
        if v.technique_report:
            print(f"  technique report: {json.dumps(v.technique_report, default=str)}")
    with pd.option_context("display.width", 250, "display.max_columns", 40,
                           "display.float_format", "{:.4g}".format):
        print(table.drop(columns=["error"]).set_index("name").T.to_string())
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        table.to_csv(args.out / "pilot_summary.csv", index=False)
        meta = {"torch": torch.__version__,
                "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
                "hardware": report.hardware.key, "price_per_hour": report.price_per_hour,
                "spec": run.spec,
                "variants": [{"name": v.name, "status": v.status, "error": v.error,
                              "device": v.device, "technique_report": v.technique_report}
                             for v in run.variants],
                "summary": json.loads(table.to_json(orient="records"))}
        (args.out / "pilot_summary.json").write_text(json.dumps(meta, indent=1, default=str))
        report.results.to_csv(args.out / "pilot_results.csv", index=False)
        print(f"wrote {args.out}/pilot_summary.csv, pilot_summary.json, pilot_results.csv")


if __name__ == "__main__":
    main()
