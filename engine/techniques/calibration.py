"""Helpers shared by model-stage techniques that look at data: which linears to touch, the
calibration requests as token ids, per-channel activation norms, and a short recovery
fine-tune towards the unmodified model's own answers.

Not a technique module (the leading underscore keeps it out of the registry scan).
"""
from __future__ import annotations

from typing import Any, Literal

import torch

from engine.core.errors import SpecError

Targets = Literal["all", "mlp", "attention"]
CALIBRATION_TOKENS = 256  # prompts are cut to their last 256 tokens (the question end)
ANSWER_TOKENS = 32  # length of the dense model's greedy answers used as recovery targets
TRAIN_BATCH = 4  # sequences per recovery optimizer step


def target_linears(model: torch.nn.Module, targets: Targets) -> dict[str, torch.nn.Linear]:
    """The decoder's linear layers chosen by ``targets``; embeddings and lm_head never.

    Llama-style names: ``model.layers.N.self_attn.{q,k,v,o}_proj`` and
    ``model.layers.N.mlp.{gate,up,down}_proj``.
    """
    parts = {"all": (".self_attn.", ".mlp."), "mlp": (".mlp.",), "attention": (".self_attn.",)}
    found = {name: m for name, m in model.named_modules()
             if isinstance(m, torch.nn.Linear) and "lm_head" not in name
             and any(p in name for p in parts[targets])}
    if not found:
        raise SpecError(f"No decoder linear layers match targets={targets!r} in this model "
                        "(expected Llama-style '.self_attn.' / '.mlp.' module names); choose "
                        "another model or targets.")
    return found


def encode_prompts(tokenizer: Any, calibration: list, n: int,
                   max_tokens: int = CALIBRATION_TOKENS) -> list[list[int]]:
    """The first ``n`` calibration requests, chat-formatted with the generation prompt, each
    cut to its last ``max_tokens`` tokens (so the question and assistant header stay)."""
    out = []
    for messages in calibration[:n]:
        text = tokenizer.apply_chat_template(messages, tokenize=False,
                                             add_generation_prompt=True)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        out.append(list(ids[-max_tokens:]))
    return out


