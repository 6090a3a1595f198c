"""How each library quantizes a model's decoder linears, and how to read back what it did.

One ``quantize_<method>(model, bits, group_size, device)`` per library, each changing the
model in place through the library's own API, and a read-back side that looks only at the
model: which layers now hold the library's quantized storage, how many bytes that storage
takes, and which kernels one forward pass of a quantized layer really calls (seen through
``torch.profiler``, not assumed from the spec). The tied embedding / lm_head is never
quantized (see ``weight_quant.py``).
"""
from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from engine.core.memory import quantizer_side_tensors, tensor_bytes


def check_group_size(model: torch.nn.Module, group_size: int) -> None:
    """Weight groups must tile every decoder linear's input row, or libraries part ways: torchao
    refuses ("Expecting input size at 1 dimension: 576 to be divisible by block_size at 1
    dimension: 128"), bitsandbytes' CPU repacking fails at the first forward ("shape
    '[192, 4]' is invalid for input of size 864"), quanto silently picks 96 and HQQ lets
    groups straddle rows. SpecError naming a group size that fits, if any does."""
    from engine.core.errors import SpecError

    widths = sorted({m.in_features for n, m in model.named_modules() if is_decoder_linear(m, n)})
    if any(w % group_size for w in widths):
        fits = [g for g in (128, 64, 32) if all(w % g == 0 for w in widths)]
        fix = f"use group_size {fits[0]}" if fits else "this model's widths fit no group size"
        raise SpecError(f"group_size {group_size} does not divide the input width of every "
                        f"linear layer ({', '.join(map(str, widths))}): {fix}.")


def is_decoder_linear(module: torch.nn.Module, fqn: str) -> bool:
    """A plain linear layer of the decoder: every nn.Linear except the (tied) lm_head."""
    return type(module) is torch.nn.Linear and "lm_head" not in fqn


def decoder_linear_count(model: torch.nn.Module) -> int:
    return sum(is_decoder_linear(m, n) for n, m in model.named_modules())


def _replace_linears(model: torch.nn.Module, make: Callable[[torch.nn.Linear], torch.nn.Module]
                     ) -> None:
    """Swap every decoder linear for ``make(linear)`` (bitsandbytes and HQQ are modules)."""
    targets = [n for n, m in model.named_modules() if is_decoder_linear(m, n)]
    for fqn in targets:
        parent_name, _, child = fqn.rpartition(".")
        parent = model.get_submodule(parent_name)
        old = getattr(parent, child)
        # A new module starts in training mode; bitsandbytes picks its inference kernels
        # (CPU weight repacking, int8 matmul) only in eval mode.
        setattr(parent, child, make(old).train(old.training))


# --- quantizers ------------------------------------------------------------------------------

def quantize_torchao(model, bits: int, group_size: int, device: str) -> None:
    """torchao ``quantize_``: int8 per-row weight-only; 4-bit per group.

    4-bit on CPU: ``IntxWeightOnlyConfig(int4)`` is the only torchao int4 path that runs here
    (``Int4WeightOnlyConfig`` -> "Requires mslk >= 1.0.0"; its plain_int32 form ->
    "Int4PlainInt32Tensor does not support device 'cpu' yet"); it stores int4 values in
    int8. 4-bit on CUDA: ``Int4WeightOnlyConfig`` tile-packed for the tinygemm kernel, which
    needs bfloat16 weights ("Only bfloat16 is supported for Int4TilePackedTo4dTensor"), so
    fp32/fp16 weights are cast to bf16 first; activations are cast by torchao at each call.
    That form pads in_features to a multiple of 1024 (SmolLM2's 576 -> 1024: 7.5 bits per
    weight stored); the plain and preshuffled int4 forms need the ``mslk`` package.
    """
    from torchao.quantization import (
        Int4WeightOnlyConfig,
        Int8WeightOnlyConfig,
        IntxWeightOnlyConfig,
        quantize_,
    )
    from torchao.quantization.granularity import PerGroup

    if bits == 8:
        config = Int8WeightOnlyConfig()
    elif device == "cuda":
        for name, m in model.named_modules():
            if is_decoder_linear(m, name):
                m.weight.data = m.weight.data.to(torch.bfloat16)
        config = Int4WeightOnlyConfig(group_size=group_size,
                                      int4_packing_format="tile_packed_to_4d")
    else:
        config = IntxWeightOnlyConfig(weight_dtype=torch.int4, granularity=PerGroup(group_size))
    quantize_(model, config, filter_fn=is_decoder_linear)


def quantize_quanto(model, bits: int, group_size: int, device: str) -> None:
    """optimum-quanto ``quantize`` + ``freeze`` (weights only; activations stay float).

    quanto picks its own int4 group size (128, else the largest multiple of 32 dividing
    in_features, e.g. 96 for SmolLM2's 576); the spec's group size is set on each layer
    before ``freeze`` so every library quantizes with the same groups. Its int4 weights are
    unpacked by a C++ (CPU) or CUDA extension that torch compiles at the first forward:
    ~100 s of nvcc on an H200 machine, once per environment.
    """
    from optimum.quanto import freeze, qint4, qint8, quantize
    from optimum.quanto.nn import QModuleMixin

    quantize(model, weights=qint8 if bits == 8 else qint4, exclude="lm_head")
    if bits == 4:
        for m in model.modules():
            if isinstance(m, QModuleMixin):
                m.weight_group_size = group_size
    freeze(model)


