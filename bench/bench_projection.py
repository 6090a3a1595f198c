"""How wrong is a CPU-to-GPU projection? Projects a pilot measured on the CPU to a GPU and
compares it, variant by variant, with the same pilot measured on that GPU.

Both pilots go through `roilab pilot` (the front door); this script only reads their stores:

    # here (CPU):   roilab pilot --workload 1 ...            -> data/roilab.db, run 1
    # GPU box:      roilab pilot --workload 1 --hardware nvidia-h200 --device cuda ...
    python bench/bench_projection.py --cpu sqlite:///data/roilab.db --cpu-run 1 \
        --gpu sqlite:///gpu.db --gpu-run 1 --target nvidia-h200

For each variant it prints the projected and the measured tokens/s, requests/s and p95
latency on the target, and the ratio projected / measured (1.00 = exact). The projection is
the business case's own (engine.economics.sizing.project through
engine.business.case.build_business_case with ``target_hardware``), at the default engine
efficiency unless ``--efficiency`` says otherwise.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.business.case import build_business_case  # noqa: E402
from engine.business.types import Assumptions  # noqa: E402
from engine.store.store import Store  # noqa: E402


def _figures(store: Store, run_id: int, a: Assumptions) -> dict[str, dict]:
    case = build_business_case(store, run_id, a)
    out = {}
    for row in case.rows:
        proj = row.target.projection if row.target else None
        if proj is None:
            continue
        out[row.name] = {"tok_s": proj.tokens_per_s, "req_s": proj.requests_per_s,
                         "p95_s": proj.latency_p95_s, "projected": proj.projected,
                         "method": proj.method, "measured_on": row.measured_hardware}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cpu", required=True, help="store URL holding the CPU pilot")
    ap.add_argument("--cpu-run", type=int, required=True)
    ap.add_argument("--gpu", required=True, help="store URL holding the GPU pilot")
    ap.add_argument("--gpu-run", type=int, required=True)
    ap.add_argument("--target", default="nvidia-h200")
    ap.add_argument("--efficiency", type=float, default=None,
                    help="engine efficiency for the projection (default: the business case's)")
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args(argv)

    a = Assumptions(target_hardware=args.target, bootstrap_resamples=10,
                    **({"engine_efficiency": args.efficiency} if args.efficiency else {}))
    projected = _figures(Store(args.cpu), args.cpu_run, a)
    measured = _figures(Store(args.gpu), args.gpu_run, a)
    rows = []
    print(f"CPU run {args.cpu_run} projected to {args.target} (engine efficiency "
          f"{a.engine_efficiency:.0%}) vs GPU run {args.gpu_run} measured there")
    print(f"{'variant':24} {'tok/s proj':>11} {'tok/s meas':>11} {'ratio':>6} "
          f"{'p95 proj':>9} {'p95 meas':>9} {'ratio':>6}")
    for name, p in projected.items():
        m = measured.get(name)
        if m is None:
            print(f"{name:24} not in the GPU run")
            continue
        if m["projected"]:
            print(f"{name:24} the GPU run was not measured on {args.target}: {m['method']}")
            continue
        r_tok, r_p95 = p["tok_s"] / m["tok_s"], p["p95_s"] / m["p95_s"]
        rows.append({"variant": name, "projected": p, "measured": m,
                     "tok_s_ratio": r_tok, "p95_ratio": r_p95})
        print(f"{name:24} {p['tok_s']:11,.1f} {m['tok_s']:11,.1f} {r_tok:6.2f} "
              f"{p['p95_s']:9.3f} {m['p95_s']:9.3f} {r_p95:6.2f}")
    if rows:
        print("method:", rows[0]["projected"]["method"])
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0 if rows else 1


if __name__ == "__main__":
    raise SystemExit(main())
