"""Devices and memory per variant: a TP-2 vLLM variant is priced as the two GPUs it holds,
in the pilot, the business case and right-sizing, and the GPU memory its engine measured
is shown (CLI, Results and Business case pages, PDF) and used by right-sizing.

The stored run is worked out by hand below; no model runs here (real SQLite, real
Streamlit AppTest, real PDF through pdftotext).
"""
from __future__ import annotations

import shutil
import subprocess

import pytest
from test_app_pages import _frame_with, _use, page

from engine.business.case import Assumptions, build_business_case
from engine.cli.main import main
from engine.core.domain import LogRequest, ParsedLog, RequestResult, VariantMeasurements
from engine.economics import cost
from engine.economics.devices import devices_of, memory_of
from engine.economics.hardware import CATALOG
from engine.economics.sizing import memory_fit
from engine.economics.traffic import provision
from engine.pilot.report import build_report
from engine.reports.business_pdf import business_pdf_for_run
from engine.specs.pilot import VariantSpec
from engine.store.store import Store

H200 = CATALOG["nvidia-h200"]  # 141 GB, $3.50 per GPU-hour


# ---- pure functions ------------------------------------------------------------------------
def test_devices_of_a_stored_spec():
    tp2 = VariantSpec(name="tp2", backend="vllm", vllm={"tensor_parallel_size": 2})
    tp2pp2 = VariantSpec(name="x", backend="vllm",
                         vllm={"tensor_parallel_size": 2, "pipeline_parallel_size": 2})
    assert devices_of(tp2.model_dump(mode="json")) == 2 == tp2.vllm.devices
    assert devices_of(tp2pp2.model_dump(mode="json")) == 4 == tp2pp2.vllm.devices
    assert devices_of(VariantSpec(name="v", backend="vllm").model_dump(mode="json")) == 1
    assert devices_of(VariantSpec(name="hf").model_dump(mode="json")) == 1
    endpoint = VariantSpec(name="e", backend="endpoint",
                           endpoint={"base_url": "http://h:8000/v1", "model": "m"})
    assert devices_of(endpoint.model_dump(mode="json")) == 1  # the server is not ours to price
    # a run stored before pipeline_parallel_size existed still prices
    assert devices_of({"backend": "vllm", "vllm": {"tensor_parallel_size": 4}}) == 4


def test_memory_of_reads_what_was_stored_and_tolerates_old_runs():
    assert not memory_of({}).measured and memory_of(None).kv_cache_tokens is None
    assert not memory_of({"memory": "peak RSS summed over vLLM's processes"}).measured
    m = memory_of({"memory": {"device": "cuda", "peak_bytes": 120_000_000_000,
                              "kv_cache_tokens": 800_000, "kv_bytes_per_token": 131_072,
                              "weight_bytes": None, "kv_method": "reserved by vLLM",
                              "device_total_bytes": float("nan"), "devices": 1}})
    assert m.measured and (m.peak_bytes, m.kv_cache_tokens) == (120_000_000_000, 800_000)
    assert m.kv_bytes_per_token == 131_072.0 and m.kv_method == "reserved by vLLM"
    assert m.weight_bytes is None and m.device_total_bytes is None  # NaN is not a measurement


def test_kv_bytes_per_token_is_measured_only_where_the_engine_reserved_a_cache():
    from engine.business.measured import _kv_figure

    config = {"_model": {"kv_bytes_per_token": 262_144}}
    vllm = {"memory": {"kv_cache_tokens": 1000, "kv_cache_bytes": 131_072_000,
                       "kv_bytes_per_token": 131_072.0, "kv_method": "reserved by vLLM"}}
    dynamic = {"memory": {"kv_cache_tokens": None, "kv_bytes_per_token": 262_144,
                          "kv_method": "dynamic cache: none reserved"}}
    assert _kv_figure(config | vllm) == (131_072.0, "measured: reserved by vLLM")
    assert _kv_figure(dynamic) == (262_144.0, "estimated from the model config")
    assert _kv_figure(config) == (262_144.0, "estimated from the model config")
    quantized = {"quantize_kv_cache": {"kv_bytes_per_token_quantized": 32_768}}
    assert _kv_figure(quantized | dynamic) == (32_768.0, "from the KV-cache technique's report")
    assert _kv_figure({}) == (None, "")


