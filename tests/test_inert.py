"""engine.core.inert: user text made inert for terminals (control characters) and spreadsheets
(OWASP CSV injection)."""
from __future__ import annotations

import io

import pandas as pd
import pytest

from engine.core.inert import spreadsheet_safe, spreadsheet_safe_frame, terminal_safe

HYPERLINK = '=HYPERLINK("http://x","y")'


@pytest.mark.parametrize("cell", [
    HYPERLINK, "=1+1", "+cmd|' /C calc'!A0", "-2+3+cmd|' /C calc'!A0", "@SUM(1+1)*cmd",
    "\t=1+1", "\r=1+1", "-", "+", "@", "-x", "+1+1", "-1e5+cmd",
])
def test_formula_cells_get_a_leading_quote(cell):
    assert spreadsheet_safe(cell) == "'" + cell


@pytest.mark.parametrize("cell", ["plain text", " =1+1 stays text in a cell", "a=1", "", "'=x",
                                  "-12.5", "+3", "-1,024", "-7%", "-.5", "+1e-3"])
def test_safe_text_and_signed_numbers_are_unchanged(cell):
    assert spreadsheet_safe(cell) == cell


@pytest.mark.parametrize("value", [-1, -2.5, 0, None, True, float("nan")])
def test_non_text_values_are_unchanged(value):
    out = spreadsheet_safe(value)
    assert out is value


def test_frame_neutralises_text_cells_names_and_index_and_keeps_numbers():
    frame = pd.DataFrame({"prompt": [HYPERLINK, "fine", None], "tokens": [-3, 4, 5],
                          "latency": [-0.5, 1.25, float("nan")], "=name": ["@a", "b", "c"]},
                         index=pd.Index(["-x", "y", "z"]))
    out = spreadsheet_safe_frame(frame)
    assert list(out["prompt"][:2]) == ["'" + HYPERLINK, "fine"] and pd.isna(out["prompt"].iloc[2])
    assert list(out.columns) == ["prompt", "tokens", "latency", "'=name"]
    assert list(out["'=name"]) == ["'@a", "b", "c"] and list(out.index) == ["'-x", "y", "z"]
    assert out["tokens"].dtype == frame["tokens"].dtype and list(out["tokens"]) == [-3, 4, 5]
    assert out["latency"].dtype == frame["latency"].dtype and out["latency"].iloc[0] == -0.5
    assert frame["prompt"].iloc[0] == HYPERLINK  # the caller's frame is untouched
    csv = out.to_csv(index=False)
    cells = pd.read_csv(io.StringIO(csv), dtype=str, keep_default_na=False)
    text_cells = [*cells.columns, *cells["prompt"], *cells["'=name"]]
    assert HYPERLINK in csv.replace('""', '"')  # the text itself survives, quoted
    assert not any(c.startswith(("=", "+", "-", "@", "\t", "\r")) for c in text_cells)
    back = pd.read_csv(io.StringIO(csv))
    assert back["tokens"].tolist() == [-3, 4, 5]  # numbers stay numbers in the file


def test_frame_with_a_string_dtype_column():
    frame = pd.DataFrame({"name": pd.array(["+1+1", "ok"], dtype="string")})
    assert list(spreadsheet_safe_frame(frame)["name"]) == ["'+1+1", "ok"]


@pytest.mark.parametrize(("text", "shown"), [
    ("\x1b[31mred\x1b[0m", "\\x1b[31mred\\x1b[0m"),
    ("bell\x07 null\x00 del\x7f", "bell\\x07 null\\x00 del\\x7f"),
    ("c1 csi\x9b2J", "c1 csi\\x9b2J"),
    ("over\rwrite", "over\\x0dwrite"),
    ("two\nlines", "two\\x0alines"),
    ("tab\there", "tab\\x09here"),
    ("rtl \u202eevil", "rtl \\u202eevil"),
    ("lone \ud800 surrogate", "lone \\ud800 surrogate"),
    ("plain ascii, é, 漢字, emoji 🙂", "plain ascii, é, 漢字, emoji 🙂"),
])
def test_terminal_safe_escapes_control_characters(text, shown):
    assert terminal_safe(text) == shown
    shown.encode("utf-8")  # printable on any UTF-8 terminal (no lone surrogate left)


def test_terminal_safe_multiline_keeps_only_newlines():
    assert terminal_safe("a\nb\x1b[2J\r\n", multiline=True) == "a\nb\\x1b[2J\\x0d\n"
    assert terminal_safe(42) == "42"
