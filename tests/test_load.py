"""Load replay against a real ``vllm serve`` of the embedded model on loopback (the session's
server from tests/conftest.py): few requests, 16 new tokens, 2-3 levels per sweep."""
from __future__ import annotations

import pytest
from conftest import VLLM_SERVED

from engine.backends.vllm_serve import free_port, serve_command
from engine.core.errors import BackendError
from engine.ingest.logs import parse_log
from engine.load.metrics import capacity_at_slo
from engine.load.replay import load_levels, run_load
from engine.load.schedules import poisson_arrivals
from engine.load.spec import LoadSpec, parse_load_spec
from engine.store.store import Store

pytestmark = pytest.mark.slow

MAX_NEW = 16
N = 4  # requests per level


def _workload(store: Store, settings) -> int:
    raw = (settings.samples_dir / "support_chat.jsonl").read_bytes()
    return store.add_workload("support", "support_chat.jsonl", raw,
                              parse_log(raw, "support_chat.jsonl")).id


def _spec(workload_id: int, url: str, **changes) -> LoadSpec:
    return parse_load_spec({
        "name": "sweep", "workload_id": workload_id, "requests_per_level": N,
        "max_new_tokens": MAX_NEW, "targets": [{"name": "smollm2", "base_url": url,
                                                "model": VLLM_SERVED}], **changes})


def test_concurrency_sweep_times_every_request_and_stores_it(vllm_server, settings):
    store = Store(settings.resolved_db_url())
    spec = _spec(_workload(store, settings), vllm_server, levels=[1, 2, 4],
                 slo={"ttft_s": 30, "e2e_s": 60})
    seen = []
    run = run_load(spec, store, settings, on_progress=seen.append)
    assert run.status == "done" and run.n_samples == 3 * N
    assert run.spec == spec.model_dump(mode="json")  # exactly what produced the numbers
    assert seen[-1].fraction == 1.0
    for s in store.get_load_samples(run.id):
        assert s.ok, s.error
        assert s.arrival_s <= s.sent_s < s.first_token_s <= s.chunk_times_s[-1] <= s.end_s
        assert list(s.chunk_times_s) == sorted(s.chunk_times_s)
        assert len(s.chunk_times_s) <= s.output_tokens <= MAX_NEW  # from the server's usage
        assert s.prompt_tokens and s.prompt_tokens > 100  # the FAQ system prompt
    levels = load_levels(store, run.id)
    assert levels.level.tolist() == [1, 2, 4] and (levels.n_ok == N).all()
    assert (levels.ttft_p50_s <= levels.ttft_p99_s).all()
    assert (levels.itl_p50_s > 0).all() and (levels.e2e_p50_s > levels.ttft_p50_s).all()
    # a lax SLO: every request meets it, so goodput is the request rate
    assert levels.goodput_rps.tolist() == pytest.approx(levels.requests_per_s.tolist())
    # continuous batching: 4 in flight serve more tokens per second than 1
    by_level = levels.set_index("level").output_tokens_per_s
    assert by_level[4] > by_level[1]
    cap = capacity_at_slo(levels)["smollm2"]
    assert cap.requests_per_s == pytest.approx(levels.requests_per_s.max())


def test_fixed_output_makes_every_request_generate_max_new_tokens(vllm_server, settings):
    """Comparable capacities: with fixed output (the default) every request generates exactly
    max_new_tokens; with natural output answers end where the model stops, and the per-level
    table says how many tokens that was (vllm serve takes ignore_eos and min_tokens)."""
    store = Store(settings.resolved_db_url())
    wid = _workload(store, settings)
    runs = {fixed: run_load(_spec(wid, vllm_server, levels=[4], requests_per_level=8,
                                  max_new_tokens=64, fixed_output=fixed), store, settings)
            for fixed in (True, False)}
    fixed = [s.output_tokens for s in store.get_load_samples(runs[True].id)]
    natural = [s.output_tokens for s in store.get_load_samples(runs[False].id)]
    assert fixed == [64] * 8, fixed
    assert all(1 <= n <= 64 for n in natural) and min(natural) < 64, natural  # some end early
    for is_fixed, mean in ((True, 64.0), (False, sum(natural) / 8)):
        levels = load_levels(store, runs[is_fixed].id)
        assert levels.output_tokens_per_request.tolist() == pytest.approx([mean])
        assert runs[is_fixed].spec["fixed_output"] is is_fixed


def test_poisson_sweep_sends_on_the_seeded_schedule(vllm_server, settings):
    store = Store(settings.resolved_db_url())
    spec = _spec(_workload(store, settings), vllm_server, schedule="poisson",
                 levels=[0.5, 2.0], seed=7, warmup_requests=0,
                 slo={"ttft_s": 1e-4})  # impossible: nothing meets it
    run = run_load(spec, store, settings)
    samples = store.get_load_samples(run.id)
    for j, level in enumerate(spec.levels):
        at = [s for s in samples if s.level == level]
        planned = poisson_arrivals(level, N, seed=7 + j)
        assert [s.arrival_s for s in at] == pytest.approx(planned)
        assert all(0 <= s.sent_s - s.arrival_s < 0.25 for s in at)  # sent on time
    levels = load_levels(store, run.id)
    assert (levels.goodput_rps == 0).all() and (levels.requests_per_s > 0).all()
    assert capacity_at_slo(levels)["smollm2"].requests_per_s is None