def test_tp2_pays_two_gpus_per_token_by_hand():
    # TP 1: 1,000 tokens and 10 requests in 10 s (100 tok/s, 1 req/s) on one $3.50 GPU;
    # TP 2: the same in 10 / 1.4 s (140 tok/s, 1.4 req/s) on two.
    tp1, tp2 = cost.variant_costs([("tp1", 1000, 10, 10.0, 1), ("tp2", 1000, 10, 10 / 1.4, 2)],
                                  3.50, 3_600_000, "tp1")
    # $/1M = $/h / (tok/s x 3600) x 1e6: 3.50 / 360,000 x 1e6 = 9.7222; 7.00 / 504,000 x 1e6
    assert tp1.cost_per_1m_output_tokens == pytest.approx(9.722222, rel=1e-6)
    assert tp2.cost_per_1m_output_tokens == pytest.approx(13.888889, rel=1e-6)
    assert tp2.cost_per_1m_output_tokens / tp1.cost_per_1m_output_tokens == \
        pytest.approx(2 / 1.4)
    # busy hours for 3.6M requests: 1,000 h x $3.50 = $3,500; 714.29 h x $7.00 = $5,000
    assert tp1.monthly_cost == pytest.approx(3500.0) and tp2.monthly_cost == pytest.approx(5000.0)
    assert tp2.monthly_savings == pytest.approx(-1500.0)  # costs more, not a saving
    with pytest.raises(ValueError, match="devices must be >= 1"):
        cost.occupied_price_per_hour(3.5, 0)


def test_a_replica_of_two_devices_fits_and_is_provisioned_as_two():
    # 150 GB of weights: 150 + 14.1 held back > 141 on one H200; 150 + 28.2 <= 282 on two
    one, two = (memory_fit(H200, 150e9, 0.0, 0.0, 1, 0.1, devices=d) for d in (1, 2))
    assert not one.fits and two.fits and two.memory_bytes == 282e9
    assert two.overhead_bytes == pytest.approx(28.2e9)
    # peak 172,800 / 86,400 x 1 = 2 req/s; a replica serves 0.5 -> 4 replicas x 2 = 8 GPUs,
    # 8 x $3.50 x 730 h = $20,440 a month
    plan = provision(H200, 0.5, 1.0, 172_800, 1.0, 10.0, 1.0, devices_per_replica=2)
    assert (plan.replicas, plan.gpus) == (4, 8)
    assert plan.monthly_bill == pytest.approx(20_440.0)


# ---- a stored run: TP 1, TP 2 (both with the engine's memory figures), and an old run ------
#
# Measured on an H200 ($3.50 per GPU-hour), batch 1, 4 requests per variant, each 100 prompt
# tokens and 250 output tokens (1,000 output tokens per variant), time to first token 4% of
# each request's latency:
#   tp1:    latency 2.5 s each, wall 10 s       -> 100 tok/s, 0.4 req/s, 1 GPU
#   tp2:    latency 2.5/1.4 s, wall 10/1.4 s    -> 140 tok/s, 0.56 req/s (1.4x), 2 GPUs
#   hf-old: latency 5 s, wall 20 s              -> 50 tok/s, 0.2 req/s; stored before the
#           backends measured memory: no "memory" figures, the model config's KV estimate
MEMORY = {
    "tp1": {"device": "cuda", "peak_bytes": 120_000_000_000, "peak_method": "torch max reserved",
            "weight_bytes": 16_060_000_000, "kv_cache_tokens": 800_000,
            "kv_cache_bytes": 104_857_600_000, "kv_bytes_per_token": 131_072.0,
            "kv_method": "reserved by vLLM", "device_total_bytes": 141_000_000_000, "devices": 1},
    "tp2": {"device": "cuda", "peak_bytes": 240_000_000_000, "peak_method": "torch max reserved",
            "weight_bytes": 16_060_000_000, "kv_cache_tokens": 1_700_000,
            "kv_cache_bytes": 222_822_400_000, "kv_bytes_per_token": 131_072.0,
            "kv_method": "reserved by vLLM", "device_total_bytes": 141_000_000_000, "devices": 2}}
