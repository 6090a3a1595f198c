"""Tests for engine.ingest.logs: every format, bad rows with their line numbers, unusable files."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.core.domain import LogRequest
from engine.core.errors import LogFormatError
from engine.ingest.logs import parse_log
from engine.ingest.stats import token_stats

SAMPLES = Path(__file__).resolve().parent.parent / "data" / "samples"


def jsonl(*rows: object) -> bytes:
    """One JSON line per row; str rows are written as they are (for broken lines)."""
    return "\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows).encode()


def user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def issue_map(parsed) -> dict[int, tuple[str, str]]:
    return {i.line: (i.field, i.reason) for i in parsed.issues}


# --------------------------------------------------------------------------- sample files


def test_sample_support_chat():
    parsed = parse_log((SAMPLES / "support_chat.jsonl").read_bytes(), "support_chat.jsonl")
    assert parsed.format == "chat_jsonl"
    assert (len(parsed.requests), parsed.total_rows, parsed.issues) == (35, 35, ())
    first = parsed.requests[0]
    assert (first.line, first.request_id, first.reference) == (1, "sup-001", "Forgot password")
    assert [m["role"] for m in first.messages] == ["system", "user"]
    assert "Forgot password" in first.messages[0]["content"]
    assert first.metadata["topic"] == "account"
    multi_turn = parsed.requests[-1]
    assert [m["role"] for m in multi_turn.messages] == ["system", "user", "assistant", "user"]
    assert multi_turn.logged_output is None  # the assistant turn is history, not the reply
    assert all(r.reference for r in parsed.requests)


def test_sample_ticket_csv_has_bom_crlf_and_multiline_cells():
    data = (SAMPLES / "ticket_classification.csv").read_bytes()
    assert data.startswith(b"\xef\xbb\xbf") and b"\r\n" in data
    parsed = parse_log(data, "ticket_classification.csv")
    assert parsed.format == "csv"
    assert (len(parsed.requests), parsed.total_rows, parsed.issues) == (34, 34, ())
    physical_lines = data.decode("utf-8-sig").splitlines()
    for request in parsed.requests:  # each row's line is where its id cell starts
        assert physical_lines[request.line - 1].startswith(request.request_id + ",")
    assert parsed.requests[0].line == 2
    assert sum("\n" in r.prompt_text for r in parsed.requests) >= 2
    assert {r.reference for r in parsed.requests} == {"billing", "technical", "account", "shipping"}
    assert set(parsed.requests[0].metadata) == {"team"}


def test_sample_proxy_log_keeps_logged_output_and_usage():
    data = (SAMPLES / "doc_summarisation_proxy.jsonl").read_bytes()
    parsed = parse_log(data, "doc_summarisation_proxy.jsonl")
    assert parsed.format == "proxy_jsonl"
    assert (len(parsed.requests), parsed.issues) == (31, ())
    raw = json.loads(data.splitlines()[0])
    first = parsed.requests[0]
    assert first.logged_output == raw["response"]["choices"][0]["message"]["content"]
    assert first.logged_prompt_tokens == raw["usage"]["prompt_tokens"]
    assert first.logged_output_tokens == raw["usage"]["completion_tokens"]
    assert first.request_id == raw["id"]
    assert first.metadata["model"] == "gpt-3.5-turbo-0125"
    assert first.metadata["doc_type"] == raw["metadata"]["doc_type"]
    assert all(150 <= len(r.messages[1]["content"].split()) <= 320 for r in parsed.requests)


# --------------------------------------------------------------------------- JSON formats


def test_chat_reply_after_last_user_is_logged_output_not_prompt():
    chat = [{"role": "system", "content": "Be brief."}, user("Hi"),
            {"role": "assistant", "content": "Hello!"}]
    parsed = parse_log(jsonl({"messages": chat, "id": 7}), "log.jsonl")
    request = parsed.requests[0]
    assert request.messages == ({"role": "system", "content": "Be brief."}, user("Hi"))
    assert (request.logged_output, request.request_id) == ("Hello!", "7")


def test_chat_explicit_output_field_wins_over_trailing_reply():
    row = {"messages": [user("Hi"), {"role": "assistant", "content": "Hello!"}], "output": "Yo"}
    assert parse_log(jsonl(row), "log.jsonl").requests[0].logged_output == "Yo"


def test_content_parts_are_joined_into_text():
    parts = [{"type": "text", "text": "Line one"}, {"type": "text", "text": "Line two"}]
    request = parse_log(jsonl({"messages": [{"role": "user", "content": parts}]}), "x.jsonl")
    assert request.requests[0].messages == (user("Line one\nLine two"),)


def test_prompt_jsonl_with_optional_system():
    parsed = parse_log(
        jsonl({"prompt": "2+2?", "system": "Answer with a number.", "answer": 4}, {"prompt": "Hi"}),
        "p.jsonl",
    )
    assert parsed.format == "prompt_jsonl"
    first, second = parsed.requests
    assert first.messages == ({"role": "system", "content": "Answer with a number."}, user("2+2?"))
    assert first.reference == "4"
    assert second.messages == (user("Hi"),)


def test_openai_batch_input():
    row = {"custom_id": "req-1", "method": "POST", "url": "/v1/chat/completions",
           "body": {"model": "gpt-4o-mini", "messages": [user("Ping")], "max_tokens": 5}}
    parsed = parse_log(jsonl(row), "batch.jsonl")
    request = parsed.requests[0]
    assert parsed.format == "openai_batch"
    assert (request.request_id, request.messages) == ("req-1", (user("Ping"),))
    assert request.metadata == {"model": "gpt-4o-mini"}


@pytest.mark.parametrize(("response", "expected"), [
    ({"choices": [{"message": {"role": "assistant", "content": "Chat reply"}}]}, "Chat reply"),
    ({"choices": [{"text": "Completion reply"}]}, "Completion reply"),
    ("Plain reply", "Plain reply"),
    ({"error": {"message": "rate limited"}}, None),
])
def test_proxy_response_shapes(response, expected):
    row = {"request": {"prompt": "Say hi"}, "response": response,
           "usage": {"prompt_tokens": 3, "completion_tokens": 2}}
    request = parse_log(jsonl(row), "proxy.jsonl").requests[0]
    assert (request.logged_output, request.messages) == (expected, (user("Say hi"),))
    assert (request.logged_prompt_tokens, request.logged_output_tokens) == (3, 2)


def test_proxy_usage_inside_response_is_read():
    row = {"request": {"messages": [user("Q")]},
           "response": {"choices": [{"text": "A"}], "usage": {"prompt_tokens": 9}}}
    request = parse_log(jsonl(row), "proxy.jsonl").requests[0]
    assert (request.logged_prompt_tokens, request.logged_output_tokens) == (9, None)


@pytest.mark.parametrize("key", ["reference", "expected", "expected_output", "ideal", "answer",
                                 "ground_truth", "label"])
def test_reference_aliases(key):
    request = parse_log(jsonl({"prompt": "Q", key: "A"}), "r.jsonl").requests[0]
    assert request.reference == "A"


@pytest.mark.parametrize(("value", "expected"), [(True, "true"), (3, "3"), (" ", None)])
def test_non_string_and_blank_references(value, expected):
    request = parse_log(jsonl({"prompt": "Q", "label": value}), "r.jsonl").requests[0]
    assert request.reference == expected


def test_metadata_merges_given_dict_with_top_level_scalars():
    row = {"prompt": "Q", "user": "u1", "score": 0.5, "tags": ["x"], "metadata": {"team": "ops"}}
    request = parse_log(jsonl(row), "m.jsonl").requests[0]
    assert request.metadata == {"user": "u1", "score": 0.5, "team": "ops"}


def test_blank_lines_skipped_and_lines_are_physical():
    data = b'\n{"prompt": "a"}\n\n   \n{"prompt": "b"}\n\n'
    parsed = parse_log(data, "b.jsonl")
    assert [r.line for r in parsed.requests] == [2, 5]
    assert parsed.total_rows == 2


def test_json_array_file_numbers_rows_by_entry():
    data = json.dumps([{"prompt": "a"}, 3, {"prompt": "c"}], indent=2).encode()
    parsed = parse_log(data, "arr.json")
    assert [r.line for r in parsed.requests] == [1, 3]
    assert [(i.line, i.field) for i in parsed.issues] == [(2, "json")]
    assert parsed.total_rows == 3


def test_single_pretty_printed_object():
    data = b"\n\n" + json.dumps({"messages": [user("Hi")]}, indent=2).encode()
    parsed = parse_log(data, "one.json")
    assert [(r.line, r.messages) for r in parsed.requests] == [(3, (user("Hi"),))]


def test_format_is_chosen_by_majority_of_lines():
    data = jsonl({"request": {"prompt": "a"}}, {"request": {"prompt": "b"}}, {"prompt": "c"})
    parsed = parse_log(data, "mixed.jsonl")
    assert parsed.format == "proxy_jsonl"
    assert len(parsed.requests) == 2
    field, reason = issue_map(parsed)[3]
    assert field == "request" and "missing" in reason


def test_jsonl_content_without_extension_is_sniffed():
    assert parse_log(jsonl({"prompt": "a"}), "upload.txt").format == "prompt_jsonl"


# --------------------------------------------------------------------------- bad JSON rows


BAD_ROWS = [  # (row, expected field, words the reason must contain)
    ('{"prompt": "unterminated', "json", "column"),
    ("[1, 2]", "json", "expected a JSON object"),
    ({"foo": 1}, "messages", 'no "messages" or "prompt"'),
    ({"prompt": "  "}, "prompt", "non-empty string"),
    ({"messages": "hello"}, "messages", "non-empty list"),
    ({"messages": []}, "messages", "non-empty list"),
    ({"messages": ["hello"]}, "messages[0]", "must be an object"),
    ({"messages": [{"role": "bot", "content": "x"}]}, "messages[0].role", "must be one of"),
    ({"messages": [{"content": "x"}]}, "messages[0].role", "missing"),
    ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content", "string"),
    ({"messages": [{"role": "system", "content": "x"}]}, "messages", "no user message"),
    ({"messages": [user(" ")]}, "messages[0].content", "empty"),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": "a"},
                                                {"type": "image_url", "image_url": {}}]}]},
     "messages[0].content[1]", "only text parts"),
    ({"messages": [user("q")], "usage": {"prompt_tokens": -3}}, "usage.prompt_tokens",
     "non-negative integer"),
    ({"messages": [user("q")], "usage": {"completion_tokens": True}}, "usage.completion_tokens",
     "non-negative integer"),
    ({"messages": [user("q")], "usage": 12}, "usage", "must be an object"),
    ({"messages": [user("q")], "reference": ["a"]}, "reference", "must be a string"),
    ({"messages": [user("q")], "metadata": "x"}, "metadata", "must be an object"),
]


def test_each_bad_row_is_reported_at_its_line_and_good_rows_are_kept():
    good = {"messages": [user("fine")]}
    rows = []
    for bad, _, _ in BAD_ROWS:
        rows += [good, bad]
    parsed = parse_log(jsonl(*rows), "bad.jsonl")
    assert parsed.format == "chat_jsonl"
    assert [r.line for r in parsed.requests] == list(range(1, 2 * len(BAD_ROWS), 2))
    assert parsed.total_rows == 2 * len(BAD_ROWS)
    issues = issue_map(parsed)
    assert sorted(issues) == list(range(2, 2 * len(BAD_ROWS) + 1, 2))
    for n, (_, field, words) in enumerate(BAD_ROWS):
        got_field, reason = issues[2 * n + 2]
        assert got_field == field, (n, reason)
        assert words in reason, (n, reason)


def test_invalid_json_reason_gives_position():
    parsed = parse_log(b'{"prompt": "ok"}\n{"prompt": "a",}\n', "x.jsonl")
    (issue,) = parsed.issues
    assert (issue.line, issue.field) == (2, "json")
    assert "column 16" in issue.reason


def test_batch_row_without_body_is_explained():
    data = jsonl({"custom_id": "a", "body": {"messages": [user("x")]}}, {"custom_id": "b"})
    parsed = parse_log(data, "batch.jsonl")
    assert issue_map(parsed)[2][0] == "body"
    assert [r.request_id for r in parsed.requests] == ["a"]


def test_bad_nested_message_in_proxy_request_names_full_path():
    data = jsonl({"request": {"messages": [user("ok")]}},
                 {"request": {"messages": [{"role": "user"}]}})
    field, _ = issue_map(parse_log(data, "p.jsonl"))[2]
    assert field == "request.messages[0].content"


# --------------------------------------------------------------------------- CSV


def test_csv_bom_crlf_multiline_and_commas_in_quotes():
    text = (
        "ID,Question,Expected_Output,System,Response,team\r\n"
        'a1,"First line\r\nsecond line, with comma",yes,Be terse.,"ok, sure",ops\r\n'
        "\r\n"
        'a2,"Say ""hi""",,,,\r\n'
        'a3,"multi\nline\nprompt",no,,,sales\r\n'
    )
    parsed = parse_log(b"\xef\xbb\xbf" + text.encode(), "t.csv")
    assert parsed.format == "csv"
    assert (parsed.total_rows, parsed.issues) == (3, ())
    a1, a2, a3 = parsed.requests
    assert [r.line for r in parsed.requests] == [2, 5, 6]
    assert a1.messages == ({"role": "system", "content": "Be terse."},
                           user("First line\r\nsecond line, with comma"))
    assert (a1.request_id, a1.reference, a1.logged_output) == ("a1", "yes", "ok, sure")
    assert a1.metadata == {"team": "ops"}
    assert (a2.messages, a2.reference, a2.logged_output) == ((user('Say "hi"'),), None, None)
    assert a3.messages == (user("multi\nline\nprompt"),)


