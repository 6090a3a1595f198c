"""``roilab runs``, ``roilab show`` and ``roilab report``: stored runs, one run's
per-variant table (and CSV), and its business case as a PDF."""
from __future__ import annotations

import json
from pathlib import Path

from engine.cli.common import open_store
from engine.core.errors import RoilabError
from engine.core.inert import terminal_safe
from engine.core.settings import Settings


def print_run(run_id: int, settings: Settings, csv_path: str | None = None) -> None:
    """The run's per-variant table; with ``csv_path`` also its full figures as a CSV that a
    spreadsheet opens without live formulas (engine.core.inert)."""
    from engine.economics.decision import RANDOM_WEIGHTS
    from engine.pilot.liveness import reap_dead_runs
    from engine.pilot.report import build_report, speed_memory_only

    store = open_store(settings)
    reap_dead_runs(store)
    report = build_report(store, run_id)
    if csv_path:
        from engine.core.inert import write_safe_csv

        # the pilot's busy-hours month is not the case's monthly cost: left out (issue 12)
        write_safe_csv(report.frame().drop(columns=list(_RETIRED), errors="ignore"), csv_path)

    def say(text: str) -> None:  # every line below can hold names or errors
        print(terminal_safe(text, multiline=True))

    cols = ["name", "status", "devices", "tokens_per_s", "latency_p50_s", "latency_p95_s",
            "peak_mem_bytes", "weight_bytes", "kv_cache_tokens", "ref_contains", "base_rouge_l",
            "base_cosine", "cost_per_1k_requests", "cost_per_1m_output_tokens"]
    frame = report.frame()[cols].copy()
    frame["name"] = frame["name"].map(terminal_safe)  # one row per variant, even with a \n
    for col in ("weight_bytes",):  # MiB with thousands separators: GPU-sized (peak: below)
        frame[col] = [_count(None if x is None else x / 2**20) for x in frame[col]]
    frame["kv_cache_tokens"] = [_count(x) for x in frame["kv_cache_tokens"]]
    frame = _with_stability(frame, report)
    frame.insert(len(frame.columns) - 2, "start_up_s", [v.cold_start_text for v in report.variants])
    frame = frame.rename(columns={"peak_mem_bytes": "peak_mem_MiB", "weight_bytes": "weights_MiB",
                                  "kv_cache_tokens": "kv_tokens",
                                  "cost_per_1m_output_tokens": "cost_per_1m_out"})
    say(f"\nRun {run_id} measured on {report.hardware.name} at ${report.price_per_hour}/h per "
        "device (a variant pays that x its devices); unit costs are its busy time only:")
    if (node := store.get_run_node(run_id)) is not None:  # revision 0008: where it ran
        from engine.jobs.node import node_text

        say(f"  Ran on {node_text(node)}; priced as {report.hardware.name}.")
    for col in frame.select_dtypes(include="object").columns:  # "-" for a figure not measured
        frame[col] = ["-" if x is None else x for x in frame[col]]
    say(frame.to_string(index=False, na_rep="-", float_format=lambda x: f"{x:.4g}"))
    for v in report.variants:
        how = "; ".join(filter(None, [v.peak_method and f"peak {v.peak_method}",
                                      v.kv_method and f"KV cache {v.kv_method}"]))
        if how:
            say(f"  {terminal_safe(v.name)} memory: {how}")
    _say_start_up(report, say)
    from engine.pilot.report import serving_lines

    for line in serving_lines(report):
        say(f"  {line}")
    for v in report.variants:
        if v.status == "failed":
            say(f"  {terminal_safe(v.name)} failed: {v.error}")
    _say_stability(report, say)
    for name in speed_memory_only(report):  # no accuracy columns for these, and why
        say(f"  {terminal_safe(name)}: {RANDOM_WEIGHTS}")
    if report.run.status in ("partial", "failed"):
        say(f"Run {run_id} {report.run.status}: {report.run.error}")
    say_case(report, store, say)
    if csv_path:
        say(f"Wrote {csv_path}")


_RETIRED = ("monthly_cost", "monthly_savings", "savings_fraction")


def _with_stability(frame, report):
    """The table with each variant's timed passes, its tokens/s spread (± half the range)
    and, after each figure the protocol found unstable, a "*" (engine.pilot.stability)."""
    from engine.pilot.stability import spread_text

    frame.insert(3, "passes", [v.passes for v in report.variants])
    frame.insert(5, "tok_s_spread", [spread_text(v.tokens_per_s_spread) or "-"  # one pass: no spread
                                     for v in report.variants])
    for col, figure in (("tokens_per_s", "tokens/s"), ("latency_p95_s", "p95 latency"),
                        ("peak_mem_bytes", "peak memory")):
        frame[col] = [_star(x, figure in v.unstable or "baseline drift" in v.unstable
                            and figure != "peak memory", col == "peak_mem_bytes")
                      for x, v in zip(frame[col], report.variants, strict=True)]
    return frame


