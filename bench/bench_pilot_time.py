"""Benchmark: where a stored pilot's wall time went, per variant, read from the store only.

For each variant: engine start-up (engine.pilot.startup: load, compile, scorer load; a vLLM
engine shared with an earlier variant costs 0 here), the untimed warm-up rounds (where the
run stored them), its timed passes (sum of the stored passes' wall_s) and, for the baseline,
its re-measure at the end of the run; then the run's wall time (created -> finished) and
what is left of it (scoring accuracy, prompt compression outside the passes, bookkeeping).

    python bench/bench_pilot_time.py RUN_ID [--db-url sqlite:///data/roilab.db | --data-dir data]
"""
from __future__ import annotations

import argparse
from pathlib import Path

from engine.core.settings import Settings
from engine.pilot.startup import cold_starts
from engine.store.store import Store

COLUMNS = ("start-up", "warm-up", "timed passes", "baseline re-measure")


def time_rows(store: Store, run_id: int) -> tuple[list[tuple[str, ...]], float, float | None]:
    """One row of seconds per variant (``COLUMNS``), then a total row; the seconds those
    account for; and the run's wall time (None while it has not finished)."""
    run = store.get_run(run_id)
    rows, sums = [], [0.0] * len(COLUMNS)
    for v, start in zip(run.variants, cold_starts(run.variants), strict=True):
        passes = store.get_passes(v.id)
        secs = [start.seconds or 0.0, start.warm_up_s or 0.0,
                sum(p.wall_s for p in passes if p.role == "timed"),
                sum(p.wall_s for p in passes if p.role == "baseline_end")]
        sums = [a + b for a, b in zip(sums, secs, strict=True)]
        shown = [f"{x:.1f}" for x in secs]
        if start.reused:
            shown[0] = f"0 (shared with {start.shared_with})" if start.shared_with else "0 (reused)"
        rows.append((v.name, *shown))
    rows.append(("all variants", *(f"{x:.1f}" for x in sums)))
    wall = (run.finished_at - run.created_at).total_seconds() if run.finished_at else None
    return rows, sum(sums), wall


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=int)
    p.add_argument("--db-url", default="", help="SQLAlchemy URL of the store (default: the "
                   "data dir's roilab.db)")
    p.add_argument("--data-dir", type=Path, default=None, help="data folder (default: ROILAB_DATA_DIR)")
    args = p.parse_args(argv)
    base = Settings() if args.data_dir is None else Settings(data_dir=args.data_dir)
    store = Store(args.db_url or base.resolved_db_url())
    rows, measured, wall = time_rows(store, args.run)
    header = ("variant", *(f"{c} (s)" for c in COLUMNS))
    widths = [max(len(str(r[i])) for r in (header, *rows)) for i in range(len(header))]
    for r in (header, *rows):
        print("  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w)
                        for i, (c, w) in enumerate(zip(r, widths, strict=True))))
    if wall is None:
        print("The run has not finished: no wall time stored.")
    else:
        print(f"Run wall time {wall:.1f} s: {measured:.1f} s above, {wall - measured:.1f} s other "
              "(accuracy scoring, loading the scoring models, storing, bookkeeping).")


if __name__ == "__main__":
    main()
