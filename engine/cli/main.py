"""Command-line interface for a GPU box without a browser; same store as the dashboard.

    roilab demo                       # prepare model, ingest sample, run default pilot, dashboard
    roilab ingest LOG [--name N]      # validate and store a request log
    roilab pilot --workload ID        # run baseline + variants over it
    roilab runs | show RUN [--csv FILE] | report RUN -o case.pdf | dashboard [--host H]

Names, file names, log fields and error messages are user text: they are printed through
engine.core.inert.terminal_safe, so escape codes in a log show as ``\x1b`` instead of acting.
    roilab load --workload ID --url URL --model NAME --levels 1,2,4,8   # load sweep
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from engine.cli import load as load_cli
from engine.cli.common import open_store
from engine.core.errors import RoilabError
from engine.core.inert import terminal_safe
from engine.core.settings import REPO_ROOT, Settings, get_settings

DEMO_SAMPLE = "support_chat.jsonl"


def cmd_prepare_model(args, settings: Settings) -> None:
    from engine.models.prep import resolve_model

    print(resolve_model(args.model, settings, progress=print))


def cmd_export(args, settings: Settings) -> None:
    from engine.core.errors import SpecError
    from engine.export.compressed import calibration_set, export_quantized
    from engine.models.prep import resolve_model

    calibration = None
    if args.workload is not None:
        if args.method != "gptq":
            raise SpecError("--workload is the calibration data of --method gptq; "
                            "round-to-nearest uses none: drop --workload or add --method gptq.")
        calibration = calibration_set(open_store(settings), args.workload, args.max_requests,
                                      args.calibration_samples)
    r = export_quantized(resolve_model(args.model, settings), args.output, bits=args.bits,
                         group_size=args.group_size, dtype=args.dtype, progress=print,
                         device=args.device, method=args.method, calibration=calibration)
    how = "round-to-nearest" if r.method == "rtn" else (
        f"GPTQ calibrated on {r.calibration_samples} requests of workload "
        f"{r.calibration_workload}" + (" (the evaluated ones: none are held out beyond "
                                       "--max-requests)" if r.calibration_is_eval_set
                                       else " (held out: never evaluated by a pilot)"))
    print(f"{r.quantized_layers} layers to {r.bits}-bit (groups of {r.group_size}), {how}, on "
          f"{r.device}: {r.source_bytes / 2**20:,.0f} MiB -> {r.target_bytes / 2**20:,.0f} MiB "
          f"on disk, {r.seconds:.1f} s ({r.quantize_seconds:.1f} s quantizing). Serve it with a "
          f"vllm variant whose model is {r.target} (dtype {r.dtype}).")


def cmd_ingest(args, settings: Settings) -> None:
    _ingest(args, settings)


def _ingest(args, settings: Settings) -> int:
    """Validate and store the log; the new workload's id."""
    from engine.ingest.logs import parse_log

    path = Path(args.log)
    if not path.is_file():
        raise RoilabError(f"No such file: {path}. Give the path of a JSONL or CSV request log.")
    raw = path.read_bytes()
    parsed = parse_log(raw, path.name)
    for issue in parsed.issues:
        print(f"  line {issue.line}: {terminal_safe(issue.field)}: "
              f"{terminal_safe(issue.reason)}", file=sys.stderr)
    workload = open_store(settings).add_workload(args.name or path.stem, path.name, raw, parsed)
    print(f"Workload {workload.id} '{terminal_safe(workload.name)}': {workload.n_requests} "
          f"requests ({parsed.format}), {workload.n_issues} rows rejected.")
    return workload.id


