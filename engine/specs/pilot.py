"""Serialisable specs: a variant is data (base model + backend + technique specs).

Every run stores the JSON of its PilotSpec, so any number can be traced back to exactly
what produced it. Unknown fields are refused (``extra="forbid"``) so a typo never
silently becomes a default.
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from engine.core.errors import SpecError
from engine.specs.backends import EndpointOptions, VllmOptions
from engine.techniques import MODULES, TechniqueSpec
from engine.techniques.prompt_compression import CompressPrompt
from engine.techniques.weight_quant import QuantizeWeights

if TYPE_CHECKING:
    from engine.core.domain import Run

__all__ = ["CompressPrompt", "QuantizeWeights", "TechniqueSpec", "VariantSpec", "PilotSpec",
           "GenerationSettings", "MeasurementSettings", "CostSettings", "VllmOptions", "EndpointOptions",
           "BUILT_IN_VARIANTS", "DEFAULT_PILOT", "default_pilot_variants", "default_variants",
           "pilot_variants", "parse_pilot_spec", "variant_generation", "default_repeats",
           "DEFAULT_REPEATS", "default_min_pass_s", "DEFAULT_MIN_PASS_S"]

DEFAULT_MODEL = "embedded:smollm2-135m-instruct"  # the small model roilab prepares itself


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @classmethod
    def from_stored(cls, data: Mapping[str, Any]) -> Self:
        """Read back a spec stored with a run (its JSON), however old: fields added since it
        was stored take today's defaults (defined once, on these classes), and fields this
        version no longer has are dropped (``extra="forbid"`` guards what users write, not
        what roilab stored). SpecError, naming the field, if it still does not validate."""
        try:
            return cls.model_validate(_readable(cls, data))
        except ValidationError as exc:
            parts = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
            raise SpecError(f"A stored {cls.__name__} cannot be read back - "
                            + "; ".join(parts)) from exc


class VariantSpec(_Spec):
    name: str = Field(min_length=1, max_length=80)
    model: str = DEFAULT_MODEL
    backend: str = "transformers"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    # Serve as production would on a GPU: static KV cache + torch.compile of the decode step
    # (mode "reduce-overhead", i.e. CUDA graphs). Compiling takes a minute or more per new
    # batch shape; that warm-up is reported apart and never counted in latency. CUDA only:
    # the backend's check refuses it on CPU before the pilot starts.
    compile: bool = False
    # Requests per batch for this variant; None: the pilot's generation.batch_size. Lets one
    # pilot measure the same engine at batch 1 and at batch 32 without starting it twice.
    batch_size: int | None = Field(None, ge=1, le=256)
    techniques: tuple[TechniqueSpec, ...] = ()
    # Backend options (engine/specs/backends.py), only with their backend: vLLM's engine
    # arguments for backend "vllm"; the server to measure for backend "endpoint".
    vllm: VllmOptions | None = None
    endpoint: EndpointOptions | None = None

    @model_validator(mode="after")
    def _one_of_each_kind(self) -> VariantSpec:
        kinds = [t.kind for t in self.techniques]
        dup = {k for k in kinds if kinds.count(k) > 1}
        if dup:
            raise ValueError(f"technique(s) {sorted(dup)} listed twice; keep one of each kind")
        return self

    @model_validator(mode="after")
    def _options_match_backend(self) -> VariantSpec:
        for field in ("vllm", "endpoint"):
            if getattr(self, field) is not None and self.backend != field:
                raise ValueError(f"'{field}' options are for backend {field!r}, but the variant's "
                                 f"backend is {self.backend!r}; set backend to {field!r} or drop "
                                 f"'{field}'")
        if self.backend == "endpoint" and self.endpoint is None:
            raise ValueError("backend 'endpoint' needs 'endpoint': {\"base_url\": "
                             "\"http://host:port/v1\", \"model\": \"<served model name>\"}")
        return self


class GenerationSettings(_Spec):
    max_new_tokens: int = Field(48, ge=1, le=4096)
    batch_size: int = Field(8, ge=1, le=256)
    # Greedy decoding: variant-vs-baseline agreement is only meaningful without sampling.


class MeasurementSettings(_Spec):
    """How each variant is timed (engine.pilot.protocol): ``repeats`` timed passes over the
    same requests (the first also gives the outputs accuracy is scored on; decoding is greedy,
    so later passes only re-time), interleaved across variants where the backend allows
    (``interleave``), and the baseline timed once more after every other variant, as the
    run's noise floor. ``repeats`` None: the device's default
    (``default_repeats``)."""

    repeats: int | None = Field(None, ge=1, le=20)
    remeasure_baseline: bool = True
    # Alternate the passes of variants that can stay loaded side by side (engine.pilot.rounds)
    # so a drift in the machine touches all alike; False: each variant's passes back to back.
    interleave: bool = True
    # A timed pass lasts at least this long, replaying the requests as often as that takes
    # (engine.pilot.protocol); None: the device's default (``default_min_pass_s``).
    min_pass_s: float | None = Field(None, ge=0, le=3600)


# Timed passes per variant when the spec leaves it open: a GPU pass is short and its noise
# (clocks, other tenants) is what repeats average out; a CPU pass is slow, so two; an
# endpoint is someone else's server, billed per request: one, unless asked.
DEFAULT_REPEATS = {"cuda": 3, "cpu": 2, "endpoint": 1}


def default_repeats(measurement: MeasurementSettings, backend: str, device: str) -> int:
    """The timed passes a variant on ``backend`` / ``device`` ("cpu", "cuda") gets: the
    spec's, else ``ROILAB_REPEATS`` (a machine-wide default), else ``DEFAULT_REPEATS``."""
    if measurement.repeats is not None:
        return measurement.repeats
    override = os.environ.get("ROILAB_REPEATS", "").strip()  # this machine's own default
    if override:
        if not override.isdigit() or not 1 <= int(override) <= 20:
            raise SpecError(f"ROILAB_REPEATS={override!r}: give a whole number of timed passes "
                            "from 1 to 20, or unset it for the per-device default.")
        return int(override)
    return DEFAULT_REPEATS["endpoint" if backend == "endpoint" else device]


