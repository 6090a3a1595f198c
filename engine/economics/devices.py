"""What a stored variant occupies: its device count and the memory its engine measured.

Both are read back from what a run stored, never from the live engine, so a report rebuilt
from the database prices and shows exactly what ran:

* ``devices_of(spec)``: the devices one engine of the variant occupies, from its stored
  ``VariantSpec`` JSON: ``vllm.tensor_parallel_size x vllm.pipeline_parallel_size`` for a
  vLLM variant (``engine.specs.backends.VllmOptions.devices``), 1 for transformers and for an
  endpoint (what a remote server occupies is its owner's bill, not the pilot's). Prices
  follow it: a variant costs ``devices x`` the per-device $/hour (``engine.economics.cost``).
* ``memory_of(technique_report)``: the ``"memory"`` figures a backend stores with the
  variant (peak device memory, weight bytes, the KV-cache capacity its engine reserved),
  every field None where an older run did not record it.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


def devices_of(spec: Mapping[str, Any]) -> int:
    """Devices one engine of a stored variant occupies (>= 1); see the module docstring.

    Reads the stored JSON directly (not through ``VllmOptions``) so runs stored before a
    field existed still price: a missing size counts as 1.
    """
    if spec.get("backend", "transformers") != "vllm":
        return 1
    options = spec.get("vllm") or {}
    tensor = int(options.get("tensor_parallel_size") or 1)
    pipeline = int(options.get("pipeline_parallel_size") or 1)
    if tensor < 1 or pipeline < 1:
        raise ValueError(f"Parallel sizes must be >= 1, got tensor {tensor}, pipeline "
                         f"{pipeline}; fix the variant's 'vllm' options.")
    return tensor * pipeline


@dataclass(frozen=True)
class MemoryFigures:
    """A variant's memory as its backend measured it (technique_report["memory"]).

    Byte figures cover the whole engine (all its devices); ``device_total_bytes`` is one
    device's memory. None: not measured (older runs, a backend that cannot tell).
    """

    device: str | None = None  # "cuda" | "cpu"
    peak_bytes: int | None = None
    peak_method: str | None = None
    weight_bytes: int | None = None
    kv_cache_tokens: int | None = None  # KV-cache capacity the engine reserved, in tokens
    kv_cache_bytes: int | None = None
    kv_bytes_per_token: float | None = None
    kv_method: str | None = None
    device_total_bytes: int | None = None
    devices: int | None = None

    @property
    def measured(self) -> bool:
        """True when the backend stored any memory figure at all."""
        return any(v is not None for v in (self.peak_bytes, self.weight_bytes,
                                           self.kv_cache_tokens, self.kv_bytes_per_token))


def _number(value: Any, kind: type) -> Any:
    """``kind(value)`` for a finite positive-or-zero number; None for anything else."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if value != value or value < 0:  # NaN, negative: not a measurement
        return None
    return kind(value)


def memory_of(technique_report: Mapping[str, Any] | None) -> MemoryFigures:
    """The stored ``"memory"`` figures of a variant; all None when it stored none."""
    raw = (technique_report or {}).get("memory")
    if not isinstance(raw, Mapping):  # absent, or an older backend's free-text note
        return MemoryFigures()

    def text(key: str) -> str | None:
        value = raw.get(key)
        return str(value) if value not in (None, "") else None

    return MemoryFigures(
        device=text("device"), peak_bytes=_number(raw.get("peak_bytes"), int),
        peak_method=text("peak_method"), weight_bytes=_number(raw.get("weight_bytes"), int),
        kv_cache_tokens=_number(raw.get("kv_cache_tokens"), int),
        kv_cache_bytes=_number(raw.get("kv_cache_bytes"), int),
        kv_bytes_per_token=_number(raw.get("kv_bytes_per_token"), float),
        kv_method=text("kv_method"),
        device_total_bytes=_number(raw.get("device_total_bytes"), int),
        devices=_number(raw.get("devices"), int))
