"""Compression techniques, one module each, registered here by their spec's ``kind``.

``TechniqueSpec`` is the discriminated union of every registered spec class; a new
technique adds its module below and its spec class to ``SPEC_CLASSES``.
"""
from __future__ import annotations

import importlib
from types import ModuleType
from typing import Annotated, Union

from pydantic import Field

from engine.techniques.prompt_compression import CompressPrompt
from engine.techniques.weight_quant import QuantizeWeights

# kind -> module (imported lazily: heavy libraries load only when a technique runs)
MODULES: dict[str, str] = {
    "quantize_weights": "engine.techniques.weight_quant",
    "compress_prompt": "engine.techniques.prompt_compression",
}
SPEC_CLASSES = (QuantizeWeights, CompressPrompt)

TechniqueSpec = Annotated[Union[SPEC_CLASSES], Field(discriminator="kind")]  # noqa: UP007


def technique_module(kind: str) -> ModuleType:
    return importlib.import_module(MODULES[kind])