# Seconds a timed pass lasts at least, when the spec leaves it open: a GPU serves a batch of
# 32 x 128 tokens in about a second, so one stall was over 10% of a pass (issue 18); a CPU
# pass of the default demo already takes tens of seconds, and an endpoint bills per request.
DEFAULT_MIN_PASS_S = {"cuda": 10.0, "cpu": 0.0, "endpoint": 0.0}


def default_min_pass_s(measurement: MeasurementSettings, backend: str, device: str) -> float:
    """The minimum seconds of a timed pass of a variant on ``backend`` / ``device``: the
    spec's, else ``ROILAB_MIN_PASS_S`` (a machine-wide default), else
    ``DEFAULT_MIN_PASS_S``."""
    if measurement.min_pass_s is not None:
        return measurement.min_pass_s
    override = os.environ.get("ROILAB_MIN_PASS_S", "").strip()
    if override:
        try:
            value = float(override)
        except ValueError:
            value = -1.0
        if not 0 <= value <= 3600:
            raise SpecError(f"ROILAB_MIN_PASS_S={override!r}: give the seconds a timed pass "
                            "lasts at least, from 0 to 3600, or unset it for the per-device "
                            "default.")
        return value
    return DEFAULT_MIN_PASS_S["endpoint" if backend == "endpoint" else device]


class CostSettings(_Spec):
    """What a pilot's figures are priced at. The CLI and the dashboard name ``hardware``
    explicitly in every run's stored spec, by default the catalog entry of the device the
    pilot runs on (engine.pilot.detect.price_pilot), so a report rebuilt later prices the
    same. The default below is what a spec built in Python without one, or stored without
    one, is priced as (the price every run had before detection)."""

    hardware: str = "cpu-c7i-large"  # key into the hardware catalog (engine.economics.hardware)
    price_per_hour: float | None = Field(None, ge=0, description="None = the catalog price")
    requests_per_month: int = Field(1_000_000, ge=0)


def variant_generation(gen: GenerationSettings, variant: VariantSpec) -> GenerationSettings:
    """The generation settings a variant runs with: the pilot's, with its own batch size."""
    if variant.batch_size is None or variant.batch_size == gen.batch_size:
        return gen
    return gen.model_copy(update={"batch_size": variant.batch_size})


class PilotSpec(_Spec):
    """A pilot: one workload replayed through variants; the first variant is the baseline."""

    name: str = "pilot"
    workload_id: int
    variants: tuple[VariantSpec, ...] = Field(min_length=1)
    generation: GenerationSettings = GenerationSettings()
    measurement: MeasurementSettings = MeasurementSettings()
    cost: CostSettings = CostSettings()
    max_requests: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _unique_names(self) -> PilotSpec:
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise ValueError(f"variant names must be unique, got {names}")
        return self

    @property
    def baseline(self) -> VariantSpec:
        return self.variants[0]

    @classmethod
    def from_run(cls, run: Run) -> PilotSpec:
        """The spec a stored run ran with: its stored pilot JSON (``from_stored``), with its
        variants read from the run's own variant rows, and the workload and name of the run
        where the JSON lacks them."""
        data = {"name": run.name, "workload_id": run.workload_id, **run.spec}
        if run.variants:
            data["variants"] = [v.spec for v in run.variants]
        return cls.from_stored(data)


# Generation and cost settings that sit at the top of a stored pilot spec instead of in their
# own objects (the flat shape the old stores in tests/data/stores hold): moved on reading.
_FLAT = {"max_new_tokens": "generation", "batch_size": "generation", "hardware": "cost",
         "price_per_hour": "cost", "requests_per_month": "cost"}


def _known(cls: type[BaseModel], data: Any) -> Any:
    """``data`` without the fields ``cls`` does not have (anything but a mapping unchanged)."""
    if not isinstance(data, Mapping):
        return data
    return {k: v for k, v in data.items() if k in cls.model_fields}