def test_csv_bad_rows_are_reported_and_others_kept():
    text = 'prompt,label\nok,1\n,2\n"a","b","c"\n"multi\nline",3\n  ,4\nlast,5\n'
    parsed = parse_log(text.encode(), "t.csv")
    assert [(r.line, r.prompt_text) for r in parsed.requests] == [
        (2, "ok"), (5, "multi\nline"), (8, "last")]
    issues = issue_map(parsed)
    assert sorted(issues) == [3, 4, 7]
    assert issues[3][0] == "prompt" and "empty" in issues[3][1]
    assert issues[4][0] == "row" and "3 cells but the header has 2" in issues[4][1]
    assert parsed.total_rows == 6


def test_csv_semicolon_delimited_export():
    parsed = parse_log(b"Input;Label\nWhat is 2+2?;4\n", "excel.csv")
    request = parsed.requests[0]
    assert (request.prompt_text, request.reference) == ("What is 2+2?", "4")


def test_csv_content_without_extension_is_sniffed():
    assert parse_log(b"query\nhello\n", "upload.txt").format == "csv"


# --------------------------------------------------------------------------- unusable files


@pytest.mark.parametrize(("data", "filename", "words"), [
    (b"", "e.jsonl", ["is empty", "JSONL or CSV"]),
    (b"  \n\r\n\t\n", "w.csv", ["only whitespace"]),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "pic.jsonl", ["NUL bytes", "UTF-8"]),
    ("prompt\nh\xe9llo\n".encode("latin-1"), "latin.csv", ["not UTF-8", "byte 8", "re-save"]),
    (jsonl({"foo": 1, "bar": 2}, {"foo": 3}), "schema.jsonl",
     ["found keys: bar, foo", '"messages"', '"prompt"', '"custom_id"', '"request"']),
    (b"id,content,label\n1,hello,x\n", "noprompt.csv",
     ["no prompt column", "id, content, label", "prompt, input, question, query, text, message"]),
    (b"prompt,label\n", "header_only.csv", ["no data rows"]),
])
def test_unusable_file_raises_one_helpful_error(data, filename, words):
    with pytest.raises(LogFormatError) as caught:
        parse_log(data, filename)
    message = str(caught.value)
    assert message.startswith(filename)
    for word in words:
        assert word in message


