"""Uploads understood (issue 12, item 5): every common reference name is read in CSV and JSON,
the columns nothing read are listed, a mostly broken file is a warning, a refused upload
shows no earlier report, and a pilot is steered away from a workload too small to measure.

Fast: no model, no network (the CLI pilot is refused before anything loads).
"""
from __future__ import annotations

import json

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from engine.cli.main import main
from engine.core.domain import RowIssue, Workload
from engine.core.settings import Settings
from engine.ingest.log_request import REFERENCE_KEYS
from engine.ingest.logs import parse_log
from engine.ingest.review import (
    MIN_PILOT_REQUESTS,
    REJECTED_WARN_FRACTION,
    default_workload,
    field_notes,
    rejected_warning,
    small_workload_warning,
)
from engine.store.store import Store

TIMEOUT = 120
BRIEF_NAMES = ("reference", "expected_answer", "expected", "gold", "gold_answer", "target",
               "ideal", "answer", "label", "ground_truth")
MOSTLY_BROKEN = b'{"prompt": "What is 2+2?"}\n{"prompt": ""}\n{"messages": "nope"}\n'


def jsonl(*rows) -> bytes:
    return b"\n".join(json.dumps(r).encode() for r in rows) + b"\n"


def plain(text: str) -> str:
    """Markdown-escaped dashboard text as the reader sees it."""
    return text.replace("\\", "")


# ---- the reference names, one list for every format ------------------------------------
def test_every_name_asked_for_is_a_reference_name_and_the_old_ones_stay():
    old = {"reference", "expected", "expected_output", "ideal", "answer", "ground_truth", "label"}
    assert set(BRIEF_NAMES) | old == set(REFERENCE_KEYS)
    assert len(set(REFERENCE_KEYS)) == len(REFERENCE_KEYS)


@pytest.mark.parametrize("name", REFERENCE_KEYS)
@pytest.mark.parametrize("spelling", [str.lower, str.upper, str.title])
def test_reference_name_read_in_csv(name, spelling):
    header = spelling(name)
    parsed = parse_log(f"prompt,{header},team\nWhat is 2+2?,4,ops\n".encode(), "r.csv")
    [request] = parsed.requests
    assert request.reference == "4"
    assert parsed.reference_fields == (header,)
    assert parsed.ignored_fields == ("team",)
    assert request.metadata == {"team": "ops"}


@pytest.mark.parametrize("name", REFERENCE_KEYS)
@pytest.mark.parametrize("spelling", [str.lower, str.upper, str.title])
def test_reference_name_read_in_jsonl(name, spelling):
    key = spelling(name)
    parsed = parse_log(jsonl({"prompt": "What is 2+2?", key: "4", "team": "ops"}), "r.jsonl")
    [request] = parsed.requests
    assert request.reference == "4"
    assert parsed.reference_fields == (key,)
    assert parsed.ignored_fields == ("team",)
    assert request.metadata == {"team": "ops"}  # the reference is not copied into metadata


@pytest.mark.parametrize("name", ["expected_answer", "gold", "target"])
def test_reference_name_read_in_a_json_array_and_chat_rows(name):
    rows = [{"messages": [{"role": "user", "content": "Q"}], name: "A"}]
    parsed = parse_log(json.dumps(rows).encode(), "r.json")
    assert parsed.requests[0].reference == "A" and parsed.reference_fields == (name,)


def test_csv_reference_precedence_first_listed_wins_and_the_other_is_kept():
    parsed = parse_log(b"answer,prompt,label,Expected_Answer\nA,Q,L,E\n", "p.csv")
    [request] = parsed.requests
    assert request.reference == "E"  # expected_answer comes before answer and label
    assert parsed.reference_fields == ("Expected_Answer",)
    assert parsed.ignored_fields == ("answer", "label")
    assert request.metadata == {"answer": "A", "label": "L"}  # nothing lost
    notes = field_notes(parsed)
    assert "Reference answers from column Expected_Answer." in notes
    assert any(n.startswith("Also a reference name, not read: answer, label") for n in notes)