def _build_spec(args):
    from engine.specs.pilot import (
        CompressPrompt,
        CostSettings,
        GenerationSettings,
        PilotSpec,
        QuantizeWeights,
        VariantSpec,
        parse_pilot_spec,
    )

    if args.spec:
        return parse_pilot_spec(_spec_with_flags(_read_spec(args.spec), args))
    from engine.core.errors import SpecError
    from engine.specs.pilot import VllmOptions

    asked = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = sorted(set(asked) - set(FLAG_VARIANTS))
    if unknown:
        raise SpecError(f"Unknown variant(s) {unknown} in --variants; the flags know "
                        f"{', '.join(FLAG_VARIANTS)} (others: --spec FILE).")
    vllm_only = [v for v in asked if v in ("fp8", "fp8-kv")]
    if vllm_only and args.backend != "vllm":
        raise SpecError(f"--variants {','.join(vllm_only)} are vLLM's FP8 weights / KV cache: add "
                        "--backend vllm (or use int8 for the transformers backend).")
    common = {"model": args.model, "backend": args.backend, "device": args.device,
              "dtype": _dtype(args)}
    variants = [VariantSpec(name="baseline", **common)]
    if "int8" in asked:
        variants.append(VariantSpec(name="int8-weights", **common,
                                    techniques=(QuantizeWeights(bits=8),)))
    if "fp8" in asked:
        variants.append(VariantSpec(name="fp8-weights", **common,
                                    vllm=VllmOptions(quantization="fp8")))
    if "fp8-kv" in asked:
        variants.append(VariantSpec(name="fp8-kv-cache", **common,
                                    vllm=VllmOptions(kv_cache_dtype="fp8")))
    if "llmlingua" in asked:
        variants.append(VariantSpec(name=f"llmlingua-{args.rate}", **common,
                                    techniques=(CompressPrompt(rate=args.rate),)))
    return parse_pilot_spec(PilotSpec(
        name=args.name, workload_id=args.workload, variants=tuple(variants),
        generation=GenerationSettings(max_new_tokens=args.max_new_tokens,
                                      batch_size=args.batch_size),
        cost=CostSettings(hardware=args.hardware, price_per_hour=args.price,
                          requests_per_month=args.requests_per_month),
        max_requests=args.max_requests).model_dump(mode="json"))


FLAG_VARIANTS = ("int8", "llmlingua", "fp8", "fp8-kv")
# Flags given with --spec: these apply over the spec's value (spec key path per flag) ...
SPEC_OVERRIDES = {"name": ("name",), "max_requests": ("max_requests",),
                  "max_new_tokens": ("generation", "max_new_tokens"),
                  "batch_size": ("generation", "batch_size"), "hardware": ("cost", "hardware"),
                  "price": ("cost", "price_per_hour"),
                  "requests_per_month": ("cost", "requests_per_month")}
# ... and these build variants, which the spec defines: refused rather than ignored.
VARIANT_FLAGS = ("model", "backend", "variants", "rate", "device", "dtype")


class _Given(argparse.Action):
    """Store the value and note that the user gave the flag: with --spec, a given flag
    applies over the spec (or is refused), while a default leaves the spec's value alone."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        setattr(namespace, self.dest, values)
        namespace.given = {*getattr(namespace, "given", ()), self.dest}


def _read_spec(path: str) -> dict:
    """The JSON object in a --spec file, or a one-line SpecError naming the file and the fix."""
    from engine.core.errors import SpecError

    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(f"--spec {path}: no such file; check the path.") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"--spec {path} cannot be read ({exc}); give a UTF-8 JSON file.") \
            from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SpecError(f"--spec {path} is not valid JSON: {exc.msg} at line {exc.lineno} "
                        f"column {exc.colno}; fix the file there.") from None
    if not isinstance(data, dict):
        kind = {list: "list", str: "string", bool: "boolean"}.get(type(data), "number or null")
        raise SpecError(f"--spec {path} holds a JSON {kind}, not an object; write one PilotSpec "
                        "object, e.g. "
                        '{"name": "pilot", "variants": [{"name": "baseline", "model": "..."}]}.')
    return data


def _spec_with_flags(data: dict, args) -> dict:
    """The spec with --workload and each given SPEC_OVERRIDES flag applied; VARIANT_FLAGS refused."""
    from engine.core.errors import SpecError

    given = getattr(args, "given", set())
    refused = [f"--{f.replace('_', '-')}" for f in VARIANT_FLAGS if f in given]
    if refused:
        raise SpecError(f"{', '.join(refused)} cannot be used with --spec: the spec defines the "
                        "variants; put model/backend/device/dtype/techniques in the spec's "
                        "variants, or drop --spec to build the variants from flags.")
    data = {**data, "workload_id": args.workload}  # --workload is required: it always applies
    for flag, keys in SPEC_OVERRIDES.items():
        if flag in given:
            *parents, key = keys
            target = data
            for part in parents:
                section = target.get(part)
                target[part] = target = dict(section) if isinstance(section, dict) else {}
            target[key] = getattr(args, flag)
    return data


def _dtype(args) -> str:
    """--dtype auto: bfloat16 for vLLM on a GPU (what teams serve), else float32 (CPUs)."""
    from engine.backends.base import default_dtype

    return args.dtype if args.dtype != "auto" else default_dtype(args.backend, args.device)


# A pilot's exit status, by the run status engine.pilot.runner.pilot_outcome gave it (a
# RoilabError before the pilot starts exits 2, as every command does).
PILOT_EXIT = {"done": 0, "partial": 3, "failed": 1}
# Stopped by a signal: 128 + its number, as a shell reports it (SIGINT/Ctrl+C 130, SIGTERM 143).
INTERRUPTED_EXIT = {"SIGINT": 130, "SIGTERM": 143}
PILOT_EXIT_HELP = """exit status:
  0  done: every variant ran
  3  partial: the baseline ran, some variants failed (reasons printed and stored)
  1  failed: the baseline failed, or every variant beside it did; the run is stored as
     failed with the reason, and `roilab report` refuses it when the baseline failed
  2  error: nothing ran (bad flags or spec, unknown workload, ...)
  130, 143  interrupted by Ctrl+C (SIGINT) or SIGTERM: the run is stored as interrupted,
     finished variants keep their results; one line on stderr says so"""


def cmd_pilot(args, settings: Settings) -> int:
    """Run the pilot, print its table; the exit status says whether every variant ran."""
    return PILOT_EXIT.get(_pilot(args, settings).status, 1)  # print_run said why


class _Stopped(KeyboardInterrupt):
    """Ctrl+C or SIGTERM, carrying the signal's name for the one line and the exit status."""

    def __init__(self, signame: str) -> None:
        super().__init__(f"stopped by {signame}")
        self.signame = signame


