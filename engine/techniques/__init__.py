"""Compression techniques, one module each, found by scanning this package.

A technique module defines ``SPEC`` (its ``TechniqueBase`` subclass, whose ``kind`` literal
names it), ``stage`` and the hooks of that stage (see ``base.py``). Modules import heavy
libraries inside their functions, so building the registry stays cheap.
``TechniqueSpec`` is the discriminated union of every registered spec class.
"""
from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType
from typing import Annotated, Union

from pydantic import Field

# Shared helpers, not techniques: the interface, and the calibration and quantizer code that
# `engine.export` uses too (public for that reason). Skipped so the scan never imports torch.
SUPPORT_MODULES = ("base", "calibration", "quant_backends")


def _discover() -> dict[str, ModuleType]:
    found: dict[str, ModuleType] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        if info.name in SUPPORT_MODULES or info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        spec_cls = getattr(module, "SPEC", None)
        if spec_cls is not None:
            found[spec_cls.model_fields["kind"].default] = module
    return found


MODULES: dict[str, ModuleType] = _discover()
SPEC_CLASSES = tuple(m.SPEC for m in MODULES.values())
TechniqueSpec = Annotated[Union[SPEC_CLASSES], Field(discriminator="kind")]  # noqa: UP007


def technique_module(kind: str) -> ModuleType:
    return MODULES[kind]