def test_json_reference_precedence_per_row_and_the_other_is_kept():
    parsed = parse_log(jsonl({"prompt": "Q1", "answer": "a", "reference": "r"},
                             {"prompt": "Q2", "answer": "b"},
                             {"prompt": "Q3", "reference": None, "label": "c"}), "p.jsonl")
    assert [r.reference for r in parsed.requests] == ["r", "b", "c"]
    assert parsed.requests[0].metadata == {"answer": "a"}  # the unread one stays metadata
    assert parsed.reference_fields == ("reference", "answer", "label")  # most rows first
    assert parsed.ignored_fields == ()


def test_json_exact_spelling_wins_over_another_case():
    parsed = parse_log(jsonl({"prompt": "Q", "Answer": "upper", "answer": "lower"}), "c.jsonl")
    assert parsed.requests[0].reference == "lower"
    assert parsed.ignored_fields == ("Answer",)


# ---- ignored columns and fields ----------------------------------------------------------
def test_csv_ignored_columns_listed_in_file_order():
    parsed = parse_log(b"id,Question,notes,expected_answer,team,\n1,Q,n,A,ops,\n", "i.csv")
    assert parsed.ignored_fields == ("notes", "team", "(column 6, no name)")
    notes = field_notes(parsed)
    assert notes[0] == "Reference answers from column expected_answer."
    assert notes[-1].startswith("Ignored columns: notes, team, (column 6, no name) (kept")


def test_json_ignored_fields_listed_read_fields_not():
    rows = [{"custom_id": "1", "method": "POST", "url": "/v1/chat/completions",
             "body": {"messages": [{"role": "user", "content": "Q"}]}, "gold": "A",
             "tags": ["x"], "Prompt": "not read: keys other than references are exact"}]
    parsed = parse_log(jsonl(*rows), "b.jsonl")
    assert parsed.format == "openai_batch"
    assert parsed.ignored_fields == ("tags", "Prompt")
    assert "Ignored fields: tags, Prompt" in field_notes(parsed)[-1]


def test_no_reference_says_which_names_are_read():
    parsed = parse_log(b"prompt,solution\nQ,A\n", "n.csv")
    assert parsed.reference_fields == () and parsed.ignored_fields == ("solution",)
    assert field_notes(parsed)[0].startswith("No reference answers: no column is named one of "
                                             "reference, expected_answer")


def test_many_ignored_names_are_cut_short():
    header = "prompt," + ",".join(f"c{i}" for i in range(30)) + "," + "x" * 500
    parsed = parse_log((header + "\nQ" + ",v" * 31 + "\n").encode(), "w.csv")
    assert len(parsed.ignored_fields) == 31
    note = field_notes(parsed)[-1]
    assert "c19" in note and "c20" not in note and "and 11 more" in note and len(note) < 300


# ---- warnings ----------------------------------------------------------------------------
def test_rejected_warning_over_the_fraction_only():
    issue = RowIssue(2, "prompt", "is empty")
    assert REJECTED_WARN_FRACTION == 0.2
    assert rejected_warning(4, [issue]) is None  # 1 of 5 = 20%: not more than 20%
    said = rejected_warning(3, [issue])  # 1 of 4 = 25%
    assert said.startswith("1 of 4 rows was rejected (25%, more than 20%); the 3 usable "
                           "requests were stored. First issues: line 2 (prompt): is empty.")
    many = [RowIssue(n, "json", f"bad {n}") for n in range(2, 8)]
    said = rejected_warning(1, many)
    assert "6 of 7 rows were rejected" in said and "the 1 usable request was stored" in said
    assert "line 4 (json): bad 4 | and 3 more" in said and "bad 5" not in said
    assert rejected_warning(0, []) is None