def pad(seqs: list[list[int]], pad_id: int, side: Literal["left", "right"],
        device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids and attention mask for a batch of unequal sequences."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        cols = slice(width - len(s), width) if side == "left" else slice(0, len(s))
        ids[i, cols] = torch.tensor(s, dtype=torch.long)
        mask[i, cols] = 1
    return ids.to(device), mask.to(device)


@torch.no_grad()
def activation_norms(model: torch.nn.Module, layers: dict[str, torch.nn.Linear],
                     prompts: list[list[int]]) -> dict[str, torch.Tensor]:
    """||X_j||_2 over every calibration token, per input channel j of each layer (Wanda).

    One request at a time, so no padding token ever enters the statistics.
    """
    sq = {name: torch.zeros(lin.in_features, dtype=torch.float64, device=lin.weight.device)
          for name, lin in layers.items()}

    def hook(name: str):
        def record(_module, inputs, _output) -> None:
            x = inputs[0].detach().reshape(-1, inputs[0].shape[-1]).to(torch.float64)
            sq[name] += x.pow(2).sum(dim=0)
        return record

    forward_each(model, prompts, [(lin, hook(name), False) for name, lin in layers.items()])
    return {name: s.sqrt().to(layers[name].weight.dtype) for name, s in sq.items()}


def forward_each(model: torch.nn.Module, sequences: list[list[int]],
                 hooks: list[tuple[torch.nn.Module, Any, bool]]) -> None:
    """Run each token sequence through ``model`` on its own (no padding enters any
    statistic) with forward hooks ``(module, fn, with_kwargs)`` attached meanwhile."""
    handles = [m.register_forward_hook(fn, with_kwargs=kw) for m, fn, kw in hooks]
    try:
        for ids in sequences:
            model(input_ids=torch.tensor([ids], device=model.device), use_cache=False)
    finally:
        for h in handles:
            h.remove()


def _eos_ids(model: torch.nn.Module, tokenizer: Any) -> set[int]:
    eos = model.generation_config.eos_token_id
    eos = tokenizer.eos_token_id if eos is None else eos
    return set(eos if isinstance(eos, list) else [eos])


class Recovery:
    """Short fine-tune that pulls a compressed model back towards the original's behaviour.

    Built on the unmodified model: it records that model's greedy answers to the calibration
    prompts (sequence-level self-distillation, so no teacher copy is kept in memory) and its
    loss on them. ``train`` then takes optimizer steps on the answer tokens only, and after
    each step re-applies the pruning masks so pruned weights stay exactly zero.
    """

    def __init__(self, model: torch.nn.Module, params: list[torch.nn.Parameter], tokenizer: Any,
                 prompts: list[list[int]], learning_rate: float) -> None:
        self.model, self.params = model, params
        eos = _eos_ids(model, tokenizer)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(eos)
        answers = self._greedy_answers(prompts, eos)
        self.examples = [(p + a, [-100] * len(p) + a) for p, a in zip(prompts, answers, strict=True)
                         if a]
        if not self.examples:
            raise SpecError("The model gave empty answers to every calibration request, so there "
                            "is nothing to fine-tune on; use other calibration requests.")
        self.answer_tokens = sum(len(a) for a in answers)
        self.dense_loss = self.loss()
        self.optimizer = torch.optim.AdamW(params, lr=learning_rate, weight_decay=0.0)
        self._next = 0

    @torch.no_grad()
    def _greedy_answers(self, prompts: list[list[int]], eos: set[int]) -> list[list[int]]:
        answers: list[list[int]] = []
        for start in range(0, len(prompts), 8):
            chunk = prompts[start:start + 8]
            ids, mask = pad(chunk, self.pad_id, "left", self.model.device)
            out = self.model.generate(input_ids=ids, attention_mask=mask, do_sample=False,
                                      max_new_tokens=ANSWER_TOKENS, pad_token_id=self.pad_id)
            for row in out[:, ids.shape[1]:].tolist():
                cut = next((j + 1 for j, t in enumerate(row) if t in eos), len(row))
                answers.append(row[:cut])  # keeps the end-of-turn token: stopping is learnt too
        return answers

    def _batch_loss(self, batch: list[tuple[list[int], list[int]]]) -> tuple[torch.Tensor, int]:
        ids, mask = pad([b[0] for b in batch], self.pad_id, "right", self.model.device)
        labels, _ = pad([b[1] for b in batch], -100, "right", self.model.device)
        out = self.model(input_ids=ids, attention_mask=mask, labels=labels, use_cache=False)
        return out.loss, int((labels[:, 1:] != -100).sum())

    @torch.no_grad()
    def loss(self) -> float:
        """Mean cross-entropy per answer token over every calibration example."""
        total = count = 0.0
        for start in range(0, len(self.examples), TRAIN_BATCH):
            loss, n = self._batch_loss(self.examples[start:start + TRAIN_BATCH])
            total, count = total + float(loss) * n, count + n
        return total / max(count, 1)

    def train(self, steps: int, masks: dict[torch.nn.Parameter, torch.Tensor]) -> dict[str, float]:
        """``steps`` optimizer steps over cycling batches; masked weights stay zero."""
        before = self.loss()
        flags = {p: p.requires_grad for p in self.model.parameters()}
        for p in flags:
            p.requires_grad_(False)
        for p in self.params:
            p.requires_grad_(True)
        try:
            with torch.enable_grad():
                for _ in range(steps):
                    batch = [self.examples[(self._next + i) % len(self.examples)]
                             for i in range(min(TRAIN_BATCH, len(self.examples)))]
                    self._next += len(batch)
                    loss, _ = self._batch_loss(batch)
                    loss.backward()
                    for p, m in masks.items():
                        if p.grad is not None:
                            p.grad.masked_fill_(~m, 0.0)  # Adam moments of pruned weights stay 0
                    self.optimizer.step()
                    self.optimizer.zero_grad(set_to_none=True)
                    with torch.no_grad():
                        for p, m in masks.items():
                            p.masked_fill_(~m, 0.0)
        finally:
            for p, flag in flags.items():
                p.requires_grad_(flag)
        return {"loss_before": round(before, 4), "loss_after": round(self.loss(), 4)}

    def close(self) -> None:
        """Drop the optimizer state (two fp32 copies of every trained weight)."""
        self.optimizer.state.clear()
        for p in self.params:
            p.grad = None