def _say_start_up(report, say) -> None:
    """What start_up_s is, and the untimed warm-up each variant ran before its passes."""
    from engine.pilot.startup import EXPLAINED

    say(f"  start_up_s (engine start-up, seconds): {EXPLAINED}")
    warm = [f"{terminal_safe(v.name)} {v.warm_up_s:.1f} s" for v in report.variants
            if v.warm_up_s is not None]
    if warm:
        say(f"  Untimed warm-up before the timed passes: {', '.join(warm)}.")
    for v in report.run.variants:
        if line := protocol_line(v.technique_report.get("measurement") or {}):
            say(f"  {terminal_safe(v.name)}: {line}")


def protocol_line(m: dict) -> str | None:
    """What the protocol did for one variant, in words: the warm-up's rounds, the replays per
    pass, and why its passes ran back to back where interleaving was asked. None for a run
    stored before these were recorded."""
    parts = []
    w = m.get("warm_up") or {}
    if all(k in w for k in ("rounds", "requests_per_round", "batch_sizes", "max_new_tokens",
                            "seconds")):
        steady = {True: ", steady", False: ", not steady after the last round"}.get(
            w.get("steady"), "")
        parts.append(f"warm-up {w['rounds']} round(s) of {w['requests_per_round']} requests "
                     f"(batches of {'/'.join(map(str, w['batch_sizes']))}, "
                     f"{w['max_new_tokens']} tokens) in {w['seconds']:.1f} s{steady}")
    if m.get("replays_per_pass"):
        parts.append(f"each pass replayed the requests {m['replays_per_pass']}x (minimum "
                     f"{m.get('min_pass_s') or 0:g} s a pass)")
    if why := m.get("back_to_back_because"):
        parts.append(f"passes back to back: {why}")
    return "; ".join(parts) or None


def _star(x, unstable: bool, mib: bool) -> str:
    text = _count(None if x is None else x / 2**20) if mib else (
        "n/a" if x is None or x != x else f"{x:.4g}")
    return text + ("*" if unstable else "")


def _say_stability(report, say) -> None:
    """How the figures were measured, and the protocol's warnings (unstable, busy machine)."""
    from engine.pilot.stability import stability_lines

    passes = sorted({v.passes for v in report.variants})
    say(f"  Speed and memory are medians over {'/'.join(map(str, passes))} timed pass(es) per "
        "variant; * marks a figure whose passes spread too far (or whose baseline drifted).")
    for line in stability_lines(report):
        say(f"  {line}")


def say_case(report, store, say) -> None:
    """The run's business case (engine.business.case.build_business_case), as on every page
    and PDF: the gated recommendation, the monthly figures with their devices, the cost
    model, the flags; or why there is none."""
    from engine.business.case import case_from_report
    from engine.reports.case_words import business_figures, case_headline

    say("\nBusiness case (`roilab report " f"{report.run.id}` for the PDF):")
    try:
        case = case_from_report(report, None, store.hardware_catalog())
    except RoilabError as exc:
        say(f"  none: {exc}")
        return
    f = business_figures(case)
    after = (f"{f['recommended_monthly']} on {f['recommended_devices']}" if case.moves
             else "none (nothing moves)")
    say(f"  Decision: {f['decision']}; recommended: {f['recommended']}")
    say(f"  Monthly cost before: {f['baseline_monthly']} on {f['baseline_devices']}; after: "
        f"{after}; saving {f['monthly_savings']}/month; payback {f['payback']}")
    for line in case_headline(case):
        say(f"  {line}")


def _count(x) -> str:
    """``1,234`` for a measured figure, ``n/a`` for a missing one (None or NaN)."""
    return "n/a" if x is None or x != x else f"{x:,.0f}"


def cmd_runs(args, settings: Settings) -> None:
    from engine.jobs.queue import job_state, queue_places
    from engine.pilot.liveness import reap_dead_runs

    store = open_store(settings)
    reap_dead_runs(store)  # a run whose process died is listed as interrupted, not running
    runs = store.list_runs()
    places = queue_places(runs)  # a pilot handed to Ray and not started: its place in line
    for run in runs:
        names = ", ".join(f"{terminal_safe(v.name)} ({v.status})" for v in run.variants)
        state = job_state(run, places) if run.id in places else str(run.status)
        print(f"#{run.id} {run.created_at:%Y-%m-%d %H:%M} {state:8} workload "
              f"{run.workload_id} '{terminal_safe(run.name)}': {names}")


