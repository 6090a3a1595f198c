"""Plotly figures of a PilotReport's per-variant frame (``report.frame()``).

Pure functions of the frame: no Streamlit, no arithmetic beyond unit conversion for the
axis (bytes to MiB, as `roilab show` prints them). Speed and memory are separate figures on
purpose: a quantized model can be smaller yet slower on CPU, and one combined "efficiency"
bar would hide that. ``marks`` (column -> one flag per variant) puts a '*' after the value of
a figure the protocol found unstable; the page says what '*' means, once. ``compares`` says
whether a chart has anything to compare (two variants with a figure); where not, the page
says so in a sentence instead of drawing one bar.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go

from engine.core.domain import Status
from engine.reports.pdf import MIB, fmt_price

Marks = Mapping[str, Sequence[bool]]
_LAYOUT = dict(margin=dict(l=10, r=10, t=60, b=10), legend_title_text="", height=340)
ACCURACY = {"ref_contains": "reference contained", "ref_f1": "token F1 vs reference",
            "base_rouge_l": "ROUGE-L vs baseline", "base_cosine": "cosine vs baseline"}


def compares(frame: pd.DataFrame, columns: Sequence[str], skip_baseline: bool = False) -> bool:
    """Whether at least two variants (or, with ``skip_baseline``, one beside the baseline,
    whose agreement with itself says nothing) have a figure in ``columns``."""
    values = frame[list(columns)].apply(pd.to_numeric, errors="coerce")
    has = values.notna().any(axis=1)
    return bool(has.iloc[1:].any()) if skip_baseline else int(has.sum()) >= 2


def _text(value: float, fmt: str, mark: bool) -> str:
    return "" if pd.isna(value) else format(value, fmt) + ("*" if mark else "")


def _bars(frame: pd.DataFrame, columns: dict[str, str], title: str, y_title: str,
          fmt: str = ".3g", y_range: tuple[float, float] | None = None,
          marks: Marks | None = None) -> go.Figure:
    """Grouped bars: one group per variant, one bar per column (renamed by ``columns``)."""
    values = frame[list(columns)].apply(pd.to_numeric, errors="coerce")  # None -> NaN
    long = values.assign(name=frame["name"]).rename(columns=columns).melt(
        id_vars="name", var_name="measure", value_name="value")
    flags = [bool(f) for col in columns
             for f in ((marks or {}).get(col) or [False] * len(frame))]
    long["label"] = [_text(v, fmt, f) for v, f in zip(long["value"], flags, strict=True)]
    fig = px.bar(long, x="name", y="value", color="measure", barmode="group", text="label",
                 title=title)
    fig.update_layout(xaxis_title="", yaxis_title=y_title, showlegend=len(columns) > 1,
                      **_LAYOUT)
    if y_range:
        fig.update_yaxes(range=list(y_range))
    for name in frame.loc[frame["status"] == Status.FAILED, "name"]:  # say why a group is empty
        fig.add_annotation(x=name, y=0, yref="paper", yanchor="bottom", showarrow=False,
                           text="failed", font=dict(color="#b91c1c"))
    return fig


def _subtitle(title: str, line: str) -> str:
    """A short title over a smaller second line: long hardware names wrap, never clip."""
    return f"{title}<br><sup>{line}</sup>"


def cost_chart(frame: pd.DataFrame, price_per_hour: float, hardware: str) -> go.Figure:
    """Unit cost per variant (busy time only); ``hardware`` is the readable name."""
    return _bars(frame, {"cost_per_1k_requests": "$ per 1k requests"},
                 _subtitle("Unit cost per 1,000 requests",
                           f"{fmt_price(price_per_hour)}/h per device, {hardware}"),
                 "USD per 1,000 requests", fmt=".4f")


def latency_chart(frame: pd.DataFrame, target_s: float | None = None,
                  marks: Marks | None = None) -> go.Figure:
    """p50 and p95 per variant; ``target_s``: the business case's p95 target, drawn as a
    dashed line (the axis reaches it, so a variant over it is seen to be)."""
    fig = _bars(frame, {"latency_p50_s": "p50", "latency_p95_s": "p95"},
                _subtitle("Latency per request", "end to end, incl. prompt compression"),
                "seconds", marks=marks)
    if target_s:
        fig.add_hline(y=target_s, line_dash="dash", line_color="#b91c1c",
                      annotation_text=f"p95 target {target_s:g} s",
                      annotation_position="top left", annotation_font_color="#b91c1c")
        top = pd.to_numeric(frame["latency_p95_s"], errors="coerce").max()
        fig.update_yaxes(range=[0, 1.15 * max(target_s, 0 if pd.isna(top) else top)])
    return fig


def accuracy_chart(frame: pd.DataFrame) -> go.Figure:
    return _bars(frame, ACCURACY,
                 _subtitle("Accuracy", "1.0 = perfect; the baseline agrees with itself"),
                 "score", fmt=".2f", y_range=(0, 1.05))


def speed_chart(frame: pd.DataFrame, marks: Marks | None = None) -> go.Figure:
    return _bars(frame, {"tokens_per_s": "output tokens/s"},
                 _subtitle("Generation speed", "higher is faster"), "tokens / s", fmt=".1f",
                 marks=marks)


def memory_chart(frame: pd.DataFrame, marks: Marks | None = None) -> go.Figure:
    mib = pd.DataFrame({"name": frame["name"], "status": frame["status"],
                        "weights": pd.to_numeric(frame["weight_bytes"], errors="coerce") / MIB,
                        "peak": pd.to_numeric(frame["peak_mem_bytes"], errors="coerce") / MIB})
    return _bars(mib, {"weights": "weights", "peak": "peak while serving"},
                 _subtitle("Memory", "lower is smaller"), "MiB", fmt=",.0f",
                 marks={"peak": (marks or {}).get("peak_mem_bytes") or [False] * len(frame)})


def length_histogram(hist: dict, unit: str) -> go.Figure:
    """Prompt lengths from a stored fixed-bin histogram (engine.ingest.stats.histogram):
    one bar per bin, spanning its values, so a 100,000-request workload charts from 30
    numbers."""
    start, width, counts = hist["start"], hist["width"], hist["counts"]
    lows = [start + i * width for i in range(len(counts))]
    labels = [str(lo) if width == 1 else f"{lo}-{lo + width - 1}" for lo in lows]
    fig = go.Figure(go.Bar(x=[lo + width / 2 for lo in lows], y=counts, width=width,
                           customdata=labels, marker_line_width=0,
                           hovertemplate=f"%{{customdata}} {unit}: %{{y}} requests<extra></extra>"))
    fig.update_layout(title=f"Prompt length ({unit})", height=300, xaxis_title=unit,
                      yaxis_title="requests", margin=dict(l=10, r=10, t=50, b=10), bargap=0)
    return fig
