"""Distillation into a depth-pruned student, as in Minitron (Muralidharan et al., 2024): drop
whole decoder layers from the loaded model, then fine-tune what is left on the teacher's own
greedy answers to the training requests (sequence-level distillation).

The teacher is the model as it arrives. Its answers are generated first; then the same
model object loses layers (``model.model.layers`` becomes a shorter ``nn.ModuleList``,
``config.num_hidden_layers`` and every attention ``layer_idx`` follow) and is trained with
the loss on the answer tokens only. ``method="full"`` trains every decoder weight and norm;
``"lora"`` trains rank-``lora_rank`` adapters on the decoder linears and merges them back,
so the served student has plain linears and no extra parameters. The tied embedding /
lm_head stays frozen either way. Only the answers are distilled, not the teacher's logits:
keeping a teacher copy for a KL term would double the memory on small machines.

Layer selection: ``uniform`` keeps evenly spaced layers (the first and last included),
``first`` keeps the bottom ones, ``importance`` keeps those whose output differs most from
their input on the training requests (block importance 1 - cos(in, out), as in ShortGPT).

Substituting a whole smaller model (another checkpoint) needs no technique: give the variant
a local model folder in ``VariantSpec.model``.
"""
from __future__ import annotations

import math
from typing import Any, Literal

import torch
from pydantic import Field

from engine.core.errors import SpecError
from engine.techniques._training import (
    data_report,
    fine_tune,
    pad_id,
    require_training_data,
    teacher_answers,
    trainable_decoder_params,
)
from engine.techniques.base import TechniqueBase, TechniqueContext
from engine.techniques.calibration import forward_each

stage = "model"
IMPORTANCE_EXAMPLES = 8  # training sequences scored for layer importance
_TAG = "roilab_teacher_index"  # set on each kept layer: its index in the teacher


class Distill(TechniqueBase):
    """Remove decoder layers, then train the student on the teacher's answers."""

    kind: Literal["distill"] = "distill"
    student_layers: int = Field(20, ge=1, le=1024, description="decoder layers the student keeps")
    layer_selection: Literal["uniform", "first", "importance"] = "uniform"
    method: Literal["full", "lora"] = "full"
    lora_rank: int = Field(8, ge=1, le=512, description="LoRA only: adapter rank")
    train_steps: int = Field(40, ge=0, le=100_000, description="0 = depth pruning alone")
    learning_rate: float = Field(5e-5, gt=0.0, le=0.1)
    max_train_examples: int = Field(32, ge=1, le=100_000)
    teacher_max_new_tokens: int = Field(48, ge=1, le=4096)
    batch_size: int = Field(4, ge=1, le=256)
    seed: int = 0


SPEC = Distill


def describe(spec: Distill) -> str:
    return (f"distilled to {spec.student_layers} layers ({spec.layer_selection}, "
            f"{spec.method}, {spec.train_steps} steps)")


def check(spec: Distill, device: str) -> None:
    """Plain torch on whatever device the model runs on: nothing to refuse up front. A
    student at least as deep as the teacher is refused once the model is loaded."""


# --- depth pruning ---------------------------------------------------------------------------

def decoder_layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    layers = getattr(getattr(model, "model", None), "layers", None)
    if not isinstance(layers, torch.nn.ModuleList):
        raise SpecError(f"Depth pruning needs a Llama-style model with model.model.layers; "
                        f"{type(model).__name__} has none. Distil into another checkpoint by "
                        "naming its folder as the variant's model instead.")
    return layers


def uniform_layers(n: int, keep: int) -> list[int]:
    """``keep`` evenly spaced indices of ``n``, first and last included (no duplicates since
    the spacing is at least one)."""
    if keep == 1:
        return [0]
    step = (n - 1) / (keep - 1)
    return [math.floor(i * step + 0.5) for i in range(keep)]


@torch.no_grad()
def layer_importance(model: torch.nn.Module, sequences: list[list[int]]) -> list[float]:
    """Per decoder layer, 1 - mean cosine between its input and output hidden states over
    every token of ``sequences`` (one at a time, so no padding enters the average)."""
    layers = decoder_layers(model)
    sums = [0.0] * len(layers)

    def hook(i: int):
        def record(_module, args, kwargs, output) -> None:
            x = args[0] if args else kwargs["hidden_states"]
            y = output[0] if isinstance(output, tuple) else output
            sums[i] += float(torch.nn.functional.cosine_similarity(
                x.float(), y.float(), dim=-1).sum())
        return record

    forward_each(model, sequences, [(layer, hook(i), True) for i, layer in enumerate(layers)])
    tokens = sum(len(s) for s in sequences)
    return [1.0 - s / tokens for s in sums]


def select_layers(n: int, keep: int, how: str, importance: list[float] | None = None
                  ) -> list[int]:
    if how == "first":
        return list(range(keep))
    if how == "importance":
        assert importance is not None
        return sorted(sorted(range(n), key=lambda i: -importance[i])[:keep])
    return uniform_layers(n, keep)


