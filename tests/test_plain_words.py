"""Issue 19, items 3-5 on the Results page, the pilot PDF, the CSV downloads and the Hardware
page: signed differences in words, '-' for a missing figure, labels instead of keys, MiB
instead of bytes, prices as stored with their date and age, '*' after an unstable figure with
its legend once, 1-based request numbers, the p95 target on the latency chart.

Fast: the stored runs are written by hand (test_devices' tensor-parallel run), no model runs.
"""
from __future__ import annotations

import dataclasses
import io
import json
import subprocess
from datetime import date

import pandas as pd
import pytest
from test_app_pages import _use, page
from test_devices import _stored_tp_run

from app import charts, ui
from engine.pilot.report import build_report, technique_figures
from engine.reports.pdf import fmt_price, price_age_note, signed_change
from engine.reports.pilot_pdf import (
    UNSTABLE_LEGEND,
    _variant_rows,
    headline_figures,
    readable_figures,
    render_pdf,
    summary_paragraphs,
    unstable_flags,
)
from engine.store.store import Store


def test_words_for_prices_changes_and_ages():
    assert fmt_price(0.08925) == "$0.08925" and fmt_price(1.006) == "$1.006"  # not $1.01
    assert fmt_price(3.5) == "$3.50" and ui.price(0.08925) == "$0.08925/h"
    assert signed_change(0.142, "per 1k requests") == "+14.2% more per 1k requests"
    assert signed_change(-0.301) == "-30.1% less" and signed_change(0.00001) == "no change"
    assert price_age_note("2025-01", date(2025, 7, 31)) is None  # 6 months: still fresh
    assert "2025-01 are 7 months old" in price_age_note("2025-01", date(2025, 8, 1))
    assert ui.price_dates(["2025-10", "2025-01", "2025-01"])[0] == \
        "prices as of 2025-01 to 2025-10"


def test_a_readable_table_and_its_csv_share_labels_and_rounding():
    frame = pd.DataFrame({"monthly": [195.45749999999998, None], "peak_bytes": [538060288, None],
                          "kv_tokens": [1_700_000, float("nan")], "name": ["a", None]})
    cols = {"name": ui.Col("variant"), "monthly": ui.Col("$ per month", "money"),
            "peak_bytes": ui.Col("peak memory (MiB)", "mib"),
            "kv_tokens": ui.Col("KV cache (tokens)", "int")}
    shown = ui.readable(frame, cols, {"peak_bytes": [True, True]})
    assert shown.to_dict("list") == {"variant": ["a", "-"], "$ per month": ["$195.46", "-"],
                                     "peak memory (MiB)": ["513.1*", "-"],
                                     "KV cache (tokens)": ["1,700,000", "-"]}
    text = ui.csv_bytes(ui.csv_frame(frame, cols)).decode("utf-8-sig")
    assert text.splitlines() == ["variant,$ per month,peak memory (MiB),KV cache (tokens)",
                                 "a,195.46,513.1,1700000", ",,,"]
    assert ui.file_name(12, "per request int8/weights") == \
        "roilab-run-12-per-request-int8-weights.csv"


def test_latency_chart_draws_the_p95_target_and_marks_unstable_bars():
    frame = pd.DataFrame({"name": ["baseline", "int8"], "status": ["done", "done"],
                          "latency_p50_s": [4.0, 9.0], "latency_p95_s": [5.0, 11.43]})
    fig = charts.latency_chart(frame, 10.0, {"latency_p95_s": [False, True]})
    assert [s.y0 for s in fig.layout.shapes] == [10.0]
    assert "p95 target 10 s" in fig.layout.annotations[0].text
    labels = [t for trace in fig.data for t in trace.text]
    assert "11.4*" in labels and "5*" not in labels
    assert charts.compares(frame, ["latency_p95_s"])
    assert not charts.compares(frame.head(1), ["latency_p95_s"])


def test_results_page_reads_in_words(settings, monkeypatch):
    run_id = _stored_tp_run(Store(_use(settings, monkeypatch).resolved_db_url()))
    at = page("results", run=str(run_id))
    assert not at.exception
    kinds = [type(e).__name__ for e in at.main]
    # the caveats (the prices' age here) and the downloads come before the detail
    first_table = next(i for i, e in enumerate(at.main) if type(e).__name__ == "Dataframe")
    assert kinds.index("Warning") < first_table
    assert [b.proto.label for b in at.download_button][:2] == [
        "Download pilot measurements PDF", "Download per-variant CSV"]
    tables = [d.value for d in at.dataframe]
    for table in tables:
        shown = " ".join(map(str, table.columns)) + " " + table.to_csv()
        for raw in ("_bytes", "_tokens", "base_", "None", "nan", "n/a"):
            assert raw not in shown, (raw, list(table.columns))
    sbs = next(t for t in tables if "variant output" in t.columns)
    assert list(sbs.request) == ["1", "2", "3", "4"]
    assert at.selectbox(key="results.sbs_request").options[0] == "request 1 (line 1)"
    figures = next(t for t in tables if "figure" in t.columns)
    assert "peak memory" in set(figures.figure) and "111.8 GiB" in set(figures.value)
    latency = json.loads(next(c for c in at.get("plotly_chart")
                              if "Latency" in c.proto.spec).proto.spec)
    assert latency["layout"]["shapes"][0]["y0"] == 10.0  # the case's p95 target


def test_pilot_pdf_in_words(settings):
    store = Store(settings.resolved_db_url())
    rep = build_report(store, _stored_tp_run(store))
    f = headline_figures(rep)
    assert f["unit_cost_change"].startswith("+") and f["unit_cost_change"].endswith("% more")
    assert f"({f['unit_cost_change']} per request than the baseline)" in summary_paragraphs(rep)[1]
    assert "peak_bytes" in set(technique_figures(rep).figure)
    assert "peak_bytes" not in " ".join(readable_figures(technique_figures(rep)).figure)
    shaky = dataclasses.replace(rep.variants[1], unstable=("tokens/s", "p95 latency"))
    unstable = dataclasses.replace(rep, variants=(rep.variants[0], shaky, *rep.variants[2:]))
    assert unstable_flags(unstable)["tokens_per_s"] == [False, True, False]
    row = _variant_rows(unstable)[2]
    assert row[4] == "140.00*" and row[6] == "1.79*" and row[9] == "-"  # '-': not measured
    samples = pd.DataFrame([{"request": 0, "line": 1, "prompt": "q0", "reference": "a0"}])
    pdf = render_pdf(unstable, samples)
    text = " ".join(subprocess.run(["pdftotext", "-layout", "-", "-"], input=pdf,
                                   capture_output=True, check=True).stdout.decode().split())
    assert text.count(UNSTABLE_LEGEND.split(":")[0]) == 1  # the legend, once
    assert "Request 1 (line 1)" in text and "Request 0" not in text
    assert "prices as of 2025-10" in text and "$3.50/hour" in text
    assert io.BytesIO(pdf).read(5) == b"%PDF-"


@pytest.mark.parametrize("missing", [None, float("nan")])
def test_missing_cells_are_a_dash(missing):
    assert ui.readable(pd.DataFrame({"x": [missing]}), {"x": ui.Col("x", "f2")}).x[0] == "-"
