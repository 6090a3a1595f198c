"""Parse an uploaded request log into LogRequests, keeping good rows and explaining bad ones.

JSON or CSV is told by the file name (``.csv``, ``.jsonl``/``.json``/``.ndjson``), else by
the content's first character. Formats:

* ``chat_jsonl``   one ``{"messages": [{"role": ..., "content": ...}, ...]}`` per line;
* ``prompt_jsonl`` one ``{"prompt": "...", "system": "..." (optional)}`` per line;
* ``openai_batch`` OpenAI Batch API input lines ``{"custom_id", "method", "url", "body"}``;
* ``proxy_jsonl``  proxy logs (LiteLLM/Helicone-like) ``{"request", "response", "usage"}``;
* ``csv``          a header row naming a prompt column (see ``engine.ingest.log_csv``).

The JSON format is the one most lines' keys point to; blank lines are skipped, uncounted.
A JSON file may also be one array of objects (entry N is reported as line N) or one object.
Every JSON format also reads ``id`` (``custom_id`` first), a reference (``REFERENCE_KEYS``),
a logged output (``OUTPUT_KEYS``; in proxy logs ``response`` is the proxied response),
``usage.prompt_tokens``/``completion_tokens`` and ``metadata``; other top-level scalars
become metadata. A chat prompt ends at the last user message; an assistant reply after it
is the logged output unless one is given. Unusable rows become RowIssues (line, field, how
to fix); an unusable file raises LogFormatError with one message saying what to do. Lines
end at LF, CRLF or a lone CR; a line with bytes that are not UTF-8, nesting deeper than
``log_read.MAX_DEPTH``, a lone surrogate escape or a number Python cannot read is one
RowIssue (see ``engine.ingest.log_read``), never an exception. JSONL is read a line at a time.
"""
from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

from engine.core.domain import LogRequest, ParsedLog, RowIssue
from engine.core.errors import LogFormatError, RowError
from engine.ingest.log_csv import parse_csv
from engine.ingest.log_read import (
    BOM,
    MAX_STORED_INT,
    check_value,
    clean_name,
    decode_line,
    excerpt,
    load_json_line,
    needs_check,
    physical_lines,
)

ROLES = ("system", "user", "assistant", "tool", "developer")
REFERENCE_KEYS = ("reference", "expected", "expected_output", "ideal", "answer", "ground_truth",
                  "label")
OUTPUT_KEYS = ("output", "response", "completion")

_JSON_SUFFIXES = (".jsonl", ".json", ".ndjson")
_SHOWN_ISSUES = 3  # row issues quoted in the "no usable rows" message
# Top-level JSON keys that are read as fields, so never copied into metadata.
_READ_KEYS = frozenset({
    "id", "custom_id", "metadata", "usage", "messages", "prompt", "system",
    "method", "url", "body", "request", "response", *REFERENCE_KEYS, *OUTPUT_KEYS,
})
# Which format a JSON object belongs to, by its keys; checked in this order.
_KIND_KEYS = (
    ("proxy_jsonl", ("request",)), ("openai_batch", ("body", "custom_id")),
    ("chat_jsonl", ("messages",)), ("prompt_jsonl", ("prompt",)),
)
_CONTAINER_KEYS = {"openai_batch": "body", "proxy_jsonl": "request"}  # where the prompt is
_HOW_TO_FORMAT = ('each line needs one of: "messages" (chat list), "prompt" (text), "custom_id" '
                  '+ "body" (OpenAI Batch input) or "request" + "response" (proxy log)')
_Messages = tuple[dict[str, str], ...]
_ROLE_NAMES = {role: role for role in ROLES}


def parse_log(data: bytes, filename: str) -> ParsedLog:
    """Detect the format of an uploaded log and parse it; raise LogFormatError if unusable.

    Never raises anything else for any input: rows that cannot be read (invalid JSON or
    UTF-8, too deep, a lone surrogate, a number the store cannot hold) become RowIssues.
    """
    filename = clean_name(filename if len(filename) <= 120 else filename[:120] + "...")
    start = _check_bytes(data, filename)
    name = filename.lower()
    sniffed_json = not name.endswith(".csv") and data[start:].lstrip()[:1] in (b"{", b"[")
    is_json = name.endswith(_JSON_SUFFIXES) or sniffed_json
    parsed = _parse_json(data, start, filename) if is_json else parse_csv(data, start, filename)
    if not parsed.requests:
        raise LogFormatError(_no_rows_message(filename, parsed.issues, parsed.total_rows))
    return parsed


