"""The hardware catalog: rentable GPUs and CPU instances with specs and a dated $/hour.

Every entry carries what right-sizing and projection need (memory, memory bandwidth, peak
dense bf16 throughput) and the price with the public list it came from and the month it
is believed to have held. The prices are editable defaults, not live quotes.

Built-in entries live in ``CATALOG``. A team's own entries (a reserved price, an
on-premise machine's amortised cost) are stored in the database (``Store.add_hardware``)
and merged over the built-ins by key with ``merge_catalog``; a user entry with a
built-in's key overrides it. ``validate_hardware`` is the one place input is checked, so
the store, the CLI and the app refuse the same mistakes with the same messages.

Spec figures are the vendors' datasheet numbers (SXM parts where both exist): HBM/GDDR
bandwidth in GB/s (1e9 bytes/s) and dense (no-sparsity) bf16 tensor TFLOP/s. AWS does not
publish instance memory bandwidth or a CPU's bf16 peak, so CPU entries leave both None:
nothing is projected to or from them by the roofline (see engine.economics.sizing).
"""
from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from engine.core.errors import SpecError

KINDS = ("gpu", "cpu")
_KEY_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_DATE_RE = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")


@dataclass(frozen=True)
class Hardware:
    """One rentable (or owned) machine, its specs and its $/hour.

    ``price_per_hour`` is per GPU for GPU entries (per instance for CPU entries).
    ``bandwidth_gbs`` / ``bf16_tflops`` are None where no public figure exists.
    ``user_defined`` is True for entries stored by a user (not from the built-in list).
    """

    key: str
    name: str
    kind: Literal["gpu", "cpu"]
    memory_gb: float  # GPU memory for "gpu", system RAM for "cpu" (GB = 1e9 bytes)
    price_per_hour: float  # USD
    price_source: str  # the named price list / instance the price comes from
    price_date: str  # "YYYY-MM" the price is believed to have held
    bandwidth_gbs: float | None = None  # memory bandwidth, GB/s
    bf16_tflops: float | None = None  # peak dense bf16 tensor throughput, TFLOP/s
    user_defined: bool = False

    @property
    def memory_bytes(self) -> float:
        return self.memory_gb * 1e9


def _gpu(key, name, memory_gb, bw, tflops, price, source, date) -> Hardware:
    return Hardware(key, name, "gpu", memory_gb, price, source, date, bw, tflops)


def _cpu(key, name, memory_gb, price, source, date) -> Hardware:
    return Hardware(key, name, "cpu", memory_gb, price, source, date)


_AWS = "AWS EC2 on-demand, Linux, us-east-1, "
_HARDWARE = (
    _cpu("cpu-c7i-large", "AWS c7i.large (2 vCPU, 4 GiB)", 4.0, 0.08925,
         _AWS + "c7i.large", "2025-01"),
    _cpu("cpu-c7i-2xlarge", "AWS c7i.2xlarge (8 vCPU, 16 GiB)", 16.0, 0.357,
         _AWS + "c7i.2xlarge", "2025-01"),
    _cpu("cpu-c7i-8xlarge", "AWS c7i.8xlarge (32 vCPU, 64 GiB)", 64.0, 1.428,
         _AWS + "c7i.8xlarge", "2025-01"),
    # A10G is AWS's variant of the A10; NVIDIA publishes no separate sheet, so the A10
    # datasheet's 600 GB/s and 125 dense bf16 TFLOP/s are used.
    _gpu("nvidia-a10g", "NVIDIA A10G 24 GB (AWS g5.xlarge)", 24.0, 600.0, 125.0, 1.006,
         _AWS + "g5.xlarge", "2025-01"),
    _gpu("nvidia-l4", "NVIDIA L4 24 GB (AWS g6.xlarge)", 24.0, 300.0, 121.0, 0.8048,
         _AWS + "g6.xlarge", "2025-01"),
    _gpu("nvidia-l40s", "NVIDIA L40S 48 GB (AWS g6e.xlarge)", 48.0, 864.0, 362.0, 1.861,
         _AWS + "g6e.xlarge", "2025-01"),
    _gpu("nvidia-a100-40gb", "NVIDIA A100 SXM4 40 GB", 40.0, 1555.0, 312.0, 1.29,
         "Lambda Cloud on-demand, 1x A100 SXM4 40GB instance", "2025-01"),
    _gpu("nvidia-a100-80gb", "NVIDIA A100 SXM4 80 GB", 80.0, 2039.0, 312.0, 1.79,
         "Lambda Cloud on-demand, 8x A100 SXM4 80GB instance, per-GPU rate", "2025-01"),
    _gpu("nvidia-h100-80gb", "NVIDIA H100 SXM 80 GB", 80.0, 3350.0, 989.0, 2.95,
         "Nebius AI Cloud on-demand, NVIDIA H100, per GPU-hour (nebius.com/prices)", "2025-10"),
    _gpu("nvidia-h200", "NVIDIA H200 141 GB", 141.0, 4800.0, 989.0, 3.50,
         "Nebius AI Cloud on-demand, preset 1gpu-16vcpu-200gb (1x H200)", "2025-10"),
    # bf16 with fp32 accumulate, dense (Ada whitepaper); consumer card, community clouds only.
    _gpu("nvidia-rtx-4090", "NVIDIA GeForce RTX 4090 24 GB", 24.0, 1008.0, 165.2, 0.69,
         "RunPod Secure Cloud on-demand, 1x RTX 4090", "2025-01"),
)