LATENCY = {"tp1": 2.5, "tp2": 2.5 / 1.4, "hf-old": 5.0}
WALL = {"tp1": 10.0, "tp2": 10.0 / 1.4, "hf-old": 20.0}
CAT = {"nvidia-h200": H200}
ASSUME = Assumptions(requests_per_day=172_800, peak_factor=1.0, p95_target_s=10.0,
                     utilisation=1.0, concurrency=8, accuracy_metric="base_cosine",
                     accuracy_threshold=0.9, bootstrap_resamples=50)


def _stored_tp_run(store: Store) -> int:
    reqs = tuple(LogRequest(line=i + 1, messages=({"role": "user", "content": f"q{i}"},),
                            reference=f"a{i}") for i in range(4))
    w = store.add_workload("chat", "c.jsonl", b"x", ParsedLog("prompt_jsonl", reqs, (), 4))
    specs = [VariantSpec(name="tp1", backend="vllm", dtype="bfloat16").model_dump(mode="json"),
             VariantSpec(name="tp2", backend="vllm", dtype="bfloat16",
                         vllm={"tensor_parallel_size": 2}).model_dump(mode="json"),
             {"name": "hf-old", "model": "m"}]  # an old run's spec, stored as it was
    run = store.create_run(w.id, "tp pilot", {"workload_id": w.id, "generation": {
        "batch_size": 1}, "cost": {"hardware": "nvidia-h200", "requests_per_month": 3_600_000}},
        specs)
    for v in run.variants:
        lat = LATENCY[v.name]
        results = [RequestResult(
            request_index=i, output_text="o", prompt_tokens_logged=None,
            prompt_tokens_original=100, prompt_tokens_sent=100, output_tokens=250,
            ttft_s=0.04 * lat, latency_s=lat, base_cosine=None if v.name == "tp1" else 1.0)
            for i in range(4)]
        mem = MEMORY.get(v.name)
        report = {"_model": {"kv_bytes_per_token": 262_144}} | ({"memory": mem} if mem else {})
        store.finish_variant(v.id, results, VariantMeasurements(
            weight_bytes=16_060_000_000, wall_s=WALL[v.name], device="cuda",
            peak_mem_bytes=mem["peak_bytes"] if mem else None, technique_report=report))
    store.set_run_status(run.id, "done")
    return run.id


def test_the_pilot_prices_each_variant_by_its_devices(store: Store):
    report = build_report(store, _stored_tp_run(store))
    tp1, tp2, old = report.variants
    assert (tp1.devices, tp2.devices, old.devices) == (1, 2, 1)
    assert (tp1.price_per_hour, tp2.price_per_hour) == (3.50, 7.00)
    # $/1M output: 3.50 / (100 x 3600) x 1e6 = $9.72; 7.00 / (140 x 3600) x 1e6 = $13.89
    assert tp1.cost_per_1m_output_tokens == pytest.approx(9.722222, rel=1e-6)
    assert tp2.cost_per_1m_output_tokens == pytest.approx(13.888889, rel=1e-6)
    # 3.6M requests a month: 2,500 busy hours x $3.50 = $8,750 vs 1,785.7 h x $7.00 = $12,500
    assert tp1.monthly_cost == pytest.approx(8750.0) and tp2.monthly_cost == pytest.approx(12_500.0)
    assert tp2.monthly_savings == pytest.approx(-3750.0)  # priced at one GPU it "saved" $2,500
    assert report.best_saving().monthly_savings < 0
    # the engine's memory figures, and none (not zeros) for the run stored without them
    assert (tp2.kv_cache_tokens, tp2.kv_bytes_per_token, tp2.kv_method) == \
        (1_700_000, 131_072.0, "reserved by vLLM")
    assert tp2.peak_mem_bytes == 240_000_000_000 and tp2.device_memory_bytes == 141_000_000_000
    assert (old.kv_cache_tokens, old.peak_mem_bytes, old.kv_method) == (None, None, None)