def drop_layers(model: torch.nn.Module, keep: list[int]) -> None:
    """Keep only the decoder layers at ``keep`` (in order), renumbering their cache slots."""
    layers = decoder_layers(model)
    kept = [layers[i] for i in keep]
    for new, (old, layer) in enumerate(zip(keep, kept, strict=True)):
        setattr(layer, _TAG, getattr(layer, _TAG, old))
        for m in layer.modules():
            if hasattr(m, "layer_idx"):
                m.layer_idx = new  # the KV cache is indexed by position in the new stack
    model.model.layers = torch.nn.ModuleList(kept)
    cfg = model.config
    cfg.num_hidden_layers = len(kept)
    if getattr(cfg, "layer_types", None):
        cfg.layer_types = [cfg.layer_types[i] for i in keep]


# --- LoRA ------------------------------------------------------------------------------------

class LoRALinear(torch.nn.Module):
    """``base(x) + scale * B(A(x))`` with ``base`` frozen; B starts at zero, so training starts
    from the unchanged model. ``merged()`` folds B @ A into the base weight."""

    def __init__(self, base: torch.nn.Linear, rank: int, generator: torch.Generator) -> None:
        super().__init__()
        self.base = base
        a = torch.empty(rank, base.in_features, dtype=base.weight.dtype)
        torch.nn.init.kaiming_uniform_(a, a=math.sqrt(5), generator=generator)
        self.lora_a = torch.nn.Parameter(a.to(base.weight.device))
        self.lora_b = torch.nn.Parameter(torch.zeros(base.out_features, rank,
                                                     dtype=base.weight.dtype,
                                                     device=base.weight.device))
        self.scale = 2.0  # alpha = 2 * rank, the usual choice

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + (x @ self.lora_a.t() @ self.lora_b.t()) * self.scale

    @torch.no_grad()
    def merged(self) -> torch.nn.Linear:
        self.base.weight += (self.lora_b @ self.lora_a) * self.scale
        return self.base


def _swap(model: torch.nn.Module, names: list[str], make) -> None:
    for fqn in names:
        parent_name, _, child = fqn.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, child, make(getattr(parent, child)))


def add_lora(model: torch.nn.Module, rank: int, seed: int) -> list[torch.nn.Parameter]:
    """Wrap every linear of the decoder layers; return the adapters' parameters."""
    gen = torch.Generator().manual_seed(seed)
    names = [f"model.layers.{i}.{n}" for i, layer in enumerate(decoder_layers(model))
             for n, m in layer.named_modules() if type(m) is torch.nn.Linear]
    _swap(model, names, lambda lin: LoRALinear(lin, rank, gen))
    return [p for m in model.modules() if isinstance(m, LoRALinear)
            for p in (m.lora_a, m.lora_b)]


def merge_lora(model: torch.nn.Module) -> int:
    names = [n for n, m in model.named_modules() if isinstance(m, LoRALinear)]
    _swap(model, names, lambda m: m.merged())
    return len(names)


# --- the technique ---------------------------------------------------------------------------

def apply(model, spec: Distill, ctx: TechniqueContext | None = None) -> dict[str, Any]:
    """Teacher answers -> drop layers -> train the student; report read back from the model."""
    from engine.core.memory import parameter_counts

    ctx = require_training_data(ctx, "Distillation")
    n = len(decoder_layers(model))
    if spec.student_layers >= n:
        raise SpecError(f"student_layers={spec.student_layers} must be fewer than the "
                        f"teacher's {n} decoder layers.")
    teacher_params = parameter_counts(model)["parameters"]
    data = teacher_answers(model, ctx, spec.max_train_examples, spec.teacher_max_new_tokens,
                           spec.batch_size)
    importance = None
    if spec.layer_selection == "importance":
        seqs = [e.prompt_ids + e.answer_ids for e in data.examples[:IMPORTANCE_EXAMPLES]]
        importance = layer_importance(model, seqs)
    drop_layers(model, select_layers(n, spec.student_layers, spec.layer_selection, importance))
    lora = spec.method == "lora"
    params = add_lora(model, spec.lora_rank, spec.seed) if lora else (
        trainable_decoder_params(model))
    result = fine_tune(model, data.examples, params, steps=spec.train_steps,
                       learning_rate=spec.learning_rate, batch_size=spec.batch_size,
                       seed=spec.seed, pad_token=pad_id(model, ctx.tokenizer))
    merged = merge_lora(model) if lora else None
    layers = decoder_layers(model)
    return {
        "teacher_layers": n, "student_layers": len(layers),
        "config_num_hidden_layers": model.config.num_hidden_layers,
        "layers_kept": [getattr(layer, _TAG) for layer in layers],
        "layer_selection": spec.layer_selection,
        "layer_importance": [round(x, 5) for x in importance] if importance else None,
        "teacher_parameters": teacher_params,
        "student_parameters": parameter_counts(model)["parameters"],
        "method": spec.method, "lora_rank": spec.lora_rank if lora else None,
        "lora_layers_merged": merged, "learning_rate": spec.learning_rate,
        **result.report(), **data_report(ctx, data),
    }
