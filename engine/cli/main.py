"""Command-line interface for a GPU box without a browser; same store as the dashboard.

    roilab demo                       # prepare model, ingest sample, run default pilot, dashboard
    roilab ingest LOG [--name N]      # validate and store a request log
    roilab playbook ID [--run]        # the workload's playbook steps, the techniques that fit
    roilab pilot --workload ID        # run baseline + variants over it
    roilab portfolio-pilot --workloads 1,2,3 --spec S   # one pilot per workload on Ray
    roilab runs | show RUN [--csv FILE] | report RUN -o case.pdf | dashboard [--host H]
    roilab load --workload ID --url URL --model NAME --levels 1,2,4,8   # load sweep
    roilab db current | upgrade       # the results store's schema revision

Names, file names, log fields and error messages are user text: they are printed through
engine.core.inert.terminal_safe, so escape codes in a log show as ``\x1b`` instead of acting.

This module only builds the parser and runs the chosen handler; each group of subcommands
lives in its own module with its handlers and ``add_parsers(sub)``: demo (demo, dashboard),
models (prepare-model, export), workloads (ingest, workloads, hardware), playbook, pilot (pilot,
resume, cancel; the spec its flags build is pilot_spec), portfolio (portfolio-pilot,
portfolio), results (runs, show, report), load, db.
"""
from __future__ import annotations

import argparse
import atexit
import sys
from contextlib import nullcontext

from engine.cli import db, demo, models, pilot, playbook, portfolio, results, workloads
from engine.cli import load as load_cli
from engine.core.errors import RoilabError
from engine.core.inert import terminal_safe
from engine.core.settings import Settings, get_settings

LOG_HELP = """library messages:
  warnings and logs of torch, transformers, vLLM and the other libraries (and what vLLM's
  engine processes print) go to data/logs/roilab-<date>.log, or ROILAB_LOG_FILE; the
  terminal shows roilab's progress, results and errors, and names the log when something
  was written to it. --verbose (or ROILAB_VERBOSE=1) leaves them on the terminal."""
VERBOSE_HELP = "show library warnings and logs on the terminal instead of the log file"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="roilab", description=__doc__.splitlines()[0],
                                     epilog=LOG_HELP,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help=VERBOSE_HELP)
    sub = parser.add_subparsers(dest="command", required=True)
    for group in (demo, models, workloads, playbook, pilot, portfolio, results):
        group.add_parsers(sub)
    load_cli.add_parser(sub)
    db.add_parser(sub)
    for command in sub.choices.values():  # `roilab pilot --verbose` works too
        command.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                             help=VERBOSE_HELP)
    return parser


def _library_output(args, settings: Settings, argv: list[str] | None):
    """Where library messages go for this command: the log file (engine.core.logfile), or
    nowhere special with --verbose. A log that cannot be opened leaves them on the terminal."""
    import os

    if args.verbose or settings.verbose:
        return nullcontext()
    # Bars in a log file are noise: the hub's and transformers' download/loading bars are off.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("VLLM_LOGGING_COLOR", "0")  # no colour codes in the log
    path = settings.resolved_log_file()
    try:
        from engine.core.logfile import open_log

        open_log(path, ignored_folder=settings.log_file is None).close()  # data/logs/
    except OSError as exc:
        print(f"warning: cannot write the library log {terminal_safe(path)} ({exc.strerror}); "
              "library messages stay on the terminal", file=sys.stderr)
        return nullcontext()
    from engine.core.logfile import library_output_to

    return library_output_to(path, command=" ".join(sys.argv[1:] if argv is None else argv))


def main(argv: list[str] | None = None) -> int:
    """Run one command. Library output goes to the log until the command returns or, for the
    process's own command line (``argv`` None: the ``roilab`` script, ``python -m``), until
    the interpreter exits, since vLLM shuts its engines down at exit; an exception puts the
    terminal back at once, so a traceback (a bug) is seen."""
    args = build_parser().parse_args(argv)
    settings = get_settings()
    route = _library_output(args, settings, argv)
    log = route.__enter__()
    close = _once(lambda: route.__exit__(None, None, None))
    if argv is None:
        atexit.register(close)  # before the command's imports register theirs: runs after them
    try:
        try:
            code = args.func(args, settings) or 0  # an exit status, or None for 0
        except RoilabError as exc:
            print(f"error: {terminal_safe(exc, multiline=True)}", file=sys.stderr)
            code = 2
    except BaseException:
        close()
        raise
    if log is not None and log.wrote():
        print(f"library messages: {terminal_safe(log.path)}", file=sys.stderr)
    if argv is not None:
        close()
    return code


def _once(fn):
    done = []

    def call() -> None:
        if not done:
            done.append(True)
            fn()
    return call

if __name__ == "__main__":
    sys.exit(main())