def test_file_with_no_valid_rows_lists_first_issues():
    data = jsonl({"prompt": ""}, "not json", {"messages": []}, {"prompt": 3}, {"prompt": None})
    with pytest.raises(LogFormatError) as caught:
        parse_log(data, "allbad.jsonl")
    message = str(caught.value)
    assert "none of its 5 rows is usable" in message
    assert "line 1 (prompt)" in message and "line 2 (json)" in message
    assert "line 3 (messages)" in message and message.endswith(" | and 2 more")
    assert "line 4" not in message


def test_jsonl_of_only_broken_lines_is_unusable():
    with pytest.raises(LogFormatError, match=r"none of its 2 rows .* line 1 \(json\)"):
        parse_log(b"hello\nworld\n", "text.jsonl")


# --------------------------------------------------------------------------- token_stats


def _request(*messages: dict[str, str], reference=None, output=None) -> LogRequest:
    return LogRequest(line=1, messages=messages, reference=reference, logged_output=output)


def test_token_stats_matches_hand_computed_values():
    requests = [
        _request(user("a"), reference="x"),                                # 1 word, 1 char
        _request({"role": "system", "content": "b"}, user("c d")),         # "b\nc d": 3, 5
        _request(user("e f g h"), reference="y"),                          # 4 words, 7 chars
        _request(user("i j k l m n o p q r"), output="z"),                 # 10 words, 19 chars
    ]
    stats = token_stats(requests, count_tokens=lambda text: 2 * len(text.split()))
    assert stats["n"] == 4
    # words sorted [1, 3, 4, 10]: p50 at rank 1.5 -> 3.5; p95 at rank 2.85 -> 4 + 0.85 * 6
    assert stats["prompt_words"] == pytest.approx({"mean": 4.5, "p50": 3.5, "p95": 9.1, "max": 10})
    # chars sorted [1, 5, 7, 19]: p50 -> 6.0; p95 -> 7 + 0.85 * 12 = 17.2
    chars = {"mean": 8.0, "p50": 6.0, "p95": 17.2, "max": 19}
    assert stats["prompt_chars"] == pytest.approx(chars)
    # tokens = 2 * words: [2, 6, 8, 20]
    tokens = {"mean": 9.0, "p50": 7.0, "p95": 18.2, "max": 20}
    assert stats["prompt_tokens"] == pytest.approx(tokens)
    assert (stats["with_reference"], stats["with_logged_output"]) == (2, 1)


