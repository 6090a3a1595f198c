"""The CSV request-log format: a header row naming a prompt column, one request per row.

Called by :func:`engine.ingest.logs.parse_log` once the file is known to be CSV. The delimiter is a
comma unless the header holds more semicolons or tabs (Excel exports); cells holding commas,
quotes or line breaks must be quoted. Optional columns: system, id, a reference and a logged
output (names below, any case; of several reference columns the first in ``REFERENCE_KEYS``
order is read); other columns are kept as metadata and listed in ``ParsedLog.ignored_fields``.
"""
from __future__ import annotations

import csv
import re
from collections.abc import Iterator, Sequence

from engine.core.domain import LogRequest, ParsedLog, RowIssue
from engine.core.errors import LogFormatError, RowError
from engine.ingest.log_read import bad_byte_lines, clean_name, excerpt
from engine.ingest.log_request import OUTPUT_KEYS, REFERENCE_KEYS

CSV_PROMPT_COLUMNS = ("prompt", "input", "question", "query", "text", "message")
CSV_REFERENCE_COLUMNS = REFERENCE_KEYS  # one list, the JSON formats' too
CSV_OUTPUT_COLUMNS = OUTPUT_KEYS
_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n|$)")
_MAX_CELL = 2**31 - 1  # the largest field_size_limit the csv module accepts everywhere


def parse_csv(data: bytes, start: int, filename: str) -> ParsedLog:
    """Parse CSV bytes from offset ``start`` (after a BOM); rows holding bytes that are not
    UTF-8 are rejected one by one, with the byte offset, and the rest are kept."""
    try:
        text = data[start:].decode("utf-8")
        bad_lines: dict[int, str] = {}
    except UnicodeDecodeError:
        text = data[start:].decode("utf-8", "surrogateescape")
        bad_lines = bad_byte_lines(data, start)
    _allow_big_cells()
    reader = csv.reader(_lines(text), delimiter=_csv_delimiter(text))
    requests, issues, total = [], [], 0
    try:
        header = next((row for row in reader if any(cell.strip() for cell in row)), [])
        header = [clean_name(name) for name in header]
        columns = _csv_columns(header, filename)
        first = reader.line_num + 1
        for row in reader:
            if any(cell.strip() for cell in row):
                total += 1
                try:
                    _check_encoding(bad_lines, first, reader.line_num)
                    requests.append(_csv_request(row, header, columns, first))
                except RowError as exc:
                    issues.append(RowIssue(first, exc.field, exc.reason))
            first = reader.line_num + 1
    except csv.Error as exc:
        raise LogFormatError(f"{filename} line {reader.line_num}: {excerpt(str(exc))}; cells "
                             "holding commas, quotes or line breaks must be wrapped in double "
                             'quotes, with quotes inside doubled ("").') from None
    return ParsedLog("csv", tuple(requests), tuple(issues), total, **_fields_read(header, columns))


def _fields_read(header: list[str], columns: dict[str, int | None]) -> dict[str, tuple[str, ...]]:
    """The reference column's name (if any) and the columns kept only as metadata."""
    used = {index for index in columns.values() if index is not None}
    reference = columns["reference"]
    return {"reference_fields": () if reference is None else (header[reference].strip(),),
            "ignored_fields": tuple(header[i].strip() or f"(column {i + 1}, no name)"
                                    for i in range(len(header)) if i not in used)}


def _lines(text: str) -> Iterator[str]:
    """Lines with their endings (LF, CRLF or CR), as ``io.StringIO(text, newline="")``
    gives them, without its copy of the text at four bytes a character."""
    for match in _LINE.finditer(text):
        if match.end() > match.start():
            yield match.group()


def _allow_big_cells() -> None:
    """The csv module refuses cells over 128 KiB by default; a long document pasted as a
    prompt is a real request, so allow cells as big as an upload may be."""
    if csv.field_size_limit() < _MAX_CELL:
        csv.field_size_limit(_MAX_CELL)


def _check_encoding(bad_lines: dict[int, str], first: int, last: int) -> None:
    """RowError if a line of this row (lines first..last) holds bytes that are not UTF-8."""
    if bad_lines:
        bad = next((bad_lines[n] for n in range(first, last + 1) if n in bad_lines), None)
        if bad is not None:
            raise RowError("encoding", bad)


def _csv_delimiter(text: str) -> str:
    """Comma, unless the header line has more semicolons or tabs (Excel exports)."""
    header = re.split(r"[\r\n]", text, maxsplit=1)[0]
    best = max((",", ";", "\t"), key=header.count)
    return best if header.count(best) else ","


def _csv_columns(header: list[str], filename: str) -> dict[str, int | None]:
    names = [name.strip().lower() for name in header]

    def find(options: Sequence[str]) -> int | None:
        return next((names.index(o) for o in options if o in names), None)

    prompt = find(CSV_PROMPT_COLUMNS)
    if prompt is None:
        raise LogFormatError(
            f"{filename} has no prompt column (header: "
            f"{', '.join(name[:40] for name in header[:10]) or 'empty'}). "
            f"Name the column holding the prompt one of: {', '.join(CSV_PROMPT_COLUMNS)} "
            f"(any case). Optional columns: system, id, reference "
            f"({', '.join(CSV_REFERENCE_COLUMNS)}), logged output "
            f"({', '.join(CSV_OUTPUT_COLUMNS)}); other columns are kept as metadata."
        )
    return {"prompt": prompt, "system": find(("system",)), "id": find(("id",)),
            "reference": find(CSV_REFERENCE_COLUMNS), "output": find(CSV_OUTPUT_COLUMNS)}


def _csv_request(
    row: list[str], header: list[str], columns: dict[str, int | None], line: int
) -> LogRequest:
    if len(row) != len(header):
        raise RowError("row", f"has {len(row)} cells but the header has {len(header)}; "
                        "wrap cells that contain commas or line breaks in double quotes")

    def cell(role: str) -> str | None:
        index = columns[role]
        return row[index] if index is not None and row[index].strip() else None

    prompt, system = cell("prompt"), cell("system")
    if prompt is None:
        raise RowError(header[columns["prompt"]].strip()[:40],
                        "is empty; fill in the prompt or delete the row")
    user = {"role": "user", "content": prompt}
    used = {index for index in columns.values() if index is not None}
    return LogRequest(
        line=line,
        messages=({"role": "system", "content": system}, user) if system else (user,),
        reference=cell("reference"),
        logged_output=cell("output"),
        request_id=cell("id"),
        metadata={header[i].strip(): row[i] for i in range(len(header)) if i not in used},
    )
