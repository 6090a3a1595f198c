"""Reading an uploaded log's bytes safely: physical lines, UTF-8 per line, hostile values.

Shared by :mod:`engine.ingest.log_json` and :mod:`engine.ingest.log_csv`. A line is ended by
``\\n``, ``\\r\\n`` or a lone ``\\r`` (old Mac exports), never by the other characters
``str.splitlines`` knows (U+2028 may sit unescaped inside a JSON string). Bytes that are not
UTF-8 make only the lines they are on unusable, with the byte offset in the file. Every
value quoted in a message goes through :func:`excerpt`, so a 5 MB field gives a short message;
a file with no usable row gets one message quoting its first issues (:func:`no_rows_message`).
"""
from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from typing import Any

from engine.core.domain import RowIssue
from engine.core.errors import RowError

BOM = b"\xef\xbb\xbf"
EXCERPT_CHARS = 80  # longest quotation of a user value in any message
MAX_DEPTH = 64  # deepest JSON nesting a row may have (real logs: < 10)
MAX_STORED_INT = 2**31 - 1  # the store's token-count columns: INTEGER, 32-bit on PostgreSQL

_SHOWN_ISSUES = 3  # row issues quoted in the "no usable rows" message
_BREAK = re.compile(rb"\r\n|\r|\n")
_SURROGATE = re.compile("[\ud800-\udfff]")
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def excerpt(value: Any, limit: int = EXCERPT_CHARS) -> str:
    """``value`` as JSON-ish text of at most ``limit`` characters (plus the length cut)."""
    text = value if isinstance(value, str) else _short_json(value, limit)
    cut = text[:limit]
    if isinstance(value, str):  # quoted, control characters and lone surrogates escaped
        cut = _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}",
                             json.dumps(cut, ensure_ascii=False))
    return cut if len(text) <= limit else f"{cut}... ({len(text):,} characters)"


def _short_json(value: Any, limit: int) -> str:
    if isinstance(value, (dict, list)):
        return "an object" if isinstance(value, dict) else "a list"
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 256:
        return f"an integer of {len(str(value)):,} digits"[:limit * 2]
    return json.dumps(value)


def no_rows_message(filename: str, issues: Sequence[RowIssue], total: int) -> str:
    """The one message for a file without a usable row, quoting its first issues."""
    if total == 0:
        return f"{filename} has a header but no data rows; add one request per row."
    shown = " | ".join(f"line {i.line} ({i.field}): {i.reason}" for i in issues[:_SHOWN_ISSUES])
    more = f" | and {len(issues) - _SHOWN_ISSUES} more" if len(issues) > _SHOWN_ISSUES else ""
    return (f"{filename}: none of its {total} rows is usable. Fix these and upload again: "
            f"{shown}{more}")


def clean_name(text: str) -> str:
    """A file or workload name as it can be shown and stored: lone surrogates (from bytes
    that were not UTF-8 in a file name or argument) become U+FFFD."""
    return _SURROGATE.sub("\ufffd", text)


def physical_lines(data: bytes, start: int = 0) -> Iterator[tuple[int, int, int]]:
    """(line number, start offset, end offset) of every line of ``data`` from ``start``."""
    number, pos = 1, start
    for match in _BREAK.finditer(data, start):
        yield number, pos, match.start()
        number, pos = number + 1, match.end()
    if pos < len(data):
        yield number, pos, len(data)


def decode_line(data: bytes, start: int, end: int) -> str:
    """One line as text; RowError naming the first byte that is not UTF-8."""
    try:
        return data[start:end].decode("utf-8")
    except UnicodeDecodeError as exc:
        offset = start + exc.start
        raise RowError("encoding", f"byte {offset} of the file (0x{data[offset]:02X}) is not "
                       "UTF-8, so this line was left out; re-save the file as UTF-8") from None


def bad_byte_lines(data: bytes, start: int) -> dict[int, str]:
    """For a file that is not all UTF-8: line number -> why that line cannot be read."""
    bad = {}
    for number, begin, end in physical_lines(data, start):
        try:
            decode_line(data, begin, end)
        except RowError as exc:
            bad[number] = exc.reason
    return bad


def load_json_line(text: str) -> Any:
    """One JSON value, or RowError saying why it cannot be read (never another exception)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise RowError("json", f"invalid JSON at column {exc.colno}: {exc.msg}; write each "
                       "request as one JSON object per line") from None
    except RecursionError:
        raise RowError("json", f"nested too deeply to read; a request may nest at most "
                       f"{MAX_DEPTH} levels of lists and objects") from None
    except ValueError as exc:  # Python reads integers of at most 4,300 digits
        what = ("a number has more than 4,300 digits" if "digits" in str(exc)
                else f"a value cannot be read ({excerpt(str(exc), 60)})")
        raise RowError("json", f"{what}; write long numbers as strings") from None


def needs_check(raw: bytes) -> bool:
    """Whether a row's source could nest deeper than MAX_DEPTH or escape a lone surrogate:
    with few brackets and no ``\\uD8..`` escape neither can happen, so most rows skip the walk."""
    return (raw.count(b"[") + raw.count(b"{") > MAX_DEPTH
            or _SURROGATE_ESCAPE.search(raw) is not None)


def check_value(value: Any) -> None:
    """RowError if a parsed row nests deeper than MAX_DEPTH or holds a lone surrogate."""
    stack: list[tuple[Any, str, int]] = [(value, "", 1)]
    while stack:
        item, path, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise RowError(path[:40] + "..." if len(path) > 40 else path or "json",
                           f"nests more than {MAX_DEPTH} levels of lists and "
                           "objects; flatten it")
        if isinstance(item, str):
            _check_text(item, path)
        elif isinstance(item, dict):
            for key, child in item.items():
                sub = (f"{path}.{key}" if path else str(key))[:120]
                _check_text(key, sub)
                stack.append((child, sub, depth + 1))
        elif isinstance(item, list):
            stack.extend((child, f"{path}[{i}]"[:120], depth + 1) for i, child in enumerate(item))


def _check_text(text: str, path: str) -> None:
    found = _SURROGATE.search(text)
    if found is not None:
        raise RowError(clean_name(path) or "json",
                       f"holds a lone UTF-16 surrogate (\\u{ord(found.group()):04x} at "
                       f"character {found.start()}), which is not a character; write the "
                       "character itself or its full surrogate pair")
