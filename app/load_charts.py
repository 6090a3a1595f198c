"""Plotly figures of a load run's per-level frame (``engine.load.metrics.levels_frame``).

Pure functions of the frame, one line per variant against the load level: latency (TTFT,
ITL, E2E at p50 and p99, one panel each, since they differ by orders of magnitude) and
throughput (output tokens/s; requests/s beside goodput, the requests/s that met the SLO).
"""
from __future__ import annotations

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go

_LAYOUT = dict(margin=dict(l=10, r=10, t=60, b=10), legend_title_text="", height=360)
LEVEL_TITLE = {"concurrency": "requests in flight", "poisson": "arrival rate (requests/s)",
               "trace": "speed-up of the log's timing"}


def _long(levels: pd.DataFrame, columns: dict[str, tuple[str, str]]) -> pd.DataFrame:
    """variant, level, panel, series, value from {column: (panel, series)}."""
    rows = [{"variant": r.variant, "level": r.level, "panel": panel, "series": series,
             "value": getattr(r, col)}
            for r in levels.itertuples() for col, (panel, series) in columns.items()]
    return pd.DataFrame(rows, columns=["variant", "level", "panel", "series", "value"])


def latency_vs_load(levels: pd.DataFrame, schedule: str) -> go.Figure:
    cols = {f"{m}_{p}_s": (m.upper(), p) for m in ("ttft", "itl", "e2e") for p in ("p50", "p99")}
    fig = px.line(_long(levels, cols), x="level", y="value", color="variant", line_dash="series",
                  facet_col="panel", markers=True, title="Latency vs load (seconds)")
    fig.update_yaxes(matches=None, showticklabels=True, title_text="")
    fig.update_xaxes(title_text=LEVEL_TITLE.get(schedule, "load level"))
    fig.for_each_annotation(lambda a: a.update(text=a.text.split("=")[-1]))
    fig.update_layout(**_LAYOUT)
    return fig


def throughput_vs_load(levels: pd.DataFrame, schedule: str) -> go.Figure:
    cols = {"output_tokens_per_s": ("output tokens/s", "tokens/s"),
            "requests_per_s": ("requests/s", "all requests"),
            "goodput_rps": ("requests/s", "goodput (in SLO)")}
    fig = px.line(_long(levels, cols), x="level", y="value", color="variant",
                  line_dash="series", facet_col="panel", markers=True,
                  title="Throughput and goodput vs load")
    fig.update_yaxes(matches=None, showticklabels=True, title_text="", rangemode="tozero")
    fig.update_xaxes(title_text=LEVEL_TITLE.get(schedule, "load level"))
    fig.for_each_annotation(lambda a: a.update(text=a.text.split("=")[-1]))
    fig.update_layout(**_LAYOUT)
    return fig
