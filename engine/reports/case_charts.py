"""The business case's four charts for the PDF (matplotlib), and the sentence that stands in
for a chart that would show nothing (``chart_notes``, which the dashboard uses too).

Cost versus accuracy with the Pareto front, before/after monthly cost (with the devices each
bill pays for; no "after" bar when nothing moves), the payback curve and the tornado.
"""
from __future__ import annotations

import textwrap

from matplotlib.figure import Figure

from engine.business.flags import baseline_label
from engine.business.types import BusinessCase
from engine.economics.decision import metric_label
from engine.reports.case_words import TORNADO_LABELS, fmt_months, on_devices, star
from engine.reports.pdf import fmt_money, png, to_latin1

BEFORE, AFTER, GOOD, BAD = "#8C8C8C", "#4C72B0", "#55A868", "#C44E52"


def chart_notes(case: BusinessCase) -> dict[str, str]:
    """Per chart ("scatter", "before_after", "payback", "tornado"): the sentence to show
    instead of it, where drawn it would be empty or flat; charts not named are drawn."""
    notes, rec = {}, case.recommended
    if not any(r.monthly_cost is not None and r.accuracy is not None for r in case.rows):
        notes["scatter"] = ("No cost-versus-accuracy points: no variant has both a monthly cost "
                            "and an accuracy figure (see each row's reason).")
    if case.baseline_monthly_cost is None:
        notes["before_after"] = ("No before/after: the baseline has no monthly cost "
                                 f"({case.rows[0].reason or 'no device can serve it'}).")
    elif not case.moves:  # one bar would only restate the decision
        base = case.rows[0]
        notes["before_after"] = (f"No before/after chart: nothing moves, so "
                                 f"{baseline_label(base)}'s "
                                 f"{fmt_money(case.baseline_monthly_cost)} per month on "
                                 f"{on_devices(base)} stays the bill.")
    if not case.moves:
        why = ("no variant passes the quality gate and the p95 target" if rec is None else
               f"the case keeps {baseline_label(case.rows[0])}")
        notes["payback"] = (f"No payback curve: {why}, so nothing is spent and nothing saved "
                            "(the net stays $0 every month).")
    if not case.tornado or all(r.swing == 0 for r in case.tornado):
        notes["tornado"] = ("No sensitivity to show: none of the inputs varied (hardware $/hour "
                            "and requests per day +-20%, utilisation +-0.2, accuracy threshold "
                            "+-0.05) changes the 36-month net"
                            + (", which stays $0 because nothing moves." if not case.moves
                               else "."))
    return notes


def before_after_values(case: BusinessCase) -> list[tuple[str, float, str]]:
    """(label, USD per month, bar text) of the before/after bars: "after" only on a move;
    a projected bill says so, an unstable one carries ``*``."""
    base, rec = case.rows[0], case.recommended
    bars = [(f"before: {base.name}", case.baseline_monthly_cost or 0.0,
             f"{star(fmt_money(case.baseline_monthly_cost), base.cost_unstable)}\n"
             f"{on_devices(base)}")]
    if case.moves and rec is not None:
        bars.append((f"after: {rec.name}", case.recommended_monthly_cost or 0.0,
                     f"{star(fmt_money(case.recommended_monthly_cost), rec.cost_unstable)}\n"
                     f"{on_devices(rec)}"))
    return bars


def point_label(row) -> str:
    """A chart marker's label: the name, ``*`` when its bill is unstable, ``(projected)``."""
    return star(row.name, row.cost_unstable) + (" (projected)" if row.projected else "")


def before_after_title(case: BusinessCase) -> str:
    if case.moves:
        return f"Monthly cost (saving {fmt_money(case.monthly_savings)})"
    return "Monthly cost: no 'after' (" + ("keep the baseline)" if case.recommended else
                                            "no variant passes)")


def charts_png(case: BusinessCase, dpi: int = 150) -> bytes:
    """Cost vs accuracy (Pareto), before/after, payback curve, tornado: as on the dashboard."""
    fig = Figure(figsize=(7.4, 8.4), dpi=dpi, layout="constrained")
    grid = fig.add_gridspec(2, 2)
    draw = {"scatter": _scatter, "before_after": _before_after, "payback": _payback,
            "tornado": _tornado}
    notes = chart_notes(case)
    for (name, fn), cell in zip(draw.items(), (grid[0, 0], grid[0, 1], grid[1, 0], grid[1, 1]),
                                strict=True):
        ax = fig.add_subplot(cell)
        if name in notes:
            _note(ax, notes[name])
        else:
            fn(ax, case)
    return png(fig, dpi)


def before_after_png(case: BusinessCase, dpi: int = 150) -> bytes:
    """The before/after chart alone, for the PDF's first page."""
    fig = Figure(figsize=(6.0, 2.6), dpi=dpi, layout="constrained")
    ax = fig.add_subplot()
    note = chart_notes(case).get("before_after")
    _note(ax, note) if note else _before_after(ax, case, horizontal=True)
    return png(fig, dpi)