def test_token_stats_without_counter_and_edge_sizes():
    assert "prompt_tokens" not in token_stats([_request(user("a b"))])
    one = token_stats([_request(user("a b"))])["prompt_words"]
    assert one == {"mean": 2.0, "p50": 2.0, "p95": 2.0, "max": 2}
    empty = token_stats([], count_tokens=len)
    assert empty["n"] == 0 and empty["with_reference"] == 0
    assert empty["prompt_tokens"] == {"mean": None, "p50": None, "p95": None, "max": None}


# --------------------------------------------------------------------------- hostile input
# Each of these once crashed ingest with a traceback (issue 13); now each is one row issue
# naming its line, the other rows are kept, and what is kept can be stored.

GOOD = b'{"prompt": "fine"}'


def _only_issue(data: bytes, filename: str = "h.jsonl"):
    parsed = parse_log(data, filename)
    assert [r.line for r in parsed.requests] == [1, 3], parsed.issues
    (issue,) = parsed.issues
    assert issue.line == 2
    return issue


@pytest.mark.parametrize(("bad", "field", "words"), [
    (b'{"prompt": "x", "metadata": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "json",
     "nested too deeply"),
    (b'{"prompt": "x", "metadata": {"a": ' + b"[" * 70 + b"]" * 70 + b"}}",
     "metadata.a" + "[0]" * 10 + "...",
     "nests more than 64 levels"),
    (b'{"prompt": "x", "n": ' + b"9" * 5000 + b"}", "json", "more than 4,300 digits"),
    (b'{"prompt": "x", "usage": {"prompt_tokens": 9223372036854775808}}', "usage.prompt_tokens",
     "at most 2147483647 (got 9223372036854775808)"),
    (b'{"prompt": "a\\ud800b"}', "prompt", "lone UTF-16 surrogate (\\ud800 at character 1)"),
    (b'{"prompt": "x", "reference": "\\udfff"}', "reference", "lone UTF-16 surrogate"),
    (b'{"prompt": "x", "metadata": {"k\\udc80": 1}}', "metadata.k\ufffd", "lone UTF-16"),
    (b'{"prompt": "caf\xe9"}', "encoding", "byte 34 of the file (0xE9) is not UTF-8"),
])
def test_hostile_row_is_one_issue_at_its_line(bad, field, words, store):
    data = GOOD + b"\n" + bad + b"\n" + GOOD
    issue = _only_issue(data)
    assert issue.field == field and words in issue.reason, issue
    assert len(issue.reason) < 300
    parsed = parse_log(data, "h.jsonl")
    workload = store.add_workload("h", "h.jsonl", data, parsed)  # what is kept stores fine
    assert [r.request.line for r in store.get_requests(workload.id)] == [1, 3]
    assert store.get_workload(workload.id).issues == parsed.issues
    assert store.get_raw_upload(workload.id) == data