def _stop_on_signals() -> dict:
    """SIGINT and SIGTERM (a job scheduler, `kill`) both stop the pilot like Ctrl+C, so
    run_pilot marks the stored run interrupted instead of leaving it 'running' for ever.
    Returns the previous handlers, to put back."""
    import signal

    def stop(signum, _frame):
        raise _Stopped(signal.Signals(signum).name)

    return {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}


def _pilot(args, settings: Settings):
    from engine.pilot.runner import create_pilot_run, run_pilot

    spec = _build_spec(args)
    store = open_store(settings)
    run = create_pilot_run(spec, store)
    return _watched(run.id, settings, lambda progress: run_pilot(
        spec, store, settings, on_progress=progress, run_id=run.id))


def cmd_resume(args, settings: Settings) -> int:
    """Run the unfinished variants of a stopped run; exit status as `roilab pilot`'s."""
    from engine.pilot.runner import resume_pilot

    store = open_store(settings)
    run = _watched(args.run, settings, lambda progress: resume_pilot(
        args.run, store, settings, on_progress=progress))
    return PILOT_EXIT.get(run.status, 1)


def cmd_cancel(args, settings: Settings) -> None:
    from engine.pilot.runner import cancel_run

    run = cancel_run(args.run, open_store(settings))
    print(f"Run {run.id} cancelled; {sum(v.status == 'ok' for v in run.variants)} finished "
          f"variant(s) keep their results. `roilab resume {run.id}` runs the others.")


def _watched(run_id: int, settings: Settings, go):
    """``go(on_progress)`` under a progress bar, stopped like Ctrl+C by SIGINT or SIGTERM
    (one line, exit 130/143); then the run's table."""
    from tqdm import tqdm

    bar = tqdm(total=100, unit="%", bar_format="{l_bar}{bar}| {elapsed} {postfix}")

    def on_progress(p) -> None:
        bar.n = round(p.fraction * 100)
        bar.set_postfix_str(terminal_safe(f"{p.variant}: {p.message}")[:60])

    import signal

    previous = _stop_on_signals()
    try:
        run = go(on_progress)
    except _Stopped as stop:
        bar.close()
        print(f"interrupted: run {run_id} stopped by {stop.signame}; it is stored as "
              "interrupted, finished variants keep their results", file=sys.stderr)
        raise SystemExit(INTERRUPTED_EXIT[stop.signame]) from None
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    bar.close()
    print_run(run.id, settings)
    return run


