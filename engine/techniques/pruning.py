"""Weight pruning of the decoder's linear layers: magnitude, 2:4 semi-structured and Wanda,
one-shot or iterative with a short recovery fine-tune between rounds.

Wanda (Sun et al., 2023) scores each weight by ``|W_ij| * ||X_j||_2``, the norm of its input
channel over calibration tokens, and prunes the lowest scores within each output row; it is
implemented here directly in torch because llmcompressor's took ~6 min on our CPU.

Pruned weights are zeros inside dense tensors: dense kernels do the same FLOPs on zeros, so
pruning alone brings no speed or memory gain. Only 2:4 weights stored with
``torch.sparse.to_sparse_semi_structured`` (CUDA sm80+, fp16/bf16; fp32 is refused and kept
dense) run on sparse kernels. Measured on an H200 (torch 2.11, cuSPARSELt): each sparse call
costs ~0.5-1 ms whatever its size, so SmolLM2's 576-wide layers ran 20-30x slower per layer
(prefill 16x512 tokens 6.8x slower end to end); only 4096x14336 layers at 8192 tokens per call
gained (1.1-1.3x). On the Llama-3.1-8B shape it stored the weights at 0.62x but decoded 7x
slower at batch 1 and failed at batch 8 (cuSPARSELt tensors lack ``expand``; see
docs/gpu-h200-2026-11-27-techniques). The report therefore says that storing sparse ran, not
that it is faster.
"""
from __future__ import annotations

import time
from typing import Any, Literal

import torch
from pydantic import Field

from engine.core.errors import SpecError
from engine.techniques.base import TechniqueBase, TechniqueContext
from engine.techniques.calibration import (
    Recovery,
    activation_norms,
    encode_prompts,
    target_linears,
)

stage = "model"

DENSE_NOTE = ("Pruned weights are stored as zeros in dense tensors and dense kernels run the "
              "same FLOPs on zeros, so no speed or memory gain is expected unless the weights "
              "are stored sparse.")


class Prune(TechniqueBase):
    """Zero a fraction of the decoder linears' weights, optionally with recovery fine-tuning."""

    kind: Literal["prune"] = "prune"
    method: Literal["magnitude", "2:4", "wanda"] = "magnitude"
    sparsity: float = Field(0.5, gt=0.0, lt=1.0,
                            description="fraction of targeted weights zeroed (2:4 is always 0.5)")
    score: Literal["magnitude", "wanda"] | None = Field(
        None, description="for 2:4: rank each group of 4 by |W| or by Wanda's |W|*||X||")
    targets: Literal["all", "mlp", "attention"] = "all"
    calibration_samples: int = Field(16, ge=1, le=1024)
    iterations: int = Field(1, ge=1, le=20, description="rounds over which sparsity ramps up")
    recovery_steps: int = Field(0, ge=0, le=10_000, description="fine-tune steps after each round")
    learning_rate: float = Field(1e-5, gt=0.0, le=1e-2)
    semi_structured: bool = Field(False, description="CUDA sm80+: store 2:4 weights sparse")


SPEC = Prune


def describe(spec: Prune) -> str:
    what = "2:4" if spec.method == "2:4" else f"{spec.sparsity:.0%} {spec.method}"
    if spec.method == "2:4" and _score(spec) == "wanda":
        what += " wanda"
    extra = (f", {spec.iterations} rounds x {spec.recovery_steps} recovery steps"
             if spec.recovery_steps else "")
    return f"prune {what} ({spec.targets}{extra})"


def check(spec: Prune, device: str) -> None:
    """Refuse combinations that cannot mean what they say, before the pilot starts."""
    if spec.method == "2:4" and spec.sparsity != 0.5:
        raise SpecError(f"2:4 pruning keeps 2 of every 4 weights, so its sparsity is always 0.5 "
                        f"(got sparsity={spec.sparsity}); drop sparsity or use method "
                        "'magnitude' or 'wanda' for other levels.")
    natural = "wanda" if spec.method == "wanda" else "magnitude"
    if spec.score is not None and spec.method != "2:4" and spec.score != natural:
        raise SpecError(f"score={spec.score!r} only chooses how 2:4 ranks its groups; for "
                        f"unstructured pruning by that score use method={spec.score!r}.")
    if spec.iterations > 1 and spec.recovery_steps == 0:
        raise SpecError("Iterative pruning without recovery_steps ends with the same mask as "
                        "one shot; set recovery_steps > 0 or iterations = 1.")
    if spec.semi_structured:
        if spec.method != "2:4":
            raise SpecError("semi_structured storage needs the 2:4 pattern; use method '2:4'.")
        if device != "cuda":
            raise SpecError("2:4 semi-structured kernels need a CUDA GPU (sm80+); on CPU set "
                            "semi_structured to false (the zeros stay in dense tensors).")
        if torch.cuda.is_available() and torch.cuda.get_device_capability() < (8, 0):
            raise SpecError("2:4 semi-structured kernels need compute capability 8.0+ "
                            "(A100/H100); set semi_structured to false on this GPU.")


