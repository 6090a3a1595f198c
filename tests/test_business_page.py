"""The Business case and Hardware pages through Streamlit's AppTest, over a real SQLite store.

The stored run is test_business's hand-worked one (baseline, int4, LLMLingua measured on an
A100 80 GB), so no model runs here; the page's figures are checked against
engine.business.case computed from the same database.
"""
from __future__ import annotations

from dataclasses import replace

import pytest
from test_app_pages import _use, page
from test_business import _stored_run

from engine.business.case import build_business_case
from engine.core.settings import Settings
from engine.reports.business_pdf import (
    basis,
    basis_detail,
    decision_sentence,
    fmt_money,
    fmt_months,
)
from engine.store.store import Store


@pytest.fixture
def env(settings, monkeypatch) -> Settings:
    return _use(settings, monkeypatch)


@pytest.fixture
def run_env(env) -> tuple[Settings, int]:
    return env, _stored_run(Store(env.resolved_db_url()))


def _metrics(at) -> dict[str, str]:
    """Tiles by label; a projected bill's label ends ", projected" (dropped here)."""
    return {m.label.removesuffix(", projected"): m.value for m in at.metric}


def _plain(element) -> str:
    """An alert's text without the markdown escapes the page adds."""
    return element.value.replace("\\", "")


def _number(at, label: str):
    return next(n for n in at.number_input if n.label == label)


def test_business_case_without_runs_points_to_a_pilot(env):
    at = page("business_case")
    assert not at.exception
    assert "needs a measured pilot" in at.info[0].value


def test_business_case_renders_the_engines_figures(run_env):
    settings, run_id = run_env
    at = page("business_case", run=str(run_id))
    assert not at.exception and not at.error
    # untouched, the page shows the run's own case (its stored volume), as every page does
    case = build_business_case(Store(settings.resolved_db_url()), run_id)
    m = _metrics(at)
    assert case.recommendation.name == "int4"
    assert m["Payback"] == fmt_months(case.roi.payback_months)
    assert m["Saving / month"] == fmt_money(case.monthly_savings)
    assert m["Before / month"] == fmt_money(case.baseline_monthly_cost)
    assert m["After / month"] == fmt_money(case.recommended_monthly_cost)
    assert m["Net after 36 months"] == fmt_money(case.roi.net_36)
    # the decision once, in one sentence, at the top; projected bills say so on their tile
    assert _plain(at.success[0]) == decision_sentence(case) and len(at.success) == 1
    labels = [m.label for m in at.metric]
    assert ("After / month, projected" in labels) == case.recommended.projected
    assert "Decision" not in labels
    # before/after at the top, then cost vs accuracy, p95 latency, payback, tornado
    assert len(at.get("plotly_chart")) == 5
    table = next(d.value for d in at.dataframe if "Figures" in d.value.columns)
    assert list(table.Variant) == ["baseline", "int4", "lingua"]
    assert list(table.Figures) == [basis(r) for r in case.rows]
    assert list(table["Where the figures come from"]) == [basis_detail(r) for r in case.rows]
    assert "decode memory-bandwidth bound" in table["Where the figures come from"][1]
    assert "None" not in table.to_string()
    # the quality-gate reason of the variant that is shown but not recommended
    assert any("'lingua' (similarity to the baseline's answers (cosine) 0.500 is below the "
               "required 0.9)" in t.value for t in at.text)
    portfolio = next(d.value for d in at.dataframe if "annual_savings" in d.value.columns)
    assert list(portfolio.name) == ["support pilot", "Total"]
    assert portfolio.annual_savings.iloc[-1] == pytest.approx(12 * case.monthly_savings)
    assert at.download_button[0].proto.label == "Download business case PDF"


def test_changing_an_assumption_changes_the_payback(run_env):
    settings, run_id = run_env
    at = page("business_case", run=str(run_id))
    before = _metrics(at)["Payback"]
    _number(at, "Day rate ($)").set_value(2000.0).run()
    assert not at.exception
    after = _metrics(at)["Payback"]
    store = Store(settings.resolved_db_url())
    stored = build_business_case(store, run_id).assumptions
    case = build_business_case(store, run_id, replace(stored, day_rate=2000.0))
    assert after == fmt_months(case.roi.payback_months) and after != before
    # a threshold nothing but the baseline passes: nothing spent or saved, as the PDF says
    _number(at, "Accuracy threshold").set_value(0.99).run()
    assert _metrics(at)["Payback"] == "none"
    # keeping the baseline is one plain sentence, not a warning, and no "Decision" tile
    assert _plain(at.info[0]).startswith("Keep the baseline: ")
    assert not any("Keep the baseline" in _plain(w) for w in at.warning)
    assert "Decision" not in _metrics(at) and "After / month" not in _metrics(at)
    # no "after", so no "before" either: the one bill is the monthly cost
    assert "Before / month" not in _metrics(at)
    assert any(label.startswith("Monthly cost") for label in _metrics(at))