def _readable(cls: type[BaseModel], data: Mapping[str, Any]) -> Any:
    """A stored spec of ``cls`` as today's classes read it (see ``_Spec.from_stored``)."""
    if not isinstance(data, Mapping):
        return data  # model_validate says what is wrong with it
    if cls is VariantSpec:
        out = _known(cls, data)
        if isinstance(out.get("techniques"), list | tuple):
            out["techniques"] = [_known(MODULES[t["kind"]].SPEC, t)
                                 if isinstance(t, Mapping) and t.get("kind") in MODULES else t
                                 for t in out["techniques"]]
        for key, options in (("vllm", VllmOptions), ("endpoint", EndpointOptions)):
            if key in out:
                out[key] = _known(options, out[key])
        return out
    if cls is PilotSpec:
        out = {k: v for k, v in data.items() if k not in _FLAT}
        for key, group in _FLAT.items():
            if key in data and isinstance(out.get(group, {}), Mapping):
                out[group] = {key: data[key], **out.get(group, {})}
        out = _known(cls, out)
        out["generation"] = _known(GenerationSettings, out.get("generation") or {})
        out["cost"] = _known(CostSettings, out.get("cost") or {})
        out["measurement"] = _known(MeasurementSettings, out.get("measurement") or {})
        if isinstance(out.get("variants"), list | tuple):
            out["variants"] = [_readable(VariantSpec, v) for v in out["variants"]]
        return out
    return _known(cls, data)


# The variants the CLI's --variants and the dashboard's form offer beside the baseline, in
# the order a pilot lists them; the default pilot is the first two.
BUILT_IN_VARIANTS = ("int8", "fp8", "fp8-kv", "llmlingua", "prefix-cache", "ngram-spec")
DEFAULT_PILOT = ("int8", "llmlingua")
VLLM_ONLY = ("fp8", "fp8-kv", "prefix-cache", "ngram-spec")  # vLLM engine options
NGRAM_TOKENS = 3  # drafted tokens per step of the built-in n-gram speculative decoding


def pilot_variants(names: Iterable[str] = DEFAULT_PILOT, *, rate: float = 0.5,
                   **common: Any) -> tuple[VariantSpec, ...]:
    """The baseline plus the named built-in variants (``BUILT_IN_VARIANTS``), all with the same
    ``common`` fields (model, backend, device, dtype): int8 weights (transformers), FP8 weights
    or KV cache (vLLM), LLMLingua at ``rate``, vLLM's prefix caching, n-gram speculative
    decoding (vLLM, ``NGRAM_TOKENS`` drafted per step). With prefix-cache asked, every other
    variant runs with vLLM's prefix cache off (it is on by default), so the cache is measured
    against its absence and nothing else has it. An unknown name is a SpecError listing them."""
    asked = set(names)
    unknown = sorted(asked - set(BUILT_IN_VARIANTS))
    if unknown:
        raise SpecError(f"Unknown built-in variant(s) {unknown}; known: "
                        f"{', '.join(BUILT_IN_VARIANTS)}.")
    cache_off = "prefix-cache" in asked or None

    def vllm(**options: Any) -> dict[str, Any]:
        """The vllm options of a variant; none at all for the transformers backend."""
        if common.get("backend") != "vllm" and not options:
            return {}
        opts = {"enable_prefix_caching": False} if cache_off else {}
        return {"vllm": VllmOptions(**(opts | options))} if opts | options else {}

    made = {
        "int8": lambda: VariantSpec(name="int8-weights", techniques=(QuantizeWeights(bits=8),),
                                    **common, **vllm()),
        "fp8": lambda: VariantSpec(name="fp8-weights", **vllm(quantization="fp8"), **common),
        "fp8-kv": lambda: VariantSpec(name="fp8-kv-cache", **vllm(kv_cache_dtype="fp8"),
                                      **common),
        "llmlingua": lambda: VariantSpec(name=f"llmlingua-{rate:g}",
                                         techniques=(CompressPrompt(rate=rate),), **common,
                                         **vllm()),
        "prefix-cache": lambda: VariantSpec(
            name="prefix-cache", vllm=VllmOptions(enable_prefix_caching=True), **common),
        "ngram-spec": lambda: VariantSpec(name=f"ngram-spec-{NGRAM_TOKENS}",
                                          **vllm(ngram_speculative_tokens=NGRAM_TOKENS),
                                          **common),
    }
    return (VariantSpec(name="baseline", **common, **vllm()),
            *(made[n]() for n in BUILT_IN_VARIANTS if n in asked))


def default_pilot_variants(model: str = DEFAULT_MODEL, **common: Any) -> tuple[VariantSpec, ...]:
    """The default pilot: baseline, 8-bit weights, LLMLingua at rate 0.5 (what ``roilab demo``,
    ``roilab pilot`` without --variants and the dashboard's form run)."""
    return pilot_variants(DEFAULT_PILOT, model=model, **common)


default_variants = default_pilot_variants  # its older name (bench scripts, tests)


def parse_pilot_spec(data: dict) -> PilotSpec:
    """Validate a pilot spec from JSON, turning pydantic's errors into one clear message."""
    from pydantic import ValidationError

    try:
        return PilotSpec.model_validate(data)
    except ValidationError as exc:
        parts = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
        raise SpecError("Invalid pilot spec - " + "; ".join(parts)) from exc
