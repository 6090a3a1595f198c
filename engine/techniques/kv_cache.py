"""Quantized KV cache (transformers' ``QuantizedCache``, KIVI-style) and the capacity it buys.

Each layer keeps one quantized block (``bits`` per value, one scale and one zero-point per
``q_group_size`` values, in the model's dtype) and a full-precision residual window of recent
tokens; when the window fills, everything is re-quantized into the block. The prompt is
quantized at prefill (the prefill step itself attends to full-precision keys), so every
decoded token after the first reads a dequantized prompt. ``residual_length`` only decides
how many *generated* tokens stay in full precision: with transformers' default of 128, answers
shorter than 128 tokens never quantize their own tokens, so a measurement of short answers
tests the prompt's quantization only. The default here (16) makes the generated tokens count too.

The capacity figure is the point of the technique: a smaller cache per request means more
concurrent requests beside the weights in a fixed memory budget (see ``kv_capacity``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field

from engine.core.errors import SpecError
from engine.techniques.base import TechniqueBase, TechniqueContext

stage = "generate"

FORMULA = ("fp bytes/token = 2 (K,V) x layers x kv_heads x head_dim x dtype_bytes; "
           "quantized bytes/token = 2 x layers x kv_heads x head_dim x bits/8 "
           "+ 2 x layers x (kv_heads x head_dim / q_group_size) x 2 (scale, zero) x dtype_bytes; "
           "per request = min(tokens, residual_length) x fp + the rest x quantized")
_CALIBRATION_CAP = 2000  # prompts tokenized for the context-length figure


class QuantizeKVCache(TechniqueBase):
    """Store keys and values in 2 or 4 bits while generating (transformers QuantizedCache)."""

    kind: Literal["quantize_kv_cache"] = "quantize_kv_cache"
    bits: Literal[2, 4] = 4
    backend: Literal["quanto", "hqq"] = "quanto"  # "hqq" lowercase: transformers' own name
    residual_length: int = Field(16, ge=1, description=(
        "Generated tokens kept in full precision before they are quantized. transformers' "
        "default, 128, leaves the own tokens of short answers unquantized."))
    q_group_size: int = Field(64, ge=1, description="Values sharing one scale and zero-point.")
    memory_budget_gb: float = Field(24.0, gt=0, description="Memory (1e9 bytes) for the "
                                    "capacity figure: weights plus every request's KV cache.")
    context_tokens: int | None = Field(None, ge=1, description=(
        "Tokens per request for the capacity figure; None = the workload's prompt tokens "
        "(mean and p95) plus output_tokens."))
    output_tokens: int = Field(128, ge=1, description=(
        "Generated tokens assumed per request in the capacity figure (the pilot's "
        "max_new_tokens is not visible to a technique)."))


SPEC = QuantizeKVCache


def describe(spec: QuantizeKVCache) -> str:
    return f"{spec.bits}-bit KV cache ({spec.backend})"


def check(spec: QuantizeKVCache, device: str) -> None:
    """Refuse when the backend library is missing or too old.

    Every backend x bits x dtype combination ran on CPU (quanto and hqq, 2 and 4 bits, fp32,
    bf16, fp16), so nothing else is refused per device. What fails depends on the model and is
    refused when the variant loads (``generate_kwargs``): a group size that does not divide the
    head dimension, and models with sliding-window layers.
    """
    from transformers.utils import is_hqq_available, is_optimum_quanto_available, is_quanto_greater

    if spec.backend == "quanto":
        if not is_optimum_quanto_available():
            raise SpecError("A quanto KV cache needs optimum-quanto: "
                            "pip install 'optimum-quanto==0.2.7', or use backend 'hqq'.")
        # transformers: "You need optimum-quanto package version to be greater or equal than
        # 0.2.5 to use `QuantoQuantizedLayer`."
        if not is_quanto_greater("0.2.5", accept_dev=True):
            raise SpecError("The quanto KV cache needs optimum-quanto >= 0.2.5: "
                            "pip install 'optimum-quanto==0.2.7'.")
    elif not is_hqq_available():
        raise SpecError("An hqq KV cache needs hqq: DISABLE_CUDA=1 pip install 'hqq==0.2.8.post1' "
                        "(DISABLE_CUDA skips building its CUDA kernels), or use backend 'quanto'.")


class _CacheConfig(dict):
    """``cache_config`` that keeps its backend across generate calls.

    transformers 5.17 mutates the dict it is given, on every call
    (generation/utils.py: ``backend = cache_config.pop("backend", "quanto")``), so a plain dict
    silently turns an hqq cache into a quanto one from the second batch on. The backend is
    therefore not stored as a key; ``pop("backend", ...)`` always answers it.
    """

    def __init__(self, backend: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.backend = backend

    def pop(self, key, *default):
        if key == "backend":
            return self.backend
        return super().pop(key, *default)


def _cache_args(spec: QuantizeKVCache) -> dict[str, int]:
    return {"nbits": spec.bits, "q_group_size": spec.q_group_size,
            "residual_length": spec.residual_length}


def generate_kwargs(spec: QuantizeKVCache, model) -> dict[str, Any]:
    """``cache_implementation="quantized"``: generate builds a fresh cache for every call.

    The cache is built once here first, so a model it cannot serve is refused at load time
    with the library's reason instead of failing in the first batch.
    """
    from transformers import QuantizedCache

    shape = kv_shape(model)
    if shape.head_dim % spec.q_group_size:
        # quanto: "Group size (128) must be a divisor of (7872)" once the prompt length makes
        # kv_heads x tokens x head_dim indivisible; groups inside one head never straddle.
        raise SpecError(f"q_group_size {spec.q_group_size} must divide the model's head "
                        f"dimension ({shape.head_dim}); use e.g. {math.gcd(shape.head_dim, 64)}.")
    try:
        QuantizedCache(backend=spec.backend, config=model.config, **_cache_args(spec))
    except (ValueError, ImportError) as exc:  # sliding-window layers, missing library
        raise SpecError(f"This model cannot use a quantized KV cache: {exc}") from exc
    return {"cache_implementation": "quantized",
            "cache_config": _CacheConfig(spec.backend, **_cache_args(spec))}


@dataclass(frozen=True)
class KVShape:
    layers: int
    kv_heads: int
    head_dim: int
    dtype_bytes: int  # keys/values are stored in the model's dtype; so are scales and zeros

    @property
    def values_per_token(self) -> int:
        return 2 * self.layers * self.kv_heads * self.head_dim  # keys and values

    def fp_bytes_per_token(self) -> int:
        return self.values_per_token * self.dtype_bytes

    def quantized_bytes_per_token(self, bits: int, group_size: int) -> float:
        groups = self.values_per_token / group_size
        return self.values_per_token * bits / 8 + groups * 2 * self.dtype_bytes


def kv_shape(model) -> KVShape:
    cfg = model.config.get_text_config(decoder=True)
    heads = cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    return KVShape(layers=cfg.num_hidden_layers,
                   kv_heads=getattr(cfg, "num_key_value_heads", None) or heads,
                   head_dim=head_dim, dtype_bytes=model.dtype.itemsize)


def kv_request_bytes(tokens: int, fp_bytes_per_token: float,
                     quantized_bytes_per_token: float | None = None,
                     residual_length: int = 0) -> float:
    """KV bytes of one request of ``tokens`` tokens; without a quantized figure, all fp.

    The residual window counts ``residual_length`` tokens in full precision, an upper bound
    (transformers keeps at most ``residual_length - 1`` generated tokens unquantized).
    """
    if quantized_bytes_per_token is None:
        return tokens * fp_bytes_per_token
    fp_tokens = min(tokens, residual_length)
    return fp_tokens * fp_bytes_per_token + (tokens - fp_tokens) * quantized_bytes_per_token


def kv_capacity(budget_bytes: float, weight_bytes: float, tokens: int,
                fp_bytes_per_token: float, quantized_bytes_per_token: float | None = None,
                residual_length: int = 0) -> int:
    """How many concurrent requests of ``tokens`` tokens fit their KV caches beside the weights.

    ``floor((budget - weights) / kv_request_bytes(...))``, 0 when the weights alone do not fit.
    Activations and the one layer that attention holds dequantized at a time are not counted
    (a plain cache also copies one layer while appending to it).
    """
    free = budget_bytes - weight_bytes
    per_request = kv_request_bytes(tokens, fp_bytes_per_token, quantized_bytes_per_token,
                                   residual_length)
    return max(0, math.floor(free / per_request)) if per_request > 0 else 0


def _context_tokens(spec: QuantizeKVCache, ctx: TechniqueContext | None) -> dict[str, Any]:
    """Tokens per request for the capacity figure: the override, or the workload's prompts."""
    if spec.context_tokens is not None:
        return {"source": "spec.context_tokens", "mean": spec.context_tokens,
                "p95": spec.context_tokens}
    prompts = list(ctx.calibration)[:_CALIBRATION_CAP] if ctx and ctx.tokenizer else []
    if not prompts:
        return {"source": "no workload prompts: output_tokens only",
                "mean": spec.output_tokens, "p95": spec.output_tokens}
    import numpy as np

    tok = ctx.tokenizer
    lens = [len(tok(tok.apply_chat_template(m, tokenize=False, add_generation_prompt=True),
                    add_special_tokens=False)["input_ids"]) for m in prompts]
    mean, p95 = float(np.mean(lens)), float(np.percentile(lens, 95))
    return {"source": f"{len(lens)} workload prompts + {spec.output_tokens} output tokens",
            "prompt_mean": round(mean, 1), "prompt_p95": round(p95, 1),
            "mean": math.ceil(mean) + spec.output_tokens,
            "p95": math.ceil(p95) + spec.output_tokens}