def _note(ax, text: str) -> None:
    ax.text(0.5, 0.5, to_latin1(textwrap.fill(text, 42)), ha="center", va="center", fontsize=7,
            transform=ax.transAxes)
    ax.set_axis_off()


def _scatter(ax, case: BusinessCase) -> None:
    pts = {r.name: r for r in case.rows if r.monthly_cost is not None and r.accuracy is not None}
    for r in pts.values():
        color = GOOD if r.passes_gate else BAD
        ax.scatter([r.monthly_cost], [r.accuracy], s=90 if r.recommended else 40,
                   marker="*" if r.recommended else "o", edgecolors=color,
                   facecolors="none" if r.projected else color, zorder=3)
        ax.annotate(to_latin1(point_label(r)),
                    (r.monthly_cost, r.accuracy), fontsize=6, xytext=(4, 4),
                    textcoords="offset points")
    front = [pts[n] for n in case.pareto if n in pts]
    if len(front) > 1:  # a front of one point draws no line: no legend entry for it
        ax.plot([r.monthly_cost for r in front], [r.accuracy for r in front], "--", color=AFTER,
                lw=1, label="Pareto front")
    ax.axhline(case.assumptions.accuracy_threshold, color=BAD, lw=0.8, ls=":",
               label=f"gate {case.assumptions.accuracy_threshold:g}")
    ax.set_title("Monthly cost vs accuracy", fontsize=9)
    ax.set_xlabel("USD / month (hollow = projected)", fontsize=7)
    ax.set_ylabel(to_latin1(metric_label(case.assumptions.accuracy_metric)), fontsize=7)
    ax.tick_params(labelsize=6)
    ax.margins(x=0.25, y=0.15)
    ax.legend(fontsize=6, loc="best")


def _before_after(ax, case: BusinessCase, horizontal: bool = False) -> None:
    bars = before_after_values(case)
    labels = [to_latin1(label).replace(": ", "\n", 1) for label, _, _ in bars]
    values = [v for _, v, _ in bars]
    texts = [to_latin1(t) for _, _, t in bars]
    colors = [BEFORE, AFTER][:len(bars)]
    if horizontal:  # the devices go under the bar's name (the layout makes room for tick
        # labels), only the bill beside the bar: a long "... (projected)" never runs past
        # the frame
        money = [t.split("\n", 1)[0] for t in texts]
        ticks = [f"{to_latin1(label)}\n" + "\n".join(textwrap.wrap(t.split("\n", 1)[-1], 34))
                 for (label, _, _), t in zip(bars, texts, strict=True)]
        drawn = ax.barh(ticks[::-1], values[::-1], color=colors[::-1], height=0.55)
        ax.bar_label(drawn, labels=money[::-1], fontsize=7, padding=3)
        ax.set_xlabel("USD / month", fontsize=7)
        ax.set_xlim(0, max(values + [1.0]) * 1.3)
    else:
        drawn = ax.bar(labels, values, color=colors, width=0.55)
        ax.bar_label(drawn, labels=texts, fontsize=6)
        ax.set_ylabel("USD / month", fontsize=7)
        ax.margins(y=0.25)
    ax.set_title(before_after_title(case), fontsize=9)
    ax.tick_params(labelsize=7)


def _payback(ax, case: BusinessCase) -> None:
    months, net = zip(*case.roi.curve, strict=True)
    ax.plot(months, net, color=AFTER, lw=1.5)
    ax.fill_between(months, net, 0, where=[n >= 0 for n in net], color=GOOD, alpha=0.2)
    ax.fill_between(months, net, 0, where=[n < 0 for n in net], color=BAD, alpha=0.2)
    ax.axhline(0, color="black", lw=0.6)
    pb = case.roi.payback_months
    if pb is not None and pb <= months[-1]:
        ax.axvline(pb, color=GOOD, ls="--", lw=0.8)
        ax.annotate(f"payback {fmt_months(pb)}", (pb, 0), fontsize=6, xytext=(4, -12),
                    textcoords="offset points")
    ax.set_title("Payback: cumulative net (USD)", fontsize=9)
    ax.set_xlabel("months", fontsize=7)
    ax.tick_params(labelsize=6)


def _tornado(ax, case: BusinessCase) -> None:
    rows = list(reversed(case.tornado))  # largest swing on top
    ys = range(len(rows))
    base = rows[0].base_value
    for y, r in zip(ys, rows, strict=True):
        ax.barh(y - 0.15, r.low_value - base, left=base, color=BAD, height=0.3)
        ax.barh(y + 0.15, r.high_value - base, left=base, color=GOOD, height=0.3)
        if r.swing == 0:
            ax.annotate("no change", (base, y), fontsize=6, xytext=(4, -2),
                        textcoords="offset points")
    ax.axvline(base, color="black", lw=0.8)
    ax.set_yticks(list(ys), [TORNADO_LABELS.get(r.factor, r.factor) for r in rows], fontsize=6)
    ax.set_title("36-month net: low (red) / high (green)", fontsize=9)
    ax.set_xlabel("USD", fontsize=7)
    ax.tick_params(axis="x", labelsize=6)
