"""Small drawing helpers shared by pages: safe messages, safe tables and number formats.

Streamlit renders alert text as markdown, and messages can quote user content (a file
name, a field from the log), so messages are escaped before they are shown.

Tables a person reads go through ``readable`` (labels instead of column keys, numbers as text
with thousands separators, '-' for a missing figure, '*' after an unstable one); the CSV
download of the same table through ``csv_frame`` (the same labels, the same rounding, numbers
kept numeric) and ``download_csv`` (a file name that names the run).
"""
from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import streamlit as st

from engine.core.inert import spreadsheet_safe_frame
from engine.reports.pdf import MIB, fmt_money, fmt_price, price_age_note

NA = "-"  # a figure that was not measured (never 'None', 'nan' or 'n/a' in a cell)
UNSTABLE_MARK = "*"
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$:])")


def escape_md(text: str) -> str:
    """Backslash-escape markdown, HTML and Streamlit directive characters."""
    return _MD_SPECIAL.sub(r"\\\1", text)


def show_error(exc: Exception) -> None:
    """Show a RoilabError's message (it says how to fix the problem) as literal text."""
    st.error(escape_md(str(exc)), icon=":material/error:")


def dataframe(data: Any, **kwargs: Any) -> Any:
    """``st.dataframe`` for every table a page shows. Its toolbar's "Download as CSV" writes
    cells raw, so text that a spreadsheet would run as a formula (``=HYPERLINK(...)`` in a
    prompt, an output or a name) gets a leading ``'`` first (engine.core.inert); the lone '-'
    of a missing figure runs nothing and stays as it is."""
    frame = data if isinstance(data, pd.DataFrame) else pd.DataFrame(data)
    safe = spreadsheet_safe_frame(frame)
    lone = frame.apply(lambda col: col.map(lambda x: isinstance(x, str) and x == NA))
    if lone.to_numpy().any():
        safe = safe.mask(lone.set_axis(safe.columns, axis=1), NA)
    return st.dataframe(safe, **kwargs)


def table(frame: pd.DataFrame) -> Any:
    """``st.table`` for a short table of sentences, which a grid would cut off at the page's
    width. It renders every cell (and the index) as markdown, so each text cell is escaped
    first: a variant named ``[x](http://...)`` shows as typed, and the lone '-' of a missing
    figure stays a dash instead of a list bullet. It has no CSV download."""
    def literal(x: Any) -> Any:
        return escape_md(x) if isinstance(x, str) else x

    shown = frame.map(literal)
    shown.index = shown.index.map(literal)
    return st.table(shown)


def missing(x: Any) -> bool:
    """None, NaN or the engine's 'n/a': a figure that was not measured."""
    return x is None or (isinstance(x, float) and math.isnan(x)) or x == "n/a" or x is pd.NA


def money(value: float | None) -> str:
    return NA if missing(value) else f"${value:,.2f}"


def pct(value: float | None) -> str:
    return NA if missing(value) else f"{value:.0%}"


def price(value: float | None) -> str:
    """$/hour as stored: ``$0.08925/h``."""
    return NA if missing(value) else f"{fmt_price(value)}/h"


def count(value: float | None) -> str:
    return NA if missing(value) else f"{value:,.0f}"


def price_dates(dates: Sequence[str]) -> tuple[str, str | None]:
    """("prices as of 2025-01" or "... 2025-01 to 2025-10", the age warning or None) for
    the catalog dates the prices shown come from; the warning is for the oldest."""
    known = sorted({d for d in dates if d})
    if not known:
        return "", None
    span = known[0] if len(known) == 1 else f"{known[0]} to {known[-1]}"
    return f"prices as of {span}", price_age_note(known[0])