def report(spec: QuantizeKVCache, model, ctx: TechniqueContext | None = None) -> dict[str, Any]:
    """KV bytes per token (fp vs quantized), compression, and concurrent requests that fit."""
    from engine.core.memory import model_weight_bytes

    shape = kv_shape(model)
    fp = shape.fp_bytes_per_token()
    q = shape.quantized_bytes_per_token(spec.bits, spec.q_group_size)
    weights = model_weight_bytes(model)
    budget = spec.memory_budget_gb * 1e9
    context = _context_tokens(spec, ctx)
    capacity: dict[str, int] = {}
    for which in ("mean", "p95"):
        capacity[f"fp_{which}"] = kv_capacity(budget, weights, context[which], fp)
        capacity[f"quantized_{which}"] = kv_capacity(budget, weights, context[which], fp, q,
                                                     spec.residual_length)
    at_mean = kv_request_bytes(context["mean"], fp, q, spec.residual_length)
    return {"cache": f"transformers QuantizedCache ({spec.backend})", "bits": spec.bits,
            "q_group_size": spec.q_group_size, "residual_length": spec.residual_length,
            "kv_dtype": str(model.dtype).removeprefix("torch."),
            "kv_bytes_per_token_fp": fp, "kv_bytes_per_token_quantized": q,
            "compression": round(fp / q, 3),
            "compression_at_mean_context": round(context["mean"] * fp / at_mean, 3),
            "formula": FORMULA, "weight_bytes": weights,
            "memory_budget_gb": spec.memory_budget_gb, "context_tokens": context,
            "concurrent_requests": capacity}
