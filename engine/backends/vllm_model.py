"""What a model folder tells about serving it on vLLM, read from its files without loading
it: the attention head size, an integer-weight scheme, and the bytes its weights will take."""
from __future__ import annotations

from pathlib import Path

_DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "fp8": 1}


def model_head_size(model_path: str) -> int | None:
    """Attention head width from a model folder's config, or None if it can't be read."""
    from transformers import AutoConfig

    from engine.models.shape import head_dim

    try:
        return head_dim(AutoConfig.from_pretrained(model_path).get_text_config())
    except (OSError, ValueError, AttributeError, TypeError):
        return None


def weight_only_int_scheme(model_path: str, quantization: str | None = None) -> str | None:
    """"W4A16 (compressed-tensors)"-style name when the checkpoint (or ``vllm.quantization``)
    holds integer weights served with 16-bit activations, else None. On CPU vLLM runs every
    such scheme (GPTQ, AWQ, compressed-tensors W4A16/W8A16) through one kernel,
    ``cpu_gemm_wna16``."""
    qc = quantization_config(model_path)
    method = (qc or {}).get("quant_method") or quantization
    if method in ("gptq", "awq", "gptq_marlin", "awq_marlin"):
        return f"{method} {(qc or {}).get('bits', '?')}-bit weights"
    if method == "compressed-tensors" and qc:
        for group in (qc.get("config_groups") or {}).values():
            weights = group.get("weights") or {}
            if weights.get("type") == "int" and not group.get("input_activations"):
                return f"W{weights.get('num_bits')}A16 (compressed-tensors)"
    return None


def quantization_config(model_path: str) -> dict | None:
    import json

    try:
        config = json.loads((Path(model_path) / "config.json").read_text())
    except (OSError, ValueError):
        return None
    qc = config.get("quantization_config") if isinstance(config, dict) else None
    return qc if isinstance(qc, dict) else None


def estimate_weight_bytes(model_path: str, dtype: str, quantization: str | None) -> int | None:
    """Bytes the model's weights take once vLLM has loaded them, from the folder alone: a
    quantized checkpoint's safetensors as stored, else every tensor at ``dtype`` (safetensors
    headers, or the config's parameter count for a config-only random shape); in-flight FP8
    quantization stores the decoder's linear weights in one byte each."""
    folder = Path(model_path)
    files = sorted(folder.glob("*.safetensors"))
    if files and quantization_config(model_path):
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
