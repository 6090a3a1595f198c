"""Serialisable specs: a variant is data (base model + backend + technique specs).

Every run stores the JSON of its PilotSpec, so any number can be traced back to exactly
what produced it. Unknown fields are refused (``extra="forbid"``) so a typo never
silently becomes a default.
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from engine.core.errors import SpecError
from engine.specs.backends import EndpointOptions, VllmOptions
from engine.techniques import TechniqueSpec
from engine.techniques.prompt_compression import CompressPrompt
from engine.techniques.weight_quant import QuantizeWeights

__all__ = ["CompressPrompt", "QuantizeWeights", "TechniqueSpec", "VariantSpec", "PilotSpec",
           "GenerationSettings", "CostSettings", "VllmOptions", "EndpointOptions",
           "default_variants", "parse_pilot_spec", "variant_generation"]


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class VariantSpec(_Spec):
    name: str = Field(min_length=1, max_length=80)
    model: str = "embedded:smollm2-135m-instruct"
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


class CostSettings(_Spec):
    hardware: str = "cpu-c7i-large"  # key into engine.economics.cost catalog
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


def default_variants(model: str = "embedded:smollm2-135m-instruct") -> tuple[VariantSpec, ...]:
    """The default pilot: baseline, 8-bit weights, LLMLingua at rate 0.5."""
    return (
        VariantSpec(name="baseline", model=model),
        VariantSpec(name="int8-weights", model=model, techniques=(QuantizeWeights(bits=8),)),
        VariantSpec(name="llmlingua-0.5", model=model, techniques=(CompressPrompt(rate=0.5),)),
    )


def parse_pilot_spec(data: dict) -> PilotSpec:
    """Validate a pilot spec from JSON, turning pydantic's errors into one clear message."""
    from pydantic import ValidationError

    try:
        return PilotSpec.model_validate(data)
    except ValidationError as exc:
        parts = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
        raise SpecError("Invalid pilot spec - " + "; ".join(parts)) from exc
