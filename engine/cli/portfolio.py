"""``roilab portfolio-pilot`` and ``roilab portfolio``: the same variants over several stored
workloads as parallel pilots on Ray (issue 20, "a portfolio in one command"), and the
portfolio roll-up (engine.business.portfolio) of stored runs.

``portfolio-pilot --workloads 1,2,3 --spec pilot.json`` checks every workload (one error
naming each unknown or empty one, before Ray is reached or any run exists), reaches Ray
(``--ray-address`` / ``ROILAB_RAY_ADDRESS``, else the local head) and checks it can give a
pilot what it asks for, then creates and submits one run per workload through
engine.jobs.ray_executor.submit: each is an ordinary run of its workload, named
``<name>: workload <id> (<workload name>)``, that `roilab show` / `resume` / `cancel` treat
as any other. Without ``--detach`` it waits, reading the runs' statuses from the store (so a
pilot whose worker died is reported interrupted by the liveness check), prints one line per
run as it finishes, then the roll-up of their business cases, each priced with its run's
own stored assumptions as ``roilab show`` prices it. Ctrl+C stops the waiting, not the
pilots: they run on in Ray.
"""
from __future__ import annotations

import argparse
import sys
import time

from engine.cli.common import open_store
from engine.cli.pilot_spec import Given, add_pilot_args
from engine.core.domain import Status
from engine.core.errors import RoilabError, SpecError
from engine.core.inert import terminal_safe
from engine.core.settings import Settings

FINISHED = (Status.DONE, Status.PARTIAL, Status.FAILED, Status.INTERRUPTED, Status.CANCELLED)
POLL_S = 1.0
CHECK_RAY_EVERY_S = 5.0  # ask the dispatcher which pilots it still holds, and reap dead owners

PORTFOLIO_EXIT_HELP = """exit status:
  0  every pilot done: every variant of every workload ran
  3  some pilot partial, failed or interrupted, but at least one baseline was measured: the
     roll-up covers the runs with a business case and names the others
  1  no pilot measured its baseline: nothing to roll up
  2  error: nothing was submitted (bad flags or spec, unknown or empty workload, Ray not
     reachable, ...)
  130  Ctrl+C while waiting: the pilots keep running on Ray (`roilab runs`)
With --detach: 0 once every pilot is submitted."""


def parse_ids(text: str, flag: str) -> list[int]:
    """``"1,2, 3"`` -> [1, 2, 3]; a SpecError naming the first bad or repeated entry."""
    ids: list[int] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        if not part.isdigit() or int(part) < 1:
            raise SpecError(f"{flag} {text!r}: {part!r} is not an id; give ids as `roilab "
                            f"{'workloads' if flag == '--workloads' else 'runs'}` lists them, "
                            "separated by commas (e.g. 1,2,3).")
        if int(part) in ids:
            raise SpecError(f"{flag} {text!r} names {part} twice; give each once.")
        ids.append(int(part))
    if not ids:
        raise SpecError(f"{flag} is empty; give one or more ids separated by commas (e.g. 1,2,3).")
    return ids


def checked_workloads(store, ids: list[int]):
    """The stored workloads ``ids`` name, in order; one SpecError naming every unknown or
    empty one (nothing is submitted)."""
    known = {w.id: w for w in store.list_workloads()}
    unknown = [i for i in ids if i not in known]
    empty = [i for i in ids if i in known and known[i].n_requests == 0]
    problems = []
    if unknown:
        problems.append(f"no workload {', '.join(map(str, unknown))} in the store")
    if empty:
        problems.append(f"workload {', '.join(map(str, empty))} has no requests")
    if problems:
        have = ", ".join(str(i) for i in sorted(known)) or "none yet (`roilab ingest LOG`)"
        raise SpecError(f"--workloads: {'; '.join(problems)}. Stored workloads: {have} "
                        "(`roilab workloads` lists them). Nothing was submitted.")
    return [known[i] for i in ids]