# ---- tables and their CSV --------------------------------------------------------------
@dataclass(frozen=True)
class Col:
    """How one column reads: its label and kind. Kinds: text, int, f1, f2, f3, money
    ($, 4 significant digits below $1), mib (bytes shown in MiB: put MiB in the label), pct
    (a fraction shown as 12.5%; the CSV holds 12.5: put % in the label), yesno (1/0, True/
    False), price ($/hour as stored: $0.08925), g (a number as stored, thousands separated)."""

    label: str
    kind: str = "text"


def _decimals(kind: str) -> int | None:
    return {"int": 0, "f1": 1, "f2": 2, "f3": 3, "f4": 4, "mib": 1}.get(kind)


def _cell(x: Any, kind: str) -> str:
    if missing(x):
        return NA
    if kind == "pct":
        return f"{float(x) * 100:,.1f}%"
    if kind == "yesno":
        return "yes" if float(x) else "no"
    if kind == "money":
        return fmt_money(float(x))
    if kind == "price":
        return fmt_price(float(x))
    if kind == "g":
        return f"{float(x):,g}"
    digits = _decimals(kind)
    if digits is None or isinstance(x, str):
        return str(x)
    return f"{float(x) / (MIB if kind == 'mib' else 1):,.{digits}f}"


def _rounded(x: Any, kind: str) -> Any:
    """The CSV cell: the number as the table shows it, without its $ and separators (195.46,
    never 195.45749999999998), written as text so no float repr comes back; None if missing."""
    if missing(x):
        return None
    if isinstance(x, str) or kind == "text":
        return x
    x = float(x)
    if kind == "yesno":
        return "yes" if x else "no"
    if kind in ("money", "price"):
        return (fmt_money(x) if kind == "money" else fmt_price(x)).replace("$", "").replace(",", "")
    if kind == "pct":
        return f"{x * 100:.1f}"
    digits = _decimals(kind)
    if digits is None:
        return f"{x:g}"
    return f"{x / (MIB if kind == 'mib' else 1):.{digits}f}"


def readable(frame: pd.DataFrame, columns: Mapping[str, Col],
             marks: Mapping[str, Sequence[bool]] | None = None) -> pd.DataFrame:
    """``frame``'s ``columns`` (in that order) as text under their labels; ``marks`` puts
    UNSTABLE_MARK after the cells flagged (per column, one flag per row)."""
    out = {}
    for key, col in columns.items():
        cells = [_cell(x, col.kind) for x in frame[key]]
        flags = (marks or {}).get(key)
        if flags is not None:
            cells = [c + UNSTABLE_MARK if f and c != NA else c for c, f in zip(cells, flags,
                                                                               strict=True)]
        out[col.label] = cells
    return pd.DataFrame(out, index=range(len(frame)))


def csv_frame(frame: pd.DataFrame, columns: Mapping[str, Col]) -> pd.DataFrame:
    """The same table for a spreadsheet: the same labels, numbers rounded as shown, empty
    cells where a figure is missing."""
    return pd.DataFrame({col.label: pd.Series([_rounded(x, col.kind) for x in frame[key]],
                                              dtype=object)  # 1700000 stays 1700000, not .0
                         for key, col in columns.items()}, index=range(len(frame)))


def csv_bytes(frame: pd.DataFrame) -> bytes:
    """A CSV a spreadsheet opens without running any cell (UTF-8 with BOM, for Excel)."""
    return spreadsheet_safe_frame(frame).to_csv(index=False).encode("utf-8-sig")


def file_name(run_id: int, what: str, ext: str = "csv") -> str:
    """``roilab-run-12-per-request.csv``: a download named after its run and its table."""
    slug = re.sub(r"[^a-z0-9]+", "-", what.lower()).strip("-") or "table"
    return f"roilab-run-{run_id}-{slug[:60]}.{ext}"


def download_csv(frame: pd.DataFrame, name: str, label: str, key: str) -> None:
    st.download_button(label, data=csv_bytes(frame), file_name=name, mime="text/csv",
                       icon=":material/download:", on_click="ignore", key=key)
