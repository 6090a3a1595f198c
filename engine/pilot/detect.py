"""The hardware a pilot is priced as by default: the device it runs on, found in the catalog.

``detect_hardware(device)`` looks at the device a pilot's variants run on ("auto": the GPU
when NVML sees one, else the CPU) and maps it to a hardware catalog entry: a GPU by its NVML
name ("NVIDIA H100 80GB HBM3" -> nvidia-h100-80gb), the CPU by its vCPU count (the AWS
entries' "(N vCPU, ...)"). Nothing matching gives ``key=None`` and a label saying what was
found, so the CLI and the dashboard ask for --hardware or a price instead of pricing the run
as some other machine. GPUs are asked through NVML: no CUDA context is created.

``pricing_mismatch`` is the other side: a stored run whose variants were measured on one kind
of device (their ``device`` strings) but priced as the other kind.
"""
from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from engine.core.errors import SpecError
from engine.economics.hardware import CATALOG, Hardware, get_hardware
from engine.specs.pilot import PilotSpec

if TYPE_CHECKING:
    from engine.store.store import Store

Kind = Literal["gpu", "cpu"]

# NVML names (upper-cased, "NVIDIA "/"GEFORCE " dropped) -> built-in catalog key. Checked in
# order: L40S before L4, and an A100 by the memory its name states.
_GPU_NAMES = (
    (r"\bH200\b", "nvidia-h200"),
    (r"\bH100\b", "nvidia-h100-80gb"),  # the catalog's H100 is the SXM part; PCIe/NVL priced so
    (r"\bA100\b.*\b80\s*GB\b", "nvidia-a100-80gb"),
    (r"\bA100\b.*\b40\s*GB\b", "nvidia-a100-40gb"),
    (r"\bA10G\b", "nvidia-a10g"),
    (r"\bL40S\b", "nvidia-l40s"),
    (r"\bL4\b", "nvidia-l4"),
    (r"^RTX 4090$", "nvidia-rtx-4090"),  # not the 4090 D or a laptop's 4090
)
_VCPU_RE = re.compile(r"\((\d+) vCPU\b")


@dataclass(frozen=True)
class Detected:
    """The device a pilot runs on and the catalog entry it is priced as by default.

    ``key`` is None when no entry matches; ``label`` names what was found (e.g. "NVIDIA H100
    80GB HBM3", "CPU AMD EPYC, 2 vCPUs"); ``why`` says how the entry was chosen, or why none
    was."""

    key: str | None
    label: str
    kind: Kind | None
    why: str

    def describe(self, catalog: Mapping[str, Hardware]) -> str:
        """"priced as <name> (detected <label>)", or what was found when nothing matched."""
        if self.key is None:
            return f"detected {self.label}: {self.why}"
        why = f"; {self.why}" if self.why else ""
        return f"priced as {catalog[self.key].name} (detected {self.label}{why})"


def nvml_gpu_name(index: int = 0) -> str | None:
    """The NVML name of visible GPU ``index`` (CUDA_VISIBLE_DEVICES honoured), or None where
    NVML sees none (no NVIDIA driver, no GPU). No CUDA context is created."""
    from engine.backends.vllm_host import nvml_index

    try:
        import pynvml
    except ImportError:  # no NVML bindings: ask torch (which does create a context)
        import torch

        return torch.cuda.get_device_name(index) if torch.cuda.is_available() else None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return None
    try:
        name = pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(nvml_index(index)))
        return name.decode() if isinstance(name, bytes) else str(name)
    except pynvml.NVMLError:
        return None
    finally:
        pynvml.nvmlShutdown()


def gpu_catalog_key(nvml_name: str, catalog: Mapping[str, Hardware] = CATALOG) -> str | None:
    """The catalog key of the GPU NVML calls ``nvml_name``; None if the catalog has none."""
    name = re.sub(r"\b(NVIDIA|GEFORCE)\s+", "", nvml_name.upper()).strip()
    for pattern, key in _GPU_NAMES:
        if re.search(pattern, name) and key in catalog:
            return key
    return None


def cpu_name(cpuinfo: str = "/proc/cpuinfo") -> str:
    """The CPU's model name ("AMD EPYC", "Intel(R) Xeon(R) Platinum 8488C"), else "CPU"."""
    try:
        for line in Path(cpuinfo).read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip() or "CPU"
    except OSError:
        pass
    return "CPU"