def test_no_recommendation_says_why(run_env):
    _, run_id = run_env
    at = page("business_case", run=str(run_id))
    at.selectbox(key=f"bc.accuracy_metric.{run_id}").select("ref_f1").run()  # the log has no F1 figures
    assert not at.exception
    # the answer in a neutral box, not a red one: the tool did not fail
    assert not at.error
    assert "No variant is recommended: none passes the quality gate" in _plain(at.info[0])
    # why, below: the log has references (ref_contains is stored); only F1 was never stored
    assert any("no ref_f1 figure was stored for this variant (4 of the 4 requests replayed "
               "have a reference answer)" in t.value for t in at.text)
    assert _metrics(at)["Payback"] == "none"


# ---- hardware page ------------------------------------------------------------------------
def _add_form(at, **values):
    for label, value in values.items():
        widget = next(w for w in [*at.text_input, *at.number_input] if w.label == label)
        widget.set_value(value)
    return at.button(key="FormSubmitter:hw.add-Add hardware").click().run()


def test_hardware_add_override_delete(env):
    store = Store(env.resolved_db_url())
    at = page("hardware")
    _add_form(at, **{"Key": "onprem-a100", "Name": "A100 80 GB on premise", "$/hour": 0.85,
                     "Price source": "amortised capex, 36 months", "Price as of (YYYY-MM)": "2025-06"})
    assert not at.exception and not at.error
    assert "Stored onprem-a100" in _plain(at.success[0])
    assert store.get_hardware("onprem-a100").price_per_hour == 0.85
    assert "onprem-a100" in set(at.dataframe[0].value.key)  # the table shows it at once

    at.selectbox(key="hw.override.key").select("nvidia-a10g")
    at.number_input(key="hw.override.price").set_value(0.5)
    at.text_input(key="hw.override.source").input("1-year reserved")
    at.text_input(key="hw.override.date").input("2025-06")
    at.button(key="FormSubmitter:hw.override-Save price").click().run()
    assert not at.exception and not at.error
    a10g = store.hardware_catalog()["nvidia-a10g"]
    assert (a10g.price_per_hour, a10g.price_source, a10g.user_defined) == (0.5, "1-year reserved", True)
    table = at.dataframe[0].value.set_index("key")
    assert table.loc["nvidia-a10g", "$/hour"] == "$0.50"
    assert table.loc["nvidia-a10g", "overrides built-in"] == "yes"

    at.selectbox(key="hw.delete.key").select("onprem-a100")
    at.button(key="FormSubmitter:hw.delete-Delete").click().run()
    assert not at.exception and "Deleted onprem-a100" in _plain(at.success[0])
    assert [h.key for h in store.list_hardware()] == ["nvidia-a10g"]
    at.selectbox(key="hw.delete.key").select("nvidia-a10g")  # the built-in price comes back
    at.button(key="FormSubmitter:hw.delete-Delete").click().run()
    assert store.hardware_catalog()["nvidia-a10g"].price_per_hour == 1.006


@pytest.mark.parametrize("values, needle", [
    ({"Key": "Bad Key!", "Name": "x", "Price source": "s", "Price as of (YYYY-MM)": "2025-06"},
     "'key'"),
    ({"Key": "mine", "Name": "x", "Price source": "s", "Price as of (YYYY-MM)": "June"},
     "'price_date'"),
    ({"Key": "mine", "Name": "x", "$/hour": 0.0, "Price source": "s",
      "Price as of (YYYY-MM)": "2025-06"}, "'price_per_hour' must be > 0"),
])
def test_hardware_bad_value_shows_an_error_and_stores_nothing(env, values, needle):
    at = _add_form(page("hardware"), **values)
    assert not at.exception
    assert needle in _plain(at.error[0])
    assert Store(env.resolved_db_url()).list_hardware() == []


def test_hardware_override_without_price_says_which_field(env):
    at = page("hardware")
    at.button(key="FormSubmitter:hw.override-Save price").click().run()
    assert not at.exception
    assert "price_per_hour" in _plain(at.error[0])