def cmd_portfolio_pilot(args, settings: Settings) -> int:
    from engine.cli.pilot import _submit
    from engine.cli.pilot_spec import priced_spec
    from engine.ingest.review import small_workload_warning
    from engine.jobs.ray_executor import connect_for
    from engine.pilot.runner import create_pilot_run

    store = open_store(settings)
    workloads = checked_workloads(store, parse_ids(args.workloads, "--workloads"))
    specs = []
    for w in workloads:  # every spec built and priced before Ray is reached
        one = argparse.Namespace(**vars(args))
        one.workload = w.id
        priced = priced_spec(one, store)  # SpecError when nothing prices it
        name = f"{priced.spec.name}: workload {w.id} ({w.name})"
        specs.append((w, priced.spec.model_copy(update={"name": name[:80]}), priced))
    first = specs[0][2]
    print(terminal_safe(f"Portfolio of {len(specs)} pilot(s), one per workload; each "
                        f"{first.line}"), flush=True)
    if first.warning:
        print(f"warning: {terminal_safe(first.warning)}", file=sys.stderr)
    for w, _, _ in specs:
        if warning := small_workload_warning(w.n_requests):
            print(f"warning: workload {w.id}: {warning}", file=sys.stderr)
    _, need = connect_for(specs[0][1], settings, args.ray_address)  # Ray, before any run
    submitted: list[tuple[int, object]] = []
    t0 = time.monotonic()
    for w, spec, priced in specs:
        run = create_pilot_run(spec, store)
        try:
            _submit(spec, run.id, settings, args, store, need, priced.detected)
        except RoilabError as exc:
            if submitted:
                ids = ", ".join(str(r) for r, _ in submitted)
                raise RoilabError(f"{exc} Run(s) {ids} were submitted before this and run on; "
                                  "workloads after it were not submitted.") from None
            raise
        submitted.append((run.id, w))
    ids = ",".join(str(r) for r, _ in submitted)
    if args.detach:
        print(f"Portfolio submitted: runs {ids.replace(',', ', ')}. Follow them with `roilab "
              f"runs`; the roll-up once they finish: `roilab portfolio {ids}`.", flush=True)
        return 0
    print(f"Waiting for {len(submitted)} pilot(s); Ctrl+C stops waiting, not the pilots.",
          flush=True)
    try:
        runs = wait_for_runs(store, settings, submitted, t0, args.ray_address)
    except KeyboardInterrupt:
        print(f"stopped waiting: the pilots run on in Ray; `roilab runs` follows them, "
              f"`roilab portfolio {ids}` rolls them up.", file=sys.stderr)
        return 130
    return print_portfolio(store, [r.id for r in runs], exit_from=runs)


def wait_for_runs(store, settings: Settings, submitted, t0: float,
                  address: str | None = None) -> list:
    """Poll the store until every submitted run has finished, printing one line per run as
    it does; the finished runs in submission order. A run whose pilot process died is marked
    interrupted by the liveness check (engine.pilot.liveness); one still pending whose Ray
    task is gone (it ended before claiming the run) is marked interrupted here."""
    from engine.pilot.liveness import reap_dead_runs

    left = {run_id: w for run_id, w in submitted}
    finished = {}
    last_check = time.monotonic()
    while left:
        if time.monotonic() - last_check >= CHECK_RAY_EVERY_S:
            last_check = time.monotonic()
            reap_dead_runs(store)
            _lost_tasks(store, settings, list(left), address)
        for run_id in list(left):
            run = store.get_run(run_id)
            if run.status in FINISHED:
                finished[run_id] = run
                print(terminal_safe(run_line(run, left.pop(run_id), time.monotonic() - t0)),
                      flush=True)
        if left:
            time.sleep(POLL_S)
    return [finished[r] for r, _ in submitted]


def _lost_tasks(store, settings: Settings, run_ids: list[int], address: str | None) -> None:
    """Runs still pending although Ray no longer holds their task: the task ended (a worker
    killed, the store unreachable from it) before the pilot claimed the run, so no owner
    will ever be found dead; marked interrupted, resumable."""
    from engine.jobs.ray_executor import active_runs
    from engine.pilot.liveness import stop_run

    try:
        active = set(active_runs(settings, address))
    except Exception:  # noqa: BLE001 - Ray busy or gone: the store still tells the rest
        return
    for run_id in run_ids:
        if run_id not in active and store.get_run(run_id).status == Status.PENDING:
            stop_run(store, run_id, Status.INTERRUPTED,
                     "Interrupted: its Ray task ended before the pilot started (see the Ray "
                     f"worker logs); `roilab resume {run_id} --detach` runs it again.")


def run_line(run, workload, elapsed_s: float) -> str:
    """``Run 4 (workload 1 'support'): done after 42 s, 3 of 3 variants done``, with the
    reason of a run that is not done."""
    done = sum(v.status == Status.DONE for v in run.variants)
    line = (f"Run {run.id} (workload {workload.id} '{workload.name}'): {run.status} after "
            f"{elapsed_s:,.0f} s, {done} of {len(run.variants)} variants done")
    if run.status != Status.DONE and run.error:
        line += f"; {run.error}"
    return line