def test_valid_surrogate_pair_is_kept():
    request = parse_log(b'{"prompt": "smile \\ud83d\\ude00"}', "s.jsonl").requests[0]
    assert request.prompt_text == "smile \U0001F600"


def test_huge_bad_value_is_quoted_as_a_short_excerpt():
    role = "x" * 5_000_000
    data = jsonl({"messages": [{"role": role, "content": "a"}]}, {"messages": [user("ok")]})
    (issue,) = parse_log(data, "big.jsonl").issues
    assert issue.field == "messages[0].role"
    assert '"' + "x" * 80 + '"... (5,000,000 characters)' in issue.reason
    assert len(issue.reason) < 300


def test_huge_csv_cell_is_read_and_huge_header_quoted_short():
    cell = "word " * 1_000_000  # 5 MB, beyond the csv module's default 128 KiB cell limit
    parsed = parse_log(f'prompt\n"{cell}"\nsmall\n'.encode(), "big.csv")
    assert [len(r.prompt_text) for r in parsed.requests] == [len(cell), 5]
    with pytest.raises(LogFormatError) as caught:
        parse_log(("h" * 5_000_000 + ",x\n1,2\n").encode(), "wide.csv")
    assert len(str(caught.value)) < 600


def test_invalid_utf8_rejects_only_its_lines_with_byte_offsets():
    data = b'{"prompt": "a"}\n{"prompt": "\xff"}\n{"prompt": "b"}\n\xc3\n{"prompt": "c"}'
    parsed = parse_log(data, "u.jsonl")
    assert [r.prompt_text for r in parsed.requests] == ["a", "b", "c"]
    assert [(i.line, i.field) for i in parsed.issues] == [(2, "encoding"), (4, "encoding")]
    assert "byte 28 of the file (0xFF)" in parsed.issues[0].reason
    assert "byte 48 of the file (0xC3)" in parsed.issues[1].reason
    assert (data.index(b"\xff"), data.index(b"\xc3")) == (28, 48)