def vcpus() -> int:
    """The CPUs this process may run on (its affinity, which a container's cpuset narrows)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def cpu_catalog_key(n_vcpus: int, catalog: Mapping[str, Hardware] = CATALOG) -> str | None:
    """The smallest CPU entry with at least ``n_vcpus`` vCPUs in its name ("(2 vCPU, ...)"):
    the instance one would rent to run what ran here (a user's own entry first among equals);
    None if every entry is smaller."""
    fits = [(n, not hw.user_defined, i, hw.key) for i, hw in enumerate(catalog.values())
            if hw.kind == "cpu" and (n := _vcpus_of(hw)) is not None and n >= n_vcpus]
    return min(fits)[3] if fits else None


def _vcpus_of(hw: Hardware) -> int | None:
    m = _VCPU_RE.search(hw.name)
    return int(m.group(1)) if m else None


def detect_hardware(device: str = "auto",
                    catalog: Mapping[str, Hardware] = CATALOG) -> Detected:
    """The catalog entry a pilot on ``device`` ("auto", "cpu", "cuda") is priced as by default.

    "auto" is the GPU when NVML sees one, else the CPU (as the backends' resolve_device). A
    GPU maps by its NVML name; the CPU by its vCPU count, which prices this machine as the
    rented instance of its size (its own price may differ: the why says so)."""
    if device not in ("auto", "cpu", "cuda"):
        raise SpecError(f"Cannot detect hardware for device {device!r}; use auto, cpu or cuda.")
    gpu = None if device == "cpu" else nvml_gpu_name(0)
    if gpu is None and device == "cuda":
        return Detected(None, "a GPU NVML cannot name", "gpu",
                        "no NVIDIA GPU is visible through NVML")
    if gpu is not None:
        key = gpu_catalog_key(gpu, catalog)
        why = "" if key else "no hardware catalog entry is this GPU"
        return Detected(key, gpu, "gpu", why)
    n, model = vcpus(), cpu_name()
    label = f"CPU {model}, {n} vCPU{'s' if n != 1 else ''}"
    key = cpu_catalog_key(n, catalog)
    if key is None:
        sizes = sorted({s for hw in catalog.values() if hw.kind == "cpu"
                        and (s := _vcpus_of(hw)) is not None})
        return Detected(None, label, "cpu", f"no catalog CPU entry has {n} or more vCPUs "
                        f"(they have {', '.join(map(str, sizes)) or 'none'})")
    size = _vcpus_of(catalog[key])
    fit = (f"the catalog's {n}-vCPU instance" if size == n else
           f"the smallest catalog instance with {n} or more vCPUs ({size})")
    return Detected(key, label, "cpu", f"{fit}; this machine's own price may differ")


def device_kind(measured: str | None) -> Kind | None:
    """"gpu" or "cpu" from a variant's stored ``device`` ("cuda:0 NVIDIA H100 80GB HBM3
    (vLLM)", "cpu (2 threads)"); None for an endpoint or an unmeasured variant."""
    text = (measured or "").strip().lower()
    if text.startswith("cuda"):
        return "gpu"
    if text.startswith("cpu"):
        return "cpu"
    return None


def kind_of_device(device: str) -> Kind:
    """The kind a spec's device ("auto", "cpu", "cuda") runs on here, by NVML for "auto"."""
    if device == "auto":
        return "gpu" if nvml_gpu_name(0) is not None else "cpu"
    return "gpu" if device == "cuda" else "cpu"


_KIND_TEXT = {"gpu": "a GPU", "cpu": "a CPU instance"}


def mismatch_text(hw: Hardware, kind: Kind, ran: str) -> str | None:
    """One sentence when ``hw`` is priced for the other kind of device than ``kind`` (what
    ``ran`` says ran, e.g. "the pilot runs on the CPU"); None when they agree."""
    if hw.kind == kind:
        return None
    return (f"Priced as {hw.name}, {_KIND_TEXT[hw.kind]}, but {ran}: the cost figures put "
            f"{'this GPU' if kind == 'gpu' else 'the CPU'}'s speed at "
            f"{_KIND_TEXT[hw.kind]}'s price.")


def runs_on_mismatch(hw: Hardware, device: str) -> str | None:
    """The warning for pricing a pilot on ``device`` ("auto", "cpu", "cuda") as ``hw`` of the
    other kind; None when the kinds agree."""
    kind = kind_of_device(device)
    return mismatch_text(hw, kind, "the pilot runs on " + ("a GPU" if kind == "gpu" else "the CPU"))


def pricing_mismatch(hw: Hardware, devices: Iterable[str | None]) -> str | None:
    """The caveat for a run priced as ``hw`` whose variants were measured on ``devices`` (their
    stored device strings) of the other kind; None when they agree or nothing was measured."""
    other = [(d.strip(), k) for d in devices
             if (k := device_kind(d)) is not None and k != hw.kind and d]
    if not other:
        return None
    device, kind = other[0]
    text = mismatch_text(hw, kind, f"it was measured on {device}")
    return (f"{text} For a price of the device it ran on, run the pilot again with --hardware "
            "for that device (see `roilab hardware`) or with its own --price.")


def own_entry(store: Store, detected: Detected, price: float) -> str:
    """Store (or re-price) the user's own entry for an undetected device priced by --price,
    so the run names the machine it ran on; its key. Memory is this machine's RAM (CPU) or
    the GPU's memory where NVML gives it, else 1 GB."""
    kind = detected.kind or "cpu"
    slug = re.sub(r"[^a-z0-9]+", "-", detected.label.lower()).strip("-")[:50]
    key = f"this-{kind}-{slug}".rstrip("-")[:64]
    now = datetime.now(UTC)
    fields = {"name": f"This machine: {detected.label}", "kind": kind,
              "memory_gb": _memory_gb(kind), "price_per_hour": price,
              "price_source": f"--price given to a pilot on {now:%Y-%m-%d}",
              "price_date": f"{now:%Y-%m}"}
    if key in store.hardware_catalog():
        store.update_hardware(key, **fields)
    else:
        store.add_hardware(key=key, **fields)
    return key


def _memory_gb(kind: str) -> float:
    if kind == "gpu":
        from engine.backends.vllm_host import nvml_index

        try:
            import pynvml

            pynvml.nvmlInit()
            try:
                return pynvml.nvmlDeviceGetMemoryInfo(
                    pynvml.nvmlDeviceGetHandleByIndex(nvml_index(0))).total / 1e9
            finally:
                pynvml.nvmlShutdown()
        except Exception:  # noqa: BLE001 - a placeholder size is enough for a priced entry
            return 1.0
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9
    except (ValueError, OSError, AttributeError):
        return 1.0


@dataclass(frozen=True)
class Priced:
    """A pilot spec with the hardware it is priced as filled in (stored with the run, so a
    report rebuilt later prices it the same), the line saying so, and a warning if any."""

    spec: PilotSpec
    line: str
    warning: str | None = None
    detected: bool = False  # priced as the device detected here (not chosen, not own price)


def unpriced(det: Detected) -> SpecError:
    """The error for a pilot that nothing prices: what was detected and what to give."""
    return SpecError(f"Cannot price this pilot: detected {det.label}, and {det.why}. Give "
                     "--hardware KEY (see `roilab hardware`) or --price $/HOUR for this "
                     "machine.")


def price_pilot(spec: PilotSpec, store: Store, explicit: bool) -> Priced:
    """Name the hardware ``spec`` is priced as: its own ``cost.hardware`` when ``explicit``
    (the user chose it; a GPU run priced as a CPU instance, or the reverse, is accepted with a
    warning), else the detected device's entry (``detect_hardware`` for the baseline's
    device). An undetected device with a price gets the user's own entry (``own_entry``);
    without one it is a SpecError saying what to give."""
    catalog, base, cost = store.hardware_catalog(), spec.baseline, spec.cost
    at = f" at ${cost.price_per_hour:g}/h" if cost.price_per_hour is not None else ""
    if explicit:
        hw = get_hardware(cost.hardware, catalog)
        warning = (None if base.backend == "endpoint" else
                   runs_on_mismatch(hw, base.device))
        if warning:
            warning += " Accepted as chosen; the results carry this caveat."
        return Priced(spec, f"priced as {hw.name}{at} (chosen)", warning)
    if base.backend == "endpoint":
        raise SpecError("An endpoint pilot runs on someone else's server, so nothing here can "
                        "be detected to price it: give --hardware KEY for the server's GPU "
                        "(see `roilab hardware`), with --price for your own rate.")
    det = detect_hardware(base.device, catalog)
    if det.key is not None:
        key, line = det.key, det.describe(catalog) + at
    elif cost.price_per_hour is not None:
        key = own_entry(store, det, cost.price_per_hour)
        line = (f"priced as {store.get_hardware(key).name}{at} (detected {det.label}: "
                f"{det.why}; stored as your hardware entry {key})")
    else:
        raise unpriced(det)
    priced = spec.model_copy(update={"cost": cost.model_copy(update={"hardware": key})})
    return Priced(priced, line, detected=det.key is not None)
