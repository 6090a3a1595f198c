"""Post-training weight quantization (8-bit weight-only, torchao) of the decoder's linears.

The tied embedding / lm_head is left in full precision: quantizing the shared tensor would
also change the input embeddings, and it is one matrix out of ~210.
"""
from __future__ import annotations

import time
from typing import Any, Literal

from engine.errors import SpecError
from engine.techniques.base import TechniqueBase, TechniqueContext

stage = "model"


class QuantizeWeights(TechniqueBase):
    """Post-training weight quantization of the linear layers."""

    kind: Literal["quantize_weights"] = "quantize_weights"
    bits: Literal[8] = 8
    method: Literal["torchao"] = "torchao"


SPEC = QuantizeWeights


def describe(spec: QuantizeWeights) -> str:
    return f"{spec.bits}-bit weights ({spec.method})"


def check(spec: QuantizeWeights, device: str) -> None:
    """torchao int8 weight-only runs on CPU and CUDA; only a missing install stops it."""
    import importlib.util

    if importlib.util.find_spec("torchao") is None:
        raise SpecError("8-bit weights need torchao: pip install 'torchao==0.18.0'.")


def _decoder_linear_filter(module, fqn: str) -> bool:
    import torch

    return isinstance(module, torch.nn.Linear) and "lm_head" not in fqn


def apply(model, spec: QuantizeWeights, ctx: TechniqueContext | None = None) -> dict[str, Any]:
    return apply_weight_quantization(model, spec)


def apply_weight_quantization(model, spec: QuantizeWeights) -> dict[str, Any]:
    """Quantize in place; return what was done, read back from the model itself."""
    import torch

    from engine.memory import model_weight_bytes

    try:
        from torchao.quantization import Int8WeightOnlyConfig, quantize_
    except ImportError as exc:
        raise SpecError("8-bit weights need torchao: pip install 'torchao==0.18.0'.") from exc
    before = model_weight_bytes(model)
    t0 = time.perf_counter()
    quantize_(model, Int8WeightOnlyConfig(), filter_fn=_decoder_linear_filter)
    seconds = time.perf_counter() - t0
    # Read back from the model, not the spec: which linears now hold quantized tensors.
    quantized = [m.weight for m in model.modules()
                 if isinstance(m, torch.nn.Linear) and hasattr(m.weight, "__tensor_flatten__")]
    return {"method": "torchao Int8WeightOnlyConfig", "bits": spec.bits,
            "layers_quantized": len(quantized),
            "weight_type": type(quantized[0]).__name__ if quantized else None,
            "weight_bytes_before": before, "weight_bytes_after": model_weight_bytes(model),
            "seconds": round(seconds, 3)}