def test_invalid_utf8_in_csv_rejects_only_its_rows():
    data = b'prompt,label\nok,1\n"multi\nli\xffne",2\nfine,3\nbad \xe9,4\n'
    parsed = parse_log(data, "u.csv")
    assert [(r.line, r.prompt_text) for r in parsed.requests] == [(2, "ok"), (5, "fine")]
    assert [(i.line, i.field) for i in parsed.issues] == [(3, "encoding"), (6, "encoding")]
    assert "byte 27 of the file (0xFF)" in parsed.issues[0].reason
    assert "byte 45 of the file (0xE9)" in parsed.issues[1].reason
    assert (data.index(b"\xff"), data.index(b"\xe9")) == (27, 45)


@pytest.mark.parametrize("ending", [b"\r", b"\r\n", b"\n"])
def test_every_line_ending_is_a_line(ending):
    rows = [b'{"prompt": "a"}', b"", b'{"prompt": "b",}', b'{"prompt": "c"}']
    parsed = parse_log(ending.join(rows), "e.jsonl")
    assert [r.line for r in parsed.requests] == [1, 4]
    assert [(i.line, i.field) for i in parsed.issues] == [(3, "json")]
    csv_parsed = parse_log(ending.join([b"prompt", b"a", b"", b'"b', b'c"', b"d"]), "e.csv")
    assert [(r.line, r.prompt_text) for r in csv_parsed.requests] == [
        (2, "a"), (4, "b" + ending.decode() + "c"), (6, "d")]


