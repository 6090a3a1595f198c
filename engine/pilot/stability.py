"""How stable a run's measurements are, from its stored timed passes (engine.pilot.protocol).

``variant_stability`` turns a variant's passes into the figures a VariantSummary carries
(passes, relative spreads, the baseline's drift, which figures are unstable, whether the
machine was busy); ``stability_frame`` and ``stability_lines`` are what the CLI, the
dashboard's Results page and the PDF show (the lines also flag a run priced as another kind
of device than it was measured on: engine.pilot.detect). Runs stored before the protocol have no passes:
one measurement, nothing flagged. (``report`` below is an engine.pilot.report.PilotReport;
not imported, as report.py imports this module.)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from engine.pilot.detect import pricing_mismatch
from engine.pilot.protocol import (
    BASELINE_DRIFT,
    UNSTABLE_SPREAD,
    busy_reason,
    drift,
    memory_passes,
    spread,
)

if TYPE_CHECKING:
    import pandas as pd

GC_PAUSE_NOTED = 0.02  # garbage collection over this share of a pass: said beside a flag
FIGURES = {"throughput_tok_s": "tokens/s", "latency_p95_s": "p95 latency",
           "peak_mem_bytes": "peak memory"}


@dataclass(frozen=True)
class Stability:
    passes: int = 1
    tokens_per_s_spread: float | None = None  # (max - min) / median over the timed passes
    latency_p95_spread: float | None = None
    peak_mem_spread: float | None = None
    baseline_drift: float | None = None  # baseline only: end re-measure's tokens/s vs median
    unstable: tuple[str, ...] = ()  # the figures marked unstable, e.g. ("tokens/s",)
    busy: str | None = None  # why the machine was busy during a pass, else None
    # The most seconds one timed pass spent in garbage collection (engine.pilot.gcpause);
    # None for passes stored before revision 0010.
    gc_pause_max_s: float | None = None
    gc_pause_share: float | None = None  # that, over the median pass's wall seconds


def variant_stability(passes: pd.DataFrame, run_drift: float | None = None,
                      is_baseline: bool = False) -> Stability:
    """The Stability of one variant from its rows of ``Store.passes_frame``; ``run_drift`` is
    the baseline's (every figure of a run whose baseline drifted is unstable)."""
    if passes.empty:
        return Stability()
    timed = passes[passes.role == "timed"]
    spreads = {k: spread(list((memory_passes(timed) if k == "peak_mem_bytes" else timed)[k]
                              .dropna())) for k in FIGURES}
    rel = {k: s.relative if s and s.n > 1 else None for k, s in spreads.items()}
    unstable = [FIGURES[k] for k, r in rel.items() if r is not None and r > UNSTABLE_SPREAD]
    if run_drift is not None and abs(run_drift) > BASELINE_DRIFT:
        unstable.append("baseline drift")
    busy = next((r for row in passes.to_dict("records") if (r := busy_reason(row))), None)
    gc = timed.gc_pause_s.dropna() if "gc_pause_s" in timed else ()
    gc_max = float(gc.max()) if len(gc) else None
    wall = float(timed.wall_s.median()) if len(timed) else 0.0
    return Stability(passes=len(timed) or 1, tokens_per_s_spread=rel["throughput_tok_s"],
                     latency_p95_spread=rel["latency_p95_s"],
                     peak_mem_spread=rel["peak_mem_bytes"],
                     baseline_drift=run_drift if is_baseline else None,
                     unstable=tuple(unstable), busy=busy, gc_pause_max_s=gc_max,
                     gc_pause_share=gc_max / wall if gc_max is not None and wall > 0 else None)


def baseline_drift(passes: pd.DataFrame) -> float | None:
    """The baseline's end-of-run tokens/s relative to the median of its timed passes."""
    if passes.empty:
        return None
    first = spread(list(passes[passes.role == "timed"].throughput_tok_s))
    end = passes[passes.role == "baseline_end"].throughput_tok_s
    return drift(first.median if first else None, float(end.iloc[-1]) if len(end) else None)


def stability_frame(report) -> pd.DataFrame:
    """One row per variant: passes, median tokens/s and p95, relative spreads, flags, busy."""
    import pandas as pd

    rows = [{"variant": v.name, "passes": v.passes, "tokens_per_s": v.tokens_per_s,
             "tokens_per_s_spread": v.tokens_per_s_spread,
             "latency_p95_s": v.latency.p95 if v.latency else None,
             "latency_p95_spread": v.latency_p95_spread, "peak_mem_spread": v.peak_mem_spread,
             "baseline_drift": v.baseline_drift,
             "unstable": ", ".join(v.unstable) or None, "machine_busy": v.busy}
            for v in report.variants]
    return pd.DataFrame(rows)


def stability_lines(report) -> list[str]:
    """Plain warnings about the run's measurements: unstable figures, a drifting baseline, a
    busy machine, a price for the other kind of device than the one measured. Empty when none
    applies."""
    out = []
    mismatch = pricing_mismatch(report.hardware, (v.device for v in report.variants))
    if mismatch:
        out.append(mismatch)
    b = report.baseline
    if b.baseline_drift is not None and abs(b.baseline_drift) > BASELINE_DRIFT:
        out.append(f"Unstable: the baseline measured again at the end ran {b.baseline_drift:+.0%} "
                   f"tokens/s against its first passes (threshold {BASELINE_DRIFT:.0%}); every "
                   "speed figure of this run is in doubt. Run the pilot again on a quiet machine.")
    for v in report.variants:
        own = [f for f in v.unstable if f != "baseline drift"]
        if own:
            gc = ""
            if v.gc_pause_share is not None and v.gc_pause_share >= GC_PAUSE_NOTED:
                gc = (f" One of its passes spent {v.gc_pause_max_s:.1f} s "
                      f"({v.gc_pause_share:.0%} of a pass) collecting the interpreter's garbage.")
            out.append(f"Unstable: {v.name}'s {', '.join(own)} varied by more than "
                       f"{UNSTABLE_SPREAD:.0%} across its {v.passes} passes; the median is "
                       f"shown.{gc}")
    busy = [f"{v.name} ({v.busy})" for v in report.variants if v.busy]
    if busy:
        out.append("The machine was busy during the run: " + "; ".join(busy) + ". Speed "
                   "figures measured beside other work are low and noisy; run again when it "
                   "is quiet.")
    return out


def spread_text(rel: float | None) -> str:
    """A relative spread for a table cell: "±4%" (half the range), "" for one pass."""
    return "" if rel is None else f"±{rel / 2:.0%}"