def quantize_bnb(model, bits: int, group_size: int, device: str) -> None:
    """bitsandbytes: LLM.int8() rows (``Linear8bitLt``, no outlier threshold) or 4-bit NF4
    blocks (``Linear4bit``). Moving the parameter to a device is what quantizes it."""
    import bitsandbytes as bnb

    if bits == 8:  # said once in the report (``library_backend``), not at every layer call
        logging.getLogger("bitsandbytes.autograd._functions").addFilter(_CastWarningFilter())

    def make(lin: torch.nn.Linear) -> torch.nn.Module:
        has_bias = lin.bias is not None
        if bits == 8:
            new = bnb.nn.Linear8bitLt(lin.in_features, lin.out_features, bias=has_bias,
                                      has_fp16_weights=False, threshold=0.0, device="meta")
            new.weight = bnb.nn.Int8Params(lin.weight.data, requires_grad=False,
                                           has_fp16_weights=False).to(device)
        else:
            new = bnb.nn.Linear4bit(lin.in_features, lin.out_features, bias=has_bias,
                                    quant_type="nf4", device="meta")
            new.weight = bnb.nn.Params4bit(lin.weight.data, requires_grad=False, quant_type="nf4",
                                           blocksize=group_size, module=new).to(device)
        if has_bias:
            new.bias = lin.bias
        return new

    _replace_linears(model, make)


class _CastWarningFilter(logging.Filter):
    """Drops bitsandbytes' per-call "MatMul8bitLt: inputs will be cast ... to float16"."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "inputs will be cast" not in record.getMessage()

    def __eq__(self, other: object) -> bool:  # so adding it twice keeps one filter
        return isinstance(other, _CastWarningFilter)

    __hash__ = logging.Filter.__hash__


def quantize_hqq(model, bits: int, group_size: int, device: str) -> None:
    """HQQ's own ``HQQLinear`` (transformers' HqqConfig refuses CPU). 8-bit is per row.

    HQQ optimises every group's scale and zero (up to 20 half-quadratic steps over the
    weights): ~1 s for SmolLM2 on an H200, but 150 s (4-bit) and 650 s (8-bit) for its 210
    linears on a busy 2-core CPU, where the others take 10-40 s.
    """
    from hqq.core.quantize import BaseQuantizeConfig, HQQLinear

    config = BaseQuantizeConfig(nbits=bits, group_size=group_size if bits == 4 else None, axis=1)

    def make(lin: torch.nn.Linear) -> torch.nn.Module:
        return HQQLinear(lin, config, compute_dtype=lin.weight.dtype, device=device)

    _replace_linears(model, make)


QUANTIZERS = {"torchao": quantize_torchao, "quanto": quantize_quanto,
              "bnb": quantize_bnb, "hqq": quantize_hqq}


# --- read-back -------------------------------------------------------------------------------

@dataclass(frozen=True)
class QuantizedLayer:
    name: str
    module: torch.nn.Module
    weight_type: str  # the library's class holding the weight
    storage: str  # that class with its inner dtype and packing/layout
    n_weights: int  # logical weights (out x in) this layer's storage stands for
    n_bytes: int  # bytes of the quantized weight, its scales and zero points
    group_size: int | None


def _bnb_layer(module) -> tuple[str, int, int | None] | None:
    w = module.weight
    kind = type(w).__name__
    if kind == "Params4bit" and w.quant_state is not None:
        qs = w.quant_state
        return f"Params4bit {qs.quant_type} in {w.dtype}", math.prod(qs.shape), qs.blocksize
    if kind == "Int8Params" and w.dtype == torch.int8:
        return "Int8Params int8 + row scales (SCB)", w.numel(), None
    return None


def _describe(name: str, m: torch.nn.Module) -> QuantizedLayer | None:
    """The layer's quantized storage, or None when its weight is not quantized."""
    if type(m).__name__ == "HQQLinear" and getattr(m, "W_q", None) is not None:
        meta = m.meta
        storage = f"HQQLinear W_q={m.W_q.dtype} packing={meta.get('packing')}"
        group = meta.get("group_size")
        return QuantizedLayer(name, m, "HQQLinear", storage, math.prod(meta["shape"]),
                              _layer_bytes(m), group if group < meta["shape"][-1] else None)
    w = getattr(m, "weight", None)
    if w is None or not isinstance(m, torch.nn.Linear):
        return None
    bnb = _bnb_layer(m)
    if bnb is not None:
        return QuantizedLayer(name, m, type(w).__name__, bnb[0], bnb[1], _layer_bytes(m), bnb[2])
    if hasattr(w, "__tensor_flatten__") and type(w) not in (torch.Tensor, torch.nn.Parameter):
        return QuantizedLayer(name, m, type(w).__name__, _subclass_storage(w), w.numel(),
                              _layer_bytes(m), _subclass_group(w))
    return None


