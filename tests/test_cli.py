"""The CLI against the same store as the dashboard: ingest, pilot, runs, show, report."""
from __future__ import annotations

import subprocess

import pytest

from engine.cli import main
from engine.store import Store
from engine.summary import build_report


@pytest.fixture
def cli_env(model_settings, monkeypatch):
    monkeypatch.setenv("ROILAB_DATA_DIR", str(model_settings.data_dir))
    monkeypatch.setenv("ROILAB_DB_URL", model_settings.resolved_db_url())
    return model_settings


def test_ingest_reports_bad_rows_and_refuses_unusable_files(cli_env, tmp_path, capsys) -> None:
    log = tmp_path / "log.jsonl"
    log.write_text('{"prompt": "What is 2+2?", "reference": "4"}\n{"prompt": ""}\n')
    assert main(["ingest", str(log), "--name", "mini"]) == 0
    out = capsys.readouterr()
    assert "1 requests" in out.out and "1 rows rejected" in out.out
    assert "line 2" in out.err
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    assert main(["ingest", str(empty)]) == 2
    assert "error:" in capsys.readouterr().err
    assert len(Store(cli_env.resolved_db_url()).list_workloads()) == 1  # nothing half-stored
    assert main(["ingest", str(tmp_path / "missing.jsonl")]) == 2


@pytest.mark.slow
def test_pilot_runs_show_and_report(cli_env, tmp_path, capsys) -> None:
    log = tmp_path / "log.jsonl"
    log.write_text('{"prompt": "What is the capital of France?", "reference": "Paris"}\n'
                   '{"prompt": "What is 2+2?", "reference": "4"}\n')
    assert main(["ingest", str(log)]) == 0
    assert main(["pilot", "--workload", "1", "--variants", "int8", "--max-new-tokens", "8",
                 "--price", "2.0", "--requests-per-month", "5000"]) == 0
    out = capsys.readouterr().out
    assert "baseline" in out and "int8-weights" in out
    store = Store(cli_env.resolved_db_url())
    run = store.list_runs()[0]
    assert [v.status for v in run.variants] == ["ok", "ok"]
    report = build_report(store, run.id)
    assert report.price_per_hour == 2.0 and report.requests_per_month == 5000
    assert main(["runs"]) == 0 and f"#{run.id}" in capsys.readouterr().out
    assert main(["show", str(run.id)]) == 0
    pdf = tmp_path / "case.pdf"
    assert main(["report", str(run.id), "-o", str(pdf)]) == 0
    text = subprocess.run(["pdftotext", "-layout", str(pdf), "-"], capture_output=True,
                          text=True, check=True).stdout
    assert "int8-weights" in text and "roilab business case" in text


@pytest.mark.slow
def test_demo_runs_the_default_pilot_on_the_bundled_sample(cli_env, capsys) -> None:
    # `make demo` runs this (plus the dashboard); here on 3 requests to keep CI short.
    assert main(["demo", "--no-dashboard", "--max-requests", "3", "--max-new-tokens", "8"]) == 0
    run = Store(cli_env.resolved_db_url()).list_runs()[0]
    assert run.status == "done"
    assert [(v.name, v.status) for v in run.variants] == [
        ("baseline", "ok"), ("int8-weights", "ok"), ("llmlingua-0.5", "ok")]
    assert "4/4 Starting the dashboard" not in capsys.readouterr().out
