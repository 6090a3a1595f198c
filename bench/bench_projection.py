"""How wrong is a projection from one device to another? Projects a pilot measured on one
device to another and compares it, variant by variant, with the same pilot measured there.

Both pilots go through `roilab pilot` (the front door); this script only reads their stores.
CPU to GPU (the embedded model's demo here, the same pilot on an H200)::

    python bench/bench_projection.py --from sqlite:///cpu.db --from-run 1 \
        --to sqlite:///gpu.db --to-run 1

GPU to GPU (the README's GPU pilot line on an H100 and on an H200), both ways::

    python bench/bench_projection.py --from sqlite:///h100.db --from-run 1 \
        --to sqlite:///h200.db --to-run 1 --both-ways

For each variant it prints the projected and the measured tokens/s, requests/s and p95
latency on the target, and the ratio projected / measured (1.00 = exact). The target is the
hardware the ``--to`` run was priced as (``--target`` overrides it). The projection is the
business case's own (engine.economics.sizing.project through
engine.business.case.build_business_case with ``target_hardware``), at the default engine
efficiency unless ``--efficiency`` says otherwise. ``--cpu/--cpu-run/--gpu/--gpu-run`` are
the old names of ``--from/--from-run/--to/--to-run``.
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


def _hardware_of(store: Store, run_id: int) -> str:
    """The catalog key the run's variants were measured (priced) on."""
    case = build_business_case(store, run_id, Assumptions(bootstrap_resamples=10))
    return case.rows[0].measured_hardware


def compare(src: Store, src_run: int, dst: Store, dst_run: int, target: str | None,
            efficiency: float | None) -> list[dict]:
    """Project run ``src_run`` to ``target`` (default: ``dst_run``'s hardware) and compare
    each variant with ``dst_run``, measured there. Prints a table; returns its rows."""
    target = target or _hardware_of(dst, dst_run)
    a = Assumptions(target_hardware=target, bootstrap_resamples=10,
                    **({"engine_efficiency": efficiency} if efficiency else {}))
    projected = _figures(src, src_run, a)
    measured = _figures(dst, dst_run, a)
    source = _hardware_of(src, src_run)
    rows = []
    print(f"run {src_run} measured on {source}, projected to {target} (engine efficiency "
          f"{a.engine_efficiency:.0%}) vs run {dst_run} measured there")
    print(f"{'variant':24} {'tok/s proj':>11} {'tok/s meas':>11} {'ratio':>6} "
          f"{'p95 proj':>9} {'p95 meas':>9} {'ratio':>6}")
    for name, p in projected.items():
        m = measured.get(name)
        if m is None:
            print(f"{name:24} not in run {dst_run}")
            continue
        if m["projected"]:
            print(f"{name:24} run {dst_run} was not measured on {target}: {m['method']}")
            continue
        r_tok, r_p95 = p["tok_s"] / m["tok_s"], p["p95_s"] / m["p95_s"]
        rows.append({"variant": name, "from": source, "to": target, "projected": p,
                     "measured": m, "tok_s_ratio": r_tok, "p95_ratio": r_p95})
        print(f"{name:24} {p['tok_s']:11,.1f} {m['tok_s']:11,.1f} {r_tok:6.2f} "
              f"{p['p95_s']:9.3f} {m['p95_s']:9.3f} {r_p95:6.2f}")
    if rows:
        print("method:", rows[0]["projected"]["method"])
        worst = max(rows, key=lambda r: abs(r["tok_s_ratio"] - 1))
        print(f"largest tokens/s error: {worst['tok_s_ratio'] - 1:+.1%} ({worst['variant']})")
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--from", "--cpu", dest="src", required=True,
                    help="store URL holding the pilot to project")
    ap.add_argument("--from-run", "--cpu-run", dest="src_run", type=int, required=True)
    ap.add_argument("--to", "--gpu", dest="dst", required=True,
                    help="store URL holding the same pilot measured on the target")
    ap.add_argument("--to-run", "--gpu-run", dest="dst_run", type=int, required=True)
    ap.add_argument("--target", default=None,
                    help="catalog key to project to (default: the --to run's hardware)")
    ap.add_argument("--both-ways", action="store_true",
                    help="also project the --to run to the --from run's hardware")
    ap.add_argument("--efficiency", type=float, default=None,
                    help="engine efficiency for the projection (default: the business case's)")
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args(argv)

    src, dst = Store(args.src), Store(args.dst)
    rows = compare(src, args.src_run, dst, args.dst_run, args.target, args.efficiency)
    if args.both_ways:
        print()
        rows += compare(dst, args.dst_run, src, args.src_run, None, args.efficiency)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0 if rows else 1


if __name__ == "__main__":
    raise SystemExit(main())
