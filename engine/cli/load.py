"""``roilab load``: sweep an OpenAI-compatible endpoint (or the embedded model under
``vllm serve``) and print the per-level table; ``roilab load --show RUN`` reprints a stored one.

    roilab load --workload 1 --url http://127.0.0.1:8000/v1 --model smollm2 --levels 1,2,4,8
    roilab load --workload 1 --serve --schedule poisson --levels 0.5,1,2 --slo-ttft 1
    roilab load --workload 1 --spec load.json      # a full LoadSpec (several targets)

Every request generates exactly --max-new-tokens tokens unless --natural-output is given
(engine.load.spec.LoadSpec.fixed_output says why); the table's "tok/req" column shows what
each level really generated per request.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from engine.cli.common import open_store
from engine.core.errors import RoilabError
from engine.core.inert import terminal_safe
from engine.core.settings import Settings

if TYPE_CHECKING:  # the CLI imports this module on every command: keep it light
    import pandas as pd

    from engine.load.spec import LoadSpec

TABLE = {  # levels_frame column -> printed header
    "variant": "variant", "level": "level", "n_ok": "ok",
    "ttft_p50_s": "TTFT p50", "ttft_p99_s": "TTFT p99", "itl_p50_s": "ITL p50",
    "itl_p99_s": "ITL p99", "e2e_p50_s": "E2E p50", "e2e_p99_s": "E2E p99",
    "output_tokens_per_s": "tok/s", "output_tokens_per_request": "tok/req",
    "requests_per_s": "req/s", "goodput_rps": "goodput",
    "slo_attainment": "in SLO"}


def add_parser(sub) -> None:
    p = sub.add_parser("load", help="load-test an endpoint: concurrency, Poisson or trace sweep")
    p.add_argument("--workload", type=int, help="stored workload whose requests are replayed")
    p.add_argument("--url", help="OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1")
    p.add_argument("--model", help="served model name at --url; with --serve, the model to "
                                   "serve (default: the embedded one)")
    p.add_argument("--serve", action="store_true",
                   help="start the model under vllm serve on loopback and sweep it")
    p.add_argument("--variant", default=None, help="name shown for this target")
    p.add_argument("--api-key-env", help="NAME of the env variable holding the API key")
    p.add_argument("--schedule", choices=["concurrency", "poisson", "trace"],
                   default="concurrency")
    p.add_argument("--levels", default="1,2,4,8",
                   help="comma list: concurrency, requests/s (poisson) or speed-up (trace)")
    p.add_argument("--requests-per-level", type=int, default=16)
    p.add_argument("--max-new-tokens", type=int, default=64)
    length = p.add_mutually_exclusive_group()
    length.add_argument("--fixed-output", dest="fixed_output", action="store_true",
                        default=None, help="every request generates exactly --max-new-tokens "
                        "(ignore_eos + min_tokens, vLLM); the default, so that variants' "
                        "capacities are measured on the same work")
    length.add_argument("--natural-output", dest="fixed_output", action="store_false",
                        help="let each request stop at its end-of-sequence token (real answer "
                             "lengths; endpoints that refuse ignore_eos / min_tokens)")
    p.add_argument("--slo-ttft", type=float, help="seconds; requests slower miss the SLO")
    p.add_argument("--slo-itl", type=float, help="seconds, a request's mean inter-token latency")
    p.add_argument("--slo-e2e", type=float, help="seconds, end to end")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--name", default="load test")
    p.add_argument("--spec", help="a LoadSpec JSON file instead of the flags above")
    p.add_argument("--show", type=int, metavar="RUN", help="print a stored load run and stop")
    p.set_defaults(func=cmd_load)


def build_spec(args):
    from engine.load.spec import parse_levels, parse_load_spec

    if args.spec:
        data = json.loads(Path(args.spec).read_text())
        if args.workload is not None:
            data.setdefault("workload_id", args.workload)
        if args.fixed_output is not None:  # the flag overrides the file
            data["fixed_output"] = args.fixed_output
        return parse_load_spec(data)
    if args.workload is None:
        raise RoilabError("Give --workload ID (see `roilab workloads`) or --spec FILE.")
    if bool(args.url) == bool(args.serve):
        raise RoilabError("Give either --url URL --model NAME (a running server) or --serve "
                          "(start the embedded model under vllm serve).")
    if args.serve:
        target = {"name": args.variant or "served",
                  "serve": {"model": args.model} if args.model else {}}
    else:
        target = {"name": args.variant or args.model or "endpoint", "base_url": args.url,
                  "model": args.model, "api_key_env": args.api_key_env}
    levels = list(parse_levels(args.levels))
    return parse_load_spec({
        "name": args.name, "workload_id": args.workload, "targets": [target],
        "schedule": args.schedule, "levels": levels,
        "requests_per_level": args.requests_per_level, "max_new_tokens": args.max_new_tokens,
        "fixed_output": args.fixed_output is not False,
        "slo": {"ttft_s": args.slo_ttft, "itl_s": args.slo_itl, "e2e_s": args.slo_e2e},
        "seed": args.seed})


def format_levels(levels: pd.DataFrame) -> str:
    """The per-level table as printed (seconds, tokens/s, tokens/request, requests/s, share in
    SLO)."""
    table = levels[list(TABLE)].rename(columns=TABLE)
    return table.to_string(index=False, float_format=lambda x: f"{x:.3f}")


def cmd_load(args, settings: Settings) -> None:
    from engine.load.replay import load_levels, run_load
    from engine.load.spec import stored_load_spec

    store = open_store(settings)
    if args.show is None:
        spec = build_spec(args)
        _stop_on_sigterm()
        run = run_load(spec, store, settings,
                       on_progress=lambda p: print(terminal_safe(
                           f"[{p.fraction:4.0%}] {p.target}: {p.message}"), flush=True))
        run_id = run.id
    else:
        run_id = args.show
    run = store.get_load_run(run_id)
    print(terminal_safe(describe(run.id, run.name, run.status, stored_load_spec(run))))
    print(format_levels(load_levels(store, run_id)))


def describe(run_id: int, name: str, status: str, spec: LoadSpec) -> str:
    """The line above the table: schedule, levels, requests, output length, SLO."""
    slo = spec.slo.model_dump(exclude_none=True)
    length = (f"exactly {spec.max_new_tokens} new tokens (fixed output)" if spec.fixed_output
              else f"up to {spec.max_new_tokens} new tokens (natural output)")
    return (f"Load run {run_id} '{name}' ({status}): {spec.schedule} levels "
            f"{list(spec.levels)}, {spec.requests_per_level} requests each, {length}, "
            f"SLO {slo or 'none'}")


def _stop_on_sigterm() -> None:
    """A sweep killed with SIGTERM (a job scheduler, `kill`) ends like Ctrl+C: run_load marks
    the stored run failed instead of leaving it 'running' for ever."""
    import signal

    def stop(signum, _frame):
        raise KeyboardInterrupt(f"stopped by signal {signum}")

    signal.signal(signal.SIGTERM, stop)
