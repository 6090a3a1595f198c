"""``roilab pilot``, ``roilab resume`` and ``roilab cancel``: run a pilot under a progress
bar, stopped cleanly by Ctrl+C or SIGTERM, and the exit status that says how it went; or,
with ``--detach``, submit it to Ray (engine.jobs) and print the run id at once."""
from __future__ import annotations

import argparse
import sys

from engine.cli.common import open_store
from engine.cli.pilot_spec import Given, add_pilot_args, priced_spec
from engine.cli.results import print_run
from engine.core.domain import Status
from engine.core.errors import SpecError
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
    """Run the pilot, print its table; the exit status says whether every variant ran.
    With --detach: submit it to Ray, print the run id, exit 0. With a Ray cluster named
    (--ray-address, ROILAB_RAY_ADDRESS) and no --detach: run it there as a Ray task and
    follow it here as in the foreground."""
    if args.detach:
        return detach_pilot(args, settings)
    from engine.jobs.cluster import configured_address

    if configured_address(settings, args.ray_address):
        return PILOT_EXIT.get(followed_pilot(args, settings).status, 1)
    return PILOT_EXIT.get(pilot_from_args(args, settings).status, 1)  # print_run said why


def followed_pilot(args, settings: Settings):
    """The pilot as a Ray task on the named cluster, followed from the store under the same
    progress bar, exit status and Ctrl+C as a pilot run here: Ctrl+C or SIGTERM cancels the
    task (the pilot stores the run interrupted; a pilot still queued is stored interrupted
    here) and exits 130/143. The finished run."""
    from engine.jobs.ray_executor import submit_new

    store = open_store(settings)
    priced = priced_spec(args, store)  # SpecError when nothing prices it
    store.get_workload(priced.spec.workload_id)  # an unknown workload before Ray is reached
    run, sub = submit_new(priced.spec, store, settings, args.ray_address,
                          reprice=priced.detected)
    print(terminal_safe(f"Pilot {priced.line}"), flush=True)
    if priced.warning:
        print(f"warning: {terminal_safe(priced.warning)}", file=sys.stderr)
    _say_submitted(sub)
    return _watched(run.id, settings, lambda progress: _follow(
        store, run.id, settings, args.ray_address, progress))


FOLLOW_EVERY_S = 1.0  # how often a followed pilot's progress is read from the store


def _follow(store, run_id: int, settings: Settings, address, on_progress):
    """Poll the run until it finishes, reporting progress as the runner would (the fraction
    of variants finished, the one running now); on Ctrl+C, cancel its Ray task first."""
    import time
    from types import SimpleNamespace

    from engine.jobs.queue import run_now
    from engine.pilot.liveness import stop_run

    try:
        while True:
            run, state = run_now(store, run_id)  # a worker that died: interrupted
            if run.status.finished:
                return run
            n = len(run.variants) or 1
            finished = sum(v.status.finished for v in run.variants)
            current = next((v.name for v in run.variants if v.status == Status.RUNNING), "-")
            on_progress(SimpleNamespace(fraction=finished / n, variant=current, message=state))
            time.sleep(FOLLOW_EVERY_S)
    except _Stopped as stop:
        from engine.jobs.ray_executor import cancel

        cancel(run_id, settings, address)  # KeyboardInterrupt in the pilot: interrupted
        if not store.get_run(run_id).status.finished:  # it never started, or was killed
            stop_run(store, run_id, Status.INTERRUPTED, f"Interrupted: {stop.signame} while "
                     "it ran as a Ray task; `roilab resume` finishes it.")
        raise


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
    _record_node(store, run.id)
    return _watched(run.id, settings, lambda progress: run_pilot(
        spec, store, settings, on_progress=progress, run_id=run.id))


def detach_pilot(args, settings: Settings) -> int:
    """``roilab pilot --detach``: the spec as the foreground builds it; Ray reached (and able
    to give what the pilot needs) before the run is created, so an unreachable address
    leaves nothing behind; then the run created and submitted, its id printed."""
    from engine.jobs.ray_executor import connect_for
    from engine.pilot.runner import create_pilot_run

    store = open_store(settings)
    priced = priced_spec(args, store)  # SpecError when nothing prices it
    spec = priced.spec
    store.get_workload(spec.workload_id)  # an unknown workload before Ray is started
    _, need = connect_for(spec, settings, args.ray_address)
    run = create_pilot_run(spec, store)  # refuses an unknown or empty workload
    print(terminal_safe(f"Pilot {priced.line}"), flush=True)
    if priced.warning:
        print(f"warning: {terminal_safe(priced.warning)}", file=sys.stderr)
    return _submit(spec, run.id, settings, args, store, need, priced.detected)