# flag -> Assumptions field, for `roilab report`
_ASSUMPTION_FLAGS = {"requests_per_day": float, "peak_factor": float, "p95_target_s": float,
                     "utilisation": float, "concurrency": int, "engineering_days": float,
                     "day_rate": float, "gpu_hours": float, "accuracy_metric": str,
                     "accuracy_threshold": float, "api_price_in_per_1m": float,
                     "api_price_out_per_1m": float, "target_hardware": str,
                     "kv_bytes_per_token": float}


def _assumptions(args, store, requests_per_month: int | None = None):
    """The run's stored assumptions (``Assumptions.for_run``: its volume, else the defaults),
    then ``--assumptions FILE`` (JSON object), then the flags; None when none is given (the
    run's own case, as every page shows it)."""
    from dataclasses import fields

    from engine.business.case import Assumptions
    from engine.specs.pilot import PilotSpec

    values: dict = {}
    if args.assumptions:
        path = Path(args.assumptions)
        try:
            values = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise RoilabError(f"Cannot read assumptions from {path}: {exc}. Give a JSON object "
                              'such as {"requests_per_day": 50000, "day_rate": 900}.') from None
        known = {f.name for f in fields(Assumptions)}
        if not isinstance(values, dict) or set(values) - known:
            bad = sorted(set(values) - known) if isinstance(values, dict) else values
            raise RoilabError(f"Unknown assumption(s) {bad} in {path}; the fields are: "
                              f"{', '.join(sorted(known))}.")
        if "candidate_kinds" in values:
            values["candidate_kinds"] = tuple(values["candidate_kinds"])
    values |= {k: getattr(args, k) for k in _ASSUMPTION_FLAGS if getattr(args, k) is not None}
    if not values:
        return None
    volume = requests_per_month if requests_per_month is not None else \
        PilotSpec.from_run(store.get_run(args.run)).cost.requests_per_month
    return Assumptions.for_run(volume, **values)


def cmd_report(args, settings: Settings) -> None:
    from engine.reports.business_pdf import business_figures, write_business_pdf

    out = Path(args.output or f"roilab-run-{args.run}.pdf")
    store = open_store(settings)
    path, case = write_business_pdf(store, args.run, out,
                                    _assumptions(args, store, args.requests_per_month),
                                    price_per_hour=args.price,
                                    requests_per_month=args.requests_per_month)
    f = business_figures(case)
    after = f"{f['recommended_monthly']} on {f['recommended_devices']}" if case.moves else "none"
    print(f"Wrote {path}\nDecision: {f['decision']}; recommended: {f['recommended']}; monthly "
          f"cost {f['baseline_monthly']} on {f['baseline_devices']} -> {after}; saving "
          f"{f['monthly_savings']}/month (range {f['savings_range']}); payback {f['payback']}; "
          f"net 36 months {f['net_36']}; monthly cost = {f['cost_model']}")


def add_parsers(sub) -> None:
    sub.add_parser("runs", help="list runs").set_defaults(func=cmd_runs)
    p = sub.add_parser("show", help="per-variant figures of a run")
    p.add_argument("run", type=int)
    p.add_argument("--csv", metavar="FILE", help="also write every per-variant figure to FILE "
                   "(text cells quoted so a spreadsheet runs no formula)")
    p.set_defaults(func=lambda a, s: print_run(a.run, s, a.csv))
    p = sub.add_parser("report", help="export a run's business case as PDF")
    p.add_argument("run", type=int)
    p.add_argument("-o", "--output")
    p.add_argument("--assumptions", help="JSON object of business-case assumptions "
                                         "(engine.business.case.Assumptions fields); flags win")
    for name, kind in _ASSUMPTION_FLAGS.items():
        flag = "--" + name.removesuffix("_s").removesuffix("_per_1m").replace("_", "-")
        p.add_argument(flag, dest=name, type=kind, default=None,
                       help=f"engine.business.case.Assumptions.{name}; default as on the dashboard")
    p.add_argument("--price", type=float, default=None,
                   help="$/hour per device of the hardware the pilot ran on (default: as stored)")
    p.add_argument("--requests-per-month", type=int, default=None,
                   help="the volume the case serves, as requests/month x 24 / 730 a day "
                        "(default: as stored; --requests-per-day wins)")
    p.set_defaults(func=cmd_report)