def test_unicode_line_separator_inside_a_json_string_is_not_a_line_break():
    data = '{"prompt": "a\u2028b\x85c"}\n{"prompt": "d"}'.encode()
    parsed = parse_log(data, "ls.jsonl")
    assert [(r.line, r.prompt_text) for r in parsed.requests] == [(1, "a\u2028b\x85c"), (2, "d")]


def test_surrogates_in_file_and_workload_names_are_stored_as_replacement(store):
    name, filename = "team\udcff", "log\udce9.jsonl"  # as argv/os give undecodable bytes
    parsed = parse_log(GOOD, filename)
    workload = store.add_workload(name, filename, GOOD, parsed)
    assert (workload.name, workload.filename) == ("team\ufffd", "log\ufffd.jsonl")
    with pytest.raises(LogFormatError) as caught:
        parse_log(b"", filename)
    assert str(caught.value).startswith("log\ufffd.jsonl is empty")


def test_file_of_only_hostile_rows_is_one_file_error():
    data = b"[" * 50_000 + b"\n" + b'{"prompt": "\\udc00"}' + b"\n\xff\xfe"
    with pytest.raises(LogFormatError, match=r"none of its 3 rows is usable.*line 1 \(json\)"):
        parse_log(data, "bad.jsonl")


def test_cli_ingest_of_names_with_bytes_that_are_not_utf8(tmp_path):
    """`roilab ingest` with a file name and --name that are not UTF-8 (Python sees lone
    surrogates) and a lone-surrogate prompt: stored, the bad row reported, exit 0."""
    import os
    import subprocess
    import sys

    log = tmp_path / os.fsdecode(b"log\xff.jsonl")
    log.write_bytes(b'{"prompt": "ok"}\n{"prompt": "a\\ud800"}\n')
    env = {**os.environ, "ROILAB_DATA_DIR": str(tmp_path / "data"), "ROILAB_DB_URL": ""}
    done = subprocess.run([sys.executable, "-m", "engine.cli.main", "ingest", str(log), "--name",
                           os.fsdecode(b"team\xfe")], cwd=SAMPLES.parent.parent, env=env,
                          capture_output=True, check=False)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    assert "Workload 1 'team\ufffd': 1 requests" in done.stdout.decode()
    assert "line 2" in done.stderr.decode() and "lone UTF-16 surrogate" in done.stderr.decode()
    assert "Traceback" not in done.stderr.decode()


def test_bad_value_is_quoted_with_control_characters_escaped():
    data = jsonl({"messages": [{"role": "a\x1b[31mb", "content": "x"}]}, {"messages": [user("ok")]})
    (issue,) = parse_log(data, "esc.jsonl").issues
    assert '(got "a\\u001b[31mb")' in issue.reason and "\x1b" not in issue.reason
