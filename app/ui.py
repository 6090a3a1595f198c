"""Small drawing helpers shared by pages: safe messages, safe tables and number formats.

Streamlit renders alert text as markdown, and messages can quote user content (a file
name, a field from the log), so messages are escaped before they are shown.
"""
from __future__ import annotations

import re
from typing import Any

import pandas as pd
import streamlit as st

from engine.core.inert import spreadsheet_safe_frame

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
    prompt, an output or a name) gets a leading ``'`` first (engine.core.inert)."""
    frame = data if isinstance(data, pd.DataFrame) else pd.DataFrame(data)
    return st.dataframe(spreadsheet_safe_frame(frame), **kwargs)


def money(value: float | None) -> str:
    return "n/a" if value is None else f"${value:,.2f}"


def pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0%}"
