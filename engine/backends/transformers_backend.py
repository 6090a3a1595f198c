"""Hugging Face transformers backend for CPU and CUDA (greedy, batched, left-padded).

Two serving modes, chosen by ``VariantSpec.compile``:

- eager (default): ``generate`` with the dynamic KV cache, as most notebooks run it;
- compiled (CUDA only): a static KV cache and ``torch.compile(mode="reduce-overhead")`` of
  the decode step, so each step replays one CUDA graph. This is how transformers is served
  when speed matters, and it is several times faster at small batch. transformers 5.17
  compiles only the decode step (prefill stays eager), whose shapes are batch size x
  static-cache length, so the cache length is rounded up to a bucket and never shrinks:
  each new (batch, cache length) pair compiles once, untimed, and its seconds are reported
  apart from the serving figures (``serving_report``).

A model folder made by ``engine.models.prep`` for ``random:<name>`` is built from its config
with random weights on the target device: speed and memory only (outputs are noise, EOS is
ignored so every request decodes ``max_new_tokens``).
"""
from __future__ import annotations

import time

import torch

from engine.backends.base import RANDOM_TEXT, Backend, LoadInfo, Messages, resolve_device
from engine.core.domain import Generation
from engine.core.errors import ModelPrepError, SpecError
from engine.core.memory import (
    RssPeakSampler,
    detach_from_checkpoint,
    model_weight_bytes,
    parameter_counts,
    release_freed_memory,
)
from engine.models.prep import is_random_model
from engine.models.shape import kv_bytes_per_token
from engine.techniques import technique_module
from engine.techniques.base import TechniqueContext

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
CACHE_BUCKET = 256  # static-cache lengths are multiples of this: fewer shapes, fewer compiles


class _StepClock:
    """A stopping criterion that never stops: it marks the time each new token is appended.

    On CUDA it records events instead of reading the clock, so timing adds no host-device
    synchronisation per step (which would stall a CUDA-graph decode loop); ``seconds()``
    reads them once generation is over.
    """

    def __init__(self, cuda: bool) -> None:
        self._cuda = cuda
        self._marks: list = []
        self._start = self._mark()

    def _mark(self):
        if not self._cuda:
            return time.perf_counter()
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def __call__(self, input_ids: torch.Tensor, scores, **kwargs) -> torch.Tensor:
        self._marks.append(self._mark())
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)

    def seconds(self) -> list[float]:
        """Seconds from the start to each generated token (index = new-token position)."""
        if not self._cuda:
            return [t - self._start for t in self._marks]
        torch.cuda.synchronize()
        return [self._start.elapsed_time(e) / 1000 for e in self._marks]


