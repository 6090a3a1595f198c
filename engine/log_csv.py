"""The CSV request-log format: a header row naming a prompt column, one request per row.

Called by :func:`engine.logs.parse_log` once the file is known to be CSV. The delimiter is a
comma unless the header holds more semicolons or tabs (Excel exports); cells holding commas,
quotes or line breaks must be quoted. Optional columns: system, id, a reference and a logged
output (names below, any case); other columns are kept as metadata.
"""
from __future__ import annotations

import csv
import io
from collections.abc import Sequence

from engine.domain import LogRequest, ParsedLog, RowIssue
from engine.errors import LogFormatError, RowError

CSV_PROMPT_COLUMNS = ("prompt", "input", "question", "query", "text", "message")
CSV_REFERENCE_COLUMNS = ("reference", "expected", "answer", "ground_truth", "label",
                         "expected_output")
CSV_OUTPUT_COLUMNS = ("output", "response", "completion")  # engine.logs.OUTPUT_KEYS


def parse_csv(text: str, filename: str) -> ParsedLog:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=_csv_delimiter(text))
    requests, issues, total = [], [], 0
    try:
        header = next((row for row in reader if any(cell.strip() for cell in row)), [])
        columns = _csv_columns(header, filename)
        start = reader.line_num + 1
        for row in reader:
            if any(cell.strip() for cell in row):
                total += 1
                try:
                    requests.append(_csv_request(row, header, columns, start))
                except RowError as exc:
                    issues.append(RowIssue(start, exc.field, exc.reason))
            start = reader.line_num + 1
    except csv.Error as exc:
        raise LogFormatError(f"{filename} line {reader.line_num}: {exc}; cells holding commas, "
                             'quotes or line breaks must be wrapped in double quotes, with quotes '
                             'inside doubled ("").') from None
    return ParsedLog("csv", tuple(requests), tuple(issues), total)


def _csv_delimiter(text: str) -> str:
    """Comma, unless the header line has more semicolons or tabs (Excel exports)."""
    header = text.split("\n", 1)[0]
    best = max((",", ";", "\t"), key=header.count)
    return best if header.count(best) else ","


def _csv_columns(header: list[str], filename: str) -> dict[str, int | None]:
    names = [name.strip().lower() for name in header]

    def find(options: Sequence[str]) -> int | None:
        return next((names.index(o) for o in options if o in names), None)

    prompt = find(CSV_PROMPT_COLUMNS)
    if prompt is None:
        raise LogFormatError(
            f"{filename} has no prompt column (header: {', '.join(header[:10]) or 'empty'}). "
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
        raise RowError(header[columns["prompt"]].strip(),
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
