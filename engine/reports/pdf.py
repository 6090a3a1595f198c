"""The PDF building blocks both reports use (fpdf2): latin-1-safe text, number formatters,
the A4 document with its footer, headings and paragraphs, tables, and PNG charts.

Every number printed goes through the ``fmt_*`` helpers, so tests can compute the exact
strings from stored numbers. fpdf2's core fonts are latin-1 only: all text passes through
``to_latin1``, so emoji or CJK in a model output become '?' instead of crashing the export.
Charts use a bare matplotlib ``Figure`` (Agg, no pyplot global state), which is safe inside a
Streamlit server; ``png`` turns one into the bytes a page embeds.
"""
from __future__ import annotations

import io
import math
import unicodedata
from datetime import date
from pathlib import Path

from fpdf import FPDF
from fpdf.fonts import FontFace
from matplotlib.figure import Figure

NA = "n/a"
_PUNCT = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201c": '"', "\u201d": '"',
                        "\u201e": '"', "\u2013": "-", "\u2014": "-", "\u2212": "-", "\u2022": "*",
                        "\u2026": "...", "\u00a0": " ", "\t": "    "})


# ---- text and number formatting ----------------------------------------------------------
def to_latin1(text: object) -> str:
    """Text the core PDF fonts can draw: latin-1 kept, the rest normalised or '?'."""
    out = []
    for ch in str(text).translate(_PUNCT):
        if ord(ch) < 256:
            out.append(ch if ch == "\n" or ch.isprintable() else " ")
            continue
        if unicodedata.category(ch) in ("Mn", "Cf"):  # zero-width joiners, variation selectors
            continue
        # NFKC maps full-width letters and ligatures; NFKD then drops accents latin-1 lacks.
        folded = unicodedata.normalize("NFKD", unicodedata.normalize("NFKC", ch))
        kept = "".join(c for c in folded if ord(c) < 256 and not unicodedata.combining(c))
        out.append(kept or "?")
    return "".join(out)


def missing(x) -> bool:
    """None or NaN: a figure that was not measured."""
    return x is None or (isinstance(x, float) and math.isnan(x))


def fmt_money(x: float | None) -> str:
    """``$0.01340`` (4 significant digits below $1), ``$136.66``, ``-$1,234.57``."""
    if x is None or math.isnan(x):
        return NA
    sign, a = ("-" if x < 0 else ""), abs(x)
    if a == 0 or a >= 1:
        return f"{sign}${a:,.2f}"
    decimals = 3 - math.floor(math.log10(a))
    return f"{sign}${a:.{decimals}f}"


def _formatter(template: str, scale: float = 1.0):
    def fmt(x: float | None) -> str:
        return NA if x is None or math.isnan(x) else template.format(x * scale)
    return fmt


fmt_pct = _formatter("{:.1f}%", 100.0)  # a fraction: 0.333 -> "33.3%"
fmt_ratio = _formatter("{:.2f}x")
fmt_score = _formatter("{:.3f}")
fmt_mb = _formatter("{:,.1f} MB", 1e-6)  # MB = 10^6 bytes
fmt_s = _formatter("{:.2f} s")
fmt_tok_s = _formatter("{:,.2f} tok/s")
fmt_count = _formatter("{:,.0f}")  # tokens, bytes per token
fmt_cell, fmt_cell_mb = _formatter("{:,.2f}"), _formatter("{:,.1f}", 1e-6)  # table cells, unit in header
MIB = 2**20  # memory as `roilab show` and the dashboard print it: MiB (GiB from 10 GiB on)
fmt_cell_mib = _formatter("{:,.1f}", 1 / MIB)  # a table cell, "MiB" in the header


def fmt_mib(x: float | None) -> str:
    """Bytes in binary units: ``513.1 MiB``, ``15.4 GiB`` (from 10 GiB on)."""
    if missing(x):
        return NA
    return f"{x / 2**30:,.1f} GiB" if abs(x) >= 10 * 2**30 else f"{x / MIB:,.1f} MiB"


