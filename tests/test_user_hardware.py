"""A run priced on the user's own hardware entry reads back everywhere (issue 11).

Hardware keys resolve in one place, the store's merged catalog (``Store.get_hardware``): the
built-ins plus the entries a user stored on the Hardware page. Before, the pilot report
resolved against the built-ins only, so such a run crashed `roilab pilot`'s final print,
`roilab show`, the Overview and Results pages and the PDFs with "Unknown hardware". The
run here is a real pilot of the embedded model through the CLI.
"""
from __future__ import annotations

import subprocess

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from engine.cli.main import main
from engine.reports.business_pdf import business_pdf_for_run
from engine.store.store import Store

pytestmark = pytest.mark.slow

KEY, NAME, PRICE = "onprem-xeon", "Xeon box on premise", 0.37
LOG = ('{"prompt": "What is the capital of France? One word.", "reference": "Paris"}\n'
       '{"prompt": "What is 2+2? Answer with a number.", "reference": "4"}\n')


@pytest.fixture(scope="module")
def priced_run(tmp_path_factory, embedded_model_dir):
    """A store holding the user's entry and a pilot priced on it; env points the app at it."""
    from tests.conftest import make_settings

    tmp = tmp_path_factory.mktemp("userhw")
    settings = make_settings(tmp / "data", embedded_model_dir)
    mp = pytest.MonkeyPatch()
    mp.setenv("ROILAB_DATA_DIR", str(settings.data_dir))
    mp.setenv("ROILAB_DB_URL", settings.resolved_db_url())
    store = Store(settings.resolved_db_url())
    store.add_hardware(key=KEY, name=NAME, kind="cpu", memory_gb=64, price_per_hour=PRICE,
                       price_source="amortised capex, 36 months", price_date="2026-11")
    log = tmp / "log.jsonl"
    log.write_text(LOG)
    assert main(["ingest", str(log)]) == 0
    code = main(["pilot", "--in-process", "--workload", "1", "--variants", "", "--hardware", KEY,
                 "--max-new-tokens", "4", "--name", "on my box"])
    assert code == 0  # the final print resolves the user's key (it crashed here before)
    [run] = store.list_runs()
    yield {"store": store, "run": run, "tmp": tmp, "settings": settings}
    mp.undo()


def test_the_run_stores_the_users_key(priced_run):
    assert priced_run["run"].spec["cost"]["hardware"] == KEY


def test_roilab_show_prices_on_the_users_entry(priced_run, capsys):
    capsys.readouterr()
    assert main(["show", str(priced_run["run"].id)]) == 0
    out = capsys.readouterr().out
    assert NAME in out and f"${PRICE:.2f}" in out


def _pdf_text(path) -> str:
    return subprocess.run(["pdftotext", "-layout", str(path), "-"], capture_output=True,
                          text=True, check=True).stdout


def test_both_pdfs_name_the_users_entry(priced_run):
    out = priced_run["tmp"] / "case.pdf"
    assert main(["report", str(priced_run["run"].id), "-o", str(out)]) == 0
    assert NAME in _pdf_text(out)
    data, case = business_pdf_for_run(priced_run["store"], priced_run["run"].id)
    (priced_run["tmp"] / "case2.pdf").write_bytes(data)
    assert NAME in _pdf_text(priced_run["tmp"] / "case2.pdf")
    assert case.rows[0].name == "baseline"


def _page(name: str, **query: str) -> AppTest:
    st.cache_data.clear()
    at = AppTest.from_string(f"from app.views import {name}\n{name}.render()",
                             default_timeout=120)
    for key, value in query.items():
        at.query_params[key] = value
    return at.run()


def _all_text(at: AppTest) -> str:
    parts = [e.value for kind in ("markdown", "caption", "info", "warning", "success",
                                  "metric", "text", "subheader") for e in getattr(at, kind)]
    parts += [str(w.value) for w in at.selectbox]
    parts += [d.value.to_csv() for d in at.dataframe]
    return "\n".join(str(p) for p in parts)


@pytest.mark.parametrize("name", ["overview", "results", "business_case"])
def test_every_page_shows_the_run_priced_on_the_users_entry(priced_run, name):
    at = _page(name, run=str(priced_run["run"].id))
    assert not at.exception, at.exception
    assert not [e.value for e in at.error], [e.value for e in at.error]
    if name == "results":  # the Assumptions selector starts on the run's own entry
        assert at.selectbox(key=f"results.hw.{priced_run['run'].id}").value == KEY


def test_an_unknown_hardware_key_is_refused_before_the_pilot(priced_run, capsys):
    before = len(priced_run["store"].list_runs())
    capsys.readouterr()
    assert main(["pilot", "--workload", "1", "--variants", "", "--hardware", "no-such-box",
                 "--max-new-tokens", "4"]) == 2
    err = capsys.readouterr().err
    assert "Unknown hardware 'no-such-box'" in err and KEY in err  # the user's keys listed too
    assert len(priced_run["store"].list_runs()) == before  # nothing was created or run
