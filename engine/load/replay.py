"""Load replay: a workload's requests against OpenAI-compatible endpoints under a schedule.

``run_load(spec, store, settings, on_progress=None)`` sends the stored requests of
``spec.workload_id`` to each target (a running server's URL, or a local model it starts
under ``vllm serve``) at every load level of one schedule:

- ``concurrency``: closed loop, ``level`` requests in flight at once;
- ``poisson``: open loop, arrivals at ``level`` requests/s with exponential gaps (seeded);
- ``trace``: the log's own arrival times (``metadata.timestamp`` and similar) sped up by
  ``level`` (2 = twice as fast). Refused, with the reason, when the requests carry none.

Every request streams (temperature 0, up to ``max_new_tokens``) and records
its arrival, send, every content chunk and end time, and the server's token usage; the
samples are stored per level as they finish, with the spec, and the per-level figures
(engine.load.metrics) are rebuilt from them. Presentation is injected via ``on_progress``.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from engine.core.domain import LoadRun, LoadSample, LogRequest
from engine.core.errors import BackendError, SpecError
from engine.core.redact import refuse_url_credentials
from engine.core.settings import Settings
from engine.load.client import TimedClient
from engine.load.metrics import Slo, levels_frame

TIMESTAMP_KEYS = ("timestamp", "created_at", "created", "time", "ts", "request_time")


class _Model(BaseModel):
    # hide_input_in_errors: a refused base_url with a password is never echoed back
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)


class ServeOptions(_Model):
    """A local model the load test serves itself under ``vllm serve`` (CPU-friendly defaults)."""

    model: str = "embedded:smollm2-135m-instruct"
    dtype: str = "float32"
    max_model_len: int = Field(2048, ge=16)
    kv_cache_memory_bytes: int | None = Field(256 * 2**20, ge=16 * 2**20,
                                              description="None: sized by vLLM (GPU)")
    enforce_eager: bool = True  # False on a GPU: CUDA graphs, as production serves
    gpu_memory_utilization: float | None = Field(None, gt=0, le=1)
    extra_args: tuple[str, ...] = ()  # more `vllm serve` flags, e.g. ("--quantization", "fp8")
    start_timeout_s: float = Field(600.0, gt=0)


class LoadTarget(_Model):
    """One variant under load: a running server (base_url + model) or a model to serve."""

    name: str = Field(min_length=1, max_length=80)
    base_url: str | None = Field(None, min_length=8, description="e.g. http://127.0.0.1:8000/v1")
    model: str | None = Field(None, min_length=1, description="the served model name")
    api_key_env: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    serve: ServeOptions | None = None

    @model_validator(mode="after")
    def _one_source(self) -> LoadTarget:
        if (self.base_url is None) == (self.serve is None):
            raise ValueError(f"target {self.name!r}: give either base_url (+ model) of a running "
                             "server or serve (a local model to start), not both or neither")
        if self.base_url is not None:
            if not self.base_url.startswith(("http://", "https://")):
                raise ValueError(f"target {self.name!r}: base_url must start with http:// or "
                                 "https:// (e.g. http://127.0.0.1:8000/v1)")
            refuse_url_credentials(self.base_url, f"target {self.name!r}: base_url (--url)")
            if not self.model:
                raise ValueError(f"target {self.name!r}: model (the served model name) is "
                                 "required with base_url")
        return self


class SloSpec(_Model):
    """Service-level objective per request, in seconds; None = not checked."""

    ttft_s: float | None = Field(None, gt=0)
    itl_s: float | None = Field(None, gt=0)  # the request's mean inter-token latency
    e2e_s: float | None = Field(None, gt=0)

    def slo(self) -> Slo:
        return Slo(self.ttft_s, self.itl_s, self.e2e_s)


class LoadSpec(_Model):
    """Everything a load test does; stored with its results."""

    name: str = Field("load test", max_length=200)
    workload_id: int
    targets: tuple[LoadTarget, ...] = Field(min_length=1)
    schedule: Literal["concurrency", "poisson", "trace"] = "concurrency"
    levels: tuple[float, ...] = Field((1, 2, 4, 8), min_length=1)
    requests_per_level: int = Field(16, ge=1, le=100_000)
    max_new_tokens: int = Field(64, ge=1, le=32_768)
    slo: SloSpec = SloSpec()
    seed: int = 0
    timeout_s: float = Field(300.0, gt=0)  # per request
    warmup_requests: int = Field(1, ge=0, le=64)  # per target, before the first level, unstored

    @model_validator(mode="after")
    def _levels(self) -> LoadSpec:
        if any(not x > 0 for x in self.levels):
            raise ValueError("levels must all be > 0")
        if self.schedule == "concurrency" and any(x != int(x) for x in self.levels):
            raise ValueError("concurrency levels are whole numbers of requests in flight")
        names = [t.name for t in self.targets]
        if len(set(names)) != len(names):
            raise ValueError(f"target names must be unique, got {names}")
        return self


def parse_load_spec(data: dict[str, Any]) -> LoadSpec:
    """A LoadSpec from JSON; SpecError names the offending field."""
    try:
        return LoadSpec.model_validate(data)
    except ValidationError as exc:
        msgs = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'spec'}: {e['msg']}"
                         for e in exc.errors())
        raise SpecError(f"Invalid load spec: {msgs}") from exc


def parse_levels(text: str) -> tuple[float, ...]:
    """"1, 2,4" -> (1.0, 2.0, 4.0); SpecError saying the expected form otherwise."""
    try:
        levels = tuple(float(x) for x in text.replace(";", ",").split(",") if x.strip())
    except ValueError as exc:
        raise SpecError(f"Load levels are numbers separated by commas (e.g. 1,2,4,8), got "
                        f"{text!r}.") from exc
    if not levels:
        raise SpecError("Give at least one load level, e.g. 1,2,4,8.")
    return levels


# ---- schedules (pure) ---------------------------------------------------------------------
def poisson_arrivals(rate: float, n: int, seed: int = 0) -> list[float]:
    """``n`` arrival offsets (s) of a Poisson process at ``rate``/s; the first at 0."""
    gaps = np.random.default_rng(seed).exponential(1.0 / rate, size=max(n - 1, 0))
    return [0.0, *np.cumsum(gaps).tolist()][:n]


def request_timestamp(req: LogRequest) -> float | None:
    """Epoch seconds of a request from its metadata (ISO 8601 or epoch s/ms), or None."""
    for key in TIMESTAMP_KEYS:
        value = req.metadata.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value) / (1000.0 if value > 1e11 else 1.0)  # ms since epoch
        if isinstance(value, str) and value.strip():
            try:
                return datetime.fromisoformat(value.strip().replace("Z", "+00:00")).timestamp()
            except ValueError:
                continue
    return None


def trace_arrivals(timestamps: Sequence[float], speedup: float) -> list[float]:
    """Offsets from the first (earliest) request, divided by ``speedup``, in log order."""
    t0 = min(timestamps)
    return [(t - t0) / speedup for t in timestamps]


def trace_order(requests: Sequence[LogRequest]) -> list[tuple[int, float]]:
    """(workload index, timestamp) sorted by time; SpecError when any request has none."""
    stamped = [(i, request_timestamp(r)) for i, r in enumerate(requests)]
    missing = [i for i, t in stamped if t is None]
    if missing:
        raise SpecError(f"The trace schedule replays the log's own timing, but {len(missing)} "
                        f"of {len(requests)} requests carry no timestamp in their metadata "
                        f"(looked for {', '.join(TIMESTAMP_KEYS)}; first without: request "
                        f"{missing[0]}). Use the concurrency or poisson schedule instead.")
    return sorted(stamped, key=lambda it: it[1])


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
    plan = _plan(spec, requests)  # refuses a trace without timestamps before anything runs
    run = store.get_load_run(run_id) if run_id else \
        store.create_load_run(spec.workload_id, spec.name, spec.model_dump(mode="json"))
    store.set_load_run_status(run.id, "running")
    try:
        for i, target in enumerate(spec.targets):
            _run_target(spec, target, i, requests, plan, store, run.id, settings, on_progress)
    except BaseException as exc:
        store.set_load_run_status(run.id, "failed", f"{type(exc).__name__}: {exc}")
        raise
    store.set_load_run_status(run.id, "done")
    return store.get_load_run(run.id)


def _plan(spec: LoadSpec, requests: Sequence[LogRequest]) -> dict[float, list[tuple[int, float]]]:
    """Per level: (workload index, arrival offset s) of each request to send.

    Concurrency levels have no offsets (0.0: a free worker sends at once); the workload is
    cycled when a level asks for more requests than it holds.
    """
    n = spec.requests_per_level
    if spec.schedule == "trace":
        order = trace_order(requests)[:n]
        return {lvl: list(zip([i for i, _ in order],
                              trace_arrivals([t for _, t in order], lvl), strict=True))
                for lvl in spec.levels}
    idx = [k % len(requests) for k in range(n)]
    if spec.schedule == "poisson":
        return {lvl: list(zip(idx, poisson_arrivals(lvl, n, spec.seed + j), strict=True))
                for j, lvl in enumerate(spec.levels)}
    return {lvl: [(i, 0.0) for i in idx] for lvl in spec.levels}


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
                         max_connections=int(min(conc, 1024)))
    try:
        client.check_model()
        if spec.warmup_requests:
            notify(0, f"warm-up ({spec.warmup_requests} request(s), not stored)")
            warm = [client.send(list(requests[k % len(requests)].messages),
                                spec.max_new_tokens, time.perf_counter(), 0.0, target.name, 0, k)
                    for k in range(spec.warmup_requests)]
            if all(w.error for w in warm):
                raise BackendError(f"{url}: every warm-up request failed: {warm[0].error}")
        for li, level in enumerate(spec.levels):
            notify(li, f"{spec.schedule} {level:g}: {spec.requests_per_level} requests")
            samples = replay(client, requests, plan[level], spec.schedule, level,
                             spec.max_new_tokens, target.name)
            store.add_load_samples(run_id, samples)
            bad = sum(not s.ok for s in samples)
            notify(li + 1, f"{spec.schedule} {level:g} done" + (f", {bad} failed" if bad else ""))
    finally:
        client.close()


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
    run = store.get_load_run(run_id)
    slo = SloSpec.model_validate(run.spec.get("slo", {})).slo()
    return levels_frame(store.get_load_samples(run_id), slo)


def capacity_assumption(store, load_run_id: int, names: dict[str, str] | None = None,
                        min_attainment: float = 0.9) -> dict[str, Any]:
    """``Assumptions`` fields that size the business case with a load run's capacity at SLO.

    ``names`` maps the load run's variant names to the pilot's (same name when left out).
    Variants with no level meeting the SLO are left out (they keep single-stream sizing), and
    the source says so. Use: ``Assumptions(**capacity_assumption(store, 3), ...)``.
    """
    from engine.load.metrics import capacity_at_slo

    caps = capacity_at_slo(load_levels(store, load_run_id), min_attainment)
    names = names or {}
    given = tuple((names.get(c.variant, c.variant), c.requests_per_s, c.e2e_p99_s)
                  for c in caps.values() if c.requests_per_s is not None)
    missed = [v for v, c in caps.items() if c.requests_per_s is None]
    source = (f"load run {load_run_id}, levels with >= {min_attainment:.0%} of requests in SLO"
              + (f"; no level met the SLO for {', '.join(missed)}" if missed else ""))
    return {"load_capacity": given, "load_capacity_source": source}