def print_run(run_id: int, settings: Settings, csv_path: str | None = None) -> None:
    """The run's per-variant table; with ``csv_path`` also its full figures as a CSV that a
    spreadsheet opens without live formulas (engine.core.inert)."""
    from engine.economics.decision import RANDOM_WEIGHTS
    from engine.pilot.report import build_report, speed_memory_only

    report = build_report(open_store(settings), run_id)
    if csv_path:
        from engine.core.inert import write_safe_csv

        write_safe_csv(report.frame(), csv_path)

    def say(text: str) -> None:  # every line below can hold names or errors
        print(terminal_safe(text, multiline=True))

    cols = ["name", "status", "devices", "tokens_per_s", "latency_p50_s", "latency_p95_s",
            "peak_mem_bytes", "weight_bytes", "kv_cache_tokens", "ref_contains", "base_rouge_l",
            "base_cosine", "cost_per_1k_requests", "cost_per_1m_output_tokens", "monthly_savings"]
    frame = report.frame()[cols].copy()
    frame["name"] = frame["name"].map(terminal_safe)  # one row per variant, even with a \n
    for col in ("peak_mem_bytes", "weight_bytes"):  # MiB with thousands separators: GPU-sized
        frame[col] = [_count(None if x is None else x / 2**20) for x in frame[col]]
    frame["kv_cache_tokens"] = [_count(x) for x in frame["kv_cache_tokens"]]
    frame = frame.rename(columns={"peak_mem_bytes": "peak_mem_MiB", "weight_bytes": "weights_MiB",
                                  "kv_cache_tokens": "kv_tokens",
                                  "cost_per_1m_output_tokens": "cost_per_1m_out"})
    say(f"\nRun {run_id} on {report.hardware.name} at ${report.price_per_hour}/h per device "
        f"(a variant pays that x its devices), {report.requests_per_month:,} requests/month:")
    say(frame.to_string(index=False, float_format=lambda x: f"{x:.4g}"))
    for v in report.variants:
        how = "; ".join(filter(None, [v.peak_method and f"peak {v.peak_method}",
                                      v.kv_method and f"KV cache {v.kv_method}"]))
        if how:
            say(f"  {terminal_safe(v.name)} memory: {how}")
    for v in report.variants:
        if v.status == "failed":
            say(f"  {terminal_safe(v.name)} failed: {v.error}")
    for name in speed_memory_only(report):  # no accuracy columns for these, and why
        say(f"  {terminal_safe(name)}: {RANDOM_WEIGHTS}")
    if report.run.status in ("partial", "failed"):
        say(f"Run {run_id} {report.run.status}: {report.run.error}")
    if csv_path:
        say(f"Wrote {csv_path}")


def _count(x) -> str:
    """``1,234`` for a measured figure, ``n/a`` for a missing one (None or NaN)."""
    return "n/a" if x is None or x != x else f"{x:,.0f}"


def cmd_runs(args, settings: Settings) -> None:
    for run in open_store(settings).list_runs():
        names = ", ".join(f"{terminal_safe(v.name)} ({v.status})" for v in run.variants)
        print(f"#{run.id} {run.created_at:%Y-%m-%d %H:%M} {run.status:8} workload "
              f"{run.workload_id} '{terminal_safe(run.name)}': {names}")


def cmd_workloads(args, settings: Settings) -> None:
    for w in open_store(settings).list_workloads():
        print(f"#{w.id} {terminal_safe(w.name)} ({terminal_safe(w.filename)}, {w.format}): "
              f"{w.n_requests} requests, {w.n_issues} rejected")


# flag -> Assumptions field, for `roilab report`
_ASSUMPTION_FLAGS = {"requests_per_day": float, "peak_factor": float, "p95_target_s": float,
                     "utilisation": float, "concurrency": int, "engineering_days": float,
                     "day_rate": float, "gpu_hours": float, "accuracy_metric": str,
                     "accuracy_threshold": float, "api_price_in_per_1m": float,
                     "api_price_out_per_1m": float, "target_hardware": str,
                     "kv_bytes_per_token": float}


def _assumptions(args):
    """Assumptions from ``--assumptions FILE`` (JSON object), then the flags over it."""
    from dataclasses import fields

    from engine.business.case import Assumptions

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
    return Assumptions(**values)