def _submit(spec, run_id: int, settings: Settings, args, store, need, reprice: bool) -> int:
    from engine.jobs.ray_executor import submit

    sub = submit(spec, run_id, settings, args.ray_address, need, store, reprice)  # queued
    _say_submitted(sub)
    if reprice and not sub.local:
        print("Priced as the device detected here until the node that runs it detects its "
              "own; `roilab show` says which it was priced as.", flush=True)
    return 0


def _say_submitted(sub) -> None:
    from engine.jobs.ray_executor import asked

    run_id = sub.run_id
    where = f"{sub.address} (local)" if sub.local else sub.address
    asks = asked(sub.resources)  # engine.jobs.ray_executor
    print(f"Run {run_id} submitted to Ray at {where}, asking {asks}; follow it with "
          f"`roilab runs` / `roilab show {run_id}`.", flush=True)


def _refuse_ray_address(args) -> None:
    if getattr(args, "ray_address", None):
        raise SpecError("--ray-address picks the Ray cluster of a detached resume; add "
                        "--detach (a resume without it runs here, in the foreground).")


def _record_node(store, run_id: int) -> None:
    """Where this pilot runs (host, GPUs), stored with the run (engine.jobs.node)."""
    from engine.jobs.node import this_node

    store.set_run_node(run_id, this_node())


def cmd_resume(args, settings: Settings) -> int:
    """Run the unfinished variants of a stopped run; exit status as `roilab pilot`'s."""
    from engine.pilot.liveness import reap_dead_runs
    from engine.pilot.runner import RESUMABLE, resume_pilot

    if args.detach:
        return detach_resume(args, settings)
    _refuse_ray_address(args)  # resume on a cluster: --detach
    store = open_store(settings)
    reap_dead_runs(store)
    if store.get_run(args.run).status in RESUMABLE:  # else resume_pilot refuses it below
        _record_node(store, args.run)
    run = _watched(args.run, settings, lambda progress: resume_pilot(
        args.run, store, settings, on_progress=progress))
    return PILOT_EXIT.get(run.status, 1)


def detach_resume(args, settings: Settings) -> int:
    """``roilab resume RUN --detach``: the same checks as a foreground resume, then the
    stored spec submitted to Ray; only the variants not done run (run_pilot skips them)."""
    from engine.jobs.ray_executor import submit_resume

    _say_submitted(submit_resume(args.run, open_store(settings), settings, args.ray_address))
    return 0


def cmd_cancel(args, settings: Settings) -> None:
    from engine.jobs.ray_executor import cancel_pilot

    run = cancel_pilot(args.run, open_store(settings), settings)  # its Ray task too, if any
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
    _add_detach_args(p)
    p.set_defaults(func=cmd_pilot)
    p = sub.add_parser("resume", help="run the unfinished variants of an interrupted run",
                       epilog=PILOT_EXIT_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=int)
    _add_detach_args(p)
    p.set_defaults(func=cmd_resume)
    p = sub.add_parser("cancel", help="mark a pending, running or interrupted run cancelled")
    p.add_argument("run", type=int)
    p.set_defaults(func=cmd_cancel)


def _add_detach_args(p) -> None:
    p.add_argument("--detach", action="store_true",
                   help="submit the pilot to Ray and return at once with the run id (exit 0); "
                        "it runs where Ray has the GPUs (or a CPU) it needs, on a local Ray "
                        "started on first use unless --ray-address / ROILAB_RAY_ADDRESS names "
                        "a cluster")
    p.add_argument("--ray-address", metavar="ADDR", default=None,
                   help="the Ray cluster that runs the pilot: HOST:PORT of `ray start --head`, "
                        "ray://HOST:10001, or auto (default: ROILAB_RAY_ADDRESS). Without "
                        "--detach the pilot runs there and is followed here (progress bar, "
                        "exit status, Ctrl+C stops it); with neither, `roilab pilot` runs in "
                        "this process and --detach uses a local Ray")
