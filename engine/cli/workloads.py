"""``roilab ingest``, ``roilab workloads`` and ``roilab hardware``: the inputs a pilot
replays (stored request logs) and prices (the hardware catalog)."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

from engine.cli.common import open_store
from engine.core.errors import RoilabError
from engine.core.inert import terminal_safe
from engine.core.settings import Settings

if TYPE_CHECKING:
    from engine.ingest.stats import TokenCounter


def cmd_ingest(args, settings: Settings) -> None:
    ingest_log(args, settings)


def ingest_log(args, settings: Settings) -> int:
    """Validate and store the log; the new workload's id. Prints the reference column and the
    ignored ones, and a warning line (stderr) when many rows were rejected."""
    from engine.ingest.logs import parse_log
    from engine.ingest.review import field_notes, rejected_warning
    from engine.ingest.stats import prefix_text

    path = Path(args.log)
    if not path.is_file():
        raise RoilabError(f"No such file: {path}. Give the path of a JSONL or CSV request log.")
    raw = path.read_bytes()
    parsed = parse_log(raw, path.name)
    for issue in parsed.issues:
        print(f"  line {issue.line}: {terminal_safe(issue.field)}: "
              f"{terminal_safe(issue.reason)}", file=sys.stderr)
    workload = open_store(settings).add_workload(args.name or path.stem, path.name, raw, parsed,
                                                 count_tokens=embedded_token_counter(settings))
    print(f"Workload {workload.id} '{terminal_safe(workload.name)}': {workload.n_requests} "
          f"requests ({parsed.format}), {workload.n_issues} rows rejected.")
    for note in field_notes(parsed):
        print(f"  {terminal_safe(note)}")
    prefix = open_store(settings).stored_workload_stats(workload.id) or {}
    if "prefix" in prefix:
        print(f"  {terminal_safe(prefix_text(prefix['prefix']))}")
    warning = rejected_warning(len(parsed.requests), parsed.issues)
    if warning:
        print(f"warning: {terminal_safe(warning)}", file=sys.stderr)
    return workload.id


def embedded_token_counter(settings: Settings) -> TokenCounter | None:
    """Counts tokens with the embedded model's tokenizer when that model is prepared (never
    prepares it: that downloads and converts); None otherwise (words and characters only,
    tokens counted on the first read after it is prepared)."""
    from engine.ingest.stats import tokenizer_counter
    from engine.models.prep import embedded_model_dir, is_prepared

    if not is_prepared(settings):
        return None
    return tokenizer_counter(embedded_model_dir(settings) / "tokenizer.json")


def cmd_workloads(args, settings: Settings) -> None:
    for w in open_store(settings).list_workloads():
        print(f"#{w.id} {terminal_safe(w.name)} ({terminal_safe(w.filename)}, {w.format}): "
              f"{w.n_requests} requests, {w.n_issues} rejected")


def _print_catalog(settings: Settings) -> None:
    """Built-ins with the user's stored entries over them; yours are marked."""
    for hw in open_store(settings).hardware_catalog().values():
        mine = " [yours]" if hw.user_defined else ""
        print(terminal_safe(f"{hw.key:18} ${hw.price_per_hour:<8} {hw.name} "
                            f"({hw.price_source}, {hw.price_date}){mine}"))


def add_parsers(sub) -> None:
    p = sub.add_parser("ingest", help="validate and store a request log (JSONL or CSV)")
    p.add_argument("log")
    p.add_argument("--name")
    p.set_defaults(func=cmd_ingest)
    sub.add_parser("workloads", help="list stored workloads").set_defaults(func=cmd_workloads)
    p = sub.add_parser("hardware", help="the hardware/price catalog")
    p.set_defaults(func=lambda a, s: _print_catalog(s))
