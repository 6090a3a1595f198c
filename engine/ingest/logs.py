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
Every JSON format also reads ``id`` (``custom_id`` first), a reference (the first of
``log_request.REFERENCE_KEYS`` present, any case: the CSV reference columns are the same list),
a logged output (``OUTPUT_KEYS``; in proxy logs ``response`` is the proxied response),
``usage.prompt_tokens``/``completion_tokens`` and ``metadata``; other top-level scalars
become metadata. A chat prompt ends at the last user message; an assistant reply after it
is the logged output unless one is given. Unusable rows become RowIssues (line, field, how
to fix); an unusable file raises LogFormatError with one message saying what to do. The
result names the columns/keys the references came from and those nothing read
(``ParsedLog.reference_fields``, ``ignored_fields``; ``engine.ingest.review`` words them). Lines
end at LF, CRLF or a lone CR; a line with bytes that are not UTF-8, nesting deeper than
``log_read.MAX_DEPTH``, a lone surrogate escape or a number Python cannot read is one
RowIssue (see ``engine.ingest.log_read``), never an exception. JSONL is read a line at a time.

This module is the entry point (``parse_log``) and the size summary (``summary``) that the
prompt statistics (``engine.ingest.stats``, stored with a workload) are made of;
JSON files are read by ``engine.ingest.log_json``, one JSON row's fields by
``engine.ingest.log_request``, CSV files by ``engine.ingest.log_csv``.
"""
from __future__ import annotations

from engine.core.domain import ParsedLog
from engine.core.errors import LogFormatError
from engine.ingest.log_csv import parse_csv
from engine.ingest.log_json import parse_json
from engine.ingest.log_read import BOM, clean_name, no_rows_message

_JSON_SUFFIXES = (".jsonl", ".json", ".ndjson")


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
    parsed = parse_json(data, start, filename) if is_json else parse_csv(data, start, filename)
    if not parsed.requests:
        raise LogFormatError(no_rows_message(filename, parsed.issues, parsed.total_rows))
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



# --------------------------------------------------------------------------- statistics


def summary(values: list[int]) -> dict[str, float | None]:
    """``mean``, ``p50``, ``p95`` and ``max`` of ``values`` (all None when there are none)."""
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
