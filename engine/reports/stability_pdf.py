"""The pilot PDF's measurement-stability table (engine.pilot.stability): timed passes per
variant, medians, spreads, unstable figures, the baseline's drift and a busy machine."""
from __future__ import annotations

from engine.pilot.protocol import BASELINE_DRIFT, UNSTABLE_SPREAD
from engine.pilot.stability import stability_lines
from engine.reports.pdf import NA, Doc, table


def _pct(x: float | None) -> str:
    return NA if x is None or x != x else f"{x:.1%}"


def stability_rows(report) -> list[tuple[str, ...]]:
    """Per variant: passes, median tokens/s and its spread, p95 and peak-memory spreads, the
    baseline's drift, the unstable figures and why the machine was busy."""
    rows = [("Variant", "Passes", "Tokens/s (median)", "Tokens/s spread", "p95 spread",
             "Peak mem spread", "Baseline drift", "Unstable", "Machine busy")]
    for v in report.variants:
        rows.append((v.name, str(v.passes),
                     NA if v.tokens_per_s is None else f"{v.tokens_per_s:.4g}",
                     _pct(v.tokens_per_s_spread), _pct(v.latency_p95_spread),
                     _pct(v.peak_mem_spread), _pct(v.baseline_drift),
                     ", ".join(v.unstable) or "-", v.busy or "-"))
    return rows


def stability_section(pdf: Doc, report, prefix: str = "") -> None:
    pdf.heading(f"{prefix}Measurement stability")
    table(pdf, stability_rows(report), (30, 14, 26, 24, 20, 24, 22, 45, 72), size=7.5)
    pdf.para(f"Speed, latency and peak memory are medians over each variant's timed passes; "
             f"spread is (max - min) / median. A figure is unstable above {UNSTABLE_SPREAD:.0%} "
             f"spread, or when the baseline timed again at the end drifted by more than "
             f"{BASELINE_DRIFT:.0%}.", 8, "I")
    for line in stability_lines(report):
        pdf.para(line, 8, "B")
