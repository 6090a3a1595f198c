"""Hugging Face transformers backend for CPU and CUDA (greedy, batched, left-padded)."""
from __future__ import annotations

import time

import torch

from engine.backends.base import Backend, LoadInfo, Messages, resolve_device
from engine.domain import Generation
from engine.errors import ModelPrepError, SpecError
from engine.memory import (
    RssPeakSampler,
    detach_from_checkpoint,
    model_weight_bytes,
    parameter_counts,
    release_freed_memory,
)
from engine.techniques import technique_module
from engine.techniques.base import TechniqueContext

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class _StepClock:
    """A stopping criterion that never stops: it timestamps the first token and each
    sequence's end-of-sequence token, giving TTFT and per-request latency inside a batch."""

    def __init__(self, n: int, eos_ids: set[int]) -> None:
        self.first: float | None = None
        self.done: list[float | None] = [None] * n
        self._eos = eos_ids

    def __call__(self, input_ids: torch.Tensor, scores, **kwargs) -> torch.Tensor:
        now = time.perf_counter()
        if self.first is None:
            self.first = now
        for i, tok in enumerate(input_ids[:, -1].tolist()):
            if self.done[i] is None and tok in self._eos:
                self.done[i] = now
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)


class TransformersBackend(Backend):
    name = "transformers"

    def __init__(self, spec, model_path: str) -> None:
        super().__init__(spec, model_path)
        self.model = None
        self.tokenizer = None
        self._sampler: RssPeakSampler | None = None
        self._generate_kwargs: dict = {}

    @property
    def device(self) -> str:
        if self.spec.device == "cuda" and not torch.cuda.is_available():
            raise SpecError(f"Variant {self.spec.name!r} asks for CUDA but no GPU is visible; "
                            "set device to 'auto' or 'cpu', or run on a GPU machine.")
        return resolve_device(self.spec.device)

    def load(self, calibration: list[Messages] | None = None,
             calibration_is_eval_set: bool = False) -> LoadInfo:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        device = self.device
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        else:
            self._sampler = RssPeakSampler()
        t0 = time.perf_counter()
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(self.model_path)
            self.model = AutoModelForCausalLM.from_pretrained(
                self.model_path, dtype=_DTYPES[self.spec.dtype]).to(device).eval()
        except (OSError, ValueError) as exc:
            raise ModelPrepError(f"Cannot load model {self.model_path!r}: {exc}. Name a local "
                                 "Hugging Face model folder, or a hub id where a hub is reachable."
                                 ) from exc
        self._setup_tokens()
        ctx = TechniqueContext(device=device, model_path=self.model_path,
                               tokenizer=self.tokenizer, calibration=list(calibration or []),
                               calibration_is_eval_set=calibration_is_eval_set)
        report = self._apply_techniques(ctx)
        report["_model"] = parameter_counts(self.model)  # read back after every technique
        load_s = time.perf_counter() - t0
        if len(report) > 1 and device == "cpu":  # a model-stage technique rewrote weights
            detach_from_checkpoint(self.model)
        release_freed_memory()  # full-precision copies a technique replaced, before serving
        # Peak memory is measured while serving (weights + activations + KV cache), the figure
        # that sizes hardware; a quantizer's transient full-precision copy is not counted.
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        else:
            self._sampler.reset_peak()
        return LoadInfo(load_s=load_s, weight_bytes=model_weight_bytes(self.model),
                        device=self._describe(device), technique_report=report)

    def _apply_techniques(self, ctx: TechniqueContext) -> dict:
        """Model-stage techniques transform the model, in the spec's order; generate-stage
        ones add arguments to every generate call. Prompt-stage ones are the runner's."""
        report: dict = {}
        self._generate_kwargs: dict = {}
        for tech in self.spec.techniques:
            module = technique_module(tech.kind)
            if module.stage == "model":
                report[tech.kind] = module.apply(self.model, tech, ctx)
            elif module.stage == "generate":
                self._generate_kwargs.update(module.generate_kwargs(tech, self.model))
                report[tech.kind] = module.report(tech, self.model, ctx)
        return report

    def _setup_tokens(self) -> None:
        gen = self.model.generation_config
        eos = gen.eos_token_id if gen.eos_token_id is not None else self.tokenizer.eos_token_id
        self._eos_ids = set(eos if isinstance(eos, list) else [eos])
        pad = gen.pad_token_id if gen.pad_token_id is not None else min(self._eos_ids)
        self.tokenizer.pad_token_id = pad
        self.tokenizer.padding_side = "left"  # decoder-only models continue from the right
        self._pad_id = pad

    @staticmethod
    def _describe(device: str) -> str:
        if device == "cuda":
            return f"cuda:0 {torch.cuda.get_device_name(0)}"
        return f"cpu ({torch.get_num_threads()} threads)"

    def _encode(self, batch: list[Messages]) -> dict:
        texts = [self.tokenizer.apply_chat_template(m, tokenize=False, add_generation_prompt=True)
                 for m in batch]
        return self.tokenizer(texts, return_tensors="pt", padding=True,
                              add_special_tokens=False).to(self.model.device)

    def count_tokens(self, messages: Messages) -> int:
        return int(self._encode([messages])["attention_mask"].sum())

    def generate(self, batch: list[Messages], max_new_tokens: int) -> list[Generation]:
        enc = self._encode(batch)
        clock = _StepClock(len(batch), self._eos_ids)
        t0 = time.perf_counter()
        with torch.no_grad():  # not inference_mode: some quantized tensors refuse it
            out = self.model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                      stopping_criteria=[clock], pad_token_id=self._pad_id,
                                      **self._generate_kwargs)
        end = time.perf_counter()
        new = out[:, enc["input_ids"].shape[1]:].tolist()
        prompt_lens = enc["attention_mask"].sum(dim=1).tolist()
        gens = []
        for i, toks in enumerate(new):
            cut = next((j for j, t in enumerate(toks) if t in self._eos_ids), len(toks))
            gens.append(Generation(
                text=self.tokenizer.decode(toks[:cut], skip_special_tokens=True).strip(),
                prompt_tokens=int(prompt_lens[i]), output_tokens=cut,
                ttft_s=(clock.first or end) - t0, latency_s=(clock.done[i] or end) - t0))
        return gens

    def peak_memory_bytes(self) -> int | None:
        if self.model is not None and self.model.device.type == "cuda":
            return int(torch.cuda.max_memory_allocated())
        return self._sampler.peak_growth() if self._sampler else None

    def close(self) -> None:
        if self._sampler:
            self._sampler.stop()
        self.model = self.tokenizer = None
        release_freed_memory()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
