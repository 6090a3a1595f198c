"""The CLI's output is inert (issue 13 item 5) and its dashboard is local by default (item 6):
escape codes from logs and names are printed escaped; `roilab show --csv` writes no live
formula; `roilab dashboard` refuses a non-local address without a password."""
from __future__ import annotations

import csv

import pytest
from hostile_run import RED, hostile_run

from engine.cli.main import build_parser, main
from engine.store.store import Store

ESCAPED_RED = "\\x1b[31mred\\x1b[0m"


@pytest.fixture
def cli_env(settings, monkeypatch):
    monkeypatch.setenv("ROILAB_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("ROILAB_DB_URL", settings.resolved_db_url())
    monkeypatch.delenv("ROILAB_DASHBOARD_PASSWORD", raising=False)
    monkeypatch.delenv("ROILAB_DASHBOARD_HOST", raising=False)
    return settings


def test_ingest_escapes_a_hostile_header_name_and_rejected_rows(cli_env, tmp_path, capsys):
    log = tmp_path / "log.csv"
    log.write_text(f"prompt,reference,{RED}\nhello,hi,x\n,empty prompt,y\n")
    assert main(["ingest", str(log), "--name", f"name {RED}\x07"]) == 0
    out, err = capsys.readouterr()
    assert "\x1b" not in out + err and "\x07" not in out
    assert f"name {ESCAPED_RED}\\x07" in out
    assert "line " in err  # the rejected row is still reported, escaped


def test_runs_workloads_and_show_escape_names(cli_env, capsys):
    run_id = hostile_run(Store(cli_env.resolved_db_url()))
    for argv in (["runs"], ["workloads"], ["show", str(run_id)]):
        assert main(argv) == 0
        out = capsys.readouterr().out
        assert "\x1b" not in out, argv
    assert main(["runs"]) == 0 and f"run {ESCAPED_RED}" in capsys.readouterr().out
    assert main(["workloads"]) == 0
    assert f"workload {ESCAPED_RED} ({ESCAPED_RED}.jsonl" in capsys.readouterr().out


def test_errors_are_escaped(cli_env, tmp_path, capsys):
    assert main(["ingest", str(tmp_path / f"{RED}.jsonl")]) == 2
    err = capsys.readouterr().err
    assert "\x1b" not in err and ESCAPED_RED in err


def test_show_csv_has_no_live_formula_and_keeps_numbers(cli_env, tmp_path, capsys):
    run_id = hostile_run(Store(cli_env.resolved_db_url()))
    out_csv = tmp_path / "run.csv"
    assert main(["show", str(run_id), "--csv", str(out_csv)]) == 0
    assert f"Wrote {out_csv}" in capsys.readouterr().out
    with out_csv.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["name"] for r in rows] == ["baseline", "'+1+1 variant"]
    assert not any(cell.startswith(("=", "+", "-", "@", "\t", "\r"))
                   for r in rows for cell in r.values())
    assert float(rows[0]["latency_p50_s"]) == pytest.approx(0.2)


# ---- dashboard exposure (never starts a server: the refusal comes first) -------------
def test_dashboard_refuses_a_non_local_host_without_a_password(cli_env, capsys):
    assert main(["dashboard", "--host", "0.0.0.0"]) == 2
    err = capsys.readouterr().err
    assert "ROILAB_DASHBOARD_PASSWORD" in err and "--host 127.0.0.1" in err


def test_demo_refuses_before_doing_any_work(cli_env, capsys):
    assert main(["demo", "--host", "10.0.0.5"]) == 2
    out, err = capsys.readouterr()
    assert "1/4" not in out and "ROILAB_DASHBOARD_PASSWORD" in err


def test_dashboard_host_setting_is_refused_too(cli_env, monkeypatch, capsys):
    monkeypatch.setenv("ROILAB_DASHBOARD_HOST", "0.0.0.0")
    assert main(["dashboard"]) == 2
    err = capsys.readouterr().err
    assert "address 0.0.0.0" in err and "ROILAB_DASHBOARD_PASSWORD" in err


def test_dashboard_defaults_to_loopback():
    from engine.cli.demo import _dashboard_host
    from engine.core.settings import Settings

    args = build_parser().parse_args(["dashboard"])
    assert args.host is None
    assert _dashboard_host(args, Settings()) == "127.0.0.1"
    exposed = build_parser().parse_args(["dashboard", "--host", "0.0.0.0"])
    assert _dashboard_host(exposed, Settings(dashboard_password="pw")) == "0.0.0.0"
