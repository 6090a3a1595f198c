"""What every technique module provides, and the context a technique runs in.

A technique module under ``engine/techniques/`` defines one serialisable spec class (a
``TechniqueBase`` subclass with a unique ``kind`` literal) and the hooks of its stage:

- ``stage = "model"``: ``apply(model, spec, ctx) -> dict`` transforms the loaded model in
  place (quantize, prune, factorise, distil) and returns what it did, read back from the
  model, not copied from the spec.
- ``stage = "generate"``: ``generate_kwargs(spec, model) -> dict`` adds arguments to every
  ``generate`` call (e.g. a quantized KV cache) and ``report(spec, model, ctx) -> dict``.
- ``stage = "prompt"``: ``prepare_prompts(spec, prompts, ctx, notify) -> PreparedPrompts``
  rewrites every request before it reaches the model; the runner calls it for each
  prompt-stage technique of a variant, in the spec's order, after the model is loaded, and
  adds each request's seconds to its latency.

Every module also has ``check(spec, device) -> None``, which raises ``SpecError`` with the
reason when the technique cannot run there, so the runner refuses a variant before the
pilot starts instead of half-way through. Modules are registered in
``engine/techniques/__init__.py``.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict

Messages = list[dict[str, str]]


class TechniqueBase(BaseModel):
    """Base of every technique spec: frozen, and unknown fields are refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass
class TechniqueContext:
    """What a model-stage technique may use besides the model itself."""

    device: str  # "cpu" or "cuda"
    model_path: str  # the variant's resolved base model folder (or hub id)
    tokenizer: Any  # the variant's tokenizer (chat template applied via apply_chat_template)
    # Requests to calibrate or train on: the workload's requests that the pilot does NOT
    # replay when there are any (so nothing is tuned on the evaluation set); otherwise the
    # evaluated ones, and ``calibration_is_eval_set`` says so in the technique's report.
    calibration: list[Messages] = field(default_factory=list)
    calibration_is_eval_set: bool = False
    work_dir: str = ""  # a folder the technique may write to (e.g. a fine-tuned student)
    settings: Any = None


@dataclass(frozen=True)
class PromptContext:
    """What a prompt-stage technique may use besides the requests themselves."""

    model: str  # the variant's model as its spec names it (a scorer may default to it)
    device: str  # where the served model runs: "cpu" or "cuda" (a scorer runs there too)
    settings: Any = None  # engine.core.settings.Settings: cache folder, model resolution


@dataclass(frozen=True)
class PreparedPrompts:
    """What a prompt-stage technique returns: one entry per request, in the requests' order."""

    messages: list[Messages]  # what is sent to the model instead of each original request
    seconds: list[float]  # what preparing each request cost; added to its latency
    report: dict[str, Any]  # stored in the variant's technique report under the spec's kind


# notify(done, message): progress of a prompt-stage pass, ``done`` requests of this pass
PromptNotify = Callable[[int, str], None]


def group_size_only_for_4_bit(bits: int, group_size: int, default: int) -> None:
    """A spec validator's check, shared by the weight-quantization and QAT specs: 8-bit
    weights are scaled per output row, so a group size other than the default is a mistake."""
    if bits == 8 and group_size != default:
        raise ValueError("group_size applies to 4-bit weights; 8-bit weights are scaled "
                         "per output row: drop group_size or set bits=4.")
