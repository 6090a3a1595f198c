"""Issue 13, item 3: `roilab pilot --spec` errors are one line each, flags given with --spec
apply or are refused with the reason, and preflight refuses a model folder that does not
exist or an unknown backend before anything loads.

The real CLI over a real SQLite store, without the embedded model: every pilot here is
refused by preflight (nothing loads, so each test takes well under a second).
"""
from __future__ import annotations

import json

import pytest

from engine.cli.main import main
from engine.cli.pilot import PILOT_EXIT
from engine.core.errors import ModelPrepError
from engine.models.prep import check_model_name
from engine.store.store import Store

LOG = '{"prompt": "What is 2+2?", "reference": "4"}\n{"prompt": "Capital of France?"}\n'


@pytest.fixture
def cli(settings, monkeypatch, tmp_path):
    """The CLI over a fresh SQLite file with a 2-request log as workload 1."""
    monkeypatch.setenv("ROILAB_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("ROILAB_DB_URL", settings.resolved_db_url())
    log = tmp_path / "log.jsonl"
    log.write_text(LOG)
    assert main(["ingest", str(log)]) == 0
    return Store(settings.resolved_db_url())


def _spec_file(tmp_path, data) -> str:
    path = tmp_path / "pilot.json"
    path.write_text(json.dumps(data))
    return str(path)


def _error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err  # one line, no traceback
    return err


def test_a_missing_spec_file_is_one_line(cli, tmp_path, capsys) -> None:
    missing = tmp_path / "nope.json"
    assert main(["pilot", "--workload", "1", "--spec", str(missing)]) == 2
    assert f"--spec {missing}: no such file; check the path." in _error(capsys)
    assert cli.list_runs() == []


def test_invalid_json_names_the_line_and_column(cli, tmp_path, capsys) -> None:
    path = tmp_path / "bad.json"
    path.write_text('{\n  "variants": [\n    {"name": "a",}\n  ]\n}\n')
    assert main(["pilot", "--workload", "1", "--spec", str(path)]) == 2
    err = _error(capsys)
    assert f"--spec {path} is not valid JSON: " in err
    assert "at line 3 column 18; fix the file there." in err
    assert cli.list_runs() == []


def test_a_json_list_is_not_a_spec(cli, tmp_path, capsys) -> None:
    path = _spec_file(tmp_path, [{"name": "baseline", "model": "embedded:smollm2-135m-instruct"}])
    assert main(["pilot", "--workload", "1", "--spec", path]) == 2
    assert f"--spec {path} holds a JSON list, not an object; write one PilotSpec object" \
        in _error(capsys)
    assert cli.list_runs() == []


@pytest.mark.parametrize("flags", [
    ["--model", "random:tiny-llama"], ["--backend", "vllm"], ["--variants", "int8"],
    ["--rate", "0.3"], ["--device", "cpu"], ["--dtype", "float32"],
    ["--model", "x", "--dtype", "float16"]])
def test_variant_flags_with_a_spec_are_refused(cli, tmp_path, capsys, flags) -> None:
    path = _spec_file(tmp_path, {"variants": [{"name": "b", "model": "random:tiny-llama"}]})
    assert main(["pilot", "--workload", "1", "--spec", path, *flags]) == 2
    given = ", ".join(f for f in flags if f.startswith("--"))
    assert (f"error: {given} cannot be used with --spec: the spec defines the variants; put "
            "model/backend/device/dtype/techniques in the spec's variants") in _error(capsys)
    assert cli.list_runs() == []


def test_run_flags_apply_over_the_spec_and_defaults_do_not(cli, tmp_path, capsys) -> None:
    """Each flag given with --spec is what the stored run's spec says; flags not given leave
    the spec's own values (not the flags' defaults)."""
    spec = {"name": "from-spec", "workload_id": 7, "max_requests": 1,
            "variants": [{"name": "b", "model": str(tmp_path / "missing")}],
            "generation": {"max_new_tokens": 5, "batch_size": 3},
            "cost": {"hardware": "nvidia-h100-80gb", "price_per_hour": 1.5,
                     "requests_per_month": 10}}
    path = _spec_file(tmp_path, spec)
    assert main(["pilot", "--in-process", "--workload", "1", "--spec", path]) == PILOT_EXIT["failed"]
    stored = cli.get_run(1).spec
    assert stored["workload_id"] == 1  # --workload is required, so it always applies
    assert (stored["name"], stored["max_requests"]) == ("from-spec", 1)
    assert stored["generation"] == spec["generation"]
    assert stored["cost"] == spec["cost"]

    assert main(["pilot", "--in-process", "--workload", "1", "--spec", path, "--name", "flagged",
                 "--max-requests", "2", "--max-new-tokens", "9", "--batch-size", "4",
                 "--hardware", "cpu-c7i-large", "--price", "0.25",
                 "--requests-per-month", "5000"]) == PILOT_EXIT["failed"]
    run = cli.get_run(2)
    assert (run.name, run.spec["name"], run.spec["max_requests"]) == ("flagged", "flagged", 2)
    assert run.spec["generation"]["max_new_tokens"] == 9
    assert run.spec["generation"]["batch_size"] == 4
    assert run.spec["cost"] == {"hardware": "cpu-c7i-large", "price_per_hour": 0.25,
                                "requests_per_month": 5000}


def test_preflight_refuses_missing_folders_and_unknown_backends(cli, tmp_path, capsys) -> None:
    """Nothing loads: every variant is refused before the pilot starts, with the fix."""
    missing, no_config = tmp_path / "no-such-checkpoint", tmp_path / "empty"
    no_config.mkdir()
    path = _spec_file(tmp_path, {"variants": [
        {"name": "missing", "model": str(missing)},
        {"name": "relative", "model": "./no-such-dir"},
        {"name": "no-config", "model": str(no_config)},
        {"name": "typo", "model": "random:tiny-llama", "backend": "transfomers"}]})
    assert main(["pilot", "--in-process", "--workload", "1", "--spec", path]) == PILOT_EXIT["failed"]
    run = cli.get_run(1)
    assert run.status == "failed" and [v.status for v in run.variants] == ["failed"] * 4
    errors = {v.name: v.error for v in run.variants}
    assert errors["missing"] == ("Refused before the pilot started: Model folder "
                                 f"{missing} does not exist; check the path (a local folder "
                                 "holding config.json and the weights).")
    assert errors["relative"].startswith("Refused before the pilot started: Model folder "
                                         "./no-such-dir does not exist; check the path")
    assert errors["no-config"] == (f"Refused before the pilot started: Model folder {no_config} "
                                   "has no config.json; point to a Hugging Face model folder "
                                   "(the one holding config.json and the weights).")
    assert errors["typo"] == ("Refused before the pilot started: Unknown backend 'transfomers'; "
                              "known backends: endpoint, transformers, vllm.")
    assert run.error.startswith("The baseline 'missing' failed: Refused before the pilot")


def test_model_names_that_may_be_right_pass_preflight(tmp_path) -> None:
    """Only what is certainly wrong is refused: embedded, random and hub-style names pass
    (whether a hub id exists only loading can tell), and so does a real model folder."""
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    for name in ("embedded:smollm2-135m-instruct", "random:tiny-llama", "HuggingFaceTB/SmolLM2",
                 "gpt2", str(folder)):
        check_model_name(name)
    for name, why in [("embedded:other", "Unknown embedded model"),
                      ("random:no-such-arch", "Unknown random-weights architecture"),
                      ("~/no/such/roilab/model", "does not exist")]:
        with pytest.raises(ModelPrepError, match=why):
            check_model_name(name)