def fmt_price(x: float | None) -> str:
    """A $/hour price exactly as stored (``$0.08925``, ``$2.95``, ``$1.006``): the figure the
    costs are worked out with, never rounded to 4 digits (0.0892) for show."""
    if missing(x):
        return NA
    text = f"{x:,.6f}".rstrip("0")
    whole, _, decimals = text.partition(".")
    return f"${whole}.{decimals.ljust(2, '0')}"


def signed_change(change: float | None, what: str = "") -> str:
    """A relative difference in words: ``+14.2% more``, ``-30.1% less``, ``no change``;
    ``what`` follows (``+14.2% more per 1k requests``)."""
    if missing(change):
        return NA
    words = "no change" if round(change * 100, 1) == 0 else \
        f"{change * 100:+.1f}% {'more' if change > 0 else 'less'}"
    return f"{words} {what}".rstrip()


PRICE_STALE_MONTHS = 6  # a catalog price older than this gets a warning beside it


def price_age_months(price_date: str, today: date | None = None) -> int | None:
    """Whole months from a "YYYY-MM" price date to ``today`` (None if unreadable)."""
    try:
        year, month = (int(x) for x in price_date.split("-")[:2])
    except ValueError:
        return None
    today = today or date.today()
    return (today.year - year) * 12 + today.month - month


def price_age_note(price_date: str, today: date | None = None) -> str | None:
    """A warning when a price is older than PRICE_STALE_MONTHS, else None."""
    age = price_age_months(price_date, today)
    if age is None or age <= PRICE_STALE_MONTHS:
        return None
    return (f"Prices as of {price_date} are {age} months old: check them against today's "
            "list (or enter what you pay on the Hardware page) before relying on the dollars.")


# ---- the document ------------------------------------------------------------------------
class Doc(FPDF):
    """fpdf2 with latin-1-safe text, a titled page footer, headings and paragraphs."""

    def normalize_text(self, text: str) -> str:
        return super().normalize_text(to_latin1(text))

    def footer(self) -> None:
        self.set_y(-12)
        self.set_font("Helvetica", "I", 7)
        self.cell(0, 6, f"{self.title} - page {self.page_no()}/{{nb}}", align="C")

    def heading(self, text: str) -> None:
        self.ln(3)
        self.set_font("Helvetica", "B", 12)
        self.multi_cell(0, 7, text, new_x="LMARGIN", new_y="NEXT", align="L")

    def para(self, text: str, size: float = 9, style: str = "") -> None:
        self.set_font("Helvetica", style, size)
        self.multi_cell(0, 4.6, text, new_x="LMARGIN", new_y="NEXT", align="L")
        self.ln(1.2)


def new_doc(title: str) -> Doc:
    """An A4 document with the report's fonts, footer and page-break margin; no page yet."""
    pdf = Doc(orientation="P", unit="mm", format="A4")
    pdf.set_title(to_latin1(title))
    pdf.set_auto_page_break(True, margin=16)
    return pdf


def table(pdf: Doc, rows, widths, size: float = 8.5, numeric_from: int | None = None) -> None:
    """A bordered table whose first row is the heading; columns from ``numeric_from`` on
    are right-aligned."""
    pdf.set_font("Helvetica", "", size)
    cut = len(widths) if numeric_from is None else numeric_from
    with pdf.table(col_widths=widths, width=sum(widths), align="LEFT", line_height=size * 0.5,
                   text_align=["LEFT"] * cut + ["RIGHT"] * (len(widths) - cut),
                   first_row_as_headings=True,
                   headings_style=FontFace(emphasis="BOLD", fill_color=(225, 230, 240))) as table:
        for r in rows:
            row = table.row()
            for cell in r:
                row.cell(str(cell))
    pdf.ln(2)


def png(fig: Figure, dpi: int) -> bytes:
    """The figure as PNG bytes, for ``pdf.image`` or a download."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def write_file(path: str | Path, data: bytes) -> Path:
    """Write a rendered document, making its folder; the path written."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(data)
    return out
