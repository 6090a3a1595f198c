"""Load replay: a workload's requests against OpenAI-compatible endpoints under a schedule.

``run_load(spec, store, settings, on_progress=None)`` sends the stored requests of
``spec.workload_id`` to each target (a running server's URL, or a local model it starts
under ``vllm serve``) at every load level of one schedule (``concurrency``, ``poisson`` or
``trace``: engine.load.schedules; the spec: engine.load.spec).

Every request streams (temperature 0; exactly ``max_new_tokens`` with ``spec.fixed_output``,
else up to it) and records
its arrival, send, every content chunk and end time, and the server's token usage; the
samples are stored per level as they finish, with the spec, and the per-level figures
(engine.load.metrics) are rebuilt from them. Presentation is injected via ``on_progress``.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pandas as pd

from engine.core.domain import LoadRun, LoadSample, LogRequest, Status
from engine.core.errors import BackendError, SpecError
from engine.core.settings import Settings
from engine.load.client import TimedClient
from engine.load.metrics import levels_frame
from engine.load.schedules import plan_levels
from engine.load.spec import LoadSpec, LoadTarget, stored_load_spec


# ---- progress -----------------------------------------------------------------------------
@dataclass(frozen=True)
class LoadProgress:
    target: str
    target_index: int
    n_targets: int
    level_index: int
    n_levels: int
    message: str

    @property
    def fraction(self) -> float:
        return min(1.0, (self.target_index + self.level_index / self.n_levels) / self.n_targets)


LoadProgressFn = Callable[[LoadProgress], None]


# ---- the entry point ----------------------------------------------------------------------
def run_load(spec: LoadSpec, store, settings: Settings,
             on_progress: LoadProgressFn | None = None, run_id: int | None = None) -> LoadRun:
    """Run a load test end to end and return the stored LoadRun.

    Levels run in the order given, per target; each level's samples are stored as soon as
    it ends. A target that cannot be reached fails the run with the reason (samples of the
    levels already done are kept). ``run_id`` continues a run created by
    ``store.create_load_run`` beforehand (the dashboard lists it before the sweep starts).
    """
    requests = [r.request for r in store.get_requests(spec.workload_id)]
    if not requests:
        raise SpecError(f"Workload {spec.workload_id} has no requests to replay.")
    plan = plan_levels(spec, requests)  # refuses a trace without timestamps before anything runs
    run = store.get_load_run(run_id) if run_id else \
        store.create_load_run(spec.workload_id, spec.name, spec.model_dump(mode="json"))
    store.set_load_run_status(run.id, Status.RUNNING)
    try:
        for i, target in enumerate(spec.targets):
            _run_target(spec, target, i, requests, plan, store, run.id, settings, on_progress)
    except BaseException as exc:
        store.set_load_run_status(run.id, Status.FAILED, f"{type(exc).__name__}: {exc}")
        raise
    store.set_load_run_status(run.id, Status.DONE)
    return store.get_load_run(run.id)



def _run_target(spec: LoadSpec, target: LoadTarget, ti: int, requests: Sequence[LogRequest],
                plan, store, run_id: int, settings: Settings,
                on_progress: LoadProgressFn | None) -> None:
    def notify(level_index: int, message: str) -> None:
        if on_progress:
            on_progress(LoadProgress(target.name, ti, len(spec.targets), level_index,
                                     len(spec.levels), message))

    if target.serve is None:
        _sweep(spec, target, target.base_url, target.model, requests, plan, store, run_id, notify)
        return
    from engine.backends.vllm_serve import vllm_server
    from engine.models.prep import resolve_model

    o = target.serve
    notify(0, f"starting vllm serve for {o.model} (CPU: ~30 s to minutes)")
    with vllm_server(resolve_model(o.model, settings), target.name, o.start_timeout_s,
                     dtype=o.dtype, max_model_len=o.max_model_len,
                     kv_cache_memory_bytes=o.kv_cache_memory_bytes,
                     enforce_eager=o.enforce_eager,
                     gpu_memory_utilization=o.gpu_memory_utilization,
                     extra_args=o.extra_args) as url:
        _sweep(spec, target, url, target.name, requests, plan, store, run_id, notify)


def _sweep(spec: LoadSpec, target: LoadTarget, url: str, model: str,
           requests: Sequence[LogRequest], plan, store, run_id: int, notify) -> None:
    conc = max(spec.levels) if spec.schedule == "concurrency" else spec.requests_per_level
    client = TimedClient(url, model, target.api_key_env, spec.timeout_s,
                         max_connections=int(min(conc, 1024)), fixed_output=spec.fixed_output)
    try:
        client.check_model()
        if spec.warmup_requests:
            notify(0, f"warm-up ({spec.warmup_requests} request(s), not stored)")
            warm = [client.send(list(requests[k % len(requests)].messages),
                                spec.max_new_tokens, time.perf_counter(), 0.0, target.name, 0, k)
                    for k in range(spec.warmup_requests)]
            if all(w.error for w in warm):
                raise BackendError(f"{url}: every warm-up request failed: {warm[0].error}")
            if spec.fixed_output:
                _check_fixed(url, warm, spec.max_new_tokens)
        for li, level in enumerate(spec.levels):
            notify(li, f"{spec.schedule} {level:g}: {spec.requests_per_level} requests")
            samples = replay(client, requests, plan[level], spec.schedule, level,
                             spec.max_new_tokens, target.name)
            store.add_load_samples(run_id, samples)
            bad = sum(not s.ok for s in samples)
            notify(li + 1, f"{spec.schedule} {level:g} done" + (f", {bad} failed" if bad else ""))
    finally:
        client.close()


def _check_fixed(url: str, warm: Sequence[LoadSample], max_new_tokens: int) -> None:
    """BackendError when an endpoint took ignore_eos / min_tokens but stopped early anyway
    (it dropped the fields unread): its figures would not be of fixed-length answers."""
    short = [w for w in warm if w.ok and w.prompt_tokens is not None  # usage was reported
             and w.output_tokens < max_new_tokens]
    if short:
        raise BackendError(
            f"{url} was asked for exactly {max_new_tokens} new tokens (ignore_eos, min_tokens) "
            f"but a warm-up request got {short[0].output_tokens}: the endpoint ignores those "
            "fields. Sweep it with natural output (`roilab load --natural-output`, or untick "
            "'Fixed output length' on the Load test page).")


def replay(client: TimedClient, requests: Sequence[LogRequest],
           items: Sequence[tuple[int, float]], schedule: str, level: float,
           max_new_tokens: int, variant: str) -> list[LoadSample]:
    """Send one level's requests on its schedule; samples in the order of ``items``."""
    t0 = time.perf_counter()

    def send(index: int, arrival: float | None) -> LoadSample:
        at = time.perf_counter() - t0 if arrival is None else arrival
        return client.send(list(requests[index].messages), max_new_tokens, t0, at, variant,
                           level, index)

    closed = schedule == "concurrency"  # closed loop: a worker takes the next when free
    pool = ThreadPoolExecutor(max_workers=int(level) if closed else min(len(items), 1024))
    try:
        if closed:
            return list(pool.map(lambda it: send(it[0], None), items))
        futures = []
        for index, arrival in items:  # open loop: each request at its arrival time
            delay = arrival - (time.perf_counter() - t0)
            if delay > 0:
                time.sleep(delay)
            futures.append(pool.submit(send, index, arrival))
        return [f.result() for f in futures]
    except BaseException:  # Ctrl+C / SIGTERM: drop the queued requests, don't send them
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    finally:
        pool.shutdown(wait=True)


def load_levels(store, run_id: int) -> pd.DataFrame:
    """Per (variant, level) figures of a stored load run, rebuilt from its samples."""
    spec = stored_load_spec(store.get_load_run(run_id))
    return levels_frame(store.get_load_samples(run_id), spec.slo.slo())
