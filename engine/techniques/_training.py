"""Helpers shared by the techniques that fine-tune (distillation, quantization-aware training):
the teacher's greedy answers on the training requests, a loss on the answer tokens only,
and a short AdamW loop that records its loss at every step.

Sequence-level distillation (Kim & Rush, 2016): the targets are the teacher's own greedy
answers, so no teacher copy or its logits need to stay in memory while the student trains.

Not a technique module (the leading underscore keeps it out of the registry scan).
"""
from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Any

import torch

from engine.core.errors import SpecError
from engine.techniques.base import TechniqueContext
from engine.techniques.calibration import pad

MAX_PROMPT_TOKENS = 512  # longer prompts keep their last 512 tokens (the question end)
EVAL_SET_WARNING = (
    "Trained on the requests the pilot evaluates, so its scores are not held-out: give the "
    "workload more requests than the pilot's max_requests, and the extra ones become the "
    "training data.")


@dataclass(frozen=True)
class Example:
    prompt_ids: list[int]  # chat-formatted request, ending with the assistant header
    answer_ids: list[int]  # the teacher's greedy answer, with its end-of-turn token if it ended


@dataclass(frozen=True)
class TeacherData:
    examples: list[Example]
    requests: int  # training requests asked (some may give an empty answer and be dropped)
    truncated: int  # prompts cut to their last MAX_PROMPT_TOKENS tokens
    seconds: float  # generating the teacher's answers
    answer_tokens: int


def eos_ids(model: torch.nn.Module, tokenizer: Any) -> set[int]:
    eos = model.generation_config.eos_token_id
    eos = tokenizer.eos_token_id if eos is None else eos
    return set(eos if isinstance(eos, list) else [eos])


def pad_id(model: torch.nn.Module, tokenizer: Any) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(
        eos_ids(model, tokenizer))


def require_training_data(ctx: TechniqueContext | None, what: str) -> TechniqueContext:
    if ctx is None or not ctx.calibration:
        raise SpecError(f"{what} trains on requests and got none: run it inside a pilot whose "
                        "workload has more requests than max_requests (the extra ones are the "
                        "training data).")
    return ctx


@torch.no_grad()
def teacher_answers(model: torch.nn.Module, ctx: TechniqueContext, n: int,
                    max_new_tokens: int, batch_size: int) -> TeacherData:
    """The model's greedy answers to the first ``n`` training requests (the distillation
    targets), generated in length-sorted, left-padded batches."""
    tok = ctx.tokenizer
    prompts, truncated = [], 0
    for messages in ctx.calibration[:n]:
        text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        ids = list(tok(text, add_special_tokens=False)["input_ids"])
        truncated += len(ids) > MAX_PROMPT_TOKENS
        prompts.append(ids[-MAX_PROMPT_TOKENS:])
    eos, pid = eos_ids(model, tok), pad_id(model, tok)
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    answers: list[list[int]] = [[] for _ in prompts]
    was_training = model.training
    model.eval()
    t0 = time.perf_counter()
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        ids, mask = pad([prompts[i] for i in idx], pid, "left", model.device)
        out = model.generate(input_ids=ids, attention_mask=mask, do_sample=False,
                             max_new_tokens=max_new_tokens, pad_token_id=pid)
        for i, row in zip(idx, out[:, ids.shape[1]:].tolist(), strict=True):
            cut = next((j + 1 for j, t in enumerate(row) if t in eos), len(row))
            answers[i] = row[:cut]  # keeps the end-of-turn token: stopping is learnt too
    seconds = time.perf_counter() - t0
    model.train(was_training)
    examples = [Example(p, a) for p, a in zip(prompts, answers, strict=True) if a]
    if not examples:
        raise SpecError("The teacher gave empty answers to every training request, so there is "
                        "nothing to train on; use a workload with other requests.")
    return TeacherData(examples, len(prompts), truncated, seconds,
                       sum(len(e.answer_ids) for e in examples))


def answer_loss(model: torch.nn.Module, batch: list[Example], pad_token: int) -> torch.Tensor:
    """Mean cross-entropy over the answer tokens only (the prompt is context, not target).

    Runs the decoder body, then the output head only at positions that predict an answer
    token: with a 49k vocabulary the full-sequence logits would be most of the step's work.
    """
    seqs = [e.prompt_ids + e.answer_ids for e in batch]
    labels_list = [[-100] * len(e.prompt_ids) + e.answer_ids for e in batch]
    ids, mask = pad(seqs, pad_token, "right", model.device)
    labels, _ = pad(labels_list, -100, "right", model.device)
    hidden = model.get_decoder()(input_ids=ids, attention_mask=mask,
                                 use_cache=False).last_hidden_state
    target = labels[:, 1:]  # position t predicts token t + 1
    keep = target != -100
    logits = model.get_output_embeddings()(hidden[:, :-1][keep])
    return torch.nn.functional.cross_entropy(logits.float(), target[keep])


