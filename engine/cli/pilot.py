"""``roilab pilot``, ``roilab resume`` and ``roilab cancel``: run a pilot under a progress
bar, stopped cleanly by Ctrl+C or SIGTERM, and the exit status that says how it went."""
from __future__ import annotations

import argparse
import sys

from engine.cli.common import open_store
from engine.cli.pilot_spec import Given, add_pilot_args, priced_spec
from engine.cli.results import print_run
from engine.core.domain import Status
from engine.core.inert import terminal_safe
from engine.core.settings import Settings

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
    return PILOT_EXIT.get(pilot_from_args(args, settings).status, 1)  # print_run said why


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


def pilot_from_args(args, settings: Settings):
    """Build the spec from the flags (or --spec), priced as the device it runs on unless
    --hardware says otherwise; run it watched; the finished run."""
    from engine.ingest.review import small_workload_warning
    from engine.pilot.runner import create_pilot_run, run_pilot

    store = open_store(settings)
    priced = priced_spec(args, store)  # SpecError when nothing prices it
    spec = priced.spec
    run = create_pilot_run(spec, store)  # refuses an unknown or empty workload
    print(terminal_safe(f"Pilot {priced.line}"), flush=True)
    if priced.warning:
        print(f"warning: {terminal_safe(priced.warning)}", file=sys.stderr)
    warning = small_workload_warning(store.get_workload(spec.workload_id).n_requests)
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
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
    print(f"Run {run.id} cancelled; {sum(v.status == Status.DONE for v in run.variants)} finished "
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


def add_parsers(sub) -> None:
    p = sub.add_parser("pilot", help="run a pilot over a stored workload",
                       description="Replay a stored workload through the baseline (the first "
                                   "variant) and each variant; store and print the figures.",
                       epilog=PILOT_EXIT_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workload", type=int, required=True)
    p.add_argument("--name", action=Given, default="pilot")
    add_pilot_args(p, max_requests=None)
    p.set_defaults(func=cmd_pilot)
    p = sub.add_parser("resume", help="run the unfinished variants of an interrupted run",
                       epilog=PILOT_EXIT_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=int)
    p.set_defaults(func=cmd_resume)
    p = sub.add_parser("cancel", help="mark a pending, running or interrupted run cancelled")
    p.add_argument("run", type=int)
    p.set_defaults(func=cmd_cancel)
