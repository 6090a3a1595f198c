"""A workload's prompt statistics, worked out once when it is stored (issue 12 item 7).

``workload_stats`` is ``engine.ingest.logs.token_stats`` plus a fixed-bin histogram of prompt
lengths (words, and tokens when counted): a bounded summary the Upload page charts without
reading 100,000 requests back. Tokens are counted in batches by the Rust ``tokenizers``
library straight from a ``tokenizer.json`` (``tokenizer_counter``): the same counts as the
Hugging Face fast tokenizer's ``encode(text, add_special_tokens=False)``, without importing
transformers (seconds and hundreds of MiB at ingest), and in bounded chunks so memory stays
flat on a big log.

``STATS_VERSION`` is stored with the statistics: a store holding an older shape (or none, as
workloads stored before revision 0005 do) has them worked out again once, on first read.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from engine.core.domain import LogRequest
from engine.ingest.logs import summary

STATS_VERSION = 1
HISTOGRAM_BINS = 30
_CHUNK = 4_096  # prompts per tokenizer batch: bounded memory, still parallel

# Texts -> their token counts, in order (one call per batch, not per prompt).
TokenCounter = Callable[[Sequence[str]], list[int]]


def workload_stats(requests: Sequence[LogRequest],
                   count_tokens: TokenCounter | None = None) -> dict[str, Any]:
    """Prompt statistics of ``requests`` (``n``,
    ``prompt_words``, ``prompt_chars``, ``prompt_tokens`` when ``count_tokens`` is given,
    ``with_reference``, ``with_logged_output``), plus ``histograms``: per unit (``words``,
    ``tokens``) a ``histogram`` of the per-prompt lengths, and ``version``."""
    words: list[int] = []
    chars: list[int] = []
    tokens: list[int] = []
    for first in range(0, len(requests), _CHUNK):  # a chunk's texts at a time: flat memory
        texts = [r.prompt_text for r in requests[first:first + _CHUNK]]
        words += [len(text.split()) for text in texts]
        chars += [len(text) for text in texts]
        if count_tokens is not None:
            tokens += count_tokens(texts)
    stats: dict[str, Any] = {"n": len(requests), "prompt_words": summary(words),
                             "prompt_chars": summary(chars)}
    histograms = {"words": histogram(words)}
    if count_tokens is not None:
        stats["prompt_tokens"] = summary(tokens)
        histograms["tokens"] = histogram(tokens)
    stats["with_reference"] = sum(r.reference is not None for r in requests)
    stats["with_logged_output"] = sum(r.logged_output is not None for r in requests)
    return stats | {"histograms": histograms, "version": STATS_VERSION}


def token_stats(requests: Sequence[LogRequest],
                count_tokens: Callable[[str], int] | None = None) -> dict[str, Any]:
    """``workload_stats`` with a per-prompt token counter and without the histograms: ``n``,
    ``prompt_words``, ``prompt_chars`` (and ``prompt_tokens``), each ``{"mean", "p50",
    "p95", "max"}`` (percentiles interpolated between ranks; None with no requests), plus
    ``with_reference`` and ``with_logged_output``. Sizes are of ``LogRequest.prompt_text``."""
    batch = None if count_tokens is None else (lambda texts: [count_tokens(t) for t in texts])
    stats = workload_stats(requests, batch)
    del stats["histograms"], stats["version"]
    return stats


def histogram(values: Sequence[int], bins: int = HISTOGRAM_BINS) -> dict[str, Any]:
    """At most ``bins`` equal-width integer bins covering ``values``: ``start`` (the first
    bin's lowest value), ``width`` and ``counts`` (bin i holds start + i*width up to, not
    including, start + (i+1)*width). Empty ``values``: no bins."""
    if not values:
        return {"start": 0, "width": 1, "counts": []}
    low, high = min(values), max(values)
    width = max(1, -(-(high - low + 1) // bins))  # ceiling division
    counts = [0] * (-(-(high - low + 1) // width))
    for value in values:
        counts[(value - low) // width] += 1
    return {"start": low, "width": width, "counts": counts}


def is_current(stats: dict[str, Any] | None, want_tokens: bool) -> bool:
    """Whether stored statistics can be shown as they are: this code's shape, and token
    counts when a tokenizer is there to count them (stored before the model was prepared,
    they have none)."""
    return (stats is not None and stats.get("version") == STATS_VERSION
            and (not want_tokens or "prompt_tokens" in stats))


def tokenizer_counter(tokenizer_json: Path) -> TokenCounter:
    """A TokenCounter over a Hugging Face ``tokenizer.json`` (special tokens not added, as
    the dashboard always counted); loads in well under a second."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_json))
    tok.no_truncation()
    tok.no_padding()

    # encode_batch_fast (newer tokenizers releases) skips the character offsets: the same ids for
    # about 30% less CPU (5 s -> 3.5 s over 100,000 support-chat prompts)
    encode = getattr(tok, "encode_batch_fast", tok.encode_batch)

    def count(texts: Sequence[str]) -> list[int]:
        return [len(e) for e in encode(list(texts), add_special_tokens=False)]

    return count
