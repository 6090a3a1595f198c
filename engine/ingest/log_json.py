"""JSON request logs: JSONL read a line at a time, or one JSON array or object.

Rows are read one at a time and turned into requests at once under the format their own
keys point to, so a big log never holds all its parsed JSON. The log's format is the one
most rows point to; rows whose keys point to another are read again at the end, under the
majority format. A row that cannot be read (not UTF-8, too deep, a lone surrogate, a number
the store cannot hold, not a JSON object) is one RowIssue with its line. The result names the
keys references came from and the top-level keys nothing read (``ParsedLog.ignored_fields``).
"""
from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from engine.core.domain import LogRequest, ParsedLog, RowIssue
from engine.core.errors import LogFormatError, RowError
from engine.ingest.log_read import (
    check_value,
    decode_line,
    load_json_line,
    needs_check,
    no_rows_message,
    physical_lines,
)
from engine.ingest.log_request import (
    READ_KEYS,
    describe,
    json_request,
    reference_candidates,
    reference_key,
)

# Which format a JSON object belongs to, by its keys; checked in this order.
_KIND_KEYS = (
    ("proxy_jsonl", ("request",)), ("openai_batch", ("body", "custom_id")),
    ("chat_jsonl", ("messages",)), ("prompt_jsonl", ("prompt",)),
)
_MAX_FIELDS = 200  # top-level key names remembered for the ignored-fields list
_MAX_KEY_SETS = 64  # distinct rows' key sets whose reference candidates are remembered
_HOW_TO_FORMAT = ('each line needs one of: "messages" (chat list), "prompt" (text), "custom_id" '
                  '+ "body" (OpenAI Batch input) or "request" + "response" (proxy log)')


class _Rows:
    """Outcomes of the rows read so far, grouped by the format each row's keys point to
    (each outcome carries its line, so nothing else is kept per row)."""

    def __init__(self) -> None:
        self.by_kind: dict[str | None, list[LogRequest | RowIssue]] = {}
        self.issues: list[RowIssue] = []  # rows that are not a JSON object at all
        self.keys: set[str] = set()  # keys of objects of no known format, for the message
        self.fields: dict[str, None] = {}  # top-level keys of every object, first seen first
        self.references: dict[str, int] = {}  # key a reference came from -> rows
        self.candidates: dict[tuple[str, ...], tuple[str, ...]] = {}  # by a row's keys

    def _candidates(self, obj: dict[str, Any]) -> tuple[str, ...]:
        """reference_candidates of a row; rows of a log mostly share one key set, so it is
        worked out (and its keys added to ``fields``) once per key set."""
        keys = tuple(obj)
        found = self.candidates.get(keys)
        if found is None:
            found = reference_candidates(keys)
            if len(self.candidates) < _MAX_KEY_SETS:
                self.candidates[keys] = found
            if len(self.fields) < _MAX_FIELDS:
                self.fields.update(dict.fromkeys(keys))
        return found

    def add(self, line: int, obj: Any) -> None:
        if isinstance(obj, _Unusable):
            self.issues.append(RowIssue(line, obj.error.field, obj.error.reason))
            return
        if not isinstance(obj, dict):
            self.issues.append(RowIssue(line, "json", f"expected a JSON object {{...}}, got "
                                        f"{describe(obj)}; put one request object on each line"))
            return
        candidates = self._candidates(obj)
        ref = reference_key(obj, candidates)
        if ref is not None:
            self.references[ref] = self.references.get(ref, 0) + 1
        kind = _kind(obj)
        if kind is None:
            if len(self.keys) < 200:
                self.keys.update(k[:40] for k in list(obj)[:20])
            outcome: LogRequest | RowIssue = RowIssue(line, "json", "")
        else:
            outcome = _outcome(obj, kind, line, candidates)
        self.by_kind.setdefault(kind, []).append(outcome)


def _kind(obj: dict[str, Any]) -> str | None:
    for kind, keys in _KIND_KEYS:
        for key in keys:
            if key in obj:
                return kind
    return None


def _outcome(obj: dict[str, Any], fmt: str, line: int,
             candidates: tuple[str, ...] | None = None) -> LogRequest | RowIssue:
    try:
        return json_request(obj, fmt, line, candidates)
    except RowError as exc:
        return RowIssue(line, exc.field, exc.reason)


