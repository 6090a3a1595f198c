"""Command-line interface for a GPU box without a browser; same store as the dashboard.

    roilab demo                       # prepare model, ingest sample, run default pilot, dashboard
    roilab ingest LOG [--name N]      # validate and store a request log
    roilab pilot --workload ID        # run baseline + variants over it
    roilab runs | show RUN [--csv FILE] | report RUN -o case.pdf | dashboard [--host H]
    roilab load --workload ID --url URL --model NAME --levels 1,2,4,8   # load sweep
    roilab db current | upgrade       # the results store's schema revision

Names, file names, log fields and error messages are user text: they are printed through
engine.core.inert.terminal_safe, so escape codes in a log show as ``\x1b`` instead of acting.

This module only builds the parser and runs the chosen handler; each group of subcommands
lives in its own module with its handlers and ``add_parsers(sub)``: demo (demo, dashboard),
models (prepare-model, export), workloads (ingest, workloads, hardware), pilot (pilot,
resume, cancel; the spec its flags build is pilot_spec), results (runs, show, report), load, db.
"""
from __future__ import annotations

import argparse
import sys

from engine.cli import db, demo, models, pilot, results, workloads
from engine.cli import load as load_cli
from engine.core.errors import RoilabError
from engine.core.inert import terminal_safe
from engine.core.settings import get_settings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="roilab", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for group in (demo, models, workloads, pilot, results):
        group.add_parsers(sub)
    load_cli.add_parser(sub)
    db.add_parser(sub)
    return parser


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
