"""What a load test does, as data: its targets (running servers or models to serve), the
schedule and levels, the SLO; validated, and stored with the load run's results."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from engine.core.domain import LoadRun
from engine.core.errors import SpecError
from engine.core.redact import refuse_url_credentials
from engine.load.metrics import Slo


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
    """Everything a load test does; stored with its results.

    ``fixed_output`` (default on) makes every request generate exactly ``max_new_tokens``
    tokens: the body carries ``ignore_eos: true`` and ``min_tokens = max_new_tokens``
    (vLLM's OpenAI server takes both). It is on by default, not only when a spec has several
    targets, because variants are compared across load runs too (``roilab load --url`` sweeps
    one target per run): with natural output each variant stops when its model says so, so
    its requests/s at an SLO depends on how long its answers happen to be (a 64-token sweep
    of SmolLM2 averaged 48.5), and capacity figures of two variants measure different work.
    Turn it off (``roilab load --natural-output``, the page's checkbox) to measure the answer
    lengths real traffic gets, or for an endpoint that refuses those two fields (hosted APIs).
    Specs stored before the field existed ran with natural output and read back so
    (``stored_load_spec``).
    """

    name: str = Field("load test", max_length=200)
    workload_id: int
    targets: tuple[LoadTarget, ...] = Field(min_length=1)
    schedule: Literal["concurrency", "poisson", "trace"] = "concurrency"
    levels: tuple[float, ...] = Field((1, 2, 4, 8), min_length=1)
    requests_per_level: int = Field(16, ge=1, le=100_000)
    max_new_tokens: int = Field(64, ge=1, le=32_768)
    fixed_output: bool = True  # every request generates exactly max_new_tokens (see above)
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
        raise SpecError(f"Invalid load spec: {_messages(exc)}") from exc


def _messages(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'spec'}: {e['msg']}"
                     for e in exc.errors())


def stored_load_spec(run: LoadRun) -> LoadSpec:
    """The LoadSpec stored with a load run, read back through the class (not dict lookups).

    A spec stored before ``fixed_output`` existed ran with natural output, so it reads as
    ``fixed_output=False`` rather than taking today's default; the run's ``workload_id``
    fills a spec that lacks one. SpecError names the field when the JSON does not read.
    """
    data = {"fixed_output": False, "workload_id": run.workload_id, **run.spec}
    try:
        return LoadSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(f"Load run {run.id}'s stored spec does not read as a LoadSpec "
                        f"({_messages(exc)}); it was stored by another version of roilab "
                        "or written by hand.") from exc


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
