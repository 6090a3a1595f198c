"""Pricing the device a pilot runs on (engine.pilot.detect): NVML names and vCPU counts to
catalog keys, the CLI's and the Run pilot page's default, and the caveat on a run priced as
the other kind of device than it was measured on.

Real store, real CLI, real Streamlit, real pilots (random:tiny-llama, a few tokens). The one
fake is the NVML name lookup (``detect.nvml_gpu_name``) and, once, the vCPU count: this
machine has no GPU and a fixed number of CPUs, so those answers cannot be had for real.
"""
from __future__ import annotations

import json

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from engine.cli.main import main
from engine.core.errors import SpecError
from engine.economics.hardware import CATALOG
from engine.ingest.logs import parse_log
from engine.pilot import detect
from engine.pilot.report import build_report
from engine.pilot.stability import stability_lines
from engine.specs.pilot import PilotSpec, VariantSpec
from engine.store.store import Store

LOG = b"\n".join(json.dumps({"prompt": p, "reference": r}).encode() for p, r in [
    ("What is the capital of France? One word.", "Paris"), ("What is 2 + 2?", "4")]) + b"\n"
TINY = ["--model", "random:tiny-llama", "--variants", "", "--max-new-tokens", "4",
        "--max-requests", "2", "--batch-size", "2"]


@pytest.mark.parametrize("nvml_name, key", [
    ("NVIDIA H100 80GB HBM3", "nvidia-h100-80gb"),
    ("NVIDIA H100 PCIe", "nvidia-h100-80gb"),
    ("NVIDIA H100 NVL", "nvidia-h100-80gb"),
    ("NVIDIA H200", "nvidia-h200"),
    ("NVIDIA H200 NVL", "nvidia-h200"),
    ("NVIDIA A10G", "nvidia-a10g"),
    ("NVIDIA L4", "nvidia-l4"),
    ("NVIDIA L40S", "nvidia-l40s"),
    ("NVIDIA A100-SXM4-80GB", "nvidia-a100-80gb"),
    ("NVIDIA A100 80GB PCIe", "nvidia-a100-80gb"),
    ("NVIDIA A100-SXM4-40GB", "nvidia-a100-40gb"),
    ("NVIDIA A100-PCIE-40GB", "nvidia-a100-40gb"),
    ("NVIDIA GeForce RTX 4090", "nvidia-rtx-4090"),
    # not in the catalog: no key rather than a neighbour's price
    ("NVIDIA L40", None), ("NVIDIA A10", None), ("Tesla T4", None),
    ("NVIDIA GeForce RTX 4090 D", None), ("NVIDIA GeForce RTX 4090 Laptop GPU", None),
    ("NVIDIA B200", None),
])
def test_nvml_names_map_to_catalog_keys(nvml_name, key) -> None:
    assert detect.gpu_catalog_key(nvml_name, CATALOG) == key


def test_a_gpu_detects_by_its_nvml_name(monkeypatch) -> None:
    monkeypatch.setattr(detect, "nvml_gpu_name", lambda index=0: "NVIDIA H100 80GB HBM3")
    found = detect.detect_hardware("auto", CATALOG)
    assert (found.key, found.kind, found.label) == ("nvidia-h100-80gb", "gpu",
                                                    "NVIDIA H100 80GB HBM3")
    assert found.describe(CATALOG) == ("priced as NVIDIA H100 SXM 80 GB "
                                       "(detected NVIDIA H100 80GB HBM3)")
    assert detect.detect_hardware("cpu", CATALOG).kind == "cpu"  # the CPU, though a GPU is there


def test_an_unknown_gpu_has_no_key_and_the_pilot_says_what_to_give(monkeypatch, store) -> None:
    monkeypatch.setattr(detect, "nvml_gpu_name", lambda index=0: "NVIDIA B200")
    found = detect.detect_hardware("auto", CATALOG)
    assert (found.key, found.label, found.kind) == (None, "NVIDIA B200", "gpu")
    assert found.describe(CATALOG) == "detected NVIDIA B200: no hardware catalog entry is this GPU"
    spec = PilotSpec(workload_id=1, variants=(VariantSpec(name="b"),))
    with pytest.raises(SpecError) as err:
        detect.price_pilot(spec, store, explicit=False)
    assert str(err.value) == ("Cannot price this pilot: detected NVIDIA B200, and no hardware "
                              "catalog entry is this GPU. Give --hardware KEY (see `roilab "
                              "hardware`) or --price $/HOUR for this machine.")
    # device "cuda" with no GPU NVML can see: no key either
    monkeypatch.setattr(detect, "nvml_gpu_name", lambda index=0: None)
    assert detect.detect_hardware("cuda", CATALOG).key is None