def parse_json(data: bytes, start: int, filename: str) -> ParsedLog:
    """Parse JSON bytes from offset ``start`` (after a BOM): every row a LogRequest or a
    RowIssue; LogFormatError when no row is a JSON object of a known format."""
    rows = _Rows()
    whole = _whole_document(data, start)
    if whole is not None:
        for line, value in whole:
            rows.add(line, value)
        values = dict(whole)

        def reread(lines: set[int]) -> dict[int, Any]:
            return {line: values[line] for line in lines}
    else:
        for line, begin, end in physical_lines(data, start):
            raw = data[begin:end]
            if raw.strip():
                try:
                    rows.add(line, _load_row(raw, data, begin, end))
                except RowError as exc:
                    rows.issues.append(RowIssue(line, exc.field, exc.reason))

        def reread(lines: set[int]) -> dict[int, Any]:  # these lines were read fine before
            return {line: json.loads(data[begin:end].decode("utf-8"))
                    for line, begin, end in physical_lines(data, start) if line in lines}
    return _finish(rows, filename, reread)


def _load_row(raw: bytes, data: bytes, begin: int, end: int) -> Any:
    value = load_json_line(decode_line(data, begin, end))
    if needs_check(raw):
        check_value(value)
    return value


def _finish(rows: _Rows, filename: str,
            reread: Callable[[set[int]], dict[int, Any]]) -> ParsedLog:
    """The majority format's outcomes, plus the other rows read again under that format."""
    kinds = [kind for kind in rows.by_kind if kind is not None]
    total = len(rows.issues) + sum(len(group) for group in rows.by_kind.values())
    if not kinds:
        if not rows.by_kind:
            rows.issues.sort(key=lambda issue: issue.line)
            raise LogFormatError(no_rows_message(filename, rows.issues, total))
        n_objects = len(rows.by_kind[None])
        keys = ", ".join(sorted(rows.keys)[:10]) or "none"
        raise LogFormatError(f"{filename}: none of its {n_objects} JSON objects has a field "
                             f"roilab reads (found keys: {keys}); {_HOW_TO_FORMAT}.")
    fmt = max(kinds, key=lambda kind: len(rows.by_kind[kind]))  # ties: the first seen
    outcomes = rows.by_kind.pop(fmt)
    others = {o.line for group in rows.by_kind.values() for o in group}
    if others:
        outcomes += [_outcome(obj, fmt, line) for line, obj in reread(others).items()]
        outcomes.sort(key=lambda outcome: outcome.line)
    rows.by_kind.clear()
    requests = tuple(o for o in outcomes if isinstance(o, LogRequest))
    issues = [o for o in outcomes if isinstance(o, RowIssue)] + rows.issues
    del outcomes
    issues.sort(key=lambda issue: issue.line)
    return ParsedLog(fmt, requests, tuple(issues), total, **_fields_read(rows))


def _fields_read(rows: _Rows) -> dict[str, tuple[str, ...]]:
    """The keys references came from (most rows first) and the top-level keys nothing read."""
    references = tuple(sorted(rows.references, key=lambda key: -rows.references[key]))
    ignored = tuple(key for key in rows.fields if key not in READ_KEYS
                    and key not in rows.references)
    return {"reference_fields": references, "ignored_fields": ignored}


def _whole_document(data: bytes, start: int) -> list[tuple[int, Any]] | None:
    """(line, value) per entry when the file is one JSON array or one (pretty-printed)
    object rather than one object per line; None for JSONL.

    A file whose first non-blank line is a JSON value by itself is JSONL (unless that line
    is all there is and holds an array), so a big JSONL log is never decoded whole.
    """
    lines = physical_lines(data, start)
    first = next(((n, b, e) for n, b, e in lines if data[b:e].strip()), None)
    if first is None or data[first[1]:first[2]].lstrip()[:1] not in (b"{", b"["):
        return None
    try:
        value = json.loads(data[first[1]:first[2]].decode("utf-8"))
    except (ValueError, RecursionError):
        value = None  # not a value by itself: maybe the first line of a pretty-printed one
    else:
        if not isinstance(value, list) or any(data[b:e].strip() for _, b, e in lines):
            return None
    if value is None:
        try:
            value = json.loads(data[start:].decode("utf-8"))
        except (ValueError, RecursionError):  # ValueError covers JSON and UTF-8 errors
            return None
    if not isinstance(value, (dict, list)):
        return None
    check = needs_check(data[start:])
    if isinstance(value, dict):
        return [(first[0], _checked(value) if check else value)]
    return [(n, _checked(item) if check else item) for n, item in enumerate(value, start=1)]


def _checked(item: Any) -> Any:
    """An array entry, or the RowIssue-worthy reason as a marker the caller reports."""
    try:
        check_value(item)
    except RowError as exc:
        return _Unusable(exc)
    return item


class _Unusable:
    """An array entry that failed check_value; _Rows reports it like a bad line."""

    def __init__(self, error: RowError) -> None:
        self.error = error