def cmd_report(args, settings: Settings) -> None:
    from engine.reports.business_pdf import business_figures, write_business_pdf

    out = Path(args.output or f"roilab-run-{args.run}.pdf")
    path, case = write_business_pdf(open_store(settings), args.run, out, _assumptions(args),
                                    price_per_hour=args.price,
                                    requests_per_month=args.requests_per_month)
    f = business_figures(case)
    print(f"Wrote {path}\nRecommended: {f['recommended']}; monthly cost {f['baseline_monthly']} "
          f"-> {f['recommended_monthly']}; saving {f['monthly_savings']}/month "
          f"(range {f['savings_range']}); payback {f['payback']}; net 36 months {f['net_36']}")


def _dashboard_host(args, settings: Settings) -> str:
    """--host, else ROILAB_DASHBOARD_HOST (127.0.0.1); refused beyond this machine without
    ROILAB_DASHBOARD_PASSWORD (engine.core.dashboard_access)."""
    from engine.core.dashboard_access import check_exposure, configured_password

    host = args.host or settings.dashboard_host
    check_exposure(host, configured_password(settings.dashboard_password))
    return host


def cmd_dashboard(args, settings: Settings) -> None:
    host = _dashboard_host(args, settings)
    cmd = [sys.executable, "-m", "streamlit", "run", str(REPO_ROOT / "app" / "main.py"),
           "--server.port", str(args.port), "--server.address", host,
           "--server.headless", "true"]
    shown = f"[{host}]" if ":" in host else host
    print(f"Dashboard: http://{terminal_safe(shown)}:{args.port}  (Ctrl+C to stop)", flush=True)
    subprocess.run(cmd, cwd=REPO_ROOT, check=False)


def cmd_demo(args, settings: Settings) -> None:
    if not args.no_dashboard:  # refuse an exposed dashboard before the work, not after
        _dashboard_host(args, settings)
    print("1/4 Preparing the embedded model (SmolLM2-135M-Instruct)")
    args.model = settings.default_model
    cmd_prepare_model(args, settings)
    print(f"2/4 Ingesting the bundled sample log {DEMO_SAMPLE}")
    args.log, args.name = str(settings.samples_dir / DEMO_SAMPLE), "support chat (sample)"
    args.workload = _ingest(args, settings)
    print("3/4 Running the default pilot: baseline, int8 weights, LLMLingua")
    args.name = "default pilot"
    _pilot(args, settings)
    if args.no_dashboard:
        return
    print("4/4 Starting the dashboard")
    cmd_dashboard(args, settings)