def test_cpus_map_to_the_smallest_instance_with_their_vcpus() -> None:
    assert [detect.cpu_catalog_key(n, CATALOG) for n in (1, 2, 3, 8, 9, 32, 33)] == [
        "cpu-c7i-large", "cpu-c7i-large", "cpu-c7i-2xlarge", "cpu-c7i-2xlarge",
        "cpu-c7i-8xlarge", "cpu-c7i-8xlarge", None]


def test_this_machines_cpu_is_detected_for_real(monkeypatch) -> None:
    monkeypatch.setattr(detect, "nvml_gpu_name", lambda index=0: None)  # as on a GPU-less box
    found = detect.detect_hardware("auto", CATALOG)
    n = detect.vcpus()
    assert found.kind == "cpu" and found.key == detect.cpu_catalog_key(n, CATALOG)
    assert found.label == f"CPU {detect.cpu_name()}, {n} vCPU{'s' if n != 1 else ''}"


def test_an_undetected_cpu_with_a_price_is_priced_as_this_machine(monkeypatch, store) -> None:
    """No catalog CPU has 64 vCPUs: without --price the CLI refuses, saying what to give;
    with it, the run is priced as the user's own entry naming this machine."""
    monkeypatch.setattr(detect, "nvml_gpu_name", lambda index=0: None)
    monkeypatch.setattr(detect, "vcpus", lambda: 64)
    with pytest.raises(SpecError, match=r"detected CPU .*, 64 vCPUs, and no catalog CPU entry "
                       r"has 64 or more vCPUs \(they have 2, 8, 32\)\. Give --hardware KEY"):
        detect.price_pilot(PilotSpec(workload_id=1, variants=(VariantSpec(name="b"),)),
                           store, explicit=False)
    spec = PilotSpec(workload_id=1, variants=(VariantSpec(name="b"),),
                     cost={"price_per_hour": 0.5})
    priced = detect.price_pilot(spec, store, explicit=False)
    hw = store.get_hardware(priced.spec.cost.hardware)
    assert hw.user_defined and hw.kind == "cpu" and hw.price_per_hour == 0.5
    assert hw.name == f"This machine: CPU {detect.cpu_name()}, 64 vCPUs"
    assert priced.line.startswith(f"priced as {hw.name} at $0.5/h (detected CPU ")
    again = detect.price_pilot(spec.model_copy(update={"cost": spec.cost.model_copy(
        update={"price_per_hour": 0.7})}), store, explicit=False)  # re-priced, not refused
    assert store.get_hardware(again.spec.cost.hardware).price_per_hour == 0.7


