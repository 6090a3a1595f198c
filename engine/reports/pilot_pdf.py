"""The pilot's measurements as a PDF (fpdf2 + matplotlib), rebuilt from a PilotReport.

What was measured, on the hardware it ran on: speed, latency, memory, accuracy and unit
costs ($/1k requests, $/1M output tokens: the busy time the replay took, no idle capacity).
It prices no month: the one monthly cost is the business case's (engine.business.case), which
``render_pdf`` states in one paragraph when given the case and points to (`roilab report`).
The summary's figures come from ``headline_figures(report)``, so tests can compute the exact
strings from stored numbers; engine.reports.business_pdf puts the case in front of these pages.
"""
from __future__ import annotations

import io
import math
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from engine.core.domain import Status
from engine.economics.decision import SPEED_MEMORY_ONLY
from engine.pilot.report import PilotReport, VariantSummary, speed_memory_only, technique_figures
from engine.pilot.stability import stability_lines
from engine.pilot.startup import EXPLAINED as STARTUP_EXPLAINED
from engine.reports.case_words import DASH, UNSTABLE_LEGEND, case_headline
from engine.reports.pdf import (
    MIB,
    NA,
    Doc,
    fmt_cell,
    fmt_cell_mib,
    fmt_count,
    fmt_mib,
    fmt_money,
    fmt_pct,
    fmt_price,
    fmt_ratio,
    fmt_score,
    fmt_tok_s,
    missing,
    new_doc,
    png,
    price_age_note,
    signed_change,
    table,
    to_latin1,
    write_file,
)
from engine.reports.stability_pdf import stability_section

_COLORS = ("#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3")
_MARKED = {"tokens_per_s": "tokens/s", "latency_p95_s": "p95 latency",
           "peak_mem_bytes": "peak memory"}  # frame column -> engine.pilot.stability figure


def _ratio(a, b) -> float | None:
    return None if missing(a) or missing(b) or not b else a / b


def unstable_flags(report: PilotReport) -> dict[str, list[bool]]:
    """Per frame column (tokens_per_s, latency_p95_s, peak_mem_bytes), one flag per variant:
    the figure the protocol found unstable, as `roilab show` marks it with '*' (a drifting
    baseline puts every speed figure in doubt, not the memory)."""
    return {col: [figure in v.unstable or ("baseline drift" in v.unstable
                                           and figure != "peak memory")
                  for v in report.variants] for col, figure in _MARKED.items()}


def any_unstable(report: PilotReport) -> bool:
    return any(any(flags) for flags in unstable_flags(report).values())


def _star(text: str, flag: bool) -> str:
    return text + "*" if flag and text not in (NA, DASH) else text