def _pilot_args(p: argparse.ArgumentParser, max_requests: int | None) -> None:
    p.add_argument("--model", action=_Given, default="embedded:smollm2-135m-instruct",
                   help="embedded:smollm2-135m-instruct, a local HF folder, or a hub id")
    p.add_argument("--backend", action=_Given, default="transformers",
                   help="transformers, vllm or endpoint")
    p.add_argument("--variants", action=_Given, default="int8,llmlingua",
                   help="comma list added to the baseline: int8, llmlingua (transformers); "
                        "fp8 (FP8 weights), fp8-kv (FP8 KV cache), llmlingua (vllm)")
    p.add_argument("--device", action=_Given, default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--dtype", action=_Given, default="auto",
                   choices=["auto", "float32", "bfloat16", "float16"],
                   help="auto: bfloat16 for --backend vllm on a GPU, float32 otherwise")
    p.add_argument("--rate", action=_Given, type=float, default=0.5, help="LLMLingua target rate")
    p.add_argument("--max-requests", action=_Given, type=int, default=max_requests)
    p.add_argument("--max-new-tokens", action=_Given, type=int, default=48)
    p.add_argument("--batch-size", action=_Given, type=int, default=8)
    p.add_argument("--hardware", action=_Given, default="cpu-c7i-large",
                   help="catalog key, see `roilab hardware`")
    p.add_argument("--price", action=_Given, type=float, default=None,
                   help="$/hour per device (a tensor-parallel variant pays it per GPU); "
                        "default: catalog price")
    p.add_argument("--requests-per-month", action=_Given, type=int, default=1_000_000)
    p.add_argument("--spec", help="a PilotSpec JSON file; --name, --max-requests, "
                   "--max-new-tokens, --batch-size, --hardware, --price and "
                   "--requests-per-month given with it apply over its values; the "
                   "variant flags above are refused with it")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="roilab", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="prepare model, ingest sample, run default pilot, dashboard")
    _pilot_args(p, max_requests=12)
    p.add_argument("--port", type=int, default=8501)
    _host_arg(p)
    p.add_argument("--no-dashboard", action="store_true")
    p.set_defaults(func=cmd_demo)
    p = sub.add_parser("prepare-model", help="convert the embedded model (or check a folder)")
    p.add_argument("--model", default="embedded:smollm2-135m-instruct")
    p.set_defaults(func=cmd_prepare_model)
    p = sub.add_parser("export", help="write a 4/8-bit compressed-tensors checkpoint vLLM serves")
    p.add_argument("--model", default="embedded:smollm2-135m-instruct")
    p.add_argument("-o", "--output", required=True, help="new folder for the checkpoint")
    p.add_argument("--bits", type=int, default=4, choices=[4, 8])
    p.add_argument("--group-size", type=int, default=64)
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16"])
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="where to quantize (auto: the GPU when one is visible)")
    p.add_argument("--method", default="rtn", choices=["rtn", "gptq"],
                   help="round-to-nearest, or GPTQ calibrated on --workload (llmcompressor)")
    p.add_argument("--workload", type=int, help="gptq: the stored workload to calibrate on")
    p.add_argument("--max-requests", type=int, default=None,
                   help="gptq: the requests a pilot evaluates; it calibrates on those beyond")
    p.add_argument("--calibration-samples", type=int, default=64,
                   help="gptq: at most this many calibration requests")
    p.set_defaults(func=cmd_export)
    p = sub.add_parser("ingest", help="validate and store a request log (JSONL or CSV)")
    p.add_argument("log")
    p.add_argument("--name")
    p.set_defaults(func=cmd_ingest)
    p = sub.add_parser("pilot", help="run a pilot over a stored workload",
                       description="Replay a stored workload through the baseline (the first "
                                   "variant) and each variant; store and print the figures.",
                       epilog=PILOT_EXIT_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workload", type=int, required=True)
    p.add_argument("--name", action=_Given, default="pilot")
    _pilot_args(p, max_requests=None)
    p.set_defaults(func=cmd_pilot)
    p = sub.add_parser("resume", help="run the unfinished variants of an interrupted run",
                       epilog=PILOT_EXIT_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=int)
    p.set_defaults(func=cmd_resume)
    p = sub.add_parser("cancel", help="mark a pending, running or interrupted run cancelled")
    p.add_argument("run", type=int)
    p.set_defaults(func=cmd_cancel)
    sub.add_parser("workloads", help="list stored workloads").set_defaults(func=cmd_workloads)
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
                   help="$/hour for the pilot's measured section only")
    p.add_argument("--requests-per-month", type=int, default=None,
                   help="volume for the pilot's measured section only")
    p.set_defaults(func=cmd_report)
    p = sub.add_parser("hardware", help="the hardware/price catalog")
    p.set_defaults(func=lambda a, s: _print_catalog(s))
    load_cli.add_parser(sub)
    p = sub.add_parser("dashboard", help="start the Streamlit dashboard")
    p.add_argument("--port", type=int, default=8501)
    _host_arg(p)
    p.set_defaults(func=cmd_dashboard)
    return parser


def _host_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default=None,
                   help="address the dashboard listens on (default ROILAB_DASHBOARD_HOST or "
                        "127.0.0.1: this machine only); any other address needs "
                        "ROILAB_DASHBOARD_PASSWORD")


def _print_catalog(settings: Settings) -> None:
    """Built-ins with the user's stored entries over them; yours are marked."""
    for hw in open_store(settings).hardware_catalog().values():
        mine = " [yours]" if hw.user_defined else ""
        print(terminal_safe(f"{hw.key:18} ${hw.price_per_hour:<8} {hw.name} "
                            f"({hw.price_source}, {hw.price_date}){mine}"))


def _quiet_libraries() -> None:
    """Our own progress bar is the one that matters; silence per-file loading bars/warnings."""
    import logging
    import os

    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    logging.getLogger("torchao").setLevel(logging.ERROR)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _quiet_libraries()
    try:
        code = args.func(args, get_settings())  # an exit status, or None for 0
    except RoilabError as exc:
        print(f"error: {terminal_safe(exc, multiline=True)}", file=sys.stderr)
        return 2
    return code or 0


if __name__ == "__main__":
    sys.exit(main())