def test_the_cli_refuses_an_unpriced_pilot_before_anything_runs(settings, monkeypatch,
                                                                capsys) -> None:
    monkeypatch.setenv("ROILAB_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("ROILAB_DB_URL", settings.resolved_db_url())
    monkeypatch.setattr(detect, "nvml_gpu_name", lambda index=0: "NVIDIA B200")
    assert main(["pilot", "--workload", "1", *TINY]) == 2
    err = capsys.readouterr().err
    assert "Cannot price this pilot: detected NVIDIA B200" in err and "--price" in err
    assert Store(settings.resolved_db_url()).list_runs() == []


def test_pricing_mismatch_from_the_stored_device_strings() -> None:
    h100, cpu = CATALOG["nvidia-h100-80gb"], CATALOG["cpu-c7i-large"]
    text = detect.pricing_mismatch(h100, ["cpu (2 threads)", None])
    assert text is not None and text.startswith(
        "Priced as NVIDIA H100 SXM 80 GB, a GPU, but it was measured on cpu (2 threads)")
    assert detect.pricing_mismatch(cpu, ["cuda:0 NVIDIA H100 80GB HBM3 (vLLM)"]).startswith(
        "Priced as AWS c7i.large (2 vCPU, 4 GiB), a CPU instance, but it was measured on "
        "cuda:0 NVIDIA H100 80GB HBM3 (vLLM)")
    assert detect.pricing_mismatch(h100, ["cuda:0 NVIDIA H100 80GB HBM3 (vLLM)"]) is None
    assert detect.pricing_mismatch(cpu, ["cpu (2 threads)", "endpoint http://h:1/v1"]) is None


@pytest.mark.slow  # two tiny real pilots (random:tiny-llama, the embedded tokenizer)
def test_cli_prices_the_detected_device_and_flags_a_gpu_price_on_the_cpu(
        model_settings, monkeypatch, tmp_path, capsys) -> None:
    monkeypatch.setenv("ROILAB_DATA_DIR", str(model_settings.data_dir))
    monkeypatch.setenv("ROILAB_DB_URL", model_settings.resolved_db_url())
    store = Store(model_settings.resolved_db_url())
    store.add_workload("w", "w.jsonl", LOG, parse_log(LOG, "w.jsonl"))
    found = detect.detect_hardware("auto", store.hardware_catalog())  # this machine, for real
    assert found.kind == "cpu" and found.key is not None

    assert main(["pilot", "--in-process", "--workload", "1", *TINY]) == 0  # no --hardware: the detected
    out = capsys.readouterr()
    assert f"Pilot priced as {CATALOG[found.key].name} (detected {found.label}" in out.out
    assert "warning: Priced as" not in out.err
    run = store.list_runs()[0]
    assert run.spec["cost"]["hardware"] == found.key  # stored explicit
    assert not any(line.startswith("Priced as") for line in
                   stability_lines(build_report(store, run.id)))

    assert main(["pilot", "--in-process", "--workload", "1", *TINY, "--hardware", "nvidia-h100-80gb"]) == 0
    out = capsys.readouterr()
    assert "Pilot priced as NVIDIA H100 SXM 80 GB (chosen)" in out.out
    assert ("warning: Priced as NVIDIA H100 SXM 80 GB, a GPU, but the pilot runs on the CPU"
            in out.err)
    gpu_priced = store.list_runs()[0]
    assert gpu_priced.id == 2 and gpu_priced.spec["cost"]["hardware"] == "nvidia-h100-80gb"
    lines = stability_lines(build_report(store, gpu_priced.id))
    assert any(line.startswith("Priced as NVIDIA H100 SXM 80 GB, a GPU, but it was measured "
                               "on cpu (") for line in lines)
    assert main(["show", str(gpu_priced.id)]) == 0  # every surface shows stability_lines
    assert "Priced as NVIDIA H100 SXM 80 GB, a GPU, but it was measured on cpu" in \
        capsys.readouterr().out


def _page(settings, monkeypatch) -> AppTest:
    monkeypatch.setenv("ROILAB_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("ROILAB_DB_URL", settings.resolved_db_url())
    st.cache_data.clear()
    Store(settings.resolved_db_url()).add_workload("w", "w.jsonl", LOG, parse_log(LOG, "w.jsonl"))
    return AppTest.from_string("from app.views import run_pilot\nrun_pilot.render()",
                               default_timeout=120).run()


def _hardware_box(at: AppTest):
    return next(s for s in at.selectbox if s.label == "Priced as hardware")


def test_run_pilot_page_defaults_to_the_detected_gpu(settings, monkeypatch) -> None:
    monkeypatch.setattr(detect, "nvml_gpu_name", lambda index=0: "NVIDIA H100 80GB HBM3")
    at = _page(settings, monkeypatch)
    assert not at.exception
    assert _hardware_box(at).value == "nvidia-h100-80gb"  # untouched by the user
    assert any("Default hardware: priced as NVIDIA H100 SXM 80 GB (detected NVIDIA H100 80GB "
               "HBM3)" in c.value.replace("\\", "") for c in at.caption)


def test_run_pilot_page_defaults_to_this_cpu(settings, monkeypatch) -> None:
    monkeypatch.setattr(detect, "nvml_gpu_name", lambda index=0: None)
    at = _page(settings, monkeypatch)
    assert _hardware_box(at).value == detect.cpu_catalog_key(detect.vcpus(), CATALOG)


def test_run_pilot_page_asks_for_hardware_when_nothing_matches(settings, monkeypatch) -> None:
    monkeypatch.setattr(detect, "nvml_gpu_name", lambda index=0: "NVIDIA B200")
    at = _page(settings, monkeypatch)
    assert _hardware_box(at).value is None
    at.button[0].click().run()
    assert not at.exception
    assert "Choose 'Priced as hardware': detected NVIDIA B200" in \
        at.error[0].value.replace("\\", "")
    assert Store(settings.resolved_db_url()).list_runs() == []


def test_demo_refuses_an_unpriced_device_before_any_work(settings, monkeypatch, capsys) -> None:
    monkeypatch.setenv("ROILAB_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("ROILAB_DB_URL", settings.resolved_db_url())
    monkeypatch.setattr(detect, "nvml_gpu_name", lambda index=0: "NVIDIA B200")
    assert main(["demo", "--no-dashboard"]) == 2
    out = capsys.readouterr()
    assert "1/4" not in out.out  # nothing prepared, nothing ingested
    assert "Cannot price this pilot: detected NVIDIA B200" in out.err