def _score(spec: Prune) -> str:
    return spec.score or ("wanda" if spec.method == "wanda" else "magnitude")


def _schedule(spec: Prune) -> list[float]:
    """Sparsity after each round: a linear ramp to the target (2:4 ramps as N:4, N=1..2)."""
    k = spec.iterations
    if spec.method == "2:4":
        return [max(1, round(2 * i / k)) / 4 for i in range(1, k + 1)]
    return [spec.sparsity * i / k for i in range(1, k + 1)]


def prune_mask(weight: torch.Tensor, sparsity: float, pattern: Literal["tensor", "row", "n:4"],
               norms: torch.Tensor | None = None) -> torch.Tensor:
    """Boolean keep-mask. ``pattern``: lowest scores over the whole tensor, within each output
    row (Wanda's comparison group), or ``sparsity*4`` of every 4 consecutive input weights.

    Score = |W|, times the input-channel norm when ``norms`` is given. Exactly
    ``round(sparsity * group)`` weights are dropped per group, so the count is exact even
    with ties; weights already zero score 0 and are dropped first (so rounds only add zeros).
    """
    score = weight.detach().abs()
    if norms is not None:
        score = score * norms.to(score.dtype).unsqueeze(0)
    if pattern == "tensor":  # selection, not a full sort (5x faster on CPU)
        flat, k = score.flatten(), round(sparsity * score.numel())
        if not k:
            return torch.ones_like(score, dtype=torch.bool)
        threshold = flat.kthvalue(k).values
        keep = (flat > threshold).view_as(score)
        extra = score.numel() - int(torch.count_nonzero(keep)) - k
        if extra:  # ties at the threshold (e.g. many zeros): keep just enough of them
            keep.view(-1)[(flat == threshold).nonzero().squeeze(1)[:extra]] = True
        return keep
    keep = torch.ones_like(score, dtype=torch.bool)
    if pattern == "row":
        k = round(sparsity * score.shape[1])
        keep.scatter_(1, torch.topk(score, k, dim=1, largest=False).indices, False)
    else:
        if score.shape[1] % 4:
            raise SpecError(f"2:4 pruning needs input widths divisible by 4 (got "
                            f"{score.shape[1]}); use method 'magnitude' or 'wanda'.")
        groups = score.view(score.shape[0], -1, 4)
        drop = torch.topk(groups, round(sparsity * 4), dim=-1, largest=False).indices
        keep.view(groups.shape).scatter_(-1, drop, False)
    return keep


def _zeros(layers: dict[str, torch.nn.Linear]) -> tuple[int, int]:
    """Zero weights read back from the layers (count_nonzero: a bool sum is 8x slower)."""
    numel = sum(lin.weight.numel() for lin in layers.values())
    return numel - sum(int(torch.count_nonzero(lin.weight)) for lin in layers.values()), numel


