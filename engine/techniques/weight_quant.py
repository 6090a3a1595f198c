"""Post-training weight quantization of the decoder's linears: 8 or 4 bits, through torchao,
optimum-quanto, bitsandbytes or HQQ, on CPU and CUDA as each library allows.

The tied embedding / lm_head is left in full precision: quantizing the shared tensor would
also change the input embeddings, and it is one matrix out of ~210. 8-bit weights are
scaled per output row; 4-bit weights per group of ``group_size`` input weights.

The report is read back from the quantized model (``quant_backends``): how many layers hold
the library's storage, its bytes and bits per weight, and which kernels one forward of a
quantized layer called under the profiler.
"""
from __future__ import annotations

import importlib.util
import time
from typing import Any, Literal

from pydantic import model_validator

from engine.core.errors import SpecError
from engine.techniques.base import TechniqueBase, TechniqueContext, group_size_only_for_4_bit

stage = "model"

# method -> (import name, pip requirement, what the report calls it)
_LIBRARIES = {
    "torchao": ("torchao", "torchao==0.18.0", "torchao"),
    "quanto": ("optimum.quanto", "optimum-quanto==0.2.7", "optimum-quanto"),
    "bnb": ("bitsandbytes", "bitsandbytes==0.50.2", "bitsandbytes"),
    "hqq": ("hqq", "hqq==0.2.8.post1", "HQQ"),
}


class QuantizeWeights(TechniqueBase):
    """Post-training weight quantization of the linear layers."""

    kind: Literal["quantize_weights"] = "quantize_weights"
    bits: Literal[8, 4] = 8
    method: Literal["torchao", "quanto", "bnb", "hqq"] = "torchao"
    group_size: Literal[32, 64, 128] = 64  # 4-bit only: input weights sharing one scale

    @model_validator(mode="after")
    def _group_size_is_for_4_bit(self) -> QuantizeWeights:
        group_size_only_for_4_bit(self.bits, self.group_size, default=64)
        return self


SPEC = QuantizeWeights


def describe(spec: QuantizeWeights) -> str:
    groups = f", groups of {spec.group_size}" if spec.bits == 4 else ""
    return f"{spec.bits}-bit weights ({_LIBRARIES[spec.method][2]}{groups})"


def check(spec: QuantizeWeights, device: str) -> None:
    """Refuse, with the fix, what cannot run on ``device``. Every method and width ran on
    torch 2.13 CPU (AVX-512) and on an H200 with torch 2.11+cu130, fp32 and bf16."""
    module, requirement, label = _LIBRARIES[spec.method]
    if importlib.util.find_spec(module.split(".")[0]) is None or (
            "." in module and importlib.util.find_spec(module) is None):
        raise SpecError(f"{spec.bits}-bit weights with {label} need it installed: "
                        f"pip install '{requirement}'.")
    if device != "cuda":
        return
    import torch

    major, minor = torch.cuda.get_device_capability()
    if spec.method == "torchao" and spec.bits == 4 and major < 8:
        # torchao: "Cannot use tinygemm int4 kernel with a device of compute capability
        # (7, 5), the minimum compute capability is 8.0 for tensor core kernels."
        raise SpecError(f"4-bit torchao weights on CUDA use the tinygemm int4 kernel, which "
                        f"needs compute capability 8.0 or newer (this GPU has {major}.{minor}); "
                        "use method 'bnb' or 'hqq' for 4-bit on this GPU, or run on CPU.")
    if spec.method == "bnb":
        from bitsandbytes.cextension import ErrorHandlerMockBNBNativeLibrary, lib

        if isinstance(lib, ErrorHandlerMockBNBNativeLibrary):
            raise SpecError("bitsandbytes found no native library for this torch's CUDA "
                            f"{torch.version.cuda}: install the bitsandbytes build for it "
                            "(python -m bitsandbytes says which), or run on CPU.")


def apply(model, spec: QuantizeWeights, ctx: TechniqueContext | None = None) -> dict[str, Any]:
    return apply_weight_quantization(model, spec)


def apply_weight_quantization(model, spec: QuantizeWeights) -> dict[str, Any]:
    """Quantize in place; return what was done, read back from the model itself."""
    import torch

    from engine.core.memory import model_weight_bytes
    from engine.techniques.quant_backends import (
        QUANTIZERS,
        check_group_size,
        decoder_linear_count,
        library_backend,
        probe_kernels,
        quantized_layers,
    )

    first_param = next(model.parameters())
    device, dtype = first_param.device.type, first_param.dtype
    check(spec, device)
    if spec.bits == 4:  # 8-bit weights are scaled per row, not per group
        check_group_size(model, spec.group_size)
    linears = decoder_linear_count(model)
    before = model_weight_bytes(model)
    t0 = time.perf_counter()
    try:
        QUANTIZERS[spec.method](model, spec.bits, spec.group_size, device)
    except (ImportError, RuntimeError, ValueError, AssertionError, NotImplementedError) as exc:
        raise SpecError(f"{describe(spec)} failed on {device}: {type(exc).__name__}: {exc}"
                        ) from exc
    t1 = _synced(device)
    # One token through the model: bitsandbytes repacks 4-bit weights for its CPU kernel and
    # quanto compiles its extension at the first forward; done here, that cost is reported
    # and kept out of the first request, and the bytes read back are those that serve.
    with torch.no_grad():
        model(input_ids=torch.zeros((1, 1), dtype=torch.long, device=first_param.device))
    t2 = _synced(device)
    layers = list(quantized_layers(model))
    n_weights = sum(q.n_weights for q in layers)
    n_bytes = sum(q.n_bytes for q in layers)
    first = layers[0] if layers else None
    return {
        "method": _LIBRARIES[spec.method][2], "bits": spec.bits, "device": device,
        "compute_dtype": str(dtype).removeprefix("torch."),
        "decoder_linears": linears, "layers_quantized": len(layers),
        "weight_type": first.weight_type if first else None,
        "weight_storage": sorted({q.storage for q in layers}),
        "group_sizes": sorted({q.group_size for q in layers if q.group_size}),
        "quantized_weights": n_weights, "quantized_bytes": n_bytes,
        "bits_per_weight": round(8 * n_bytes / n_weights, 3) if n_weights else None,
        "weight_bytes_before": before, "weight_bytes_after": model_weight_bytes(model),
        "seconds": round(t1 - t0, 3), "warmup_seconds": round(t2 - t1, 3),
        "backend": library_backend(first) if first else None,
        "kernels": (probe_kernels(first.module, _in_features(first), dtype, device)
                    if first else None),
        "library_version": _version(spec.method),
    }


def _synced(device: str) -> float:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter()


def _in_features(layer) -> int:
    return int(layer.module.in_features)


def _version(method: str) -> str:
    from importlib.metadata import version

    return version(_LIBRARIES[method][1].split("==")[0])