def _check_bytes(data: bytes, filename: str) -> int:
    """Where the text starts (after a UTF-8 BOM); LogFormatError for empty or binary data."""
    if not data:
        raise LogFormatError(f"{filename} is empty; upload a JSONL or CSV file with one request "
                             "per line or row.")
    if b"\x00" in data:
        raise LogFormatError(f"{filename} contains NUL bytes, so it is binary (or UTF-16 text); "
                             "export the log as UTF-8 JSONL or CSV.")
    start = len(BOM) if data.startswith(BOM) else 0
    if not data[start:].strip():
        raise LogFormatError(f"{filename} contains only whitespace; upload a JSONL or CSV file "
                             "with one request per line or row.")
    return start


def _no_rows_message(filename: str, issues: Sequence[RowIssue], total: int) -> str:
    if total == 0:
        return f"{filename} has a header but no data rows; add one request per row."
    shown = " | ".join(f"line {i.line} ({i.field}): {i.reason}" for i in issues[:_SHOWN_ISSUES])
    more = f" | and {len(issues) - _SHOWN_ISSUES} more" if len(issues) > _SHOWN_ISSUES else ""
    return (f"{filename}: none of its {total} rows is usable. Fix these and upload again: "
            f"{shown}{more}")


# --------------------------------------------------------------------------- JSON formats
# Rows are read one at a time and turned into requests at once under the format their own
# keys point to, so a big log never holds all its parsed JSON. Rows whose keys point to
# another format than the majority are read again at the end, under the majority format.


class _Rows:
    """Outcomes of the rows read so far, grouped by the format each row's keys point to
    (each outcome carries its line, so nothing else is kept per row)."""

    def __init__(self) -> None:
        self.by_kind: dict[str | None, list[LogRequest | RowIssue]] = {}
        self.issues: list[RowIssue] = []  # rows that are not a JSON object at all
        self.keys: set[str] = set()  # keys of objects of no known format, for the message

    def add(self, line: int, obj: Any) -> None:
        if isinstance(obj, _Unusable):
            self.issues.append(RowIssue(line, obj.error.field, obj.error.reason))
            return
        if not isinstance(obj, dict):
            self.issues.append(RowIssue(line, "json", f"expected a JSON object {{...}}, got "
                                        f"{_describe(obj)}; put one request object on each line"))
            return
        kind = _kind(obj)
        if kind is None:
            if len(self.keys) < 200:
                self.keys.update(k[:40] for k in list(obj)[:20])
            outcome: LogRequest | RowIssue = RowIssue(line, "json", "")
        else:
            outcome = _outcome(obj, kind, line)
        self.by_kind.setdefault(kind, []).append(outcome)


def _kind(obj: dict[str, Any]) -> str | None:
    for kind, keys in _KIND_KEYS:
        for key in keys:
            if key in obj:
                return kind
    return None


def _outcome(obj: dict[str, Any], fmt: str, line: int) -> LogRequest | RowIssue:
    try:
        return _json_request(obj, fmt, line)
    except RowError as exc:
        return RowIssue(line, exc.field, exc.reason)


def _parse_json(data: bytes, start: int, filename: str) -> ParsedLog:
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
            raise LogFormatError(_no_rows_message(filename, rows.issues, total))
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
    return ParsedLog(fmt, requests, tuple(issues), total)


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


def _json_request(obj: dict[str, Any], fmt: str, line: int) -> LogRequest:
    key = _CONTAINER_KEYS.get(fmt)
    source = _container(obj, key) if key else obj
    messages, chat_output = _prompt_messages(source, f"{key}." if key else "")
    if fmt == "proxy_jsonl":
        output = _response_text(obj.get("response")) or _text_field(obj, ("output", "completion"))
    else:
        output = _text_field(obj, OUTPUT_KEYS) or chat_output
    prompt_tokens, output_tokens = _usage(obj)
    return LogRequest(
        line=line,
        messages=messages,
        reference=_text_field(obj, REFERENCE_KEYS),
        logged_output=output,
        logged_prompt_tokens=prompt_tokens,
        logged_output_tokens=output_tokens,
        request_id=_text_field(obj, ("custom_id", "id")),
        metadata=_metadata(obj, source),
    )


