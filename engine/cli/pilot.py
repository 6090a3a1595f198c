"""``roilab pilot``, ``roilab resume`` and ``roilab cancel``: a pilot runs as a Ray task
(engine.jobs) on the cluster ``--ray-address`` / ``ROILAB_RAY_ADDRESS`` names, else on a local
Ray head started on first use, and is followed here under a progress bar, stopped cleanly by
Ctrl+C or SIGTERM, with the exit status that says how it went; ``--detach`` prints the run id
at once instead; ``--in-process`` runs it in this process, without Ray."""
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
  2  error: nothing ran (bad flags or spec, unknown workload, Ray not reachable, ...)
  130, 143  interrupted by Ctrl+C (SIGINT) or SIGTERM: the run is stored as interrupted,
     finished variants keep their results; one line on stderr says so"""
NO_RAY_HINT = (" To run the pilot in this process instead, without Ray, add --in-process.")


def cmd_pilot(args, settings: Settings) -> int:
    """Run the pilot, print its table; the exit status says whether every variant ran. With
    --detach: submitted to Ray, its id printed, exit 0."""
    if args.detach:
        return detach_pilot(args, settings)
    return PILOT_EXIT.get(foreground_pilot(args, settings).status, 1)  # print_run said why


def foreground_pilot(args, settings: Settings):
    """The pilot of ``args`` (`roilab pilot`, `roilab demo`, `roilab playbook --run`) run to
    its end: as a Ray task (the named cluster, or the local head started on first use)
    followed here; with --in-process, in this process. The finished run."""
    if args.in_process:
        return pilot_from_args(args, settings)
    return followed_pilot(args, settings)


def followed_pilot(args, settings: Settings):
    """The pilot as a Ray task on the named cluster or the local head, followed from the
    store under the same progress bar, exit status and Ctrl+C as a pilot run in this
    process: Ctrl+C or SIGTERM cancels the task (the pilot stores the run interrupted; a
    pilot still queued is stored interrupted here) and exits 130/143. The finished run."""
    from engine.jobs.ray_executor import submit_new

    store = open_store(settings)
    priced = priced_spec(args, store)  # SpecError when nothing prices it
    workload = store.get_workload(priced.spec.workload_id)  # unknown: before Ray is reached
    run, sub = _hinted(lambda: submit_new(priced.spec, store, settings, args.ray_address,
                                          reprice=priced.detected))
    _announce(priced, workload.n_requests)
    _say_submitted(sub, followed=True)
    return _watched(run.id, settings, lambda progress: _follow(
        store, run.id, settings, args.ray_address, progress))


def _hinted(submit):
    """``submit()``; a ClusterError (Ray missing, not reachable, unable to start) says how
    to run without Ray too."""
    from engine.jobs.cluster import ClusterError

    try:
        return submit()
    except ClusterError as exc:
        raise ClusterError(str(exc) + NO_RAY_HINT) from None


def _announce(priced, n_requests: int) -> None:
    """The pilot's first lines: what it is and what it is priced as; a warning when the
    price or the workload's size makes its figures weak."""
    from engine.ingest.review import small_workload_warning

    print(terminal_safe(f"Pilot {priced.line}"), flush=True)
    if priced.warning:
        print(f"warning: {terminal_safe(priced.warning)}", file=sys.stderr)
    warning = small_workload_warning(n_requests)
    if warning:
        print(f"warning: {warning}", file=sys.stderr)


FOLLOW_EVERY_S = 1.0  # how often a followed pilot's progress is read from the store
# Ctrl+C on a followed pilot: how long its task may take to stop by itself (KeyboardInterrupt,
# the run stored interrupted by the pilot) before its worker process is killed.
STOP_GRACE_S = 10.0
QUIET_FRAME_S = 60.0  # an unchanged progress frame is written again this often to a non-TTY