def _subclass_storage(w) -> str:
    """torchao/quanto tensor subclass name, its inner dtypes and packing/layout attribute."""
    names, _ = w.__tensor_flatten__()
    inner = getattr(w, names[0])
    inner_kind = type(inner).__name__ if hasattr(inner, "__tensor_flatten__") else inner.dtype
    parts = [type(w).__name__, f"{names[0]}={inner_kind}"]
    for attr in ("packing_format", "intx_packing_format", "_qtype", "qtype"):
        if getattr(w, attr, None) is not None:
            parts.append(f"{attr.lstrip('_')}={getattr(w, attr)}")
            break
    return " ".join(parts)


def _subclass_group(w) -> int | None:
    """Input weights per scale, or None when there is one scale per output row."""
    block = getattr(w, "block_size", None)  # torchao
    group = int(block[-1]) if block is not None else getattr(w, "_group_size", None)  # quanto
    return int(group) if group and group < w.shape[-1] else None


def _layer_bytes(m: torch.nn.Module) -> int:
    """Bytes of a layer's weight storage (not its bias): data, scales, zero points."""
    total = sum(tensor_bytes(t.data if isinstance(t, torch.nn.Parameter) else t)
                for n, t in [*m.named_parameters(recurse=False), *m.named_buffers(recurse=False)]
                if n != "bias")
    return total + sum(tensor_bytes(t) for t in quantizer_side_tensors(m))


def library_backend(layer: QuantizedLayer) -> str | None:
    """The library's own word on its execution backend, where it keeps one."""
    m = layer.module
    if layer.weight_type == "HQQLinear":
        return f"HQQLinear.backend={m.backend.name}"
    if layer.weight_type in ("Params4bit", "Int8Params"):
        from bitsandbytes.cextension import lib

        native = getattr(getattr(lib, "_lib", None), "_name", None)
        if layer.weight_type == "Int8Params":  # LLM.int8(): activations quantized per row too
            extra = ", activations cast to float16 and quantized to int8 (threshold 0)"
        else:
            extra = f", avx512bf16_for_cpu={bool(m.support_avx512bf16_for_cpu)}"
        return f"native library {native.rsplit('/', 1)[-1] if native else None}{extra}"
    return None


def quantized_layers(model: torch.nn.Module) -> Iterator[QuantizedLayer]:
    for name, m in model.named_modules():
        layer = _describe(name, m)
        if layer is not None:
            yield layer


# Ops that say which kernel did the matrix work; the rest (views, casts, copies) are noise.
_KERNEL_OP = re.compile(r"(mm|matmul|linear|gemv|gemm|int4pack|int8pack|dequant|unpack)", re.I)
_FUSED = re.compile(r"(_weight_int[48]pack_mm|_int_mm|gemv_4bit|gemm_4bit|int8_linear_matmul|"
                    r"^mslk::|^quanto::(?!qbytes_mm|unpack)|gemlite|marlin)", re.I)
# Ops that turn stored weights back into floats: their presence means the fallback ran, even
# where the op around it has a kernel's name (bitsandbytes' gemm_4bit on a CPU without
# AVX512-BF16 dequantizes, then calls a float matmul).
_WEIGHT_DEQUANT = re.compile(r"(dequantize|unpack|Dequantizer)", re.I)


def probe_kernels(layer: torch.nn.Module, in_features: int, dtype: torch.dtype, device: str
                  ) -> dict[str, object]:
    """Run one decode-shaped forward (1 token) of a quantized layer under the profiler and
    name the ops it called: a fused low-bit kernel, or dequantize-then-matmul."""
    from torch.profiler import ProfilerActivity, profile

    x = torch.randn(1, 1, in_features, dtype=dtype, device=device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with torch.no_grad():  # as in generation (quanto int4 refuses inference_mode)
        layer(x)  # warm (lazy repacking or compilation is not what the probe is after)
        with profile(activities=activities) as prof:
            layer(x)
    ops = list(dict.fromkeys(_short(e.name) for e in prof.events() if _KERNEL_OP.search(e.name)))
    fused = [op for op in ops if _FUSED.search(op)]
    if any(_WEIGHT_DEQUANT.search(op) for op in ops):
        fused = []
    path = (f"fused low-bit kernel: {', '.join(fused)}" if fused else
            "dequantize-then-matmul fallback (weights turned back into floats for a float matmul)")
    return {"ops": ops[:12], "path": path}


def _short(name: str) -> str:
    """A CUDA kernel's name without its argument list (cuBLAS template names run to 400 chars)."""
    name = name.split("(")[0] if name.startswith("void ") else name
    return name if len(name) <= 80 else name[:77] + "..."
