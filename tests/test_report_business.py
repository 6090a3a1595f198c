"""The business-case PDF and `roilab report`, over test_business's hand-worked stored run.

The PDF is rendered to PNG pages (pdftoppm; one render is kept in /tmp/bc_pages/ for a
person to look at) and its text (pdftotext) is checked against the BusinessCase built from
the same database and against the figures worked out by hand in test_business. No model runs.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_business import ASSUME, CAT, _stored_run

from engine.business.case import build_business_case
from engine.cli.main import main
from engine.reports.business_pdf import (
    assumption_rows,
    business_figures,
    business_pdf_for_run,
    decision_sentence,
    executive_summary,
    fmt_months,
)
from engine.store.store import Store

PAGES = Path("/tmp/bc_pages")


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    for tool in ("pdftotext", "pdftoppm"):
        assert shutil.which(tool), f"{tool} missing: apt-get install poppler-utils"
    tmp = tmp_path_factory.mktemp("bc")
    store = Store(f"sqlite:///{tmp}/t.db")
    run_id = _stored_run(store)
    pdf, case = business_pdf_for_run(store, run_id, ASSUME, CAT)
    (tmp / "case.pdf").write_bytes(pdf)
    return {"store": store, "run_id": run_id, "pdf": pdf, "case": case, "dir": tmp}


def _text(pdf: bytes, tmp: Path, name: str = "x.pdf", layout: bool = True) -> str:
    """The PDF's text, whitespace collapsed. Without layout, table cells come out in the
    order they were drawn (a wrapped cell stays whole) but the spacing is less exact."""
    (tmp / name).write_bytes(pdf)
    out = subprocess.run(["pdftotext", *(["-layout"] if layout else []), str(tmp / name), "-"],
                         check=True, capture_output=True, text=True).stdout
    return re.sub(r"\s+", " ", out)


def test_pdf_text_matches_the_database_and_the_hand_worked_figures(rendered):
    case, store = rendered["case"], rendered["store"]
    text = _text(rendered["pdf"], rendered["dir"])
    # the case in the PDF is the one the engine builds from the database
    again = build_business_case(store, rendered["run_id"], ASSUME, CAT)
    assert business_figures(again) == business_figures(case)
    # the figures worked out by hand in test_business: int4 on an A10G, $572.32/month saved,
    # one-time $8,020.12, payback 8,020.12 / 572.32 = 14.0 months, net 36 = $12,583.40
    f = business_figures(case)
    assert (f["recommended"], f["monthly_savings"], f["payback"], f["one_time"], f["net_36"]) == \
        ("int4", "$572.32", "14.0 months", "$8,020.12", "$12,583.40")
    assert fmt_months(case.roi.one_time / case.monthly_savings) == f["payback"]
    for key, value in f.items():  # the decision is said as a sentence, the volume per month
        if key not in ("decision", "requests_per_day"):
            assert value in text, f"{key}={value!r} not in the PDF"
    # page 1: the decision in one sentence, then its figures (issue 19)
    assert decision_sentence(case) == (
        "Move to 'int4' (4-bit weights (torchao, groups of 64)): $734.38 per month on 1 x NVIDIA A10G 24 GB (AWS g5.xlarge) "
        "(projected) instead of $1,306.70 per month on 1 x NVIDIA A100 SXM4 80 GB, a saving of "
        "$572.32 per month.")
    first = _text(rendered["pdf"], rendered["dir"], "first.pdf")
    assert decision_sentence(case) in first
    assert "14.0 months on a one-time $8,020.12" in text
    assert "262,800 requests/month (2x at peak, p95 target 5 s)" in text
    # risk: the accuracy cost and what was projected vs measured
    assert "Risk: on similarity to the baseline's answers (cosine), 'int4' scores 0.940" in text
    assert "Its cost is projected, not measured (decode memory-bandwidth bound" in text
    assert ("'lingua' (similarity to the baseline's answers (cosine) 0.500 is below the "
            "required 0.9)") in text
    raw = re.sub(r"\s", "", _text(rendered["pdf"], rendered["dir"], layout=False))
    for label, value in assumption_rows(case):  # pdftotext may drop a narrow space: "5s"
        assert re.sub(r"\s", "", value) in raw, label
    for needle in ("Why, and what it takes", "Assumptions", "Methodology", "What was measured",
                   "What was projected", "int4: projected from NVIDIA A100 SXM4 80 GB to NVIDIA A10G 24 GB (AWS g5.xlarge)",
                   "Per variant (measured vs projected)", "RECOMMENDED",
                   "Pilot measurements: Summary", "Appendix: sample requests", "Prompt: q0"):
        assert needle in text, needle


def _coloured_pixels(png: Path) -> int:
    """Pixels whose channels differ by more than 40 (chart colours, not grey text)."""
    rgb = np.asarray(Image.open(png).convert("RGB"), dtype=int)
    return int(((rgb.max(axis=2) - rgb.min(axis=2)) > 40).sum())


def test_pages_render_and_are_looked_at(rendered, tmp_path):
    PAGES.mkdir(exist_ok=True)
    for old in PAGES.glob("page-*.png"):
        old.unlink()
    (PAGES / "case.pdf").write_bytes(rendered["pdf"])
    subprocess.run(["pdftoppm", "-png", "-r", "60", str(PAGES / "case.pdf"), str(PAGES / "page")],
                   check=True)
    pages = sorted(PAGES.glob("page-*.png"))
    # answer, summary + assumptions + methodology, charts, per-variant, pilot (3), appendix
    assert len(pages) >= 7
    for page in pages:
        dark = sum(Image.open(page).convert("L").histogram()[:160])
        assert dark > 200, f"{page.name} looks blank ({dark} dark pixels)"
    colour = [_coloured_pixels(p) for p in pages]
    # page 1 carries the before/after bars (issue 12: both of them, not half a chart)
    assert colour[0] > 500, "the first page has no before/after chart"
    charts = next(i for i, c in enumerate(colour[1:], 1) if c > 5000)
    assert colour[1] < 500 or charts == 1, "text pages should be black on white"


def test_no_recommendation_is_said_plainly(rendered):
    strict = replace(ASSUME, p95_target_s=1.0)  # nothing meets a 1 s p95
    pdf, case = business_pdf_for_run(rendered["store"], rendered["run_id"], strict, CAT)
    assert case.recommendation.name is None
    text = _text(pdf, rendered["dir"], "none.pdf")
    assert ("No variant is recommended: none passes the quality gate and the 1 s p95 target; "
            "today the baseline costs $1,306.70 per month") in text
    assert executive_summary(case)[0].split("(")[0].strip() in text
    assert "Payback none: nothing is spent or saved" in text


def test_cli_report_takes_assumptions_from_json_and_flags(settings, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("ROILAB_DB_URL", settings.resolved_db_url())
    store = Store(settings.resolved_db_url())
    run_id = _stored_run(store)
    spec = tmp_path / "a.json"
    spec.write_text(json.dumps({"requests_per_day": 8640, "peak_factor": 2.0,
                                "p95_target_s": 5.0, "utilisation": 1.0, "concurrency": 64,
                                "kv_bytes_per_token": 131072, "bootstrap_resamples": 200,
                                "target_hardware": "nvidia-a100-80gb"}))
    out = tmp_path / "case.pdf"
    assert main(["report", str(run_id), "-o", str(out), "--assumptions", str(spec),
                 "--day-rate", "1000"]) == 0
    case = build_business_case(store, run_id, replace(
        ASSUME, day_rate=1000.0, target_hardware="nvidia-a100-80gb"))
    f = business_figures(case)
    printed = capsys.readouterr().out
    assert f"payback {f['payback']}" in printed and f"recommended: {f['recommended']}" in printed
    text = _text(out.read_bytes(), tmp_path)
    assert f["payback"] in text and f["monthly_savings"] in text
    assert "Engineeringdaysxdayrate10x$1,000.00" in re.sub(r"\s", "", text)
    spec.write_text('{"requests_per_dya": 1}')
    assert main(["report", str(run_id), "--assumptions", str(spec)]) == 2
    assert "Unknown assumption(s) ['requests_per_dya']" in capsys.readouterr().err


def test_cli_hardware_lists_user_entries(settings, monkeypatch, capsys):
    monkeypatch.setenv("ROILAB_DB_URL", settings.resolved_db_url())
    Store(settings.resolved_db_url()).add_hardware(
        key="onprem-a100", name="A100 on premise", kind="gpu", memory_gb=80, price_per_hour=0.85,
        price_source="amortised capex", price_date="2025-06")
    assert main(["hardware"]) == 0
    lines = capsys.readouterr().out.splitlines()
    mine = next(line for line in lines if line.startswith("onprem-a100"))
    assert "$0.85" in mine and "[yours]" in mine and "amortised capex" in mine
    assert any(line.startswith("nvidia-a10g") for line in lines)