def _container(obj: dict[str, Any], key: str) -> dict[str, Any]:
    value = obj.get(key)
    if not isinstance(value, dict):
        got = "it is missing" if key not in obj else f"got {_describe(value)}"
        raise RowError(key, f'must be an object holding "messages" or "prompt" ({got})')
    return value


def _prompt_messages(source: dict[str, Any], prefix: str) -> tuple[_Messages, str | None]:
    """The prompt as chat messages, plus a logged reply found after the last user message."""
    if "messages" in source:
        return _chat_messages(source["messages"], prefix + "messages")
    if "prompt" in source:
        return _plain_prompt(source, prefix), None
    raise RowError(prefix + "messages", 'no "messages" or "prompt"; give the chat as '
                    '"messages": [{"role": "user", "content": "..."}] or the text as "prompt"')


def _plain_prompt(source: dict[str, Any], prefix: str) -> _Messages:
    prompt, system = source["prompt"], source.get("system")
    if not isinstance(prompt, str) or not prompt.strip():
        raise RowError(prefix + "prompt", f"must be a non-empty string (got "
                        f"{_describe(prompt)}); put the prompt text in it")
    if system is not None and not isinstance(system, str):
        raise RowError(prefix + "system", f"must be a string (got {_describe(system)})")
    user = {"role": "user", "content": prompt}
    return ({"role": "system", "content": system}, user) if system and system.strip() else (user,)


def _chat_messages(value: Any, field: str) -> tuple[_Messages, str | None]:
    if not isinstance(value, list) or not value:
        raise RowError(field, 'must be a non-empty list of {"role", "content"} objects '
                        f"(got {_describe(value)})")
    messages = tuple(_message(item, field, i) for i, item in enumerate(value))
    users = [i for i, m in enumerate(messages) if m["role"] == "user"]
    if not users:
        raise RowError(field, 'has no user message; add the request as {"role": "user", '
                        '"content": "..."}')
    last = users[-1]
    if not messages[last]["content"].strip():
        raise RowError(f"{field}[{last}].content",
                        "the last user message is empty; put the request text in it")
    replies = [m["content"] for m in messages[last + 1:] if m["role"] == "assistant"]
    reply = replies[-1] if replies and replies[-1].strip() else None
    return messages[: last + 1], reply


def _message(item: Any, field_prefix: str, index: int) -> dict[str, str]:
    """One chat message as {"role", "content"}. Roles are the shared ROLES strings and system
    prompts are interned (freed with their last user), so a big log repeating one system
    prompt holds its text once."""
    content = item.get("content") if isinstance(item, dict) else None
    role = _ROLE_NAMES.get(item.get("role")) if isinstance(item, dict) and isinstance(
        item.get("role"), str) else None
    if role is not None and isinstance(content, str):
        return {"role": role, "content": sys.intern(content) if role == "system" else content}
    field = f"{field_prefix}[{index}]"
    if not isinstance(item, dict):
        raise RowError(field, f'must be an object {{"role": ..., "content": ...}} '
                        f"(got {_describe(item)})")
    role = item.get("role")
    if role not in ROLES:
        got = "it is missing" if "role" not in item else f"got {excerpt(role)}"
        raise RowError(f"{field}.role", f"must be one of {', '.join(ROLES)} ({got})")
    return {"role": role, "content": _content_text(item.get("content"), f"{field}.content")}


