"""The dashboard's exposure (item 6 of issue 13) and its downloadable tables (item 5),
through Streamlit's AppTest over a real SQLite store: login before any page, no formula
reaches a table's "Download as CSV"."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest
import streamlit as st
from hostile_run import HOSTILE_LOG, HYPERLINK, hostile_run
from streamlit import config
from streamlit.testing.v1 import AppTest

from engine.core.dashboard_access import check_exposure, is_local_address, password_matches
from engine.core.errors import RoilabError
from engine.core.settings import Settings
from engine.ingest.logs import parse_log
from engine.store.store import Store

REPO = Path(__file__).resolve().parent.parent
TIMEOUT = 120
PASSWORD = "correct horse battery staple"


@pytest.fixture
def env(settings: Settings, monkeypatch) -> Settings:
    monkeypatch.setenv("ROILAB_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("ROILAB_DB_URL", settings.resolved_db_url())
    monkeypatch.delenv("ROILAB_DASHBOARD_PASSWORD", raising=False)
    st.cache_data.clear()
    return settings


def _router() -> AppTest:
    return AppTest.from_file(str(REPO / "app" / "main.py"), default_timeout=TIMEOUT)


# ---- tables: what the toolbar's "Download as CSV" would write -------------------------
def test_results_tables_show_formulas_neutralised(env):
    run_id = hostile_run(Store(env.resolved_db_url()))
    at = AppTest.from_string("from app.views import results\nresults.render()",
                             default_timeout=TIMEOUT)
    at.query_params["run"] = str(run_id)
    at.run()
    assert not at.exception
    side = next(d.value for d in at.dataframe if "baseline output" in d.value.columns)
    assert side["prompt"].iloc[0] == "'" + HYPERLINK
    assert side["baseline output"].iloc[0] == "'" + HYPERLINK
    assert side["reference"].iloc[0] == "'@SUM(1+1)"
    variants = next(d.value for d in at.dataframe if "techniques" in d.value.columns)
    assert list(variants["variant"]) == ["baseline", "'+1+1 variant"]
    # the detail below the table is the literal text, unchanged
    assert HYPERLINK in [t.value for t in at.text]


def test_overview_workload_table_neutralises_names(env):
    store = Store(env.resolved_db_url())
    hostile_run(store)
    store.add_workload(HYPERLINK, "-2+3.csv", HOSTILE_LOG, parse_log(HOSTILE_LOG, "h.jsonl"))
    at = AppTest.from_string("from app.views import overview\noverview.render()",
                             default_timeout=TIMEOUT).run()
    assert not at.exception
    workloads = next(d.value for d in at.dataframe if "valid requests" in d.value.columns)
    assert list(workloads["name"]) == ["'" + HYPERLINK, "workload \x1b[31mred\x1b[0m"] or \
        list(workloads["name"])[::-1] == ["'" + HYPERLINK, "workload \x1b[31mred\x1b[0m"]
    assert "'-2+3.csv" in list(workloads["file"])
    assert workloads["valid requests"].dtype.kind == "i"  # numbers stay numbers


def test_a_static_table_shows_link_markup_as_typed():
    """app.ui.table (st.table renders cells as markdown): a variant named with link markup
    shows as its literal text, not a link; numbers stay numbers."""
    at = AppTest.from_string(
        "import pandas as pd\nfrom app import ui\n"
        "ui.table(pd.DataFrame([{'claim': 'PTQ gives 2-4x', 'variant': '[x](http://evil.test)',"
        " 'figure': '-', 'n': 3}]).set_index('claim'))", default_timeout=TIMEOUT).run()
    assert not at.exception
    shown = at.table[0].value
    assert list(shown.index) == ["PTQ gives 2\\-4x"]
    assert shown["variant"].iloc[0] == "\\[x\\]\\(http\\://evil\\.test\\)"
    assert shown["figure"].iloc[0] == "\\-" and shown["n"].iloc[0] == 3


def test_pages_show_tables_only_through_ui_dataframe():
    """A page that called st.dataframe directly would bypass the neutralising."""
    for path in sorted((REPO / "app").rglob("*.py")):
        if path.name == "ui.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in (
                    "dataframe", "data_editor", "table") and \
                    isinstance(node.value, ast.Name) and node.value.id == "st":
                pytest.fail(f"{path.relative_to(REPO)}:{node.lineno} calls st.{node.attr}; "
                            "use app.ui.dataframe (formula cells neutralised) or app.ui.table "
                            "(markdown escaped)")


# ---- login ---------------------------------------------------------------------------
def test_no_password_on_localhost_opens_the_pages(env):
    at = _router().run()
    assert not at.exception and at.title[0].value == "roilab"
    assert not at.get("text_input")


def test_password_set_shows_only_the_login_form(env, monkeypatch):
    hostile_run(Store(env.resolved_db_url()))
    monkeypatch.setenv("ROILAB_DASHBOARD_PASSWORD", PASSWORD)
    at = _router().run()
    assert not at.exception
    assert [t.label for t in at.text_input] == ["Password"]
    assert not at.dataframe and not at.metric and not at.get("plotly_chart")
    assert [t.value for t in at.title] == ["roilab"]  # the form's title, no page heading


def test_wrong_password_stays_out(env, monkeypatch):
    hostile_run(Store(env.resolved_db_url()))
    monkeypatch.setenv("ROILAB_DASHBOARD_PASSWORD", PASSWORD)
    at = _router().run()
    at.text_input[0].input(PASSWORD + " ")
    at.button[0].click()
    at.run()
    assert not at.exception
    assert at.error[0].value == "Wrong password."
    assert not at.dataframe and not at.metric and "login.ok" not in at.session_state


def test_correct_password_opens_the_pages_and_is_remembered(env, monkeypatch):
    hostile_run(Store(env.resolved_db_url()))
    monkeypatch.setenv("ROILAB_DASHBOARD_PASSWORD", PASSWORD)
    at = _router().run()
    at.text_input[0].input(PASSWORD)
    at.button[0].click()
    at.run()
    assert not at.exception and not at.error
    assert at.session_state["login.ok"] is True
    assert at.dataframe and not at.text_input  # the overview, with its tables
    at.run()  # a later script run of the same session needs no password again
    assert at.dataframe and not at.text_input


def test_exposed_address_without_password_renders_nothing(env):
    previous = config.get_option("server.address")
    config.set_option("server.address", "0.0.0.0")
    try:
        at = _router().run()
    finally:
        config.set_option("server.address", previous)
    assert not at.exception and not at.dataframe and not at.text_input
    assert "ROILAB_DASHBOARD_PASSWORD" in at.error[0].value


# ---- the rules, pure ------------------------------------------------------------------
@pytest.mark.parametrize(("host", "local"), [
    ("127.0.0.1", True), ("127.1.2.3", True), ("localhost", True), ("::1", True),
    ("[::1]", True), ("0.0.0.0", False), ("", False), (None, False), ("::", False),
    ("192.168.1.5", False), ("myhost.example", False)])
def test_is_local_address(host, local):
    assert is_local_address(host) is local


def test_check_exposure_and_password_comparison():
    check_exposure("127.0.0.1", None)
    check_exposure("0.0.0.0", "pw")
    with pytest.raises(RoilabError, match="ROILAB_DASHBOARD_PASSWORD"):
        check_exposure("0.0.0.0", None)
    assert password_matches("pw", "pw") and not password_matches("pw ", "pw")
    assert not password_matches("", "pw")


def test_an_unexpected_error_is_redacted_for_the_visitor_and_logged(env, capfd):
    """.streamlit/config.toml's client.showErrorDetails = "none": no message, type or
    traceback in the browser; the details go to the server's console log."""
    at = AppTest.from_string("raise ValueError('secret detail from the server')",
                             default_timeout=TIMEOUT).run()
    shown = at.exception[0]
    assert "secret detail" not in shown.message and "redacted" in shown.message
    assert not shown.stack_trace and "ValueError" not in shown.message
    logged = "".join(capfd.readouterr())
    assert "secret detail" in logged and "ValueError" in logged
