"""Quantization-aware training with torchao: fake-quantize the decoder linears, fine-tune
on the model's own greedy answers to the training requests (self-distillation), then convert
to the same quantized storage post-training quantization would give.

torchao 0.18 API: ``quantize_(model, QATConfig(base, step="prepare"))`` swaps each linear
for a ``FakeQuantizedLinear`` (weights rounded to the target grid in the forward pass,
straight-through gradients), and ``QATConfig(base, step="convert")`` swaps them back and
applies ``base``, the PTQ config:

- 4 bits: ``IntxWeightOnlyConfig(torch.int4, PerGroup(group_size))``, the torchao int4
  path that runs on CPU (int4 values stored in int8; see ``quant_backends``), whose
  fake-quantizer QATConfig infers itself.
- 8 bits: ``Int8WeightOnlyConfig()`` (per-row symmetric ``Int8Tensor``). QATConfig cannot
  infer a fake-quantizer from it, so prepare is given the matching one explicitly:
  ``IntxFakeQuantizeConfig(torch.int8, "per_channel", is_symmetric=True)``.

The tied embedding / lm_head stays full precision and frozen, as in ``weight_quant``. The
fair comparison is a pilot with this variant and ``quantize_weights`` at the same bits,
method and group size: on CPU both end in the same storage. Verified on CPU only; on CUDA
``quantize_weights`` stores 4-bit weights tile-packed for tinygemm (``Int4WeightOnlyConfig``),
a format QATConfig cannot prepare for, while this module keeps ``IntxWeightOnlyConfig``.
"""
from __future__ import annotations

import importlib.util
import time
from typing import Any, Literal

import torch
from pydantic import Field, model_validator

from engine.core.errors import SpecError
from engine.techniques._training import (
    data_report,
    fine_tune,
    pad_id,
    require_training_data,
    teacher_answers,
    trainable_decoder_params,
)
from engine.techniques.base import TechniqueBase, TechniqueContext, group_size_only_for_4_bit

stage = "model"


class QuantAwareTraining(TechniqueBase):
    """Fake-quantized fine-tuning, then conversion to real low-bit weights."""

    kind: Literal["qat"] = "qat"
    bits: Literal[4, 8] = 4
    group_size: int = Field(32, ge=8, le=4096, description="4-bit only: weights per scale")
    train_steps: int = Field(30, ge=0, le=100_000)
    learning_rate: float = Field(2e-5, gt=0.0, le=0.1)
    max_train_examples: int = Field(32, ge=1, le=100_000)
    teacher_max_new_tokens: int = Field(48, ge=1, le=4096)
    batch_size: int = Field(4, ge=1, le=256)
    seed: int = 0

    @model_validator(mode="after")
    def _group_size_is_for_4_bit(self) -> QuantAwareTraining:
        group_size_only_for_4_bit(self.bits, self.group_size, default=32)
        return self


SPEC = QuantAwareTraining


def describe(spec: QuantAwareTraining) -> str:
    groups = f", groups of {spec.group_size}" if spec.bits == 4 else ""
    return f"QAT {spec.bits}-bit weights (torchao{groups}, {spec.train_steps} steps)"


def check(spec: QuantAwareTraining, device: str) -> None:
    """Refuse when torchao or its QAT API is missing (checked on torchao 0.18.0, CPU)."""
    if importlib.util.find_spec("torchao") is None:
        raise SpecError("Quantization-aware training needs torchao: "
                        "pip install 'torchao==0.18.0'.")
    _configs(spec)


def _configs(spec: QuantAwareTraining) -> tuple[Any, Any, Any]:
    """(prepare config, convert config, PTQ base config) for ``spec``."""
    try:
        from torchao.quantization import Int8WeightOnlyConfig, IntxWeightOnlyConfig
        from torchao.quantization.granularity import PerGroup
        from torchao.quantization.qat import IntxFakeQuantizeConfig, QATConfig
    except ImportError as exc:
        raise SpecError(f"This torchao has no QAT API ({exc}); "
                        "pip install 'torchao==0.18.0'.") from exc
    if spec.bits == 4:
        base = IntxWeightOnlyConfig(weight_dtype=torch.int4, granularity=PerGroup(spec.group_size))
        return QATConfig(base, step="prepare"), QATConfig(base, step="convert"), base
    base = Int8WeightOnlyConfig()
    fake = IntxFakeQuantizeConfig(torch.int8, "per_channel", is_symmetric=True)
    return (QATConfig(weight_config=fake, step="prepare"), QATConfig(base, step="convert"),
            base)


def apply(model, spec: QuantAwareTraining, ctx: TechniqueContext | None = None
          ) -> dict[str, Any]:
    """Teacher answers -> prepare -> train -> convert; report read back from the model."""
    from torchao.quantization import quantize_
    from torchao.quantization.qat import FakeQuantizedLinear

    from engine.core.memory import model_weight_bytes
    from engine.techniques.quant_backends import (
        check_group_size,
        decoder_linear_count,
        is_decoder_linear,
        quantized_layers,
    )

    ctx = require_training_data(ctx, "Quantization-aware training")
    prepare, convert, base = _configs(spec)
    if spec.bits == 4:  # 8-bit weights are scaled per row, not per group
        check_group_size(model, spec.group_size)
    linears = decoder_linear_count(model)
    before = model_weight_bytes(model)
    data = teacher_answers(model, ctx, spec.max_train_examples, spec.teacher_max_new_tokens,
                           spec.batch_size)
    quantize_(model, prepare, filter_fn=is_decoder_linear)
    fake = [m for m in model.modules() if isinstance(m, FakeQuantizedLinear)]
    fake_config = repr(fake[0].weight_fake_quantizer.config) if fake else None
    result = fine_tune(model, data.examples, trainable_decoder_params(model),
                       steps=spec.train_steps, learning_rate=spec.learning_rate,
                       batch_size=spec.batch_size, seed=spec.seed,
                       pad_token=pad_id(model, ctx.tokenizer))
    t0 = time.perf_counter()
    quantize_(model, convert, filter_fn=lambda m, _fqn: isinstance(m, FakeQuantizedLinear))
    convert_s = time.perf_counter() - t0
    layers = list(quantized_layers(model))
    n_weights = sum(q.n_weights for q in layers)
    n_bytes = sum(q.n_bytes for q in layers)
    return {
        "method": "torchao QATConfig", "bits": spec.bits,
        "group_size": spec.group_size if spec.bits == 4 else None,
        "base_config": type(base).__name__, "decoder_linears": linears,
        "fake_quantized_linears": len(fake), "fake_quantize_config": fake_config,
        "fake_quantized_left": sum(isinstance(m, FakeQuantizedLinear) for m in model.modules()),
        "layers_quantized": len(layers),
        "weight_type": layers[0].weight_type if layers else None,
        "weight_storage": sorted({q.storage for q in layers}),
        "group_sizes": sorted({q.group_size for q in layers if q.group_size}),
        "bits_per_weight": round(8 * n_bytes / n_weights, 3) if n_weights else None,
        "weight_bytes_before": before, "weight_bytes_after": model_weight_bytes(model),
        "convert_s": round(convert_s, 3), "learning_rate": spec.learning_rate,
        **result.report(), **data_report(ctx, data),
    }