def _follow(store, run_id: int, settings: Settings, address, on_progress):
    """Poll the run until it finishes, reporting progress as the runner would: what the
    pilot's process last stored (``Run.progress``), else the fraction of variants finished
    and the passes timed so far; on Ctrl+C, cancel its Ray task first."""
    import time
    from types import SimpleNamespace

    from engine.jobs.queue import run_now
    from engine.pilot.liveness import stop_run

    try:
        while True:
            run, state = run_now(store, run_id)  # a worker that died: interrupted
            if run.status.finished:
                if run.variants and all(v.status.finished for v in run.variants):
                    on_progress(SimpleNamespace(fraction=1.0, variant=f"run {run.id}",
                                                message=str(run.status)))  # the bar's end
                return run
            n = len(run.variants) or 1
            finished = sum(v.status.finished for v in run.variants)
            running = [v for v in run.variants if v.status == Status.RUNNING]
            said = run.progress if run.status == Status.RUNNING else None
            if said:  # what the pilot's process last said (engine.pilot.liveness.Heartbeat)
                on_progress(SimpleNamespace(fraction=said.fraction, variant=said.variant,
                                            message=said.message))
            else:
                if running:  # interleaved passes keep several variants running at once
                    timed = sum(len(store.get_passes(v.id)) for v in run.variants)
                    state = f"{finished}/{n} variants done, {timed} passes timed"
                current = ",".join(v.name for v in running) or "-"
                on_progress(SimpleNamespace(fraction=finished / n, variant=current,
                                            message=state))
            time.sleep(FOLLOW_EVERY_S)
    except _Stopped as stop:
        from engine.jobs.ray_executor import cancel

        # KeyboardInterrupt in the pilot (stored interrupted); the worker killed when that
        # has not ended it within STOP_GRACE_S
        cancel(run_id, settings, address, grace_s=STOP_GRACE_S)
        run = store.get_run(run_id)
        if not run.status.finished:  # it never started, or was killed
            stop_run(store, run_id, Status.INTERRUPTED, f"Interrupted: {stop.signame} while "
                     "it ran as a Ray task; `roilab resume` finishes it.")
        elif run.status not in (Status.INTERRUPTED, Status.CANCELLED):
            return run  # its table and exit status, as if not stopped: nothing was lost
            # (_watched says the stop came too late)
        raise


class _Stopped(KeyboardInterrupt):
    """Ctrl+C or SIGTERM, carrying the signal's name for the one line and the exit status."""

    def __init__(self, signame: str) -> None:
        super().__init__(f"stopped by {signame}")
        self.signame = signame


def _stop(signum: int) -> None:
    """SIGINT and SIGTERM (a job scheduler, `kill`) both stop the pilot like Ctrl+C, so
    run_pilot marks the stored run interrupted instead of leaving it 'running' for ever."""
    import signal

    raise _Stopped(signal.Signals(signum).name)


def pilot_from_args(args, settings: Settings):
    """``--in-process``: build the spec from the flags (or --spec), priced as the device it
    runs on unless --hardware says otherwise; run it watched in this process; the finished
    run."""
    from engine.pilot.runner import create_pilot_run, run_pilot

    store = open_store(settings)
    priced = priced_spec(args, store)  # SpecError when nothing prices it
    spec = priced.spec
    run = create_pilot_run(spec, store)  # refuses an unknown or empty workload
    _announce(priced, store.get_workload(spec.workload_id).n_requests)
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
    workload = store.get_workload(spec.workload_id)  # an unknown one before Ray is started
    _, need = connect_for(spec, settings, args.ray_address)
    run = create_pilot_run(spec, store)  # refuses an unknown or empty workload
    _announce(priced, workload.n_requests)
    return _submit(spec, run.id, settings, args, store, need, priced.detected)


def _submit(spec, run_id: int, settings: Settings, args, store, need, reprice: bool) -> int:
    from engine.jobs.ray_executor import submit

    sub = submit(spec, run_id, settings, args.ray_address, need, store, reprice)  # queued
    _say_submitted(sub)
    if reprice and not sub.local:
        print("Priced as the device detected here until the node that runs it detects its "
              "own; `roilab show` says which it was priced as.", flush=True)
    return 0


def _say_submitted(sub, followed: bool = False) -> None:
    from engine.jobs.ray_executor import asked

    run_id = sub.run_id
    where = f"{sub.address} (local)" if sub.local else sub.address
    asks = asked(sub.resources)  # engine.jobs.ray_executor
    then = ("followed here (Ctrl+C stops it)" if followed else
            f"follow it with `roilab runs` / `roilab show {run_id}`")
    print(f"Run {run_id} submitted to Ray at {where}, asking {asks}; {then}.", flush=True)


def _record_node(store, run_id: int) -> None:
    """Where this pilot runs (host, GPUs), stored with the run (engine.jobs.node)."""
    from engine.jobs.node import this_node

    store.set_run_node(run_id, this_node())


def cmd_resume(args, settings: Settings) -> int:
    """Run the unfinished variants of a stopped run, as a Ray task followed here (or, with
    --detach, submitted; with --in-process, in this process); exit status as `roilab
    pilot`'s."""
    if args.detach:
        return detach_resume(args, settings)
    if args.in_process:
        run = resume_in_process(args.run, settings)
    else:
        from engine.jobs.ray_executor import submit_resume

        store = open_store(settings)
        sub = _hinted(lambda: submit_resume(args.run, store, settings, args.ray_address))
        _say_submitted(sub, followed=True)
        run = _watched(args.run, settings, lambda progress: _follow(
            store, args.run, settings, args.ray_address, progress))
    return PILOT_EXIT.get(run.status, 1)