def print_portfolio(store, run_ids: list[int], exit_from=None) -> int:
    """The roll-up (engine.business.portfolio) of the runs' business cases, each as `roilab
    show` prices it (the run's stored assumptions); runs without one are named with why.
    The exit status by ``exit_from`` (the runs), else 0 when any run rolled up."""
    from engine.business.case import build_business_case
    from engine.business.portfolio import portfolio
    from engine.pilot.liveness import reap_dead_runs
    from engine.reports.case_words import fmt_months
    from engine.reports.pdf import fmt_money

    reap_dead_runs(store)
    cases, without = [], []
    for run_id in run_ids:
        try:
            cases.append(build_business_case(store, run_id))
        except RoilabError as exc:  # no measured baseline (or no such run)
            without.append(f"run {run_id}: {exc}")
    p = portfolio(cases)

    def row(r, run_id: str) -> list[str]:
        keep = "" if r is p.total else "none (keep the baseline)"
        return [run_id, r.name, r.recommended or keep,
                fmt_money(r.baseline_annual), fmt_money(r.recommended_annual),
                fmt_money(r.annual_savings), fmt_money(r.one_time), fmt_months(r.payback_months)]

    print(f"\nPortfolio roll-up of {len(run_ids)} run(s), each priced with its own stored "
          "assumptions (`roilab show RUN` for one; the dashboard's Business case page rolls "
          "them up under one set):")
    rolled = [c.run_id for c in cases if c.baseline_monthly_cost is not None]  # p.rows' runs
    table = [["run", "pilot", "recommended", "before $/year", "after $/year", "saving $/year",
              "one-time", "payback"]]
    table += [row(r, f"#{run_id}") for r, run_id in zip(p.rows, rolled, strict=True)]
    table.append(row(p.total, ""))
    widths = [max(len(terminal_safe(line[i])) for line in table) for i in range(len(table[0]))]
    for line in table:
        print(terminal_safe("  " + "  ".join(cell.ljust(w) for cell, w in
                                             zip(line, widths, strict=True)).rstrip()))
    for note in (*p.skipped, *without):
        print(terminal_safe(f"  not rolled up: {note}", multiline=True))
    if exit_from is None:
        return 0 if p.rows else 1
    if all(r.status == Status.DONE for r in exit_from):
        return 0
    return 3 if p.rows else 1


def cmd_portfolio(args, settings: Settings) -> int:
    run_ids = [i for text in args.runs for i in parse_ids(text, "RUNS")]
    if len(set(run_ids)) != len(run_ids):
        raise SpecError("RUNS names a run twice; give each once.")
    store = open_store(settings)
    for run_id in run_ids:
        store.get_run(run_id)  # StorageError naming an unknown one, before any output
    return print_portfolio(store, run_ids)


def add_parsers(sub) -> None:
    p = sub.add_parser(
        "portfolio-pilot", help="the same pilot over several workloads, as parallel Ray jobs",
        description="Run the same variants over each of several stored workloads, one pilot "
                    "per workload submitted to Ray at once (queued where resources are short, "
                    "spread over a cluster's nodes); wait for them and print the portfolio "
                    "roll-up of their business cases.",
        epilog=PORTFOLIO_EXIT_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workloads", required=True, metavar="IDS",
                   help="the workloads, comma-separated (e.g. 1,2,3; `roilab workloads`)")
    p.add_argument("--name", action=Given, default="pilot",
                   help="each run is named '<name>: workload <id> (<workload name>)'")
    add_pilot_args(p, max_requests=None)
    p.add_argument("--detach", action="store_true",
                   help="submit the pilots and return at once with their run ids (exit 0); "
                        "`roilab portfolio IDS` rolls them up once they finish")
    p.add_argument("--ray-address", metavar="ADDR", default=None,
                   help="the Ray cluster: HOST:PORT of `ray start --head`, ray://HOST:10001, "
                        "or auto (default: ROILAB_RAY_ADDRESS, else a local Ray started on "
                        "first use)")
    p.set_defaults(func=cmd_portfolio_pilot)
    p = sub.add_parser("portfolio", help="the portfolio roll-up of stored runs",
                       description="Roll stored runs' business cases up into one annual view "
                                   "(engine.business.portfolio), each priced as `roilab show` "
                                   "prices it.")
    p.add_argument("runs", nargs="+", metavar="RUNS", help="run ids (e.g. 4,5,6 or 4 5 6)")
    p.set_defaults(func=cmd_portfolio)
