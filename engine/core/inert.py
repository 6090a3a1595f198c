"""Make user text inert where roilab writes it out: terminals and spreadsheets.

Request logs, file names and workload names come from whoever produced the log. Printed
raw, ``\\x1b[...`` sequences recolour or rewrite a terminal; opened in a spreadsheet, a
cell starting with ``=`` is a live formula (``=HYPERLINK(...)`` leaks data on a click).
Both helpers here are pure so the CLI and the dashboard share them and tests reach them.
"""
from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pandas costs ~85 MiB in every CLI command that only escapes text
    import pandas as pd

# C0 controls, DEL and C1 controls; Unicode bidi overrides/isolates (they reorder what a
# reader sees, "Trojan Source"); lone surrogates (a terminal cannot encode them at all).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
_CONTROL_KEEP_NEWLINE = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069"
                                   "\ud800-\udfff]")

# OWASP CSV injection: a cell starting with one of these is read as a formula by Excel,
# LibreOffice or Google Sheets. https://owasp.org/www-community/attacks/CSV_Injection
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
# ... except a signed plain number ("-12.5", "+3%", "-1,024"): a spreadsheet reads it as
# a number, not a formula, so a negative figure shown as text stays readable.
_SIGNED_NUMBER = re.compile(r"[+-](\d[\d,]*(\.\d*)?|\.\d+)([eE][+-]?\d+)?%?", re.ASCII)


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def terminal_safe(text: object, *, multiline: bool = False) -> str:
    """``text`` with control characters shown as ``\\x1b``-style escapes, safe to print.

    ``multiline`` keeps newlines (a table printed as several lines); everything else that
    a terminal would act on, carriage return and tab included, is escaped.
    """
    pattern = _CONTROL_KEEP_NEWLINE if multiline else _CONTROL
    return pattern.sub(_escape, str(text))


def spreadsheet_safe(value: Any) -> Any:
    """A text cell that a spreadsheet would evaluate gets a leading ``'``; anything else
    (numbers, None, dates, safe text) is returned unchanged."""
    if (isinstance(value, str) and value.startswith(FORMULA_START)
            and not _SIGNED_NUMBER.fullmatch(value)):
        return "'" + value
    return value


def spreadsheet_safe_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``frame`` whose text cells, text column names and text index are inert in
    a spreadsheet; numeric, boolean and datetime columns keep their dtype and values."""
    import pandas as pd

    out = frame.copy()
    for i in range(out.shape[1]):
        column = out.iloc[:, i]
        if column.dtype == object or isinstance(column.dtype, pd.StringDtype):
            out.isetitem(i, column.map(spreadsheet_safe, na_action="ignore"))
    out.columns = _safe_index(out.columns)
    out.index = _safe_index(out.index)
    return out


def _safe_index(index: pd.Index) -> pd.Index:
    import pandas as pd

    if isinstance(index, pd.MultiIndex):
        return index.set_levels([_safe_index(level) for level in index.levels])
    if index.dtype == object or isinstance(index.dtype, pd.StringDtype):
        return index.map(spreadsheet_safe)
    return index


def write_safe_csv(frame: pd.DataFrame, path) -> None:
    """Write ``frame`` as a CSV a spreadsheet opens without running any cell."""
    spreadsheet_safe_frame(frame).to_csv(path, index=False)