def apply(model, spec: Prune, ctx: TechniqueContext | None = None) -> dict[str, Any]:
    """Prune in place (with optional recovery rounds); return what the weights now hold."""
    from engine.core.memory import parameter_counts

    t0 = time.perf_counter()
    layers = target_linears(model, spec.targets)
    score = _score(spec)
    prompts = _calibration_prompts(spec, ctx, score)
    zeros_before, numel = _zeros(layers)
    recovery = (Recovery(model, [lin.weight for lin in layers.values()], ctx.tokenizer, prompts,
                         spec.learning_rate) if spec.recovery_steps else None)
    pattern = "n:4" if spec.method == "2:4" else ("row" if score == "wanda" else "tensor")
    rounds = []
    try:
        for i, target in enumerate(_schedule(spec), start=1):
            with torch.no_grad():
                norms = activation_norms(model, layers, prompts) if score == "wanda" else {}
                masks = {lin.weight: prune_mask(lin.weight, target, pattern, norms.get(name))
                         for name, lin in layers.items()}
                for p, m in masks.items():
                    p.masked_fill_(~m, 0.0)
            row: dict[str, Any] = {"round": i, "target_sparsity": round(target, 4)}
            if recovery:
                row.update(recovery.train(spec.recovery_steps, masks))
            row["zeros"] = _zeros(layers)[0]  # read back after recovery: the masks held
            row["sparsity"] = round(row["zeros"] / numel, 6)
            rounds.append(row)
            del masks
    finally:
        if recovery:
            recovery.close()
    zeros = rounds[-1]["zeros"]
    counts = parameter_counts(model)
    report: dict[str, Any] = {
        "method": spec.method, "score": score, "pattern": pattern, "targets": spec.targets,
        "layers_pruned": len(layers), "target_sparsity": _schedule(spec)[-1],
        "sparsity_targeted": round(zeros / numel, 6),
        "zeros_before": zeros_before, "targeted_weights": numel,
        **counts, "sparsity_all": round(1 - counts["nonzero_parameters"] / counts["parameters"], 6),
        "calibration_samples": len(prompts),
        "calibration_is_eval_set": bool(prompts) and bool(ctx and ctx.calibration_is_eval_set),
        "iterations": spec.iterations, "recovery_steps": spec.recovery_steps, "rounds": rounds,
    }
    if score == "wanda":
        report["wanda"] = {"activation_tokens": sum(len(p) for p in prompts),
                           "comparison_group": "output row", "norm": "||X_j||_2 per input channel"}
    if recovery:
        report["recovery"] = {"dense_loss": round(recovery.dense_loss, 4),
                              "loss_before": rounds[0]["loss_before"],
                              "loss_after": rounds[-1]["loss_after"],
                              "answer_tokens": recovery.answer_tokens,
                              "learning_rate": spec.learning_rate,
                              "data": "the unpruned model's greedy answers to the calibration "
                                      "requests; loss per answer token, measured on the same "
                                      "answers it trains on (in-sample, not held out)"}
    report["semi_structured"] = _semi_structured(model, layers, spec)
    report["speed_note"] = DENSE_NOTE
    report["seconds"] = round(time.perf_counter() - t0, 3)
    return report


def _calibration_prompts(spec: Prune, ctx: TechniqueContext | None, score: str) -> list[list[int]]:
    if score != "wanda" and not spec.recovery_steps:
        return []
    why = "Wanda scores weights by their input activations" if score == "wanda" else \
        "recovery fine-tuning trains on the model's answers to them"
    if ctx is None or not ctx.calibration or ctx.tokenizer is None:
        raise SpecError(f"{why}, so it needs calibration requests and none were given; replay a "
                        "workload with requests, or use method 'magnitude' without recovery.")
    return encode_prompts(ctx.tokenizer, ctx.calibration, spec.calibration_samples)


def _semi_structured(model, layers: dict[str, torch.nn.Linear], spec: Prune) -> dict[str, Any]:
    """Store 2:4 weights with torch's semi-structured sparse kernels when asked (CUDA only)."""
    if spec.method != "2:4":
        return {"ran": False, "reason": "only the 2:4 pattern has sparse kernels in torch"}
    if not spec.semi_structured:
        where = ("set semi_structured to store them sparse" if model.device.type == "cuda" else
                 "not available on CPU: torch's 2:4 kernels need CUDA sm80+")
        return {"ran": False, "reason": f"zeros kept in dense tensors; {where}"}
    from torch.sparse import to_sparse_semi_structured

    dense = {name: lin.weight for name, lin in layers.items()}
    try:
        for lin in layers.values():
            lin.weight = torch.nn.Parameter(to_sparse_semi_structured(lin.weight.detach()),
                                            requires_grad=False)
        with torch.no_grad():  # the kernels have shape and dtype limits: try them once
            model(input_ids=torch.ones((1, 8), dtype=torch.long, device=model.device))
    except (RuntimeError, ValueError, NotImplementedError) as exc:
        for name, lin in layers.items():
            lin.weight = dense[name]
        return {"ran": False, "reason": f"torch refused: {str(exc)[:300]}; kept dense"}
    return {"ran": True, "layers": len(layers), "dtype": str(next(iter(dense.values())).dtype),
            "note": "sparse kernels have a fixed cost per call; on small layers or few tokens "
                    "they are slower than dense (measure before relying on them)"}
