"""Plotly figures of a BusinessCase: the same four charts as the PDF (engine.reports.case_charts).

Pure functions of the case: no Streamlit and no arithmetic beyond what a chart needs to
place a bar (a tornado bar runs from the base value to the low or high one). A chart that
would be empty is not drawn: the page shows ``case_charts.chart_notes``' sentence instead.
"""
from __future__ import annotations

import plotly.graph_objects as go

from engine.business.case import BusinessCase
from engine.economics.decision import metric_label
from engine.reports.case_charts import (
    AFTER,
    BAD,
    BEFORE,
    GOOD,
    before_after_title,
    before_after_values,
    point_label,
)
from engine.reports.case_words import TORNADO_LABELS, fmt_months

_LAYOUT = dict(margin=dict(l=10, r=10, t=50, b=10), height=360, legend_title_text="")


def cost_accuracy(case: BusinessCase) -> go.Figure:
    """Monthly cost vs the gate metric; hollow = projected, star = recommended; the Pareto
    front as a dashed line and the quality gate as a dotted one."""
    a = case.assumptions
    label = metric_label(a.accuracy_metric)
    pts = {r.name: r for r in case.rows if r.monthly_cost is not None and r.accuracy is not None}
    fig = go.Figure()
    for r in pts.values():
        color = GOOD if r.passes_gate else BAD
        fig.add_trace(go.Scatter(
            x=[r.monthly_cost], y=[r.accuracy], mode="markers+text", name=r.name,
            text=[point_label(r)], textposition="top center", showlegend=False, cliponaxis=False,
            marker=dict(size=18 if r.recommended else 12, color=color,
                        symbol=("star" if r.recommended else "circle")
                        + ("-open" if r.projected else ""), line=dict(width=2, color=color)),
            hovertemplate=f"{r.name}<br>%{{x:$,.2f}}/month<br>{label} %{{y:.3f}}"
                          f"<br>{'projected: ' + r.method if r.projected else 'measured'}"
                          "<extra></extra>"))
    front = [pts[n] for n in case.pareto if n in pts]
    if len(front) > 1:  # one point draws no line: no "Pareto front" legend entry for it
        fig.add_trace(go.Scatter(x=[r.monthly_cost for r in front], y=[r.accuracy for r in front],
                                 mode="lines", name="Pareto front",
                                 line=dict(dash="dash", color=AFTER)))
    fig.add_hline(y=a.accuracy_threshold, line_dash="dot", line_color=BAD,
                  annotation_text=f"gate {a.accuracy_threshold:g}")
    fig.update_layout(title="Monthly cost vs accuracy (hollow = projected)",
                      xaxis_title="USD / month", yaxis_title=label, **_LAYOUT)
    if pts:  # room for the labels beside the outermost points
        costs = [r.monthly_cost for r in pts.values()]
        pad = max(max(costs) - min(costs), max(costs) * 0.1) * 0.25
        fig.update_xaxes(range=[min(costs) - pad, max(costs) + pad])
    fig.update_layout(legend=dict(orientation="h", y=-0.25))
    return fig


def before_after(case: BusinessCase, compact: bool = False) -> go.Figure:
    """Before and (only on a move) after, each bar labelled with its bill and devices
    (projected and unstable bills say so). ``compact``: horizontal and short, for the top
    of a page."""
    bars = before_after_values(case)
    values = [v for _, v, _ in bars]
    labels = [label for label, _, _ in bars]
    texts = [t.replace("\n", " on " if compact else "<br>") for _, _, t in bars]
    colors = [BEFORE, AFTER][:len(bars)]
    if compact:
        fig = go.Figure(go.Bar(y=labels[::-1], x=values[::-1], orientation="h",
                               marker_color=colors[::-1], text=texts[::-1],
                               textposition="outside", cliponaxis=False))
        fig.update_layout(margin=dict(l=10, r=10, t=10, b=10), height=150, showlegend=False)
        fig.update_xaxes(range=[0, max(values + [1.0]) * 2.2], title="USD / month")
        return fig
    fig = go.Figure(go.Bar(x=labels, y=values, marker_color=colors, text=texts,
                           textposition="outside"))
    fig.update_layout(title=before_after_title(case), yaxis_title="USD / month", **_LAYOUT)
    fig.update_yaxes(range=[0, max(values + [1.0]) * 1.35])
    return fig


def latency(case: BusinessCase) -> go.Figure:
    """Each variant's p95 latency on its target hardware against the p95 target (a dashed
    line); projected bars hollow and labelled, unstable ones marked ``*``."""
    rows = [r for r in case.rows if r.provisioning is not None]
    target = case.assumptions.p95_target_s
    fig = go.Figure(go.Bar(
        x=[point_label(r) for r in rows], y=[r.provisioning.latency_p95_s for r in rows],
        marker=dict(color=["white" if r.projected else (GOOD if r.meets_slo else BAD)
                           for r in rows],
                    line=dict(width=2, color=[GOOD if r.meets_slo else BAD for r in rows])),
        text=[f"{r.provisioning.latency_p95_s:,.2f} s" + ("*" if r.latency_unstable else "")
              for r in rows], textposition="outside", cliponaxis=False))
    fig.add_hline(y=target, line_dash="dash", line_color=BAD,
                  annotation_text=f"p95 target {target:g} s")
    fig.update_layout(title="p95 latency on the target hardware (s)", yaxis_title="seconds",
                      showlegend=False, **_LAYOUT)
    top = max([r.provisioning.latency_p95_s for r in rows] + [target])
    fig.update_yaxes(range=[0, top * 1.3])
    return fig


def payback(case: BusinessCase) -> go.Figure:
    months, net = zip(*case.roi.curve, strict=True)
    fig = go.Figure(go.Scatter(x=months, y=net, mode="lines", line=dict(color=AFTER),
                               name="cumulative net"))
    fig.add_hline(y=0, line_color="black", line_width=1)
    pb = case.roi.payback_months
    if pb is not None and pb <= months[-1]:
        fig.add_vline(x=pb, line_dash="dash", line_color=GOOD,
                      annotation_text=f"payback {fmt_months(pb)}")
    fig.update_layout(title="Payback: cumulative net over 36 months", xaxis_title="months",
                      yaxis_title="USD", showlegend=False, **_LAYOUT)
    return fig


def tornado(case: BusinessCase) -> go.Figure:
    rows = list(reversed(case.tornado))  # largest swing on top
    fig = go.Figure()
    if rows:
        base = rows[0].base_value
        labels = [TORNADO_LABELS.get(r.factor, r.factor) for r in rows]
        for name, attr, color in (("low input", "low_value", BAD), ("high input", "high_value", GOOD)):
            fig.add_trace(go.Bar(y=labels, x=[getattr(r, attr) - base for r in rows], base=base,
                                 orientation="h", name=name, marker_color=color,
                                 customdata=[getattr(r, attr) for r in rows],
                                 hovertemplate="%{y}: %{customdata:$,.0f}<extra></extra>"))
        fig.add_vline(x=base, line_color="black", line_width=1)
    fig.update_layout(title="Sensitivity: 36-month net", xaxis_title="USD", barmode="group",
                      **_LAYOUT)
    return fig