def _workload(id_: int, n: int) -> Workload:
    return Workload(id=id_, name=f"w{id_}", filename="f", format="csv", n_requests=n,
                    n_issues=0, created_at=None)


def test_default_workload_newest_big_enough_else_largest():
    assert MIN_PILOT_REQUESTS == 20
    assert default_workload([]) is None
    assert default_workload([_workload(1, 20), _workload(2, 500), _workload(3, 1)]).id == 2
    assert default_workload([_workload(3, 25), _workload(2, 500), _workload(1, 30)]).id == 3
    assert default_workload([_workload(1, 19), _workload(2, 1), _workload(3, 19)]).id == 3
    assert small_workload_warning(20) is None
    assert small_workload_warning(1) == ("This workload has 1 request: a pilot on 1 request "
                                         "measures noise; upload a log of at least 20 requests.")


# ---- the CLI -----------------------------------------------------------------------------
@pytest.fixture
def cli_env(settings, monkeypatch) -> Settings:
    monkeypatch.setenv("ROILAB_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("ROILAB_DB_URL", settings.resolved_db_url())
    return settings


def test_cli_ingest_names_the_reference_and_ignored_columns(cli_env, tmp_path, capsys):
    log = tmp_path / "t.csv"
    log.write_bytes(b"id,prompt,EXPECTED_ANSWER,team\n1,What is 2+2?,4,ops\n2,Hi?,hello,ops\n")
    assert main(["ingest", str(log)]) == 0
    out = capsys.readouterr()
    assert "2 requests (csv), 0 rows rejected." in out.out
    assert "  Reference answers from column EXPECTED_ANSWER.\n" in out.out
    assert "  Ignored columns: team (kept with each request as metadata" in out.out
    assert "warning" not in out.err
    [workload] = Store(cli_env.resolved_db_url()).list_workloads()
    stored = Store(cli_env.resolved_db_url()).get_requests(workload.id)
    assert [s.request.reference for s in stored] == ["4", "hello"]


def test_cli_ingest_warns_on_a_mostly_broken_file_and_keeps_the_good_rows(cli_env, tmp_path,
                                                                          capsys):
    log = tmp_path / "broken.jsonl"
    log.write_bytes(MOSTLY_BROKEN)
    assert main(["ingest", str(log)]) == 0
    out = capsys.readouterr()
    assert "1 requests (prompt_jsonl), 2 rows rejected." in out.out
    [warning] = [line for line in out.err.splitlines() if line.startswith("warning:")]
    assert "2 of 3 rows were rejected (67%, more than 20%)" in warning
    assert "line 2 (prompt)" in warning and "line 3 (messages)" in warning
    assert Store(cli_env.resolved_db_url()).list_workloads()[0].n_requests == 1


def test_cli_pilot_warns_on_a_small_workload(cli_env, tmp_path, capsys):
    log = tmp_path / "one.jsonl"
    log.write_bytes(jsonl({"prompt": "Q", "reference": "A"}))
    assert main(["ingest", str(log)]) == 0
    capsys.readouterr()
    # A model folder that does not exist: refused before anything loads (exit 1, failed).
    assert main(["pilot", "--in-process", "--workload", "1", "--model", str(tmp_path / "no-model"),
                 "--variants", "int8"]) == 1
    err = capsys.readouterr().err
    assert ("warning: This workload has 1 request: a pilot on 1 request measures noise; "
            "upload a log of at least 20 requests.") in err


# ---- the dashboard -----------------------------------------------------------------------
@pytest.fixture
def env(settings, monkeypatch) -> Settings:
    monkeypatch.setenv("ROILAB_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("ROILAB_DB_URL", settings.resolved_db_url())
    st.cache_data.clear()
    return settings


def page(name: str) -> AppTest:
    return AppTest.from_string(f"from app.views import {name}\n{name}.render()",
                               default_timeout=TIMEOUT).run()


def _upload(at: AppTest, filename: str, raw: bytes) -> AppTest:
    at.file_uploader[0].upload(filename, raw, "text/plain")
    return at.button[0].click().run()  # the form's submit button


def _captions(at: AppTest) -> list[str]:
    return [plain(c.value) for c in at.caption]


def test_upload_page_warns_on_a_mostly_broken_file(env):
    at = _upload(page("upload"), "broken.jsonl", MOSTLY_BROKEN)
    assert not at.exception and not at.error
    assert not at.success  # no green tick
    said = plain(at.warning[0].value)
    assert said.startswith("Stored workload #1, but 2 of 3 rows were rejected (67%, more than "
                           "20%); the 1 usable request was stored. First issues: line 2 (prompt)")
    assert "line 3 (messages)" in said
    metrics = {m.label: m.value for m in at.metric}
    assert (metrics["Valid requests"], metrics["Invalid rows"]) == ("1", "2")
    assert Store(env.resolved_db_url()).list_workloads()[0].n_requests == 1  # nothing lost


def test_upload_page_names_the_reference_and_ignored_columns(env):
    raw = b"prompt,Expected_Answer,answer,team\nWhat is 2+2?,4,four,ops\nHi?,hello,hi,ops\n"
    at = _upload(page("upload"), "tickets.csv", raw)
    assert not at.exception and not at.warning
    assert "2 usable requests, 0 rejected rows" in at.success[0].value
    captions = _captions(at)
    assert "Reference answers from column Expected_Answer." in captions
    assert any(c.startswith("Also a reference name, not read: answer") for c in captions)
    assert any(c.startswith("Ignored columns: answer, team") for c in captions)
    assert "2 of 2 requests have a reference answer; 0 have a logged output." in [
        t.value for t in at.text]


def test_upload_page_shows_no_stale_report_after_a_refused_upload(env):
    at = _upload(page("upload"), "good.jsonl", jsonl({"prompt": "Q", "reference": "A"}))
    assert at.success and [s.value for s in at.subheader][0] == "Validation report"
    at = _upload(at, "noprompt.csv", b"foo,bar\n1,2\n")
    assert not at.exception
    assert "no prompt column" in plain(at.error[0].value)
    assert not at.success and not at.metric and not at.subheader  # no earlier workload's report
    assert at.selectbox[-1].label == "Inspect stored workload" and at.selectbox[-1].value is None
    at.run()  # a rerun (another widget) keeps it that way
    assert not at.metric
    at.selectbox[-1].select(1).run()  # picking the stored workload shows its report again
    assert [s.value for s in at.subheader][0] == "Validation report" and at.metric


def _store_workload(settings: Settings, name: str, n: int) -> None:
    raw = jsonl(*({"prompt": f"Question {i}?", "reference": str(i)} for i in range(n)))
    Store(settings.resolved_db_url()).add_workload(name, f"{name}.jsonl", raw,
                                                   parse_log(raw, f"{name}.jsonl"))


def test_run_pilot_defaults_to_a_big_enough_workload(env):
    _store_workload(env, "big", 25)
    _store_workload(env, "tiny", 1)  # newer, but a pilot on it measures noise
    at = page("run_pilot")
    assert not at.exception
    select = at.selectbox[0]
    assert select.label == "Workload" and select.value == 1
    assert not [w for w in at.warning if "request" in w.value]  # the prices' age only
    select.select(2).run()
    assert plain(at.warning[0].value) == ("This workload has 1 request: a pilot on 1 request "
                                          "measures noise; upload a log of at least 20 requests.")


def test_run_pilot_warns_when_every_workload_is_small(env):
    _store_workload(env, "three", 3)
    _store_workload(env, "one", 1)
    at = page("run_pilot")
    assert at.selectbox[0].value == 1  # the largest
    assert plain(at.warning[0].value).startswith("This workload has 3 requests: a pilot on 3 "
                                                 "requests measures noise")
