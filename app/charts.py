"""Plotly figures of a PilotReport's per-variant frame (``report.frame()``).

Pure functions of the frame: no Streamlit, no arithmetic beyond unit conversion for the
axis (bytes to MB). Speed and memory are separate figures on purpose: a quantized model
can be smaller yet slower on CPU, and one combined "efficiency" bar would hide that.
"""
from __future__ import annotations

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go

from engine.core.domain import Status

MB = 1e6  # as in the PDF report: MB = 10^6 bytes
_LAYOUT = dict(margin=dict(l=10, r=10, t=50, b=10), legend_title_text="", height=340)


def _bars(frame: pd.DataFrame, columns: dict[str, str], title: str, y_title: str,
          fmt: str = ".3g", y_range: tuple[float, float] | None = None) -> go.Figure:
    """Grouped bars: one group per variant, one bar per column (renamed by ``columns``)."""
    values = frame[list(columns)].apply(pd.to_numeric, errors="coerce")  # None -> NaN
    long = values.assign(name=frame["name"]).rename(columns=columns).melt(
        id_vars="name", var_name="measure", value_name="value")
    fig = px.bar(long, x="name", y="value", color="measure", barmode="group",
                 text_auto=fmt, title=title)
    fig.update_layout(xaxis_title="", yaxis_title=y_title, showlegend=len(columns) > 1,
                      **_LAYOUT)
    if y_range:
        fig.update_yaxes(range=list(y_range))
    for name in frame.loc[frame["status"] == Status.FAILED, "name"]:  # say why a group is empty
        fig.add_annotation(x=name, y=0, yref="paper", yanchor="bottom", showarrow=False,
                           text="failed", font=dict(color="#b91c1c"))
    return fig


def cost_chart(frame: pd.DataFrame, price_per_hour: float, hardware: str) -> go.Figure:
    """Unit cost per variant (busy time only); ``hardware`` is the readable name."""
    return _bars(frame, {"cost_per_1k_requests": "$ per 1k requests"},
                 f"Unit cost per 1,000 requests at ${price_per_hour:g}/h per device on {hardware}",
                 "USD", fmt=".4f")


def latency_chart(frame: pd.DataFrame) -> go.Figure:
    return _bars(frame, {"latency_p50_s": "p50", "latency_p95_s": "p95"},
                 "Latency per request (end to end, incl. prompt compression)", "seconds")


def accuracy_chart(frame: pd.DataFrame) -> go.Figure:
    columns = {"ref_contains": "reference contained", "ref_f1": "token F1 vs reference",
               "base_rouge_l": "ROUGE-L vs baseline", "base_cosine": "cosine vs baseline"}
    return _bars(frame, columns, "Accuracy (1.0 = perfect; baseline agrees with itself)",
                 "score", fmt=".2f", y_range=(0, 1.05))


def speed_chart(frame: pd.DataFrame) -> go.Figure:
    return _bars(frame, {"tokens_per_s": "output tokens/s"},
                 "Generation speed (higher is faster)", "tokens / s", fmt=".1f")


def memory_chart(frame: pd.DataFrame) -> go.Figure:
    mb = pd.DataFrame({"name": frame["name"], "status": frame["status"],
                       "weights": pd.to_numeric(frame["weight_bytes"], errors="coerce") / MB,
                       "peak": pd.to_numeric(frame["peak_mem_bytes"], errors="coerce") / MB})
    return _bars(mb, {"weights": "weights", "peak": "peak while serving"},
                 "Memory (lower is smaller)", "MB", fmt=".0f")


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
