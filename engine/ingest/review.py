"""What an ingest says beyond its counts, the same words in ``roilab ingest``/``roilab pilot``
and on the dashboard: which column the references came from, which columns nothing read, a
file with too many rejected rows, a workload too small for a pilot to measure anything.

Plain text: the CLI passes it through ``terminal_safe``, the dashboard escapes markdown.
"""
from __future__ import annotations

from collections.abc import Sequence

from engine.core.domain import ParsedLog, RowIssue, Workload
from engine.ingest.log_read import clean_name
from engine.ingest.log_request import REFERENCE_KEYS

# More rejected rows than this share of the rows read: a warning, not a green tick (the
# usable rows are still stored).
REJECTED_WARN_FRACTION = 0.2
# Fewer requests than this: a pilot's accuracy and latency figures are mostly noise.
MIN_PILOT_REQUESTS = 20

_SHOWN_ISSUES = 3  # issues quoted in the rejected-rows warning
_SHOWN_FIELDS = 20  # column names listed before "and N more"
_NAME_CHARS = 40  # a column name is cut to this in messages


def field_notes(parsed: ParsedLog) -> list[str]:
    """Which column/field the reference answers came from (or the names that would have
    been read), reference-named columns left unread, and the columns nothing read."""
    what = "column" if parsed.format == "csv" else "field"
    notes = []
    if parsed.reference_fields:
        plural = "s" if len(parsed.reference_fields) > 1 else ""
        notes.append(f"Reference answers from {what}{plural} {_names(parsed.reference_fields)}.")
    else:
        notes.append(f"No reference answers: no {what} is named one of "
                     f"{', '.join(REFERENCE_KEYS)} (any case).")
    shadowed = [f for f in parsed.ignored_fields if f.strip().lower() in REFERENCE_KEYS]
    if shadowed:
        notes.append(f"Also a reference name, not read: {_names(shadowed)} (of several, the "
                     f"first present in this order is read: {', '.join(REFERENCE_KEYS)}).")
    if parsed.ignored_fields:
        kept = "kept with each request as metadata" if what == "column" else "scalars kept as metadata"
        notes.append(f"Ignored {what}s: {_names(parsed.ignored_fields)} ({kept}; the pilot "
                     "does not use them).")
    return notes


def rejected_warning(n_requests: int, issues: Sequence[RowIssue]) -> str | None:
    """A warning when more than REJECTED_WARN_FRACTION of the rows read were rejected."""
    rows = n_requests + len(issues)
    if not rows or len(issues) <= REJECTED_WARN_FRACTION * rows:
        return None
    shown = " | ".join(f"line {i.line} ({i.field}): {i.reason}" for i in issues[:_SHOWN_ISSUES])
    more = f" | and {len(issues) - _SHOWN_ISSUES} more" if len(issues) > _SHOWN_ISSUES else ""
    return (f"{len(issues)} of {rows} rows {'was' if len(issues) == 1 else 'were'} rejected "
            f"({len(issues) / rows:.0%}, more than {REJECTED_WARN_FRACTION:.0%}); the "
            f"{_requests(n_requests, 'usable ')} {'was' if n_requests == 1 else 'were'} stored. "
            f"First issues: {shown}{more}. Fix them and upload the file again.")


def small_workload_warning(n_requests: int) -> str | None:
    """A warning when a workload has fewer than MIN_PILOT_REQUESTS requests."""
    if n_requests >= MIN_PILOT_REQUESTS:
        return None
    return (f"This workload has {_requests(n_requests)}: a pilot on {_requests(n_requests)} "
            f"measures noise; upload a log of at least {MIN_PILOT_REQUESTS} requests.")


def default_workload(workloads: Sequence[Workload]) -> Workload | None:
    """The workload a pilot should default to: the newest with at least MIN_PILOT_REQUESTS
    requests, else the largest (the newest of equals)."""
    if not workloads:
        return None
    newest_first = sorted(workloads, key=lambda w: w.id, reverse=True)
    big = [w for w in newest_first if w.n_requests >= MIN_PILOT_REQUESTS]
    return big[0] if big else max(newest_first, key=lambda w: w.n_requests)  # first of a tie


def _requests(n: int, kind: str = "") -> str:
    return f"{n} {kind}request" if n == 1 else f"{n} {kind}requests"


def _names(names: Sequence[str]) -> str:
    shown = [_name(n) for n in names[:_SHOWN_FIELDS]]
    more = f" and {len(names) - _SHOWN_FIELDS} more" if len(names) > _SHOWN_FIELDS else ""
    return ", ".join(shown) + more


def _name(name: str) -> str:
    name = clean_name(name)
    return name if len(name) <= _NAME_CHARS else name[:_NAME_CHARS] + "..."
