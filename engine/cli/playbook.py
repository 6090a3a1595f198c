"""``roilab playbook WORKLOAD``: the workload's five playbook steps with their state, the
techniques that fit it and why (engine.business.playbook); ``--run`` runs the suggested
pilot exactly as ``roilab pilot --variants <suggested>`` would, with its flags."""
from __future__ import annotations

import argparse

from engine.cli.common import open_store
from engine.cli.pilot import PILOT_EXIT_HELP, add_executor_args, cmd_pilot
from engine.cli.pilot_spec import Given, add_pilot_args
from engine.core.errors import SpecError
from engine.core.inert import terminal_safe
from engine.core.settings import Settings

MARK = {"done": "done", "next": "NEXT", "not started": "-"}


def cmd_playbook(args, settings: Settings) -> int:
    from engine.business.playbook import workload_playbook
    from engine.cli.workloads import embedded_token_counter

    given = getattr(args, "given", set())
    if args.spec:
        raise SpecError("roilab playbook --run runs the suggested variants; for a spec of your "
                        "own use `roilab pilot --workload W --spec FILE`.")
    if "variants" in given:
        raise SpecError("--variants is what the playbook suggests; to choose them yourself use "
                        "`roilab pilot --workload W --variants ...`.")
    store = open_store(settings)
    book = workload_playbook(store, args.workload,
                             backend=args.backend if "backend" in given else None,
                             count_tokens=embedded_token_counter(settings))
    print_playbook(book)
    if not args.run:
        return 0
    if not book.suggested:
        raise SpecError("No technique with a built-in variant fits this workload on the "
                        f"{book.backend} backend (reasons above); run `roilab pilot` with a "
                        "--spec of your own.")
    args.variants = ",".join(book.suggested)
    args.backend = book.backend
    if args.name == "pilot":
        args.name = "playbook"
    print()
    line = book.pilot_command() + _typed_flags([
        *getattr(args, "given_flags", ()), *([("--detach", True)] if args.detach else []),
        *([("--in-process", True)] if args.in_process else []),
        *([("--ray-address", args.ray_address)] if args.ray_address else [])])
    print(terminal_safe(f"Running the suggested pilot: {line}"), flush=True)
    return cmd_pilot(args, settings)


def _typed_flags(flags) -> str:
    """The pilot flags the user added to ``--run``, as typed (the suggested line already
    names the backend), so the printed line is the pilot that runs."""
    import shlex

    out = []
    for option, value in flags:
        if option in (None, "--backend"):
            continue
        switch = isinstance(value, bool) or value is None or value == []  # a flag alone
        out.append(option if switch else f"{option} {shlex.quote(str(value))}")
    return "".join(f" {o}" for o in out)


def print_playbook(book) -> None:
    w = book.workload
    print(terminal_safe(f"Playbook of workload {w.id} '{w.name}' ({w.n_requests:,} requests)"))
    for i, s in enumerate(book.steps, 1):
        print(terminal_safe(f"  {i}. {s.title:<19} {MARK[s.state]:<5} {s.detail}"))
        if s.state == "next" and s.command:
            print(terminal_safe(f"     {'':<19} {'':<5} > {s.command}"))
    print(terminal_safe(f"Techniques for this workload ({book.backend} backend):"))
    for s in book.suggestions:
        mark = "+ fits" if s.fits else "- not now"
        runs = f" [variant {s.variant}]" if s.variant else ""
        print(terminal_safe(f"  {mark:<9} {s.technique}{runs}: {s.reason}."))
        if s.fits and not s.variant and s.how:
            print(terminal_safe(f"  {'':<9} how: {s.how}"))
    if book.scorecard:
        print(terminal_safe(f"Claims scorecard (run #{book.scorecard_run}):"))
        for r in book.scorecard:
            figure = f": {r.figure}" if r.figure else ""
            print(terminal_safe(f"  {r.verdict:<10} {r.claim.claim}{figure}. {r.note}"))
    if book.suggested:
        print(terminal_safe(f"Suggested pilot: {book.pilot_command()}  "
                            f"(or: roilab playbook {w.id} --run)"))


def add_parsers(sub) -> None:
    p = sub.add_parser("playbook", help="a workload's playbook steps and the techniques that "
                       "fit it; --run runs the suggested pilot",
                       description="Show the workload's five playbook steps (profile, baseline, "
                                   "techniques chosen, after, portfolio) with their state, and "
                                   "which techniques fit it, each with the measured figure "
                                   "that says why. --run runs the suggested pilot as `roilab "
                                   "pilot --variants <suggested>` would, with the flags below.",
                       epilog=PILOT_EXIT_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("workload", type=int, help="the workload id (roilab workloads)")
    p.add_argument("--run", action="store_true", help="run the suggested pilot")
    p.add_argument("--name", action=Given, default="pilot")
    add_pilot_args(p, max_requests=None)
    add_executor_args(p)
    p.set_defaults(func=cmd_playbook)