@dataclass(frozen=True)
class TrainResult:
    losses: list[float]  # the training batch's loss at each step, before that step's update
    seconds: float
    trained_parameters: int
    mem_growth_bytes: int | None = None  # peak during training minus memory before it
    mem_measure: str = ""

    def report(self) -> dict[str, Any]:
        steps = len(self.losses)
        return {"train_steps": steps, "trained_parameters": self.trained_parameters,
                "loss_start": self.losses[0] if steps else None,
                "loss_end": self.losses[-1] if steps else None,
                "losses": self.losses, "train_s": round(self.seconds, 3),
                "train_s_per_step": round(self.seconds / steps, 3) if steps else None,
                # What training itself cost on top of the loaded model: gradients, AdamW
                # state and activations. Freed before serving, so not in the variant's peak.
                "train_mem_growth_bytes": self.mem_growth_bytes,
                "train_mem_measure": self.mem_measure}


def fine_tune(model: torch.nn.Module, examples: list[Example], params: list[torch.nn.Parameter],
              *, steps: int, learning_rate: float, batch_size: int, seed: int,
              pad_token: int) -> TrainResult:
    """``steps`` AdamW steps on ``params`` only; batches are drawn from ``examples`` in a
    seeded shuffle, a new shuffle each pass. Leaves the model in eval mode with no parameter
    requiring gradients and the optimizer state freed."""
    for p in model.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    optimizer = torch.optim.AdamW(params, lr=learning_rate, weight_decay=0.0)
    rng, queue, losses = random.Random(seed), [], []
    size = min(batch_size, len(examples))
    model.train()
    meter = _TrainMemory(model.device)
    t0 = time.perf_counter()
    try:
        with torch.enable_grad():
            for _ in range(steps):
                if len(queue) < size:
                    queue += rng.sample(range(len(examples)), len(examples))
                batch, queue = [examples[i] for i in queue[:size]], queue[size:]
                loss = answer_loss(model, batch, pad_token)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                losses.append(round(float(loss.detach()), 4))
    finally:
        if model.device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
        growth = meter.stop()
        model.eval()
        optimizer.state.clear()
        for p in model.parameters():
            p.grad = None
            p.requires_grad_(False)
    return TrainResult(losses, seconds, sum(p.numel() for p in params), growth, meter.how)


class _TrainMemory:
    """Peak memory growth over a training loop: CUDA's allocator peak on a GPU, the
    process's sampled RSS on CPU (which also sees allocator caching, so it is an upper bound)."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        if self.cuda:
            torch.cuda.synchronize(device)
            self.before = torch.cuda.memory_allocated(device)
            torch.cuda.reset_peak_memory_stats(device)
            self.device = device
            self.how = "CUDA max_memory_allocated during training minus allocated before"
        else:
            from engine.core.memory import RssPeakSampler
            self.sampler = RssPeakSampler(interval_s=0.02)
            self.how = "process RSS sampled every 20 ms: peak during training minus before"

    def stop(self) -> int:
        if self.cuda:
            torch.cuda.synchronize(self.device)
            return max(0, torch.cuda.max_memory_allocated(self.device) - self.before)
        growth = self.sampler.peak_growth()
        self.sampler.stop()
        return max(0, growth)


def trainable_decoder_params(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """Every parameter except the input embedding, which is tied to the lm_head here: it is
    a third of a small model's weights, and its Adam state would be as large again."""
    frozen = {id(model.get_input_embeddings().weight), id(model.get_output_embeddings().weight)}
    seen: set[int] = set()
    out = []
    for p in model.parameters():
        if id(p) not in frozen and id(p) not in seen and p.is_floating_point():
            seen.add(id(p))
            out.append(p)
    return out


def data_report(ctx: TechniqueContext, data: TeacherData) -> dict[str, Any]:
    """What the training data was, and whether it overlaps the evaluated requests."""
    out: dict[str, Any] = {
        "train_examples": len(data.examples), "train_requests": data.requests,
        "teacher_answer_tokens": data.answer_tokens,
        "prompts_truncated": data.truncated, "teacher_generation_s": round(data.seconds, 3),
        "calibration_is_eval_set": bool(ctx.calibration_is_eval_set)}
    if ctx.calibration_is_eval_set:
        out["warning"] = EVAL_SET_WARNING
    return out