def _content_text(content: Any, field: str) -> str:
    """Message content as text; a list of OpenAI text parts is joined with newlines."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise RowError(field, f"must be a string or a list of text parts "
                        f"(got {_describe(content)})")
    texts = []
    for i, part in enumerate(content):
        if not (isinstance(part, dict) and part.get("type") == "text"
                and isinstance(part.get("text"), str)):
            raise RowError(f"{field}[{i}]", 'only text parts {"type": "text", "text": "..."} '
                            "can be replayed; remove image, audio and other parts")
        texts.append(part["text"])
    return "\n".join(texts)


def _response_text(response: Any) -> str | None:
    """Text of a proxied response: a string, choices[0].message.content or choices[0].text.

    Other shapes (e.g. a logged error object) mean no logged output; the request is kept.
    """
    if isinstance(response, str):
        return response if response.strip() else None
    choices = response.get("choices") if isinstance(response, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return None
    message = choices[0].get("message")
    text = message.get("content") if isinstance(message, dict) else choices[0].get("text")
    if isinstance(text, list):
        text = _content_text(text, "response.choices[0].message.content")
    return text if isinstance(text, str) and text.strip() else None


def _text_field(obj: dict[str, Any], keys: Sequence[str]) -> str | None:
    """The first of ``keys`` present and not null, as text (numbers and booleans as in JSON)."""
    for key in keys:
        value = obj.get(key)
        if value is None:
            continue
        if not isinstance(value, (str, int, float)):  # bool is an int
            raise RowError(key, f"must be a string (got {_describe(value)}); give it as text")
        text = value if isinstance(value, str) else json.dumps(value)
        return text if text.strip() else None
    return None


def _usage(obj: dict[str, Any]) -> tuple[int | None, int | None]:
    usage = obj.get("usage")
    if usage is None and isinstance(obj.get("response"), dict):
        usage = obj["response"].get("usage")
    if usage is None:
        return None, None
    if not isinstance(usage, dict):
        raise RowError("usage", f'must be an object like {{"prompt_tokens": 12, '
                        f'"completion_tokens": 5}} (got {_describe(usage)})')
    return _token_count(usage, "prompt_tokens"), _token_count(usage, "completion_tokens")


def _token_count(usage: dict[str, Any], key: str) -> int | None:
    value = usage.get(key)
    if value is None or (isinstance(value, int) and not isinstance(value, bool)
                         and 0 <= value <= MAX_STORED_INT):
        return value
    raise RowError(f"usage.{key}", f"must be a non-negative integer of at most "
                    f"{MAX_STORED_INT} (got {excerpt(value)}); fix the count or remove it")


def _metadata(obj: dict[str, Any], source: dict[str, Any]) -> dict[str, Any]:
    given = obj.get("metadata")
    if given is not None and not isinstance(given, dict):
        raise RowError("metadata", f"must be an object of extra fields (got {_describe(given)})")
    scalars = {
        key: value for key, value in obj.items()
        if key not in _READ_KEYS and (value is None or isinstance(value, (str, int, float)))
    }
    if isinstance(source.get("model"), str):
        scalars.setdefault("model", source["model"])
    return {**scalars, **(given or {})}


_JSON_TYPES = {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
               int: "a number", float: "a number", type(None): "null"}


def _describe(value: Any) -> str:
    """A JSON value's type in JSON words, for messages."""
    blank = isinstance(value, str) and not value.strip()
    return "an empty string" if blank else _JSON_TYPES[type(value)]


# --------------------------------------------------------------------------- statistics


def token_stats(
    requests: Sequence[LogRequest], count_tokens: Callable[[str], int] | None = None
) -> dict[str, Any]:
    """Prompt-size statistics of parsed requests.

    Returns ``n``, ``prompt_words`` and ``prompt_chars`` (and ``prompt_tokens`` when
    ``count_tokens`` is given), each ``{"mean", "p50", "p95", "max"}``, plus
    ``with_reference`` and ``with_logged_output`` counts. Sizes are of
    ``LogRequest.prompt_text`` (no chat template); percentiles interpolate linearly between
    ranks; with no requests every statistic is None.
    """
    texts = [request.prompt_text for request in requests]
    stats: dict[str, Any] = {
        "n": len(texts),
        "prompt_words": _summary([len(text.split()) for text in texts]),
        "prompt_chars": _summary([len(text) for text in texts]),
    }
    if count_tokens is not None:
        stats["prompt_tokens"] = _summary([count_tokens(text) for text in texts])
    stats["with_reference"] = sum(r.reference is not None for r in requests)
    stats["with_logged_output"] = sum(r.logged_output is not None for r in requests)
    return stats


def _summary(values: list[int]) -> dict[str, float | None]:
    if not values:
        return dict.fromkeys(("mean", "p50", "p95", "max"))
    ordered = sorted(values)
    return {
        "mean": sum(ordered) / len(ordered),
        "p50": _percentile(ordered, 0.50),
        "p95": _percentile(ordered, 0.95),
        "max": ordered[-1],
    }


def _percentile(ordered: list[int], q: float) -> float:
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)