CATALOG: dict[str, Hardware] = {hw.key: hw for hw in _HARDWARE}


def get_hardware(key: str, catalog: Mapping[str, Hardware]) -> Hardware:
    """Look up a key in ``catalog``; unknown keys raise SpecError naming the known ones.

    There is no default catalog on purpose: a key resolves against the store's merged one
    (``Store.hardware_catalog()``, the built-ins plus the user's entries), or, for pure
    arithmetic over built-ins only, against ``CATALOG`` passed explicitly."""
    cat = catalog
    try:
        return cat[key]
    except KeyError:
        known = ", ".join(sorted(cat))
        raise SpecError(f"Unknown hardware {key!r}; choose one of: {known} "
                        "(or add your own on the Hardware page / Store.add_hardware).") from None


def merge_catalog(user: Iterable[Hardware]) -> dict[str, Hardware]:
    """Built-ins first (catalog order), user entries over them by key, new keys appended."""
    merged = dict(CATALOG)
    for hw in user:
        merged[hw.key] = hw
    return merged


def _positive(fields: dict[str, Any], name: str, hint: str, optional: bool = False) -> float | None:
    value = fields.get(name)
    if value is None and optional:
        return None
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise SpecError(f"Hardware field {name!r} must be a number, got {value!r}; {hint}.") \
            from None
    if not (number > 0 and math.isfinite(number)):
        raise SpecError(f"Hardware field {name!r} must be > 0, got {value!r}; {hint}.")
    return number


def validate_hardware(**fields: Any) -> Hardware:
    """Check user input field by field and build a ``Hardware`` (``user_defined=True``).

    Required: key, name, kind ("gpu"/"cpu"), memory_gb, price_per_hour, price_source,
    price_date ("YYYY-MM"). Optional: bandwidth_gbs, bf16_tflops. Each error names the
    field and says how to fix it.
    """
    unknown = set(fields) - {f for f in Hardware.__dataclass_fields__ if f != "user_defined"}
    if unknown:
        raise SpecError(f"Unknown hardware field(s) {sorted(unknown)}; the fields are: key, "
                        "name, kind, memory_gb, price_per_hour, price_source, price_date, "
                        "bandwidth_gbs, bf16_tflops.")
    key = str(fields.get("key") or "").strip()
    if not _KEY_RE.match(key):
        raise SpecError(f"Hardware field 'key' {key!r} is not usable; use 1-64 lower-case "
                        "letters, digits, '.', '_' or '-', e.g. 'onprem-a100-reserved'.")
    name = str(fields.get("name") or "").strip()
    if not name:
        raise SpecError("Hardware field 'name' is empty; give a readable name, "
                        "e.g. 'A100 80 GB (3-year reserved)'.")
    kind = fields.get("kind")
    if kind not in KINDS:
        raise SpecError(f"Hardware field 'kind' must be 'gpu' or 'cpu', got {kind!r}.")
    memory = _positive(fields, "memory_gb", "give the GPU memory (or RAM) in GB, e.g. 80")
    price = _positive(fields, "price_per_hour",
                      "give USD per hour; for owned hardware use purchase price / "
                      "(months of use x 730) plus power and hosting per hour")
    source = str(fields.get("price_source") or "").strip()
    if not source:
        raise SpecError("Hardware field 'price_source' is empty; say where the price comes "
                        "from, e.g. 'our 3-year reserved contract' or 'amortised capex'.")
    date = str(fields.get("price_date") or "").strip()
    if not _DATE_RE.match(date):
        raise SpecError(f"Hardware field 'price_date' must be 'YYYY-MM', got {date!r}.")
    bw = _positive(fields, "bandwidth_gbs", "give the datasheet memory bandwidth in GB/s "
                   "or leave it empty", optional=True)
    tflops = _positive(fields, "bf16_tflops", "give the datasheet dense bf16 TFLOP/s or "
                       "leave it empty", optional=True)
    return Hardware(key=key, name=name, kind=kind, memory_gb=memory, price_per_hour=price,  # type: ignore[arg-type]
                    price_source=source, price_date=date, bandwidth_gbs=bw, bf16_tflops=tflops,
                    user_defined=True)