def test_the_business_case_shows_no_saving_for_tp2(store: Store):
    case = build_business_case(store, _stored_tp_run(store), ASSUME, catalog=CAT)
    tp1, tp2, old = case.rows
    # measured unit costs: dollars = $/h x wall / 3600; prefill share f = 0.04;
    # $/1M output = dollars x 0.96 / 1,000 tokens x 1e6
    #   tp1: 3.50 x 10 / 3600 = $0.0097222 -> $9.3333;  tp2: 7.00 x 7.1429 / 3600 -> $13.3333
    assert tp1.unit_costs.cost_per_1m_output_tokens == pytest.approx(9.333333, rel=1e-6)
    assert tp2.unit_costs.cost_per_1m_output_tokens == pytest.approx(13.333333, rel=1e-6)
    assert tp2.unit_costs.cost_per_1m_output_tokens / tp1.unit_costs.cost_per_1m_output_tokens \
        == pytest.approx(2 / 1.4)
    # peak 2 req/s: tp1 ceil(2 / 0.4) = 5 GPUs -> 5 x 3.50 x 730 = $12,775;
    # tp2 ceil(2 / 0.56) = 4 replicas x 2 = 8 GPUs -> $20,440 (one GPU each would be $10,220)
    assert (tp1.provisioning.gpus, tp1.monthly_cost) == (5, pytest.approx(12_775.0))
    assert (tp2.provisioning.replicas, tp2.provisioning.gpus) == (4, 8)
    assert tp2.monthly_cost == pytest.approx(20_440.0) and tp2.devices == 2
    assert tp2.monthly_savings == pytest.approx(-7665.0)
    assert case.recommendation.name == "tp1" and case.monthly_savings == 0.0
    assert tp2.target.price_per_hour == 7.0 and tp2.target.fit.memory_bytes == 282e9
    # the bootstrap re-bills in replicas too: every latency is equal, so no range to speak of
    assert tp2.monthly_cost_interval.low == pytest.approx(20_440.0)
    # right-sizing reads the engine's KV bytes/token (131,072) over the model config's
    # (262,144): p95 context 350 tokens x 8 requests -> 367,001,600 bytes; and says so
    assert tp1.target.fit.kv_bytes == 131_072 * 350 * 8
    assert "weights 16.06 GB measured" in tp1.method
    assert "KV cache 131,072 B/token measured: reserved by vLLM" in tp1.method
    assert old.target.fit.kv_bytes == 262_144 * 350 * 8  # nothing measured: the estimate
    assert "KV cache 262,144 B/token estimated from the model config" in old.method
    frame = case.frame()
    assert list(frame.devices_per_replica) == [1, 2, 1] and list(frame.gpus) == [5, 8, 10]


