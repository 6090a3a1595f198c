"""Property-based fuzzing of log ingest (issue 13): structured-but-hostile records in every
log format, and raw bytes, through the real parser (and, for a share, the real SQLite store).

Properties: ``parse_log`` returns a ParsedLog or raises LogFormatError, nothing else; every
rejected row names a line that exists, a field and a reason of bounded length; no kept
request holds a character the tokenizer or a UTF-8 database cannot take (a lone surrogate);
rows are counted exactly once. Seeded (``derandomize``) and bounded (``max_examples``,
``deadline``): about 11,400 examples (18,000 files parsed) per run, printed at the end.
"""
from __future__ import annotations

import csv
import io
import json
import re
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.core.domain import ParsedLog
from engine.core.errors import LogFormatError
from engine.ingest.logs import parse_log
from engine.store.store import Store

FUZZ = settings(derandomize=True, database=None, deadline=timedelta(seconds=5),
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.large_base_example])
PER_FORMAT = 1_700  # x 6 generators, plus the store round trips: > 10,000 per run
COUNT = {"examples": 0, "inputs": 0}  # Hypothesis examples; files given to parse_log
_SURROGATE = re.compile("[\ud800-\udfff]")
_MAX_REASON = 500  # a message quotes excerpts, never a whole value

# --------------------------------------------------------------------------- strategies

NASTY = ["\ud800", "\udfff", "\udc80", "\x00", "\r", "\n", "\r\n", "\u2028", "\x85", "\ufeff",
         "\x1b[31m", '"', "\\", ",", ";", "\t", "=HYPERLINK(\"x\")", "", " ", "é", "😀"]
texts = st.one_of(
    st.text(st.characters(exclude_categories=()), max_size=8),  # surrogates included
    st.sampled_from(NASTY),
    st.lists(st.sampled_from(NASTY), max_size=3).map("".join),
    st.builds(lambda c, n: c * n, st.sampled_from("xé\ud800"), st.integers(0, 3000)),
)
numbers = st.one_of(st.integers(), st.sampled_from([2**31, 2**63, -(2**63) - 1, 10**300]),
                    st.floats(allow_nan=True, allow_infinity=True))
scalars = st.one_of(st.none(), st.booleans(), numbers, texts)
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=2), st.dictionaries(texts, inner, max_size=2)), max_leaves=3)
roles = st.one_of(st.sampled_from(["user", "system", "assistant", "tool", "developer"]), values)
contents = st.one_of(texts, values, st.lists(st.one_of(
    st.fixed_dictionaries({"type": st.just("text"), "text": texts}), values), max_size=3))
messages = st.one_of(values, st.lists(st.one_of(
    st.fixed_dictionaries({"role": roles, "content": contents}), values), min_size=1,
    max_size=4))
usage = st.one_of(values, st.fixed_dictionaries(
    {}, optional={"prompt_tokens": st.one_of(numbers, values),
                  "completion_tokens": st.one_of(numbers, values)}))
EXTRAS = {"id": scalars, "reference": values, "output": scalars, "usage": usage,
          "metadata": values}


def _record(required: dict) -> st.SearchStrategy[dict]:
    return st.fixed_dictionaries(required, optional=EXTRAS)


RECORDS = {
    "chat": _record({"messages": messages}),
    "prompt": _record({"prompt": st.one_of(texts, values)}),
    "batch": _record({"custom_id": texts, "method": st.just("POST"),
                      "body": st.one_of(values, st.fixed_dictionaries({"messages": messages}))}),
    "proxy": _record({"request": st.one_of(values, st.fixed_dictionaries(
        {}, optional={"messages": messages, "prompt": st.one_of(texts, values)})),
        "response": st.one_of(values, st.fixed_dictionaries({"choices": st.lists(
            st.fixed_dictionaries({}, optional={"message": st.fixed_dictionaries(
                {"content": contents}), "text": texts}), max_size=1)}))}),
}

# Whole lines that once crashed ingest, mixed in among generated ones.
HOSTILE_LINES = [
    b'{"prompt": "x", "m": ' + b"[" * 3000 + b"]" * 3000 + b"}",
    b'{"prompt": "x", "n": ' + b"7" * 4500 + b"}",
    b'{"prompt": "x", "usage": {"prompt_tokens": 9223372036854775808}}',
    b'{"prompt": "\\ud800"}', b'{"prompt": "caf\xe9"}', b"\xff\xfe", b"\xef\xbb\xbf",
    b'{"messages": [{"role": "' + b"r" * 200_000 + b'", "content": "x"}]}',
]


def _mutate(lines: list[bytes], data: st.DataObject) -> bytes:
    """Join lines with LF, CRLF, CR or a mix, then maybe splice in hostile lines or bytes."""
    if data.draw(st.booleans()):
        for hostile in data.draw(st.lists(st.sampled_from(HOSTILE_LINES), max_size=2)):
            lines.insert(data.draw(st.integers(0, len(lines))), hostile)
    ending = data.draw(st.sampled_from([b"\n", b"\r\n", b"\r"]))
    out = ending.join(lines)
    if data.draw(st.integers(0, 3)) == 0 and out:  # raw bytes somewhere in the file
        at = data.draw(st.integers(0, len(out)))
        out = out[:at] + data.draw(st.binary(max_size=8)) + out[at:]
    if data.draw(st.integers(0, 5)) == 0:
        out = out[: data.draw(st.integers(0, len(out)))]
    return out