class TransformersBackend(Backend):
    name = "transformers"
    interleavable = True  # each variant its own model object; memory permitting

    def __init__(self, spec, model_path: str) -> None:
        super().__init__(spec, model_path)
        self.model = None
        self.tokenizer = None
        self._sampler: RssPeakSampler | None = None
        self._cuda_before = 0  # bytes torch held on the GPU before this variant loaded
        self._cuda_own = 0  # bytes this variant holds while idle (weights, buffers)
        self._cuda_pass_start: int | None = None  # bytes held when the current pass began
        self._generate_kwargs: dict = {}
        self._random = is_random_model(model_path)
        self._compile_config = None
        self._cache_len = 0  # current static-cache length (compiled mode); only grows
        self._warm: dict[tuple[int, int], float] = {}  # (batch, cache length) -> compile seconds
        self._fullgraph_error: str | None = None  # why fullgraph=True was dropped, if it was
        self.warm_up_s = 0.0

    @classmethod
    def check(cls, spec, device: str) -> None:
        if spec.compile and device != "cuda":
            raise SpecError(
                f"Variant {spec.name!r} asks for compile=True on {device}: static cache + "
                "torch.compile (CUDA graphs) is a GPU serving mode; on CPU transformers does "
                "not compile generate's decode step, and compiling there takes minutes for "
                "little gain. Set compile to false, or run the variant on a GPU.")

    @property
    def device(self) -> str:
        if self.spec.device == "cuda" and not torch.cuda.is_available():
            raise SpecError(f"Variant {self.spec.name!r} asks for CUDA but no GPU is visible; "
                            "set device to 'auto' or 'cpu', or run on a GPU machine.")
        return resolve_device(self.spec.device)

    def load(self, calibration: list[Messages] | None = None,
             calibration_is_eval_set: bool = False) -> LoadInfo:
        device = self.device
        self.check(self.spec, device)
        if device == "cuda":
            # Other variants loaded beside this one (interleaved passes) are not its memory.
            self._cuda_before = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
        else:
            self._sampler = RssPeakSampler()
        t0 = time.perf_counter()
        self._load_model(device)
        self._setup_tokens()
        ctx = TechniqueContext(device=device, model_path=self.model_path,
                               tokenizer=self.tokenizer, calibration=list(calibration or []),
                               calibration_is_eval_set=calibration_is_eval_set)
        report = self._apply_techniques(ctx)
        report["_model"] = parameter_counts(self.model)  # read back after every technique
        # Full-precision KV bytes per token from the config, for right-sizing any variant
        # (a KV-cache technique reports its quantized figure next to it).
        report["_model"]["kv_bytes_per_token"] = kv_bytes_per_token(
            self.model.config, torch.finfo(self.model.dtype).bits // 8)
        if self._random:
            report["_model"].update(random_weights=True,
                                    note="random weights: accuracy not measured")
        if self.spec.compile:
            self._setup_compile()
        load_s = time.perf_counter() - t0
        if len(report) > 1 and device == "cpu":  # a model-stage technique rewrote weights
            detach_from_checkpoint(self.model)
        release_freed_memory()  # full-precision copies a technique replaced, before serving
        # Peak memory is measured while serving (weights + activations + KV cache), the figure
        # that sizes hardware; a quantizer's transient full-precision copy is not counted.
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
            self._cuda_own = torch.cuda.memory_allocated() - self._cuda_before
        else:
            self._sampler.reset_peak()
        return LoadInfo(load_s=load_s, weight_bytes=model_weight_bytes(self.model),
                        device=self._describe(device), technique_report=report)

    def _load_model(self, device: str) -> None:
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

        dtype = _DTYPES[self.spec.dtype]
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(self.model_path)
            if self._random:
                config = AutoConfig.from_pretrained(self.model_path)
                torch.manual_seed(0)  # the same random weights on every run
                with torch.device(device):  # initialise on the device: no host copy of 16 GB
                    self.model = AutoModelForCausalLM.from_config(config, dtype=dtype).eval()
                self.model.to(device)  # a no-op unless from_config ignored the device context
                self.model.generation_config.eos_token_id = None  # decode max_new_tokens
            else:
                self.model = AutoModelForCausalLM.from_pretrained(
                    self.model_path, dtype=dtype).to(device).eval()
        except (OSError, ValueError) as exc:
            raise ModelPrepError(f"Cannot load model {self.model_path!r}: {exc}. Name a local "
                                 "Hugging Face model folder, or a hub id where a hub is reachable."
                                 ) from exc

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

    def _setup_compile(self) -> None:
        from transformers import CompileConfig

        if {"cache_implementation", "past_key_values"} & set(self._generate_kwargs):
            raise SpecError(f"Variant {self.spec.name!r}: compile=True brings its own static KV "
                            "cache, which a KV-cache technique in the same variant replaces; "
                            "drop one of the two.")
        self._compile_config = CompileConfig(fullgraph=True, mode="reduce-overhead")

    def _setup_tokens(self) -> None:
        gen = self.model.generation_config
        if self._random:
            self._eos_ids: set[int] = set()
            pad = self.tokenizer.eos_token_id or 0
        else:
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
        return self.generate_ids(enc["input_ids"], enc["attention_mask"], max_new_tokens)

    def generate_ids(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                     max_new_tokens: int) -> list[Generation]:
        """Greedy generation from token ids (left-padded); ``generate`` after tokenizing.
        Benchmarks call it with synthetic prompts of an exact length."""
        kwargs = dict(self._generate_kwargs)
        if self._compile_config is not None:
            kwargs.update(self._compiled_kwargs(input_ids, attention_mask, max_new_tokens))
        clock = _StepClock(input_ids.device.type == "cuda")
        t0 = time.perf_counter()
        with torch.no_grad():  # not inference_mode: some quantized tensors refuse it
            out = self.model.generate(input_ids=input_ids, attention_mask=attention_mask,
                                      max_new_tokens=max_new_tokens, do_sample=False,
                                      stopping_criteria=[clock], pad_token_id=self._pad_id,
                                      **kwargs)
        marks = clock.seconds()  # synchronises on CUDA
        total = time.perf_counter() - t0
        new = out[:, input_ids.shape[1]:].tolist()
        prompt_lens = attention_mask.sum(dim=1).tolist()
        gens = []
        for i, toks in enumerate(new):
            cut = next((j for j, t in enumerate(toks) if t in self._eos_ids), len(toks))
            text = RANDOM_TEXT.format(n=cut) if self._random else \
                self.tokenizer.decode(toks[:cut], skip_special_tokens=True).strip()
            gens.append(Generation(
                text=text, prompt_tokens=int(prompt_lens[i]), output_tokens=cut,
                ttft_s=marks[0] if marks else total,
                latency_s=marks[cut] if cut < len(toks) and cut < len(marks) else total))
        return gens

    def _compiled_kwargs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                         max_new_tokens: int) -> dict:
        """Static-cache generate arguments; compiles (untimed) for a new batch x cache shape."""
        need = input_ids.shape[1] + max_new_tokens
        self._cache_len = max(self._cache_len, -(-need // CACHE_BUCKET) * CACHE_BUCKET)
        kwargs = {"cache_implementation": "static", "max_cache_len": self._cache_len,
                  "compile_config": self._compile_config}
        key = (int(input_ids.shape[0]), self._cache_len)
        if key not in self._warm:
            self._warm[key] = self._compile_for(input_ids, attention_mask, kwargs)
            self.warm_up_s += self._warm[key]
            kwargs["compile_config"] = self._compile_config  # fullgraph may have been dropped
        return kwargs

    def _compile_for(self, input_ids, attention_mask, kwargs: dict) -> float:
        """Run a short generate so torch.compile traces, compiles and records CUDA graphs for
        this shape (graphs are recorded on the 2nd-3rd decode step, hence 4 new tokens)."""
        from transformers import CompileConfig

        t0 = time.perf_counter()
        run = dict(input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=4,
                   do_sample=False, pad_token_id=self._pad_id, **self._generate_kwargs)
        with torch.no_grad():
            try:
                self.model.generate(**run, **kwargs)
            except Exception as exc:  # noqa: BLE001 - a graph break under fullgraph=True
                if not self._compile_config.fullgraph:
                    raise
                self._fullgraph_error = f"{type(exc).__name__}: {str(exc)[:300]}"
                self._compile_config = CompileConfig(fullgraph=False, mode="reduce-overhead")
                self.model.generate(**run, **{**kwargs, "compile_config": self._compile_config})
        if input_ids.device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    def warm_up(self, prompts: list[Messages], batch_size: int, max_new_tokens: int) -> None:
        if self._compile_config is None:
            return None
        # Longest prompts first: the static cache then starts at its largest bucket, and every
        # later batch reuses that length (transformers never shrinks it), so one compile per
        # batch size (the full one and the remainder) covers the whole pilot.
        by_len = sorted(prompts, key=self.count_tokens, reverse=True)
        for size in {min(batch_size, len(prompts)), len(prompts) % batch_size} - {0}:
            enc = self._encode(by_len[:size])
            self._compiled_kwargs(enc["input_ids"], enc["attention_mask"], max_new_tokens)

    def serving_report(self) -> dict:
        if self._compile_config is None:
            return {}
        report = {"mode": "static KV cache + torch.compile(mode='reduce-overhead')",
                  "fullgraph": self._compile_config.fullgraph,
                  "cache_len": self._cache_len, "warm_up_s": round(self.warm_up_s, 2),
                  "warm_ups": [{"batch": b, "cache_len": n, "seconds": round(s, 2)}
                               for (b, n), s in self._warm.items()]}
        if self._fullgraph_error:
            report["fullgraph_error"] = self._fullgraph_error
        return report

    def begin_pass(self) -> None:
        # Settled: garbage collected, freed pages handed back to the OS (malloc_trim) or to
        # the CUDA caching allocator, then the peak restarts from there. Without it the CPU
        # peak depended on what the previous pass (or variant) had left in the heap.
        release_freed_memory()
        if self.model is not None and self.model.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            self._cuda_pass_start = torch.cuda.memory_allocated()
        elif self._sampler:
            self._sampler.settle()

    def peak_memory_bytes(self) -> int | None:
        if self.model is not None and self.model.device.type == "cuda":
            if self._cuda_pass_start is not None:
                # In a timed pass: what this variant holds plus what the pass added, not
                # what other variants loaded beside it (before or after it) hold.
                return self._cuda_own + int(torch.cuda.max_memory_allocated()) \
                    - self._cuda_pass_start
            return int(torch.cuda.max_memory_allocated()) - self._cuda_before
        if self._sampler is None:
            return None
        if self._sampler.pass_rss is not None and self.model is not None:
            # In a timed pass on CPU: the weights (counted exactly) plus what serving added
            # to the settled RSS; repeats within a few percent (tests/test_pilot_protocol.py).
            return model_weight_bytes(self.model) + self._sampler.pass_growth()
        return self._sampler.peak_growth()

    def memory_report(self) -> dict:
        import psutil

        cuda = self.model is not None and self.model.device.type == "cuda"
        kv_token = kv_bytes_per_token(self.model.config, torch.finfo(self.model.dtype).bits // 8) \
            if self.model is not None else None
        tokens = None
        if self._compile_config is not None and self._warm:  # static cache: reserved up front
            tokens = max(b for b, _ in self._warm) * self._cache_len
        return {
            "device": "cuda" if cuda else "cpu", "peak_bytes": self.peak_memory_bytes(),
            "peak_method": "torch's allocated bytes on cuda:0, highest while serving (weights, "
                           "activations, KV cache; not what other variants loaded beside it "
                           "hold), reset before each timed pass (median of the passes after "
                           "the first)" if cuda else
                           "weights plus the process RSS growth over the RSS "
                           "settled before each timed pass (the kernel's peak-RSS mark, "
                           "reset per pass; median of the passes after the first)",
            "weight_bytes": model_weight_bytes(self.model) if self.model is not None else None,
            "kv_cache_tokens": tokens,
            "kv_cache_bytes": int(tokens * kv_token) if tokens and kv_token else None,
            "kv_bytes_per_token": kv_token,
            "kv_method": "static cache reserved for compile=True (largest batch x cache length)"
                         if tokens else "dynamic cache: none reserved, it grows with each "
                                        "request (full-precision bytes per token from the config)",
            "device_total_bytes": torch.cuda.get_device_properties(0).total_memory if cuda
            else psutil.virtual_memory().total,
            "devices": 1,
        }

    def close(self) -> None:
        if self._sampler:
            self._sampler.stop()
        self.model = self.tokenizer = None
        if self._compile_config is not None:
            torch._dynamo.reset()  # drops compiled graphs and their CUDA-graph memory pools
        release_freed_memory()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