def _dash(row: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(DASH if cell == NA else cell for cell in row)


def readable_figures(figures: pd.DataFrame) -> pd.DataFrame:
    """``technique_figures`` with words for its keys ("peak memory" for memory.peak_bytes) and
    bytes in MiB/GiB, for the page and the PDF."""
    def label(key: str) -> str:
        words = key.rsplit(".", 1)[-1].removesuffix("_bytes").replace("_", " ")
        return FIGURE_WORDS.get(words, words)

    def value(key: str, text: str) -> str:
        if key.endswith("_bytes"):
            try:
                return fmt_mib(float(text.replace(",", "")))
            except ValueError:
                return text
        return DASH if text in ("None", "nan") else text

    return figures.assign(value=[value(k, t) for k, t in zip(figures.figure, figures.value,
                                                               strict=True)],
                          figure=[label(k) for k in figures.figure])


FIGURE_WORDS = {"peak": "peak memory", "weight": "weights", "kv cache": "KV cache",
                "kv cache tokens": "KV cache (tokens)", "kv bytes per token": "KV bytes per token",
                "device total": "device memory", "kv method": "KV cache method"}


# ---- the words -------------------------------------------------------------------------
def cheapest_unit_cost(report: PilotReport) -> VariantSummary | None:
    """The variant beside the baseline with the lowest $/1k requests (unit cost), if any."""
    ok = [v for v in report.variants[1:] if v.cost_per_1k_requests is not None]
    return min(ok, key=lambda v: v.cost_per_1k_requests) if ok else None


def headline_figures(report: PilotReport) -> dict[str, str]:
    """The exact strings the summary prints. Keys beyond the baseline's exist only when a
    variant has a unit cost to compare (``*_ref_contains`` only when the log has references);
    ``unit_cost_change`` is signed and worded: "+14.2% more" or "-30.1% less" per request."""
    b = report.baseline
    f = {"baseline_cost_per_1k": fmt_money(b.cost_per_1k_requests),
         "baseline_cost_per_1m_tokens": fmt_money(b.cost_per_1m_output_tokens),
         "price_per_hour": fmt_price(report.price_per_hour)}
    v = cheapest_unit_cost(report)
    if v is None:
        return f
    change = _ratio(v.cost_per_1k_requests, b.cost_per_1k_requests)
    f.update(best_variant=v.name, best_cost_per_1k=fmt_money(v.cost_per_1k_requests),
             unit_cost_change=signed_change(None if change is None else change - 1),
             best_rouge_l=fmt_score(v.base_rouge_l),
             best_cosine=fmt_score(v.base_cosine), best_tokens_per_s=fmt_tok_s(v.tokens_per_s),
             baseline_tokens_per_s=fmt_tok_s(b.tokens_per_s),
             speed_ratio=fmt_ratio(_ratio(v.tokens_per_s, b.tokens_per_s)),
             best_peak_mem=fmt_mib(v.peak_mem_bytes), baseline_peak_mem=fmt_mib(b.peak_mem_bytes),
             peak_mem_ratio=fmt_ratio(_ratio(v.peak_mem_bytes, b.peak_mem_bytes)),
             best_weights=fmt_mib(v.weight_bytes), baseline_weights=fmt_mib(b.weight_bytes),
             weight_ratio=fmt_ratio(_ratio(v.weight_bytes, b.weight_bytes)))
    if v.ref_contains is not None or b.ref_contains is not None:
        f.update(best_ref_contains=fmt_pct(v.ref_contains),
                 baseline_ref_contains=fmt_pct(b.ref_contains))
    return f


def summary_paragraphs(report: PilotReport) -> list[str]:
    """The measurements in plain sentences, written from the numbers (also used in the UI).
    Unit costs only: the monthly answer is the business case's (``case_headline``)."""
    b, f, v = report.baseline, headline_figures(report), cheapest_unit_cost(report)
    out = [f"Replaying {b.n_requests} requests of workload '{report.workload.name}' on "
           f"{report.hardware.name} at {f['price_per_hour']}/hour, the baseline '{b.name}' has a "
           f"unit cost of {f['baseline_cost_per_1k']} per 1k requests "
           f"({f['baseline_cost_per_1m_tokens']} per 1M output tokens) for the time it was busy."
           if b.cost_per_1k_requests is not None else
           f"The baseline '{b.name}' produced no throughput to cost, so no unit cost can be "
           "compared."]
    if v is None and b.cost_per_1k_requests is not None:
        out.append("No other variant produced a unit cost to compare with the baseline.")
    elif v is not None:
        out.append(f"The lowest unit cost beside it is '{v.name}' ({v.techniques}): "
                   f"{f['best_cost_per_1k']} per 1k requests ({f['unit_cost_change']} per "
                   "request than the baseline). Whether that saves money each month depends on volume, "
                   "devices and the quality gate: see the business case.")
    unscored = speed_memory_only(report)
    if v is not None:
        out += _detail_sentences(v, b, f, v.name in unscored, b.name in unscored)
    if unscored:
        out.append(f"{SPEED_MEMORY_ONLY.capitalize()} (random weights, accuracy not measured): "
                   + ", ".join(f"'{n}'" for n in unscored) + ".")
    reasons = [f"'{x.name}' ({x.status}): {(x.error or 'no reason').rstrip('.')}"
               for x in report.variants if x.status != Status.DONE]
    if reasons:
        out.append("Failed: " + "; ".join(reasons) + ".")
    return out


def _detail_sentences(v: VariantSummary, b: VariantSummary, f: dict[str, str],
                      random_v: bool = False, random_b: bool = False) -> list[str]:
    """Accuracy retention, then speed and memory, of the headline variant vs the baseline;
    ``random_v`` / ``random_b``: that model has random weights (accuracy not measured)."""
    acc = (f"Against the baseline's outputs, '{v.name}' scores ROUGE-L {f['best_rouge_l']} and "
           f"embedding cosine {f['best_cosine']} (1.000 = identical).")
    if random_v:
        acc = f"'{v.name}' has random weights: {SPEED_MEMORY_ONLY}, its accuracy was not measured."
    elif random_b:
        acc = f"The baseline '{b.name}' has random weights, so no output is compared with it."
    if "best_ref_contains" in f and not random_v:
        acc += (f" Its answers contain the reference in {f['best_ref_contains']} of requests "
                f"with one, versus {f['baseline_ref_contains']} for the baseline.")
    speed = (f"It generates {f['best_tokens_per_s']} versus {f['baseline_tokens_per_s']} for the "
             f"baseline ({f['speed_ratio']}); peak memory is {f['best_peak_mem']} versus "
             f"{f['baseline_peak_mem']} ({f['peak_mem_ratio']}) and weights {f['best_weights']} "
             f"versus {f['baseline_weights']} ({f['weight_ratio']}).")
    words = [(_ratio(v.tokens_per_s, b.tokens_per_s), "faster", "slower"),
             (_ratio(v.peak_mem_bytes, b.peak_mem_bytes), "less peak memory", "more peak memory"),
             (_ratio(v.weight_bytes, b.weight_bytes), "smaller weights", "larger weights")]
    said = [good if (r >= 1 if i == 0 else r < 1) else bad
            for i, (r, good, bad) in enumerate(words) if r is not None and r != 1]
    return [acc, speed + (f" In short: {', '.join(said)} than the baseline." if said else "")]


def assumptions(report: PilotReport) -> list[tuple[str, str]]:
    """(label, value) rows: every input the cost figures depend on."""
    spec, hw, b = report.spec, report.hardware, report.baseline
    price = f"{fmt_price(report.price_per_hour)}/hour per device"
    if not math.isclose(report.price_per_hour, hw.price_per_hour):
        price += f" (set by the user; catalog {fmt_price(hw.price_per_hour)}/hour)"
    age = price_age_note(hw.price_date)
    spans = [f"{v.name} {v.devices}" for v in report.variants if v.devices > 1]
    models = sorted({f"{v.model} ({v.dtype})" for v in spec.variants})
    devices = sorted({v.device for v in report.variants if v.device})
    return [("Hardware", f"{hw.name} [{hw.key}]"), ("Price", price),
            ("Price source", f"{hw.price_source}, prices as of {hw.price_date}"
                             + (f". {age}" if age else "")),
            ("Volume (business case)", f"{report.requests_per_month:,} requests/month"),
            ("Max new tokens", str(spec.generation.max_new_tokens)),
            ("Batch size", str(spec.generation.batch_size)),
            ("Requests replayed", f"{b.n_requests} of the workload's {report.workload.n_requests}"),
            ("Model", "; ".join(models) or NA), ("Device", "; ".join(devices) or NA),
            ("Decoding", "greedy; throughput = output tokens (or requests) / replay wall time"),
            ("Devices per variant", "1 each" if not spans else
             "1 each, except " + ", ".join(spans) + " (tensor x pipeline parallel); $/h below "
             "is the per-device price x the variant's devices"),
            ("$/1k requests", "$/h / (req/s * 3600) * 1000"),
            ("$/1M tokens", "$/h / (tok/s * 3600) * 1e6"),
            ("Unit costs", "busy time only (no idle capacity); the monthly cost is the "
                           "business case's (`roilab report`)"),
            ("Memory", "MiB = 2^20 bytes; peak memory while serving (weights, activations, cache); "
                       "KV cache: the capacity the serving engine reserved, where it reports one")]


# ---- charts ------------------------------------------------------------------------------
def charts_png(report: PilotReport, dpi: int = 150) -> bytes:
    """Five panels: $/1k requests, latency p50/p95, accuracy, tokens/s, memory."""
    vs, marks = report.variants, unstable_flags(report)
    names = [to_latin1(v.name) for v in vs]
    fig = Figure(figsize=(7.4, 9.2), dpi=dpi, layout="constrained")
    grid = fig.add_gridspec(3, 2)
    _bars(fig.add_subplot(grid[0, 0]), names,
          {"$/1k requests": [v.cost_per_1k_requests for v in vs]}, "Unit cost per 1k requests (USD)")
    _bars(fig.add_subplot(grid[0, 1]), names,
          {"p50": [v.latency.p50 if v.latency else None for v in vs],
           "p95": [v.latency.p95 if v.latency else None for v in vs]}, "Latency per request (s)",
          marks={"p95": marks["latency_p95_s"]})
    _bars(fig.add_subplot(grid[1, 0]), names,
          {"ROUGE-L vs base": [v.base_rouge_l for v in vs],
           "cosine vs base": [v.base_cosine for v in vs],
           "ref contains": [v.ref_contains for v in vs]}, "Accuracy (0-1)")
    _bars(fig.add_subplot(grid[1, 1]), names, {"tok/s": [v.tokens_per_s for v in vs]},
          "Throughput (output tokens/s)", marks={"tok/s": marks["tokens_per_s"]})
    _bars(fig.add_subplot(grid[2, :]), names,
          {"peak memory": [v.peak_mem_bytes for v in vs],
           "weights": [v.weight_bytes for v in vs]}, "Memory (MiB)", scale=1 / MIB,
          marks={"peak memory": marks["peak_mem_bytes"]})
    return png(fig, dpi)


def _bars(ax, names: list[str], series: dict[str, list], title: str, scale: float = 1.0,
          marks: dict[str, list[bool]] | None = None) -> None:
    """Grouped bars; a missing value (failed variant, baseline vs itself) is labelled n/a;
    ``marks`` (series label -> flag per bar) puts '*' after an unstable figure."""
    width = 0.8 / len(series)
    for k, (label, vals) in enumerate(series.items()):
        xs = [i + (k - (len(series) - 1) / 2) * width for i in range(len(names))]
        ys = [0.0 if missing(y) else y * scale for y in vals]
        flags = (marks or {}).get(label) or [False] * len(vals)
        bars = ax.bar(xs, ys, width, label=label, color=_COLORS[k % len(_COLORS)])
        ax.bar_label(bars, fontsize=6, labels=[NA if missing(y) else _star(
            f"{y * scale:,.0f}" if abs(y * scale) >= 100 else f"{y * scale:.3g}", f)
            for y, f in zip(vals, flags, strict=True)])
    ax.set_title(title, fontsize=9)
    ax.set_xticks(range(len(names)), names, fontsize=7, rotation=15 if len(names) > 3 else 0)
    ax.tick_params(axis="y", labelsize=7)
    ax.margins(y=0.15)
    if len(series) > 1:
        ax.legend(fontsize=6, ncol=len(series), loc="upper center", bbox_to_anchor=(0.5, -0.1))


# ---- the document ------------------------------------------------------------------------
def title_block(pdf: Doc, title: str, report: PilotReport) -> None:
    """Title and the workload / dates / hardware lines on the current page."""
    pdf.set_font("Helvetica", "B", 16)
    pdf.multi_cell(0, 8, title, new_x="LMARGIN", new_y="NEXT", align="L")
    w, hw = report.workload, report.hardware
    pdf.para(f"Workload: {w.name} (file {w.filename}, {w.n_requests} requests, format {w.format})\n"
             f"Run created {report.run.created_at:%Y-%m-%d %H:%M} UTC; report generated "
             f"{report.generated_at:%Y-%m-%d %H:%M} UTC\nHardware: {hw.name} at "
             f"{fmt_price(report.price_per_hour)}/hour (prices as of {hw.price_date})")


def report_title(report: PilotReport) -> str:
    return f"roilab pilot measurements - {report.run.name} (run #{report.run.id})"


def render_pdf(report: PilotReport, samples: pd.DataFrame | None = None, case=None) -> bytes:
    """The pilot's measurements as PDF bytes (engine.reports.business_pdf adds the ROI case).

    ``samples`` is a frame from ``engine.pilot.report.side_by_side`` (it supplies prompts and
    references); without it the appendix shows outputs from ``report.results`` only. ``case``
    (the run's BusinessCase, engine.business.case.build_business_case) is stated up front so
    this document gives the same answer as every other; without it, a pointer to it only.
    """
    title = report_title(report)
    pdf = new_doc(title)
    pdf.add_page()
    title_block(pdf, title, report)
    _business_case_pointer(pdf, report, case)
    pilot_sections(pdf, report)
    appendix(pdf, report, samples)
    return bytes(pdf.output())


def _business_case_pointer(pdf: Doc, report: PilotReport, case) -> None:
    pdf.heading("Business case")
    for text in (case_headline(case) if case is not None else []):
        pdf.para(text, 9.5)
    pdf.para(f"This document is the pilot's measurements. The business case (right-sizing, "
             f"monthly cost, payback) is `roilab report {report.run.id}` or the dashboard's "
             "Business case page.", 9, "I")


def pilot_sections(pdf: Doc, report: PilotReport, prefix: str = "") -> None:
    """Summary, assumptions, charts, per-variant table and technique figures of the pilot,
    starting on the current page; ``prefix`` goes before each section heading."""
    pdf.heading(f"{prefix}Summary")
    for text in summary_paragraphs(report):
        pdf.para(text, 10)
    for text in stability_lines(report):  # unstable figures, a busy machine
        pdf.para(text, 9, "B")
    if any_unstable(report):  # the one legend of the '*' in the charts and tables below
        pdf.para(UNSTABLE_LEGEND, 9, "B")
    pdf.heading(f"{prefix}Assumptions")
    table(pdf, [("Assumption", "Value"), *assumptions(report)], (42, 138))
    pdf.add_page()
    pdf.heading(f"{prefix}Charts")
    pdf.image(io.BytesIO(charts_png(report)), w=pdf.epw)
    pdf.add_page(orientation="L")
    pdf.heading(f"{prefix}Per-variant results")
    table(pdf, _variant_rows(report),
          (28, 31, 14, 13, 18, 15, 15, 17, 16, 17, 17, 17, 27, 27), size=7.5, numeric_from=3)
    for v in [x for x in report.variants if x.status != Status.DONE]:
        pdf.para(f"{v.name}: {v.status} - {v.error or 'no reason'}", 8)
    pdf.para("Ref contains: share of requests whose output contains the log's reference answer. "
             "ROUGE-L and cosine compare each output with the baseline's output for the same "
             "request. $/1k requests is a unit cost: the busy time of the replay, no idle "
             "capacity. Pilot devices: what the variant's engine occupied in the pilot (tensor x "
             "pipeline parallel size), not the count the business case bills; its $ figures "
             "pay for all of them. '-': not measured.", 8, "I")
    _memory_table(pdf, report, prefix)
    _start_up_table(pdf, report, prefix)
    stability_section(pdf, report, prefix)
    _technique_figures(pdf, report)


def memory_rows(report: PilotReport) -> list[tuple[str, ...]]:
    """Per variant: devices, peak device memory, weights and the KV cache its engine
    reserved, each as measured (n/a where the backend did not measure it), and how."""
    rows = [("Variant", "Pilot devices", "Device", "Peak mem (MiB)", "Weights (MiB)",
             "KV cache (tokens)", "KV cache (MiB)", "KV bytes/token", "Device mem (MiB)",
             "How measured")]
    marks = unstable_flags(report)["peak_mem_bytes"]
    for v, unstable in zip(report.variants, marks, strict=True):
        how = "; ".join(filter(None, [v.peak_method and f"peak: {v.peak_method}",
                                      v.kv_method and f"KV: {v.kv_method}"])) or NA
        rows.append(_dash((v.name, str(v.devices), v.device or NA,
                           _star(fmt_cell_mib(v.peak_mem_bytes), unstable),
                           fmt_cell_mib(v.weight_bytes), fmt_count(v.kv_cache_tokens),
                           fmt_cell_mib(v.kv_cache_bytes), fmt_count(v.kv_bytes_per_token),
                           fmt_cell_mib(v.device_memory_bytes), how)))
    return rows


def _memory_table(pdf: Doc, report: PilotReport, prefix: str = "") -> None:
    pdf.heading(f"{prefix}Memory per variant")
    table(pdf, memory_rows(report), (30, 14, 14, 20, 20, 22, 20, 20, 22, 95), size=7.5)


def start_up_rows(report: PilotReport) -> list[tuple[str, ...]]:
    """Per variant: engine start-up (engine.pilot.startup: load plus what the backend compiled
    apart, or whose engine it shared), the load alone and the untimed warm-up, in seconds."""
    rows = [("Variant", "Engine start-up (s)", "Of which load (s)", "Untimed warm-up (s)")]
    for v in report.variants:
        load = NA if v.engine_reused or missing(v.load_s) else f"{v.load_s:.1f}"
        rows.append(_dash((v.name, v.cold_start_text, load,
                           NA if missing(v.warm_up_s) else f"{v.warm_up_s:.1f}")))
    return rows


def _start_up_table(pdf: Doc, report: PilotReport, prefix: str = "") -> None:
    pdf.heading(f"{prefix}Engine start-up per variant")
    table(pdf, start_up_rows(report), (60, 45, 45, 45), size=8, numeric_from=1)
    pdf.para(f"{STARTUP_EXPLAINED} The untimed warm-up runs the variant's own requests until "
             "its speed is steady, before the timed passes; it is not in the unit costs.", 8, "I")


def _technique_figures(pdf: Doc, report: PilotReport) -> None:
    figures = technique_figures(report)
    if figures.empty:
        return
    pdf.heading("What each technique did (read back from the model)")
    rows = [tuple(r) for r in readable_figures(figures).itertuples(index=False)]
    table(pdf, [("Variant", "Technique", "Figure", "Value"), *rows], (40, 45, 70, 100), size=7)


def write_pdf(report: PilotReport, path: str | Path, samples: pd.DataFrame | None = None,
              case=None) -> Path:
    """Render and write the PDF; returns the path written."""
    return write_file(path, render_pdf(report, samples, case))


def _variant_rows(report: PilotReport) -> list[tuple[str, ...]]:
    rows = [("Variant", "Techniques", "Status", "Pilot devices", "tok/s", "p50 (s)", "p95 (s)",
             "Peak mem (MiB)",
             "Weights (MiB)", "Ref contains", "ROUGE-L vs base", "Cosine vs base",
             "$/1k requests (unit)", "$/1M out (unit)")]
    unscored, marks = speed_memory_only(report), unstable_flags(report)
    for i, v in enumerate(report.variants):
        lat = v.latency
        status = f"{v.status} ({SPEED_MEMORY_ONLY})" if v.name in unscored else v.status
        rows.append(_dash((v.name, v.techniques, status, str(v.devices),
                           _star(fmt_cell(v.tokens_per_s), marks["tokens_per_s"][i]),
                           fmt_cell(lat.p50 if lat else None),
                           _star(fmt_cell(lat.p95 if lat else None), marks["latency_p95_s"][i]),
                           _star(fmt_cell_mib(v.peak_mem_bytes), marks["peak_mem_bytes"][i]),
                           fmt_cell_mib(v.weight_bytes), fmt_pct(v.ref_contains),
                           fmt_score(v.base_rouge_l), fmt_score(v.base_cosine),
                           fmt_money(v.cost_per_1k_requests),
                           fmt_money(v.cost_per_1m_output_tokens))))
    return rows


def appendix(pdf: Doc, report: PilotReport, samples: pd.DataFrame | None, n: int = 5) -> None:
    res = report.results
    if res is None or res.empty:
        return
    outputs = {(r.request_index, r.variant): r.output_text for r in res.itertuples()}
    given = samples is not None and not samples.empty and "request" in samples
    rows = samples.head(n).to_dict("records") if given else \
        [{"request": i} for i in sorted(res.request_index.unique())[:n]]
    pdf.add_page(orientation="P")
    pdf.heading("Appendix: sample requests")
    if not given:
        pdf.para("Prompts are not part of the stored results; pass samples from side_by_side "
                 "to include them.", 8, "I")
    for row in rows:
        line = f" (line {row['line']})" if not missing(row.get("line")) else ""
        pdf.para(f"Request {int(row['request']) + 1}{line}", 9.5, "B")  # 1-based, as on the page
        for label, key, limit in (("Prompt", "prompt", 400), ("Reference", "reference", 200)):
            if not missing(row.get(key)):
                pdf.para(f"{label}: {_excerpt(row[key], limit)}", 8.5)
        for v in report.variants:
            text = outputs.get((row["request"], v.name))
            shown = f"({v.status}, no output)" if missing(text) else _excerpt(text, 500)
            pdf.para(f"{v.name}: {shown or '(empty)'}", 8.5)
        pdf.ln(1)


def _excerpt(text: object, limit: int) -> str:
    s = " ".join(str(text).split())
    return s if len(s) <= limit else s[:limit - 3] + "..."