def _dumps(record: dict) -> bytes:
    try:
        return json.dumps(record).encode()  # lone surrogates become \\udXXX escapes
    except ValueError:  # an integer too long to print (only when built, never parsed)
        return b"{}"


# --------------------------------------------------------------------------- properties


def check(data: bytes, filename: str) -> ParsedLog | None:
    """The properties every input must have; the ParsedLog, or None for a file error."""
    COUNT["inputs"] += 1
    try:
        parsed = parse_log(data, filename)
    except LogFormatError as exc:
        message = str(exc)
        assert message and len(message) < 4 * _MAX_REASON, message[:300]
        return None
    n_lines = max(1, len(re.split(rb"\r\n|\r|\n", data)))
    assert parsed.total_rows == len(parsed.requests) + len(parsed.issues)
    assert parsed.requests, "a ParsedLog without requests must be a LogFormatError"
    for issue in parsed.issues:
        assert isinstance(issue.line, int) and 1 <= issue.line <= max(n_lines, len(data))
        assert issue.field and issue.reason, issue
        assert len(issue.reason) <= _MAX_REASON and len(issue.field) <= 200, issue
    lines = [issue.line for issue in parsed.issues] + [r.line for r in parsed.requests]
    assert len(set(lines)) == len(lines), "a row counted twice"
    for request in parsed.requests:
        texts = [m["content"] for m in request.messages] + [
            request.reference or "", request.logged_output or "", request.request_id or ""]
        assert not any(_SURROGATE.search(t) for t in texts), request
        assert request.messages[-1]["role"] == "user" and request.prompt_text.strip()
        for count in (request.logged_prompt_tokens, request.logged_output_tokens):
            assert count is None or 0 <= count < 2**31
    return parsed


@pytest.mark.parametrize("fmt", list(RECORDS))
def test_fuzz_json_formats(fmt):
    @settings(FUZZ, max_examples=PER_FORMAT)
    @given(records=st.lists(RECORDS[fmt], min_size=1, max_size=5), data=st.data())
    def run(records, data):
        COUNT["examples"] += 1
        lines = [_dumps(r) for r in records]
        check(b"[" + b",\n".join(lines) + b"]", f"fuzz.{fmt}.json")  # one JSON array
        check(_mutate(lines, data), f"fuzz.{fmt}.jsonl")

    run()


@settings(FUZZ, max_examples=PER_FORMAT)
@given(header=st.lists(st.one_of(st.sampled_from(["prompt", "Input", "id", "label", "system",
                                                  "response", "x"]), texts),
                       min_size=1, max_size=5),
       rows=st.lists(st.lists(texts, max_size=6), max_size=5),
       delimiter=st.sampled_from([",", ";", "\t"]), data=st.data())
def test_fuzz_csv(header, rows, delimiter, data):
    COUNT["examples"] += 1
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=delimiter, lineterminator="\n")
    for row in [header, *rows]:
        writer.writerow(row)
    text = buffer.getvalue().encode("utf-8", "surrogatepass")  # lone surrogates as bytes
    check(_mutate(text.split(b"\n"), data), "fuzz.csv")


@settings(FUZZ, max_examples=2_000)
@given(raw=st.binary(max_size=300), name=st.sampled_from(["r.jsonl", "r.csv", "r.txt",
                                                           "r\udcff.json"]))
def test_fuzz_raw_bytes(raw, name):
    COUNT["examples"] += 1
    check(raw, name)


@settings(FUZZ, max_examples=300)
@given(records=st.lists(st.one_of(*RECORDS.values()), min_size=1, max_size=4), data=st.data(),
       name=texts)
def test_fuzz_what_is_kept_can_be_stored(tmp_path_factory, records, data, name):
    """Whatever the parser keeps, the real store takes (no OverflowError or
    UnicodeEncodeError at store time) and gives back request for request."""
    COUNT["examples"] += 1
    raw = _mutate([_dumps(r) for r in records], data)
    parsed = check(raw, f"{name}.jsonl")
    if parsed is None:
        return
    store = _STORE.setdefault("store", Store(
        f"sqlite:///{tmp_path_factory.mktemp('fuzz') / 'roilab.db'}"))
    workload = store.add_workload(name, f"{name}.jsonl", raw, parsed)
    assert store.get_raw_upload(workload.id) == raw
    got = [s.request for s in store.get_requests(workload.id)]
    assert [r.line for r in got] == [r.line for r in parsed.requests]
    assert store.get_workload(workload.id).issues == parsed.issues


_STORE: dict[str, Store] = {}


@pytest.fixture(scope="module", autouse=True)
def _report_count(request):
    yield
    if "store" in _STORE:
        _STORE.pop("store").engine.dispose()
    line = (f"log fuzzing: {COUNT['examples']:,} examples, {COUNT['inputs']:,} files parsed, "
            "0 crashes")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if capture is not None and reporter is not None:
        with capture.global_and_fixture_disabled():  # shown even without -s
            reporter.write_line(f"\n{line}")