def test_unreachable_or_wrong_model_fails_the_run_with_the_fix(vllm_server, settings):
    store = Store(settings.resolved_db_url())
    wid = _workload(store, settings)
    wrong = _spec(wid, vllm_server, levels=[1]).model_copy(update={"targets": (
        _spec(wid, vllm_server).targets[0].model_copy(update={"model": "gpt-9"}),)})
    with pytest.raises(BackendError, match=f"does not serve model 'gpt-9'.*{VLLM_SERVED}"):
        run_load(wrong, store, settings)
    url = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(BackendError, match="Cannot connect.*server running"):
        run_load(_spec(wid, url, levels=[1]), store, settings)
    assert [r.status for r in store.list_load_runs()] == ["failed", "failed"]
    assert "gpt-9" in store.list_load_runs()[1].error


def test_cli_sweeps_a_url_and_prints_the_per_level_table(vllm_server, settings, monkeypatch,
                                                         capsys):
    from engine.cli.main import main

    monkeypatch.setenv("ROILAB_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("ROILAB_DB_URL", settings.resolved_db_url())
    wid = _workload(Store(settings.resolved_db_url()), settings)
    assert main(["load", "--workload", str(wid), "--url", vllm_server, "--model", VLLM_SERVED,
                 "--levels", "1,2", "--requests-per-level", "3", "--max-new-tokens", "8",
                 "--slo-ttft", "30"]) == 0
    out = capsys.readouterr().out
    assert "[100%] smollm2: concurrency 2 done" in out
    header, *rows = out.split("Load run 1 ")[1].splitlines()[1:]
    assert header.split()[:4] == ["variant", "level", "ok", "TTFT"] and len(rows) == 2
    assert "exactly 8 new tokens (fixed output)" in out  # the default
    end = header.index("tok/req") + len("tok/req")  # right-aligned numbers
    assert [r[:end].split()[-1] for r in rows] == ["8.000", "8.000"]  # tokens per request
    assert main(["load", "--show", "1"]) == 0
    assert out.split("Load run 1 ")[1] == capsys.readouterr().out.split("Load run 1 ")[1]
    assert main(["load", "--workload", str(wid)]) == 2  # neither --url nor --serve
    assert "either --url URL --model NAME" in capsys.readouterr().err


def test_a_serve_target_starts_its_own_vllm_serve_and_stops_it(model_settings):
    """`roilab load --serve`'s path: the target names a model, run_load serves and sweeps it."""
    import psutil

    store = Store(model_settings.resolved_db_url())
    spec = parse_load_spec({
        "workload_id": _workload(store, model_settings), "levels": [2], "requests_per_level": 2,
        "max_new_tokens": 8, "warmup_requests": 0,
        "targets": [{"name": "own", "serve": {"kv_cache_memory_bytes": 128 * 2**20}}]})
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    run = run_load(spec, store, model_settings)
    assert run.status == "done" and run.n_samples == 2
    assert all(s.ok and s.variant == "own" for s in store.get_load_samples(run.id))
    left = {p.pid for p in psutil.Process().children(recursive=True)} - before
    assert not [p for p in left if psutil.pid_exists(p) and
                psutil.Process(p).status() != psutil.STATUS_ZOMBIE]  # server stopped


def test_a_cli_sweep_stopped_with_sigterm_is_stored_as_failed(vllm_server, settings):
    import os
    import signal
    import subprocess
    import sys
    import time

    from engine.core.settings import REPO_ROOT

    wid = _workload(Store(settings.resolved_db_url()), settings)
    env = dict(os.environ, ROILAB_DATA_DIR=str(settings.data_dir),
               ROILAB_DB_URL=settings.resolved_db_url())
    proc = subprocess.Popen([sys.executable, "-m", "engine.cli.main", "load", "--workload", str(wid),
                             "--url", vllm_server, "--model", VLLM_SERVED, "--levels", "1,1,1",
                             "--requests-per-level", "50"], cwd=REPO_ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    store = Store(settings.resolved_db_url())
    deadline = time.monotonic() + 60
    while not (store.list_load_runs() and store.list_load_runs()[0].status == "running"):
        assert time.monotonic() < deadline and proc.poll() is None, proc.stdout.read()
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    t = time.monotonic()
    proc.wait(timeout=60)
    assert time.monotonic() - t < 15  # the requests in flight end, the queued ones are dropped
    [run] = store.list_load_runs()
    assert run.status == "failed" and "signal" in run.error, run


def test_serve_command_on_a_gpu_keeps_cuda_graphs_and_lets_vllm_size_the_cache(model_settings):
    from engine.models.prep import resolve_model

    cpu = serve_command("/m", 8000, "m")
    assert "--enforce-eager" in cpu and "--kv-cache-memory-bytes" in cpu
    assert "--load-format" not in cpu
    gpu = serve_command(resolve_model("random:llama-3.1-8b", model_settings), 8000, "base",
                        dtype="bfloat16", enforce_eager=False, kv_cache_memory_bytes=None,
                        gpu_memory_utilization=0.85, extra_args=("--quantization", "fp8"))
    assert "--enforce-eager" not in gpu and "--kv-cache-memory-bytes" not in gpu
    assert gpu[gpu.index("--gpu-memory-utilization") + 1] == "0.85"
    assert gpu[gpu.index("--load-format") + 1] == "dummy"  # a config-only folder: no weights
    assert gpu[-2:] == ["--quantization", "fp8"]