def resume_in_process(run_id: int, settings: Settings):
    """``roilab resume --in-process``: the unfinished variants run watched in this process."""
    from engine.pilot.liveness import reap_dead_runs
    from engine.pilot.runner import RESUMABLE, resume_pilot

    store = open_store(settings)
    reap_dead_runs(store)
    if store.get_run(run_id).status in RESUMABLE:  # else resume_pilot refuses it below
        _record_node(store, run_id)
    return _watched(run_id, settings, lambda progress: resume_pilot(
        run_id, store, settings, on_progress=progress))


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
    import time

    from tqdm import tqdm

    bar = tqdm(total=100, unit="%", bar_format="{l_bar}{bar}| {elapsed} {postfix}")
    # to a file or a pipe (a log, CI), a frame only when the text changes, or each
    # QUIET_FRAME_S: a followed GPU pilot otherwise wrote one a second, 54 KB in 10 minutes
    tty, last = sys.stderr.isatty(), {"frame": None, "at": 0.0}

    import signal

    from engine.pilot.stops import stops_kept

    def on_progress(p) -> None:
        stops.again()  # a stop Python dropped (engine.pilot.stops): the pilot calls this often
        n, text = round(p.fraction * 100), terminal_safe(f"{p.variant}: {p.message}")[:60]
        if not tty and last["frame"] == (n, text) and \
                time.monotonic() - last["at"] < QUIET_FRAME_S:
            return
        last.update(frame=(n, text), at=time.monotonic())
        bar.n = n
        bar.set_postfix_str(text)

    try:
        with stops_kept((signal.SIGINT, signal.SIGTERM), _stop) as stops:
            run = go(on_progress)
    except _Stopped as stop:
        bar.close()
        print(f"interrupted: run {run_id} stopped by {stop.signame}; it is stored as "
              "interrupted, finished variants keep their results", file=sys.stderr)
        raise SystemExit(INTERRUPTED_EXIT[stop.signame]) from None
    bar.close()
    if stops.asked:  # asked, but the run finished first: its table and exit status, nothing lost
        print(f"run {run_id} finished before {signal.Signals(stops.asked[0]).name} could stop "
              "it", file=sys.stderr)
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
    add_executor_args(p)
    p.set_defaults(func=cmd_pilot)
    p = sub.add_parser("resume", help="run the unfinished variants of an interrupted run",
                       epilog=PILOT_EXIT_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=int)
    add_executor_args(p)
    p.set_defaults(func=cmd_resume)
    p = sub.add_parser("cancel", help="mark a pending, running or interrupted run cancelled")
    p.add_argument("run", type=int)
    p.set_defaults(func=cmd_cancel)
    p = sub.add_parser("stop-ray", help="stop this data dir's local Ray head (started by the "
                                        "first pilot)",
                       description="Stop the local Ray head that pilots of this data dir run "
                                   "on (started on first use; never a cluster that "
                                   "ROILAB_RAY_ADDRESS names). Refused while a pilot is "
                                   "queued or running on it.")
    p.set_defaults(func=cmd_stop_ray)


def cmd_stop_ray(args, settings: Settings) -> None:
    """``roilab stop-ray``: the local head's processes stopped, unless a pilot still runs
    on it (RoilabError naming the runs and how to cancel them)."""
    from engine.core.errors import RoilabError
    from engine.jobs.cluster import ClusterError, configured_address, disconnect, stop_local_head
    from engine.jobs.ray_executor import active_runs

    if configured_address(settings):
        print(f"Pilots go to the Ray cluster at {configured_address(settings)} "
              "(ROILAB_RAY_ADDRESS); roilab stops only a local head it started: stop that "
              "cluster with `ray stop` on its machines.")
        return
    try:
        active = active_runs(settings, start=False)
    except ClusterError:
        print(f"No local Ray head runs for the data dir {settings.data_dir}.")
        return
    if active:
        raise RoilabError(f"Run(s) {', '.join(map(str, active))} are queued or running on the "
                          "local Ray head; `roilab cancel RUN` each first, then stop it.")
    disconnect()
    stop_local_head(settings)
    print(f"Stopped the local Ray head of {settings.data_dir}; the next pilot starts one.")


def add_executor_args(p, detach: bool = True) -> None:
    """--detach (unless ``detach`` is False), --in-process and --ray-address: where the
    pilot runs."""
    how = p.add_mutually_exclusive_group()
    if detach:
        how.add_argument("--detach", action="store_true",
                         help="submit the pilot to Ray and return at once with the run id "
                              "(exit 0); it runs where Ray has the GPUs (or a CPU) it needs")
    else:
        p.set_defaults(detach=False)
    how.add_argument("--in-process", action="store_true",
                     help="run the pilot in this process, without Ray (a debugger; a machine "
                          "where Ray cannot start); it neither queues behind other pilots nor "
                          "outlives this command")
    p.add_argument("--ray-address", metavar="ADDR", default=None,
                   help="the Ray cluster that runs the pilot: HOST:PORT of `ray start --head`, "
                        "ray://HOST:10001, or auto (default: ROILAB_RAY_ADDRESS; neither: a "
                        "local Ray head of this data dir, started on first use and left "
                        "running for later pilots; `roilab stop-ray` stops it). Without "
                        "--detach the pilot runs there and is followed here (progress bar, "
                        "exit status, Ctrl+C stops it)")
