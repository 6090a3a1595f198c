"""The CLI against the same store as the dashboard: ingest, pilot, runs, show, report."""
from __future__ import annotations

import subprocess

import pytest

from engine.cli.main import main
from engine.pilot.report import build_report
from engine.store.store import Store


@pytest.fixture
def cli_env(local_ray_stopped, monkeypatch):
    """The CLI over a fresh data dir; a pilot runs the default way (a Ray task on the data
    dir's local head, stopped afterwards)."""
    model_settings = local_ray_stopped
    monkeypatch.setenv("ROILAB_DATA_DIR", str(model_settings.data_dir))
    monkeypatch.setenv("ROILAB_DB_URL", model_settings.resolved_db_url())
    return model_settings


@pytest.mark.slow  # cli_env prepares the embedded model (model_settings)
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
    assert "Run 1 submitted to Ray at 127.0.0.1:" in out and "(local)" in out  # the default
    store = Store(cli_env.resolved_db_url())
    run = store.list_runs()[0]
    assert store.get_run_node(run.id)["ray_node_id"]  # it ran in a Ray worker
    assert [v.status for v in run.variants] == ["done", "done"]
    report = build_report(store, run.id)
    assert report.price_per_hour == 2.0 and report.requests_per_month == 5000
    assert main(["runs"]) == 0 and f"#{run.id}" in capsys.readouterr().out
    assert main(["show", str(run.id)]) == 0
    pdf = tmp_path / "case.pdf"
    assert main(["report", str(run.id), "-o", str(pdf)]) == 0
    text = subprocess.run(["pdftotext", "-layout", str(pdf), "-"], capture_output=True,
                          text=True, check=True).stdout
    assert "int8-weights" in text and "roilab business case" in text
    capsys.readouterr()
    assert main(["stop-ray"]) == 0  # the local head the pilot started, stopped on request
    assert "Stopped the local Ray head" in capsys.readouterr().out
    assert not (cli_env.data_dir / "ray" / "local-head.json").exists()
    assert main(["stop-ray"]) == 0 and "No local Ray head runs" in capsys.readouterr().out


@pytest.mark.slow
def test_demo_runs_the_default_pilot_on_the_bundled_sample(cli_env, capsys) -> None:
    # `make demo` runs this (plus the dashboard); here on 3 requests to keep CI short.
    assert main(["demo", "--no-dashboard", "--max-requests", "3", "--max-new-tokens", "8"]) == 0
    run = Store(cli_env.resolved_db_url()).list_runs()[0]
    assert run.status == "done"
    assert [(v.name, v.status) for v in run.variants] == [
        ("baseline", "done"), ("int8-weights", "done"), ("llmlingua-0.5", "done")]
    assert "4/4 Starting the dashboard" not in capsys.readouterr().out


@pytest.mark.slow  # cli_env prepares the embedded model (model_settings)
def test_flag_variants_are_checked_against_the_backend(cli_env, capsys) -> None:
    """vLLM's FP8 variants need --backend vllm; an unknown name lists the known ones. Both
    are refused before any run is stored."""
    log = cli_env.samples_dir / "support_chat.jsonl"
    assert main(["ingest", str(log)]) == 0
    assert main(["pilot", "--workload", "1", "--variants", "fp8"]) == 2
    assert "add --backend vllm" in capsys.readouterr().err
    assert main(["pilot", "--workload", "1", "--variants", "int8,int3"]) == 2
    err = capsys.readouterr().err
    assert "['int3']" in err and "fp8-kv" in err
    assert Store(cli_env.resolved_db_url()).list_runs() == []


@pytest.mark.slow  # cli_env prepares the embedded model (model_settings)
def test_flag_built_vllm_variants_and_dtype(cli_env) -> None:
    """--backend vllm --variants fp8,fp8-kv builds FP8-weight and FP8-KV variants beside the
    baseline; --dtype auto means float32 without a GPU (this machine) and is stored as such."""
    from engine.cli.main import build_parser
    from engine.cli.pilot_spec import build_spec

    args = build_parser().parse_args(["pilot", "--workload", "1", "--backend", "vllm",
                                      "--variants", "fp8,fp8-kv", "--dtype", "auto"])
    spec = build_spec(args)
    assert [v.name for v in spec.variants] == ["baseline", "fp8-weights", "fp8-kv-cache"]
    assert {v.backend for v in spec.variants} == {"vllm"}
    assert spec.variants[1].vllm.quantization == "fp8"
    assert spec.variants[2].vllm.kv_cache_dtype == "fp8"
    assert {v.dtype for v in spec.variants} == {"float32"}  # no GPU visible here
    args = build_parser().parse_args(["pilot", "--workload", "1", "--backend", "vllm",
                                      "--variants", "fp8", "--dtype", "bfloat16"])
    assert {v.dtype for v in build_spec(args).variants} == {"bfloat16"}