def test_show_prints_devices_and_memory(settings, monkeypatch, capsys):
    run_id = _stored_tp_run(Store(settings.resolved_db_url()))
    monkeypatch.setenv("ROILAB_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("ROILAB_DB_URL", settings.resolved_db_url())
    assert main(["show", str(run_id)]) == 0
    out = capsys.readouterr().out
    assert "$3.5/h per device" in out
    lines = [line.split() for line in out.splitlines() if line.strip()]
    header = next(cells for cells in lines if cells[0] == "name")
    cols = {name: header.index(name) for name in ("devices", "peak_mem_MiB", "kv_tokens")}
    table = {cells[0]: cells for cells in lines if len(cells) == len(header)}
    assert table["tp2"][cols["devices"]] == "2" and table["tp1"][cols["devices"]] == "1"
    # 240e9 B / 2^20 = 228,881.8 MiB; KV capacity as the engine reserved it
    assert table["tp2"][cols["peak_mem_MiB"]] == "228,882"
    assert table["tp2"][cols["kv_tokens"]] == "1,700,000"
    assert table["hf-old"][cols["kv_tokens"]] == "n/a"
    assert "tp2 memory: peak torch max reserved; KV cache reserved by vLLM" in out


def test_results_page_shows_devices_and_kv_capacity(settings, monkeypatch):
    run_id = _stored_tp_run(Store(_use(settings, monkeypatch).resolved_db_url()))
    at = page("results", run=str(run_id))
    assert not at.exception
    table = _frame_with(at, "$ per 1k requests")
    assert list(table["pilot devices"]) == ["1", "2", "1"]
    assert list(table["KV cache (tokens)"]) == ["800,000", "1,700,000", "-"]  # '-': not measured
    # 120e9 and 240e9 bytes in MiB, as `roilab show` prints them
    assert list(table["peak memory (MiB)"][:2]) == ["114,440.9", "228,881.8"]


def test_business_page_shows_devices_per_replica(settings, monkeypatch):
    run_id = _stored_tp_run(Store(_use(settings, monkeypatch).resolved_db_url()))
    at = page("business_case", run=str(run_id))
    assert not at.exception
    table = next(d.value for d in at.dataframe if "Figures" in d.value.columns)
    # devices in all, and for a replica of several, how many replicas of how many
    assert [d.endswith(" of 2)") for d in table.Devices] == [False, True, False]
    assert int(table.Devices[1].split()[0].replace(",", "")) % 2 == 0  # whole replicas of 2
    assert "measured: reserved by vLLM" in table["Where the figures come from"][0]


def test_pdf_shows_devices_and_memory(store: Store, tmp_path):
    assert shutil.which("pdftotext"), "pdftotext missing: apt-get install poppler-utils"
    pdf, _case = business_pdf_for_run(store, _stored_tp_run(store), ASSUME, CAT)
    path = tmp_path / "case.pdf"
    path.write_bytes(pdf)
    text = " ".join(subprocess.run(["pdftotext", "-layout", str(path), "-"], check=True,
                                   capture_output=True, text=True).stdout.split())
    # the business case: tp2 is 8 GPUs as 4 replicas of 2, and no saving
    assert "$20,440.00 on 8 x NVIDIA H200 141 GB (4 replicas of 2)" in text
    # per variant: 8 GPUs as 4 replicas of 2 (the cell wraps), p95 2.5 / 1.4 = 1.79 s, and
    # $7,665 a month more than the baseline, said in words
    assert "tp2 none (baseline) 1.000 pass measured NVIDIA H200 141 GB" in text
    assert "1.79 yes $20,440.00 $7,665.00 more" in text and "replicas of" in text
    # the pilot as measured: $/1k requests 7.00 / (0.56 x 3600) x 1000 = $3.47 for tp2
    assert "Memory per variant" in text and "Devices per variant" in text
    assert "$3.47" in text and "$2.43" in text
    # memory per variant in MiB: tp2 2 devices, peak 240e9 B, weights 16.06e9 B, 1,700,000
    # tokens, KV 222,822,400,000 B, 131,072 B/token, device 141e9 B; '-' where not measured
    assert "tp2 2 cuda 228,881.8 15,316.0 1,700,000 212,500.0 131,072 134,468.1" in text
    assert "hf-old 1 cuda - 15,316.0 - - - - -" in text
